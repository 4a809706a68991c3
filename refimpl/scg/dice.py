"""DiCE, the infinitely differentiable Monte-Carlo estimator (Foerster et al. 2018, eq. 2-4).

Magic box ``⊡(W) = exp(tau - stop_grad(tau))``, ``tau = sum_{w in W} log p(w | DEPS_w)``; it
evaluates to 1 and ``grad ⊡ = ⊡ grad tau``. The objective ``sum_c ⊡(W_c) c`` with ``W_c`` the
stochastic nodes that influence ``c`` has, per row (spec §1, derived):

    grad  (⊡ c) = c grad tau_c + grad c ,
    hess  (⊡ c) = c (grad tau_c grad tau_c^T + hess tau_c) + grad tau_c grad c^T
                  + grad c grad tau_c^T + hess c ,

and their expectations are the exact gradient and Hessian of ``E[sum_c c]``. The first-order
estimate equals the surrogate gradient without baselines (``sum_c c grad tau_c = sum_w Q_w grad
log p(w)``). Derivatives of ``c`` and ``tau_c`` along deterministic paths come from
:mod:`refimpl.scg.forward_mode` (order 2) or the reverse pass (order 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..backend import namespace, device_of
from .evaluate import Sample
from .reverse import backward
from .surrogate import score_seeds

__all__ = ["DiCE", "dice"]


@dataclass(frozen=True)
class DiCE:
    """``value`` (B,) = sum_c c (the magic boxes evaluate to 1); ``grad`` (P,) and ``hessian``
    (P, P) batch means; ``per_sample`` (B, P), ``per_sample_hessian`` (B, P, P) (order 2);
    ``record``: ``tau`` {c: (B,)}, ``W`` {c: W_c}, and at order 2 ``grad_tau``, ``grad_cost``."""

    value: object
    grad: object
    per_sample: object
    hessian: object = None
    per_sample_hessian: object = None
    record: dict = field(default_factory=dict, repr=False)


def dice(sample: Sample, order: int = 1) -> DiCE:
    """The DiCE objective's value, gradient and (``order=2``) Hessian on ``sample``'s rows."""
    if order not in (1, 2):
        raise ValueError(f"order: expected 1 or 2, got {order!r}")
    graph, B = sample.graph, sample.batch
    from .surrogate import require_costs

    require_costs(graph, "dice")
    xp = namespace(sample.theta)
    dt, dev = sample.theta.dtype, device_of(sample.theta)
    costs = {c: sample.cost(c) for c in graph.costs}
    W = {c: graph.upstream_stochastic(c) for c in graph.costs}
    value = xp.zeros((B,), dtype=dt, device=dev)
    for c in graph.costs:
        value = value + costs[c]
    rec = {"W": W}
    if order == 1:
        from .evaluate import parent_values

        tau = {}
        for c in graph.costs:
            t = xp.zeros((B,), dtype=dt, device=dev)
            for w in W[c]:
                t = t + graph[w].dist.log_prob(xp, sample.values[w], parent_values(graph, sample.values, w, B))
            tau[c] = t
        rec["tau"] = tau
        ones = xp.ones((B, 1), dtype=dt, device=dev)
        seeds = {c: ones for c in graph.costs}
        for c in graph.costs:  # c * grad tau_c: seed each log p(w), w in W_c, with c
            for p, s in score_seeds(sample, {w: costs[c] for w in W[c]}).items():
                seeds[p] = seeds[p] + s if p in seeds else s
        g = backward(sample, seeds)
        return DiCE(value, xp.mean(g, axis=0), g, record=rec)

    from .forward_mode import jets

    jt = jets(sample, order=2)
    P = graph.n_params
    G = xp.zeros((B, P), dtype=dt, device=dev)
    H = xp.zeros((B, P, P), dtype=dt, device=dev)
    tau, gtau, gcost = {}, {}, {}
    for c in graph.costs:
        t = xp.zeros((B,), dtype=dt, device=dev)
        gt = xp.zeros((B, P), dtype=dt, device=dev)
        ht = xp.zeros((B, P, P), dtype=dt, device=dev)
        for w in W[c]:
            t, gt, ht = t + jt.log_prob[w], gt + jt.grad_log_prob[w], ht + jt.hess_log_prob[w]
        gc, hc = jt.cost(c)
        cc = costs[c]
        G = G + cc[:, None] * gt + gc
        outer = gt[:, :, None] * gc[:, None, :]
        H = H + cc[:, None, None] * (gt[:, :, None] * gt[:, None, :] + ht) + outer \
            + xp.matrix_transpose(outer) + hc
        tau[c], gtau[c], gcost[c] = t, gt, gc
    rec.update(tau=tau, grad_tau=gtau, grad_cost=gcost)
    return DiCE(value, xp.mean(G, axis=0), G, xp.mean(H, axis=0), H, rec)
