"""Exact expectations and variances over the outcome table (:func:`enumerate_outcomes`).

``E[f] = sum_rows weight_row f(row)`` — exact for discrete nodes (every joint outcome); for
Gaussian nodes the tensor-product Gauss–Hermite rule with ``quadrature`` points per unit is exact
when ``f`` is a polynomial of degree <= 2 * quadrature - 1 in the standard-normal noise, and an
approximation otherwise (spec P-D4: entire costs converge fast, costs with poles near the real
axis such as tanh only root-exponentially; state the quadrature error where it matters).

``Var[g] = sum_rows weight |g|^2 - |sum_rows weight g|^2`` (the trace of the covariance for
vector-valued ``g``).
"""

from __future__ import annotations

from ..backend import namespace
from .evaluate import enumerate_outcomes

__all__ = ["expectation", "variance", "weighted_mean", "weighted_variance", "expected_cost",
           "expected_gradient", "gradient_variance"]


def weighted_mean(weights, values):
    """``sum_b weights[b] values[b, ...]``."""
    xp = namespace(weights)
    w = xp.reshape(weights, (weights.shape[0],) + (1,) * (values.ndim - 1))
    return xp.sum(w * values, axis=0)


def weighted_variance(weights, values):
    """``sum_b w_b |v_b|^2 - |sum_b w_b v_b|^2`` (values: (B,) or (B, P))."""
    xp = namespace(weights)
    v = values if values.ndim == 2 else values[:, None]
    m = weighted_mean(weights, v)
    return xp.sum(weights * xp.sum(v * v, axis=1)) - xp.sum(m * m)


def expectation(graph, theta, fn, quadrature: int = 40):
    """``E[fn(sample)]`` with ``fn`` returning per-row values ``(B, ...)``."""
    s = enumerate_outcomes(graph, theta, quadrature)
    return weighted_mean(s.weights, fn(s))


def variance(graph, theta, fn, quadrature: int = 40):
    """``E|fn|^2 - |E fn|^2`` of per-row values ``(B,)`` or ``(B, P)``."""
    s = enumerate_outcomes(graph, theta, quadrature)
    return weighted_variance(s.weights, fn(s))


def expected_cost(graph, theta, quadrature: int = 40):
    """``E[sum_c c]``."""
    return expectation(graph, theta, lambda s: s.total_cost(), quadrature)


def expected_gradient(graph, theta, quadrature: int = 40, **surrogate_kwargs):
    """``E[grad L_surr]`` (= ``grad E[sum_c c]`` by Theorem 1, for admissible baselines)."""
    from .surrogate import surrogate

    return expectation(graph, theta, lambda s: surrogate(s, record=False, **surrogate_kwargs).per_sample,
                       quadrature)


def gradient_variance(graph, theta, quadrature: int = 40, **surrogate_kwargs):
    """Exact ``E|grad L_surr|^2 - |E grad L_surr|^2`` of the one-row estimator."""
    from .surrogate import surrogate

    return variance(graph, theta, lambda s: surrogate(s, record=False, **surrogate_kwargs).per_sample,
                    quadrature)
