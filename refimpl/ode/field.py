"""The vector field of a neural ODE given by a :class:`refimpl.Network`, with hand-written vjp and jvp.

Autonomous: ``f(x) = net.forward(x).h[-1]``, so ``net.sizes[0] == net.sizes[-1] == d``.
Time-dependent (``time_dependent=True``): the time is appended as the last input column,
``f(x, t) = net.forward([x, t 1]).h[-1]``, so ``net.sizes[0] == d + 1``.

Per layer (DESIGN.md shapes): ``a_l = h_{l-1} @ W_l.T + b_l``, ``h_l = f_l(a_l)``. The vjp of a
cotangent ``V: (B, d)`` (Rumelhart et al. 1986):

    delta_L = V * f_L'(a_L),  Wbar_l = delta_l.T @ h_{l-1},  bbar_l = sum_b delta_l,
    delta_{l-1} = (delta_l @ W_l) * f_{l-1}'(a_{l-1}),   xbar = (delta_1 @ W_1)[:, :d]

(the time column's cotangent is dropped: the time grid is not differentiated, spec C-Q1). The jvp
(forward mode) of a tangent ``dx``: ``da_l = dh_{l-1} @ W_l.T``, ``dh_l = f_l'(a_l) * da_l``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..network import Network
from ..backend import namespace, device_of
from .memory import nbytes

__all__ = ["NetworkField", "Tape"]


@dataclass(frozen=True)
class Tape:
    """What one evaluation keeps for its vjp: inputs ``h[l-1]`` and pre-activations ``a[l]`` per layer."""

    h: tuple     # h[0] = input (with the time column), ..., h[L] = output
    a: tuple     # a[0] = None, a[l] pre-activation of layer l
    nbytes: int = -1  # bytes kept: inputs h[0..L-1] and pre-activations a[1..L]

    def __post_init__(self):
        if self.nbytes < 0:
            object.__setattr__(self, "nbytes", sum(nbytes(v) for v in self.h[:-1]) + sum(nbytes(v) for v in self.a[1:]))

    @property
    def out(self):
        return self.h[-1]


@dataclass(frozen=True)
class NetworkField:
    """``f(x, t)`` given by ``net``; see the module docstring for the two variants."""

    net: Network
    time_dependent: bool = False

    def __post_init__(self):
        if not isinstance(self.net, Network):
            raise TypeError(f"net: expected a refimpl.Network, got {type(self.net).__name__}")
        n0, nL = self.net.sizes[0], self.net.sizes[-1]
        want = nL + 1 if self.time_dependent else nL
        if n0 != want:
            kind = "time-dependent (t appended as the last input)" if self.time_dependent else "autonomous"
            raise ValueError(f"net: a {kind} vector field needs sizes[0] == {want} (sizes[-1] = {nL}"
                             f"{' plus 1' if self.time_dependent else ''}), got sizes {list(self.net.sizes)}")
        # resolved once: the field is evaluated thousands of times per solve
        object.__setattr__(self, "_acts", tuple(self.net.activation(l) for l in range(1, self.net.depth + 1)))
        object.__setattr__(self, "_Ws", tuple(self.net.weights))
        object.__setattr__(self, "_WTs", tuple(W.T for W in self.net.weights))
        object.__setattr__(self, "_bs", tuple(self.net.biases))
        object.__setattr__(self, "_dim", nL)
        object.__setattr__(self, "_xp", self.net.xp)

    @property
    def dim(self) -> int:
        """State dimension ``d``."""
        return self._dim

    def check_state(self, x, name: str = "x0"):
        xp = namespace(self.net.weights[0], x, names=("network weights", name))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name}: expected shape (B, {self.dim}) (a batch of ODE states), got {tuple(x.shape)}")
        if x.dtype != self.net.dtype:
            raise TypeError(f"{name}: expected dtype {self.net.dtype} (as the network), got {x.dtype}")
        if not bool(xp.all(xp.isfinite(x))):
            raise ValueError(f"{name}: expected finite values")
        return xp

    def check_cotangent(self, cotangent, x0, name: str = "cotangent"):
        """``dL/dx(t1)``: finite, the network's dtype, and exactly the shape of ``x0`` (a cotangent of a
        different batch size would otherwise broadcast silently over the samples)."""
        xp = self.check_state(cotangent, name)
        if tuple(cotangent.shape) != tuple(x0.shape):
            raise ValueError(f"{name}: expected the shape of x0 {tuple(x0.shape)} (dL/dx(t1), one row per "
                             f"sample), got {tuple(cotangent.shape)}")
        return xp

    def _input(self, x, t):
        if not self.time_dependent:
            return x
        xp = self._xp
        col = xp.full((x.shape[0], 1), float(t), dtype=x.dtype, device=device_of(x))
        return xp.concat((x, col), axis=1)

    def f(self, x, t=0.0):
        """``f(x, t)``, shape ``(B, d)``, keeping nothing."""
        h = self._input(x, t)
        for WT, b, act in zip(self._WTs, self._bs, self._acts):
            h = act.f(h @ WT + b)
        return h

    def tape(self, x, t=0.0) -> Tape:
        """Evaluate ``f(x, t)`` and keep what its vjp needs."""
        h, a = [self._input(x, t)], [None]
        for WT, b, act in zip(self._WTs, self._bs, self._acts):
            a_l = h[-1] @ WT + b
            a.append(a_l)
            h.append(act.f(a_l))
        return Tape(tuple(h), tuple(a))

    def vjp(self, tape: Tape, v):
        """``(xbar, Wbar, bbar)``: ``(df/dx)^T v`` per sample and ``(df/dtheta)^T v`` summed over the batch."""
        xp = self._xp
        L = len(self._Ws)
        Wbar, bbar = [None] * L, [None] * L
        delta = v * self._acts[L - 1].df(tape.a[L])
        for l in range(L, 0, -1):
            Wbar[l - 1] = delta.T @ tape.h[l - 1]
            bbar[l - 1] = xp.sum(delta, axis=0)
            back = delta @ self._Ws[l - 1]
            delta = back * self._acts[l - 2].df(tape.a[l - 1]) if l > 1 else back
        xbar = delta[:, : self._dim] if self.time_dependent else delta
        return xbar, tuple(Wbar), tuple(bbar)

    def jvp(self, x, t, dx):
        """``(f(x, t), (df/dx) dx)`` (forward mode; the time input is held fixed)."""
        xp = namespace(x, dx)
        h = self._input(x, t)
        dh = dx
        if self.time_dependent:
            dh = xp.concat((dx, xp.zeros((dx.shape[0], 1), dtype=dx.dtype, device=device_of(dx))), axis=1)
        for WT, b, act in zip(self._WTs, self._bs, self._acts):
            a = h @ WT + b
            h, dh = act.f(a), act.df(a) * (dh @ WT)
        return h, dh
