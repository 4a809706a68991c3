"""Stochastic computation graphs: surrogate losses, baselines and DiCE, with exact expectations.

Schulman, Heess, Weber & Abbeel, "Gradient estimation using stochastic computation graphs",
NeurIPS 2015; Foerster et al., "DiCE: the infinitely differentiable Monte-Carlo estimator", ICML 2018.

    from refimpl import scg
    g = scg.Graph()
    ...                                    # params, inputs, deterministic/stochastic/cost nodes
    theta = g.init_theta(seed=0)
    s = scg.sample(g, theta, seed=1, batch=64)       # Monte Carlo rows
    sur = scg.surrogate(s, baselines={"a": scg.ConstantBaseline(0.5)})
    sur.grad                                          # unbiased estimate of grad E[sum costs]
    exact = scg.enumerate_outcomes(g, theta)          # every outcome, exact weights
    scg.weighted_mean(exact.weights, scg.surrogate(exact).per_sample)   # = grad E (Theorem 1)

Modules: ``graph`` (nodes, relations), ``ops`` (deterministic ops and their derivatives),
``distributions`` (log p and derivatives, sampling, outcome tables, Gauss–Hermite),
``evaluate`` (forward pass, sampling, enumeration), ``reverse`` (reverse pass),
``forward_mode`` (second-order forward mode), ``surrogate``, ``baselines``, ``dice``,
``expectation``.
"""

from . import ops
from .graph import Graph, Param, Input, Deterministic, Stochastic, Cost
from .distributions import gauss_hermite
from .evaluate import Sample, sample, enumerate_outcomes, evaluate, n_outcomes
from .reverse import backward
from .forward_mode import Jets, jets
from .surrogate import Surrogate, surrogate, surrogate_hessian, q_values
from .baselines import (Baseline, ConstantBaseline, FunctionBaseline, LearnedBaseline, validate_baseline,
                        optimal_constant_baseline)
from .dice import DiCE, dice
from .expectation import (expectation, variance, weighted_mean, weighted_variance, expected_cost,
                          expected_gradient, gradient_variance)

__all__ = ["ops", "Graph", "Param", "Input", "Deterministic", "Stochastic", "Cost", "gauss_hermite",
           "Sample", "sample", "enumerate_outcomes", "evaluate", "n_outcomes", "backward", "Jets", "jets",
           "Surrogate", "surrogate", "surrogate_hessian", "q_values", "Baseline", "ConstantBaseline",
           "FunctionBaseline", "LearnedBaseline", "validate_baseline", "optimal_constant_baseline",
           "DiCE", "dice", "expectation", "variance", "weighted_mean", "weighted_variance",
           "expected_cost", "expected_gradient", "gradient_variance"]
