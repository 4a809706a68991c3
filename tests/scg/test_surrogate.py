import numpy as np
import pytest

from refimpl import scg
from .helpers import chain_graph, gauss_graph


def test_gradient_decomposes_into_recorded_terms():
    """grad L = sum_w score_w (Q_w - b_w) + sum_c pathwise_c, per row; Q_w = downstream costs."""
    g, th = chain_graph()
    s = scg.sample(g, th, seed=2, batch=9)
    bl = {"w2": scg.FunctionBaseline(lambda v: np.tanh(v).sum(1), ("w1",))}
    sur = scg.surrogate(s, baselines=bl)
    r = sur.record
    recon = sum(r["score"][w] * (r["Q"][w] - r["baseline"][w])[:, None] for w in g.stochastic)
    recon = recon + sum(r["pathwise"][c] for c in g.costs)
    np.testing.assert_allclose(sur.per_sample, recon, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sur.grad, sur.per_sample.mean(0), rtol=1e-13)
    np.testing.assert_allclose(r["Q"]["w1"], r["costs"]["c1"])  # c0 is upstream of w1
    assert r["deps"]["w2"] == g.deps("w2") and r["downstream_costs"]["w1"] == ("c1",)
    lp = sum(r["log_prob"][w] * (r["Q"][w] - r["baseline"][w]) for w in g.stochastic)
    np.testing.assert_allclose(sur.value, lp + r["costs"]["c0"] + r["costs"]["c1"], rtol=1e-13)
    summed = scg.surrogate(s, baselines=bl, per_sample=False, record=False)
    np.testing.assert_allclose(summed.grad, sur.grad, rtol=1e-12, atol=1e-15)
    assert summed.per_sample is None


def test_baseline_validation():
    g, th = chain_graph()
    s = scg.sample(g, th, seed=0, batch=3)
    with pytest.raises(ValueError, match="w itself"):
        scg.surrogate(s, baselines={"w1": scg.FunctionBaseline(lambda v: v.sum(1), ("w1",))})
    with pytest.raises(ValueError, match="descendant"):
        scg.surrogate(s, baselines={"w1": scg.FunctionBaseline(lambda v: v.sum(1), ("w2",))})
    with pytest.raises(ValueError, match="not a stochastic node"):
        scg.surrogate(s, baselines={"c0": scg.ConstantBaseline(1.0)})
    with pytest.raises(ValueError, match="cost_scope"):
        scg.surrogate(s, cost_scope="upstream")
    scg.surrogate(s, baselines={"w1": scg.FunctionBaseline(lambda v: v.sum(1), ("w2",), allow_biased=True)})


def test_monte_carlo_mean_z_test():
    """Seeded Monte Carlo: the sample mean of the per-row estimates is within 4.5 standard errors
    of the exact expectation in every coordinate (z-test, fixed seed; not an allclose on draws)."""
    g, th = chain_graph()
    exact = scg.expected_gradient(g, th)
    s = scg.sample(g, th, seed=11, batch=20000)
    ps = scg.surrogate(s, record=False).per_sample
    se = ps.std(0, ddof=1) / np.sqrt(s.batch)
    random = se > 1e-12 * np.abs(ps).max()  # coordinates that vary over rows (others: c0's pathwise part)
    z = (ps.mean(0) - exact)[random] / se[random]
    assert random.sum() > 10 and np.all(np.abs(z) < 4.5), np.abs(z).max()
    np.testing.assert_allclose(ps.mean(0)[~random], exact[~random], rtol=1e-10, atol=1e-14)


def test_score_function_gaussian_mc_z_test():
    g, th = gauss_graph(False)
    exact = scg.expected_gradient(g, th, quadrature=5)
    s = scg.sample(g, th, seed=4, batch=20000)
    ps = scg.surrogate(s, record=False).per_sample
    z = (ps.mean(0) - exact) / (ps.std(0, ddof=1) / np.sqrt(s.batch))
    assert np.all(np.abs(z) < 4.5), z


def test_surrogate_hessian_is_biased_dice_is_not():
    oracle = pytest.importorskip("proofs.oracle")
    g, th = chain_graph()
    _, _, H = oracle.scg_expected_cost(g, th, order=2)
    s = scg.enumerate_outcomes(g, th)
    Hs = scg.weighted_mean(s.weights, scg.surrogate_hessian(s))
    Hd = scg.weighted_mean(s.weights, scg.dice(s, order=2).per_sample_hessian)
    assert np.abs(Hs - H).max() > 1e-3 * np.abs(H).max()
    np.testing.assert_allclose(Hd, H, rtol=1e-10, atol=1e-12 * np.abs(H).max())


def test_a_graph_without_cost_is_rejected():
    """Issue 19 A: a graph with no Cost node gave a gradient of exactly 0 (looks like a result)."""
    import array_api_compat.numpy as anp
    from refimpl.backend import from_numpy

    g = scg.Graph()
    g.input("x", from_numpy(np.array([0.3, -0.7]), anp, "float64"))
    g.mlp("f1", ["x"], [3, 3])
    g.categorical("w1", "f1")
    s = scg.sample(g, g.init_theta(0, anp, "float64"), seed=0, batch=4)
    with pytest.raises(ValueError, match="Cost node"):
        scg.surrogate(s)
    with pytest.raises(ValueError, match="Cost node"):
        scg.dice(s)


def test_per_row_inputs_are_per_row():
    """Mutation survivor (issue 19): a (B, n) input is one row per sample; treated as a constant
    it would broadcast wrongly and no test noticed."""
    import array_api_compat.numpy as anp
    from refimpl.backend import from_numpy

    rows = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    g = scg.Graph()
    g.input("x", from_numpy(rows, anp, "float64"))
    g.mlp("f", ["x"], [1])
    g.cost("c", ["f"])
    th = g.init_theta(0, anp, "float64")
    s = scg.sample(g, th, seed=0, batch=3)
    c = np.asarray(s.cost("c")).ravel()
    assert c.shape == (3,) and len(set(np.round(c, 12))) == 3
    with pytest.raises(ValueError, match="rows"):
        scg.sample(g, th, seed=0, batch=4)
