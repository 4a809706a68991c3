"""The feed-forward network: weights, biases, activations, and its forward pass.

Shapes follow ``torch.nn.Linear`` (DESIGN.md): a batch is ``x: (B, n_0)``; layer ``l = 1..L`` has
``W_l: (n_l, n_{l-1})`` and ``b_l: (n_l,)``, and

    a_l = h_{l-1} @ W_l.T + b_l,        h_l = f_l(a_l),        h_0 = x.

Per-layer tuples are indexed from 0 (entry ``i`` belongs to layer ``i+1``); the trace is indexed
by layer (index 0 is the input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from . import activations as _act
from .backend import (namespace, resolve_namespace, resolve_dtype, rng as _rng, from_numpy,
                      check_finite, to_numpy, backend_name)

__all__ = ["Network", "Trace", "INITS", "haar_orthogonal"]

INITS = ("xavier", "he", "normal", "orthogonal")


@dataclass(frozen=True)
class Trace:
    """Forward pass record: ``a[l]`` pre-activations, ``h[l]`` activations, ``l = 0..L`` (0: input)."""

    a: tuple
    h: tuple

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


def _draw_weight(gen, init: str, n_out: int, n_in: int, gain: float) -> np.ndarray:
    if init == "xavier":  # Glorot uniform, as torch.nn.init.xavier_uniform_
        bound = gain * math.sqrt(6.0 / (n_in + n_out))
        return gen.uniform(-bound, bound, size=(n_out, n_in))
    if init == "he":  # Kaiming normal, fan_in, as torch.nn.init.kaiming_normal_ (relu gain sqrt 2)
        return gen.standard_normal((n_out, n_in)) * (gain * math.sqrt(2.0 / n_in))
    if init == "normal":  # LeCun normal: variance 1 / fan_in
        return gen.standard_normal((n_out, n_in)) * (gain / math.sqrt(n_in))
    if init == "orthogonal":
        return gain * haar_orthogonal(gen, n_out, n_in)
    raise ValueError(f"init: unknown initialisation {init!r}; expected one of {INITS}")


@dataclass(frozen=True)
class Network:
    """A fully connected network ``(weights, biases, activations)``, validated on construction.

    Arguments:
        weights: ``L`` arrays, ``weights[i]`` of shape ``(n_{i+1}, n_i)``.
        biases: ``L`` arrays, ``biases[i]`` of shape ``(n_{i+1},)``.
        activations: ``L`` activation names (see :mod:`refimpl.activations`).

    All arrays must share one namespace and one floating dtype and be finite.
    """

    weights: tuple
    biases: tuple
    activations: tuple = field(default=None)

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
        for i, (W, b) in enumerate(zip(weights, biases)):
            if W.ndim != 2:
                raise ValueError(f"weights[{i}]: expected a 2-d array (n_out, n_in), got shape {tuple(W.shape)}")
            if i > 0 and W.shape[1] != weights[i - 1].shape[0]:
                raise ValueError(f"weights[{i}]: expected {weights[i - 1].shape[0]} columns to match "
                                 f"weights[{i - 1}] of shape {tuple(weights[i - 1].shape)}, got shape {tuple(W.shape)}")
            if b.ndim != 1 or b.shape[0] != W.shape[0]:
                raise ValueError(f"biases[{i}]: expected shape ({W.shape[0]},) to match weights[{i}], "
                                 f"got {tuple(b.shape)}")
            for name, arr in ((f"weights[{i}]", W), (f"biases[{i}]", b)):
                if arr.dtype != dtype:
                    raise TypeError(f"{name}: expected dtype {dtype} (as weights[0]), got {arr.dtype}")
                check_finite(xp, arr, name)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "biases", biases)
        object.__setattr__(self, "activations", acts)

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def init(cls, sizes: Sequence[int], activation="tanh", output_activation="linear", init="xavier",
             seed=0, dtype="float64", xp=None, gain: float = 1.0, bias_scale: float = 0.0,
             device=None) -> "Network":
        """Random network with layer widths ``sizes = [n_0, n_1, ..., n_L]``.

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
        """
        sizes = list(sizes)
        if len(sizes) < 2 or any((not isinstance(n, (int, np.integer))) or n < 1 for n in sizes):
            raise ValueError(f"sizes: expected at least two positive integer widths [n_0, ..., n_L], got {sizes}")
        L = len(sizes) - 1
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
        if not (math.isfinite(gain) and math.isfinite(bias_scale) and bias_scale >= 0):
            raise ValueError(f"gain, bias_scale: expected finite values, bias_scale >= 0, got {gain}, {bias_scale}")
        ns = resolve_namespace(xp)
        dt = resolve_dtype(ns, dtype)
        gen = _rng(seed)
        Ws, bs = [], []
        for i in range(L):
            W = _draw_weight(gen, inits[i], sizes[i + 1], sizes[i], gain)
            b = gen.standard_normal(sizes[i + 1]) * bias_scale if bias_scale > 0 else np.zeros(sizes[i + 1])
            Ws.append(from_numpy(W, ns, dt, device))
            bs.append(from_numpy(b, ns, dt, device))
        return cls(tuple(Ws), tuple(bs), tuple(acts))

    # --- properties ---------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Number of layers ``L``."""
        return len(self.weights)

    @property
    def sizes(self) -> tuple:
        """Layer widths ``(n_0, ..., n_L)``."""
        return (self.weights[0].shape[1],) + tuple(W.shape[0] for W in self.weights)

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

    # --- forward ------------------------------------------------------------------------------

    def check_input(self, x, name: str = "x"):
        """Validate a batch ``x`` of shape ``(B, n_0)`` against the network; returns the namespace."""
        xp = namespace(self.weights[0], x, names=("network weights", name))
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"{name}: expected shape (B, {self.sizes[0]}) (a batch of network inputs), "
                             f"got {tuple(x.shape)}")
        if x.dtype != self.dtype:
            raise TypeError(f"{name}: expected dtype {self.dtype} (as the network), got {x.dtype}")
        check_finite(xp, x, name)
        return xp

    def forward(self, x) -> Trace:
        """Forward pass: ``a_l = h_{l-1} W_l^T + b_l``, ``h_l = f_l(a_l)``; returns the :class:`Trace`."""
        self.check_input(x)
        a, h = [x], [x]
        for l in range(1, self.depth + 1):
            W, b = self.weights[l - 1], self.biases[l - 1]
            a_l = h[-1] @ W.T + b
            a.append(a_l)
            h.append(self.activation(l).f(a_l))
        return Trace(tuple(a), tuple(h))

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
        return Network(Ws, bs, self.activations)

    def replace(self, **changes) -> "Network":
        """``dataclasses.replace`` (re-validates)."""
        return replace(self, **changes)

    def describe(self) -> str:
        return (f"Network(sizes={list(self.sizes)}, activations={list(self.activations)}, "
                f"dtype={self.dtype}, backend={backend_name(self.xp)})")
