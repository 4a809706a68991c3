"""Deterministic operations of a stochastic computation graph, with hand-written derivatives.

Each op maps its parents' values ``u_0, ..., u_{k-1}`` (batched ``(B, n_i)`` rows; the affine
op's weight and bias are unbatched flat parameter vectors) to a batched value ``(B, n_out)`` and
states, by hand:

* ``first(xp, u)``: the local Jacobians ``g_i = dy/du_i`` as dense ``(B or 1, n_out, n_i)`` arrays
  (``None`` where zero);
* ``second(xp, u)``: the non-zero blocks ``h_ij = d2y/du_i du_j`` (``i <= j``) as
  ``(B or 1, n_out, n_i, n_j)`` arrays — used by second-order forward mode (small theta only);
* ``vjp(xp, u, cot, per_sample)``: ``cot @ g_i`` for each input without forming ``g_i`` where that
  would be large (affine weights): the reverse pass (:mod:`refimpl.scg.reverse`).

Dense local Jacobians are for the verification sizes of the spec (widths <= 8); the reverse pass
never forms them for the affine op, so training-size parameters go through ``vjp`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .. import activations as _act

__all__ = ["Op", "Affine", "Activation", "LinearCombination", "Product", "Polynomial", "Concat",
           "SumAll", "Reparam", "second_derivative", "SMOOTH"]


# --- small array helpers (array API only) -------------------------------------------------------

def _eye(xp, n, like):
    return xp.eye(n, dtype=like.dtype, device=_device(like))


def _device(x):
    from ..backend import device_of

    return device_of(x)


def _diag(xp, v):
    """``(B, n) -> (B, n, n)`` with ``v`` on the diagonal."""
    n = v.shape[-1]
    return v[:, :, None] * _eye(xp, n, v)[None, :, :]


def _diag3(xp, v):
    """``(B, n) -> (B, n, n, n)``, entry ``[b, o, i, j] = v[b, o] delta_oi delta_oj``."""
    n = v.shape[-1]
    e = _eye(xp, n, v)
    e3 = e[:, :, None] * e[:, None, :]
    return v[:, :, None, None] * e3[None, :, :, :]


def _row_vjp(xp, cot, g):
    """``cot (B, n_out)`` times ``g (B|1, n_out, n_i)`` -> ``(B, n_i)``."""
    return xp.matmul(cot[:, None, :], g)[:, 0, :]


# --- second derivatives of the activations (refimpl.activations states f and f') ---------------

#: activations whose second derivative exists everywhere (needed for Hessians).
SMOOTH = ("linear", "tanh", "sigmoid", "softplus")


def second_derivative(name: str):
    """``f''`` of a named activation, by hand: tanh'' = -2 t (1 - t^2), sigmoid'' = s(1-s)(1-2s),
    softplus'' = s(1-s) with s = sigmoid; piecewise-linear ones are 0 almost everywhere (their
    Hessians are not meaningful at the kinks; ``Activation.smooth`` says so)."""
    act = _act.get(name)
    base = act.name.split("(")[0]

    def f2(x):
        from ..backend import namespace

        xp = namespace(x)
        if base == "tanh":
            t = xp.tanh(x)
            return -2 * t * (1 - t * t)
        if base == "sigmoid":
            s = _act.get("sigmoid").f(x)
            return s * (1 - s) * (1 - 2 * s)
        if base == "softplus":
            s = _act.get("sigmoid").f(x)
            return s * (1 - s)
        if base == "elu":
            neg = xp.minimum(x, xp.zeros_like(x))
            return xp.where(x > 0, xp.zeros_like(x), act.param * xp.exp(neg))
        return xp.zeros_like(x)  # linear, relu, leaky_relu

    return f2


# --- the ops ------------------------------------------------------------------------------------

class Op:
    """Base class: ``arity``, ``out_size``, ``value``, ``first``, ``second``, ``vjp``."""

    #: positions of inputs that must be unbatched (flat parameter / constant vectors)
    unbatched: tuple = ()

    def out_size(self, in_sizes: Sequence[int]) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def value(self, xp, u):  # pragma: no cover - abstract
        raise NotImplementedError

    def first(self, xp, u):  # pragma: no cover - abstract
        raise NotImplementedError

    def second(self, xp, u) -> dict:
        return {}

    def vjp(self, xp, u, cot, per_sample: bool = True):
        return [None if g is None else _row_vjp(xp, cot, g) for g in self.first(xp, u)]


@dataclass(frozen=True)
class Affine(Op):
    """``y = x @ W.T + b`` with ``W: (n_out, n_in)`` stored flat (row-major) and ``b: (n_out,)``.

    Parents: ``(x, W)`` or ``(x, W, b)``; ``W`` and ``b`` must be unbatched (Param or constant Input).
    """

    n_in: int
    n_out: int
    unbatched: tuple = (1, 2)

    def out_size(self, in_sizes):
        if len(in_sizes) not in (2, 3):
            raise ValueError(f"affine: expected parents (x, W) or (x, W, b), got {len(in_sizes)} parents")
        if in_sizes[0] != self.n_in or in_sizes[1] != self.n_in * self.n_out or (
                len(in_sizes) == 3 and in_sizes[2] != self.n_out):
            raise ValueError(f"affine: expected parent sizes ({self.n_in}, {self.n_out * self.n_in}"
                             f"{', ' + str(self.n_out) if len(in_sizes) == 3 else ''}), got {tuple(in_sizes)}")
        return self.n_out

    def _W(self, xp, W):
        return xp.reshape(W, (self.n_out, self.n_in))

    def value(self, xp, u):
        y = xp.matmul(u[0], xp.matrix_transpose(self._W(xp, u[1])))
        return y + u[2][None, :] if len(u) == 3 else y

    def first(self, xp, u):
        x = u[0]
        B = x.shape[0]
        e = _eye(xp, self.n_out, x)
        gW = xp.reshape(e[None, :, :, None] * x[:, None, None, :], (B, self.n_out, self.n_out * self.n_in))
        out = [self._W(xp, u[1])[None, :, :], gW]
        if len(u) == 3:
            out.append(e[None, :, :])
        return out

    def second(self, xp, u):
        x = u[0]
        eo, ei = _eye(xp, self.n_out, x), _eye(xp, self.n_in, x)
        # d2 y_o / dx_i dW_{o'i'} = delta_oo' delta_ii'
        h = xp.reshape(eo[:, None, :, None] * ei[None, :, None, :],
                       (1, self.n_out, self.n_in, self.n_out * self.n_in))
        return {(0, 1): h}

    def vjp(self, xp, u, cot, per_sample=True):
        x = u[0]
        gx = xp.matmul(cot, self._W(xp, u[1]))
        if per_sample:
            gW = xp.reshape(cot[:, :, None] * x[:, None, :], (x.shape[0], self.n_out * self.n_in))
            gb = cot
        else:
            gW = xp.reshape(xp.matmul(xp.matrix_transpose(cot), x), (self.n_out * self.n_in,))
            gb = xp.sum(cot, axis=0)
        return [gx, gW] + ([gb] if len(u) == 3 else [])


@dataclass(frozen=True)
class Activation(Op):
    """Elementwise ``y = f(u)`` for an activation of :mod:`refimpl.activations` (f'' by hand)."""

    name: str

    def __post_init__(self):
        object.__setattr__(self, "name", _act.canonical_name(self.name))

    def out_size(self, in_sizes):
        if len(in_sizes) != 1:
            raise ValueError(f"activation {self.name}: expected 1 parent, got {len(in_sizes)}")
        return in_sizes[0]

    def value(self, xp, u):
        return _act.get(self.name).f(u[0])

    def first(self, xp, u):
        return [_diag(xp, _act.get(self.name).df(u[0]))]

    def second(self, xp, u):
        return {(0, 0): _diag3(xp, second_derivative(self.name)(u[0]))}

    def vjp(self, xp, u, cot, per_sample=True):
        return [cot * _act.get(self.name).df(u[0])]


@dataclass(frozen=True)
class LinearCombination(Op):
    """``y = sum_k c_k u_k`` (all parents of one width, constant coefficients)."""

    coeffs: tuple

    def out_size(self, in_sizes):
        if len(in_sizes) != len(self.coeffs) or len(set(in_sizes)) != 1:
            raise ValueError(f"linear_combination: expected {len(self.coeffs)} parents of one width, "
                             f"got sizes {tuple(in_sizes)}")
        return in_sizes[0]

    def value(self, xp, u):
        y = self.coeffs[0] * u[0]
        for c, v in zip(self.coeffs[1:], u[1:]):
            y = y + c * v
        return y

    def first(self, xp, u):
        e = _eye(xp, u[0].shape[-1], u[0])[None, :, :]
        return [c * e for c in self.coeffs]

    def vjp(self, xp, u, cot, per_sample=True):
        return [c * cot for c in self.coeffs]


@dataclass(frozen=True)
class Product(Op):
    """Elementwise ``y = u * v``."""

    def out_size(self, in_sizes):
        if len(in_sizes) != 2 or in_sizes[0] != in_sizes[1]:
            raise ValueError(f"product: expected 2 parents of one width, got sizes {tuple(in_sizes)}")
        return in_sizes[0]

    def value(self, xp, u):
        return u[0] * u[1]

    def first(self, xp, u):
        return [_diag(xp, u[1]), _diag(xp, u[0])]

    def second(self, xp, u):
        return {(0, 1): _diag3(xp, xp.ones_like(u[0]))}

    def vjp(self, xp, u, cot, per_sample=True):
        return [cot * u[1], cot * u[0]]


@dataclass(frozen=True)
class Polynomial(Op):
    """Elementwise ``y = sum_k a_k u^k`` (constant coefficients ``a_0, ..., a_K``)."""

    coeffs: tuple

    def out_size(self, in_sizes):
        if len(in_sizes) != 1:
            raise ValueError(f"polynomial: expected 1 parent, got {len(in_sizes)}")
        if len(self.coeffs) == 0:
            raise ValueError("polynomial: expected at least one coefficient, got none")
        return in_sizes[0]

    @staticmethod
    def _horner(coeffs, x):
        y = 0 * x + coeffs[-1]
        for a in reversed(coeffs[:-1]):
            y = y * x + a
        return y

    def _deriv(self, k):
        c = list(self.coeffs)
        for _ in range(k):
            c = [i * c[i] for i in range(1, len(c))] or [0.0]
        return tuple(float(a) for a in c)

    def value(self, xp, u):
        return self._horner(self.coeffs, u[0])

    def first(self, xp, u):
        return [_diag(xp, self._horner(self._deriv(1), u[0]))]

    def second(self, xp, u):
        return {(0, 0): _diag3(xp, self._horner(self._deriv(2), u[0]))}

    def vjp(self, xp, u, cot, per_sample=True):
        return [cot * self._horner(self._deriv(1), u[0])]


@dataclass(frozen=True)
class Concat(Op):
    """``y = [u_0, u_1, ...]`` along the unit axis."""

    def out_size(self, in_sizes):
        if len(in_sizes) < 1:
            raise ValueError("concat: expected at least 1 parent")
        return sum(in_sizes)

    def value(self, xp, u):
        return xp.concat(list(u), axis=1)

    def first(self, xp, u):
        n = sum(v.shape[-1] for v in u)
        e = _eye(xp, n, u[0])
        out, off = [], 0
        for v in u:
            out.append(e[None, :, off:off + v.shape[-1]])
            off += v.shape[-1]
        return out

    def vjp(self, xp, u, cot, per_sample=True):
        out, off = [], 0
        for v in u:
            out.append(cot[:, off:off + v.shape[-1]])
            off += v.shape[-1]
        return out


@dataclass(frozen=True)
class SumAll(Op):
    """``y = sum_k sum_i u_k[i]`` (width 1): the default op of a cost node."""

    def out_size(self, in_sizes):
        if len(in_sizes) < 1:
            raise ValueError("sum: expected at least 1 parent")
        return 1

    def value(self, xp, u):
        y = xp.sum(u[0], axis=1, keepdims=True)
        for v in u[1:]:
            y = y + xp.sum(v, axis=1, keepdims=True)
        return y

    def first(self, xp, u):
        return [xp.ones((1, 1, v.shape[-1]), dtype=v.dtype, device=_device(v)) for v in u]

    def vjp(self, xp, u, cot, per_sample=True):
        return [cot * xp.ones_like(v) for v in u]


@dataclass(frozen=True)
class Reparam(Op):
    """``w = mu + exp(s) * eps`` (parents ``mu, s = log sigma, eps``): the pathwise Gaussian."""

    def out_size(self, in_sizes):
        if len(in_sizes) != 3 or len(set(in_sizes)) != 1:
            raise ValueError(f"reparam: expected parents (mean, log_std, eps) of one width, got {tuple(in_sizes)}")
        return in_sizes[0]

    def value(self, xp, u):
        return u[0] + xp.exp(u[1]) * u[2]

    def first(self, xp, u):
        sig = xp.exp(u[1])
        return [_diag(xp, xp.ones_like(u[0])), _diag(xp, sig * u[2]), _diag(xp, sig)]

    def second(self, xp, u):
        sig = xp.exp(u[1])
        return {(1, 1): _diag3(xp, sig * u[2]), (1, 2): _diag3(xp, sig)}

    def vjp(self, xp, u, cot, per_sample=True):
        sig = xp.exp(u[1])
        return [cot, cot * sig * u[2], cot * sig]
