"""Random instances: networks, batches and losses, drawn through a :class:`~proofs.theorem.Drawer`.

Structure is drawn (depth, widths, activations, batch size, loss, a seed); weights and data are
built from the drawn seed on the host and moved to the requested backend (ENGINEERING.md §2.3).
The same functions serve Hypothesis (``HypothesisDrawer``: failures shrink to small networks) and
``refimpl verify`` (``RngDrawer``). Hypothesis strategies proper are at the bottom
(:func:`instances`), built on ``st.data()``.

Network kinds:

* ``any``: independent widths;
* ``square``: every width equal (``square_input=False`` lets the input width differ);
* ``orthogonal``: square, Haar-orthogonal weights (``W^T W = I``);
* ``invertible``: square, ``W = U diag(s) V^T`` with Haar ``U, V`` and singular values ``s`` in
  ``[1/cond_max^(1/2), cond_max^(1/2)]`` (condition number <= ``cond_max``; never singular).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from refimpl import Network
from refimpl.backend import rng as host_rng, from_numpy, resolve_namespace, resolve_dtype
from refimpl.network import haar_orthogonal
from .theorem import Drawer

__all__ = ["ALL_ACTIVATIONS", "SMOOTH_ACTIVATIONS", "INVERTIBLE_ACTIVATIONS", "PIECEWISE_LINEAR",
           "NetInstance", "draw_network", "draw_batch", "draw_instance", "instances",
           "network_from_matrices"]

ALL_ACTIVATIONS = ("linear", "tanh", "sigmoid", "relu", "leaky_relu", "leaky_relu(0.2)", "elu", "softplus")
#: C^3 everywhere: finite differences and Taylor-order arguments apply.
SMOOTH_ACTIVATIONS = ("linear", "tanh", "sigmoid", "softplus")
INVERTIBLE_ACTIVATIONS = ("linear", "tanh", "sigmoid", "leaky_relu", "leaky_relu(0.2)", "elu", "softplus")
PIECEWISE_LINEAR = ("linear", "relu", "leaky_relu", "leaky_relu(0.2)")
KINDS = ("any", "square", "orthogonal", "invertible")


@dataclass(frozen=True)
class NetInstance:
    """A network, a batch and a loss, plus the drawn seed and any extra parameters of a theorem."""

    net: Network
    x: Any
    y: Any
    loss: str
    seed: Optional[int] = None
    params: dict = field(default_factory=dict)

    def describe(self) -> str:
        return (f"sizes={list(self.net.sizes)} activations={list(self.net.activations)} "
                f"batch={self.x.shape[0]} loss={self.loss} {self.params or ''}").strip()


def network_from_matrices(Ws: Sequence[np.ndarray], bs: Sequence[np.ndarray], activations, xp, dtype,
                          device=None) -> Network:
    """A :class:`Network` from host matrices, moved to backend ``xp`` and ``dtype``."""
    ns = resolve_namespace(xp)
    dt = resolve_dtype(ns, dtype)
    return Network(tuple(from_numpy(W, ns, dt, device) for W in Ws),
                   tuple(from_numpy(b, ns, dt, device) for b in bs), tuple(activations))


def draw_network(d: Drawer, xp="numpy", dtype="float64", *, depth=(1, 5), width=(1, 12),
                 activations: Sequence[str] = ALL_ACTIVATIONS, output_activations: Optional[Sequence[str]] = None,
                 kind: str = "any", square_input: bool = True, input_width=None, output_width=None,
                 cond_max: float = 4.0, bias: bool = True, device=None) -> Network:
    """A random network; see the module docstring for ``kind``.

    ``depth`` and ``width`` are inclusive ranges; ``output_activations`` defaults to
    ``activations``. ``input_width`` / ``output_width`` (ranges or ints) override the widths at
    the ends (``kind`` square/orthogonal/invertible keep the hidden layers square).
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    L = d.integer(*depth)
    lo, hi = width

    def _w(spec):
        if spec is None:
            return d.integer(lo, hi)
        return spec if isinstance(spec, int) else d.integer(*spec)

    if kind == "any":
        sizes = [_w(input_width)] + [d.integer(lo, hi) for _ in range(L - 1)] + [_w(output_width)]
    else:
        n = d.integer(lo, hi)
        sizes = [n] * (L + 1)
        if not square_input:
            sizes[0] = _w(input_width)
        if output_width is not None:
            sizes[-1] = _w(output_width)
    acts = [d.choice(activations) for _ in range(L - 1)]
    acts.append(d.choice(output_activations if output_activations is not None else activations))
    seed = d.seed()
    gen = host_rng(seed)
    Ws, bs = [], []
    for i in range(L):
        n_out, n_in = sizes[i + 1], sizes[i]
        if kind in ("any", "square"):
            W = gen.standard_normal((n_out, n_in)) / np.sqrt(n_in)
        elif kind == "orthogonal":
            W = haar_orthogonal(gen, n_out, n_in)
        else:  # invertible: bounded condition number
            U = haar_orthogonal(gen, n_out, n_out)
            V = haar_orthogonal(gen, n_in, n_in)
            k = min(n_out, n_in)
            s = np.exp(gen.uniform(-0.5, 0.5, size=k) * np.log(cond_max))
            S = np.zeros((n_out, n_in))
            S[np.arange(k), np.arange(k)] = s
            W = U @ S @ V.T
        b = 0.1 * gen.standard_normal(n_out) if bias else np.zeros(n_out)
        Ws.append(W)
        bs.append(b)
    return network_from_matrices(Ws, bs, acts, xp, dtype, device)


def draw_batch(d: Drawer, net: Network, loss: str, *, batch=(1, 16), labels: Optional[bool] = None,
               x_scale: float = 1.0, device=None):
    """``(x, y)`` for ``net``: ``x ~ N(0, x_scale^2)``; ``y ~ N(0, 1)`` (mse) or classes (ce:
    integer labels or one-hot rows, drawn unless ``labels`` fixes it)."""
    B = d.integer(*batch)
    seed = d.seed()
    gen = host_rng(seed)
    xp = net.xp
    dt = net.dtype
    x = from_numpy(x_scale * gen.standard_normal((B, net.sizes[0])), xp, dt, device)
    n_out = net.sizes[-1]
    if loss == "mse":
        y = from_numpy(gen.standard_normal((B, n_out)), xp, dt, device)
    elif loss == "ce":
        classes = gen.integers(0, n_out, size=B)
        as_labels = d.boolean() if labels is None else labels
        if as_labels:
            y = xp.astype(from_numpy(classes.astype(np.float64), xp, "float64", device), xp.int64)
        else:
            y = from_numpy(np.eye(n_out)[classes], xp, dt, device)
    else:
        raise ValueError(f"loss: expected 'mse' or 'ce', got {loss!r}")
    return x, y


def draw_instance(d: Drawer, xp="numpy", dtype="float64", *, losses=("mse", "ce"), batch=(1, 16),
                  **network_kwargs) -> NetInstance:
    """A network (:func:`draw_network` arguments), a loss and a batch.

    Under ``ce`` the output has at least 2 units: with one class the softmax is identically 1 and
    the loss and all its gradients vanish for every parameter (a degenerate instance on which no
    comparison can fail).
    """
    loss = d.variant("loss", losses)
    if loss == "ce" and network_kwargs.get("output_width") is None:
        lo, hi = network_kwargs.get("width", (1, 12))
        if network_kwargs.get("kind", "any") == "any":
            network_kwargs = dict(network_kwargs, output_width=(2, hi))
        elif lo < 2:  # square kinds: every width is the output width, so all of them >= 2
            network_kwargs = dict(network_kwargs, width=(2, max(2, hi)))
    net = draw_network(d, xp, dtype, **network_kwargs)
    x, y = draw_batch(d, net, loss, batch=batch)
    return NetInstance(net, x, y, loss)


def instances(xp="numpy", dtype="float64", **kwargs):
    """Hypothesis strategy of :class:`NetInstance` (``draw_instance`` under ``st.data()``)."""
    from hypothesis import strategies as st
    from .theorem import HypothesisDrawer

    @st.composite
    def _inst(draw):
        data = draw(st.data())
        return draw_instance(HypothesisDrawer(data), xp, dtype, **kwargs)

    return _inst()
