"""The microcircuit theorems' helpers: instance drawing and the BP-limit oracle."""

import numpy as np
import pytest

import refimpl as ri
from proofs import microcircuit as PM
from proofs.theorem import RngDrawer
from refimpl.rules import Microcircuit

torch = pytest.importorskip("torch")


def test_draw_gives_zero_bias_effective_networks():
    for seed in range(5):
        inst = PM.draw_microcircuit(RngDrawer(np.random.default_rng(seed)), "numpy", "float64")
        net = inst.net
        assert 2 <= net.depth <= 4 and net.activations[-1] == "linear"
        assert all(np.all(np.asarray(b) == 0) for b in net.biases)
        Microcircuit().init(net)  # accepted by the rule


def test_bp_limit_oracle_is_mse_autograd_for_linear_output_rate():
    from proofs import oracle

    net = ri.Network.init([3, 5, 2], activation="softplus", output_activation="linear", init="normal", seed=2)
    g = np.random.default_rng(0)
    x, y = g.standard_normal((4, 3)), g.standard_normal((4, 2))
    got = PM.bp_limit_gradients(Microcircuit(output_rate="linear"), net, x, y)
    ref, _, _ = oracle.bp_gradients(net, x, y, "mse")
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # phi at the output weights each output error by phi'(u_N) = sigmoid(u_N) for softplus
    phi_out = PM.bp_limit_gradients(Microcircuit(), net, x, y)
    uN = np.asarray(net(x))
    w = 0.5 * (1 + np.tanh(0.5 * uN))
    h1 = np.asarray(net.forward(x).h[1])
    np.testing.assert_allclose(phi_out[1], (w * (uN - y)).T @ h1 / 4, rtol=1e-12, atol=1e-14)


def test_noise_floor_is_small_for_ordinary_instances():
    inst = PM.draw_microcircuit(RngDrawer(np.random.default_rng(3)), "numpy", "float64", top_down="transposed")
    rule = PM._rule(inst, g_som=PM._g_som_for(1e-3))
    upd, _ = rule.updates(inst.net, rule.init(inst.net), inst.x, inst.y)
    assert PM._noise_floor(upd.record["nudged"], inst.net.depth, inst.net.dtype) < PM.MAX_LIMIT_TOL
