"""The record every gradient method returns, and the parameter-accumulator helpers they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .memory import MemoryReport

__all__ = ["Gradients", "add_params", "scale_params"]


@dataclass(frozen=True)
class Gradients:
    """``dx0`` (shape of ``x0``), ``dW``/``db`` (shapes of ``net.weights``/``net.biases``), the memory
    report, and (when requested) the adjoint states ``lambdas[n]`` at the grid times ``ts[n]``."""

    dx0: object
    dW: tuple
    db: tuple
    report: MemoryReport
    ts: tuple = ()
    lambdas: Optional[tuple] = None

    def as_tuple(self):
        return self.dx0, self.dW, self.db


def add_params(acc, new, scale: float = 1.0):
    """``acc + scale * new`` elementwise over a tuple of arrays (``acc`` None: ``scale * new``)."""
    if acc is None:
        return tuple(scale * v for v in new) if scale != 1.0 else tuple(new)
    return tuple(p + scale * v for p, v in zip(acc, new)) if scale != 1.0 else tuple(p + v for p, v in zip(acc, new))


def scale_params(acc, scale: float):
    return tuple(scale * v for v in acc)
