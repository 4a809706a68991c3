"""Forward sensitivities: the tangent ``delta_n = (dx_n/dx_0) delta_0`` of the discretised RK map.

Differentiating one step (the variational equation discretised by the same RK method; Hairer I,
§I.14 and §II.3):

    D_i = delta_n + h sum_{j<i} a_ij K_j,    K_i = (df/dx)(X_i, t_n + c_i h) D_i,
    delta_{n+1} = delta_n + h sum_i b_i K_i.

With the symplectic adjoint's ``lambda_n`` the pairing ``lambda_n^T delta_n`` is constant in ``n``
(spec P-C4); it is the bilinear invariant behind the exactness of the method.
"""

from __future__ import annotations

from .field import NetworkField
from .solvers import check_grid
from .tableaux import get as get_tableau

__all__ = ["tangent"]


def tangent(field: NetworkField, x0, grid, method, delta0) -> tuple:
    """``(xs, deltas)``: states and tangents at every grid time (``n = 0..N``)."""
    tab = get_tableau(method)
    field.check_state(x0)
    field.check_state(delta0, "delta0")
    ts = check_grid(grid)
    coef = tab.as_floats()
    a, b, c = coef["a"], coef["b"], coef["c"]
    live = tab.live
    xs, ds = [x0], [delta0]
    x, d = x0, delta0
    for n in range(len(ts) - 1):
        h = ts[n + 1] - ts[n]
        K, KD = {}, {}
        for i in live:
            Xi, Di = x, d
            for j in live:
                if j < i and a[i][j] != 0.0:
                    Xi = Xi + (h * a[i][j]) * K[j]
                    Di = Di + (h * a[i][j]) * KD[j]
            K[i], KD[i] = field.jvp(Xi, ts[n] + c[i] * h, Di)
        for i in live:
            if b[i] != 0.0:
                x = x + (h * b[i]) * K[i]
                d = d + (h * b[i]) * KD[i]
        xs.append(x)
        ds.append(d)
    return tuple(xs), tuple(ds)
