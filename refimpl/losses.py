"""Losses: value and gradient with respect to the network output.

Convention (DESIGN.md): a loss is summed over output units and averaged over the batch.

* ``mse``: ``L = (1/B) sum_b 0.5 * ||h_L[b] - y[b]||^2``.
* ``ce``:  ``L = (1/B) sum_b [logsumexp(h_L[b]) - <y[b], h_L[b]>]``, softmax cross-entropy on the
  logits ``h_L``; ``y`` is one-hot (any probability vector per row is accepted) or integer labels.

Each loss exposes

* ``value(h, y)``: the batch-mean loss (a 0-d array),
* ``grad(h, y)``: dL/dh of the batch-mean loss, shape ``(B, n_L)``, which is what autograd gives,
* ``error(h, y)``: the per-sample derivative ``d l_b / d h[b]`` (= ``B * grad``); target-based rules
  (TP, DTP, GAIT-prop, PEPITA) start from it,
* ``prepare(y, h)``: ``y`` validated and converted to a float array of ``h``'s shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backend import namespace, check_finite, device_of

__all__ = ["Loss", "get", "NAMES", "softmax", "logsumexp"]

NAMES = ("mse", "ce")


def logsumexp(h):
    """Row-wise log-sum-exp, stable: ``m + log(sum(exp(h - m)))`` with ``m`` the row maximum."""
    xp = namespace(h)
    m = xp.max(h, axis=1, keepdims=True)
    return m[:, 0] + xp.log(xp.sum(xp.exp(h - m), axis=1))


def softmax(h):
    """Row-wise softmax ``exp(h - m) / sum(exp(h - m))``."""
    xp = namespace(h)
    m = xp.max(h, axis=1, keepdims=True)
    z = xp.exp(h - m)
    return z / xp.sum(z, axis=1, keepdims=True)


@dataclass(frozen=True)
class Loss:
    name: str

    def prepare(self, y, h):
        """Validate ``y`` against the output ``h`` (B, n_L) and return it as a float array like ``h``."""
        xp = namespace(h, y, names=("output", "y"))
        B, n = h.shape
        if self.name == "ce" and y.ndim == 1:
            if xp.isdtype(y.dtype, "integral"):
                if y.shape[0] != B:
                    raise ValueError(f"y: expected {B} integer labels (one per sample), got shape {tuple(y.shape)}")
                if B and (int(xp.min(y)) < 0 or int(xp.max(y)) >= n):
                    raise ValueError(f"y: integer labels must lie in [0, {n - 1}] for {n} outputs, "
                                     f"got range [{int(xp.min(y))}, {int(xp.max(y))}]")
                classes = xp.arange(n, dtype=y.dtype, device=device_of(y))
                return xp.astype(y[:, None] == classes[None, :], h.dtype)
        if y.ndim != 2 or tuple(y.shape) != (B, n):
            raise ValueError(f"y: expected shape ({B}, {n}) to match the network output"
                             f"{' (or integer labels of shape (' + str(B) + ',))' if self.name == 'ce' else ''}, "
                             f"got {tuple(y.shape)}")
        if not xp.isdtype(y.dtype, "real floating"):
            raise TypeError(f"y: expected a floating array for loss {self.name!r}, got dtype {y.dtype}")
        if y.dtype != h.dtype:
            raise TypeError(f"y: expected dtype {h.dtype} (as the network), got {y.dtype}")
        check_finite(xp, y, "y")
        if self.name == "ce":
            if not bool(xp.all(y >= 0)) or not bool(xp.all(xp.abs(xp.sum(y, axis=1) - 1) < 1e-6)):
                raise ValueError("y: loss 'ce' expects one-hot (or probability) rows: non-negative, summing to 1")
        return y

    def value(self, h, y):
        xp = namespace(h)
        y = self.prepare(y, h)
        B = h.shape[0]
        if self.name == "mse":
            d = h - y
            return xp.sum(d * d) / (2 * B)
        return xp.sum(logsumexp(h) - xp.sum(y * h, axis=1)) / B

    def error(self, h, y):
        """Per-sample derivative ``d l_b / d h[b]``: ``h - y`` (mse), ``softmax(h) - y`` (ce)."""
        y = self.prepare(y, h)
        if self.name == "mse":
            return h - y
        return softmax(h) - y

    def grad(self, h, y):
        """Gradient of the batch-mean loss w.r.t. ``h``: ``error(h, y) / B``."""
        return self.error(h, y) / h.shape[0]


def get(spec) -> Loss:
    """The :class:`Loss` for ``"mse"`` or ``"ce"`` (or a Loss, returned as is)."""
    if isinstance(spec, Loss):
        return spec
    if spec not in NAMES:
        raise ValueError(f"loss: unknown name {spec!r}; expected one of {NAMES}")
    return Loss(spec)
