import numpy as np
import pytest

from refimpl import scg
from .helpers import chain_graph, gauss_graph


def test_first_order_dice_equals_surrogate_without_baselines():
    for g, th in (chain_graph(), gauss_graph(True), gauss_graph(False)):
        s = scg.sample(g, th, seed=7, batch=8)
        d1, d2 = scg.dice(s, order=1), scg.dice(s, order=2)
        sur = scg.surrogate(s, record=False)
        np.testing.assert_allclose(d1.per_sample, sur.per_sample, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(d2.per_sample, sur.per_sample, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(d1.value, s.total_cost())
        assert d2.per_sample_hessian.shape == (8, g.n_params, g.n_params)
        np.testing.assert_allclose(d2.per_sample_hessian, np.swapaxes(d2.per_sample_hessian, 1, 2), atol=1e-13)


def test_dice_hessian_with_gaussian_nodes_matches_oracle():
    """Pathwise and score-function Gaussians, cubic cost: 3 / 4 nodes integrate the Hessian
    integrands exactly (degree <= 2k - 1 in the noise... score terms add degree 4 at order 2)."""
    oracle = pytest.importorskip("proofs.oracle")
    for reparam, n in ((True, 3), (False, 5)):
        g, th = gauss_graph(reparam)
        _, _, H = oracle.scg_expected_cost(g, th, quadrature=20, order=2)
        s = scg.enumerate_outcomes(g, th, quadrature=n)
        Hd = scg.weighted_mean(s.weights, scg.dice(s, order=2).per_sample_hessian)
        np.testing.assert_allclose(Hd, H, rtol=1e-10, atol=1e-12 * np.abs(H).max())


def test_order_is_validated():
    g, th = chain_graph()
    with pytest.raises(ValueError, match="order"):
        scg.dice(scg.sample(g, th, seed=0, batch=2), order=3)
