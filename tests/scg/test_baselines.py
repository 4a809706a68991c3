import numpy as np
import pytest

import refimpl as ri
from refimpl import scg
from .helpers import chain_graph


def test_optimal_constant_baseline_minimises_exact_variance():
    g, th = chain_graph()
    b = scg.optimal_constant_baseline(g, th, "w1")
    V = lambda c: float(scg.gradient_variance(g, th, baselines={"w1": scg.ConstantBaseline(c)}))
    grid = [V(b + d) for d in np.linspace(-0.2, 0.2, 41)]
    assert int(np.argmin(grid)) == 20


def test_learned_baseline_value_and_regression_gradient():
    g, th = chain_graph()
    net = ri.Network.init([2, 4, 1], seed=3)
    lb = scg.LearnedBaseline(net, ("x",))
    s = scg.sample(g, th, seed=0, batch=6)
    q = scg.q_values(s)["w1"]
    b = lb.value(s)
    np.testing.assert_allclose(b, net.forward(s.rows("x")).h[-1][:, 0])
    upd = lb.updates(s, q)
    # gradient of mean 0.5 (b - q)^2 w.r.t. the last bias is mean(b - q)
    np.testing.assert_allclose(upd.db[-1][0], np.mean(b - q), rtol=1e-12)
    sur = scg.surrogate(s, baselines={"w1": lb})
    np.testing.assert_allclose(sur.record["baseline"]["w1"], b)
    with pytest.raises(ValueError, match="1 output"):
        scg.LearnedBaseline(ri.Network.init([2, 2], seed=0), ("x",))


def test_baseline_shapes_are_checked():
    g, th = chain_graph()
    s = scg.sample(g, th, seed=0, batch=4)
    with pytest.raises(ValueError, match="shape"):
        scg.surrogate(s, baselines={"w1": scg.FunctionBaseline(lambda v: v, ("x",))})
    with pytest.raises(TypeError, match="Baseline"):
        scg.surrogate(s, baselines={"w1": 0.5})
