"""The surrogate loss of Schulman, Heess, Weber & Abbeel (2015), section 4 (Corollary 1).

    L(theta, S) = sum_{w in S} log p(w | DEPS_w) (Q_w - b_w) + sum_{c in C} c(DEPS_c),

with ``Q_w = sum_{c ≻ w} c`` the sampled costs *downstream* of ``w`` and the baseline ``b_w`` held
constant. Its gradient on one row (theta only through deterministic paths; samples held fixed),

    grad L = sum_w grad log p(w | DEPS_w) (Q_w - b_w) + sum_c grad c(DEPS_c),

is an unbiased estimate of ``grad E[sum_c c]`` (Theorem 1). Costs are minimised (gradient
convention: ``theta <- theta - lr * grad`` descends); a reward ``r`` enters as the cost ``-r``.

Computed with one reverse pass (:mod:`refimpl.scg.reverse`): cost nodes are seeded with 1, the
parents of each stochastic node with ``(Q_w - b_w) d log p / d parent``. ``cost_scope="all"`` puts
the total cost in every ``Q_w`` (spec P-D3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..backend import namespace, device_of
from .evaluate import Sample, parent_values
from .graph import Param, Input, Stochastic
from .reverse import backward
from .baselines import validate_baseline

__all__ = ["Surrogate", "surrogate", "surrogate_hessian", "score_seeds"]


@dataclass(frozen=True)
class Surrogate:
    """``value`` (B,) per-row surrogate; ``grad`` (P,) its batch mean's gradient; ``per_sample``
    (B, P) per-row gradients (``None`` if not asked); ``record``: ``costs``, ``Q``, ``baseline``,
    ``log_prob`` ({w: (B,)}), ``score`` ({w: (B, P)} grad log p(w | DEPS_w)), ``pathwise``
    ({c: (B, P)} grad c along deterministic paths), ``deps``, ``downstream_costs``."""

    value: object
    grad: object
    per_sample: object
    record: dict = field(repr=False)


def _costs(sample):
    return {c: sample.cost(c) for c in sample.graph.costs}


def require_costs(graph, what: str) -> None:
    """ValueError when ``graph`` has no Cost node: ``E[sum_c c]`` is then empty and every estimator
    would return a gradient of exactly 0 that looks like a result."""
    if not graph.costs:
        raise ValueError(f"graph: {what} needs at least one Cost node (the objective is E[sum of costs]); "
                         "this graph has none")


def q_values(sample: Sample, cost_scope: str = "downstream") -> dict:
    """``{w: Q_w (B,)}``: the sampled costs downstream of ``w`` (or all costs)."""
    if cost_scope not in ("downstream", "all"):
        raise ValueError(f"cost_scope: expected 'downstream' or 'all', got {cost_scope!r}")
    graph = sample.graph
    xp = namespace(sample.theta)
    costs = _costs(sample)
    out = {}
    for w in graph.stochastic:
        scope = graph.downstream_costs(w) if cost_scope == "downstream" else graph.costs
        q = xp.zeros((sample.batch,), dtype=sample.theta.dtype, device=device_of(sample.theta))
        for c in scope:
            q = q + costs[c]
        out[w] = q
    return out


def score_seeds(sample: Sample, weights: dict) -> dict:
    """Cotangents on the distributions' parents for ``sum_w weights[w] * log p(w | parents)``."""
    graph, B = sample.graph, sample.batch
    xp = namespace(sample.theta)
    seeds = {}
    for w, a in weights.items():
        node = graph[w]
        u = parent_values(graph, sample.values, w, B)
        for p, g in zip(node.parents, node.dist.first(xp, sample.values[w], u)):
            if isinstance(graph[p], (Input, Stochastic)):
                continue
            t = a[:, None] * g[:, 0, :]
            seeds[p] = seeds[p] + t if p in seeds else t
    return seeds


def _add(seeds, more):
    out = dict(seeds)
    for k, v in more.items():
        out[k] = out[k] + v if k in out else v
    return out


def _baseline_values(sample, baselines):
    graph = sample.graph
    xp = namespace(sample.theta)
    out = {}
    for w in graph.stochastic:
        b = (baselines or {}).get(w)
        if b is None:
            out[w] = xp.zeros((sample.batch,), dtype=sample.theta.dtype, device=device_of(sample.theta))
        else:
            validate_baseline(graph, w, b)
            out[w] = b.value(sample)
    for w in (baselines or {}):
        if w not in graph.stochastic:
            raise ValueError(f"baselines: {w!r} is not a stochastic node of the graph")
    return out


def surrogate(sample: Sample, baselines: dict | None = None, cost_scope: str = "downstream",
              record: bool = True, per_sample: bool = True, score_terms: bool = True) -> Surrogate:
    """The surrogate loss on ``sample``'s rows and its gradient (see the module docstring).

    Arguments:
        baselines: ``{stochastic node: Baseline}`` (missing nodes: no baseline).
        cost_scope: ``"downstream"`` (the paper's rule) or ``"all"`` (total cost in every Q_w).
        record: also return each node's score ``grad log p`` and each cost's pathwise gradient
            (one extra reverse pass per stochastic node and per cost).
        per_sample: keep the per-row gradients (B, P) (needed for variances).
        score_terms: ``False`` drops the score terms (the pathwise-only estimator, biased whenever
            theta reaches a distribution; kept for the controls of the theorems).
    """
    graph = sample.graph
    require_costs(graph, "surrogate")
    xp = namespace(sample.theta)
    B = sample.batch
    costs = _costs(sample)
    Q = q_values(sample, cost_scope)
    b = _baseline_values(sample, baselines)
    adv = {w: Q[w] - b[w] for w in graph.stochastic}
    lp = {w: graph[w].dist.log_prob(xp, sample.values[w], parent_values(graph, sample.values, w, B))
          for w in graph.stochastic}
    ones = xp.ones((B, 1), dtype=sample.theta.dtype, device=device_of(sample.theta))
    seeds = {c: ones for c in graph.costs}
    if score_terms:
        seeds = _add(seeds, score_seeds(sample, adv))
    g = backward(sample, seeds, per_sample=per_sample)
    grad = g if not per_sample else xp.mean(g, axis=0)
    if not per_sample:
        grad = grad / B
    value = xp.zeros((B,), dtype=sample.theta.dtype, device=device_of(sample.theta))
    for c in graph.costs:
        value = value + costs[c]
    if score_terms:
        for w in graph.stochastic:
            value = value + lp[w] * adv[w]
    rec = {"costs": costs, "Q": Q, "baseline": b, "log_prob": lp,
           "deps": {w: graph.deps(w) for w in graph.stochastic},
           "downstream_costs": {w: graph.downstream_costs(w) for w in graph.stochastic}}
    if record:
        one = xp.ones((B,), dtype=sample.theta.dtype, device=device_of(sample.theta))
        rec["score"] = {w: backward(sample, score_seeds(sample, {w: one})) for w in graph.stochastic}
        rec["pathwise"] = {c: backward(sample, {c: ones}) for c in graph.costs}
    return Surrogate(value, grad, g if per_sample else None, rec)


def surrogate_hessian(sample: Sample, baselines: dict | None = None, cost_scope: str = "downstream"):
    """Per-row Hessian of the surrogate with Q and b held constant (second-order forward mode):

        H_surr = sum_w (Q_w - b_w) hess log p(w | DEPS_w) + sum_c hess c .

    NOT an unbiased Hessian estimate when theta reaches a distribution upstream of a cost: its
    bias is ``-sum_c E[c grad tau_c grad tau_c^T + grad tau_c grad c^T + grad c grad tau_c^T]``
    (spec §1; DiCE, :func:`refimpl.scg.dice.dice`, has the missing terms). Returns (B, P, P)."""
    from .forward_mode import jets

    graph = sample.graph
    xp = namespace(sample.theta)
    jt = jets(sample, order=2)
    Q = q_values(sample, cost_scope)
    b = _baseline_values(sample, baselines)
    P = graph.n_params
    H = xp.zeros((sample.batch, P, P), dtype=sample.theta.dtype, device=device_of(sample.theta))
    for w in graph.stochastic:
        H = H + (Q[w] - b[w])[:, None, None] * jt.hess_log_prob[w]
    for c in graph.costs:
        H = H + jt.cost(c)[1]
    return H
