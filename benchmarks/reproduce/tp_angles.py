"""Angle table of the target-propagation family on scikit-learn's digits (Ernoult et al. 2022, Fig. 4.3 style).

What the paper reports: the angle between DTP's weight updates and BP's gradients, per layer, for
random feedback (~90 deg), symmetric feedback (~0 deg) and L-DRL-trained feedback (small), on LeNet /
CIFAR-10 (E-code ``theorem_test.py``); Meulemans et al. 2020 relate DRL-trained feedback to
Gauss-Newton targets instead. The CPU stand-in here: a 64-128-64-10 tanh MLP (linear output,
cross-entropy) at its random initialisation, one batch of 128 digits, beta = 1e-3 (``reduction=
"sum"``: Ernoult's summed-loss output target).

For every feedback variant the table gives, per hidden layer l:

* ``BP``: angle between DTP's update ``dW_l`` (divided by beta) and autograd's gradient;
* ``GN``: angle between DTP's target displacement ``t_l - h_l`` and the Gauss-Newton one
  ``t^GN_l - h_l = -beta Jbar_l^+ e`` (per sample, min-norm; ``proofs.oracle.gauss_newton_targets``),
  over the whole batch.

The output layer's update is BP's exactly for every variant (not shown). Feedback variants:
random (``Q ~ N(0, 1/n)``, tanh block ``g(y) = tanh(y) Q^T + c``); symmetric ``Q = W^T`` with
the same block (Ernoult's ``init_symetric_weights``) and with the JMC phi-feedback
``phi(y) = y - y^3/3`` (exact JMC); L-DRL-trained (block and phi); DRL-trained sequential feedback
(DTP-DRL) and direct linear feedback (DDTP-linear). Training uses each rule's ``train_feedback`` on
``--batches`` training batches of 64 (K = ``--iterations`` Adam steps per layer and batch, sigma 0.05,
4 noise draws per sample, lr 1e-2 for the first half of the batches and 1e-3 after) with the
forward net fixed.

Run:  .venv/bin/python benchmarks/reproduce/tp_angles.py [--seed 0] [--batches 40] [--out DIR]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # small matrices: threaded BLAS only adds contention (12x slower here)

import argparse
import dataclasses
import json
import math
import time

import numpy as np

import refimpl as ri
from refimpl import data as ri_data
from refimpl.rules.target_prop import DTP, DRL, LDRL, TPState
from proofs import oracle


def angle(a, b):
    a, b = np.ravel(a), np.ravel(b)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return math.nan
    return math.degrees(math.acos(max(-1.0, min(1.0, float(a @ b) / (na * nb)))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", type=int, default=40, help="training batches for the feedback (forward net fixed)")
    p.add_argument("--iterations", type=int, default=20, help="feedback iterations per layer and batch (K)")
    p.add_argument("--beta", type=float, default=1e-3)
    p.add_argument("--out", default=None, help="folder for table.md and results.json")
    args = p.parse_args(argv)

    data = ri_data.digits(seed=args.seed)
    x_tr, y_tr = np.asarray(data.x_train), np.asarray(data.y_train)
    net = ri.Network.init([64, 128, 64, 10], activation="tanh", output_activation="linear", seed=args.seed)
    gen = np.random.default_rng(args.seed)
    idx = gen.permutation(x_tr.shape[0])
    xb, yb = x_tr[idx[:128]], y_tr[idx[:128]]
    batches = [(x_tr[idx[(k * 64) % 1280:(k * 64) % 1280 + 64]], y_tr[idx[(k * 64) % 1280:(k * 64) % 1280 + 64]])
               for k in range(args.batches)]
    beta, L = args.beta, net.depth

    dW_bp, _, _ = oracle.bp_gradients(net, xb, yb, "ce")
    h = net.forward(xb).h
    gn = {l: oracle.gauss_newton_targets(net, xb, yb, "ce", l, beta) - np.asarray(h[l]) for l in range(1, L)}

    K = args.iterations
    variants = []

    def add(name, rule, state, train_rule=None, seconds=0.0):
        upd, _ = rule.updates(net, state, xb, yb)
        t = upd.record["targets"]
        row = {"feedback": name, "train_seconds": round(seconds, 2)}
        for l in range(1, L):
            row[f"BP_{l}"] = angle(upd.dW[l - 1], dW_bp[l - 1])
            row[f"GN_{l}"] = angle(np.asarray(t[l]) - np.asarray(h[l]), gn[l])
        variants.append(row)
        return row

    def trained(rule, state):
        # Adam at lr_fb for the first half of the batches, lr_fb / 10 for the second (the forward
        # net is fixed, so this is a plain stochastic minimisation of each feedback loss).
        t0 = time.time()
        half = len(batches) // 2
        for k, (xk, yk) in enumerate(batches):
            r = rule if k < half else dataclasses.replace(rule, lr_fb=rule.lr_fb / 10)
            state = r.train_feedback(net, state, xk, yk)
        return state, time.time() - t0

    block = DTP(beta=beta, loss="ce")                               # g(y) = tanh(y) Q^T + c
    phi = DTP(beta=beta, loss="ce", feedback_activation="jmc")      # g(y) = (y - y^3/3) Q^T + c
    s_rand = block.init(net, seed=args.seed + 1)
    add("random (tanh block)", block, s_rand)
    add("symmetric Q = W^T (tanh block)", block, block.symmetric_state(net))
    add("symmetric Q = W^T (JMC phi)", phi, phi.symmetric_state(net))

    for fa, label in (("same", "tanh block"), ("jmc", "JMC phi")):
        r = LDRL(beta=beta, loss="ce", feedback_activation=fa, sigma=0.05, iterations=K, lr_fb=1e-2,
                 optimizer="adam", samples=4, seed=args.seed)
        s, sec = trained(r, r.init(net, seed=args.seed + 1))
        add(f"L-DRL-trained ({label})", r, s, seconds=sec)

    r = DRL(beta=beta, loss="ce", feedback="sequential", feedback_activation="jmc", sigma=0.05, iterations=K,
            lr_fb=1e-2, samples=4, seed=args.seed)
    s, sec = trained(r, r.init(net, seed=args.seed + 1))
    add("DRL-trained sequential (JMC phi)", r, s, seconds=sec)

    r = DRL(beta=beta, loss="ce", feedback="direct_linear", sigma=0.05, iterations=K, lr_fb=1e-2, samples=4,
            seed=args.seed)
    s, sec = trained(r, r.init(net, seed=args.seed + 1))
    add("DRL-trained direct linear (DDTP)", r, s, seconds=sec)

    head = "| feedback | " + " | ".join(f"BP angle, layer {l}" for l in range(1, L)) + " | " + \
        " | ".join(f"GN angle, layer {l}" for l in range(1, L)) + " | train s |"
    lines = [head, "|" + "---|" * (2 * (L - 1) + 2)]
    for v in variants:
        lines.append(f"| {v['feedback']} | " + " | ".join(f"{v[f'BP_{l}']:.1f}" for l in range(1, L)) + " | " +
                     " | ".join(f"{v[f'GN_{l}']:.1f}" for l in range(1, L)) + f" | {v['train_seconds']} |")
    gn_vs_bp = [angle(gn[l], -beta * np.asarray(_bp_delta_h(net, xb, yb, l))) for l in range(1, L)]
    lines.append("")
    lines.append("Angle between the GN and BP target displacements (t - h): " +
                 ", ".join(f"layer {l}: {a:.1f} deg" for l, a in zip(range(1, L), gn_vs_bp)))
    table = "\n".join(lines)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "table.md"), "w") as f:
            f.write(table + "\n")
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"args": vars(args), "rows": variants, "gn_vs_bp": gn_vs_bp}, f, indent=1)


def _bp_delta_h(net, x, y, l):
    """Per-sample dl/dh_l (summed-loss convention) from autograd."""
    import torch

    Ws, bs = oracle.torch_params(net, requires_grad=False)
    xt = torch.tensor(np.asarray(x), dtype=torch.float64)
    hs = oracle.torch_forward(Ws, bs, net.activations, xt, return_all=True)
    hl = hs[l].detach().requires_grad_(True)
    out = oracle.torch_forward(Ws[l:], bs[l:], net.activations[l:], hl)
    loss = oracle.torch_loss("ce", out, torch.tensor(np.asarray(y), dtype=torch.int64)) * x.shape[0]
    (g,) = torch.autograd.grad(loss, hl)
    return g.numpy()


if __name__ == "__main__":
    main()
