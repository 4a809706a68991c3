"""The Gauss-Newton target oracle (proofs.oracle.gauss_newton_targets) and target_prop helpers."""

import numpy as np
import pytest
from hypothesis import given

import refimpl as ri
from proofs.strategies import instances

torch = pytest.importorskip("torch")
from proofs import oracle  # noqa: E402


@given(instances(activations=("tanh", "sigmoid", "linear", "softplus"), depth=(2, 4), batch=(1, 5)))
def test_gn_target_solves_the_linearised_problem(inst):
    """Jbar (t - h) = -beta e (consistent when Jbar has full row rank) and t - h is in row(Jbar)."""
    net, L = inst.net, inst.net.depth
    e = oracle.output_errors(net, inst.x, inst.y, inst.loss, "sum")
    h = net.forward(inst.x).h
    for l in range(1, L):
        t = oracle.gauss_newton_targets(net, inst.x, inst.y, inst.loss, l, 0.3)
        J = oracle.layer_jacobians(net, inst.x, l, L)
        d = t - np.asarray(h[l])
        for b in range(d.shape[0]):
            P = np.linalg.pinv(J[b]) @ J[b]  # projector on row(Jbar)
            np.testing.assert_allclose(P @ d[b], d[b], atol=1e-10 * (1 + np.abs(d[b]).max()))
            rhs = -0.3 * e[b]
            proj = J[b] @ np.linalg.pinv(J[b]) @ rhs
            np.testing.assert_allclose(J[b] @ d[b], proj, atol=1e-9 * (1 + np.abs(rhs).max()))


def test_gn_target_conventions_and_damping():
    net = ri.Network.init([5, 6, 4, 3], activation="tanh", seed=0, bias_scale=0.1)
    g = np.random.default_rng(0)
    x, y = g.standard_normal((4, 5)), g.standard_normal((4, 3))
    h = net.forward(x).h
    e = oracle.output_errors(net, x, y, "mse", "sum")
    np.testing.assert_allclose(e, np.asarray(h[3]) - y, rtol=1e-13)
    np.testing.assert_allclose(oracle.output_errors(net, x, y, "mse", "mean"), e / 4, rtol=1e-13)
    np.testing.assert_allclose(oracle.gauss_newton_targets(net, x, y, "mse", 3, 0.5), np.asarray(h[3]) - 0.5 * e)
    t0 = oracle.gauss_newton_targets(net, x, y, "mse", 1, 0.5)
    np.testing.assert_allclose(oracle.gauss_newton_targets(net, x, y, "mse", 1, 0.5, damping=1e-10), t0, atol=1e-8)
    np.testing.assert_allclose(oracle.gauss_newton_targets(net, x, y, "mse", 1, 0.5, reduction="mean"),
                               oracle.gauss_newton_targets(net, x, y, "mse", 1, 0.125), rtol=1e-12)
    # large damping: Jbar^T e / lam (the BP direction)
    lam = 1e8
    J = oracle.layer_jacobians(net, x, 1, 3)
    td = oracle.gauss_newton_targets(net, x, y, "mse", 1, 0.5, damping=lam)
    np.testing.assert_allclose((np.asarray(h[1]) - td) * lam / 0.5, np.einsum("bji,bj->bi", J, e), rtol=1e-6)
    with pytest.raises(ValueError, match="layer"):
        oracle.gauss_newton_targets(net, x, y, "mse", 0, 0.5)
    with pytest.raises(ValueError, match="damping"):
        oracle.gauss_newton_targets(net, x, y, "mse", 1, 0.5, damping=-1.0)


def test_tp_weight_step_is_the_gn_weight_step_for_linear_layers():
    """Spec A4 (corrected): -beta dW_l / ||h_{l-1}||^2 = min-norm GN step on W_l, exactly, any beta."""
    from proofs.target_prop import _gn_weight_step
    from refimpl.rules.target_prop import TP

    g = np.random.default_rng(3)
    Ws = [np.linalg.qr(g.standard_normal((4, 4)))[0] * 1.2 for _ in range(3)]
    net = ri.Network(tuple(Ws), tuple(0.1 * g.standard_normal(4) for _ in range(3)), ("linear",) * 3)
    x, y = g.standard_normal((1, 4)), g.standard_normal((1, 4))
    rule = TP(beta=0.7, feedback_activation="inverse")
    upd, _ = rule.updates(net, rule.exact_inverse_state(net), x, y)
    h = net.forward(x).h
    for l in (1, 2, 3):
        step = -0.7 * upd.dW[l - 1] / float(np.sum(np.asarray(h[l - 1]) ** 2))
        np.testing.assert_allclose(step, _gn_weight_step(net, x, y, "mse", l, 0.7), rtol=1e-10, atol=1e-13)


def test_local_conv_oracle_agrees_with_the_dense_oracle_and_from_torch():
    """proofs.target_prop's Gauss-Newton targets on image-shaped layers agree with proofs.oracle's on
    a dense net; the shared oracle's gradients (used by the conv draws) are autograd of the torch
    module a convnet came from."""
    from proofs import target_prop as P

    net = ri.Network.init([4, 5, 3], activation="tanh", seed=0, bias_scale=0.2)
    g = np.random.default_rng(0)
    x, y = g.standard_normal((3, 4)), g.standard_normal((3, 3))
    np.testing.assert_allclose(P._torch_gn_targets(net, x, y, "mse", 1, 0.3),
                               oracle.gauss_newton_targets(net, x, y, "mse", 1, 0.3), rtol=1e-12, atol=1e-14)
    nn = torch.nn
    torch.manual_seed(0)
    mod = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 1),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2, 3)).double()
    cnet = ri.Network.from_torch(mod, (1, 8, 8))
    xc = g.standard_normal((2, 1, 8, 8))
    yc = g.standard_normal((2, 3))
    dW, db, _ = oracle.bp_gradients(cnet, xc, yc, "mse")
    (0.5 * ((mod(torch.tensor(xc)) - torch.tensor(yc)) ** 2).sum(1).mean()).backward()
    mods = [m for m in mod if isinstance(m, (nn.Conv2d, nn.Linear))]
    for i, m in enumerate(mods):
        np.testing.assert_allclose(dW[i], m.weight.grad.numpy(), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(db[i], m.bias.grad.numpy(), rtol=1e-13, atol=1e-15)
