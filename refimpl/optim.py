"""Optimisers as pure functions on tuples of arrays: SGD (momentum, weight decay) and Adam.

``opt.init(params) -> state`` and ``opt.step(params, grads, state) -> (params, state)``; nothing is
mutated. The update equations are those of ``torch.optim.SGD`` / ``torch.optim.Adam`` (tested
against them), with ``grads`` in gradient convention (a rule's ``upd.dW``):

SGD (dampening 0):   g <- g + wd * p;  m <- mu * m + g (m_1 = g);  p <- p - lr * (g + mu * m if
nesterov else m).

Adam (Kingma & Ba 2015, Alg. 1; L2 weight decay as torch's ``weight_decay``):
g <- g + wd * p; m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .backend import namespace

__all__ = ["SGD", "Adam", "SGDState", "AdamState", "apply_updates", "get"]


def _check_pair(params, grads):
    params, grads = tuple(params), tuple(grads)
    if len(params) != len(grads):
        raise ValueError(f"grads: expected {len(params)} arrays (one per parameter), got {len(grads)}")
    for i, (p, g) in enumerate(zip(params, grads)):
        if tuple(p.shape) != tuple(g.shape):
            raise ValueError(f"grads[{i}]: expected shape {tuple(p.shape)} (as params[{i}]), got {tuple(g.shape)}")
    return params, grads


@dataclass(frozen=True)
class SGDState:
    momentum: tuple  # one buffer per parameter (None before the first step)
    step: int = 0


@dataclass(frozen=True)
class SGD:
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False

    def __post_init__(self):
        for name in ("lr", "momentum", "weight_decay"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"SGD {name}: expected a finite number >= 0, got {v!r}")
        if self.momentum >= 1:
            raise ValueError(f"SGD momentum: expected a number in [0, 1) (>= 1 lets the steps grow without "
                             f"bound), got {self.momentum!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("SGD nesterov: needs momentum > 0")

    def init(self, params) -> SGDState:
        return SGDState(tuple(None for _ in params), 0)

    def step(self, params, grads, state: SGDState):
        params, grads = _check_pair(params, grads)
        new_p, new_m = [], []
        for p, g, m in zip(params, grads, state.momentum):
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                m = g if m is None else self.momentum * m + g
                d = g + self.momentum * m if self.nesterov else m
            else:
                d = g
            new_p.append(p - self.lr * d)
            new_m.append(m if self.momentum else None)
        return tuple(new_p), SGDState(tuple(new_m), state.step + 1)


@dataclass(frozen=True)
class AdamState:
    m: tuple
    v: tuple
    step: int = 0


@dataclass(frozen=True)
class Adam:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self):
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"Adam lr: expected a finite number >= 0, got {self.lr!r}")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ValueError(f"Adam {name}: expected a value in [0, 1), got {v!r}")
        if not self.eps > 0 or not self.weight_decay >= 0:
            raise ValueError(f"Adam eps/weight_decay: expected eps > 0 and weight_decay >= 0, "
                             f"got {self.eps!r}, {self.weight_decay!r}")

    def init(self, params) -> AdamState:
        zeros = tuple(namespace(p).zeros_like(p) for p in params)
        return AdamState(zeros, zeros, 0)

    def step(self, params, grads, state: AdamState):
        params, grads = _check_pair(params, grads)
        t = state.step + 1
        c1, c2 = 1 - self.beta1 ** t, 1 - self.beta2 ** t
        new_p, new_m, new_v = [], [], []
        for p, g, m, v in zip(params, grads, state.m, state.v):
            xp = namespace(p)
            if self.weight_decay:
                g = g + self.weight_decay * p
            m = self.beta1 * m + (1 - self.beta1) * g
            v = self.beta2 * v + (1 - self.beta2) * (g * g)
            new_p.append(p - self.lr * (m / c1) / (xp.sqrt(v / c2) + self.eps))
            new_m.append(m)
            new_v.append(v)
        return tuple(new_p), AdamState(tuple(new_m), tuple(new_v), t)


def get(name: str, **kwargs):
    """An optimiser by name: ``"sgd"`` or ``"adam"``."""
    if name == "sgd":
        return SGD(**kwargs)
    if name == "adam":
        return Adam(**kwargs)
    raise ValueError(f"optimizer: unknown name {name!r}; expected 'sgd' or 'adam'")


def apply_updates(net, upd, opt, opt_state):
    """One optimiser step on a :class:`~refimpl.network.Network` from a rule's :class:`Updates`.

    Parameters are ordered ``(W_1..W_L, b_1..b_L)``. Returns ``(new_net, new_opt_state)``.
    ``opt_state=None`` initialises the optimiser state.
    """
    params = tuple(net.weights) + tuple(net.biases)
    grads = tuple(upd.dW) + tuple(upd.db)
    if opt_state is None:
        opt_state = opt.init(params)
    new, opt_state = opt.step(params, grads, opt_state)
    L = net.depth
    return net.replace(weights=new[:L], biases=new[L:]), opt_state
