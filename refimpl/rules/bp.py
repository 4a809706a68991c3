"""Backpropagation, written out layer by layer.

With the loss ``L`` (batch mean, :mod:`refimpl.losses`), ``e = dL/dh_L`` and the trace of
:meth:`Network.forward`:

    delta_L = e * f_L'(a_L)                                   (output delta)
    delta_l = (delta_{l+1} @ W_{l+1}) * f_l'(a_l),  l = L-1 .. 1   (backward recursion)
    dW_l    = delta_l^T @ h_{l-1},       db_l = sum_b delta_l[b]

(Rumelhart, Hinton & Williams 1986). ``delta_l = dL/da_l`` exactly; ``dW_l`` is autograd's
``W_l.grad``. :func:`backward` takes the matrices that carry the error downwards as an argument,
so feedback alignment and sign symmetry reuse it with ``B_l`` in place of ``W_l``.

On any layer type (:mod:`refimpl.layers`) the same three lines read

    delta_l = P_l^T( transpose_{l+1}(W_{l+1}, delta_{l+1}) ) * f_l'(a_l)
    dW_l    = weight_grad_l(delta_l, h_{l-1}),      db_l = bias_grad_l(delta_l)

where ``transpose`` is ``delta @ W`` for a dense layer and the transposed convolution for a conv
layer, ``weight_grad`` is ``delta^T @ h`` / the conv weight gradient, and ``P_l^T`` is the
transpose of layer ``l``'s pooling (identity without; max-pooling routes through the forward
argmax, torch's first-maximum tie rule; average pooling spreads evenly).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import losses as _losses
from .base import Updates, EmptyState, check_batch

__all__ = ["BP", "backward", "weight_gradients"]


def backward(net, trace, e, feedback=None):
    """The deltas ``delta_l = dL/da_l`` for ``l = 1..L`` from the output gradient ``e = dL/dh_L``.

    ``feedback[i]`` (shape of ``net.weights[i]``) replaces ``W_{i+1}`` in the recursion
    ``delta_l = (delta_{l+1} @ W_{l+1}) * f_l'(a_l)``; ``None`` means the forward weights (BP).
    Returns a tuple of length ``L + 1`` with ``None`` at index 0 (no delta for the input).
    """
    L = net.depth
    xp = net.xp
    mats = net.weights if feedback is None else feedback
    deltas = [None] * (L + 1)
    deltas[L] = e * net.activation(L).df(trace.a[L])
    for l in range(L - 1, 0, -1):
        dh = net.layer(l + 1).transpose(xp, mats[l], deltas[l + 1])     # dense: delta_{l+1} @ W_{l+1}
        dz = net.layer(l).unpool(xp, dh, trace.z[l])                    # P_l^T (identity without pooling)
        deltas[l] = dz * net.activation(l).df(trace.a[l])
    return tuple(deltas)


def weight_gradients(net, trace, deltas):
    """``dW_l = delta_l^T @ h_{l-1}`` and ``db_l = sum_b delta_l[b]`` for ``l = 1..L`` (any layer
    type: ``weight_grad`` / ``bias_grad`` of :mod:`refimpl.layers`)."""
    xp = net.xp
    L = len(deltas) - 1
    dW = tuple(net.layer(l).weight_grad(xp, deltas[l], trace.h[l - 1]) for l in range(1, L + 1))
    db = tuple(net.layer(l).bias_grad(xp, deltas[l]) for l in range(1, L + 1))
    return dW, db


@dataclass(frozen=True)
class BP:
    """Backpropagation of the loss ``loss`` (``"mse"`` or ``"ce"``).

    ``updates`` returns autograd's gradients of the batch-mean loss; ``record`` holds
    ``trace``, ``loss`` (value), ``output_grad`` (``dL/dh_L``) and ``delta`` (tuple indexed by
    layer, ``delta[l] = dL/da_l``, ``delta[0] = None``).
    """

    loss: str = "mse"

    def __post_init__(self):
        _losses.get(self.loss)

    def init(self, net, seed=0):
        return EmptyState()

    def updates(self, net, state, x, y):
        loss = _losses.get(self.loss)
        xp, y = check_batch(net, x, y, loss)
        trace = net.forward(x)
        e = loss.grad(trace.h[-1], y)
        deltas = backward(net, trace, e)
        dW, db = weight_gradients(net, trace, deltas)
        record = {"trace": trace, "loss": loss.value(trace.h[-1], y), "output_grad": e, "delta": deltas}
        return Updates(dW, db, record), state
