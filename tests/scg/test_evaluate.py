import numpy as np
import pytest

from refimpl import scg
from refimpl.backend import to_numpy
from .helpers import chain_graph, gauss_graph


def test_enumeration_weights_sum_to_one_and_match_the_oracle():
    oracle = pytest.importorskip("proofs.oracle")
    pytest.importorskip("torch")
    g, th = chain_graph()
    s = scg.enumerate_outcomes(g, th)
    assert s.batch == 3 * 4 == scg.n_outcomes(g)
    np.testing.assert_allclose(float(np.sum(s.weights)), 1.0, rtol=1e-14)
    np.testing.assert_allclose(s.weights, oracle.scg_outcome_weights(g, th), rtol=1e-13)
    g2, th2 = gauss_graph(False)
    s2 = scg.enumerate_outcomes(g2, th2, quadrature=7)
    np.testing.assert_allclose(s2.weights, oracle.scg_outcome_weights(g2, th2, 7), rtol=1e-12)


def test_sample_is_reproducible_and_backend_independent(backend):
    g0, th0 = chain_graph()
    g, th = chain_graph(xp=backend.xp)
    a = scg.sample(g, th, seed=5, batch=7)
    b = scg.sample(g0, th0, seed=5, batch=7)
    for w in g.stochastic:
        np.testing.assert_array_equal(to_numpy(a.values[w]), to_numpy(b.values[w]))
    np.testing.assert_allclose(to_numpy(a.total_cost()), to_numpy(b.total_cost()), rtol=1e-12)
    sur_a, sur_b = scg.surrogate(a), scg.surrogate(b)
    np.testing.assert_allclose(to_numpy(sur_a.per_sample), to_numpy(sur_b.per_sample), rtol=1e-12, atol=1e-14)


def test_evaluate_given_values_and_shape_errors():
    g, th = chain_graph()
    s = scg.sample(g, th, seed=0, batch=3)
    e = scg.evaluate(g, th, {w: s.values[w] for w in g.stochastic})
    np.testing.assert_allclose(e.total_cost(), s.total_cost())
    with pytest.raises(ValueError, match="missing"):
        scg.evaluate(g, th, {})
    with pytest.raises(ValueError, match="batch"):
        scg.sample(g, th, seed=0, batch=0)
    with pytest.raises(ValueError, match="max_rows"):
        scg.enumerate_outcomes(g, th, max_rows=5)


def test_float32_is_kept_and_mixed_dtypes_are_refused():
    from .helpers import chain_graph as cg

    g, th = cg(dtype="float32")
    assert th.dtype == np.float32
    s = scg.sample(g, th, seed=0, batch=4)
    sur = scg.surrogate(s)
    assert sur.per_sample.dtype == np.float32 and s.total_cost().dtype == np.float32
    g64, th64 = cg()
    ref = scg.surrogate(scg.sample(g64, th64, seed=0, batch=4)).per_sample
    np.testing.assert_allclose(sur.per_sample, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="dtype"):
        scg.sample(g, th64, seed=0, batch=2)


def test_evaluate_refuses_values_that_are_not_outcomes(backend):
    """Review: non-finite, non-outcome (e.g. 0.5 for a Bernoulli, non-one-hot categorical rows) and
    mixed-dtype values of the stochastic nodes were accepted and gave NaN / meaningless gradients."""
    g0, th0 = chain_graph()
    s = scg.sample(g0, th0, seed=0, batch=3)
    g, th = chain_graph(xp=backend.xp)
    vals = {w: backend(to_numpy(s.values[w])) for w in g.stochastic}
    e = scg.evaluate(g, th, vals)
    np.testing.assert_allclose(to_numpy(e.total_cost()), to_numpy(s.total_cost()), rtol=1e-12)
    cat, ber = g.stochastic  # chain_graph: categorical w1 -> Bernoulli w2
    for name, bad, err, match in [
        (cat, 0.5 * to_numpy(s.values[cat]), ValueError, "one-hot"),
        (ber, 0.5 * to_numpy(s.values[ber]), ValueError, "0, 1"),
        (ber, np.where(to_numpy(s.values[ber]) > 0, np.nan, 0.0), ValueError, "finite"),
    ]:
        with pytest.raises(err, match=match):
            scg.evaluate(g, th, dict(vals, **{name: backend(bad)}))
    if backend.base == "numpy":
        with pytest.raises(TypeError, match="dtype"):
            scg.evaluate(g, th, dict(vals, **{ber: to_numpy(s.values[ber]).astype(np.float32)}))
