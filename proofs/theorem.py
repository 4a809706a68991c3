"""Theorems as data: a statement, its source, how to draw an instance, a check and a control.

* ``check(instance) -> Evidence``: the predicate, refimpl's side against the oracle's.
* ``control(instance) -> Evidence``: the same check with one condition broken; it must report
  ``holds=False``. A predicate without a working control proves nothing (DESIGN.md).

Instances are drawn through a :class:`Drawer` so that one description of "a random instance"
serves both Hypothesis (which then shrinks the structure) and ``refimpl verify`` (which draws
from a seeded host generator).

Exact identities are judged with the tolerance table (:mod:`proofs.tolerances`); approximate
theorems ("= in the limit gamma -> 0") by their order, with :func:`order_check`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from refimpl.backend import to_numpy
from .tolerances import tolerance, dtype_name

__all__ = ["Theorem", "Evidence", "Drawer", "RngDrawer", "HypothesisDrawer", "compare",
           "order_check", "relative_error", "flat"]


# --- evidence ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Evidence:
    """Outcome of one check on one instance.

    ``error``: the measured discrepancy (relative unless ``detail`` says otherwise);
    ``tolerance``: what it was judged against (for order checks: the limit tolerance);
    ``order``: the fitted log-log slope for order checks (None for fixed-tolerance checks).
    """

    holds: bool
    error: float
    tolerance: float
    detail: str = ""
    order: Optional[float] = None
    expected_order: Optional[float] = None

    def as_dict(self) -> dict:
        return {"holds": bool(self.holds), "error": float(self.error), "tolerance": float(self.tolerance),
                "order": None if self.order is None else float(self.order),
                "expected_order": self.expected_order, "detail": self.detail}


# --- drawing instances -------------------------------------------------------------------------

class Drawer:
    """Source of structural choices for an instance (sizes, activations, seeds)."""

    def integer(self, lo: int, hi: int) -> int:  # inclusive bounds
        raise NotImplementedError

    def choice(self, options: Sequence):
        raise NotImplementedError

    def real(self, lo: float, hi: float) -> float:
        raise NotImplementedError

    def boolean(self) -> bool:
        return bool(self.integer(0, 1))

    def seed(self) -> int:
        return self.integer(0, 2**31 - 1)

    def variant(self, key: str, options: Sequence):
        """A *variant* of the theorem (a rule kind, a mode, a tableau): ``refimpl verify`` covers
        every option of every key in every run (instance ``i`` takes ``options[i % len(options)]``;
        :attr:`Theorem.variants` is at least the longest such ``options``), not by chance.
        Elsewhere (Hypothesis, a drawer without an index) it is :meth:`choice`. Asking again
        for the same ``key`` within one draw (a redraw loop) returns the same option."""
        return self.choice(options)

    def planned(self, key: str, options: Sequence):
        """The option :meth:`variant` will return for ``key`` where that is fixed in advance (an
        indexed verify draw), so a draw can shape the rest of the instance for it; None where
        the variant is drawn at random."""
        return None


class RngDrawer(Drawer):
    """Draws from a host ``numpy.random.Generator`` (used by ``refimpl verify``).

    ``index``: the instance's index in a verify run; :meth:`variant` then returns
    ``options[index % len(options)]`` (it still consumes one draw, so the rest of the instance
    is the one a plain :meth:`choice` would have drawn). Without an index it is :meth:`choice`.
    """

    def __init__(self, gen: np.random.Generator, index: Optional[int] = None):
        self.gen = gen
        self.index = index
        self._variants: dict = {}

    def variant(self, key, options):
        options = list(options)
        if key in self._variants:
            return self._variants[key]
        picked = self.choice(options)  # consumed either way: the rest of the stream stays aligned
        if self.index is not None:
            picked = options[self.index % len(options)]
        self._variants[key] = picked
        return picked

    def planned(self, key, options):
        if self.index is None:
            return None
        options = list(options)
        return self._variants.setdefault(key, options[self.index % len(options)])

    def integer(self, lo, hi):
        return int(self.gen.integers(lo, hi + 1))

    def choice(self, options):
        options = list(options)
        return options[int(self.gen.integers(0, len(options)))]

    def real(self, lo, hi):
        return float(self.gen.uniform(lo, hi))


class HypothesisDrawer(Drawer):
    """Draws from Hypothesis' ``st.data()`` so that failures shrink to small structures."""

    def __init__(self, data):
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def integer(self, lo, hi):
        return self.data.draw(self.st.integers(lo, hi))

    def choice(self, options):
        return self.data.draw(self.st.sampled_from(list(options)))

    def real(self, lo, hi):
        return self.data.draw(self.st.floats(lo, hi, allow_nan=False, allow_infinity=False,
                                             allow_subnormal=False))


# --- theorems ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Theorem:
    """A checkable statement.

    Arguments:
        name: ``family.name`` (the family is the proofs module).
        statement: the claim, in words and symbols.
        source: paper, section, equation (or "derivation" with where it is written down).
        conditions: what must hold for the claim (the control breaks one of them).
        draw: ``draw(drawer, xp, dtype) -> instance``.
        check, control: ``instance -> Evidence``.
        control_breaks: which condition the control breaks.
        kind: ``"theorem"`` or ``"measurement"`` (no control, no verdict).
        dtypes: dtypes in which the check is meaningful (finite differences need float64).
        slow: long-running; ``refimpl verify`` runs it with fewer instances unless ``--thorough``.
        table: README's row ``(summary, kind of check, control)`` in the theorem table (``refimpl
            verify --markdown`` prints it; default: the statement, "", ``control_breaks``).
        architectures: the network kinds the draw produces, ``("mlp",)`` or ``("mlp", "conv")`` or
            ``("conv",)``; ``()`` for a theorem about no layered network (a stochastic computation
            graph, a Runge-Kutta tableau, CorInfoMax's information quantities). A test checks it
            against the draws; README's row says "MLP and conv" for a theorem drawn on both.
        variants: the number of instances that cover every option of every
            :meth:`Drawer.variant` the draw asks for (the longest option list); ``refimpl verify``
            runs at least this many instances, so each rule kind / mode is checked in every run.
    """

    name: str
    statement: str
    source: str
    conditions: str
    draw: Callable[..., Any]
    check: Callable[[Any], Evidence]
    control: Optional[Callable[[Any], Evidence]] = None
    control_breaks: str = ""
    kind: str = "theorem"
    dtypes: tuple = ("float64", "float32")
    slow: bool = False
    backends: tuple = ("numpy", "array_api_strict", "torch", "cupy")
    variants: int = 1
    table: tuple = ()
    architectures: tuple = ("mlp",)

    def __post_init__(self):
        if not isinstance(self.variants, int) or self.variants < 1:
            raise ValueError(f"{self.name}: variants: expected an integer >= 1, got {self.variants!r}")
        if "." not in self.name:
            raise ValueError(f"name: expected 'family.name', got {self.name!r}")
        if self.kind not in ("theorem", "measurement"):
            raise ValueError(f"kind: expected 'theorem' or 'measurement', got {self.kind!r}")
        if not isinstance(self.architectures, tuple) or not set(self.architectures) <= {"mlp", "conv"}:
            raise ValueError(f"{self.name}: architectures: expected a tuple of 'mlp', 'conv' (empty: no network), "
                             f"got {self.architectures!r}")
        if self.kind == "theorem" and self.control is None:
            raise ValueError(f"{self.name}: a theorem needs a control (a check with a condition broken)")

    @property
    def readme_row(self) -> tuple:
        """``(name cell, summary, kind of check, control)`` of README's theorem table."""
        name = f"`{self.name}`" + (" (slow)" if self.slow else "") + \
            (" (measurement)" if self.kind == "measurement" else "")
        summary, check, control = self.table if self.table else (self.statement, "", self.control_breaks)
        if set(self.architectures) == {"mlp", "conv"}:
            summary += " [MLP and conv nets]"
        if self.kind == "measurement" and not control:
            control = "—"
        return name, summary, check, control

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]


# --- comparisons -------------------------------------------------------------------------------

def flat(arrays) -> np.ndarray:
    """Concatenate arrays (any backend; None entries skipped) into one float64 host vector."""
    parts = [to_numpy(a).astype(np.float64).ravel() for a in arrays if a is not None]
    return np.concatenate(parts) if parts else np.zeros(0)


def relative_error(actual, expected) -> float:
    """``max|a - e| / max|e|`` (host float64); ``max|a - e|`` when ``e`` is all zero."""
    a, e = to_numpy(actual).astype(np.float64), to_numpy(expected).astype(np.float64)
    if a.shape != e.shape:
        raise ValueError(f"shape mismatch: actual {a.shape} vs expected {e.shape}")
    diff = float(np.max(np.abs(a - e))) if a.size else 0.0
    scale = float(np.max(np.abs(e))) if e.size else 0.0
    return diff / scale if scale > 0 else diff


def compare(actual: Sequence, expected: Sequence, kind: str, dtype, depth: int = 1,
            labels: Optional[Sequence[str]] = None, overrides: Optional[dict] = None) -> Evidence:
    """Pairwise comparison of arrays; holds iff every pair has ``max|a-e| <= atol + rtol * max|e|``.

    The reported error is the largest ``max|a-e| / max|e|`` over the pairs (per-array scaling, so a
    layer with small gradients is judged on its own scale).
    """
    rtol, atol = tolerance(kind, dtype, depth, overrides)
    if len(actual) != len(expected):
        raise ValueError(f"compare: {len(actual)} actual arrays vs {len(expected)} expected")
    labels = list(labels) if labels is not None else [str(i) for i in range(len(actual))]
    worst, worst_label, ok = 0.0, "", True
    for lab, a, e in zip(labels, actual, expected):
        if a is None and e is None:
            continue
        if a is None or e is None:  # one side missing an array is a mismatch, not a crash
            return Evidence(False, math.inf, rtol, f"{lab}: {'actual' if a is None else 'expected'} is None")
        an, en = to_numpy(a).astype(np.float64), to_numpy(e).astype(np.float64)
        if an.shape != en.shape:
            return Evidence(False, math.inf, rtol, f"{lab}: shape {an.shape} vs expected {en.shape}")
        if not np.all(np.isfinite(an)):
            return Evidence(False, math.inf, rtol, f"{lab}: non-finite values")
        # A NaN on the expected (oracle) side makes every comparison below False, i.e. "within
        # tolerance": it must fail here, or a broken oracle would certify anything.
        if not np.all(np.isfinite(en)):
            return Evidence(False, math.inf, rtol, f"{lab}: non-finite expected values")
        diff = float(np.max(np.abs(an - en))) if an.size else 0.0
        scale = float(np.max(np.abs(en))) if en.size else 0.0
        if diff > atol + rtol * scale:
            ok = False
        rel = diff / scale if scale > 0 else diff
        if rel >= worst:
            worst, worst_label = rel, lab
    return Evidence(ok, worst, rtol, f"worst at {worst_label}" if worst_label else "")


def order_check(diff: Callable[[float], np.ndarray], steps: Sequence[float], order: float, *,
                scale: float, dtype="float64", depth: int = 1, slope_tol: float = 0.25,
                limit_kind: str = "exact_identity", limit_factor: float = 1.0) -> Evidence:
    """Check that ``diff(s)`` (rule minus its limit, a host vector) vanishes as ``s^order``.

    1. errors ``e_k = ||diff(s_k)|| / scale`` on the geometric grid ``steps``;
    2. the least-squares slope of ``log e`` against ``log s`` must be within ``slope_tol`` of
       ``order``;
    3. the extrapolated limit ``d_0`` of the polynomial model
       ``diff(s) = d_0 + sum_{k=0}^{n-2} c_k s^(order + k)`` fitted through all ``n`` points
       (Richardson/Neville extrapolation) must vanish to rounding: ``||d_0|| / scale`` within the
       ``limit_kind`` row of the tolerance table (times ``limit_factor``, which a caller sets
       from the error amplification of its grid and states why).

    ``scale`` normalises the errors (the size of the quantity being approximated).
    """
    steps = [float(s) for s in steps]
    if len(steps) < 3:
        raise ValueError("steps: an order check needs at least 3 step sizes")
    if not all(math.isfinite(s) and s > 0 for s in steps) or len(set(steps)) != len(steps):
        raise ValueError(f"steps: expected distinct finite positive step sizes, got {steps}")
    if not math.isfinite(float(scale)):
        raise ValueError(f"scale: expected a finite number (the size of the approximated quantity), got {scale}")
    D = np.stack([np.asarray(diff(s), dtype=np.float64).ravel() for s in steps])
    if not np.all(np.isfinite(D)):
        return Evidence(False, math.inf, math.nan, "non-finite difference", None, order)
    scale = float(scale) if scale > 0 else 1.0
    errs = np.linalg.norm(D, axis=1) / scale
    logs, loge = np.log(steps), np.log(np.maximum(errs, 1e-300))
    slope = float(np.polyfit(logs, loge, 1)[0])
    n = len(steps)
    smax = max(steps)
    V = np.stack([np.ones(n)] + [(np.asarray(steps) / smax) ** (order + k) for k in range(n - 1)], axis=1)
    coef = np.linalg.solve(V, D)
    limit = float(np.linalg.norm(coef[0])) / scale
    rtol, atol = tolerance(limit_kind, dtype, depth)
    limit_tol = (rtol + atol) * limit_factor
    slope_ok = abs(slope - order) <= slope_tol
    limit_ok = limit <= limit_tol
    detail = (f"errors {', '.join(f'{e:.2e}' for e in errs)} at steps {', '.join(f'{s:.2g}' for s in steps)}; "
              f"slope {slope:.3f} (expected {order} +- {slope_tol}); extrapolated limit {limit:.2e} "
              f"(tol {limit_tol:.1e})")
    return Evidence(bool(slope_ok and limit_ok), float(errs[-1]), limit_tol, detail, slope, order)
