"""The continuous adjoint method (Chen et al. 2018, "Neural ordinary differential equations", §2):
optimise-then-discretise, inexact.

The augmented system

    dx/dt = f(x, t),   dlambda/dt = -(df/dx)^T lambda,   dthetabar/dt = -(df/dtheta)^T lambda,

is integrated *backward* from ``(x_N, dL/dx_N, 0)`` at ``t_N`` to ``t_0`` with the same tableau on
the reversed grid (steps ``-h``), re-integrating ``x``; then ``dL/dx0 = lambda(t_0)`` and
``dL/dtheta = thetabar(t_0)``. Each stage evaluates ``f`` with a tape and takes one vjp, so one tape
is alive at a time and no checkpoints are kept. The result differs from the gradient of the
discretised map by ``O(h^p)`` (spec P-C2): it is the control of the exactness theorem.
"""

from __future__ import annotations

from .field import NetworkField
from .memory import Ledger
from .result import Gradients, add_params
from .solvers import check_grid, rk_stages
from .tableaux import get as get_tableau

__all__ = ["grad_adjoint"]


def grad_adjoint(field: NetworkField, x0, grid, method, cotangent, *, ledger: Ledger | None = None,
                 record: bool = False, x1=None) -> Gradients:
    """Continuous-adjoint ``(dL/dx0, dL/dW, dL/db)``; ``x1`` (the forward solution at ``t_N``) is
    computed on the grid when not given."""
    tab = get_tableau(method)
    field.check_state(x0)
    ts = check_grid(grid)
    field.check_cotangent(cotangent, x0)
    ledger = ledger if ledger is not None else Ledger("adjoint")
    coef = tab.as_floats()
    a, b, c = coef["a"], coef["b"], coef["c"]
    live = tab.live
    if x1 is None:  # forward pass keeping only the current state (no checkpoints)
        x1 = x0
        for n in range(len(ts) - 1):
            h = ts[n + 1] - ts[n]
            _, K = rk_stages(field, x1, ts[n], h, coef, live, field.f)
            ledger.f(len(live))
            for i in live:
                if b[i] != 0.0:
                    x1 = x1 + (h * b[i]) * K[i]
    x, lam, th = x1, cotangent, None
    lambdas = [lam] if record else None
    for n in range(len(ts) - 2, -1, -1):
        h = -(ts[n + 1] - ts[n])          # backward step
        t = ts[n + 1]
        Kx, Kl, Kt = {}, {}, {}
        for i in live:
            Xi, Li = x, lam
            for j in live:
                if j < i and a[i][j] != 0.0:
                    Xi = Xi + (h * a[i][j]) * Kx[j]
                    Li = Li + (h * a[i][j]) * Kl[j]
            tp = field.tape(Xi, t + c[i] * h)
            ledger.open(tp)
            xbar, gW, gb = field.vjp(tp, Li)
            ledger.close(tp)
            Kx[i], Kl[i], Kt[i] = tp.out, -xbar, (gW, gb)
            tp = None  # freed before the next stage's tape is built
        for i in live:
            if b[i] != 0.0:
                x = x + (h * b[i]) * Kx[i]
                lam = lam + (h * b[i]) * Kl[i]
                # thetabar' = -(df/dtheta)^T lambda, integrated with step h < 0
                th = add_params(th, Kt[i][0] + Kt[i][1], -h * b[i])
        if record:
            lambdas.append(lam)
    L = field.net.depth
    dW, db = th[:L], th[L:]
    return Gradients(lam, dW, db, ledger.report(), ts, tuple(reversed(lambdas)) if record else None)
