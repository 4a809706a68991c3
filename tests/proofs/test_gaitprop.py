"""The helpers of proofs/gaitprop.py: the rounding model, the kink detector, the GN and BP references."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refimpl as ri
from refimpl.network import haar_orthogonal
from refimpl.rules.gaitprop import GaitProp
from proofs import gaitprop as P

torch = pytest.importorskip("torch")


def _net(seed, n, L, act, weights="orthogonal"):
    g = np.random.default_rng(seed)
    Ws = [g.standard_normal((n, n))]
    for _ in range(1, L):
        if weights == "orthogonal":
            Ws.append(haar_orthogonal(g, n, n))
        else:
            Ws.append(g.standard_normal((n, n)) / math.sqrt(n) + 2 * np.eye(n))
    return ri.Network(tuple(Ws), tuple(0.1 * g.standard_normal(n) for _ in range(L)), (act,) * L), g


@settings(max_examples=20)
@given(seed=st.integers(0, 2**31 - 1), L=st.integers(2, 6), n=st.integers(1, 10), adaptive=st.booleans())
def test_rounding_bound_bounds_the_identity_network_and_is_not_vacuous(seed, L, n, adaptive):
    """Linear networks have no kinks and no truncation: GAIT - BP is pure rounding, which the model
    must bound; and the bound must stay far below the O(1) errors a real discrepancy produces."""
    net, g = _net(seed, n, L, "linear")
    x, y = g.standard_normal((3, n)), g.standard_normal((3, n))
    gamma = 1e-6 if adaptive else 1e-2
    upd, _ = GaitProp(gamma=gamma, adaptive=adaptive).updates(net, None, x, y)
    bW, bb = P.rounding_bound(net, upd.record, adaptive)
    dW, db = P.bp_reference(net, x, y, "mse", n)
    for mine, ref, bound in zip(list(upd.dW) + list(upd.db), dW + db, bW + bb):
        diff = np.linalg.norm(mine - ref)
        assert diff <= bound + 1e-10 * np.linalg.norm(ref) + 1e-12
        assert bound <= 1e-3 * max(np.linalg.norm(ref), 1e-300) or np.linalg.norm(ref) < 1e-8


def test_kink_crossings_counts_sign_changes_of_the_nudge():
    net, g = _net(1, 8, 3, "leaky_relu(0.1)")
    x, y = g.standard_normal((8, 8)), 3 * g.standard_normal((8, 8))
    small, _ = GaitProp(gamma=1e-8).updates(net, None, x, y)
    big, _ = GaitProp(gamma=1.0).updates(net, None, x, y)
    assert P.kink_crossings(net, small.record) == 0
    u, h = big.record["nudged"][3], big.record["trace"].h[3]
    assert P.kink_crossings(net, big.record) >= int(np.sum((u > 0) != (h > 0))) > 0


def test_gn_targets_of_a_linear_network_are_the_inverse_product():
    """Independent of torch.func: for a linear network J_l = W_L ... W_{l+1}."""
    net, g = _net(2, 5, 4, "linear", weights="invertible")
    x, y = g.standard_normal((3, 5)), g.standard_normal((3, 5))
    gn = P.gn_targets(net, x, y, "mse", 5)
    h = net.forward(x).h
    e = h[-1] - y
    for l in range(1, 4):
        J = np.eye(5)
        for W in net.weights[l:]:
            J = W @ J
        np.testing.assert_allclose(gn[l], h[l] - e @ np.linalg.inv(J).T, rtol=1e-10, atol=1e-12)


def test_bp_reference_with_auxiliary_outputs_is_the_padded_mse_gradient():
    from proofs import oracle

    net, g = _net(3, 6, 3, "tanh")
    x, y = g.standard_normal((4, 6)), g.standard_normal((4, 2))
    dW, db = P.bp_reference(net, x, y, "mse", 2)
    full, fullb, _ = oracle.bp_gradients(net, x, np.concatenate([y, net(x)[:, 2:]], axis=1), "mse")
    for a, e in zip(dW + db, full + fullb):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-14)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), adaptive=st.booleans())
def test_rounding_bound_bounds_linear_conv_networks_and_is_not_vacuous(seed, adaptive):
    """Conv form of the rounding model: linear invertible convs (overlapping patches, auxiliary
    channels) have no kinks and no truncation, so GAIT - BP is rounding, which the bound must cover."""
    from proofs.theorem import RngDrawer
    inst = P._draw_conv(RngDrawer(np.random.default_rng(seed)), "numpy", "float64", ("linear",))
    k = inst.params["outputs"]
    gamma = 1e-6 if adaptive else 1e-2
    upd, _ = GaitProp(gamma=gamma, adaptive=adaptive, loss=inst.loss, outputs=k).updates(inst.net, None, inst.x, inst.y)
    bW, bb = P.rounding_bound(inst.net, upd.record, adaptive)
    dW, db = P.bp_reference(inst.net, inst.x, inst.y, inst.loss, k)
    for mine, ref, bound in zip(list(upd.dW) + list(upd.db), dW + db, bW + bb):
        scale = np.linalg.norm(ref)
        assert np.linalg.norm(mine - ref) <= bound + 1e-10 * scale + 1e-12
        assert bound <= 1e-2 * max(scale, 1e-300) or scale < 1e-8


def test_coverage_counts_patches_as_the_multiplicity_map():
    from refimpl.rules.invertible_conv import multiplicity
    for arch in ("c1k1 c9k3p1 l144", "c2k2 c8k2s2 l18", "c1k1 c4k2s1p1 l64", "c1k1 c1k1s2 l4"):
        net = ri.Network.build((1, 4, 4), arch, activation="linear", seed=0)
        lay = net.layer(2)
        assert P.coverage(lay).shape == lay.in_shape
        if lay.out_channels == lay.in_shape[0] * lay.kernel_size[0] * lay.kernel_size[1]:
            np.testing.assert_array_equal(P.coverage(lay), multiplicity(np, lay, np.float64)[0])
    net = ri.Network.build((1, 4, 4), "c1k1s2 l4", activation="linear", seed=0)
    np.testing.assert_array_equal(P.coverage(net.layer(1))[0], [[1, 0, 1, 0], [0] * 4, [1, 0, 1, 0], [0] * 4])
