"""BP vs FA, DFA and PEPITA, fully connected, one hidden layer: the PEPITA papers' comparison, CPU-sized.

Published comparison (spec pepita_fa.md §4; Dellaferrera & Kreiman, ICML 2022, FC 1x1024 table;
numbers marked [unverified] in the spec and not quoted here): on MNIST/CIFAR, PEPITA is a few
points below BP, with FA and DFA in between ("PEPITA <= FA ~ DFA <= BP within a few points").

Stand-in (spec §4 "CPU-feasible reproductions"): scikit-learn digits, 64-256-10 ReLU network,
softmax cross-entropy, SGD lr 0.01 momentum 0.9, batch 64, 60 epochs with lr x0.1 at epochs 36
and 54 (the papers' decay at 60% and 90% of training), PEPITA with its defaults (ICML sign +1,
F = 0.05 x He-uniform), seeds 0, 1, 2. Expectation (not a published number): all >= 90 % test
accuracy and the ordering above.

Usage: ``python benchmarks/reproduce/pepita_digits.py [--epochs N] [--seeds 0,1,2] [--out DIR]``
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import refimpl as ri  # noqa: E402
from refimpl import data as D, train as T  # noqa: E402
from common import run  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    seeds = tuple(int(s) for s in a.seeds.split(","))
    rules = {"bp": "bp", "fa": "fa", "dfa": "dfa", "pepita": "pepita"}
    data = D.digits(seed=0)
    sched = T.StepDecay((int(0.6 * a.epochs), int(0.9 * a.epochs)), 0.1)
    return run("pepita_digits", rules, data, seeds=seeds, out=a.out, hidden=(256,), activation="relu",
               optimizer=ri.optim.SGD(lr=0.01, momentum=0.9), epochs=a.epochs, batch_size=64, schedule=sched,
               loss="ce")


if __name__ == "__main__":
    main()
