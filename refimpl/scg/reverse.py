"""The reverse pass over the graph: vector-Jacobian products, node by node, back to theta.

Given cotangents ``seeds[name]`` (``(B, n)``, the derivative of a per-row scalar objective with
respect to node ``name``'s value), :func:`backward` visits the nodes in reverse topological order,
passes each deterministic node's cotangent to its parents with the op's hand-written ``vjp``, and
accumulates the cotangents that reach Params. A stochastic node's value is a sample: its cotangent
stops there (its influence on theta is carried by the score terms that the caller seeds on its
distribution's parents). Inputs are constants.

Returns the per-row gradients ``(B, P)`` (``per_sample=True``; row ``b`` is the gradient of row
``b``'s objective) or their sum over rows ``(P,)``.
"""

from __future__ import annotations

from ..backend import namespace, device_of
from .graph import Graph, Param, Deterministic, Cost
from .evaluate import Sample, parent_values

__all__ = ["backward"]


def backward(sample: Sample, seeds: dict, per_sample: bool = True):
    """Gradient of ``sum_name <seeds[name], value[name]>`` per row, w.r.t. flat theta."""
    graph, theta, B = sample.graph, sample.theta, sample.batch
    xp = namespace(theta)
    cot = {}
    for name, s in seeds.items():
        if name not in graph:
            raise ValueError(f"seeds: {name!r} is not a node of the graph")
        if tuple(s.shape) != (B, graph[name].size):
            raise ValueError(f"seeds[{name!r}]: expected shape ({B}, {graph[name].size}), got {tuple(s.shape)}")
        cot[name] = s
    for name in reversed(graph.order):
        node = graph[name]
        if name not in cot or not isinstance(node, (Deterministic, Cost)):
            continue
        u = parent_values(graph, sample.values, name, B)
        grads = node.op.vjp(xp, u, cot[name], per_sample=per_sample)
        for p, g in zip(node.parents, grads):
            if g is None:
                continue
            if not per_sample and g.ndim == 2 and isinstance(graph[p], Param):
                g = xp.sum(g, axis=0)
            cot[p] = cot[p] + g if p in cot else g
    parts = []
    for p in graph.params:
        size = graph[p].size
        g = cot.get(p)
        if g is None:
            shape = (B, size) if per_sample else (size,)
            g = xp.zeros(shape, dtype=theta.dtype, device=device_of(theta))
        elif per_sample and g.ndim == 1:  # pragma: no cover - ops return rows when per_sample
            raise RuntimeError(f"{p}: an op returned a summed cotangent in per-sample mode")
        elif not per_sample and g.ndim == 2:
            g = xp.sum(g, axis=0)
        parts.append(g)
    if not parts:
        return xp.zeros((B, 0) if per_sample else (0,), dtype=theta.dtype, device=device_of(theta))
    return xp.concat(parts, axis=-1)
