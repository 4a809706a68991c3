import numpy as np
import pytest

from refimpl import scg
from refimpl.scg import ops
from .helpers import chain_graph


def test_relations_on_a_chain():
    g, _ = chain_graph()
    assert g.influences("w1", "c1") and g.influences("x", "c0") and not g.influences("w2", "c0")
    assert not g.influences("w1", "w1")
    # f2 -> w2 deterministically; w1 -> f2/in -> f2/1 -> f2 -> w2: w1 ≺^D w2 (w1 is the start)
    assert g.det_influences("w1", "w2")
    # x reaches c1 only through stochastic nodes or f2 (deterministic): x ≺^D c1 via f2
    assert g.det_influences("x", "c1")
    # f1 ≺ c1 but only through w1 (stochastic) and ... not deterministically
    assert g.influences("f1", "c1") and not g.det_influences("f1", "c1")
    assert set(g.downstream_costs("w1")) == {"c1"} and g.downstream_costs("w2") == ("c1",)
    assert "w1" in g.deps("w2") and "f1/1.W" not in g.deps("w2") and "f2/1.W" in g.deps("w2")
    assert g.upstream_stochastic("c0") == () and g.upstream_stochastic("c1") == ("w1", "w2")


def test_theta_layout_roundtrip():
    g, th = chain_graph()
    assert th.shape == (g.n_params,)
    d = g.unflatten(th)
    assert d["f1/1.W"].shape == (3, 2)
    np.testing.assert_array_equal(np.asarray(g.flatten(d)), np.asarray(th))


def test_construction_errors_name_the_problem():
    g = scg.Graph()
    g.input("x", np.zeros(2))
    with pytest.raises(ValueError, match="exists already"):
        g.input("x", np.zeros(2))
    with pytest.raises(ValueError, match="not in the graph"):
        g.bernoulli("w", "nope")
    g.mlp("h", ["x"], [3])
    with pytest.raises(ValueError, match="must be a Param"):
        g.deterministic("bad", ["x", "h"], ops.Affine(2, 1))  # h is batched
    with pytest.raises(ValueError, match="width 1"):
        g.cost("c", ["h"], ops.Activation("tanh"))
    with pytest.raises(ValueError, match="width >= 2"):
        g.mlp("one", ["x"], [1])
        g.categorical("k", "one")
    with pytest.raises(ValueError, match="theta"):
        g2, th = chain_graph()
        scg.sample(g2, th[:3], seed=0, batch=2)
    with pytest.raises(ValueError, match="finite"):
        g.input("nan", np.array([np.nan]))
