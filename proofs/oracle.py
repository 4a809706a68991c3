"""The torch autograd oracle, in float64.

An independent computation of what refimpl computes by hand: the forward pass is rewritten with
torch's own activation functions and losses (``torch.tanh``, ``F.leaky_relu``,
``F.cross_entropy``...), and derivatives come from autograd / ``torch.func``. The oracle never
calls refimpl's math; it only reads a :class:`refimpl.Network`'s arrays (as host copies).

torch is imported inside the functions: ``import proofs`` stays cheap and the core suite runs
without the ``[oracle]`` extra.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from refimpl.backend import to_numpy
from refimpl import activations as _act

__all__ = ["torch_params", "torch_activation", "torch_forward", "torch_loss", "bp_gradients",
           "loss_value", "output_jacobians", "layer_jacobians", "central_difference",
           "forward_difference", "to_host", "output_errors", "gauss_newton_targets"]


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the oracle needs torch: pip install 'refimpl[oracle]' "
                          "(or torch==2.13.0 for the CPU wheel)") from exc
    return torch


def to_host(a) -> np.ndarray:
    """A float64 host copy of any array (refimpl side) or tensor."""
    return to_numpy(a).astype(np.float64)


def torch_params(net, requires_grad: bool = True):
    """``(Ws, bs)``: float64 torch copies of the network's weights and biases (leaves)."""
    torch = _torch()
    Ws = [torch.tensor(to_host(W), dtype=torch.float64, requires_grad=requires_grad) for W in net.weights]
    bs = [torch.tensor(to_host(b), dtype=torch.float64, requires_grad=requires_grad) for b in net.biases]
    return Ws, bs


def torch_activation(name: str) -> Callable:
    """torch's own implementation of a refimpl activation name."""
    torch = _torch()
    F = torch.nn.functional
    act = _act.get(name)
    base = act.name.split("(")[0]
    if base == "linear":
        return lambda a: a
    if base == "tanh":
        return torch.tanh
    if base == "sigmoid":
        return torch.sigmoid
    if base == "relu":
        return torch.relu
    if base == "leaky_relu":
        return lambda a: F.leaky_relu(a, negative_slope=act.param)
    if base == "elu":
        return lambda a: F.elu(a, alpha=act.param)
    if base == "softplus":
        return F.softplus
    raise ValueError(f"oracle: no torch activation for {name!r}")


def torch_forward(Ws, bs, activations: Sequence[str], x, return_all: bool = False):
    """``a_l = h_{l-1} W_l^T + b_l`` (``torch.nn.functional.linear``), ``h_l = f_l(a_l)``."""
    torch = _torch()
    h = x
    hs = [x]
    for W, b, name in zip(Ws, bs, activations):
        h = torch_activation(name)(torch.nn.functional.linear(h, W, b))
        hs.append(h)
    return hs if return_all else h


def torch_loss(name: str, h, y):
    """Batch mean of ``0.5 ||h - y||^2`` (mse) or softmax cross-entropy (``F.cross_entropy``)."""
    torch = _torch()
    if name == "mse":
        return 0.5 * ((h - y) ** 2).sum(dim=1).mean()
    if name == "ce":
        if y.dim() == 1:
            return torch.nn.functional.cross_entropy(h, y.long())
        return torch.nn.functional.cross_entropy(h, y)  # probability targets
    raise ValueError(f"oracle: unknown loss {name!r}")


def _torch_y(y):
    torch = _torch()
    yh = to_numpy(y)
    if np.issubdtype(yh.dtype, np.integer):
        return torch.tensor(yh, dtype=torch.int64)
    return torch.tensor(yh.astype(np.float64), dtype=torch.float64)


def bp_gradients(net, x, y, loss: str):
    """Autograd's ``(dW, db, loss_value)`` for the batch-mean loss, as host float64 arrays."""
    torch = _torch()
    Ws, bs = torch_params(net)
    xt = torch.tensor(to_host(x), dtype=torch.float64)
    L = torch_loss(loss, torch_forward(Ws, bs, net.activations, xt), _torch_y(y))
    L.backward()
    return ([W.grad.numpy().copy() for W in Ws], [b.grad.numpy().copy() for b in bs], float(L.detach()))


def loss_value(net, x, y, loss: str) -> float:
    torch = _torch()
    Ws, bs = torch_params(net, requires_grad=False)
    xt = torch.tensor(to_host(x), dtype=torch.float64)
    return float(torch_loss(loss, torch_forward(Ws, bs, net.activations, xt), _torch_y(y)))


def layer_jacobians(net, x, frm: int, to: int):
    """Per-sample Jacobians ``d h_to / d h_frm`` (``torch.func.jacrev`` under ``vmap``).

    Returns a host array of shape ``(B, n_to, n_frm)``; ``frm < to``, layers indexed as the trace.
    """
    torch = _torch()
    from torch.func import jacrev, vmap

    if not 0 <= frm < to <= net.depth:
        raise ValueError(f"frm, to: expected 0 <= frm < to <= {net.depth}, got {frm}, {to}")
    Ws, bs = torch_params(net, requires_grad=False)
    xt = torch.tensor(to_host(x), dtype=torch.float64)
    h_frm = torch_forward(Ws[:frm], bs[:frm], net.activations[:frm], xt) if frm > 0 else xt

    def tail(h):  # one sample, (n_frm,) -> (n_to,)
        return torch_forward(Ws[frm:to], bs[frm:to], net.activations[frm:to], h[None, :])[0]

    return vmap(jacrev(tail))(h_frm).numpy().copy()


def output_jacobians(net, x):
    """Per-sample ``d h_L / d x``, shape ``(B, n_L, n_0)``."""
    return layer_jacobians(net, x, 0, net.depth)


def central_difference(f: Callable[[float], float], h: float) -> float:
    """``(f(h) - f(-h)) / (2h)``: error ``O(h^2)`` for C^3 functions."""
    return (f(h) - f(-h)) / (2 * h)


def forward_difference(f: Callable[[float], float], h: float) -> float:
    """``(f(h) - f(0)) / h``: error ``O(h)`` (the negative control of central differences)."""
    return (f(h) - f(0.0)) / h


def output_errors(net, x, y, loss: str, reduction: str = "sum"):
    """Autograd's ``dL/dh_L`` as a host array ``(B, n_L)``.

    ``reduction="sum"``: the per-sample gradient ``d l(h_L[b], y[b]) / d h_L[b]`` (gradient of the
    batch *sum*, Ernoult et al.'s convention); ``"mean"``: the gradient of the batch-mean loss (1/B
    times the former, Meulemans et al.'s convention).
    """
    torch = _torch()
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
    Ws, bs = torch_params(net, requires_grad=False)
    xt = torch.tensor(to_host(x), dtype=torch.float64)
    hL = torch_forward(Ws, bs, net.activations, xt).detach().requires_grad_(True)
    Lm = torch_loss(loss, hL, _torch_y(y))
    total = Lm * hL.shape[0] if reduction == "sum" else Lm
    (g,) = torch.autograd.grad(total, hL)
    return g.numpy().copy()


def gauss_newton_targets(net, x, y, loss: str, layer: int, beta: float, damping: float = 0.0,
                         reduction: str = "sum"):
    """Per-sample, min-norm Gauss-Newton targets for ``h_layer`` (host array ``(B, n_layer)``).

    ``t[b] = h_layer[b] - beta * Jbar_b^+ e_L[b]`` with ``Jbar_b = d h_L / d h_layer`` at sample b
    (``torch.func.jacrev``, :func:`layer_jacobians`) and ``e_L`` from :func:`output_errors` with the
    given ``reduction``. ``damping = lam > 0`` replaces the pseudo-inverse by
    ``Jbar^T (Jbar Jbar^T + lam I)^{-1}`` (Meulemans et al. 2020, Sec. 3, "GN targets"; their
    ``compute_damped_gn_update``), which interpolates between the pinv (lam -> 0) and
    ``Jbar^T / lam`` (lam -> inf). ``layer == depth`` gives the output target ``h_L - beta e_L``.
    """
    torch = _torch()
    if not 1 <= layer <= net.depth:
        raise ValueError(f"layer: expected 1 <= layer <= {net.depth}, got {layer}")
    if not (np.isfinite(damping) and damping >= 0):
        raise ValueError(f"damping: expected a finite number >= 0, got {damping}")
    Ws, bs = torch_params(net, requires_grad=False)
    xt = torch.tensor(to_host(x), dtype=torch.float64)
    h = torch_forward(Ws, bs, net.activations, xt, return_all=True)[layer]
    e = torch.tensor(output_errors(net, x, y, loss, reduction), dtype=torch.float64)
    if layer == net.depth:
        return (h - beta * e).numpy().copy()
    J = torch.tensor(layer_jacobians(net, x, layer, net.depth), dtype=torch.float64)  # (B, nL, nl)
    if damping == 0.0:
        step = (torch.linalg.pinv(J) @ e[:, :, None])[:, :, 0]
    else:
        nL = J.shape[1]
        G = J @ J.transpose(1, 2) + damping * torch.eye(nL, dtype=torch.float64)
        step = (J.transpose(1, 2) @ torch.linalg.solve(G, e[:, :, None]))[:, :, 0]
    return (h - beta * step).numpy().copy()


# --- forward-mode tangents (PEPITA's first-order theory, proofs.pepita) -------------------------

def forward_tangents(net, x, v, masks=None):
    """Activities and forward tangents of every layer along the input direction ``v`` (host ``(B, n_0)``).

    The forward pass is ``h_l = M_l * f_l(h_{l-1} W_l^T + b_l)`` with the given host masks on the
    hidden layers (``masks[l-1]`` of shape ``(B, n_l)``, None entries or ``masks=None``: no mask)
    and no mask on the output. ``torch.func.jvp`` (forward mode, no finite differences) gives
    ``u_l = d h_l / d x . v`` row by row. Returns ``(hs, us)``: host float64 lists indexed by layer
    ``0..L`` (``us[0] = v``). At a ReLU kink torch's derivative convention applies (0 at 0).
    """
    torch = _torch()
    from torch.func import jvp

    Ws, bs = torch_params(net, requires_grad=False)
    xt = torch.tensor(to_host(x), dtype=torch.float64)
    vt = torch.tensor(np.asarray(v, dtype=np.float64), dtype=torch.float64)
    L = net.depth
    ms = [None] * (L - 1) if masks is None else [None if m is None else torch.tensor(to_host(m)) for m in masks]

    def fwd(inp):
        h = inp
        out = [inp]
        for l in range(1, L + 1):
            h = torch_activation(net.activations[l - 1])(torch.nn.functional.linear(h, Ws[l - 1], bs[l - 1]))
            if l < L and ms[l - 1] is not None:
                h = h * ms[l - 1]
            out.append(h)
        return tuple(out)

    hs, us = jvp(fwd, (xt,), (vt,))
    return [h.numpy().copy() for h in hs], [u.numpy().copy() for u in us]


def softmax_error(logits, y) -> np.ndarray:
    """``softmax(logits) - onehot(y)`` per sample (host), with torch's softmax; ``y`` labels or one-hot."""
    torch = _torch()
    z = torch.tensor(to_host(logits), dtype=torch.float64)
    p = torch.softmax(z, dim=1)
    yh = to_numpy(y)
    if yh.ndim == 1:
        t = torch.nn.functional.one_hot(torch.tensor(yh.astype(np.int64)), z.shape[1]).to(torch.float64)
    else:
        t = torch.tensor(yh.astype(np.float64), dtype=torch.float64)
    return (p - t).numpy().copy()
