r"""One LU factorisation of a square matrix, reused for every solve with it and for a cheap estimate of
its 2-norm condition number.

The array API standard has ``linalg.solve`` but no factorisation handle, so every solve would
refactor (``2/3 n^3`` flops) and a condition check would need a further ``O(n^3)`` SVD. This module
factors once with the backend's own LU (SciPy's ``getrf`` for NumPy, ``torch.linalg.lu_factor``,
``cupyx.scipy.linalg.lu_factor``) and solves ``W X = B`` or ``W^T X = B`` with the factors in
``O(n^2)`` per right-hand side. Other namespaces (``array_api_strict``) fall back to
``xp.linalg.solve`` on every call: the same numbers up to rounding, only slower.

:meth:`LU.cond2_estimate` is block power iteration (Golub & Van Loan, *Matrix Computations*, 4th ed.,
§8.2.1 / §3.5.4 on condition estimation from the factors): ``k`` columns, ``V <- W^T W V`` for
``||W||_2`` and ``V <- W^{-1} W^{-T} V`` (two triangular solve pairs with the factors) for
``||W^{-1}||_2`` (``t = iters - 1`` applications, then ``||A v||`` is measured). Every iterate gives a
*lower* bound ``||A v|| / ||v|| <= ||A||_2``. For a unit start vector whose component along the top
right singular vector is ``c``, the moments ``m_p = sum_i c_i^2 s_i^{2p}`` are log-convex, so the
measured ``||A v_t|| / ||v_t|| = sqrt(m_{2t+1} / m_{2t})`` is at least ``m_{2t}^{1/(4t)} >=
||A||_2 c^{1/(2t)}``. With one column (``k = 1``: a vector solve is ``O(n^2)`` and much cheaper than a
blocked one), ``t = 9``, a random start with ``c^2 ~ 1/n`` and ``n = 1024`` that is ``>= 0.83
||A||_2`` per factor, and ``>= 0.73 ||A||_2`` even for ``c^2 = 0.01 / n``: the product
underestimates ``cond_2`` by less than 2x. (The bound is loose: it assumes the rest of the start
vector's mass just below the top; mass far below makes the estimate exact sooner.) Callers that need the exact decision compare the estimate with ``max_cond / 2`` and fall
back to the exact singular values when it is not clearly below (``refimpl.rules.gaitprop``).
"""

from __future__ import annotations

import math

import numpy as np

from .backend import namespace, backend_name, from_numpy, device_of

__all__ = ["LU"]


class LU:
    """``LU(W)``: factor the square ``W`` once; ``solve(B)`` = ``W^{-1} B``, ``solve(B, trans=True)`` =
    ``W^{-T} B`` (``B``: ``(n, m)``). ``singular`` is True when a pivot is exactly zero (or non-finite)."""

    def __init__(self, W):
        self.W = W
        self.xp = xp = namespace(W)
        self.kind = backend_name(xp)
        self.singular = False
        if self.kind == "numpy":
            import warnings
            import scipy.linalg as sla

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # exactly singular: reported through `singular`
                self._f = sla.lu_factor(np.asarray(W), check_finite=False)
            d = np.abs(np.diagonal(self._f[0]))
            self.singular = bool(not np.all(np.isfinite(d)) or np.min(d) == 0.0)
        elif self.kind == "torch":
            import torch

            self._f = torch.linalg.lu_factor(W)
            d = torch.abs(torch.diagonal(self._f[0]))
            self.singular = bool(not torch.all(torch.isfinite(d)) or torch.min(d) == 0)
        elif self.kind == "cupy":
            import cupy
            import cupyx.scipy.linalg as csla

            self._f = csla.lu_factor(W, check_finite=False)
            d = cupy.abs(cupy.diagonal(self._f[0]))
            self.singular = bool(not cupy.all(cupy.isfinite(d)) or cupy.min(d) == 0)
        else:
            self._f = None

    def solve(self, B, trans: bool = False):
        """``W^{-1} B`` (``trans``: ``W^{-T} B``) for ``B`` of shape ``(n, m)``."""
        if self.kind == "numpy":
            import scipy.linalg as sla

            return self.xp.asarray(sla.lu_solve(self._f, np.asarray(B), trans=1 if trans else 0,
                                                check_finite=False))
        if self.kind == "torch":
            import torch

            return torch.linalg.lu_solve(self._f[0], self._f[1], B, adjoint=trans)
        if self.kind == "cupy":
            import cupyx.scipy.linalg as csla

            return csla.lu_solve(self._f, B, trans=1 if trans else 0, check_finite=False)
        W = self.W.T if trans else self.W
        return self.xp.linalg.solve(W, B)

    def cond2_estimate(self, k: int = 1, iters: int = 10, seed: int = 0) -> float:
        """A lower estimate of ``cond_2(W) = ||W||_2 ||W^{-1}||_2`` by block power iteration (module
        docstring); ``inf`` when the factorisation is singular or the iteration is not finite."""
        if self.singular:
            return math.inf
        xp, W = self.xp, self.W
        n = W.shape[0]
        k = min(k, n)
        V0 = from_numpy(np.random.default_rng(seed).standard_normal((n, k)), xp, W.dtype, device_of(W))
        s_max = _power(xp, V0, lambda V: W @ V, lambda V: W.T @ V, iters)
        s_inv = _power(xp, V0, lambda V: self.solve(V), lambda V: self.solve(V, trans=True), iters)
        est = s_max * s_inv
        return est if math.isfinite(est) else math.inf


def _power(xp, V, A, At, iters):
    """``max_j ||A v_j||`` over unit columns ``v_j`` after ``iters`` steps ``V <- A^T A V`` (normalised)."""
    best = 0.0
    for i in range(iters):
        V = V / xp.sqrt(xp.sum(V * V, axis=0, keepdims=True))
        AV = A(V)
        if i == iters - 1:
            best = float(xp.max(xp.sqrt(xp.sum(AV * AV, axis=0))))
        else:
            V = At(AV)
    return best
