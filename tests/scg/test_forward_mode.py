import numpy as np
import pytest

from refimpl import scg
from refimpl.backend import from_numpy
from .helpers import chain_graph


def test_cost_hessian_of_a_deterministic_graph_matches_oracle():
    """A graph without stochastic nodes has one outcome: E = the cost, so the oracle's Hessian is
    the per-row Hessian of the forward-mode jets (MLP with tanh/sigmoid/softplus, product, poly)."""
    oracle = pytest.importorskip("proofs.oracle")
    g = scg.Graph()
    g.input("x", np.array([0.4, -0.2, 0.9]))
    g.mlp("h", ["x"], [3, 2], activation="sigmoid", output_activation="softplus")
    g.mlp("k", ["x"], [2], output_activation="tanh")
    g.deterministic("hk", ["h", "k"], scg.ops.Product())
    g.deterministic("p", ["hk"], scg.ops.Polynomial((0.0, 1.0, -0.5, 0.25)))
    g.cost("c", ["p", "h"])
    th = g.init_theta(1)
    s = scg.enumerate_outcomes(g, th)
    assert s.batch == 1
    _, grad, H = oracle.scg_expected_cost(g, th, order=2)
    gc, hc = scg.jets(s).cost("c")
    np.testing.assert_allclose(gc[0], grad, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(hc[0], H, rtol=1e-11, atol=1e-13)


def test_order_validated():
    g, th = chain_graph()
    with pytest.raises(ValueError, match="order"):
        scg.jets(scg.sample(g, th, seed=0, batch=1), order=3)
