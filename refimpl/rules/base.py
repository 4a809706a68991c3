"""What every rule shares: the :class:`Updates` record, the empty state, batch validation.

The face of a rule (DESIGN.md): a frozen dataclass of hyper-parameters with

    state = rule.init(net, seed=0)
    upd, state = rule.updates(net, state, x, y)

``upd.dW[i]``, ``upd.db[i]`` are in *gradient convention*: what autograd's ``.grad`` would hold
for BP, so ``W <- W - lr * dW`` descends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import losses as _losses
from ..backend import namespace

__all__ = ["Updates", "EmptyState", "check_batch", "check_state_shapes"]


@dataclass(frozen=True)
class Updates:
    """Per-layer updates (tuples of length L, entry ``i`` for layer ``i+1``) and named intermediates."""

    dW: tuple
    db: tuple
    record: dict = field(default_factory=dict)

    def __iter__(self):  # allows ``dW, db = upd`` for quick use
        yield self.dW
        yield self.db


@dataclass(frozen=True)
class EmptyState:
    """State of a rule that keeps none (BP)."""


def check_batch(net, x, y, loss=None):
    """Validate ``x`` (B, n_0) and ``y`` against ``net`` (and ``loss``); returns ``(xp, y_float)``.

    ``y`` comes back as a float array of shape ``(B, n_L)`` (integer labels are one-hot encoded
    for ``ce``).
    """
    xp = net.check_input(x, "x")
    namespace(x, y, names=("x", "y"))
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y: expected {x.shape[0]} rows (one per sample of x), got shape {tuple(y.shape)}")
    if loss is None:
        return xp, y
    loss = _losses.get(loss)
    # prepare() checks width, dtype, finiteness and, for ce, the one-hot/label convention.
    probe = xp.zeros((x.shape[0], net.sizes[-1]), dtype=net.dtype)
    return xp, loss.prepare(y, probe)


def check_state_shapes(arrays, expected, name: str) -> None:
    """Raise ``ValueError`` unless ``arrays[i].shape == expected[i]`` for all i (None entries skipped)."""
    if len(arrays) != len(expected):
        raise ValueError(f"{name}: expected {len(expected)} matrices, got {len(arrays)}")
    for i, (a, s) in enumerate(zip(arrays, expected)):
        if s is None:
            continue
        if a is None or tuple(a.shape) != tuple(s):
            got = None if a is None else tuple(a.shape)
            raise ValueError(f"{name}[{i}]: expected shape {tuple(s)}, got {got}")
