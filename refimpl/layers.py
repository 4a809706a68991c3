r"""Layer types: the operations every rule uses, written once per kind of linear map.

A network is a sequence of layers (DESIGN.md, "Layers"). Layer ``l`` has a weight ``W_l``, a bias
``b_l``, an activation ``f_l`` and, for convolutions, an optional parameter-free pooling ``P_l``
that acts after the activation:

    a_l = apply(W_l, h_{l-1}) + b_l,      z_l = f_l(a_l),      h_l = P_l(z_l)     (P = identity without pooling)

Every credit-assignment rule in :mod:`refimpl.rules` uses exactly these operations of a layer:

==========================  ====================================  ==========================================
operation                   dense (:class:`Linear`)               convolution (:class:`Conv2d`)
==========================  ====================================  ==========================================
``apply(W, h)``             ``h @ W.T``                           ``conv2d(h, W)`` (torch's cross-correlation)
``transpose(M, delta)``     ``delta @ M``                         ``conv_transpose2d(delta, M)`` (the adjoint)
``weight_grad(delta, h)``   ``delta.T @ h``                       sum over batch and positions of delta x patches
``bias_grad(delta)``        ``sum_b delta``                       ``sum_{b,y,x} delta``
``unpool(g, z)``            ``g``                                 ``P^T g`` (max: through the argmax; avg: spread)
==========================  ====================================  ==========================================

``transpose(M, delta)`` is the input-gradient of the linear map with any array ``M`` of ``W``'s
shape in ``W``'s place: with ``M = W`` it is the exact adjoint (``<apply(W, h), d> = <h,
transpose(W, d)>``, BP), with FA's ``B`` it is BioTorch's conv FA, with DTP's ``Q`` it is a
transposed-convolution feedback in ``ConvTranspose2d``'s weight layout (which is ``W``'s own,
``(out, in, kh, kw)``). ``weight_grad(delta, h)`` is autograd's ``W.grad`` when ``delta = dL/da``.

Shapes and layouts are torch's: NCHW activations, conv weights ``(out, in, kh, kw)``, a dense layer
after a convolution flattens its input in (C, H, W) order exactly as ``torch.nn.Flatten`` (a
row-major reshape), so ``weights[i]`` and ``upd.dW[i]`` compare one-to-one with a torch module's
``weight`` and ``weight.grad``.

Convolution is written with array-API operations only (ENGINEERING.md §1.7): the input is padded
once, the ``kh*kw`` strided windows are stacked into an im2col matrix ``(B*H'*W', C*kh*kw)`` and one
matmul does the rest; the transpose scatters each window's contribution back with strided slice
updates into a fresh array (never the caller's) and crops the padding. No ``as_strided``, no
scipy, no torch: NumPy, CuPy, torch tensors and ``array_api_strict`` run the same lines.

Layer specs are frozen dataclasses. A spec given by a user carries only its hyper-structure
(``Conv2d(stride=2, padding=1, pool=MaxPool2d(2))``); :class:`refimpl.Network` binds it to the
shape it receives (``in_shape``, the per-sample shape of ``h_{l-1}``) and to its weight, and keeps
the bound spec in ``net.layers``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

__all__ = ["Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "LAYER_TYPES", "POOL_TYPES", "describe_layers",
           "conv_output_size", "conv_toeplitz", "check_int"]


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int ``>= minimum``, else ValueError/TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _pair(name: str, value, minimum: int) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name}: expected an int or a pair (h, w), got {value!r}")
        return (check_int(name, value[0], minimum), check_int(name, value[1], minimum))
    v = check_int(name, value, minimum)
    return (v, v)


def conv_output_size(n: int, k: int, s: int, p: int) -> int:
    """``floor((n + 2p - k) / s) + 1`` (torch's ``Conv2d`` output size, dilation 1)."""
    return (n + 2 * p - k) // s + 1


# --- pooling ------------------------------------------------------------------------------------

def _windows(xp, z, kh, kw, sh, sw, Ho, Wo):
    """The ``kh*kw`` strided windows of ``z`` (B, C, H, W), each ``(B, C, Ho, Wo)``, row-major."""
    return [z[:, :, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]


def _scatter(xp, parts, shape, kh, kw, sh, sw, Ho, Wo, dtype, device):
    """The adjoint of :func:`_windows`: a fresh zero array of ``shape`` with each window's part added back."""
    out = xp.zeros(shape, dtype=dtype, device=device)
    k = 0
    for i in range(kh):
        for j in range(kw):
            si = slice(i, i + sh * (Ho - 1) + 1, sh)
            sj = slice(j, j + sw * (Wo - 1) + 1, sw)
            out[:, :, si, sj] = out[:, :, si, sj] + parts[k]
            k += 1
    return out


def _device(x):
    from .backend import device_of
    return device_of(x)


@dataclass(frozen=True)
class _Pool:
    """A parameter-free 2-d pooling after a conv layer's activation (no padding)."""

    kernel_size: object = 2
    stride: object = None          # None: the kernel size (torch's default)

    kind = "pool"

    def __post_init__(self):
        object.__setattr__(self, "kernel_size", _pair("kernel_size", self.kernel_size, 1))
        s = self.kernel_size if self.stride is None else _pair("stride", self.stride, 1)
        object.__setattr__(self, "stride", s)

    def output_hw(self, H: int, W: int, where: str = "pool") -> tuple:
        """``(H', W')``; ValueError unless the windows tile the input exactly (no remainder)."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if kh > H or kw > W:
            raise ValueError(f"{where}: pooling kernel {self.kernel_size} is larger than its input {H}x{W}")
        if (H - kh) % sh or (W - kw) % sw:
            raise ValueError(f"{where}: pooling kernel {self.kernel_size} with stride {self.stride} does not divide "
                             f"its input {H}x{W} (expected (H - kh) and (W - kw) to be multiples of the stride)")
        return ((H - kh) // sh + 1, (W - kw) // sw + 1)

    def _geometry(self, z):
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        Ho, Wo = (z.shape[2] - kh) // sh + 1, (z.shape[3] - kw) // sw + 1
        return kh, kw, sh, sw, Ho, Wo

    def describe(self) -> str:
        k, s = self.kernel_size, self.stride
        ks = str(k[0]) if k[0] == k[1] else f"{k[0]}x{k[1]}"
        ss = "" if s == k else (f",s{s[0]}" if s[0] == s[1] else f",s{s[0]}x{s[1]}")
        return f"{self.kind}{ks}{ss}"


@dataclass(frozen=True)
class MaxPool2d(_Pool):
    """``h[b, c, y, x] = max`` of ``z`` over the window at ``(y, x)`` (torch ``MaxPool2d``, no padding).

    Backward (:meth:`backward`): each output's gradient goes to the *first* maximum of its window
    in row-major order (torch's CPU/GPU kernels keep the first index that attains the max), summed
    where windows overlap (stride < kernel). Piecewise linear: exact as long as no tie changes.
    """

    kind = "maxpool"

    def forward(self, xp, z):
        kh, kw, sh, sw, Ho, Wo = self._geometry(z)
        ws = _windows(xp, z, kh, kw, sh, sw, Ho, Wo)
        out = ws[0]
        for w in ws[1:]:
            out = xp.maximum(out, w)
        return out

    def backward(self, xp, g, z):
        """``P^T g``: the gradient ``g`` of ``h`` routed to the argmax entries of ``z``."""
        kh, kw, sh, sw, Ho, Wo = self._geometry(z)
        ws = _windows(xp, z, kh, kw, sh, sw, Ho, Wo)
        m = ws[0]
        for w in ws[1:]:
            m = xp.maximum(m, w)
        taken = xp.zeros(m.shape, dtype=xp.bool, device=_device(z))
        parts = []
        zero = xp.zeros_like(g)
        for w in ws:  # first maximum in row-major window order wins (torch's tie rule)
            sel = xp.logical_and(w == m, xp.logical_not(taken))
            taken = xp.logical_or(taken, sel)
            parts.append(xp.where(sel, g, zero))
        return _scatter(xp, parts, z.shape, kh, kw, sh, sw, Ho, Wo, g.dtype, _device(g))


@dataclass(frozen=True)
class AvgPool2d(_Pool):
    """``h[b, c, y, x] = mean`` of ``z`` over the window (torch ``AvgPool2d``, no padding).

    Linear; its transpose (:meth:`backward`) spreads each output's gradient evenly, ``g / (kh kw)``,
    over its window (summed where windows overlap).
    """

    kind = "avgpool"

    def forward(self, xp, z):
        kh, kw, sh, sw, Ho, Wo = self._geometry(z)
        ws = _windows(xp, z, kh, kw, sh, sw, Ho, Wo)
        out = ws[0]
        for w in ws[1:]:
            out = out + w
        return out / (kh * kw)

    def backward(self, xp, g, z):
        """``P^T g = g / (kh kw)`` on every entry of each window."""
        kh, kw, sh, sw, Ho, Wo = self._geometry(z)
        part = g / (kh * kw)
        return _scatter(xp, [part] * (kh * kw), z.shape, kh, kw, sh, sw, Ho, Wo, g.dtype, _device(g))


POOL_TYPES = (MaxPool2d, AvgPool2d)


# --- dense ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Linear:
    """A dense layer, ``a = h @ W.T + b`` with ``W: (n_out, n_in)`` (``torch.nn.Linear``).

    An input with more than one feature axis (the output of a conv layer, ``(B, C, H, W)``) is
    flattened first in torch's order (``torch.nn.Flatten``: a row-major reshape to ``(B, C*H*W)``);
    :meth:`transpose` returns its result in the input's own shape, so the flatten is the identity
    map on the numbers and costs nothing in the algebra.

    Fields (bound by :class:`refimpl.Network`): ``in_shape`` (per-sample shape of the input),
    ``out_features``.
    """

    in_shape: Optional[tuple] = None
    out_features: Optional[int] = None

    kind = "linear"
    pool = None

    def __post_init__(self):
        if self.out_features is not None:
            object.__setattr__(self, "out_features", check_int("out_features", self.out_features, 1))
        if self.in_shape is not None:
            object.__setattr__(self, "in_shape", tuple(check_int("in_shape", n, 1) for n in self.in_shape))

    @property
    def in_features(self) -> int:
        return int(math.prod(self.in_shape))

    @property
    def out_shape(self) -> tuple:
        """Per-sample shape of ``a`` (and of ``h``: a dense layer has no pooling)."""
        return (self.out_features,)

    h_shape = out_shape

    def bind(self, in_shape: tuple, W, where: str) -> "Linear":
        if W.ndim != 2:
            raise ValueError(f"{where}: a Linear layer expects a 2-d weight (out_features, in_features), "
                             f"got shape {tuple(W.shape)}")
        n_in = int(math.prod(in_shape))
        if W.shape[1] != n_in:
            what = "" if len(in_shape) == 1 else f" (the flattened {'x'.join(map(str, in_shape))} output of the layer below)"
            raise ValueError(f"{where}: expected {n_in} columns to match its input of {n_in} features{what}, "
                             f"got shape {tuple(W.shape)}")
        if self.in_shape is not None and tuple(self.in_shape) != tuple(in_shape):
            raise ValueError(f"{where}: the layer spec says in_shape {tuple(self.in_shape)}, but its input has "
                             f"shape {tuple(in_shape)}")
        if self.out_features is not None and self.out_features != int(W.shape[0]):
            raise ValueError(f"{where}: the layer spec says out_features {self.out_features}, but the weight has "
                             f"{W.shape[0]} rows")
        return replace(self, in_shape=tuple(int(n) for n in in_shape), out_features=int(W.shape[0]))

    def weight_shape(self) -> tuple:
        return (self.out_features, self.in_features)

    def _flat(self, xp, h):
        return h if h.ndim == 2 else xp.reshape(h, (h.shape[0], self.in_features))

    def apply(self, xp, W, h):
        """``h @ W.T`` (``h`` flattened in torch's order if it is an image batch)."""
        return self._flat(xp, h) @ W.T

    def add_bias(self, xp, a, b):
        return a + b

    def transpose(self, xp, M, delta):
        """``delta @ M`` reshaped to the input's shape: the input-gradient with ``M`` in ``W``'s place."""
        g = delta @ M
        return g if len(self.in_shape) == 1 else xp.reshape(g, (delta.shape[0],) + tuple(self.in_shape))

    def weight_grad(self, xp, delta, h):
        """``delta.T @ h`` (``W.grad`` of autograd when ``delta = dL/da``)."""
        return delta.T @ self._flat(xp, h)

    def bias_grad(self, xp, delta):
        """``sum_b delta[b]``."""
        return xp.sum(delta, axis=0)

    def post(self, xp, z):
        """``h = z``: a dense layer has no pooling."""
        return z

    def unpool(self, xp, g, z):
        """``dL/dz = dL/dh``: a dense layer has no pooling."""
        return g

    def describe(self) -> str:
        return f"linear({self.in_features}->{self.out_features})"


# --- convolution ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Conv2d:
    """A 2-d convolution (torch ``Conv2d``: cross-correlation, dilation 1, groups 1, zero padding).

    ``W: (C_out, C_in, kh, kw)``, ``b: (C_out,)``; input ``(B, C_in, H, W)``, pre-activation
    ``a: (B, C_out, H', W')`` with ``H' = floor((H + 2p - kh)/s) + 1``:

        a[b, o, y, x] = b_o + sum_{c,i,j} W[o, c, i, j] h_pad[b, c, s*y + i, s*x + j]

    In im2col form, ``a = cols(h) @ W.reshape(C_out, -1).T`` with ``cols(h): (B*H'*W', C_in*kh*kw)``
    the patches in ``(c, i, j)`` order: the dense algebra of :class:`Linear` applied per position,
    which is why every rule written against these operations runs on both.

    ``pool``: an optional :class:`MaxPool2d` / :class:`AvgPool2d` after the activation.
    Fields bound by :class:`refimpl.Network`: ``in_shape = (C_in, H, W)``, ``out_channels``,
    ``kernel_size``.
    """

    stride: object = 1
    padding: object = 0
    pool: Optional[_Pool] = None
    in_shape: Optional[tuple] = None
    out_channels: Optional[int] = None
    kernel_size: Optional[tuple] = None

    kind = "conv2d"

    def __post_init__(self):
        object.__setattr__(self, "stride", _pair("stride", self.stride, 1))
        object.__setattr__(self, "padding", _pair("padding", self.padding, 0))
        if self.pool is not None and not isinstance(self.pool, POOL_TYPES):
            raise TypeError(f"pool: expected None, MaxPool2d or AvgPool2d, got {type(self.pool).__name__}")
        if self.kernel_size is not None:
            object.__setattr__(self, "kernel_size", _pair("kernel_size", self.kernel_size, 1))
        if self.out_channels is not None:
            object.__setattr__(self, "out_channels", check_int("out_channels", self.out_channels, 1))

    # geometry
    def bind(self, in_shape: tuple, W, where: str) -> "Conv2d":
        if W.ndim != 4:
            raise ValueError(f"{where}: a Conv2d layer expects a 4-d weight (out, in, kh, kw), got shape {tuple(W.shape)}")
        if len(in_shape) != 3:
            raise ValueError(f"{where}: a Conv2d layer expects a (C, H, W) input per sample, got shape {tuple(in_shape)} "
                             "(a convolution cannot follow a dense layer)")
        C, H, Wd = (int(n) for n in in_shape)
        Co, Ci, kh, kw = (int(n) for n in W.shape)
        if Ci != C:
            raise ValueError(f"{where}: expected {C} input channels (weight shape ({Co}, {C}, {kh}, {kw})) to match its "
                             f"input of shape {(C, H, Wd)}, got weight shape {tuple(W.shape)}")
        (sh, sw), (ph, pw) = self.stride, self.padding
        if kh > H + 2 * ph or kw > Wd + 2 * pw:
            raise ValueError(f"{where}: kernel {kh}x{kw} is larger than the padded input {H + 2 * ph}x{Wd + 2 * pw} "
                             f"(input {H}x{Wd}, padding {self.padding})")
        if self.in_shape is not None and tuple(self.in_shape) != (C, H, Wd):
            raise ValueError(f"{where}: the layer spec says in_shape {tuple(self.in_shape)}, but its input has shape {(C, H, Wd)}")
        if self.out_channels is not None and self.out_channels != Co:
            raise ValueError(f"{where}: the layer spec says out_channels {self.out_channels}, but the weight has {Co}")
        if self.kernel_size is not None and tuple(self.kernel_size) != (kh, kw):
            raise ValueError(f"{where}: the layer spec says kernel_size {tuple(self.kernel_size)}, but the weight's is {(kh, kw)}")
        bound = replace(self, in_shape=(C, H, Wd), out_channels=Co, kernel_size=(kh, kw))
        if self.pool is not None:
            Ho, Wo = bound.out_shape[1:]
            self.pool.output_hw(Ho, Wo, where=f"{where}.pool")
        return bound

    @property
    def out_shape(self) -> tuple:
        """Per-sample shape of ``a`` (and of ``z = f(a)``): ``(C_out, H', W')``."""
        C, H, W = self.in_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (self.out_channels, conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw))

    @property
    def h_shape(self) -> tuple:
        """Per-sample shape of ``h`` (after the pooling, if any)."""
        Co, Ho, Wo = self.out_shape
        if self.pool is None:
            return (Co, Ho, Wo)
        return (Co,) + self.pool.output_hw(Ho, Wo)

    def weight_shape(self) -> tuple:
        return (self.out_channels, self.in_shape[0]) + tuple(self.kernel_size)

    @property
    def in_features(self) -> int:
        return int(math.prod(self.in_shape))

    # the operations
    def _pad(self, xp, h):
        ph, pw = self.padding
        if ph == 0 and pw == 0:
            return h
        B, C, H, W = h.shape
        out = xp.zeros((B, C, H + 2 * ph, W + 2 * pw), dtype=h.dtype, device=_device(h))
        out[:, :, ph:ph + H, pw:pw + W] = h
        return out

    def cols(self, xp, h):
        """im2col: the patches of ``h`` as a ``(B*H'*W', C_in*kh*kw)`` matrix, columns in ``(c, i, j)`` order."""
        B = h.shape[0]
        C = self.in_shape[0]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        _, Ho, Wo = self.out_shape
        ws = _windows(xp, self._pad(xp, h), kh, kw, sh, sw, Ho, Wo)       # kh*kw of (B, C, Ho, Wo)
        st = xp.stack(ws, axis=2)                                          # (B, C, kh*kw, Ho, Wo)
        st = xp.permute_dims(st, (0, 3, 4, 1, 2))                          # (B, Ho, Wo, C, kh*kw)
        return xp.reshape(st, (B * Ho * Wo, C * kh * kw))

    def _to_rows(self, xp, delta):
        """``(B, C_out, H', W') -> (B*H'*W', C_out)``."""
        B, Co, Ho, Wo = delta.shape
        return xp.reshape(xp.permute_dims(delta, (0, 2, 3, 1)), (B * Ho * Wo, Co))

    def apply(self, xp, W, h):
        """``conv2d(h, W)`` without bias: ``cols(h) @ W.reshape(C_out, -1).T``, back to NCHW."""
        B = h.shape[0]
        Co, Ho, Wo = self.out_shape
        a = self.cols(xp, h) @ xp.reshape(W, (Co, -1)).T                    # (B*Ho*Wo, Co)
        return xp.permute_dims(xp.reshape(a, (B, Ho, Wo, Co)), (0, 3, 1, 2))

    def add_bias(self, xp, a, b):
        return a + xp.reshape(b, (1, b.shape[0], 1, 1))

    def transpose(self, xp, M, delta):
        """The input-gradient of the convolution with ``M`` (shape of ``W``) in ``W``'s place:
        ``conv_transpose2d(delta, M, stride, padding)`` cropped to the input size ``(H, W)``
        (col2im of ``rows(delta) @ M.reshape(C_out, -1)``; the input size removes the ambiguity
        that ``output_padding`` resolves in torch when the stride does not divide)."""
        B = delta.shape[0]
        C, H, W = self.in_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        Co, Ho, Wo = self.out_shape
        g = self._to_rows(xp, delta) @ xp.reshape(M, (Co, C * kh * kw))    # (B*Ho*Wo, C*kh*kw)
        g = xp.reshape(g, (B, Ho, Wo, C, kh * kw))
        g = xp.permute_dims(g, (0, 3, 4, 1, 2))                            # (B, C, kh*kw, Ho, Wo)
        parts = [g[:, :, k, :, :] for k in range(kh * kw)]
        full = _scatter(xp, parts, (B, C, H + 2 * ph, W + 2 * pw), kh, kw, sh, sw, Ho, Wo, delta.dtype, _device(delta))
        return full[:, :, ph:ph + H, pw:pw + W]

    def weight_grad(self, xp, delta, h):
        """``dW = (rows(delta).T @ cols(h)).reshape(W.shape)``: autograd's ``W.grad`` when ``delta = dL/da``."""
        return xp.reshape(self._to_rows(xp, delta).T @ self.cols(xp, h), self.weight_shape())

    def bias_grad(self, xp, delta):
        """``sum_{b, y, x} delta[b, :, y, x]``."""
        return xp.sum(delta, axis=(0, 2, 3))

    def post(self, xp, z):
        """``h = P(z)``: the pooling after the activation (``z`` itself without one)."""
        return z if self.pool is None else self.pool.forward(xp, z)

    def unpool(self, xp, g, z):
        """``dL/dz = P^T dL/dh`` at the forward activation ``z`` (``g`` itself without pooling)."""
        return g if self.pool is None else self.pool.backward(xp, g, z)

    def describe(self) -> str:
        C = self.in_shape[0] if self.in_shape else "?"
        k = self.kernel_size
        ks = "?" if k is None else (str(k[0]) if k[0] == k[1] else f"{k[0]}x{k[1]}")
        s = self.stride[0] if self.stride[0] == self.stride[1] else f"{self.stride[0]}x{self.stride[1]}"
        p = self.padding[0] if self.padding[0] == self.padding[1] else f"{self.padding[0]}x{self.padding[1]}"
        base = f"conv2d({C}->{self.out_channels},k{ks},s{s},p{p})"
        return base if self.pool is None else f"{base}+{self.pool.describe()}"


LAYER_TYPES = (Linear, Conv2d)


def describe_layers(layers) -> str:
    """A compact one-line description, e.g. ``conv2d(1->3,k3,s1,p1)+maxpool2 | linear(48->10)``."""
    return " | ".join(l.describe() for l in layers)


def conv_toeplitz(layer: Conv2d, W) -> np.ndarray:
    """The unrolled (Toeplitz) dense matrix ``T: (C_out*H'*W', C_in*H*W)`` of a bound conv layer,
    so that ``flatten(conv2d(h, W)) = flatten(h) @ T.T`` (torch flatten order), built on the host
    in float64 from the definition (one explicit loop over outputs; an independent oracle for the
    im2col code, used by :mod:`proofs.bp`)."""
    from .backend import to_numpy

    Wn = to_numpy(W).astype(np.float64)
    C, H, Wd = layer.in_shape
    Co, Ho, Wo = layer.out_shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    T = np.zeros((Co, Ho, Wo, C, H, Wd))
    for y in range(Ho):
        for x in range(Wo):
            for i in range(kh):
                for j in range(kw):
                    r, c = sh * y + i - ph, sw * x + j - pw
                    if 0 <= r < H and 0 <= c < Wd:
                        T[:, y, x, :, r, c] += Wn[:, :, i, j]
    return T.reshape(Co * Ho * Wo, C * H * Wd)


# --- compact architecture strings -----------------------------------------------------------------

import re as _re

_CONV = _re.compile(r"^c(\d+)k(\d+)(?:s(\d+))?(?:p(\d+))?(?:\+(mp|ap)(\d+)(?:s(\d+))?)?$")
_LIN = _re.compile(r"^l(\d+)$")

ARCHITECTURE_HELP = (
    "layers separated by spaces or commas: c<out>k<kernel>[s<stride>][p<padding>][+mp<k>[s<stride>]|+ap<k>[s<stride>]] "
    "is a Conv2d (optionally followed by max/avg pooling), l<out> a Linear layer; e.g. "
    "'c8k3p1+mp2 c16k3p1+mp2 l10' (the last layer must be linear: it is the output)")


def parse_architecture(spec: str) -> list:
    """Layer specs (unbound, with ``out_channels``/``kernel_size``/``out_features`` set) from a
    compact string such as ``"c8k3p1+mp2 c16k3s2 l32 l10"`` (:data:`ARCHITECTURE_HELP`)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"architecture: expected a non-empty string ({ARCHITECTURE_HELP}), got {spec!r}")
    out = []
    for tok in _re.split(r"[\s,]+", spec.strip()):
        m = _CONV.match(tok)
        if m:
            o, k, s, p, pk, pkk, ps = m.groups()
            pool = None
            if pk:
                cls = MaxPool2d if pk == "mp" else AvgPool2d
                pool = cls(int(pkk), None if ps is None else int(ps))
            out.append(Conv2d(stride=int(s or 1), padding=int(p or 0), pool=pool, out_channels=int(o),
                              kernel_size=int(k)))
            continue
        m = _LIN.match(tok)
        if m:
            out.append(Linear(out_features=int(m.group(1))))
            continue
        raise ValueError(f"architecture: cannot read layer {tok!r}; {ARCHITECTURE_HELP}")
    if not isinstance(out[-1], Linear):
        raise ValueError(f"architecture: the last layer must be linear (the output), got {spec!r}")
    return out
