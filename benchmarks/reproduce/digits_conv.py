"""BP, FA, DFA, uSF, frSF and PEPITA on one small convnet on digits images: accuracy and angles to BP.

Published context (not reproduced here, no numbers quoted): BioTorch (Sanfiz & Akrout 2021)
compares BP / FA / DFA / uSF / brSF / frSF on convnets (LeNet, ResNet) and finds the sign-symmetry
family close to BP and FA / DFA behind, with DFA the weakest on convolutional layers; Launay et al.
(2019) and others report that DFA's updates of convolutional layers do not align with BP's.
PEPITA's conv results (Dellaferrera & Kreiman 2022, one conv layer on CIFAR) are well below BP.

Stand-in here (offline, CPU, a few minutes on 2 cores):

* data: scikit-learn digits as 1x8x8 images (``digits(seed=0, images=True)``: 1437 / 360
  stratified split, pixels / 16);
* network: ``c8k3p1+mp2 c16k3p1+mp2 l10`` (conv 8 3x3 pad 1 - ReLU - maxpool 2 - conv 16 -
  ReLU - maxpool 2 - linear 64 -> 10), He init, zero biases, softmax cross-entropy;
* every rule: the same network draw per seed, SGD momentum 0.9, batch 32, 20 epochs, lr x0.1 at
  epochs 10 and 15, seeds 0, 1, 2; refimpl's rules with their defaults (FA/DFA/uSF/frSF feedback
  as in the dense case: xavier; PEPITA: ``sign=+1``, ``F_scale=0.05``, modulated output error, no
  dropout), only the learning rate differs per rule;
* learning rate: chosen per rule from {0.001, 0.003, 0.01, 0.03, 0.1} by final validation
  accuracy (the last 287 of the 1437 training images held out, seed 0, same 20-epoch budget),
  never on the test set; ``--select`` reruns that selection and prints its table (the values
  below in ``LR`` are its result, see benchmarks/reproduce/README.md).

Columns (``common.run``): final test accuracy mean ± std over the seeds and per seed, train
accuracy, test loss, the per-layer angle (degrees) between the rule's update and BP's gradient on
the same batch (layers conv1 / conv2 / linear; for a conv layer the angle between the kernel
updates flattened), averaged over the last epoch's batches and the seeds, seconds per run.

Usage: ``python benchmarks/reproduce/digits_conv.py [--epochs N] [--seeds 0,1,2] [--out DIR] [--select]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Single-threaded BLAS: the matrices are tiny and OpenBLAS threads spin on a shared 2-core machine.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import refimpl as ri  # noqa: E402
from refimpl import data as D, train as T  # noqa: E402
from common import run  # noqa: E402

ARCH = "c8k3p1+mp2 c16k3p1+mp2 l10"
RULES = ("bp", "fa", "dfa", "usf", "frsf", "pepita")
GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
#: Chosen by ``--select`` (validation accuracy, seed 0, 20 epochs); see the README table.
LR = {"bp": 0.03, "fa": 0.03, "dfa": 0.01, "usf": 0.1, "frsf": 0.1, "pepita": 0.01}
#: Not selected, reported next to the selected rows: PEPITA with the selected lr 0.01 is unstable on
#: the full training set for seeds 0-2 (its logits blow up), so the next grid value is shown too.
EXTRA = {"pepita@0.003": ("pepita", 0.003)}


def rule(key: str):
    if key == "pepita":
        from refimpl.rules.pepita import PEPITA

        return PEPITA(sign=1, F_scale=0.05, last_layer_error="modulated", keep_prob=1.0, loss="ce")
    return key


def settings(epochs: int) -> dict:
    return dict(layers=ARCH, activation="relu", init="he", epochs=epochs, batch_size=32, loss="ce",
                schedule=T.StepDecay((epochs // 2, (3 * epochs) // 4), 0.1))


def validation_split(data):
    """The first 1150 training images train, the last 287 validate (the split is already shuffled)."""
    n = data.n_train - 287
    return D.Dataset(data.x_train[:n, ...], data.y_train[:n], data.x_train[n:, ...], data.y_train[n:],
                     data.n_classes, data.task, data.name + "[validation]")


def select(data, epochs: int) -> dict:
    val = validation_split(data)
    best = {}
    print(f"learning-rate selection on {val.describe()}; {epochs} epochs, seed 0")
    print("| rule | " + " | ".join(f"lr {lr:g}" for lr in GRID) + " | chosen |")
    print("|---|" + "---|" * (len(GRID) + 1))
    for key in RULES:
        accs = []
        for lr in GRID:
            res = T.compare({key: rule(key)}, val, optimizer=ri.optim.SGD(lr=lr, momentum=0.9), seed=0,
                            angles=False, **settings(epochs))
            e = res["rules"][key]
            accs.append(float("nan") if "error" in e or not e["epochs"] else e["epochs"][-1]["test_accuracy"])
        i = max(range(len(GRID)), key=lambda j: -1.0 if accs[j] != accs[j] else accs[j])
        best[key] = GRID[i]
        print(f"| {key} | " + " | ".join("diverged" if a != a else f"{a:.3f}" for a in accs) + f" | {GRID[i]:g} |",
              flush=True)
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default=None)
    p.add_argument("--select", action="store_true", help="rerun the learning-rate selection on the validation split")
    a = p.parse_args(argv)
    seeds = tuple(int(s) for s in a.seeds.split(","))
    data = D.digits(seed=0, images=True)
    t0 = time.perf_counter()
    if a.select:
        lr = select(data, a.epochs)
        print(f"({time.perf_counter() - t0:.0f} s)")
        return lr
    out = {}
    runs = {key: (key, LR[key]) for key in RULES}
    runs.update(EXTRA)
    for key, (name, lr) in runs.items():  # each rule with its own lr, all from the same network draw per seed
        out[key] = run("digits_conv", {key: rule(name)}, data, seeds=seeds,
                       out=os.path.join(a.out or os.path.join("runs", "reproduce", "digits_conv"), key),
                       optimizer=ri.optim.SGD(lr=lr, momentum=0.9), **settings(a.epochs))
    rows = [r for key in runs for r in out[key]["rows"]]
    from common import markdown

    md = markdown(rows, [])
    lines = md.splitlines()
    lines[0] = lines[0].replace("| rule |", "| rule (lr) |")
    for i, line in enumerate(lines):
        for key, (name, lr) in runs.items():
            if line.startswith(f"| {key} |"):
                lines[i] = line.replace(f"| {key} |", f"| {name} ({lr:g}){'' if key in RULES else ', not selected'} |", 1)
    md = "\n".join(lines)
    path = os.path.join(a.out or os.path.join("runs", "reproduce", "digits_conv"), "table.md")
    with open(path, "w") as f:
        f.write(md + "\n")
    print(f"\ndigits_conv: {data.describe()}; network {ARCH} (relu, he); SGD momentum 0.9, batch 32, "
          f"{a.epochs} epochs, lr x0.1 at {a.epochs // 2} and {(3 * a.epochs) // 4}; seeds {list(seeds)}")
    print(md)
    print(f"\n({time.perf_counter() - t0:.0f} s; table written to {path})")
    return out


if __name__ == "__main__":
    main()
