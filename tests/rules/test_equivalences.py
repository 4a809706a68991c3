"""Cross-family identities: two families' implementations of the same object must agree.

TP through exact inverses exists twice, written from two sources: ``gaitprop.TPInverse`` (GAIT-prop's
C1 baseline: tau_L = y, tau_{l-1} = (f^-1(tau_l) - b_l) inv(W_l)^T) and ``target_prop.TP`` with inverse
feedback (Lee et al.: t_L = h_L - beta e_L, t_{l-1} = g_l(t_l) with g_l(y) = f^-1(y) Q_l^T + c_l). With
mse, beta = 1 (per-sample sum), Q_l = inv(W_l) and c_l = -b_l inv(W_l)^T the two give the same targets.
"""

import dataclasses

import numpy as np
from hypothesis import given, strategies as st

import refimpl as ri
from proofs.strategies import draw_network
from proofs.theorem import HypothesisDrawer


@given(st.data())
def test_tp_inverse_of_gaitprop_equals_tp_with_inverse_feedback(data):
    d = HypothesisDrawer(data)
    net = draw_network(d, kind="invertible", activations=("tanh", "sigmoid", "leaky_relu", "linear"),
                       output_activations=("linear",), depth=(2, 4), width=(1, 6))
    gen = np.random.default_rng(d.seed())
    x = 0.3 * gen.standard_normal((d.integer(1, 6), net.sizes[0]))
    h = net(x)
    y = h + 0.01 * gen.standard_normal(h.shape)  # targets stay inside every activation's range
    t_gait = ri.rules.TPInverse().targets(net, ri.rules.TPInverse().init(net, seed=0), x, y)
    tp = ri.rules.TP(beta=1.0, loss="mse", reduction="sum", feedback_activation="inverse")
    state = dataclasses.replace(tp.init(net, seed=0),
                                Q=tuple(np.linalg.inv(W) for W in net.weights),
                                c=tuple(-b @ np.linalg.inv(W).T for W, b in zip(net.weights, net.biases)))
    t_tp = tp.targets(net, state, x, y)
    for l in range(1, net.depth + 1):
        scale = max(1.0, float(np.max(np.abs(t_tp[l]))))
        # rounding: each layer inverts a W of condition <= 4 (draw_network's cond_max): a few eps per layer
        np.testing.assert_allclose(t_gait[l], t_tp[l], rtol=1e-10, atol=1e-12 * scale)
