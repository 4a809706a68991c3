"""Forward evaluation of a graph: Monte-Carlo samples and the exact outcome table.

* :func:`sample` — seeded Monte-Carlo rows (host draws from ``backend.rng(seed)``, moved to the
  backend of theta), stochastic nodes drawn in topological order;
* :func:`enumerate_outcomes` — one row per joint outcome of the stochastic nodes with its exact
  probability weight: every outcome of every discrete node (weight ``prod p(w | parents)``) and the
  tensor-product Gauss–Hermite rule (``quadrature`` points per unit) for Gaussian nodes, so that
  ``sum_rows weight * f(row)`` is ``E[f]`` exactly for discrete graphs, and for Gaussian nodes
  exactly when ``f`` is a polynomial of degree <= 2 * quadrature - 1 in the Gaussian's noise;
* :func:`evaluate` — the rows for given values of the stochastic nodes.

Rows are the batch: every node's value is ``(B, n)``; Params stay unbatched flat vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..backend import namespace, from_numpy, rng as _rng, device_of, check_finite
from .graph import Graph, Param, Input, Deterministic, Cost, Stochastic
from . import distributions as _dist

__all__ = ["Sample", "sample", "enumerate_outcomes", "evaluate", "parent_values"]


@dataclass(frozen=True)
class Sample:
    """Values of every node on ``batch`` rows.

    ``values[name]``: ``(B, n)`` for stochastic, deterministic and cost nodes and per-row Inputs,
    the flat ``(size,)`` vector for Params and constant Inputs (:meth:`rows` broadcasts). ``weights``: ``(B,)`` exact probability weights of the rows
    (enumeration; they sum to 1) or ``None`` (Monte Carlo: rows are i.i.d. draws).
    """

    graph: Graph = field(repr=False)
    theta: object = field(repr=False)
    values: dict = field(repr=False)
    batch: int
    weights: object = field(default=None, repr=False)

    def rows(self, name: str):
        """``values[name]`` with a constant (1-d) Input or Param broadcast to ``(B, n)``."""
        v = self.values[name]
        if v.ndim == 1:
            xp = namespace(v)
            v = xp.broadcast_to(v[None, :], (self.batch, v.shape[0]))
        return v

    def cost(self, c: str):
        """The ``(B,)`` values of cost ``c``."""
        return self.values[c][:, 0]

    def total_cost(self):
        xp = namespace(self.theta)
        out = xp.zeros((self.batch,), dtype=self.theta.dtype, device=device_of(self.theta))
        for c in self.graph.costs:
            out = out + self.cost(c)
        return out


def parent_values(graph: Graph, values: dict, name: str, batch: int, broadcast: bool = True):
    """The parents' values of node ``name``; unbatched ones broadcast to ``(B, n)`` unless the op
    takes them unbatched (the affine weights)."""
    node = graph[name]
    keep = getattr(getattr(node, "op", None), "unbatched", ())
    out = []
    for i, p in enumerate(node.parents):
        v = values[p]
        if broadcast and v.ndim == 1 and i not in keep:
            xp = namespace(v)
            v = xp.broadcast_to(v[None, :], (batch, v.shape[0]))
        out.append(v)
    return out


def _forward(graph: Graph, theta, batch: int, draw):
    """Evaluate every node in topological order; ``draw(name, node, parent_values)`` gives the
    value of each stochastic node."""
    xp = graph.check_theta(theta)
    values = {}
    params = graph.unflatten(theta)
    for name in graph.order:
        node = graph[name]
        if isinstance(node, Param):
            values[name] = xp.reshape(params[name], (-1,))
        elif isinstance(node, Input):
            v = node.value
            namespace(theta, v, names=("theta", f"input {name!r}"))
            if v.dtype != theta.dtype:
                raise TypeError(f"input {name!r}: dtype {v.dtype} differs from theta's {theta.dtype}; dtypes are "
                                "never mixed silently, cast explicitly")
            if v.ndim == 2:
                if v.shape[0] != batch:
                    raise ValueError(f"{name}: a per-row input has {v.shape[0]} rows, the batch has {batch}")
                values[name] = v
            else:
                values[name] = v  # unbatched constant, broadcast where used
        elif isinstance(node, (Deterministic, Cost)):
            values[name] = node.op.value(xp, parent_values(graph, values, name, batch))
        elif isinstance(node, Stochastic):
            values[name] = draw(name, node, parent_values(graph, values, name, batch))
        else:  # pragma: no cover
            raise TypeError(f"unknown node type {type(node).__name__}")
    return values


def sample(graph: Graph, theta, seed, batch: int) -> Sample:
    """``batch`` i.i.d. Monte-Carlo rows; stochastic nodes are drawn in topological order from the
    host generator ``backend.rng(seed)`` (same numbers on every backend)."""
    if not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch: expected a positive integer, got {batch!r}")
    gen = _rng(seed)
    xp = graph.check_theta(theta)

    def draw(name, node, u):
        if isinstance(node.dist, _dist.StandardNormal):
            return from_numpy(gen.standard_normal((batch, node.size)), xp, theta.dtype, device_of(theta))
        return node.dist.sample(xp, u, gen)

    return Sample(graph, theta, _forward(graph, theta, batch, draw), batch)


def evaluate(graph: Graph, theta, stochastic_values: dict, batch: Optional[int] = None) -> Sample:
    """Rows for given values of every stochastic node (``{name: (B, n)}``), no weights. The batch
    comes from those values, else from the per-row Inputs, else ``batch`` (default 1)."""
    missing = [w for w in graph.stochastic if w not in stochastic_values]
    if missing:
        raise ValueError(f"stochastic_values: missing values of {missing}")
    per_row = [graph[i].value.shape[0] for i in graph.names(Input) if graph[i].value.ndim == 2]
    if graph.stochastic:
        B = int(stochastic_values[graph.stochastic[0]].shape[0])
    elif per_row:
        B = int(per_row[0])
    else:
        B = 1 if batch is None else int(batch)
    xp = graph.check_theta(theta)
    for w in graph.stochastic:
        v = stochastic_values[w]
        what = f"stochastic_values[{w!r}]"
        namespace(theta, v, names=("theta", what))
        if tuple(v.shape) != (B, graph[w].size):
            raise ValueError(f"{what}: expected shape ({B}, {graph[w].size}), got {tuple(v.shape)}")
        if v.dtype != theta.dtype:  # as for Inputs: dtypes are never mixed silently
            raise TypeError(f"{what}: dtype {v.dtype} differs from theta's {theta.dtype}; cast explicitly")
        check_finite(xp, v, what)
        d = graph[w].dist
        if isinstance(d, (_dist.Bernoulli, _dist.Categorical)):  # an outcome, else log p is meaningless
            binary = bool(xp.all((v == 0) | (v == 1)))
            if not binary or (isinstance(d, _dist.Categorical) and not bool(xp.all(xp.sum(v, axis=1) == 1))):
                kind = "one-hot rows" if isinstance(d, _dist.Categorical) else "values in {0, 1}"
                raise ValueError(f"{what}: expected outcomes of the {type(d).__name__} node ({kind})")
    return Sample(graph, theta, _forward(graph, theta, B, lambda name, node, u: stochastic_values[name]), B)


def n_outcomes(graph: Graph, quadrature: int = 40) -> int:
    """Number of rows of :func:`enumerate_outcomes`."""
    n = 1
    for w in graph.stochastic:
        d = graph[w].dist
        n *= (2 ** d.size) if isinstance(d, _dist.Bernoulli) else d.size if isinstance(d, _dist.Categorical) \
            else quadrature ** d.size
    return n


def enumerate_outcomes(graph: Graph, theta, quadrature: int = 40, max_rows: int = 1_000_000) -> Sample:
    """One row per joint outcome, with exact weights ``prod_w p(w | parents)`` (discrete nodes) times
    the Gauss–Hermite weights (Gaussian nodes; a score-function Gaussian's point is
    ``mu + e^s x_k``). Outcome tables are built on the host (bookkeeping, like random draws)."""
    xp = graph.check_theta(theta)
    N = n_outcomes(graph, quadrature)
    if N > max_rows:
        raise ValueError(f"enumerate_outcomes: {N} joint outcomes exceed max_rows={max_rows}; "
                         "use fewer/smaller stochastic nodes or fewer quadrature nodes")
    tables, strides = {}, {}
    stride = N
    fixed = np.ones(N)
    for w in graph.stochastic:
        pts, wts = graph[w].dist.outcome_table(quadrature)
        K = pts.shape[0]
        stride //= K
        idx = (np.arange(N) // stride) % K
        tables[w] = from_numpy(pts[idx], xp, theta.dtype, device_of(theta))
        if wts is not None:
            fixed = fixed * wts[idx]
    log_w = {}

    def draw(name, node, u):
        d, x = node.dist, tables[name]
        if isinstance(d, _dist.Gaussian):
            return u[0] + xp.exp(u[1]) * x
        if d.discrete:
            log_w[name] = d.log_prob(xp, x, u)
        return x

    values = _forward(graph, theta, N, draw)
    weights = from_numpy(fixed, xp, theta.dtype, device_of(theta))
    for lw in log_w.values():
        weights = weights * xp.exp(lw)
    return Sample(graph, theta, values, N, weights)
