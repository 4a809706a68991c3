import numpy as np
import pytest

import refimpl as ri

torch = pytest.importorskip("torch")
from proofs import oracle  # noqa: E402


def test_layer_jacobians_match_finite_differences():
    net = ri.Network.init([3, 4, 2], activation="tanh", seed=0, bias_scale=0.2)
    x = np.random.default_rng(0).standard_normal((2, 3))
    J = oracle.output_jacobians(net, x)
    assert J.shape == (2, 2, 3)
    eps = 1e-6
    for k in range(3):
        e = np.zeros(3)
        e[k] = eps
        fd = (net(x + e) - net(x - e)) / (2 * eps)
        np.testing.assert_allclose(J[:, :, k], fd, rtol=1e-7, atol=1e-9)


def test_oracle_gradcheck_of_its_forward():
    # The oracle's forward is plain torch; gradcheck confirms autograd through it (float64).
    net = ri.Network.init([2, 3, 2], activation="softplus", seed=1)
    Ws, bs = oracle.torch_params(net)
    x = torch.tensor(np.random.default_rng(1).standard_normal((2, 2)), requires_grad=True)
    f = lambda x: oracle.torch_forward(Ws, bs, net.activations, x)
    assert torch.autograd.gradcheck(f, (x,))


def test_finite_difference_helpers():
    f = lambda s: np.exp(1.0 + s)
    assert abs(oracle.central_difference(f, 1e-4) - np.e) < 1e-7
    assert abs(oracle.forward_difference(f, 1e-4) - np.e) > 1e-5


def test_bad_jacobian_range():
    net = ri.Network.init([2, 3, 2], seed=1)
    with pytest.raises(ValueError, match="frm, to"):
        oracle.layer_jacobians(net, np.ones((1, 2)), 2, 1)


def test_softplus_is_exact_above_torchs_threshold():
    # Regression: torch's F.softplus returns its input for a > 20 (threshold), off by log1p(e^-a):
    # the gradient then differed from refimpl's exact sigmoid by 2e-9 relative at a = 20.5 and
    # bp.matches_autograd failed there. The oracle evaluates softplus as logaddexp(a, 0).
    from proofs.theorem import compare

    for a in (15.0, 20.5, 22.0, 40.0):
        net = ri.Network((np.eye(2), np.array([[a, 0.0]])), (np.zeros(2), np.zeros(1)), ("linear", "softplus"))
        x, y = np.array([[1.0, 0.5]]), np.zeros((1, 1))
        upd, _ = ri.rules.BP().updates(net, ri.rules.EmptyState(), x, y)
        dW, db, _ = oracle.bp_gradients(net, x, y, "mse")
        assert compare(list(upd.dW) + list(upd.db), dW + db, "oracle_grad", "float64").holds, a


# --- convolutional layers ------------------------------------------------------------------------

def _conv_net(arch="c3k3s2p1+mp2 c2k2p1+ap2,s1 l5 l3", shape=(2, 8, 8), act="tanh"):
    arch = arch.replace("ap2,s1", "ap2s1")
    return ri.Network.build(shape, arch, activation=act, seed=3, bias_scale=0.3)


def test_conv_forward_equals_torch_sequential():
    import torch
    import torch.nn as nn

    net = _conv_net()
    seq = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Tanh(), nn.MaxPool2d(2),
                        nn.Conv2d(3, 2, 2, padding=1), nn.Tanh(), nn.AvgPool2d(2, 1), nn.Flatten(),
                        nn.Linear(net.sizes[2], 5), nn.Tanh(), nn.Linear(5, 3)).double()
    mods = [m for m in seq if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for m, W, b in zip(mods, net.weights, net.biases):
            m.weight.copy_(torch.tensor(W))
            m.bias.copy_(torch.tensor(b))
    x = np.random.default_rng(0).standard_normal((4, 2, 8, 8))
    Ws, bs = oracle.torch_params(net, requires_grad=False)
    got = oracle.net_forward(net, Ws, bs, torch.tensor(x)).numpy()
    np.testing.assert_allclose(got, seq(torch.tensor(x)).detach().numpy(), rtol=1e-13, atol=1e-14)


def test_conv_toeplitz_is_the_jacobian_of_torch_conv2d():
    import torch
    from refimpl.layers import conv_toeplitz

    for arch, shape in [("c3k3s2p1 l2", (2, 5, 6)), ("c2k2s1p0 l2", (1, 4, 4)), ("c2k1s2p1 l2", (3, 3, 5))]:
        net = ri.Network.build(shape, arch, seed=1)
        lay, W = net.layer(1), net.weights[0]
        f = lambda h: torch.nn.functional.conv2d(h.reshape((1,) + shape), torch.tensor(W),
                                                 stride=lay.stride, padding=lay.padding).reshape(-1)
        J = torch.autograd.functional.jacobian(f, torch.zeros(int(np.prod(shape)), dtype=torch.float64))
        np.testing.assert_array_equal(conv_toeplitz(lay, W), J.numpy())


def test_avgpool_backward_spreads_evenly_as_torch():
    import torch
    from refimpl.layers import AvgPool2d

    gen = np.random.default_rng(1)
    for k, s, H, W in [(2, 2, 4, 6), (2, 1, 3, 3), (3, 1, 5, 4), ((2, 3), (1, 2), 4, 5)]:
        pool = AvgPool2d(k, s)
        z = gen.standard_normal((2, 3, H, W))
        Ho, Wo = pool.output_hw(H, W)
        g = gen.standard_normal((2, 3, Ho, Wo))
        zt = torch.tensor(z, requires_grad=True)
        torch.nn.functional.avg_pool2d(zt, pool.kernel_size, pool.stride).backward(torch.tensor(g))
        np.testing.assert_allclose(pool.backward(np, g, z), zt.grad.numpy(), rtol=1e-14, atol=1e-15)
        # even spread: every entry of a window gets g / (kh kw); the total is conserved
        assert np.isclose(pool.backward(np, g, z).sum(), g.sum())


def test_forward_tangents_of_conv_units_match_finite_differences():
    net = _conv_net(act="softplus")
    gen = np.random.default_rng(4)
    x = gen.standard_normal((2, 2, 8, 8))
    v = gen.standard_normal((2, 2 * 8 * 8))
    hs, us, zs, uzs = oracle.forward_tangents(net, x, v, units=True)
    t = 1e-6
    hp, _, zp, _ = oracle.forward_tangents(net, x + t * v.reshape(x.shape), v, units=True)
    hm, _, zm, _ = oracle.forward_tangents(net, x - t * v.reshape(x.shape), v, units=True)
    for l in range(1, net.depth + 1):
        np.testing.assert_allclose((hp[l] - hm[l]) / (2 * t), us[l], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose((zp[l] - zm[l]) / (2 * t), uzs[l], rtol=1e-6, atol=1e-8)
    assert zs[1].shape == (2,) + net.layer(1).out_shape and hs[1].shape == (2,) + net.layer(1).h_shape


def test_layer_jacobians_of_a_conv_net_match_finite_differences():
    net = _conv_net()
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8))
    J = oracle.output_jacobians(net, x)
    assert J.shape == (2, 3, 2 * 8 * 8)
    eps = 1e-6
    for k in (0, 37, 100):
        e = np.zeros(2 * 8 * 8)
        e[k] = eps
        e = e.reshape(2, 8, 8)
        fd = (net(x + e) - net(x - e)) / (2 * eps)
        np.testing.assert_allclose(J[:, :, k], fd, rtol=1e-6, atol=1e-9)
