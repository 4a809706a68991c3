"""The one tolerance table, keyed by dtype and kind of check (ENGINEERING.md §2.6).

Why each float64 entry has its size:

* ``exact_identity`` (rtol 1e-10, atol 1e-12 per layer of depth): two algebraically equal
  computations in float64 differ by accumulated rounding, ``O(depth * width * eps)`` relative with
  ``eps = 2.2e-16``; for depth <= 6 and widths <= 64 that is <= 1e-13, so 1e-10 leaves three
  orders of margin for ill-conditioned draws while still catching any O(1e-7) discrepancy (a
  wrong factor, a missing term, a perturbation of 1e-7 in one weight).
* ``oracle_value`` / ``oracle_grad`` (rtol 1e-10, atol 1e-12): the same as above, against torch
  autograd's independent float64 computation; ISSUE 2 asks for 1e-10 relative.
* ``finite_difference``: not used as a fixed tolerance: finite differences are judged by their
  order (slope 2 for central differences) with :func:`proofs.theorem.order_check`; the row's
  numbers are unused.
* float32 rows (``eps = 1.2e-7``): the worst-case bound ``depth * width * eps`` is ``4.6e-5`` for
  depth 6, width 64, so ``1e-4`` keeps only a factor 2 over that bound (not the float64 rows'
  three orders). It holds because rounding errors add like a random walk, ``~sqrt(depth * width)
  * eps ~ 2e-6``: measured worst ``1.7e-5`` for ``bp.matches_autograd`` over 200 float32 draws
  (refimpl in float32 against the float64 oracle on the same float32 parameters). A float32 check
  that needs more is to run in float64, not to widen this row.

Convolutional layers (issue 15) use the same rows, with this error model: an entry of a conv
layer's output is a sum of ``C_in*kh*kw`` products (27 at most in the drawn networks), of its
transpose ``C_out*kh*kw``, of its weight gradient ``B*H'*W'`` (a few hundred), each summed in
another order than torch's; that is the ``O(n eps)`` of a dense layer of that width, relative to the
array's largest entry, so the float64 rows hold with the same margin (measured over 200 draws per
theorem, seed 7: bp.matches_autograd worst 1.2e-14, FA/SF/DFA theorems <= 9e-14,
bp.conv_equals_toeplitz 1.1e-15). The comparison is per array, relative to its largest entry: an
array that is zero in exact arithmetic (a gradient cancelled by symmetry, e.g. uSF's equal
magnitudes) passes on ``atol`` with a large *relative* error printed (0.67 and 1.2 in that run).

``stochastic_estimator`` checks are statistical (z-tests), not allclose.
"""

from __future__ import annotations

__all__ = ["TOLERANCES", "tolerance", "dtype_name"]

TOLERANCES = {
    "float64": {
        "exact_identity": (1e-10, 1e-12),
        "oracle_value": (1e-10, 1e-12),
        "oracle_grad": (1e-10, 1e-12),
        "finite_difference": (1e-5, 1e-8),
    },
    "float32": {
        "exact_identity": (1e-4, 1e-5),
        "oracle_value": (1e-4, 1e-5),
        "oracle_grad": (1e-4, 1e-5),
        "finite_difference": (None, None),
    },
}


def dtype_name(dtype) -> str:
    """``"float64"`` or ``"float32"`` for a dtype object or name of any backend."""
    s = str(dtype)
    if "float64" in s or s == "double":
        return "float64"
    if "float32" in s or s == "float":
        return "float32"
    raise ValueError(f"dtype: expected float32 or float64, got {dtype!r}")


def tolerance(kind: str, dtype="float64", depth: int = 1, overrides: dict | None = None):
    """``(rtol, atol)`` for a kind of check at ``dtype``; ``exact_identity`` scales with depth."""
    name = dtype_name(dtype)
    table = dict(TOLERANCES[name])
    if overrides:
        table.update(overrides)
    if kind not in table:
        raise ValueError(f"kind: expected one of {sorted(table)}, got {kind!r}")
    rtol, atol = table[kind]
    if rtol is None:
        raise ValueError(f"a {kind!r} check is not meaningful in {name}; run it in float64")
    scale = max(1, depth) if kind == "exact_identity" else 1
    return rtol * scale, atol * scale
