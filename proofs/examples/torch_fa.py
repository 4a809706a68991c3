"""Feedback alignment in PyTorch, written from the spec, through conform's torch adapter.

    refimpl conform fa --impl proofs.examples.torch_fa:fa_updates            # accepted
    refimpl conform fa --impl proofs.examples.torch_fa:fa_updates_slipped    # rejected, with a shrunk counterexample
    refimpl conform fa --impl proofs.examples.torch_fa:fa_updates --dtype float32   # a float32 run, accepted
    refimpl conform fa --impl proofs.examples.torch_fa:fa_updates --arch conv       # convolutional nets, accepted

FA (Lillicrap et al. 2016): the forward pass is the network's; in the backward pass the error
reaches layer l through a fixed matrix B_{l+1} instead of W_{l+1}:
delta_l = (delta_{l+1} @ B[l]) * f_l'(a_l). In torch this is a linear layer whose backward
returns ``grad_output @ B`` for its input (a custom autograd.Function); autograd does the rest,
including every activation derivative f'. A conv layer is the same with the transposed convolution:
its backward returns ``conv2d_input(x.shape, B, grad_output)`` (BioTorch's conv FA), and autograd
handles pooling and the flatten. :func:`proofs.conform_torch.torch_impl` hands the step
an ``nn.Sequential`` of the instance (activation names already turned into modules) and collects
the ``.grad`` it sets.

``fa_updates_slipped`` makes one classic slip: its activation passes the gradient straight
through (the derivative factor f'(a_l) is missing), so it agrees with FA exactly when every
hidden activation is linear and disagrees otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from proofs.conform_torch import torch_impl, loss as refimpl_loss


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


class FAConv2d(torch.autograd.Function):
    """y = conv2d(x, W, b); backward: dx = the transposed convolution of dy with B (not W),
    dW = conv2d_weight(x, dy), db = dy summed over batch and positions."""

    @staticmethod
    def forward(ctx, x, W, b, B, stride, padding):
        ctx.save_for_backward(x, B)
        ctx.geometry = (tuple(W.shape), stride, padding)
        return F.conv2d(x, W, b, stride, padding)

    @staticmethod
    def backward(ctx, dy):
        x, B = ctx.saved_tensors
        wshape, stride, padding = ctx.geometry
        dx = torch.nn.grad.conv2d_input(tuple(x.shape), B, dy, stride, padding)
        dW = torch.nn.grad.conv2d_weight(x, wshape, dy, stride, padding)
        return dx, dW, dy.sum((0, 2, 3)), None, None, None


class StraightThrough(torch.autograd.Function):
    """An activation whose backward forgets f' (the deliberate slip)."""

    @staticmethod
    def forward(ctx, a, module):
        return module(a)

    @staticmethod
    def backward(ctx, dh):
        return dh, None


def _fa_step(model: nn.Sequential, x, y, state, loss, slipped):
    mods = list(model)
    Bs = state["B"]
    h, i = x, 0
    n_lin = sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in mods)
    for m in mods:
        if isinstance(m, nn.Linear):
            h = FALinear.apply(h, m.weight, m.bias, Bs[i])
            i += 1
        elif isinstance(m, nn.Conv2d):
            h = FAConv2d.apply(h, m.weight, m.bias, Bs[i], m.stride, m.padding)
            i += 1
        elif slipped and i < n_lin and not isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.Flatten)):
            h = StraightThrough.apply(h, m)  # a hidden activation
        else:
            h = m(h)
    refimpl_loss(h, y, loss).backward()  # sets .grad on every Conv2d's / Linear's weight and bias


@torch_impl
def fa_updates(model, x, y, state, loss="mse"):
    """FA's (dW, db) in gradient convention (batch-mean loss), written into ``.grad``."""
    _fa_step(model, x, y, state, loss, slipped=False)


@torch_impl
def fa_updates_slipped(model, x, y, state, loss="mse"):
    """FA with the hidden activations' derivative factor missing (a deliberate slip)."""
    _fa_step(model, x, y, state, loss, slipped=True)
