"""The symplectic adjoint method: exact gradient of the discretised map with one live tape.

Source: Matsubara, Miyatake & Yaguchi, NeurIPS 2021 (arXiv 2102.09750), Algorithm 1; partner
coefficients from :mod:`refimpl.ode.partner` (unified form for stages with ``b_i = 0``).

1. Forward without tapes, keeping the checkpoints ``x_n`` (``N + 1`` states).
2. Backward, ``n = N-1..0``: recompute the stage states ``X_{n,i}`` from ``x_n`` (no tapes; ``s_eff``
   states held), then for ``i = s..1`` one fresh tape at ``X_{n,i}`` and its vjp:

       Lambda_i = [b_i != 0] lambda_{n+1} - h sum_{j>i} G_ij l_j,     l_i = -(df/dx)(X_i)^T Lambda_i,
       thetabar += h w_i (df/dtheta)(X_i)^T Lambda_i,
       lambda_n = lambda_{n+1} - h sum_i w_i l_i,          lambda_N = dL/dx_N.

   The tape is freed right after its vjp, so at most one is alive.

``lambda_n = dL/dx_n`` of the discretised forward map exactly (the pair conserves ``lambda^T delta``),
so the result equals backprop through the solver up to rounding.
"""

from __future__ import annotations

from .field import NetworkField
from .memory import Ledger
from .partner import partner as make_partner
from .result import Gradients, add_params
from .solvers import rk_stages, check_grid
from .tableaux import get as get_tableau

__all__ = ["grad_symplectic", "checkpoints", "checkpoints_or"]


def checkpoints(field: NetworkField, x0, ts, coef, live, ledger: Ledger) -> list:
    """Forward pass without tapes; returns ``[x_0, ..., x_N]``."""
    xs = [x0]
    b = coef["b"]

    def evaluate(X, t):
        ledger.f()
        return field.f(X, t)

    for n in range(len(ts) - 1):
        h = ts[n + 1] - ts[n]
        _, K = rk_stages(field, xs[-1], ts[n], h, coef, live, evaluate)
        x = xs[-1]
        for i in live:
            if b[i] != 0.0:
                x = x + (h * b[i]) * K[i]
        xs.append(x)
    ledger.checkpoints = len(xs)
    return xs


def checkpoints_or(trajectory, field: NetworkField, x0, ts, coef, live, ledger: Ledger) -> list:
    """The checkpoints ``[x_0, ..., x_N]``: a given ``trajectory`` (validated: one state per grid
    time) or, if None, recomputed by :func:`checkpoints`."""
    if trajectory is None:
        return checkpoints(field, x0, ts, coef, live, ledger)
    xs = list(trajectory)
    if len(xs) != len(ts):
        raise ValueError(f"trajectory: expected {len(ts)} checkpoints (one per grid time), got {len(xs)}")
    ledger.checkpoints = len(xs)
    return xs


def grad_symplectic(field: NetworkField, x0, grid, method, cotangent, *, ledger: Ledger | None = None,
                    record: bool = False, trajectory=None, coefficients: dict | None = None) -> Gradients:
    """Symplectic-adjoint ``(dL/dx0, dL/dW, dL/db)`` for ``dL/dx(t_N) = cotangent``.

    ``trajectory``: checkpoints already computed on this grid (e.g. by an adaptive solve); the
    forward pass is then skipped. ``coefficients``: replaces the partner's ``{"weight", "carries",
    "coupling"}`` (floats; for experiments and negative controls only).
    """
    tab = get_tableau(method)
    field.check_state(x0)
    ts = check_grid(grid)
    field.check_cotangent(cotangent, x0)
    ledger = ledger if ledger is not None else Ledger("symplectic")
    coef = tab.as_floats()
    a = coef["a"]
    pf = make_partner(tab).as_floats() if coefficients is None else coefficients
    w, carries, G = pf["weight"], pf["carries"], pf["coupling"]
    live = tab.live
    xs = checkpoints_or(trajectory, field, x0, ts, coef, live, ledger)
    ledger.stage_states = len(live)
    lam, dW, db = cotangent, None, None
    lambdas = [lam] if record else None
    # stages needed to rebuild the stage states: all live stages but the last
    rebuild = live[:-1]
    for n in range(len(ts) - 2, -1, -1):
        h = ts[n + 1] - ts[n]

        def evaluate(X, t):
            ledger.f()
            return field.f(X, t)

        X, K = rk_stages(field, xs[n], ts[n], h, coef, rebuild, evaluate)
        # the last live stage's state needs the slopes of the earlier ones only
        last = live[-1]
        Xl = xs[n]
        for j in rebuild:
            if a[last][j] != 0.0:
                Xl = Xl + (h * a[last][j]) * K[j]
        X[last] = Xl
        K = None  # the slopes are not needed any more: only the s_eff stage states stay alive
        l = {}
        for i in reversed(live):
            Lam = lam if carries[i] else None
            for j in live:
                if j > i and G[i][j] != 0.0:
                    term = (-h * G[i][j]) * l[j]
                    Lam = term if Lam is None else Lam + term
            if Lam is None:  # only with custom coefficients: a stage that receives no adjoint
                Lam = lam * 0.0
            tp = field.tape(X[i], ts[n] + coef["c"][i] * h)
            ledger.open(tp)
            xbar, gW, gb = field.vjp(tp, Lam)
            ledger.close(tp)
            tp = None  # freed before the next stage's tape is built: one tape alive at a time
            l[i] = -xbar
            dW, db = add_params(dW, gW, h * w[i]), add_params(db, gb, h * w[i])
        for i in live:
            lam = lam - (h * w[i]) * l[i]
        if record:
            lambdas.append(lam)
    return Gradients(lam, dW, db, ledger.report(), ts, tuple(reversed(lambdas)) if record else None)
