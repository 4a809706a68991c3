"""The README's worked example (examples/scg_reinforce.py): constant-weight affine inputs, exact
mean and variances, and the ordering of variances it reports."""

import numpy as np
import pytest

from refimpl import scg


def test_reinforce_example_numbers():
    oracle = pytest.importorskip("proofs.oracle")
    ex = pytest.importorskip("examples.scg_reinforce")
    g, th = ex.build()
    E, grad = oracle.scg_expected_cost(g, th)
    s = scg.enumerate_outcomes(g, th)
    b = scg.optimal_constant_baseline(g, th, "a")
    var = {}
    for name, bl in {"none": {}, "const": {"a": scg.ConstantBaseline(E)}, "opt": {"a": scg.ConstantBaseline(b)},
                     "V": {"a": scg.FunctionBaseline(ex.state_value, ("logits", "negR_s"))}}.items():
        per = scg.surrogate(s, baselines=bl, record=False).per_sample
        np.testing.assert_allclose(scg.weighted_mean(s.weights, per), grad, rtol=1e-10, atol=1e-14)
        var[name] = float(scg.weighted_variance(s.weights, per))
    assert var["opt"] <= var["const"] < var["none"] and var["V"] < var["opt"]
    biased = {"a": scg.FunctionBaseline(lambda a: 2.0 * a[:, 0], ("a",), allow_biased=True)}
    per = scg.surrogate(s, baselines=biased, record=False).per_sample
    assert np.abs(scg.weighted_mean(s.weights, per) - grad).max() > 1e-2
