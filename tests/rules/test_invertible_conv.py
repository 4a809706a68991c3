"""Invertible convolutions (issue 16): the per-patch inverse, C2's reconstruction correction, auxiliary
channels, the regulariser on the per-patch matrix, and the errors for layers that cannot be inverted."""

import math

import numpy as np
import pytest

import refimpl as ri
from refimpl.layers import Conv2d, Linear, MaxPool2d, conv_toeplitz, parse_architecture
from refimpl.network import haar_orthogonal
from refimpl.rules import gaitprop as G
from refimpl.rules import invertible_conv as IC

TOL = 1e-12  # float64, condition numbers <= 4, at most 9 overlapping patches: rounding ~1e-15


def _net(arch, shape=(1, 4, 4), act="leaky_relu", seed=0, init="orthogonal"):
    return ri.Network.build(shape, arch, activation=act, output_activation="linear", init=init, seed=seed,
                            bias_scale=0.1)


def test_tiling_conv_inverse_is_the_exact_inverse_of_the_unrolled_map():
    """stride = kernel, no padding: the conv is a bijection; g^-1(t) = T^-1 (f^-1(t) - b) for any t,
    whatever forward input is given (the correction (N - 1) x vanishes with N = 1)."""
    net = _net("c4k2s2 c16k2s2 l16", init="xavier")
    g = np.random.default_rng(1)
    for l in (2,):
        lay = net.layer(l)
        T = conv_toeplitz(lay, net.weights[l - 1])
        brep = np.repeat(net.biases[l - 1], lay.out_shape[1] * lay.out_shape[2])
        t = g.standard_normal((3,) + lay.out_shape)
        mine = IC.conv_inverse(net, l, t, g.standard_normal((3,) + lay.in_shape))
        a = net.activation(l).inverse(t).reshape(3, -1)
        ref = np.linalg.solve(T, (a - brep).T).T.reshape((3,) + lay.in_shape)
        np.testing.assert_allclose(mine, ref, rtol=TOL, atol=TOL)
        assert np.all(IC.multiplicity(np, lay, np.float64) == 1)


def test_overlapping_inverse_is_exact_at_the_forward_point_and_counts_overlaps_elsewhere():
    net = _net("c1k1 c4k2s1 l36", shape=(1, 3, 3), init="xavier")     # 1 -> 4 channels, k2 s1 on 3x3
    lay = net.layer(2)
    N = IC.multiplicity(np, lay, np.float64)[0, 0]
    np.testing.assert_array_equal(N, [[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    g = np.random.default_rng(2)
    x = g.standard_normal((2, 1, 3, 3))
    tr = net.forward(x)
    np.testing.assert_allclose(G.layer_inverse(net, 2, tr.z[2], forward_input=tr.h[1]), tr.h[1], atol=TOL)
    d = 0.1 * g.standard_normal(tr.h[1].shape)
    t = net.activation(2).f(net.pre_activation(2, tr.h[1] + d))
    np.testing.assert_allclose(IC.conv_inverse(net, 2, t, tr.h[1]), tr.h[1] + N * d, atol=TOL)
    gap = IC.reconstruction_gap(net, 2, tr.h[1], d)
    assert gap["c2"] == pytest.approx(gap["c2_predicted"], rel=1e-9) and gap["c2"] > 0.5
    assert gap["average"] < 1e-12 and gap["max_multiplicity"] == 4


def test_multiplicity_is_c2s_reconstruction_correction():
    """C2: rc = inverse(forward(ones)) with the inverse's correction still zero (x = ones, rc = ones)."""
    net = _net("c2k1 c18k3s1p1 l288", shape=(1, 4, 4), init="xavier")
    lay = net.layer(2)
    ones = np.ones((1,) + lay.in_shape)
    a = lay.apply(np, net.weights[1], ones)                                   # f^-1(f(conv(1) + b)) - b
    P = IC.patch_matrix(np, net.weights[1])
    rows = np.transpose(a, (0, 2, 3, 1)).reshape(-1, P.shape[0])
    rc = IC.col2im(np, lay, np.linalg.solve(P, rows.T).T, 1)
    np.testing.assert_allclose(rc, IC.multiplicity(np, lay, np.float64) * ones, atol=1e-12)
    # uncovered pixels (stride 2 > kernel 1): N = 0, the inverse returns the forward value
    net2 = _net("c2k1 c2k1s2 l8", shape=(1, 4, 4), init="xavier")
    N2 = IC.multiplicity(np, net2.layer(2), np.float64)[0, 0]
    np.testing.assert_array_equal(N2, [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])


def test_inverse_transpose_is_the_transposed_conv_with_the_inverse_patch_matrix():
    for init in ("orthogonal", "xavier"):
        net = _net("c2k3p1 c18k3s2p1+keep3 l12", shape=(1, 4, 4), init=init)
        lay, W = net.layer(2), net.weights[1]
        delta = np.random.default_rng(3).standard_normal((2,) + lay.out_shape)
        Minv = np.linalg.inv(IC.patch_matrix(np, W)).T.reshape(W.shape)
        mine = G.inverse_transpose(net, 2, delta)
        np.testing.assert_allclose(mine, lay.transpose(np, Minv, delta), atol=TOL)
        if init == "orthogonal":  # P orthogonal: inv(P).T = P, BP's transposed convolution
            np.testing.assert_allclose(mine, lay.transpose(np, W, delta), atol=TOL)


def test_gait_equals_bp_on_an_orthogonal_overlapping_convnet_with_auxiliary_channels():
    """The gamma -> 0 limit is BP (refimpl's, with the auxiliary outputs' labels = their forward
    values) for overlapping patches too: the correction makes dg^-1 the transposed conv with inv(P).T."""
    net = _net("c2k3p1 c18k3p1+keep2 c18k3s2p1 l72", act="leaky_relu")
    g = np.random.default_rng(4)
    x, y = g.standard_normal((3, 1, 4, 4)), g.standard_normal((3, 5))
    yy = np.concatenate([y, net(x)[:, 5:]], axis=1)
    bp, _ = ri.rules.BP().updates(net, None, x, yy)
    lim = G.gamma_limit(net, x, y, outputs=5)
    up, _ = G.GaitProp(gamma=1e-6, adaptive=True, outputs=5).updates(net, None, x, y)
    for a, b, c in zip(bp.dW, lim.dW, up.dW):
        assert a.shape == b.shape == c.shape
        np.testing.assert_allclose(b, a, atol=1e-13 * np.abs(a).max())
        assert np.linalg.norm(c - a) <= 1e-7 * np.linalg.norm(a)   # leaky-ReLU: rounding ~ L eps / gamma
    # auxiliary channels of layer 2 get their forward value as target: zero local error there
    assert up.record["targets"][2].shape == (3, 2, 4, 4)
    assert np.all(up.record["delta"][2][:, 2:] == 0)


def test_ortho_regulariser_acts_on_the_per_patch_matrix():
    net = _net("c2k3p1 c18k3s2p1+keep2 l8", init="xavier")
    for form in G.ORTHO_FORMS:
        up, _ = G.GaitProp(ortho=0.5, ortho_form=form).updates(net, None, np.ones((1, 1, 4, 4)), np.zeros((1, 8)))
        W = net.weights[1]
        P = IC.patch_matrix(np, W)
        np.testing.assert_allclose(up.record["ortho_grad"][1], G.ortho_gradient(P, form).reshape(W.shape))
        np.testing.assert_allclose(up.dW[1] - up.record["dW_local"][1], 0.5 * up.record["ortho_grad"][1])
        assert up.record["ortho_grad"][0] is None                    # layer 1: 2 x 9 patch matrix, not square


def test_keep_selects_channels_and_its_transpose_pads_zeros():
    lay = Conv2d(padding=1, keep=2).bind((1, 3, 3), np.zeros((5, 1, 3, 3)), "t")
    assert lay.h_shape == (2, 3, 3) and "keep2" in lay.describe()
    z, gh = np.random.default_rng(5).standard_normal((2, 5, 3, 3)), np.random.default_rng(6).standard_normal((2, 2, 3, 3))
    assert np.sum(lay.post(np, z) * gh) == pytest.approx(np.sum(z * lay.unpool(np, gh, z)))  # adjoint
    assert np.all(lay.unpool(np, gh, z)[:, 2:] == 0)
    assert parse_architecture("c9k3p1+keep2+mp2 l4")[0].keep == 2
    with pytest.raises(ValueError, match=r"weights\[0\]: keep = 6 channels passed on, but the layer has only 5"):
        Conv2d(keep=6).bind((1, 3, 3), np.zeros((5, 1, 3, 3)), "weights[0]")


@pytest.mark.parametrize("arch, act, match", [
    ("c2k3p1 c16k3p1 l32", "tanh", r"weights\[1\] \(conv2d\(2->16,k3,s1,p1\)\): .*per-patch matrix .*"
                                   r"expected out_channels = C_in\*kh\*kw = 2\*3\*3 = 18, got 16"),
    ("c2k3p1 c18k3p1+keep2+mp2 l8", "tanh", r"weights\[1\] .*pooling maxpool2 is not invertible"),
    ("c2k3p1 c18k3p1+keep2 l32", "relu", r"activations\[1\]: GaitProp inverts f_2, but 'relu' is not invertible"),
    ("c2k3p1 c18k3p1+keep2 l16", "tanh", r"weights\[2\]: GaitProp propagates targets down through layer 3, which must be square"),
])
def test_networks_that_cannot_be_inverted_are_named(arch, act, match):
    net = _net(arch, act=act, init="xavier")
    for rule in (G.GaitProp(), G.TPInverse()):
        with pytest.raises(ValueError, match=match.replace("GaitProp", type(rule).__name__)):
            rule.init(net)


def test_ill_conditioned_patch_matrix_is_named():
    net = _net("c2k3p1 c18k3p1+keep2 l32", act="tanh", init="orthogonal")
    W = net.weights[1].copy()
    W[0] = 1e-9 * W[0]                              # one patch direction almost lost: cond_2(P) = 1e9
    bad = net.replace(weights=(net.weights[0], W, net.weights[2]))
    with pytest.raises(ValueError, match=r"weights\[1\] \(conv2d.*per-patch matrix P_2 = W.reshape\(18, 18\), "
                                         r"but its condition number is 1e\+09"):
        G.GaitProp().updates(bad, None, np.zeros((1, 1, 4, 4)), np.zeros((1, 32)))
    G.GaitProp(max_cond=1e10).updates(bad, None, np.zeros((1, 1, 4, 4)), np.zeros((1, 32)))  # allowed if asked


def test_strict_backend_and_float32_run_the_conv_pass():
    strict = pytest.importorskip("array_api_strict")
    net = _net("c2k3p1 c18k3p1+keep2 c18k3s2p1 l72").to(xp="array_api_strict")
    x = strict.asarray(np.random.default_rng(7).standard_normal((2, 1, 4, 4)))
    y = strict.asarray(np.zeros((2, 3)))
    up, _ = G.GaitProp(gamma=1e-6, adaptive=True, outputs=3, ortho=0.1).updates(net, None, x, y)
    assert all(tuple(d.shape) == tuple(W.shape) for d, W in zip(up.dW, net.weights))
    net32 = _net("c2k3p1 c18k3p1+keep2 l32").to(dtype="float32")
    up32, _ = G.TPInverse(outputs=3).updates(net32, None, np.zeros((2, 1, 4, 4), np.float32), np.zeros((2, 3), np.float32))
    assert all(d.dtype == np.float32 for d in up32.dW)


def test_adaptive_gamma_counts_every_channel_of_z_as_c2():
    """C2 compute_adaptive_gamma: gamma_l = gamma sqrt(N) / ||t - h|| over the layer's whole output,
    auxiliary channels included (their difference is 0, but they count in N)."""
    net = _net("c2k3p1 c18k3s2p1+keep2 l8", act="tanh")
    g = np.random.default_rng(8)
    x, y = g.standard_normal((3, 1, 4, 4)), g.standard_normal((3, 3))
    up, _ = G.GaitProp(gamma=1e-5, adaptive=True, outputs=3).updates(net, None, x, y)
    tr, tau2 = up.record["trace"], up.record["targets"][2]
    diff = np.concatenate([tau2, tr.z[2][:, 2:]], axis=1) - tr.z[2]
    assert np.all(diff[:, 2:] == 0)
    expect = 1e-5 * math.sqrt(18 * 2 * 2) / np.linalg.norm(diff.reshape(3, -1), axis=1)
    np.testing.assert_allclose(up.record["gammas"][2][:, 0], expect, rtol=1e-12)
    np.testing.assert_allclose(up.record["multipliers"][1][:, 0],
                               up.record["multipliers"][2][:, 0] / expect, rtol=1e-12)


def test_bp_through_auxiliary_channels_and_pooling_is_torch_autograd():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    net = ri.Network.build((1, 6, 6), "c2k3p1 c18k3p1+keep3+mp2 l10", activation="tanh", seed=0)
    g = np.random.default_rng(9)
    x, y = g.standard_normal((4, 1, 6, 6)), np.eye(10)[[1, 2, 3, 4]]
    Ws = [torch.tensor(np.asarray(W), requires_grad=True) for W in net.weights]
    bs = [torch.tensor(np.asarray(b), requires_grad=True) for b in net.biases]
    h = torch.tanh(F.conv2d(torch.tensor(x), Ws[0], bs[0], padding=1))
    h = F.max_pool2d(torch.tanh(F.conv2d(h, Ws[1], bs[1], padding=1))[:, :3], 2)
    out = F.linear(h.reshape(4, -1), Ws[2], bs[2])
    F.cross_entropy(out, torch.tensor(y)).backward()
    upd, _ = ri.rules.BP(loss="ce").updates(net, None, x, y)
    for mine, W in zip(upd.dW, Ws):
        np.testing.assert_allclose(mine, W.grad.numpy(), atol=1e-13)
    assert np.all(upd.record["delta"][2][:, 3:] == 0)          # the auxiliary channels get no gradient
