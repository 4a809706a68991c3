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


def test_pinned_solver_regressions():
    """Instances on which the steady-state solver once failed (pinned):
    * output_error_exact, verify seed 11 index 3 (tanh, 6-4-2-1-4, g_som_I 0.1): equal-weight damping
      0.8 oscillated at the edge of stability (14 000 iterations; now step halving in place);
    * a linear 1-1-5-1-5 net with transposed top-down weights and g_som_I = 2 whose dynamics are
      stable but on which damped Jacobi diverged for every damping tried (0.8, 0.5, 0.3)."""
    from proofs.verify import instance_seed
    from refimpl.rules import microcircuit as M

    thm = [t for t in PM.THEOREMS if t.name == "microcircuit.output_error_exact"][0]
    inst = thm.draw(RngDrawer(np.random.default_rng(instance_seed(thm.name, 11, 3))), "numpy", "float64")
    assert thm.check(inst).holds
    inst = PM.draw_microcircuit(RngDrawer(np.random.default_rng(132)), "numpy", "float64",
                                top_down="transposed", phis=("linear",))
    for w in (0.8, 0.5, 0.3):
        rule = PM._rule(inst, g_som=PM._g_som_for(1e-3), damping=w)
        pot = M.steady_state(rule, inst.net, rule.init(inst.net), inst.x, inst.y)
        assert pot.residual <= 1e-12


def test_review_no_stable_nudged_fixed_point_is_redrawn_and_solver_does_not_freeze():
    """Review of issue 7 (verify --seed 7 --instances 30, output_error_exact instance 26: tanh 1-1-2-4-6,
    g_som_I = 0, lateral weights perturbed by 0.1).
    * Its nudged dynamics have no stable fixed point (forward Euler keeps |du/dt| ~ 0.3 up to t = 2000),
      so the check failed on a draw outside the theorem's condition: _draw_pb2 now redraws.
    * Its free dynamics do settle (Euler reaches 3e-16), but the solver halved its step in place every
      200 iterations (w 0.8 -> 2e-7) and froze with the residual at 3.07e-2 for any max_iter; it now
      halves only while there is no progress or the displacements are not aligned, never below w/64."""
    from dataclasses import replace
    from proofs.verify import instance_seed
    from refimpl.rules import microcircuit as M

    thm = [t for t in PM.THEOREMS if t.name == "microcircuit.output_error_exact"][0]
    d = RngDrawer(np.random.default_rng(instance_seed(thm.name, 7, 26)))
    inst = PM.draw_microcircuit(d, "numpy", "float64")
    inst = replace(inst, params=dict(inst.params, g_som=d.real(0.01, 2.0)))
    assert inst.net.sizes == (1, 1, 2, 4, 6) or list(inst.net.sizes) == [1, 1, 2, 4, 6]
    rule, state, nudged = PM._nudged(inst)
    assert not nudged.residual <= 1e-3
    free = M.steady_state(rule, inst.net, state, inst.x, None, max_iter=20000)
    assert free.residual <= 1e-10
    redrawn = thm.draw(RngDrawer(np.random.default_rng(instance_seed(thm.name, 7, 26))), "numpy", "float64")
    assert thm.check(redrawn).holds and not thm.control(redrawn).holds
