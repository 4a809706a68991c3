"""Distributions of stochastic nodes: log p(w | parents), its local derivatives, sampling, outcomes.

Each distribution is a function of its parents' values ``u_i`` (batched rows). For a given value
``w`` (a sample, a constant in every derivative), it states by hand

* ``log_prob(xp, w, u) -> (B,)``  (summed over the node's units);
* ``first(xp, w, u)``: ``d log p / d u_i`` as ``(B, 1, n_i)`` arrays;
* ``second(xp, w, u)``: blocks ``d2 log p / du_i du_j`` (``i <= j``) as ``(B, 1, n_i, n_j)``;
* ``sample(xp, u, gen)``: a draw from host generator ``gen`` (moved to the backend);
* ``outcomes(...)``: the finite outcome table used for exact expectations (all outcomes of a discrete
  node; Gauss–Hermite points of a Gaussian one).

Formulas (elementwise, sigma = sigmoid, pi = softmax(l), z = (w - mu) e^{-s}):

    Bernoulli(l):      log p = sum_i w_i l_i - softplus(l_i);  d/dl = w - sigma(l);
                       d2/dl2 = -diag(sigma (1 - sigma))
    Categorical(l):    log p = <w, l> - logsumexp(l) (w one-hot);  d/dl = w - pi;
                       d2/dl2 = -(diag(pi) - pi pi^T)
    Gaussian(mu, s):   log p = sum -z^2/2 - s - log(2 pi)/2;  d/dmu = z e^{-s};  d/ds = z^2 - 1;
                       d2/dmu2 = -e^{-2s};  d2/dmu ds = -2 z e^{-s};  d2/ds2 = -2 z^2   (diagonal)
    StandardNormal:    log p = sum -eps^2/2 - log(2 pi)/2 (no parents: the reparameterisation noise)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..backend import from_numpy, device_of
from .ops import _diag, _diag3, _eye

__all__ = ["Bernoulli", "Categorical", "Gaussian", "StandardNormal", "gauss_hermite",
           "log_softmax", "softplus"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def softplus(xp, x):
    """``log(1 + e^x)`` without overflow."""
    return xp.maximum(x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x)))


def _sigmoid(xp, x):
    return 0.5 * (1 + xp.tanh(0.5 * x))


def log_softmax(xp, l):
    """``l - logsumexp(l)`` along the last axis (shifted by the row maximum)."""
    m = xp.max(l, axis=-1, keepdims=True)
    return l - m - xp.log(xp.sum(xp.exp(l - m), axis=-1, keepdims=True))


def gauss_hermite(n: int):
    """Nodes ``x_k`` and probability weights ``w_k`` (sum 1) with ``sum_k w_k f(x_k) = E f(N(0,1))``
    exactly for polynomials ``f`` of degree <= 2n - 1 (probabilists' Hermite). Host float64.

    Nodes: eigenvalues of the Jacobi matrix (off-diagonal sqrt(k); Golub–Welsch), symmetrised.
    Weights: Christoffel numbers ``1 / sum_{j<n} p_j(x_k)^2`` with the orthonormal recurrence
    ``p_{j+1} = (x p_j - sqrt(j) p_{j-1}) / sqrt(j+1)`` — accurate relative to themselves even in
    the tails (the eigenvector formula is only accurate to ~eps absolutely) and free of the
    overflow of unnormalised recurrences (spec: trouble at n = 400)."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"quadrature: expected a positive number of Gauss-Hermite nodes, got {n!r}")
    if n == 1:
        return np.zeros(1), np.ones(1)
    from scipy.linalg import eigvalsh_tridiagonal

    off = np.sqrt(np.arange(1, n, dtype=np.float64))
    x = np.sort(eigvalsh_tridiagonal(np.zeros(n), off))
    x = 0.5 * (x - x[::-1])  # the exact rule is symmetric
    p_prev, p = np.zeros(n), np.ones(n)
    ssq = p * p
    # far-tail nodes (n > ~300): ssq overflows (inf, then nan); their weights are < 1e-308: 0
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(n - 1):
            p_prev, p = p, (x * p - math.sqrt(j) * p_prev) / math.sqrt(j + 1)
            ssq = ssq + p * p
    ok = np.isfinite(ssq)
    w = np.where(ok, 1.0 / np.where(ok, ssq, 1.0), 0.0)
    w = 0.5 * (w + w[::-1])
    return x, w / w.sum()


def _host_uniform(gen, shape):
    return gen.random(shape)


@dataclass(frozen=True)
class Bernoulli:
    """Independent Bernoulli units with logits ``l`` (parent 0, width n); value ``w`` in {0,1}^n."""

    size: int
    n_parents: int = 1
    discrete: bool = True

    def log_prob(self, xp, w, u):
        l = u[0]
        return xp.sum(w * l - softplus(xp, l), axis=1)

    def first(self, xp, w, u):
        return [(w - _sigmoid(xp, u[0]))[:, None, :]]

    def second(self, xp, w, u):
        s = _sigmoid(xp, u[0])
        return {(0, 0): -_diag(xp, s * (1 - s))[:, None, :, :]}

    def sample(self, xp, u, gen):
        B = u[0].shape[0]
        r = from_numpy(_host_uniform(gen, (B, self.size)), xp, u[0].dtype, device_of(u[0]))
        return xp.astype(r < _sigmoid(xp, u[0]), u[0].dtype)

    def outcome_table(self, quadrature):
        """All ``2^n`` bit vectors (host), no fixed weights (they depend on the logits)."""
        return np.array(list(itertools.product((0.0, 1.0), repeat=self.size))), None


@dataclass(frozen=True)
class Categorical:
    """One categorical variable with logits ``l`` (parent 0, width K); value one-hot ``(B, K)``."""

    size: int
    n_parents: int = 1
    discrete: bool = True

    def log_prob(self, xp, w, u):
        return xp.sum(w * log_softmax(xp, u[0]), axis=1)

    def first(self, xp, w, u):
        return [(w - xp.exp(log_softmax(xp, u[0])))[:, None, :]]

    def second(self, xp, w, u):
        p = xp.exp(log_softmax(xp, u[0]))
        return {(0, 0): -(_diag(xp, p) - p[:, :, None] * p[:, None, :])[:, None, :, :]}

    def sample(self, xp, u, gen):
        l = u[0]
        B, K = l.shape
        p = xp.exp(log_softmax(xp, l))
        cdf = xp.matmul(p, xp.triu(xp.ones((K, K), dtype=l.dtype, device=device_of(l))))
        r = from_numpy(_host_uniform(gen, (B, 1)), xp, l.dtype, device_of(l))
        idx = xp.sum(xp.astype(r > cdf[:, :K - 1], xp.int64), axis=1)
        return xp.astype(idx[:, None] == xp.arange(K, device=device_of(l))[None, :], l.dtype)

    def outcome_table(self, quadrature):
        return np.eye(self.size), None


@dataclass(frozen=True)
class Gaussian:
    """Independent Gaussian units ``N(mu, e^{2s})`` (parents ``mu, s = log sigma``), score-function
    form: the value is a sample, constant in every derivative."""

    size: int
    n_parents: int = 2
    discrete: bool = False

    def log_prob(self, xp, w, u):
        mu, s = u
        z = (w - mu) * xp.exp(-s)
        return xp.sum(-0.5 * z * z - s - _HALF_LOG_2PI, axis=1)

    def first(self, xp, w, u):
        mu, s = u
        z = (w - mu) * xp.exp(-s)
        return [(z * xp.exp(-s))[:, None, :], (z * z - 1)[:, None, :]]

    def second(self, xp, w, u):
        mu, s = u
        z = (w - mu) * xp.exp(-s)
        return {(0, 0): _diag(xp, -xp.exp(-2 * s))[:, None, :, :],
                (0, 1): _diag(xp, -2 * z * xp.exp(-s))[:, None, :, :],
                (1, 1): _diag(xp, -2 * z * z)[:, None, :, :]}

    def sample(self, xp, u, gen):
        mu, s = u
        z = from_numpy(gen.standard_normal(tuple(mu.shape)), xp, mu.dtype, device_of(mu))
        return mu + xp.exp(s) * z

    def outcome_table(self, quadrature):
        return _normal_table(self.size, quadrature)


@dataclass(frozen=True)
class StandardNormal:
    """Parameter-free ``N(0, I)`` noise ``eps`` of the reparameterised Gaussian ``mu + e^s eps``."""

    size: int
    n_parents: int = 0
    discrete: bool = False

    def log_prob(self, xp, w, u):
        return xp.sum(-0.5 * w * w - _HALF_LOG_2PI, axis=1)

    def first(self, xp, w, u):
        return []

    def second(self, xp, w, u):
        return {}

    def sample(self, xp, u, gen, like=None):
        raise RuntimeError("StandardNormal.sample needs the batch size: use refimpl.scg.sample")

    def outcome_table(self, quadrature):
        return _normal_table(self.size, quadrature)


def _normal_table(size, quadrature):
    """Tensor-product Gauss–Hermite rule for ``size`` independent N(0,1) units: ``q^size`` points."""
    x, w = gauss_hermite(quadrature)
    pts = np.array(list(itertools.product(x, repeat=size)))
    wts = np.array([np.prod(c) for c in itertools.product(w, repeat=size)])
    return pts, wts
