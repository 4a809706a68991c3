"""The feed-forward network: weights, biases, activations, layer types, and its forward pass.

A network is a sequence of layers (:mod:`refimpl.layers`): dense (``torch.nn.Linear``) or
convolutional (``torch.nn.Conv2d``, optionally followed by max/average pooling), a conv output
flattened in torch's order where a dense layer follows. For layer ``l = 1..L``:

    a_l = apply_l(W_l, h_{l-1}) + b_l,      z_l = f_l(a_l),      h_l = P_l(z_l),      h_0 = x

with ``apply_l(W, h) = h @ W.T`` for a dense layer and ``P_l`` the pooling (identity without).
For a dense network (the default) this is ``a_l = h_{l-1} @ W_l.T + b_l``, ``h_l = f_l(a_l)``:
a batch is ``x: (B, n_0)``, ``W_l: (n_l, n_{l-1})``, ``b_l: (n_l,)`` (DESIGN.md). A conv network
takes ``x: (B, C, H, W)`` (``input_shape = (C, H, W)``); conv weights are ``(out, in, kh, kw)``.

Per-layer tuples are indexed from 0 (entry ``i`` belongs to layer ``i+1``); the trace is indexed
by layer (index 0 is the input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from . import activations as _act
from . import layers as _layers
from .backend import (namespace, resolve_namespace, resolve_dtype, rng as _rng, from_numpy,
                      check_finite, to_numpy, backend_name)

__all__ = ["Network", "Trace", "INITS", "haar_orthogonal"]

INITS = ("xavier", "he", "normal", "orthogonal")


@dataclass(frozen=True)
class Trace:
    """Forward pass record, tuples indexed by layer ``l = 0..L`` (0: the input ``x``):
    ``a[l]`` pre-activations, ``h[l]`` the layer outputs (after pooling, if any), ``z[l] = f_l(a_l)``
    before pooling (``z[l]`` is ``h[l]`` itself for a layer without pooling; ``None`` means the
    same for every layer)."""

    a: tuple
    h: tuple
    z: tuple = None

    def __post_init__(self):
        if self.z is None:
            object.__setattr__(self, "z", self.h)

    @property
    def output(self):
        return self.h[-1]


def haar_orthogonal(gen: np.random.Generator, n_out: int, n_in: int) -> np.ndarray:
    """A Haar-distributed (semi-)orthogonal ``(n_out, n_in)`` matrix, drawn on the host.

    QR of a Gaussian matrix with the signs of R's diagonal moved into Q (Mezzadri 2007), so the
    distribution is exactly Haar. Rows are orthonormal when ``n_out <= n_in``, columns otherwise.
    """
    big, small = max(n_out, n_in), min(n_out, n_in)
    g = gen.standard_normal((big, small))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))[None, :]
    return q.T if n_out <= n_in else q


def fans(shape) -> tuple:
    """``(fan_in, fan_out)`` of a weight shape as ``torch.nn.init._calculate_fan_in_and_fan_out``:
    ``(in * kh * kw, out * kh * kw)`` for a conv kernel ``(out, in, kh, kw)``, ``(n_in, n_out)`` for a matrix."""
    receptive = int(math.prod(shape[2:])) if len(shape) > 2 else 1
    return int(shape[1]) * receptive, int(shape[0]) * receptive


def _draw_weight(gen, init: str, shape: tuple, gain: float) -> np.ndarray:
    """One host weight of ``shape`` (a matrix ``(n_out, n_in)`` or a kernel ``(out, in, kh, kw)``), fans as torch's."""
    fan_in, fan_out = fans(shape)
    if init == "xavier":  # Glorot uniform, as torch.nn.init.xavier_uniform_
        bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
        return gen.uniform(-bound, bound, size=shape)
    if init == "he":  # Kaiming normal, fan_in, as torch.nn.init.kaiming_normal_ (relu gain sqrt 2)
        return gen.standard_normal(shape) * (gain * math.sqrt(2.0 / fan_in))
    if init == "normal":  # LeCun normal: variance 1 / fan_in
        return gen.standard_normal(shape) * (gain / math.sqrt(fan_in))
    if init == "orthogonal":  # as torch.nn.init.orthogonal_: the (out, in*kh*kw) reshape is (semi-)orthogonal
        n_out = int(shape[0])
        return gain * haar_orthogonal(gen, n_out, fan_in).reshape(shape)
    raise ValueError(f"init: unknown initialisation {init!r}; expected one of {INITS}")


@dataclass(frozen=True)
class Network:
    """A feed-forward network ``(weights, biases, activations, layers)``, validated on construction.

    Arguments:
        weights: ``L`` arrays; ``weights[i]`` of shape ``(n_{i+1}, n_i)`` for a dense layer,
            ``(C_out, C_in, kh, kw)`` for a conv layer (torch's layouts).
        biases: ``L`` arrays, ``biases[i]`` of shape ``(n_{i+1},)`` / ``(C_out,)``.
        activations: ``L`` activation names (see :mod:`refimpl.activations`).
        layers: ``L`` layer specs (:class:`refimpl.layers.Linear`, :class:`refimpl.layers.Conv2d`
            with optional pooling), or ``None``: every layer dense (today's MLP). Kept *bound*
            (each knows its input shape) in ``net.layers``.
        input_shape: per-sample shape of ``x``: ``(n_0,)`` or ``(C, H, W)``; ``None``: ``(n_0,)``
            for a dense first layer (a conv first layer needs it).

    All arrays must share one namespace and one floating dtype and be finite. The last layer must
    be dense (its output is what the losses read).
    """

    weights: tuple
    biases: tuple
    activations: tuple = field(default=None)
    layers: tuple = field(default=None)
    input_shape: tuple = field(default=None)

    def __post_init__(self):
        weights = tuple(self.weights) if self.weights is not None else ()
        biases = tuple(self.biases) if self.biases is not None else ()
        L = len(weights)
        if L == 0:
            raise ValueError("weights: expected at least one layer, got none")
        acts = self.activations
        if acts is None:
            acts = ("tanh",) * (L - 1) + ("linear",)
        if isinstance(acts, str):
            raise TypeError("activations: expected a sequence of names, one per layer, got a single string")
        acts = tuple(_act.canonical_name(a) for a in acts)
        if len(biases) != L:
            raise ValueError(f"biases: expected {L} arrays (one per layer, like weights), got {len(biases)}")
        if len(acts) != L:
            raise ValueError(f"activations: expected {L} names (one per layer), got {len(acts)}")
        names = tuple(f"weights[{i}]" for i in range(L)) + tuple(f"biases[{i}]" for i in range(L))
        xp = namespace(*weights, *biases, names=names)
        dtype = weights[0].dtype
        if dtype not in (xp.float32, xp.float64):
            raise TypeError(f"weights[0]: expected dtype float32 or float64, got {dtype}")
        specs = self.layers
        if specs is None:
            specs = tuple(_layers.Linear() for _ in range(L))
        if isinstance(specs, (str, bytes)) or not hasattr(specs, "__len__"):
            raise TypeError(f"layers: expected a sequence of {L} layer specs (refimpl.layers.Linear / Conv2d), "
                            f"got {type(specs).__name__}")
        specs = tuple(specs)
        if len(specs) != L:
            raise ValueError(f"layers: expected {L} layer specs (one per weight), got {len(specs)}")
        for i, sp in enumerate(specs):
            if not isinstance(sp, _layers.LAYER_TYPES):
                raise TypeError(f"layers[{i}]: expected a refimpl.layers.Linear or Conv2d, got {type(sp).__name__}")
        if not isinstance(specs[-1], _layers.Linear):
            raise ValueError(f"layers[{L - 1}]: the output layer must be Linear (the losses read a (B, n_L) output), "
                             f"got {type(specs[-1]).__name__}")
        in_shape = self.input_shape
        if in_shape is None:
            if not isinstance(specs[0], _layers.Linear) or weights[0].ndim != 2:
                raise ValueError("input_shape: a network whose first layer is a convolution needs input_shape=(C, H, W)")
            in_shape = (int(weights[0].shape[1]),)
        if isinstance(in_shape, (int, np.integer)):
            in_shape = (in_shape,)
        in_shape = tuple(_layers.check_int("input_shape", n, 1) for n in in_shape)
        if len(in_shape) not in (1, 3):
            raise ValueError(f"input_shape: expected (n_0,) or (C, H, W), got {in_shape}")
        bound, shape = [], in_shape
        for i, (sp, W, b) in enumerate(zip(specs, weights, biases)):
            lay = sp.bind(shape, W, where=f"weights[{i}]")
            n_out = int(W.shape[0])
            if b.ndim != 1 or b.shape[0] != n_out:
                raise ValueError(f"biases[{i}]: expected shape ({n_out},) to match weights[{i}], got {tuple(b.shape)}")
            for name, arr in ((f"weights[{i}]", W), (f"biases[{i}]", b)):
                if arr.dtype != dtype:
                    raise TypeError(f"{name}: expected dtype {dtype} (as weights[0]), got {arr.dtype}")
                check_finite(xp, arr, name)
            bound.append(lay)
            shape = lay.h_shape
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "biases", biases)
        object.__setattr__(self, "activations", acts)
        object.__setattr__(self, "layers", tuple(bound))
        object.__setattr__(self, "input_shape", in_shape)

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def init(cls, sizes: Sequence[int], activation="tanh", output_activation="linear", init="xavier",
             seed=0, dtype="float64", xp=None, gain: float = 1.0, bias_scale: float = 0.0,
             device=None) -> "Network":
        """Random dense network with layer widths ``sizes = [n_0, n_1, ..., n_L]``.

        Arguments:
            activation: hidden activation name (or a list of ``L - 1`` names).
            output_activation: activation of layer ``L``.
            init: ``xavier`` (Glorot uniform), ``he`` (Kaiming normal), ``normal`` (variance
                1/fan_in) or ``orthogonal`` (Haar; semi-orthogonal for non-square layers).
                A list of ``L`` names sets each layer.
            seed: integer seed; weights are drawn on the host so every backend gets the same numbers.
            dtype: ``"float64"`` (verification) or ``"float32"``.
            xp: ``None`` (NumPy), a backend name or an array-API namespace.
            gain: multiplies every weight matrix.
            bias_scale: biases are ``N(0, bias_scale^2)`` (0: zero biases).

        Convolutional networks: :meth:`build`.
        """
        sizes = list(sizes)
        if len(sizes) < 2 or any((not isinstance(n, (int, np.integer))) or isinstance(n, bool) or n < 1
                                 for n in sizes):
            raise ValueError(f"sizes: expected at least two positive integer widths [n_0, ..., n_L], got {sizes}")
        specs = [_layers.Linear(out_features=int(n)) for n in sizes[1:]]
        return cls.build((int(sizes[0]),), specs, activation=activation, output_activation=output_activation,
                         init=init, seed=seed, dtype=dtype, xp=xp, gain=gain, bias_scale=bias_scale, device=device)

    @classmethod
    def build(cls, input_shape, layers, activation="tanh", output_activation="linear", init="xavier",
              seed=0, dtype="float64", xp=None, gain: float = 1.0, bias_scale: float = 0.0,
              device=None) -> "Network":
        """Random network of any layer types, e.g. a small convnet for 8x8 digits::

            Network.build((1, 8, 8), "c8k3p1+mp2 c16k3p1+mp2 l10", activation="relu")
            Network.build((1, 8, 8), [Conv2d(out_channels=8, kernel_size=3, padding=1, pool=MaxPool2d(2)),
                                      Linear(out_features=10)])

        ``layers``: specs with ``out_channels``/``kernel_size`` (conv) or ``out_features`` (dense)
        set, or a compact string (:func:`refimpl.layers.parse_architecture`). Other arguments as
        :meth:`init`; fans for the inits are torch's (``in*kh*kw``, ``out*kh*kw`` for kernels). The
        draws are those of :meth:`init` for a dense network (same seed, same numbers).
        """
        if isinstance(layers, str):
            layers = _layers.parse_architecture(layers)
        layers = list(layers)
        L = len(layers)
        if L < 1:
            raise ValueError("layers: expected at least one layer spec")
        if isinstance(input_shape, (int, np.integer)):
            input_shape = (input_shape,)
        input_shape = tuple(_layers.check_int("input_shape", n, 1) for n in input_shape)
        if isinstance(activation, str):
            acts = [activation] * (L - 1)
        else:
            acts = list(activation)
            if len(acts) != L - 1:
                raise ValueError(f"activation: expected one name or {L - 1} names (hidden layers), got {len(acts)}")
        acts = acts + [output_activation]
        inits = [init] * L if isinstance(init, str) else list(init)
        if len(inits) != L:
            raise ValueError(f"init: expected one name or {L} names (one per layer), got {len(inits)}")
        for nm in inits:
            if nm not in INITS:
                raise ValueError(f"init: unknown initialisation {nm!r}; expected one of {INITS}")
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain) or gain <= 0:
            raise ValueError(f"gain: expected a finite number > 0, got {gain!r}")
        if isinstance(bias_scale, bool) or not isinstance(bias_scale, (int, float)) or not math.isfinite(bias_scale) \
                or bias_scale < 0:
            raise ValueError(f"bias_scale: expected a finite number >= 0, got {bias_scale!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        ns = resolve_namespace(xp)
        dt = resolve_dtype(ns, dtype)
        gen = _rng(seed)
        Ws, bs, shape = [], [], input_shape
        for i, sp in enumerate(layers):
            if isinstance(sp, _layers.Conv2d):
                if sp.out_channels is None or sp.kernel_size is None:
                    raise ValueError(f"layers[{i}]: Network.build needs out_channels and kernel_size of a Conv2d spec")
                if len(shape) != 3:
                    raise ValueError(f"layers[{i}]: a Conv2d needs a (C, H, W) input, got shape {shape} "
                                     "(a convolution cannot follow a dense layer)")
                wshape = (sp.out_channels, shape[0]) + tuple(sp.kernel_size)
            elif isinstance(sp, _layers.Linear):
                if sp.out_features is None:
                    raise ValueError(f"layers[{i}]: Network.build needs out_features of a Linear spec")
                wshape = (sp.out_features, int(math.prod(shape)))
            else:
                raise TypeError(f"layers[{i}]: expected a refimpl.layers.Linear or Conv2d, got {type(sp).__name__}")
            W = _draw_weight(gen, inits[i], wshape, gain)
            n_out = wshape[0]
            b = gen.standard_normal(n_out) * bias_scale if bias_scale > 0 else np.zeros(n_out)
            Wt = from_numpy(W, ns, dt, device)
            sp_bound = sp.bind(shape, Wt, where=f"layers[{i}]")
            shape = sp_bound.h_shape
            Ws.append(Wt)
            bs.append(from_numpy(b, ns, dt, device))
        return cls(tuple(Ws), tuple(bs), tuple(acts), layers=tuple(layers), input_shape=input_shape)

    @classmethod
    def from_torch(cls, module, input_shape, dtype=None, xp=None, device=None) -> "Network":
        """The refimpl network of a ``torch.nn.Sequential`` with the same weights.

        Accepted modules: ``Conv2d`` (zero padding, dilation 1, groups 1), ``Linear``, the
        activations ``Tanh``, ``Sigmoid``, ``ReLU``, ``LeakyReLU``, ``ELU``, ``Softplus`` (beta 1;
        refimpl's softplus is the exact ``log(1 + e^a)``, torch's switches to the identity above
        ``threshold``), ``Identity``, ``MaxPool2d`` / ``AvgPool2d`` (no padding, after a conv layer
        and its activation) and ``Flatten`` (between conv and dense layers, or first). A weighted
        module with no activation after it gets the identity (``"linear"``). ``weights[i]``,
        ``biases[i]`` are the i-th weighted module's ``weight``/``bias`` (a missing bias becomes
        zeros), copied; ``dtype=None`` keeps the module's dtype. Anything else raises naming the
        module's index in the Sequential.
        """
        from .torch_bridge import network_from_torch
        return network_from_torch(cls, module, input_shape, dtype=dtype, xp=xp, device=device)

    # --- properties ---------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Number of layers ``L``."""
        return len(self.weights)

    @property
    def sizes(self) -> tuple:
        """Layer widths ``(n_0, ..., n_L)``: the number of units of ``h_l`` per sample (``C*H*W``
        for an image-shaped layer, after its pooling)."""
        return (int(math.prod(self.input_shape)),) + tuple(int(math.prod(l.h_shape)) for l in self.layers)

    @property
    def shapes(self) -> tuple:
        """Per-sample shapes of ``h_0, ..., h_L`` (``(n,)`` or ``(C, H, W)``)."""
        return (self.input_shape,) + tuple(tuple(l.h_shape) for l in self.layers)

    @property
    def is_dense(self) -> bool:
        """True when every layer is :class:`~refimpl.layers.Linear` and the input is a vector (an MLP)."""
        return len(self.input_shape) == 1 and all(isinstance(l, _layers.Linear) for l in self.layers)

    def require_dense(self, who: str) -> None:
        """ValueError unless :attr:`is_dense`: for rules that their papers define on dense layers only."""
        if not self.is_dense:
            raise ValueError(f"net: {who} is defined for dense (fully connected) networks only; got "
                             f"{_layers.describe_layers(self.layers)} on input shape {self.input_shape}")

    @property
    def xp(self):
        return namespace(*self.weights)

    @property
    def dtype(self):
        return self.weights[0].dtype

    def activation(self, layer: int) -> _act.Activation:
        """The :class:`~refimpl.activations.Activation` of ``layer`` (1-based, as in the trace)."""
        if not 1 <= layer <= self.depth:
            raise ValueError(f"layer: expected 1..{self.depth}, got {layer}")
        return _act.get(self.activations[layer - 1])

    def layer(self, layer: int):
        """The bound layer spec of ``layer`` (1-based, as in the trace): ``net.layers[layer - 1]``."""
        if not 1 <= layer <= self.depth:
            raise ValueError(f"layer: expected 1..{self.depth}, got {layer}")
        return self.layers[layer - 1]

    # --- forward ------------------------------------------------------------------------------

    def check_input(self, x, name: str = "x"):
        """Validate a batch ``x`` of shape ``(B, *input_shape)`` against the network; returns the namespace."""
        xp = namespace(self.weights[0], x, names=("network weights", name))
        if x.ndim != 1 + len(self.input_shape) or tuple(x.shape[1:]) != tuple(self.input_shape):
            what = "a batch of network inputs" if len(self.input_shape) == 1 else "a batch of images, NCHW"
            raise ValueError(f"{name}: expected shape (B, {', '.join(map(str, self.input_shape))}) ({what}), "
                             f"got {tuple(x.shape)}")
        if x.dtype != self.dtype:
            raise TypeError(f"{name}: expected dtype {self.dtype} (as the network), got {x.dtype}")
        if x.shape[0] == 0:
            raise ValueError(f"{name}: expected at least one sample, got an empty batch of shape {tuple(x.shape)} "
                             "(batch means over 0 samples are NaN)")
        check_finite(xp, x, name)
        return xp

    def pre_activation(self, layer: int, h, weight=None, bias=None):
        """``a_l = apply_l(W_l, h_{l-1}) + b_l`` (dense: ``h @ W.T + b``) with optional replacements of ``W_l``, ``b_l``."""
        lay = self.layer(layer)
        xp = self.xp
        W = self.weights[layer - 1] if weight is None else weight
        b = self.biases[layer - 1] if bias is None else bias
        return lay.add_bias(xp, lay.apply(xp, W, h), b, inplace=True)  # the product is ours: no temporary

    def forward(self, x) -> Trace:
        """Forward pass: ``a_l = apply_l(W_l, h_{l-1}) + b_l``, ``z_l = f_l(a_l)``, ``h_l = P_l(z_l)``;
        returns the :class:`Trace`."""
        xp = self.check_input(x)
        a, h, z = [x], [x], [x]
        for l in range(1, self.depth + 1):
            a_l = self.pre_activation(l, h[-1])
            z_l = self.activation(l).f(a_l)
            a.append(a_l)
            z.append(z_l)
            h.append(self.layer(l).post(xp, z_l))
        return Trace(tuple(a), tuple(h), tuple(z))

    def __call__(self, x):
        return self.forward(x).h[-1]

    # --- conversions --------------------------------------------------------------------------

    def to(self, xp=None, dtype=None, device=None) -> "Network":
        """The same network on another backend and/or dtype (a host round trip; exact for float64)."""
        ns = resolve_namespace(xp) if xp is not None else self.xp
        dt = resolve_dtype(ns, dtype) if dtype is not None else None
        if dt is None:
            dt = "float64" if self.dtype == self.xp.float64 else "float32"
            dt = resolve_dtype(ns, dt)
        Ws = tuple(from_numpy(to_numpy(W), ns, dt, device) for W in self.weights)
        bs = tuple(from_numpy(to_numpy(b), ns, dt, device) for b in self.biases)
        return Network(Ws, bs, self.activations, layers=self.layers, input_shape=self.input_shape)

    def replace(self, **changes) -> "Network":
        """``dataclasses.replace`` (re-validates)."""
        return replace(self, **changes)

    def describe(self) -> str:
        if self.is_dense:
            return (f"Network(sizes={list(self.sizes)}, activations={list(self.activations)}, "
                    f"dtype={self.dtype}, backend={backend_name(self.xp)})")
        return (f"Network(input={'x'.join(map(str, self.input_shape))}, layers=[{_layers.describe_layers(self.layers)}], "
                f"activations={list(self.activations)}, dtype={self.dtype}, backend={backend_name(self.xp)})")
