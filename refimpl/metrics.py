"""Alignment metrics between updates and between feedback and forward weights.

* ``angle(a, b)``: the angle in degrees between two arrays flattened to vectors,
  ``arccos(<a, b> / (||a|| ||b||))``; ``nan`` if either is zero (the angle is undefined, and a
  silent 0 or 90 would be a wrong answer).
* ``layer_angles(dW_a, dW_b)``: per-layer angles between two rules' weight updates (e.g. a rule
  against BP), a tuple of length L.
* ``norm_ratio(B, W)``: ``||B||_F / ||W||_F``.
"""

from __future__ import annotations

import math

from .backend import namespace

__all__ = ["angle", "layer_angles", "norm_ratio", "cosine"]


def cosine(a, b) -> float:
    """``<a, b> / (||a|| ||b||)`` of the flattened arrays (nan if either norm is 0)."""
    xp = namespace(a, b, names=("a", "b"))
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"a, b: expected equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    af, bf = xp.reshape(a, (-1,)), xp.reshape(b, (-1,))
    na, nb = math.sqrt(float(xp.sum(af * af))), math.sqrt(float(xp.sum(bf * bf)))
    if na == 0.0 or nb == 0.0:
        return math.nan
    c = float(xp.sum(af * bf)) / (na * nb)
    return max(-1.0, min(1.0, c))


def angle(a, b) -> float:
    """Angle in degrees between the flattened arrays ``a`` and ``b`` (nan if either is zero)."""
    c = cosine(a, b)
    return math.nan if math.isnan(c) else math.degrees(math.acos(c))


def layer_angles(dW_a, dW_b) -> tuple:
    """Per-layer angles (degrees) between two tuples of updates of equal shapes."""
    if len(dW_a) != len(dW_b):
        raise ValueError(f"dW_a, dW_b: expected the same number of layers, got {len(dW_a)} and {len(dW_b)}")
    return tuple(angle(a, b) for a, b in zip(dW_a, dW_b))


def norm_ratio(B, W) -> float:
    """``||B||_F / ||W||_F`` (inf if W is zero and B is not, nan if both are zero)."""
    xp = namespace(B, W, names=("B", "W"))
    nb, nw = math.sqrt(float(xp.sum(B * B))), math.sqrt(float(xp.sum(W * W)))
    if nw == 0.0:
        return math.nan if nb == 0.0 else math.inf
    return nb / nw
