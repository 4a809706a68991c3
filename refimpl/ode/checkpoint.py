"""Checkpointing per step (ACA, Zhuang et al. 2020, "Adaptive checkpoint adjoint method"): exact.

Forward without tapes, keeping the ``N + 1`` checkpoints ``x_n``. Backward, ``n = N-1..0``: rerun
step ``n`` from ``x_n`` *with* tapes (``s_eff`` alive), then reverse mode through that one step
(:func:`refimpl.ode.backprop.reverse_step`). Memory: ``N + 1`` checkpoints and ``s_eff`` tapes
(Matsubara et al. 2021, Table 1, row "ACA"); the gradient is the backprop one.
"""

from __future__ import annotations

from .backprop import reverse_step
from .field import NetworkField
from .memory import Ledger
from .result import Gradients
from .solvers import rk_stages, check_grid
from .symplectic import checkpoints_or
from .tableaux import get as get_tableau

__all__ = ["grad_checkpoint"]


def grad_checkpoint(field: NetworkField, x0, grid, method, cotangent, *, ledger: Ledger | None = None,
                    record: bool = False, trajectory=None) -> Gradients:
    """ACA ``(dL/dx0, dL/dW, dL/db)`` for ``dL/dx(t_N) = cotangent``."""
    tab = get_tableau(method)
    field.check_state(x0)
    ts = check_grid(grid)
    field.check_cotangent(cotangent, x0)
    ledger = ledger if ledger is not None else Ledger("checkpoint")
    coef = tab.as_floats()
    live = tab.live
    xs = checkpoints_or(trajectory, field, x0, ts, coef, live, ledger)
    xbar, dW, db = cotangent, None, None
    lambdas = [xbar] if record else None
    for n in range(len(ts) - 2, -1, -1):
        h = ts[n + 1] - ts[n]
        step = {}

        def evaluate(X, t, step=step):
            tp = field.tape(X, t)
            ledger.open(tp)
            step[len(step)] = tp
            return tp.out

        rk_stages(field, xs[n], ts[n], h, coef, live, evaluate)
        tapes = {i: step[k] for k, i in enumerate(live)}
        xbar, dW, db = reverse_step(field, tapes, h, coef, live, xbar, dW, db, ledger)
        if record:
            lambdas.append(xbar)
    return Gradients(xbar, dW, db, ledger.report(), ts, tuple(reversed(lambdas)) if record else None)
