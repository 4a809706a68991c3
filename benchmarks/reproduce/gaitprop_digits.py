"""GAIT-prop vs BP update angles while training on scikit-learn digits (spec gaitprop.md §5), CPU-sized.

Published claim (Ahmad, van Gerven & Ambrogioni, NeurIPS 2020, abstract): backpropagation and
GAIT-prop give identical updates when the weights are orthogonal; with a soft orthogonality
regulariser GAIT-prop trains square invertible networks to BP's accuracy (MNIST-sized, exact
numbers unverified in the spec). This is the spec's CPU stand-in, run with refimpl's training loop
(:func:`refimpl.train.train`):

* data: ``refimpl.data.digits(seed=0)`` (1437 / 360 stratified split, inputs / 16);
* network: 64-64-64-64-64 (4 weight layers), leaky-ReLU(0.1) on every layer including the output
  (C1), Haar-orthogonal init, zero biases (``Network.init(..., init="orthogonal", seed=s)``);
* loss: mse on the 10 class units, the 54 auxiliary output units target their own forward values
  (``outputs=10``);
* Adam (bias-corrected) lr 1e-3, batch 32, 30 epochs (1350 steps), seeds 0, 1, 2;
* rules: BP; GAIT-prop gamma = 1e-3 fixed (C1) with ortho 0 / 0.1 / 1 in C1's off-diagonal form and
  0.1 / 1 in C2's full form; adaptive gamma = 1e-6 (C2) with ortho 0; TP through exact inverses
  without and with C2's full regulariser (ortho 1).

Angles (degrees, per layer input -> output) between the rule's *local* update (``record["dW_local"]``,
the regulariser excluded, as in the spec's table) and BP's gradient at the same weights and batch:
measured at every epoch end on 10 fixed probe batches of 32 training samples, then averaged over
the 30 epochs ("mean") or maximised ("max"). The spec's prototype sampled every 10 steps instead.
``train``'s own per-batch angles of the *applied* update (regulariser included) are reported too
("applied, mean"). ``||W^T W - I||`` is the largest Frobenius norm over the square layers at the end.

Usage: ``.venv/bin/python benchmarks/reproduce/gaitprop_digits.py [--epochs 30] [--seeds 0,1,2]
[--rules all|bp,gait,...] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

import refimpl as ri
from refimpl import data as D
from refimpl.backend import to_numpy
from refimpl.metrics import layer_angles
from refimpl.rules import BP, GaitProp, TPInverse
from refimpl.train import train

RULES = {
    "bp": lambda: BP(loss="mse"),
    "gait": lambda: GaitProp(gamma=1e-3),
    "gait-c1-0.1": lambda: GaitProp(gamma=1e-3, ortho=0.1, ortho_form="offdiag"),
    "gait-c1-1": lambda: GaitProp(gamma=1e-3, ortho=1.0, ortho_form="offdiag"),
    "gait-adaptive": lambda: GaitProp(gamma=1e-6, adaptive=True),
    "gait-c2-0.1": lambda: GaitProp(gamma=1e-3, ortho=0.1, ortho_form="full"),
    "gait-c2-1": lambda: GaitProp(gamma=1e-3, ortho=1.0, ortho_form="full"),
    "tp": lambda: TPInverse(),
    "tp-c2-1": lambda: TPInverse(ortho=1.0, ortho_form="full"),
}
K = 10  # the class units; the other 54 output units are auxiliary


def probe_batches(data, n=10, size=32, seed=123):
    gen = np.random.default_rng(seed)
    x, y = to_numpy(data.x_train), to_numpy(data.y_train)
    out = []
    for _ in range(n):
        idx = gen.choice(x.shape[0], size, replace=False)
        out.append((x[idx], np.eye(K)[y[idx]]))
    return out


def local_angles(rule, net, probes):
    """Mean over the probe batches of the per-layer angle between the rule's local update and BP's."""
    rows = []
    bp = BP(loss="mse")
    for x, y in probes:
        upd, _ = rule.updates(net, None, x, y)
        h = net(x)
        ref, _ = bp.updates(net, None, x, np.concatenate([y, h[:, K:]], axis=1))  # aux units: zero error
        rows.append(layer_angles(upd.record.get("dW_local", upd.dW), ref.dW))
    return np.nanmean(np.array(rows, dtype=float), axis=0)


def ortho_deviation(net):
    return max(float(np.linalg.norm(to_numpy(W).T @ to_numpy(W) - np.eye(W.shape[1])))
               for W in net.weights if W.shape[0] == W.shape[1])


def run_one(key, seed, data, epochs, probes):
    rule = RULES[key]()
    net = ri.Network.init([64] * 5, activation="leaky_relu(0.1)", output_activation="leaky_relu(0.1)",
                          init="orthogonal", seed=seed)
    per_epoch = []

    probe_rule = dataclasses.replace(rule, outputs=K) if key != "bp" else None

    def cb(record, net_now, state):
        if probe_rule is not None:
            per_epoch.append(local_angles(probe_rule, net_now, probes))

    t0 = time.perf_counter()
    res = train(rule, net, data, optimizer=ri.optim.Adam(lr=1e-3), epochs=epochs, batch_size=32, seed=seed,
                angles=key != "bp", callback=cb, outputs=K)
    last = res.history[-1]
    applied = [h["angles"] for h in res.history if h.get("angles")]
    out = {"rule": key, "seed": seed, "test_accuracy": last["test_accuracy"],
           "train_accuracy": last["train_accuracy"], "ortho_dev": ortho_deviation(res.net),
           "seconds": time.perf_counter() - t0}
    if per_epoch:
        A = np.array(per_epoch)
        out.update(angle_mean=A.mean(axis=0).tolist(), angle_max=A.max(axis=0).tolist(),
                   applied_mean=np.nanmean(np.array(applied, dtype=float), axis=0).tolist())
    return out


def _fmt(v):
    return "/".join(f"{a:.1f}" for a in v)


def table(results, keys, seeds):
    lines = ["| rule | test acc. (per seed) | train acc. | mean local angle L1/L2/L3/L4 (deg) | max | "
             "applied, mean | final max ||W^T W - I||_F | s per run |", "|" + "---|" * 8]
    for k in keys:
        rs = [r for r in results if r["rule"] == k]
        if not rs:
            continue
        test = ", ".join(f"{r['test_accuracy']:.3f}" for r in rs)
        tr = f"{min(r['train_accuracy'] for r in rs):.3f}-{max(r['train_accuracy'] for r in rs):.3f}"
        od = f"{min(r['ortho_dev'] for r in rs):.2f}-{max(r['ortho_dev'] for r in rs):.2f}"
        sec = f"{np.mean([r['seconds'] for r in rs]):.1f}"
        if "angle_mean" in rs[0]:
            lo = np.min([r["angle_mean"] for r in rs], axis=0)
            hi = np.max([r["angle_mean"] for r in rs], axis=0)
            ang = "/".join(f"{a:.1f}" if abs(a - b) < 0.05 else f"{a:.1f}-{b:.1f}" for a, b in zip(lo, hi))
            mx = _fmt(np.max([r["angle_max"] for r in rs], axis=0))
            ap = _fmt(np.mean([r["applied_mean"] for r in rs], axis=0))
        else:
            ang = mx = ap = "-"
        lines.append(f"| {k} | {test} | {tr} | {ang} | {mx} | {ap} | {od} | {sec} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rules", default="all")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    keys = list(RULES) if a.rules == "all" else a.rules.split(",")
    data = D.digits(seed=0)
    probes = probe_batches(data)
    results = []
    for k in keys:
        for s in seeds:
            r = run_one(k, s, data, a.epochs, probes)
            results.append(r)
            print(f"{k:>14} seed {s}: test {r['test_accuracy']:.3f} train {r['train_accuracy']:.3f} "
                  f"angles {_fmt(r.get('angle_mean', []))} ortho {r['ortho_dev']:.2f} ({r['seconds']:.1f} s)",
                  flush=True)
    print()
    print(table(results, keys, seeds))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"epochs": a.epochs, "seeds": seeds, "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
