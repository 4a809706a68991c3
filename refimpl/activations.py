"""Activation functions by name: f, f' and f^-1 (None where f is not invertible).

Names: ``linear`` (the identity), ``tanh``, ``sigmoid``, ``relu``, ``leaky_relu`` (slope 0.01, or
``leaky_relu(0.2)`` for another slope), ``elu`` (alpha 1, or ``elu(0.5)``), ``softplus``.

Derivatives at kinks follow torch autograd so that the oracle comparison is one-to-one:
``relu'(0) = 0``, ``leaky_relu'(0) = slope``, ``elu'(0) = alpha``.

Every function takes and returns arrays of one namespace and keeps their dtype. Inverses check
their domain and raise ``ValueError`` (naming the activation and the violated bound) instead of
returning NaN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

from .backend import namespace, device_of

__all__ = ["Activation", "get", "NAMES", "canonical_name"]

NAMES = ("linear", "tanh", "sigmoid", "relu", "leaky_relu", "elu", "softplus")


@dataclass(frozen=True)
class Activation:
    """An activation ``f`` with its derivative ``df`` and inverse ``inv`` (None if not invertible).

    ``domain`` describes the range of ``f`` (the domain of ``f^-1``) as an open interval
    ``(lo, hi)`` with ``None`` for unbounded ends.
    """

    name: str
    param: Optional[float]
    f: Callable
    df: Callable
    inv: Optional[Callable]
    inv_domain: tuple
    #: True when f' is continuous and Lipschitz everywhere (so first-order Taylor remainders are
    #: O(eps^2)); false for the piecewise-linear ones and elu with alpha != 1. linear, tanh,
    #: sigmoid and softplus are C^infinity; elu(1.0) is only C^1 (f'' jumps from 1 to 0 at 0), so
    #: a second-order (Hessian) argument needs :data:`proofs.strategies.SMOOTH_ACTIVATIONS`.
    smooth: bool
    #: ``(g, z) -> g * f'(a)`` from ``z = f(a)`` with one temporary, where f' is cheaper from ``z``
    #: than from ``a`` (tanh: ``1 - z^2``, sigmoid: ``z (1 - z)``); None: ``g * df(a)``.
    fused: Optional[Callable] = None

    def __call__(self, x):
        return self.f(x)

    def times_df(self, g, a, z=None):
        """``g * f'(a)``: the backward product of every rule (delta = upstream gradient times f').

        With ``z = f(a)`` given (the trace's post-activation) tanh and sigmoid take ``f'`` from ``z``
        (no second ``tanh``) with one temporary and in-place steps on it, bitwise equal to
        ``g * df(a)`` (the same products in the same order; negations are exact); ``linear``
        returns ``g`` itself. Neither ``g``, ``a`` nor ``z`` is modified (read-only inputs work).
        Issue 17: BP's elementwise passes, float64.
        """
        if self.name == "linear":
            return g
        if self.fused is not None and z is not None:
            return self.fused(g, z)
        return g * self.df(a)

    @property
    def invertible(self) -> bool:
        return self.inv is not None

    def check_in_range(self, y, name: str = "argument") -> None:
        """Raise ``ValueError`` if some entry of ``y`` lies outside the range of f (domain of f^-1)."""
        if self.inv is None:
            raise ValueError(f"activation {self.name!r} is not invertible; {name} cannot be mapped back")
        xp = namespace(y)
        # NaN compares False with every bound: without this, linear/leaky_relu/elu inverses (which
        # have unbounded ends) passed NaN/inf through instead of rejecting them.
        if not bool(xp.all(xp.isfinite(y))):
            n_bad = int(xp.sum(xp.astype(~xp.isfinite(y), xp.int64)))
            raise ValueError(f"{name}: inverse of {self.name!r} needs finite values, got {n_bad} NaN/inf entries")
        lo, hi = self.inv_domain
        if lo is not None and not bool(xp.all(y > lo)):
            bad = float(xp.min(y))
            raise ValueError(f"{name}: inverse of {self.name!r} needs values > {lo}, got min {bad:.6g}")
        if hi is not None and not bool(xp.all(y < hi)):
            bad = float(xp.max(y))
            raise ValueError(f"{name}: inverse of {self.name!r} needs values < {hi}, got max {bad:.6g}")

    def inverse(self, y, name: str = "argument"):
        """f^-1(y) after checking that y lies in the range of f."""
        self.check_in_range(y, name)
        return self.inv(y)


# --- the functions, written against the array API -----------------------------------------------
#
# Hot paths (issue 17): a comparison with zero uses a 0-d zero, broadcast, never ``zeros_like(x)``
# (in NumPy a fresh full-size zero array is calloc'ed memory whose pages fault in on first touch:
# 3 ms for a 256x1024 float64 array against 0.2 ms for the exp of it); multi-step formulas work in
# place on their own temporaries, never on an output torch autograd saves for its backward pass
# (tanh's, exp's). Every rewrite is bitwise the formula in its comment (the same operations on the
# same operands; ``-t`` as ``t *= -1`` and ``a + b`` as ``b += a`` are exact).

def _zero(x):
    """A 0-d zero of ``x``'s dtype on ``x``'s device (broadcasts against ``x``)."""
    return namespace(x).zeros((), dtype=x.dtype, device=device_of(x))


def _linear():
    return Activation("linear", None, lambda x: x, lambda x: namespace(x).ones_like(x), lambda y: y,
                      (None, None), True)


def _tanh():
    def df(x):
        xp = namespace(x)
        t = xp.tanh(x)
        return 1 - t * t  # d/dx tanh = 1 - tanh^2

    def inv(y):
        xp = namespace(y)
        return xp.atanh(y)

    def fused(g, z):
        t = z * z    # the one temporary
        t -= 1       # z^2 - 1 = -(1 - z^2) exactly
        t *= g
        t *= -1      # g (1 - z^2), as g * df(a) rounds it
        return t

    return Activation("tanh", None, lambda x: namespace(x).tanh(x), df, inv, (-1.0, 1.0), True, fused)


def _sigmoid_f(x):
    # sigma(x) = (1 + tanh(x/2)) / 2: no overflow for large |x|, unlike 1/(1+exp(-x)).
    xp = namespace(x)
    return 0.5 * (1 + xp.tanh(0.5 * x))  # not in place: torch autograd keeps tanh's output


def _sigmoid():
    def df(x):
        s = _sigmoid_f(x)
        return s * (1 - s)

    def inv(y):
        xp = namespace(y)
        return xp.log(y) - xp.log1p(-y)  # logit

    def fused(g, s):
        t = s - 1    # the one temporary: -(1 - s) exactly
        t *= s       # -(s (1 - s)) (the product df rounds, negated)
        t *= g
        t *= -1
        return t

    return Activation("sigmoid", None, _sigmoid_f, df, inv, (0.0, 1.0), True, fused)


def _relu():
    def f(x):
        # max(x, 0): the same numbers as where(x > 0, x, 0) on finite x, several times faster in
        # NumPy (a where on a data-dependent mask branches per element; measured in issue 15's conv bench)
        xp = namespace(x)
        return xp.maximum(x, _zero(x))

    def df(x):
        xp = namespace(x)
        return xp.astype(x > 0, x.dtype)

    return Activation("relu", None, f, df, None, (None, None), False)


def _leaky_relu(slope: float):
    if not (slope > 0 and slope != 1):
        raise ValueError(f"activation leaky_relu: expected a slope > 0 and != 1, got {slope}")

    def f(x):
        xp = namespace(x)
        return xp.where(x > 0, x, slope * x)

    def df(x):
        xp = namespace(x)
        return xp.where(x > 0, xp.ones_like(x), xp.full_like(x, slope))

    def inv(y):
        xp = namespace(y)
        return xp.where(y > 0, y, y / slope)

    name = "leaky_relu" if slope == 0.01 else f"leaky_relu({slope!r})"
    return Activation(name, slope, f, df, inv, (None, None), False)


def _elu(alpha: float):
    if not alpha > 0:
        raise ValueError(f"activation elu: expected alpha > 0, got {alpha}")

    def f(x):
        xp = namespace(x)
        neg = xp.minimum(x, _zero(x))  # expm1 only of non-positive values: no overflow
        return xp.where(x > 0, x, alpha * xp.expm1(neg))

    def df(x):
        xp = namespace(x)
        neg = xp.minimum(x, _zero(x))
        return xp.where(x > 0, xp.ones_like(x), alpha * xp.exp(neg))

    def inv(y):
        xp = namespace(y)
        neg = xp.minimum(y, _zero(y))
        return xp.where(y > 0, y, xp.log1p(neg / alpha))

    name = "elu" if alpha == 1.0 else f"elu({alpha!r})"
    return Activation(name, alpha, f, df, inv, (-alpha, None), alpha == 1.0)


def _softplus():
    def f(x):
        xp = namespace(x)
        # log(1 + e^x) = max(x, 0) + log1p(e^{-|x|}), on one temporary
        t = xp.abs(x)
        t *= -1
        t = xp.exp(t)
        t = xp.log1p(t)
        t += xp.maximum(x, _zero(x))
        return t

    def inv(y):
        xp = namespace(y)
        # x = log(e^y - 1) = y + log(1 - e^{-y})
        return y + xp.log(-xp.expm1(-y))

    return Activation("softplus", None, f, _sigmoid_f, inv, (0.0, None), True)


_PARAM = re.compile(r"^(leaky_relu|elu)\(\s*([-+0-9.eE]+)\s*\)$")


def get(spec) -> Activation:
    """The :class:`Activation` for a name (``"tanh"``, ``"leaky_relu(0.2)"``) or an Activation."""
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"activation: expected a name (str) or an Activation, got {type(spec).__name__}")
    m = _PARAM.match(spec)
    if m:
        base, value = m.group(1), float(m.group(2))
        return _leaky_relu(value) if base == "leaky_relu" else _elu(value)
    if spec == "linear":
        return _linear()
    if spec == "tanh":
        return _tanh()
    if spec == "sigmoid":
        return _sigmoid()
    if spec == "relu":
        return _relu()
    if spec == "leaky_relu":
        return _leaky_relu(0.01)
    if spec == "elu":
        return _elu(1.0)
    if spec == "softplus":
        return _softplus()
    raise ValueError(f"activation: unknown name {spec!r}; expected one of {NAMES} "
                     "(leaky_relu and elu also as 'leaky_relu(0.2)', 'elu(0.5)')")


def canonical_name(spec) -> str:
    """Canonical string of an activation spec (validates it)."""
    return get(spec).name
