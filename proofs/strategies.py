"""Random instances: networks, batches and losses, drawn through a :class:`~proofs.theorem.Drawer`.

Structure is drawn (depth, widths, activations, batch size, loss, a seed); weights and data are
built from the drawn seed on the host and moved to the requested backend (ENGINEERING.md §2.3).
The same functions serve Hypothesis (``HypothesisDrawer``: failures shrink to small networks) and
``refimpl verify`` (``RngDrawer``). Hypothesis strategies proper are at the bottom
(:func:`networks`, :func:`instances`), built on ``st.data()``.

Public API for users' own property tests (README "Hypothesis strategies for your own tests"):
:func:`networks` (a :class:`refimpl.Network`), :func:`instances` (a :class:`NetInstance`: network,
batch ``x, y`` and loss), and the keyword arguments of :func:`draw_network` / :func:`draw_batch`
they take; ``ALL_ACTIVATIONS``, ``SMOOTH_ACTIVATIONS``, ``INVERTIBLE_ACTIVATIONS``,
``PIECEWISE_LINEAR``. A failing property shrinks to a small network (depth, widths, batch).

Network kinds:

* ``any``: independent widths;
* ``square``: every width equal (``square_input=False`` lets the input width differ);
* ``orthogonal``: square, Haar-orthogonal weights (``W^T W = I``);
* ``invertible``: square, ``W = U diag(s) V^T`` with Haar ``U, V`` and singular values ``s`` in
  ``[1/cond_max^(1/2), cond_max^(1/2)]`` (condition number <= ``cond_max``; never singular).

Convolutional networks (:func:`draw_conv_network`; ``draw_instance(architectures=("mlp", "conv"))``
draws either): a small NCHW input (1-2 channels, 3-7 pixels a side, not necessarily square), 1-3
``Conv2d`` layers (1-3 output channels, square kernel 1-3, stride 1-2, padding 0-1), each
optionally followed by a 2x2 max or average pooling (stride 1 or 2, only where it tiles the map
exactly), then 1-2 ``Linear`` layers. Kernels are ``N(0, 1/fan_in)`` with torch's fan-in
``C_in*kh*kw``. Max pooling is tie-free with probability one: inputs, weights and biases are
continuous, so two entries of a window are equal only where the activation is constant (ReLU's
zeros), and there the derivative behind the tie is 0 on both sides; refimpl follows torch's
first-maximum rule anyway (:class:`refimpl.layers.MaxPool2d`), which ``bp.maxpool_backward_first_argmax``
checks on deliberate ties. Max pooling is a kink (non-differentiable where the argmax changes):
theorems that need smoothness in the parameters or the input (finite differences, order checks)
either draw no max pooling or keep their grid away from an argmax change, as they do for ReLU kinks.
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
           "NetInstance", "draw_network", "draw_conv_network", "draw_batch", "draw_instance", "instances", "networks",
           "network_from_matrices", "host_like", "describe_network", "ARCHITECTURES", "POOLS"]

ALL_ACTIVATIONS = ("linear", "tanh", "sigmoid", "relu", "leaky_relu", "leaky_relu(0.2)", "elu", "softplus")
#: C^3 everywhere: finite differences and Taylor-order arguments apply.
SMOOTH_ACTIVATIONS = ("linear", "tanh", "sigmoid", "softplus")
INVERTIBLE_ACTIVATIONS = ("linear", "tanh", "sigmoid", "leaky_relu", "leaky_relu(0.2)", "elu", "softplus")
PIECEWISE_LINEAR = ("linear", "relu", "leaky_relu", "leaky_relu(0.2)")
KINDS = ("any", "square", "orthogonal", "invertible")
ARCHITECTURES = ("mlp", "conv")
#: Pooling after a conv layer: none, max, average (:func:`draw_conv_network`).
POOLS = (None, "max", "avg")


def describe_network(net) -> str:
    """``sizes=[...]`` for an MLP; ``input=CxHxW layers=[conv2d(1->2,k3,s1,p1)+maxpool2 | linear(..)]``
    for a network with conv layers (the layer types, :func:`refimpl.layers.describe_layers`)."""
    if net.is_dense:
        return f"sizes={list(net.sizes)}"
    from refimpl.layers import describe_layers
    return f"input={'x'.join(map(str, net.input_shape))} layers=[{describe_layers(net.layers)}]"


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
        return (f"{describe_network(self.net)} activations={list(self.net.activations)} "
                f"batch={self.x.shape[0]} loss={self.loss} {self.params or ''}").strip()


def network_from_matrices(Ws: Sequence[np.ndarray], bs: Sequence[np.ndarray], activations, xp, dtype,
                          device=None, layers=None, input_shape=None) -> Network:
    """A :class:`Network` from host matrices (or kernels), moved to backend ``xp`` and ``dtype``;
    ``layers``/``input_shape`` as :class:`refimpl.Network` (None: dense)."""
    ns = resolve_namespace(xp)
    dt = resolve_dtype(ns, dtype)
    return Network(tuple(from_numpy(W, ns, dt, device) for W in Ws),
                   tuple(from_numpy(b, ns, dt, device) for b in bs), tuple(activations),
                   layers=layers, input_shape=input_shape)


def host_like(net, Ws=None, bs=None, activations=None, xp=None, dtype=None) -> Network:
    """``net`` with host arrays ``Ws``/``bs`` (None: its own) and the same layer specs and input shape."""
    from refimpl.backend import to_numpy
    Ws = [to_numpy(W).astype(np.float64) for W in net.weights] if Ws is None else Ws
    bs = [to_numpy(b).astype(np.float64) for b in net.biases] if bs is None else bs
    return network_from_matrices(Ws, bs, net.activations if activations is None else activations,
                                 net.xp if xp is None else xp, net.dtype if dtype is None else dtype,
                                 layers=net.layers, input_shape=net.input_shape)


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


def _pool_options(kind: str, H: int, W: int) -> list:
    """2x2 poolings (stride 2 or 1) that tile an ``H x W`` map exactly."""
    from refimpl.layers import MaxPool2d, AvgPool2d
    cls = MaxPool2d if kind == "max" else AvgPool2d
    out = []
    for st in (2, 1):
        if H >= 2 and W >= 2 and (H - 2) % st == 0 and (W - 2) % st == 0:
            out.append(cls(2, st))
    return out


def _reads_input(n: int, k: int, s: int, p: int) -> bool:
    """Whether some window of a conv (size ``n``, kernel ``k``, stride ``s``, padding ``p``) covers an input pixel."""
    n_out = (n + 2 * p - k) // s + 1
    return any(0 <= s * y + i - p < n for y in range(n_out) for i in range(k))


def draw_conv_network(d: Drawer, xp="numpy", dtype="float64", *, conv_layers=(1, 3), channels=(1, 3),
                      in_channels=(1, 2), image=(3, 7), kernel=(1, 3), stride=(1, 2), padding=(0, 1),
                      pools: Sequence = POOLS, linear_layers=(1, 2), width=(1, 8),
                      activations: Sequence[str] = ALL_ACTIVATIONS, output_activations: Optional[Sequence[str]] = None,
                      output_width=None, bias: bool = True, device=None) -> Network:
    """A random convolutional network (see the module docstring): ``conv_layers`` Conv2d layers
    (``channels`` outputs, ``kernel`` / ``stride`` / ``padding`` ranges; a kernel never exceeds the
    padded input), each followed by a pooling drawn from ``pools`` (None, "max", "avg"; dropped
    when no 2x2 pooling tiles the map), then ``linear_layers`` Linear layers (hidden widths
    ``width``, output ``output_width``). Weights ``N(0, 1/fan_in)``, biases ``N(0, 0.01)``."""
    from refimpl.layers import Conv2d, Linear

    C, H, W = d.integer(*in_channels), d.integer(*image), d.integer(*image)
    input_shape = (C, H, W)
    n_conv = d.integer(*conv_layers)
    specs, shapes = [], []
    for _ in range(n_conv):
        co = d.integer(*channels)
        k = d.integer(kernel[0], min(kernel[1], H + 2 * padding[1], W + 2 * padding[1]))
        p_lo = padding[0] if k <= min(H, W) + 2 * padding[0] else padding[1]
        p = d.integer(p_lo, padding[1])
        s = d.integer(*stride)
        if p > 0 and k <= min(H, W) and not (_reads_input(H, k, s, p) and _reads_input(W, k, s, p)):
            # e.g. k1 s2 p1 on a 1-pixel side: every window sees padding only, the layer's output is
            # its bias (a constant of x and W): such a layer makes every check below it vacuous.
            p = 0
        Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
        kind = d.choice(pools)
        opts = _pool_options(kind, Ho, Wo) if kind is not None else []
        pool = d.choice(opts) if opts else None
        specs.append(Conv2d(stride=s, padding=p, pool=pool))
        shapes.append((co, C, k, k))
        if pool is not None:
            Ho, Wo = pool.output_hw(Ho, Wo)
        C, H, W = co, Ho, Wo
    n_lin = d.integer(*linear_layers)
    n_in = C * H * W
    lo, hi = width
    for j in range(n_lin):
        last = j == n_lin - 1
        if last and output_width is not None:
            n_out = output_width if isinstance(output_width, int) else d.integer(*output_width)
        else:
            n_out = d.integer(lo, hi)
        specs.append(Linear())
        shapes.append((n_out, n_in))
        n_in = n_out
    L = len(specs)
    acts = [d.choice(activations) for _ in range(L - 1)]
    acts.append(d.choice(output_activations if output_activations is not None else activations))
    gen = host_rng(d.seed())
    Ws, bs = [], []
    for shp in shapes:
        fan_in = int(np.prod(shp[1:]))
        Ws.append(gen.standard_normal(shp) / np.sqrt(fan_in))
        bs.append(0.1 * gen.standard_normal(shp[0]) if bias else np.zeros(shp[0]))
    return network_from_matrices(Ws, bs, acts, xp, dtype, device, layers=tuple(specs), input_shape=input_shape)


def draw_batch(d: Drawer, net: Network, loss: str, *, batch=(1, 16), labels: Optional[bool] = None,
               x_scale: float = 1.0, device=None):
    """``(x, y)`` for ``net``: ``x ~ N(0, x_scale^2)``; ``y ~ N(0, 1)`` (mse) or classes (ce:
    integer labels or one-hot rows, drawn unless ``labels`` fixes it)."""
    B = d.integer(*batch)
    seed = d.seed()
    gen = host_rng(seed)
    xp = net.xp
    dt = net.dtype
    x = from_numpy(x_scale * gen.standard_normal((B,) + tuple(net.input_shape)), xp, dt, device)
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
                  architectures=("mlp",), conv: Optional[dict] = None, **network_kwargs) -> NetInstance:
    """A network (:func:`draw_network` arguments), a loss and a batch.

    ``architectures``: drawn from ``("mlp", "conv")``; ``"conv"`` draws :func:`draw_conv_network`
    with the ``activations`` / ``output_activations`` of ``network_kwargs`` and the extra keyword
    arguments ``conv`` (the MLP-only arguments, depth, width, kind..., do not apply to it).

    Under ``ce`` the output has at least 2 units: with one class the softmax is identically 1 and
    the loss and all its gradients vanish for every parameter (a degenerate instance on which no
    comparison can fail).
    """
    arch = d.choice(architectures) if len(architectures) > 1 else architectures[0]
    if arch not in ARCHITECTURES:
        raise ValueError(f"architectures: expected entries of {ARCHITECTURES}, got {arch!r}")
    if arch == "conv":
        loss = d.variant("loss", losses)
        ckw = dict(conv or {})
        for k in ("activations", "output_activations"):
            if k in network_kwargs and k not in ckw:
                ckw[k] = network_kwargs[k]
        if loss == "ce" and ckw.get("output_width") is None:
            ckw["output_width"] = (2, 6)
        net = draw_conv_network(d, xp, dtype, **ckw)
        x, y = draw_batch(d, net, loss, batch=(batch[0], min(batch[1], 6)))
        return NetInstance(net, x, y, loss)
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


def networks(xp="numpy", dtype="float64", **kwargs):
    """Hypothesis strategy of :class:`refimpl.Network` (:func:`draw_network`'s keyword arguments:
    ``depth``, ``width``, ``activations``, ``output_activations``, ``kind``, ``bias``, ...)."""
    from hypothesis import strategies as st
    from .theorem import HypothesisDrawer

    @st.composite
    def _net(draw):
        data = draw(st.data())
        return draw_network(HypothesisDrawer(data), xp, dtype, **kwargs)

    return _net()


def instances(xp="numpy", dtype="float64", **kwargs):
    """Hypothesis strategy of :class:`NetInstance` (``draw_instance`` under ``st.data()``): ``.net``,
    ``.x``, ``.y``, ``.loss``; keyword arguments ``losses``, ``batch`` and those of :func:`draw_network`."""
    from hypothesis import strategies as st
    from .theorem import HypothesisDrawer

    @st.composite
    def _inst(draw):
        data = draw(st.data())
        return draw_instance(HypothesisDrawer(data), xp, dtype, **kwargs)

    return _inst()
