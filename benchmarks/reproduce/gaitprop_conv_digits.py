"""GAIT-prop on invertible convolutions vs BP, with and without the orthogonality regulariser (issue 16, 4b).

Published (Dalm, Ahmad, Ambrogioni & van Gerven, TMLR 2023, arXiv 2102.11598; code
``artcogsys/GAIT_prop_scaling``): GAIT-prop with invertible convolutions (square per-patch matrix,
``C_out = C_in*k*k``, only the first ``filters`` channels passed on), adaptive gamma (1e-7, float64)
and a soft orthogonality regulariser on the per-patch matrices (lambda 100 on CIFAR, 1 on ImageNet,
relative to batch-summed gradients) performs credit assignment close to BP on CIFAR-10/ImageNet
convnets (angles to BP's updates monitored during training; exact numbers not transcribed in
the spec). CPU-sized stand-in here:

* data: ``refimpl.data.digits(seed=0)`` (1437 / 360 stratified split, inputs / 16) as 1x8x8 images;
* network (C2's structure, no pooling, down-sampling by stride, leaky-ReLU(0.1), linear logits):
  ``c4k3p1`` (layer 1, not inverted) | ``c36k3s2p1+keep8`` (invertible, overlapping patches, 36x36
  per-patch matrix, 8 of 36 channels passed on) | ``c72k3p1+keep8`` (invertible, stride 1: up to 9
  patches per pixel) | ``l128`` (square output, the first 10 units are the logits, 118 auxiliary);
  orthogonal init (every per-patch matrix orthogonal), zero biases;
* loss: softmax cross-entropy on the 10 logits (C2); Adam lr 1e-3, batch 32, ``--epochs`` (default
  20), seeds 0, 1, 2, float64, one BLAS thread;
* rules: BP; GAIT-prop adaptive gamma 1e-6 (C2) with ortho 0 and with C2's full regulariser
  ``||P P^T - I||^2`` on the per-patch matrices (ortho 0.1 and 1 in refimpl's batch-mean scale, i.e.
  C2 lambda = 3.2 and 32 at batch 32).

Angles (degrees, per layer input -> output) between GAIT-prop's local update (``dW_local``, the
regulariser excluded) and BP's gradient at the same weights and batch, on 5 fixed probe batches at
every epoch end, averaged over epochs ("mean") and at the last epoch ("last"). ``||P^T P - I||``:
largest Frobenius norm over the square per-patch matrices and the square output at the end.

Usage: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/reproduce/gaitprop_conv_digits.py
[--epochs 20] [--seeds 0,1,2] [--rules bp,gait,gait-ortho-0.1,gait-ortho-1] [--out runs/reproduce/gaitprop_conv_digits]``
(about 12 min on one shared core; the table and figure in README.md come from the default run).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import refimpl as ri  # noqa: E402
from refimpl import data as D  # noqa: E402
from refimpl.backend import to_numpy  # noqa: E402
from refimpl.layers import Linear  # noqa: E402
from refimpl.metrics import layer_angles  # noqa: E402
from refimpl.rules import BP, GaitProp  # noqa: E402

ARCH = "c4k3p1 c36k3s2p1+keep8 c72k3p1+keep8 l128"
K = 10
RULES = {
    "bp": lambda: BP(loss="ce"),
    "gait": lambda: GaitProp(gamma=1e-6, adaptive=True, loss="ce", outputs=K),
    "gait-ortho-0.1": lambda: GaitProp(gamma=1e-6, adaptive=True, loss="ce", outputs=K, ortho=0.1),
    "gait-ortho-1": lambda: GaitProp(gamma=1e-6, adaptive=True, loss="ce", outputs=K, ortho=1.0),
}


def images(x):
    return np.reshape(to_numpy(x), (-1, 1, 8, 8))


def bp_logits(net, x, y):
    """BP's gradient of the cross-entropy on the first K outputs (the auxiliary rows get zero)."""
    cut = net.replace(weights=net.weights[:-1] + (net.weights[-1][:K],), biases=net.biases[:-1] + (net.biases[-1][:K],),
                      layers=net.layers[:-1] + (Linear(),))
    upd, _ = BP(loss="ce").updates(cut, None, x, y)
    n = net.weights[-1].shape[0]
    dW = upd.dW[:-1] + (np.concatenate([upd.dW[-1], np.zeros((n - K, upd.dW[-1].shape[1]))]),)
    db = upd.db[:-1] + (np.concatenate([upd.db[-1], np.zeros(n - K)]),)
    return dW, db


def ortho_deviation(net):
    out = 0.0
    for W in net.weights:
        P = to_numpy(W).reshape(W.shape[0], -1)
        if P.shape[0] == P.shape[1]:
            out = max(out, float(np.linalg.norm(P.T @ P - np.eye(P.shape[1]))))
    return out


def accuracy(net, x, y):
    return float(np.mean(np.argmax(to_numpy(net(x))[:, :K], axis=1) == y))


def run_one(key, seed, data, epochs, probes):
    xtr, ytr = images(data.x_train), to_numpy(data.y_train).astype(int)
    xte, yte = images(data.x_test), to_numpy(data.y_test).astype(int)
    net = ri.Network.build((1, 8, 8), ARCH, activation="leaky_relu(0.1)", output_activation="linear",
                           init="orthogonal", seed=seed)
    rule = RULES[key]()
    opt, ost = ri.optim.Adam(lr=1e-3), None
    gen = np.random.default_rng(seed)
    eye = np.eye(K)
    curve, angles = [], []
    t0 = time.perf_counter()
    for ep in range(epochs):
        order = gen.permutation(xtr.shape[0])
        for i in range(0, len(order), 32):
            idx = order[i:i + 32]
            x, y = xtr[idx], eye[ytr[idx]]
            if key == "bp":
                dW, db = bp_logits(net, x, y)
                upd = ri.rules.base.Updates(dW, db, {})
            else:
                upd, _ = rule.updates(net, None, x, y)
            net, ost = ri.optim.apply_updates(net, upd, opt, ost)
        if key != "bp":
            rows = []
            for x, y in probes:
                u, _ = rule.updates(net, None, x, y)
                rows.append(layer_angles(tuple(u.record["dW_local"]), bp_logits(net, x, y)[0]))
            angles.append(np.nanmean(np.array(rows, dtype=float), axis=0).tolist())
        curve.append({"epoch": ep + 1, "train_accuracy": accuracy(net, xtr, ytr), "test_accuracy": accuracy(net, xte, yte),
                      "angles": angles[-1] if angles else None})
    out = {"rule": key, "seed": seed, "test_accuracy": curve[-1]["test_accuracy"],
           "train_accuracy": curve[-1]["train_accuracy"], "ortho_dev": ortho_deviation(net),
           "seconds": time.perf_counter() - t0, "curve": curve}
    if angles:
        A = np.array(angles)
        out.update(angle_mean=A.mean(axis=0).tolist(), angle_last=A[-1].tolist())
    return out


def _fmt(v):
    return "/".join(f"{a:.1f}" for a in v)


def table(results, keys):
    lines = ["| rule | test acc. (per seed) | train acc. | mean angle to BP L1/L2/L3/L4 (deg) | last epoch | "
             "final max ‖PᵀP − I‖_F | s per run |", "|" + "---|" * 7]
    for k in keys:
        rs = [r for r in results if r["rule"] == k]
        if not rs:
            continue
        per = ", ".join(f"{r['test_accuracy']:.3f}" for r in rs)
        test = f"{np.mean([r['test_accuracy'] for r in rs]):.3f} ({per})"
        tr = f"{min(r['train_accuracy'] for r in rs):.3f}-{max(r['train_accuracy'] for r in rs):.3f}"
        od = f"{min(r['ortho_dev'] for r in rs):.2f}-{max(r['ortho_dev'] for r in rs):.2f}"
        sec = f"{np.mean([r['seconds'] for r in rs]):.0f}"
        if "angle_mean" in rs[0]:
            ang = _fmt(np.mean([r["angle_mean"] for r in rs], axis=0))
            last = _fmt(np.mean([r["angle_last"] for r in rs], axis=0))
        else:
            ang = last = "-"
        lines.append(f"| {k} | {test} | {tr} | {ang} | {last} | {od} | {sec} |")
    return "\n".join(lines)


def plot(results, keys, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = dict(zip(RULES, ("black", "tab:red", "tab:blue", "tab:green")))
    for k in keys:
        rs = [r for r in results if r["rule"] == k]
        if not rs:
            continue
        ep = [c["epoch"] for c in rs[0]["curve"]]
        acc = np.mean([[c["test_accuracy"] for c in r["curve"]] for r in rs], axis=0)
        ax[0].plot(ep, acc, label=k, color=colors.get(k))
        if "angle_mean" in rs[0]:
            a1 = np.mean([[c["angles"][0] for c in r["curve"]] for r in rs], axis=0)
            ax[1].plot(ep, a1, label=k, color=colors.get(k))
    ax[0].set(xlabel="epoch", ylabel="test accuracy (mean of seeds)", title="digits 1x8x8, invertible convs")
    ax[1].set(xlabel="epoch", ylabel="angle to BP, layer 1 (deg)", title="GAIT-prop local update vs BP")
    for a in ax:
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rules", default=",".join(RULES))
    p.add_argument("--out", default=os.path.join("runs", "reproduce", "gaitprop_conv_digits"),
                   help="folder for results.json, table.md and learning_curves.png")
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    keys = a.rules.split(",")
    data = D.digits(seed=0)
    gen = np.random.default_rng(123)
    xtr, ytr = images(data.x_train), to_numpy(data.y_train).astype(int)
    probes = [(xtr[i], np.eye(K)[ytr[i]]) for i in (gen.choice(xtr.shape[0], 32, replace=False) for _ in range(5))]
    results = []
    for k in keys:
        for s in seeds:
            r = run_one(k, s, data, a.epochs, probes)
            results.append(r)
            print(f"{k:>15} seed {s}: test {r['test_accuracy']:.3f} train {r['train_accuracy']:.3f} "
                  f"angles {_fmt(r.get('angle_mean', []))} ortho {r['ortho_dev']:.2f} ({r['seconds']:.0f} s)", flush=True)
    print()
    md = table(results, keys)
    print(md)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"epochs": a.epochs, "seeds": seeds, "arch": ARCH, "results": results}, f, indent=1)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(md + "\n")
    plot(results, keys, os.path.join(a.out, "learning_curves.png"))
    print(f"wrote {a.out}/results.json, table.md, learning_curves.png")
    return results


if __name__ == "__main__":
    main()
