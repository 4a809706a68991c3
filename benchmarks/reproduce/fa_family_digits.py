"""BP vs FA, DFA, uSF, brSF, frSF side by side: BioTorch's benchmark comparison, CPU-sized.

Published comparison (spec pepita_fa.md §4; BioTorch ``Benchmarks.md``, top-1 error %, MNIST,
LeNet, SGD momentum 0.9, weight decay 1e-3, 100 epochs, lr x0.1 at epochs 50 and 75):
BP 0.91, FA 1.7, DFA 1.61, uSF 0.94, brSF 0.91, frSF 0.97 -- i.e. sign-symmetry ~ BP, FA/DFA
roughly twice BP's error.

Stand-in here (offline, 2 CPU cores, about a minute): scikit-learn digits (1437/360, inputs /16),
MLP 64-64-64-10 tanh (xavier), softmax cross-entropy, the same optimiser recipe scaled to 40
epochs (SGD lr 0.05, momentum 0.9, weight decay 1e-3, lr x0.1 at epochs 20 and 30), batch 32,
seeds 0, 1, 2 (the network and batch order change with the seed; the split is fixed).
Not a reproduction of the MNIST numbers (different data and network): it checks the ordering
(sign symmetry ~ BP >= FA ~ DFA) and reports each rule's angle to BP's update.

Usage: ``python benchmarks/reproduce/fa_family_digits.py [--epochs N] [--seeds 0,1,2] [--out DIR]``
"""

from __future__ import annotations

import argparse
import os
import sys

# Single-threaded BLAS: the matrices are tiny and OpenBLAS threads spin on a shared 2-core machine.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import refimpl as ri  # noqa: E402
from refimpl import data as D, train as T  # noqa: E402
from common import run  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    seeds = tuple(int(s) for s in a.seeds.split(","))
    rules = {k: k for k in ("bp", "fa", "dfa", "usf", "brsf", "frsf")}
    data = D.digits(seed=0)
    sched = T.StepDecay((a.epochs // 2, (3 * a.epochs) // 4), 0.1)
    return run("fa_family_digits", rules, data, seeds=seeds, out=a.out, hidden=(64, 64), activation="tanh",
               optimizer=ri.optim.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3), epochs=a.epochs, batch_size=32,
               schedule=sched, loss="ce")


if __name__ == "__main__":
    main()
