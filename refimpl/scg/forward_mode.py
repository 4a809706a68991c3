"""Second-order forward mode over theta: every node carries (value, Jacobian, Hessian).

For a node ``y = f(u_0, ..., u_{k-1})`` with local derivatives ``g_i = dy/du_i`` and
``h_ij = d2y/du_i du_j`` (stated by hand in :mod:`refimpl.scg.ops` and
:mod:`refimpl.scg.distributions`), the chain rule to second order is

    J_y = sum_i g_i J_i,
    H_y = sum_i g_i . H_i + sum_{i,j} J_i^T h_ij J_j ,

per row, with ``J_i: (n_i, P)`` and ``H_i: (n_i, P, P)`` the parents' derivatives w.r.t. flat
theta. Params start with ``J = selection``, ``H = 0``; Inputs and stochastic nodes are constants
(``J = H = 0``: a sample is held fixed, as in the surrogate loss and DiCE). This gives ``grad c``,
``hess c`` of every cost along deterministic paths and ``grad log p(w | DEPS_w)``,
``hess log p(w | DEPS_w)`` of every stochastic node exactly — the quantities of the spec's §1.

Memory is ``O(B n P^2)``: this is the verification path for small theta (the spec's sizes);
first-order gradients at training size go through :mod:`refimpl.scg.reverse`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backend import namespace, device_of
from .graph import Param, Deterministic, Cost, Stochastic
from .evaluate import Sample, parent_values

__all__ = ["Jets", "jets"]


@dataclass(frozen=True)
class Jets:
    """Per-row derivatives w.r.t. flat theta: ``grad[name] (B|1, n, P)``, ``hess[name] (B|1, n, P, P)``
    for every non-Param node (``None`` where theta does not reach it deterministically), and for each stochastic node ``w``: ``log_prob[w] (B,)``,
    ``grad_log_prob[w] (B, P)``, ``hess_log_prob[w] (B, P, P)``."""

    grad: dict
    hess: dict
    log_prob: dict
    grad_log_prob: dict
    hess_log_prob: dict
    batch: int
    n_params: int
    theta: object

    def cost(self, c):
        """``(grad c (B, P), hess c (B, P, P))`` along deterministic paths (zeros where theta
        does not reach ``c``)."""
        xp = namespace(self.theta)
        B, P = self.batch, self.n_params
        g = _full(xp, self.grad[c], (B, 1, P), self.theta)[:, 0, :]
        h = _full(xp, self.hess[c], (B, 1, P, P), self.theta)[:, 0, :, :]
        return g, h


def _chain(xp, first, second, J, H, order):
    """Compose local derivatives with the parents' (J, H) (None = zero)."""
    Jy, Hy = None, None
    for i, g in enumerate(first):
        if g is None or J[i] is None:
            continue
        t = xp.matmul(g, J[i])
        Jy = t if Jy is None else Jy + t
        if order >= 2 and H[i] is not None:
            Hi = H[i]
            P = Hi.shape[-1]
            t2 = xp.matmul(g, xp.reshape(Hi, (Hi.shape[0], Hi.shape[1], P * P)))
            t2 = xp.reshape(t2, (t2.shape[0], t2.shape[1], P, P))
            Hy = t2 if Hy is None else Hy + t2
    if order >= 2:
        for (i, j), h in second.items():
            if J[i] is None or J[j] is None:
                continue
            T = xp.matmul(h, J[j][:, None, :, :])
            X = xp.matmul(xp.matrix_transpose(J[i])[:, None, :, :], T)
            X = X if i == j else X + xp.matrix_transpose(X)
            Hy = X if Hy is None else Hy + X
    return Jy, Hy


def _full(xp, a, shape, like):
    if a is None:
        return xp.zeros(shape, dtype=like.dtype, device=device_of(like))
    return xp.broadcast_to(a, shape) if tuple(a.shape) != tuple(shape) else a


def jets(sample: Sample, order: int = 2) -> Jets:
    """Forward-mode first (``order=1``) or second (``order=2``) derivatives of every node."""
    if order not in (1, 2):
        raise ValueError(f"order: expected 1 or 2, got {order!r}")
    graph, theta, B = sample.graph, sample.theta, sample.batch
    xp = namespace(theta)
    P = graph.n_params
    eye = xp.eye(P, dtype=theta.dtype, device=device_of(theta))
    offs = graph.offsets()
    J, H = {}, {}
    lp, glp, hlp = {}, {}, {}
    for name in graph.order:
        node = graph[name]
        if isinstance(node, Param):
            a, b = offs[name]
            J[name], H[name] = eye[a:b, :][None, :, :], None
            continue
        if isinstance(node, (Deterministic, Cost)):
            u = parent_values(graph, sample.values, name, B)
            pj = [J.get(p) for p in node.parents]
            ph = [H.get(p) for p in node.parents]
            if all(j is None for j in pj):
                J[name], H[name] = None, None
                continue
            J[name], H[name] = _chain(xp, node.op.first(xp, u), node.op.second(xp, u) if order >= 2 else {},
                                      pj, ph, order)
            continue
        J[name], H[name] = None, None  # Inputs and samples are constants
        if isinstance(node, Stochastic):
            u = parent_values(graph, sample.values, name, B)
            w = sample.values[name]
            lp[name] = node.dist.log_prob(xp, w, u)
            pj = [J.get(p) for p in node.parents]
            ph = [H.get(p) for p in node.parents]
            j, h = _chain(xp, node.dist.first(xp, w, u), node.dist.second(xp, w, u) if order >= 2 else {},
                          pj, ph, order)
            glp[name] = _full(xp, j, (B, 1, P), theta)[:, 0, :]
            hlp[name] = _full(xp, h, (B, 1, P, P), theta)[:, 0, :, :] if order >= 2 else None
    grad = {n: J[n] for n in graph.order if not isinstance(graph[n], Param)}
    hess = {n: H[n] for n in graph.order if not isinstance(graph[n], Param)}
    return Jets(grad, hess, lp, glp, hlp, B, P, theta)
