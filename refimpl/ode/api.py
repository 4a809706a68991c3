"""Public entry points: ``solve`` and ``gradients`` for a neural ODE whose vector field is a Network.

    traj = refimpl.ode.solve(net, x0, t1, steps, method)
    dx0, dW, db = refimpl.ode.gradients(net, x0, t1, steps, method, cotangent, mode="symplectic")

* ``net``: a :class:`refimpl.Network`; ``f(x) = net.forward(x).h[-1]`` (``sizes[0] == sizes[-1]``),
  or with ``time_dependent=True`` ``f(x, t) = net.forward([x, t]).h[-1]`` (time appended as the last
  input column, ``sizes[0] == sizes[-1] + 1``).
* ``x0``: ``(B, d)`` initial states (one sample per row); ``t1 > t0`` (``t0=0.0`` by keyword).
* ``steps``: an int ``N`` (``N`` equal steps), an increasing sequence of grid times from ``t0`` to
  ``t1`` (e.g. a recorded adaptive grid), or ``None``: adaptive step-size control with keywords
  ``rtol`` (default 1e-7) and ``atol`` (default 1e-9), for methods with an embedded pair
  (heun/adaptive_heun, bosh3, fehlberg2, dopri5, dopri8). A method with an embedded pair given
  ``steps`` runs with fixed steps.
* ``method``: a name of :mod:`refimpl.ode.tableaux` or a :class:`Tableau`.
* ``cotangent``: ``dL/dx(t1)``, a ``(B, d)`` array, or a callable ``x1 -> dL/dx(t1)`` evaluated on
  the forward solution (for a batch-mean loss it carries the ``1/B``).
* ``mode``: ``"symplectic"`` (exact, one live tape), ``"backprop"`` (exact, ``N s_eff`` live tapes;
  the reference), ``"adjoint"`` (continuous adjoint, one live tape, error ``O(h^p)``),
  ``"checkpoint"`` (ACA: exact, ``N + 1`` checkpoints and ``s_eff`` live tapes).

``gradients`` returns ``(dx0, dW, db)`` in gradient convention: exactly what autograd's ``.grad``
would be for the unrolled solver (``dW[i]`` shaped like ``net.weights[i]``). The grid, adaptive or
not, is a constant: step-size control is not differentiated. ``gradients_report`` returns the full
:class:`Gradients` record (memory report, optional adjoint trajectory).
"""

from __future__ import annotations

import math
import numbers

from ..network import Network
from .adjoint import grad_adjoint
from .backprop import grad_backprop
from .checkpoint import grad_checkpoint
from .field import NetworkField
from .memory import Ledger
from .result import Gradients
from .solvers import Trajectory, check_grid, solve_adaptive, solve_grid, uniform_grid
from .symplectic import grad_symplectic
from .tableaux import get as get_tableau

__all__ = ["solve", "gradients", "gradients_report", "MODES"]

MODES = ("symplectic", "backprop", "adjoint", "checkpoint")


def _grid(t0, t1, steps):
    if steps is None:
        return None
    if isinstance(steps, bool):
        raise TypeError("steps: expected an int, a sequence of grid times or None, got a bool")
    if isinstance(steps, numbers.Integral):  # numpy integers too (e.g. a step count read from an array)
        return uniform_grid(t0, t1, int(steps))
    if isinstance(steps, (str, bytes)):
        raise TypeError(f"steps: expected an int, a sequence of grid times or None, got {type(steps).__name__}")
    try:
        ts = check_grid(list(steps))
    except TypeError as exc:
        raise TypeError(f"steps: expected an int, a sequence of grid times or None, got {type(steps).__name__}") from exc
    if ts[0] != float(t0) or ts[-1] != float(t1):
        raise ValueError(f"steps: an explicit grid must run from t0 = {t0} to t1 = {t1}, got {ts[0]} ... {ts[-1]}")
    return ts


def _check_times(t0, t1):
    for nm, v in (("t0", t0), ("t1", t1)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"{nm}: expected a finite number, got {v!r}")
    if not t1 > t0:
        raise ValueError(f"t1: expected t1 > t0 = {t0} (time runs forward), got {t1}")


def solve(net: Network, x0, t1: float, steps, method, *, t0: float = 0.0, time_dependent: bool = False,
          rtol: float = 1e-7, atol: float = 1e-9) -> Trajectory:
    """Integrate ``dx/dt = f(x, t)`` from ``t0`` to ``t1``; returns the :class:`Trajectory`
    (``traj.x1`` the final state, ``traj.ts`` the grid, recorded when adaptive)."""
    _check_times(t0, t1)
    field = NetworkField(net, time_dependent)
    tab = get_tableau(method)
    ts = _grid(t0, t1, steps)
    if ts is None:
        traj = solve_adaptive(field, x0, t0, t1, tab, rtol=rtol, atol=atol)
    else:
        traj = solve_grid(field, x0, ts, tab)
    _check_finite(field, (traj.x1,), f"solve ({tab.name}, {traj.steps} steps)")
    return traj


def gradients_report(net: Network, x0, t1: float, steps, method, cotangent, mode: str = "symplectic", *,
                     t0: float = 0.0, time_dependent: bool = False, rtol: float = 1e-7, atol: float = 1e-9,
                     record: bool = False) -> Gradients:
    """As :func:`gradients`, returning the :class:`Gradients` record (with the memory report and,
    when ``record=True``, the adjoint states ``lambdas[n]`` at the grid times)."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    _check_times(t0, t1)
    field = NetworkField(net, time_dependent)
    field.check_state(x0)
    tab = get_tableau(method)
    ts = _grid(t0, t1, steps)
    traj = None
    if ts is None:  # adaptive: record the accepted grid, then treat it as constant
        traj = solve_adaptive(field, x0, t0, t1, tab, rtol=rtol, atol=atol)
        ts = traj.ts
    if callable(cotangent):
        x1 = traj.x1 if traj is not None else solve_grid(field, x0, ts, tab).x1
        cot = cotangent(x1)
    else:
        cot = cotangent
    field.check_cotangent(cot, x0)
    ledger = Ledger(mode)
    if mode == "backprop":
        g = grad_backprop(field, x0, ts, tab, cot, ledger=ledger, record=record)
    elif mode == "symplectic":
        g = grad_symplectic(field, x0, ts, tab, cot, ledger=ledger, record=record,
                            trajectory=None if traj is None else traj.xs)
    elif mode == "checkpoint":
        g = grad_checkpoint(field, x0, ts, tab, cot, ledger=ledger, record=record,
                            trajectory=None if traj is None else traj.xs)
    else:
        g = grad_adjoint(field, x0, ts, tab, cot, ledger=ledger, record=record,
                         x1=None if traj is None else traj.x1)
    _check_finite(field, (g.dx0,) + tuple(g.dW) + tuple(g.db), f"gradients (mode={mode!r}, {len(ts) - 1} steps)")
    return g


def _check_finite(field, arrays, what):
    """Overflow in the solution or the adjoint must not come back as inf/nan gradients silently."""
    xp = field.net.xp
    if not all(bool(xp.all(xp.isfinite(v))) for v in arrays):
        raise FloatingPointError(f"{what}: non-finite values (the solution or the adjoint overflowed); "
                                 f"shorten the interval, take more steps or rescale the field")


def gradients(net: Network, x0, t1: float, steps, method, cotangent, mode: str = "symplectic", *,
              t0: float = 0.0, time_dependent: bool = False, rtol: float = 1e-7, atol: float = 1e-9):
    """``(dx0, dW, db)``: the gradient of ``L(x(t1))`` with ``dL/dx(t1) = cotangent`` (see the module
    docstring for every argument)."""
    return gradients_report(net, x0, t1, steps, method, cotangent, mode, t0=t0,
                            time_dependent=time_dependent, rtol=rtol, atol=atol).as_tuple()
