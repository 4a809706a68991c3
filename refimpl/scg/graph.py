"""The stochastic computation graph (Schulman, Heess, Weber & Abbeel 2015, section 2).

A DAG of named nodes added in topological order:

* :class:`Param` — a parameter (part of theta; flat, with a ``shape`` for users);
* :class:`Input` — a constant (``(n,)`` for every row, or ``(B, n)`` per row);
* :class:`Deterministic` — a function of its parents through an op of :mod:`refimpl.scg.ops`;
* :class:`Stochastic` — a sample from ``p(w | parents)`` (:mod:`refimpl.scg.distributions`);
* :class:`Cost` — a deterministic scalar per row (width 1), minimised in expectation.

theta is the concatenation of all Params in the order they were added (a flat vector of length
``graph.n_params``). Relations of section 2 of the paper: ``influences(v, w)`` (v ≺ w: a directed
path), ``det_influences(v, w)`` (v ≺^D w: a path whose intermediate nodes are all deterministic),
``deps(w)`` (DEPS_w: params, inputs and stochastic nodes that deterministically influence w) and
``downstream_costs(w)`` ({c ≻ w}).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..backend import resolve_namespace, resolve_dtype, rng as _rng, from_numpy, namespace
from . import ops as _ops
from . import distributions as _dist

__all__ = ["Graph", "Param", "Input", "Deterministic", "Stochastic", "Cost"]


@dataclass(frozen=True)
class Param:
    name: str
    shape: tuple
    init_std: float = 1.0
    init_value: Optional[np.ndarray] = field(default=None, compare=False, repr=False)
    parents: tuple = ()

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))


@dataclass(frozen=True)
class Input:
    name: str
    value: object = field(repr=False)
    parents: tuple = ()

    @property
    def size(self) -> int:
        return int(self.value.shape[-1])


@dataclass(frozen=True)
class Deterministic:
    name: str
    parents: tuple
    op: _ops.Op
    size: int = 0


@dataclass(frozen=True)
class Cost:
    """A cost: ``op`` (default: the sum of every unit of every parent) must have width 1."""

    name: str
    parents: tuple
    op: _ops.Op = _ops.SumAll()
    size: int = 1


@dataclass(frozen=True)
class Stochastic:
    name: str
    parents: tuple
    dist: object
    size: int = 0


_DET = (Deterministic, Cost)


class Graph:
    """A stochastic computation graph, built node by node in topological order.

    Example (REINFORCE on a categorical policy, cost = -reward)::

        g = Graph()
        g.param("logits", (4,))
        g.categorical("a", logits="logits")
        g.input("neg_reward", -r)                          # r: (4,)
        g.deterministic("ra", ["a", "neg_reward"], ops.Product())
        g.cost("c", ["ra"])
    """

    def __init__(self):
        self._nodes: dict = {}
        self._order: list = []
        self._children = None  # cache of the child lists, rebuilt after every _add

    # --- construction ----------------------------------------------------------------------

    def _add(self, node):
        if not isinstance(node.name, str) or not node.name:
            raise ValueError(f"name: expected a non-empty string, got {node.name!r}")
        if node.name in self._nodes:
            raise ValueError(f"name: a node called {node.name!r} exists already")
        for p in node.parents:
            if p not in self._nodes:
                raise ValueError(f"{node.name}: parent {p!r} is not in the graph (add nodes in topological order)")
        self._nodes[node.name] = node
        self._order.append(node.name)
        self._children = None
        return node.name

    def param(self, name: str, shape, init_std: float = 1.0, init_value=None) -> str:
        """A parameter of ``shape`` (drawn ``N(0, init_std^2)`` by :meth:`init_theta` unless
        ``init_value`` (host array) is given)."""
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"{name}: expected a non-empty shape of positive sizes, got {shape}")
        if init_value is not None:
            init_value = np.asarray(init_value, dtype=np.float64)
            if init_value.shape != shape:
                raise ValueError(f"{name}: init_value has shape {init_value.shape}, expected {shape}")
        return self._add(Param(name, shape, float(init_std), init_value))

    def input(self, name: str, value) -> str:
        """A constant: ``value`` of shape ``(n,)`` (every row) or ``(B, n)`` (one per row)."""
        if getattr(value, "ndim", None) not in (1, 2):
            raise ValueError(f"{name}: expected an array of shape (n,) or (B, n), got {getattr(value, 'shape', value)!r}")
        xp = namespace(value)
        if not bool(xp.all(xp.isfinite(value))):
            raise ValueError(f"{name}: expected finite values")
        return self._add(Input(name, value))

    def deterministic(self, name: str, parents: Sequence[str], op: _ops.Op) -> str:
        parents = tuple(parents)
        self._check_parents(name, parents)
        for i in getattr(op, "unbatched", ()):
            if i < len(parents):
                p = self._nodes[parents[i]]
                if not (isinstance(p, Param) or (isinstance(p, Input) and p.value.ndim == 1)):
                    raise ValueError(f"{name}: parent {i} ({parents[i]!r}) of {type(op).__name__} must be a Param "
                                     "or a 1-d Input (an unbatched weight)")
        size = op.out_size([self._nodes[p].size for p in parents])
        return self._add(Deterministic(name, parents, op, size))

    def cost(self, name: str, parents: Sequence[str], op: Optional[_ops.Op] = None) -> str:
        parents = tuple(parents)
        self._check_parents(name, parents)
        op = _ops.SumAll() if op is None else op
        size = op.out_size([self._nodes[p].size for p in parents])
        if size != 1:
            raise ValueError(f"{name}: a cost must be scalar per row (width 1), its op gives width {size}")
        return self._add(Cost(name, parents, op))

    def _check_parents(self, name, parents):
        if not parents:
            raise ValueError(f"{name}: expected at least one parent")
        for p in parents:
            if p not in self._nodes:
                raise ValueError(f"{name}: parent {p!r} is not in the graph (add nodes in topological order)")

    def _stochastic(self, name, parents, dist):
        parents = tuple(parents)
        for p in parents:
            if p not in self._nodes:
                raise ValueError(f"{name}: parent {p!r} is not in the graph (add nodes in topological order)")
        return self._add(Stochastic(name, parents, dist, dist.size))

    def bernoulli(self, name: str, logits: str) -> str:
        """Independent Bernoulli units with logits from node ``logits``."""
        return self._stochastic(name, (logits,), _dist.Bernoulli(self._size(logits)))

    def categorical(self, name: str, logits: str) -> str:
        """One categorical variable (value one-hot) with logits from node ``logits`` (width K >= 2)."""
        K = self._size(logits)
        if K < 2:
            raise ValueError(f"{name}: a categorical node needs logits of width >= 2, got {K}")
        return self._stochastic(name, (logits,), _dist.Categorical(K))

    def gaussian(self, name: str, mean: str, log_std: str, reparam: bool = False) -> str:
        """``w ~ N(mean, exp(log_std)^2)`` per unit.

        ``reparam=False``: a stochastic node (score-function gradient). ``reparam=True``: a
        parameter-free stochastic node ``name + ".eps" ~ N(0, I)`` and the deterministic node
        ``name = mean + exp(log_std) * eps`` (pathwise gradient)."""
        n = self._size(mean)
        if self._size(log_std) != n:
            raise ValueError(f"{name}: mean and log_std must have one width, got {n} and {self._size(log_std)}")
        if not reparam:
            return self._stochastic(name, (mean, log_std), _dist.Gaussian(n))
        eps = self._stochastic(name + ".eps", (), _dist.StandardNormal(n))
        return self.deterministic(name, (mean, log_std, eps), _ops.Reparam())

    def affine(self, name: str, x: str, n_out: int, bias: bool = True, init_std: Optional[float] = None) -> str:
        """``name = x @ W.T + b`` with new Params ``name + ".W"`` ``(n_out, n_in)`` and ``name + ".b"``;
        weights ``N(0, init_std^2)``, default ``1/sqrt(n_in)`` (the spec's ``N(0, 1/fan_in)``)."""
        n_in = self._size(x)
        std = 1.0 / math.sqrt(n_in) if init_std is None else init_std
        W = self.param(name + ".W", (n_out, n_in), std)
        parents = [x, W]
        if bias:
            parents.append(self.param(name + ".b", (n_out,), std))
        return self.deterministic(name, parents, _ops.Affine(n_in, n_out))

    def mlp(self, name: str, inputs: Sequence[str], sizes: Sequence[int], activation="tanh",
            output_activation="linear", init_std: Optional[float] = None) -> str:
        """A small MLP on the concatenated ``inputs``: layers of widths ``sizes`` (as
        :class:`refimpl.Network`: ``a_l = h_{l-1} @ W_l.T + b_l``, ``h_l = f_l(a_l)``), each layer an
        affine node ``name/l`` and an activation node; returns the output node's name."""
        inputs = list(inputs)
        x = inputs[0] if len(inputs) == 1 else self.deterministic(name + "/in", inputs, _ops.Concat())
        sizes = list(sizes)
        for l, n in enumerate(sizes, start=1):
            act = activation if l < len(sizes) else output_activation
            a = self.affine(f"{name}/{l}", x, n, init_std=init_std)
            last = l == len(sizes)
            if act == "linear" and last:
                x = a
            else:
                x = self.deterministic(name if last else f"{name}/{l}.h", [a], _ops.Activation(act))
        if x != name:  # linear output: expose it under ``name``
            x = self.deterministic(name, [x], _ops.LinearCombination((1.0,)))
        return x

    def _size(self, name):
        if name not in self._nodes:
            raise ValueError(f"parent {name!r} is not in the graph (add nodes in topological order)")
        return self._nodes[name].size

    # --- access ----------------------------------------------------------------------------

    def __getitem__(self, name):
        return self._nodes[name]

    def __contains__(self, name):
        return name in self._nodes

    @property
    def order(self) -> tuple:
        return tuple(self._order)

    @property
    def nodes(self) -> tuple:
        return tuple(self._nodes[n] for n in self._order)

    def names(self, kind) -> tuple:
        return tuple(n for n in self._order if isinstance(self._nodes[n], kind))

    @property
    def params(self) -> tuple:
        return self.names(Param)

    @property
    def stochastic(self) -> tuple:
        return self.names(Stochastic)

    @property
    def costs(self) -> tuple:
        return self.names(Cost)

    # --- theta -----------------------------------------------------------------------------

    @property
    def n_params(self) -> int:
        return sum(self._nodes[p].size for p in self.params)

    def offsets(self) -> dict:
        """``name -> (start, stop)`` of each Param in flat theta."""
        out, off = {}, 0
        for p in self.params:
            out[p] = (off, off + self._nodes[p].size)
            off += self._nodes[p].size
        return out

    def init_theta(self, seed=0, xp=None, dtype="float64", device=None):
        """Flat theta: each Param ``N(0, init_std^2)`` from ``seed`` (host draws) or its init_value."""
        gen = _rng(seed)
        ns = resolve_namespace(xp)
        parts = []
        for p in self.params:
            node = self._nodes[p]
            v = node.init_value if node.init_value is not None else gen.standard_normal(node.shape) * node.init_std
            parts.append(np.asarray(v, dtype=np.float64).ravel())
        host = np.concatenate(parts) if parts else np.zeros(0)
        return from_numpy(host, ns, resolve_dtype(ns, dtype), device)

    def check_theta(self, theta):
        xp = namespace(theta, names=("theta",))
        if theta.ndim != 1 or theta.shape[0] != self.n_params:
            raise ValueError(f"theta: expected a flat vector of shape ({self.n_params},) (all Params "
                             f"concatenated), got shape {tuple(theta.shape)}")
        if theta.dtype not in (xp.float32, xp.float64):
            raise TypeError(f"theta: expected dtype float32 or float64, got {theta.dtype}")
        if not bool(xp.all(xp.isfinite(theta))):
            raise ValueError("theta: expected finite values")
        return xp

    def unflatten(self, theta) -> dict:
        """``{param name: array of the param's shape}`` from a flat theta (or a flat gradient)."""
        xp = namespace(theta)
        return {p: xp.reshape(theta[a:b], self._nodes[p].shape) for p, (a, b) in self.offsets().items()}

    def flatten(self, values: dict):
        """Flat theta from ``{param name: array}`` (every Param must be present)."""
        missing = [p for p in self.params if p not in values]
        if missing:
            raise ValueError(f"values: missing Params {missing}")
        xp = namespace(*[values[p] for p in self.params])
        return xp.concat([xp.reshape(values[p], (-1,)) for p in self.params])

    # --- relations (section 2 of the paper) --------------------------------------------------

    def children(self, name) -> tuple:
        if self._children is None:
            ch = {n: [] for n in self._order}
            for n in self._order:
                for p in self._nodes[n].parents:
                    if n not in ch[p]:
                        ch[p].append(n)
            self._children = {n: tuple(v) for n, v in ch.items()}
        return self._children[name]

    def influences(self, v: str, w: str) -> bool:
        """v ≺ w: a directed path from v to w (v != w)."""
        return w in self.descendants(v)

    def descendants(self, v: str) -> frozenset:
        self._need(v)
        out, todo = set(), [v]
        while todo:
            for c in self.children(todo.pop()):
                if c not in out:
                    out.add(c)
                    todo.append(c)
        return frozenset(out)

    def det_influences(self, v: str, w: str) -> bool:
        """v ≺^D w: a path from v to w whose intermediate nodes are all deterministic."""
        self._need(v), self._need(w)
        seen, todo = set(), [v]
        while todo:
            for c in self.children(todo.pop()):
                if c == w:
                    return True
                if c not in seen and isinstance(self._nodes[c], _DET):
                    seen.add(c)
                    todo.append(c)
        return False

    def deps(self, w: str) -> tuple:
        """DEPS_w: the Params, Inputs and stochastic nodes that deterministically influence w."""
        self._need(w)
        return tuple(v for v in self._order
                     if isinstance(self._nodes[v], (Param, Input, Stochastic)) and self.det_influences(v, w))

    def downstream_costs(self, w: str) -> tuple:
        """{c ≻ w}: the costs that w influences."""
        d = self.descendants(w)
        return tuple(c for c in self.costs if c in d)

    def upstream_stochastic(self, c: str) -> tuple:
        """The stochastic nodes that influence ``c`` (DiCE's W_c)."""
        return tuple(w for w in self.stochastic if self.influences(w, c))

    def _need(self, name):
        if name not in self._nodes:
            raise ValueError(f"node {name!r} is not in the graph; nodes: {self._order}")
