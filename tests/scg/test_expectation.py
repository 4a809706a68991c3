import numpy as np
import pytest

from refimpl import scg
from .helpers import chain_graph, gauss_graph


def test_expected_cost_and_gradient_match_oracle():
    oracle = pytest.importorskip("proofs.oracle")
    for (g, th), q in ((chain_graph(), 40), (gauss_graph(True), 3), (gauss_graph(False), 4)):
        E, grad = oracle.scg_expected_cost(g, th, quadrature=20)
        np.testing.assert_allclose(float(scg.expected_cost(g, th, q)), E, rtol=1e-12)
        np.testing.assert_allclose(scg.expected_gradient(g, th, q), grad, rtol=1e-10, atol=1e-13)


def test_variance_formula():
    w = np.array([0.2, 0.3, 0.5])
    v = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]])
    m = (w[:, None] * v).sum(0)
    np.testing.assert_allclose(scg.weighted_variance(w, v), (w[:, None] * (v - m) ** 2).sum(), rtol=1e-14)
    np.testing.assert_allclose(scg.weighted_variance(w, v[:, 0]), (w * (v[:, 0] - m[0]) ** 2).sum(), rtol=1e-14)
