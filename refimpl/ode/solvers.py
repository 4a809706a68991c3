"""Explicit Runge-Kutta integration on a fixed grid or with step-size control (accepted grid recorded).

One step of ``(a, b, c)`` from ``(x_n, t_n)`` with ``h = t_{n+1} - t_n`` (Hairer, Norsett & Wanner I, §II.1):

    X_i = x_n + h sum_{j<i} a_ij k_j,   k_i = f(X_i, t_n + c_i h),   x_{n+1} = x_n + h sum_i b_i k_i.

On a given grid only the live stages are evaluated (:attr:`Tableau.live`: a trailing FSAL stage
does not change ``x_{n+1}``). The adaptive solver (Hairer I, §II.4) evaluates every stage, estimates
the local error ``e = h sum_i (b_i - b_err_i) k_i``, accepts the step when
``rms(e / (atol + rtol max(|x_n|, |x_{n+1}|))) <= 1`` and changes ``h`` by
``min(10, max(0.2, 0.9 rms^(-1/(q+1))))`` with ``q = min(order, err_order)``. The accepted grid is
recorded in the :class:`Trajectory`; every gradient method treats it as constant (the step-size
controller is not differentiated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from ..backend import namespace
from .field import NetworkField
from .tableaux import Tableau, get as get_tableau

__all__ = ["Trajectory", "uniform_grid", "check_grid", "rk_stages", "solve_grid", "solve_adaptive"]


@dataclass(frozen=True)
class Trajectory:
    """States ``xs[n]`` at grid times ``ts[n]`` (``n = 0..N``), the method, step and evaluation counts."""

    ts: tuple
    xs: tuple
    method: str
    rejected: int = 0
    f_evals: int = 0

    @property
    def x1(self):
        """The final state ``x(t1)``."""
        return self.xs[-1]

    @property
    def steps(self) -> int:
        return len(self.ts) - 1


def uniform_grid(t0: float, t1: float, steps: int) -> tuple:
    """``steps + 1`` equally spaced times from ``t0`` to ``t1`` (both exact)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive int (number of fixed steps), got {steps!r}")
    t0, t1 = float(t0), float(t1)
    return tuple([t0] + [t0 + (t1 - t0) * n / steps for n in range(1, steps)] + [t1])


def check_grid(grid: Sequence[float], name: str = "steps") -> tuple:
    """Validate an explicit grid: at least two finite, strictly increasing times."""
    ts = tuple(float(t) for t in grid)
    if len(ts) < 2:
        raise ValueError(f"{name}: expected at least two grid times, got {len(ts)}")
    if not all(math.isfinite(t) for t in ts):
        raise ValueError(f"{name}: expected finite grid times")
    if any(b <= a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"{name}: expected strictly increasing grid times (t0 < t1 < ...), got {ts[:6]}...")
    return ts


def rk_stages(field: NetworkField, x, t: float, h: float, coef: dict, stages: Sequence[int], evaluate):
    """Stage states and slopes of one step: ``(X, K)`` dicts over ``stages`` (0-based).

    ``evaluate(X_i, t_i) -> k_i`` (plain ``field.f``, or a function that also records a tape).
    """
    a, c = coef["a"], coef["c"]
    X, K = {}, {}
    for i in stages:
        Xi = x
        for j in stages:
            if j < i and a[i][j] != 0.0:
                Xi = Xi + (h * a[i][j]) * K[j]
        X[i] = Xi
        K[i] = evaluate(Xi, t + c[i] * h)
    return X, K


def _combine(x, h, weights, K):
    out = x
    for i, k in K.items():
        if weights[i] != 0.0:
            out = out + (h * weights[i]) * k
    return out


def solve_grid(field: NetworkField, x0, grid: Sequence[float], method) -> Trajectory:
    """Integrate on the given grid (every interval one step of ``method``)."""
    tab = get_tableau(method)
    field.check_state(x0)
    ts = check_grid(grid)
    coef = tab.as_floats()
    live = tab.live
    xs = [x0]
    for n in range(len(ts) - 1):
        h = ts[n + 1] - ts[n]
        _, K = rk_stages(field, xs[-1], ts[n], h, coef, live, field.f)
        xs.append(_combine(xs[-1], h, coef["b"], K))
    return Trajectory(ts, tuple(xs), tab.name, 0, (len(ts) - 1) * len(live))


def _rms(xp, v) -> float:
    return math.sqrt(float(xp.mean(v * v)))


def solve_adaptive(field: NetworkField, x0, t0: float, t1: float, method, rtol: float = 1e-7,
                   atol: float = 1e-9, h0: Optional[float] = None, max_steps: int = 100_000) -> Trajectory:
    """Integrate from ``t0`` to ``t1`` with step-size control; the accepted grid is recorded.

    Initial step (``h0=None``): Hairer I, §II.4 "starting step size". Raises ``RuntimeError`` after
    ``max_steps`` attempted steps.
    """
    tab = get_tableau(method)
    if not tab.adaptive:
        raise ValueError(f"method: {tab.name!r} has no embedded pair; give steps (an int or a grid) "
                         f"or choose one of bosh3, dopri5, dopri8, fehlberg2, heun")
    xp = field.check_state(x0)
    t0, t1 = float(t0), float(t1)
    if not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
        raise ValueError(f"t1: expected a finite t1 > t0 = {t0}, got {t1}")
    for nm, v in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{nm}: expected a finite non-negative number, got {v!r}")
    if rtol == 0 and atol == 0:
        raise ValueError("rtol, atol: at least one must be positive")
    coef = tab.as_floats()
    b, be = coef["b"], coef["b_err"]
    q = min(tab.order, tab.err_order or tab.order)
    all_stages = tuple(range(tab.stages))
    x = x0
    f_evals = 0
    if h0 is None:
        scale = atol + rtol * xp.abs(x)
        f0 = field.f(x, t0)
        d0, d1 = _rms(xp, x / scale), _rms(xp, f0 / scale)
        hh = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
        f1 = field.f(x + hh * f0, t0 + hh)
        d2 = _rms(xp, (f1 - f0) / scale) / hh
        h1 = max(1e-6, hh * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1.0 / (tab.order + 1))
        h = min(100 * hh, h1, t1 - t0)
        f_evals += 2
    else:
        h = min(float(h0), t1 - t0)
    ts, xs, rejected, attempts = [t0], [x0], 0, 0
    t = t0
    while t < t1:
        attempts += 1
        if attempts > max_steps:
            raise RuntimeError(f"solve_adaptive: more than max_steps={max_steps} attempted steps "
                               f"(t = {t}, h = {h}); loosen rtol/atol or raise max_steps")
        last = t + h >= t1 or (t1 - (t + h)) < 1e-12 * max(1.0, abs(t1))
        t_new = t1 if last else t + h
        h = t_new - t  # the step the recorded grid reproduces exactly (ts[n+1] - ts[n])
        _, K = rk_stages(field, x, t, h, coef, all_stages, field.f)
        f_evals += len(all_stages)
        x_new = _combine(x, h, b, K)
        err = _combine(x * 0, h, tuple(bi - bei for bi, bei in zip(b, be)), K)
        scale = atol + rtol * xp.maximum(xp.abs(x), xp.abs(x_new))
        ratio = _rms(xp, err / scale)
        if not math.isfinite(ratio):
            raise FloatingPointError(f"solve_adaptive: non-finite error estimate at t = {t}, h = {h}")
        if ratio <= 1.0:
            t = t_new
            x = x_new
            ts.append(t)
            xs.append(x)
        else:
            rejected += 1
        factor = 10.0 if ratio == 0 else min(10.0, max(0.2, 0.9 * ratio ** (-1.0 / (q + 1))))
        h = h * factor
        if h < 1e-14 * max(1.0, abs(t)):
            raise RuntimeError(f"solve_adaptive: step size underflow at t = {t}")
    return Trajectory(tuple(ts), tuple(xs), tab.name, rejected, f_evals)
