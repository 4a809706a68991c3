"""Baselines for the score-function terms (Schulman et al. 2015, section 3, "variance reduction").

In the surrogate, ``log p(w | DEPS_w) * (Q_w - b_w)`` replaces ``log p(w | DEPS_w) * Q_w``. The
expectation is unchanged whenever ``b_w`` depends only on nodes that ``w`` does not influence,
because ``E[grad log p(w | .) | non-descendants of w] = 0``. Every baseline here names the nodes it
reads (``inputs``); the surrogate validates them and raises ``ValueError`` for a baseline that
reads ``w`` itself or a descendant of ``w`` (biased) unless ``allow_biased=True``.

The variance-minimising constant for node ``w`` (:func:`optimal_constant_baseline`): with
``s_w = grad log p(w | .)`` and ``g_0`` the per-row gradient estimate with ``b_w = 0``,
``Var(b) = Var(g_0) - 2 b E[s_w . g_0] + b^2 E[|s_w|^2]`` (``E[s_w] = 0``), minimised at

    b* = E[s_w . g_0] / E[|s_w|^2]

(spec P-D2, corrected: ``E[Q |s|^2] / E[|s|^2]`` is optimal only when ``g_0 = s_w Q_w``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..backend import namespace, device_of

__all__ = ["Baseline", "ConstantBaseline", "FunctionBaseline", "LearnedBaseline",
           "validate_baseline", "optimal_constant_baseline"]


class Baseline:
    inputs: tuple = ()
    allow_biased: bool = False

    def value(self, sample):  # pragma: no cover - abstract
        raise NotImplementedError


def _rows(xp, b, B, like, what):
    if isinstance(b, (int, float)):
        return xp.full((B,), float(b), dtype=like.dtype, device=device_of(like))
    if b.ndim == 2 and b.shape[1] == 1:
        b = b[:, 0]
    if b.ndim == 0:
        b = xp.broadcast_to(b, (B,))
    if tuple(b.shape) != (B,):
        raise ValueError(f"{what}: expected a baseline of shape ({B},) or ({B}, 1), got {tuple(b.shape)}")
    return b


@dataclass(frozen=True)
class ConstantBaseline(Baseline):
    """``b = value`` (a Python float)."""

    constant: float
    inputs: tuple = ()
    allow_biased: bool = False

    def value(self, sample):
        xp = namespace(sample.theta)
        return xp.full((sample.batch,), float(self.constant), dtype=sample.theta.dtype,
                       device=device_of(sample.theta))


@dataclass(frozen=True)
class FunctionBaseline(Baseline):
    """``b = fn(*values of inputs)``: any function of the named nodes (rows ``(B, n)``, constant
    Inputs broadcast; Params are passed as flat vectors — a theta-dependent baseline is held
    constant in the surrogate).
    ``fn`` returns ``(B,)``, ``(B, 1)`` or a scalar."""

    fn: Callable
    inputs: tuple
    allow_biased: bool = False

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))

    def value(self, sample):
        xp = namespace(sample.theta)
        from .graph import Param

        vals = [sample.values[i] if isinstance(sample.graph[i], Param) else sample.rows(i)
                for i in self.inputs]
        return _rows(xp, self.fn(*vals), sample.batch, sample.theta,
                     "FunctionBaseline")


@dataclass(frozen=True)
class LearnedBaseline(Baseline):
    """``b = net(concat(inputs))[:, 0]`` with a :class:`refimpl.Network` (one output unit), trained
    by regressing on the sampled ``Q_w``: :meth:`updates` gives the gradient of
    ``mean_rows 0.5 (b - Q_w)^2`` w.r.t. the network's weights (gradient convention, BP)."""

    net: object
    inputs: tuple
    allow_biased: bool = False

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if self.net.sizes[-1] != 1:
            raise ValueError(f"net: a baseline network needs 1 output unit, got {self.net.sizes[-1]}")

    def features(self, sample):
        xp = namespace(sample.theta)
        return xp.concat([sample.rows(i) for i in self.inputs], axis=1)

    def value(self, sample):
        return self.net.forward(self.features(sample)).h[-1][:, 0]

    def updates(self, sample, target):
        """BP updates of the regression loss ``mean 0.5 (b - target)^2`` (target: ``(B,)``)."""
        from ..rules import BP, EmptyState

        upd, _ = BP(loss="mse").updates(self.net, EmptyState(), self.features(sample), target[:, None])
        return upd


def validate_baseline(graph, w: str, baseline: Baseline) -> None:
    """Raise ``ValueError`` if ``baseline`` reads ``w`` or a descendant of ``w`` (unless allowed)."""
    if not isinstance(baseline, Baseline):
        raise TypeError(f"baselines[{w!r}]: expected a Baseline, got {type(baseline).__name__}")
    for v in baseline.inputs:
        if v not in graph:
            raise ValueError(f"baselines[{w!r}]: input {v!r} is not a node of the graph")
        if (v == w or graph.influences(w, v)) and not baseline.allow_biased:
            raise ValueError(f"baselines[{w!r}]: input {v!r} is {'w itself' if v == w else 'a descendant of w'}; "
                             "a baseline must depend only on non-descendants of w (else the gradient is biased); "
                             "pass allow_biased=True to build it anyway")


def optimal_constant_baseline(graph, theta, node: str, baselines=None, cost_scope: str = "downstream",
                              quadrature: int = 40) -> float:
    """``b* = E[s_w . g_0] / E[|s_w|^2]`` by exact enumeration (see the module docstring); the
    other nodes keep ``baselines``."""
    from .evaluate import enumerate_outcomes
    from .surrogate import surrogate

    if node not in graph.stochastic:
        raise ValueError(f"node: expected a stochastic node, got {node!r}")
    s = enumerate_outcomes(graph, theta, quadrature)
    xp = namespace(theta)
    bl = dict(baselines or {})
    bl.pop(node, None)
    sur = surrogate(s, baselines=bl, cost_scope=cost_scope, record=True)
    sw, g0 = sur.record["score"][node], sur.per_sample
    num = xp.sum(s.weights * xp.sum(sw * g0, axis=1))
    den = xp.sum(s.weights * xp.sum(sw * sw, axis=1))
    if float(den) == 0.0:
        raise ValueError(f"node: theta does not reach the distribution of {node!r} (E|s_w|^2 = 0)")
    return float(num / den)
