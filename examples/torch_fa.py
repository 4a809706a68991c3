"""Feedback alignment in PyTorch, written from the spec, in the adapter form `refimpl conform` takes.

    refimpl conform fa --impl examples.torch_fa:fa_updates            # accepted
    refimpl conform fa --impl examples.torch_fa:fa_updates_slipped    # rejected, with a shrunk counterexample

FA (Lillicrap et al. 2016): the forward pass is the network's; in the backward pass the error
reaches layer l through a fixed matrix B_{l+1} instead of W_{l+1}:
delta_l = (delta_{l+1} @ B[l]) * f_l'(a_l). In torch this is a linear layer whose backward
returns ``grad_output @ B`` for its input (a custom autograd.Function); autograd does the rest,
including every activation derivative f'.

``fa_updates_slipped`` makes one classic slip: its activation passes the gradient straight
through (the derivative factor f'(a_l) is missing), so it agrees with FA exactly when every
hidden activation is linear and disagrees otherwise.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F


class FALinear(torch.autograd.Function):
    """y = x W^T + b; backward: dx = dy @ B (not dy @ W), dW = dy^T x, db = sum dy."""

    @staticmethod
    def forward(ctx, x, W, b, B):
        ctx.save_for_backward(x, B)
        return x @ W.T + b

    @staticmethod
    def backward(ctx, dy):
        x, B = ctx.saved_tensors
        return dy @ B, dy.T @ x, dy.sum(0), None


class StraightThrough(torch.autograd.Function):
    """An activation whose backward forgets f' (the deliberate slip)."""

    @staticmethod
    def forward(ctx, a, name):
        return _act(name)(a)

    @staticmethod
    def backward(ctx, dh):
        return dh, None


def _act(name: str):
    m = re.match(r"^(leaky_relu|elu)\((.*)\)$", name)
    if m:
        v = float(m.group(2))
        return (lambda a: F.leaky_relu(a, v)) if m.group(1) == "leaky_relu" else (lambda a: F.elu(a, v))
    return {"linear": lambda a: a, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
            "leaky_relu": lambda a: F.leaky_relu(a, 0.01), "elu": F.elu,
            # exact log(1 + e^a): F.softplus returns a itself above its threshold (20), 2e-9 off
            "softplus": lambda a: torch.logaddexp(a, torch.zeros_like(a))}[name]


def _loss(h, y, loss):
    if loss == "ce":
        return F.cross_entropy(h, y.long()) if y.dim() == 1 else F.cross_entropy(h, y)
    return 0.5 * ((h - y) ** 2).sum(1).mean()


def _fa(weights, biases, activations, x, y, state, loss, slipped):
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)
    Ws = [t(W).requires_grad_(True) for W in weights]
    bs = [t(b).requires_grad_(True) for b in biases]
    Bs = [t(B) for B in state["B"]]
    h = t(x)
    L = len(Ws)
    for i in range(L):
        a = FALinear.apply(h, Ws[i], bs[i], Bs[i])
        h = StraightThrough.apply(a, activations[i]) if (slipped and i < L - 1) else _act(activations[i])(a)
    yt = torch.tensor(np.asarray(y)) if np.issubdtype(np.asarray(y).dtype, np.integer) else t(y)
    _loss(h, yt, loss).backward()
    return [W.grad.numpy() for W in Ws], [b.grad.numpy() for b in bs]


def fa_updates(weights, biases, activations, x, y, state, loss="mse"):
    """FA's (dW, db) in gradient convention (batch-mean loss)."""
    return _fa(weights, biases, activations, x, y, state, loss, slipped=False)


def fa_updates_slipped(weights, biases, activations, x, y, state, loss="mse"):
    """FA with the hidden activations' derivative factor missing (a deliberate slip)."""
    return _fa(weights, biases, activations, x, y, state, loss, slipped=True)
