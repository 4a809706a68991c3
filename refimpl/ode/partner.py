"""The partner (adjoint) tableau of an explicit Runge-Kutta method: the symplectic adjoint's coefficients.

Source: Matsubara, Miyatake & Yaguchi, "Symplectic adjoint method for exact gradient of neural ODE
with minimal memory", NeurIPS 2021 (arXiv 2102.09750), built on Sanz-Serna (2016), "Symplectic
Runge-Kutta schemes for adjoint equations, automatic differentiation, optimal control, and more",
SIAM Review 58(1). A partitioned pair (forward ``(a, b, c)``, adjoint ``(A, B, C)``) conserves the
bilinear quantity ``lambda_n^T delta_n`` iff

    b_i A_ij + B_j a_ji - b_i B_j = 0   for all i, j,    B = b, C = c,

which for ``b_i != 0`` gives ``A_ij = b_j (1 - a_ji / b_i)``. Solved backward from ``lambda_{n+1}``
the adjoint stages are explicit (stage ``i`` reads only stages ``j > i``).

Stages with ``b_i = 0`` (midpoint's first, dopri5's second, the FSAL stages) admit no such ``A``
row. They are handled by the *unified form* (spec §1.2; equal to reverse-mode AD of one step with
``Lambda_i := kbar_i / (h w_i)``): with ``w_i = b_i`` if ``b_i != 0`` else ``1``,

    Lambda_i = [b_i != 0] lambda_{n+1} - h sum_{j>i} G_ij l_j,     G_ij = w_j a_ji / w_i,
    l_i      = -(df/dx)(X_i)^T Lambda_i,
    lambda_n = lambda_{n+1} - h sum_i w_i l_i,      thetabar += h sum_i w_i (df/dtheta)(X_i)^T Lambda_i.

For ``b_i, b_j != 0`` the coupling ``G_ij = b_j a_ji / b_i = b_j - A_ij``, i.e. the partner tableau
of the symplectic condition; the paper's code splits ``G`` into a "neu" table (columns with
``b_j != 0``) and a "bar" table (``b_j = 0``), reproduced by :meth:`Partner.neu_bar`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .tableaux import Tableau, get as get_tableau

__all__ = ["Partner", "partner", "symplectic_residual", "naive_partner_A"]


@dataclass(frozen=True)
class Partner:
    """Adjoint coefficients of a tableau, exact rationals (0-based stage indices).

    ``weight[i] = w_i``; ``carries[i] = (b_i != 0)``; ``coupling[i][j] = G_ij`` (0 for ``j <= i``);
    ``A[i]``: the partner row ``A_ij = b_j (1 - a_ji / b_i)`` for ``b_i != 0``, None for ``b_i = 0``.
    """

    tableau: Tableau
    weight: tuple
    carries: tuple
    coupling: tuple
    A: tuple

    def as_floats(self) -> dict:
        """Python-float copies of ``weight`` and ``coupling`` for computation."""
        return {"weight": tuple(float(w) for w in self.weight), "carries": self.carries,
                "coupling": tuple(tuple(float(v) for v in row) for row in self.coupling)}

    def neu_bar(self, stages=None):
        """The paper code's layout: ``(neu, bar)`` lists of rows, row ``r = 1..s-1`` for stage
        ``i = s - r`` (1-based), entries for ``j = s, s-1, ..., i+1``; ``neu`` holds ``G_ij`` where
        ``b_j != 0``, ``bar`` where ``b_j = 0``. ``stages`` truncates to the first ``stages`` stages
        (the code drops a trailing FSAL stage)."""
        s = self.tableau.stages if stages is None else stages
        b = self.tableau.b
        neu, bar = [], []
        for r in range(1, s):
            i = s - r - 1  # 0-based
            nrow, brow = [], []
            for j in range(s - 1, i, -1):
                g = self.coupling[i][j]
                nrow.append(g if b[j] != 0 else Fraction(0))
                brow.append(g if b[j] == 0 else Fraction(0))
            neu.append(nrow)
            bar.append(brow)
        return neu, bar


def partner(method) -> Partner:
    """The :class:`Partner` of a tableau (or method name), in exact rational arithmetic."""
    tab = get_tableau(method)
    s, a, b = tab.stages, tab.a, tab.b
    w = tuple(bi if bi != 0 else Fraction(1) for bi in b)
    G = tuple(tuple(w[j] * a[j][i] / w[i] if j > i else Fraction(0) for j in range(s)) for i in range(s))
    A = tuple(tuple(b[j] * (1 - a[j][i] / b[i]) for j in range(s)) if b[i] != 0 else None for i in range(s))
    return Partner(tab, w, tuple(bi != 0 for bi in b), G, A)


def symplectic_residual(method, A=None) -> tuple:
    """``R_ij = b_i A_ij + b_j a_ji - b_i b_j`` (exact) for every row ``i`` with ``b_i != 0``.

    ``A`` defaults to the partner of :func:`partner`; rows with ``b_i = 0`` are returned as None (the
    condition has no solution there, see the module docstring). The pair conserves the bilinear
    invariant iff every entry is 0.
    """
    tab = get_tableau(method)
    s, a, b = tab.stages, tab.a, tab.b
    if A is None:
        A = partner(tab).A
    out = []
    for i in range(s):
        if b[i] == 0:
            out.append(None)
            continue
        out.append(tuple(b[i] * Fraction(A[i][j]) + b[j] * a[j][i] - b[i] * b[j] for j in range(s)))
    return tuple(out)


def naive_partner_A(method) -> tuple:
    """The forward tableau reused as its own adjoint (``A = a``): the naive, non-symplectic choice."""
    return get_tableau(method).a
