"""refimpl.layers: conv and pooling against torch and against the unrolled (Toeplitz) matrix, on
every backend; the adjoint identity; bad input named."""

import itertools

import numpy as np
import pytest

import refimpl as ri
from refimpl.backend import to_numpy
from refimpl.layers import (AvgPool2d, Conv2d, Linear, MaxPool2d, conv_toeplitz, parse_architecture)

# Exact identities in float64: every entry is a sum of at most C*kh*kw (<= 27 here) products of
# O(1) numbers, so rounding is <= ~30 ulp of the largest term; 1e-12 absolute / relative leaves
# a factor ~100 and still catches any wrong index (errors O(1)).
TOL = 1e-12

GEOMETRIES = [  # (C, H, W), out, kernel, stride, padding
    ((2, 7, 6), 3, (3, 3), (1, 1), (0, 0)),
    ((2, 7, 6), 3, (3, 2), (2, 1), (1, 0)),
    ((1, 8, 8), 4, (2, 2), (2, 2), (0, 0)),
    ((3, 5, 5), 2, (1, 1), (2, 2), (1, 1)),
    ((2, 6, 7), 2, (3, 3), (2, 2), (1, 1)),   # stride does not divide: transpose must crop to 6x7
]


def _bound(geom, seed=0):
    (C, H, W), Co, k, s, p = geom
    g = np.random.default_rng(seed)
    Wt = g.standard_normal((Co, C) + k)
    lay = Conv2d(stride=s, padding=p).bind((C, H, W), Wt, "test")
    return lay, Wt, g


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_conv_equals_toeplitz_forward_transpose_weight_grad(geom, backend):
    lay, W, g = _bound(geom)
    B = 3
    h = g.standard_normal((B,) + lay.in_shape)
    d = g.standard_normal((B,) + lay.out_shape)
    M = g.standard_normal(W.shape)
    T, TM = conv_toeplitz(lay, W), conv_toeplitz(lay, M)
    xp = backend.xp
    a = to_numpy(lay.apply(xp, backend(W), backend(h)))
    np.testing.assert_allclose(a.reshape(B, -1), h.reshape(B, -1) @ T.T, rtol=TOL, atol=TOL)
    gi = to_numpy(lay.transpose(xp, backend(M), backend(d)))
    assert gi.shape == (B,) + lay.in_shape
    np.testing.assert_allclose(gi.reshape(B, -1), d.reshape(B, -1) @ TM, rtol=TOL, atol=TOL)
    # weight gradient: d<d, apply(W, h)>/dW, from the Toeplitz form by linearity in W
    dW = to_numpy(lay.weight_grad(xp, backend(d), backend(h)))
    ref = np.zeros_like(W)
    for idx in itertools.product(*map(range, W.shape)):
        E = np.zeros_like(W)
        E[idx] = 1.0
        ref[idx] = np.sum(d.reshape(B, -1) * (h.reshape(B, -1) @ conv_toeplitz(lay, E).T))
    np.testing.assert_allclose(dW, ref, rtol=TOL, atol=TOL)


def test_toeplitz_control_detects_a_flipped_kernel():
    # the negative control of the identity above: the Toeplitz matrix of the spatially flipped
    # kernel (a true convolution instead of torch's cross-correlation) does not reproduce apply()
    lay, W, g = _bound(GEOMETRIES[0])
    h = g.standard_normal((2,) + lay.in_shape)
    a = lay.apply(np, W, h).reshape(2, -1)
    T_flipped = conv_toeplitz(lay, W[:, :, ::-1, ::-1])
    assert np.max(np.abs(a - h.reshape(2, -1) @ T_flipped.T)) > 1e-2


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_conv_matches_torch(geom):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    lay, W, g = _bound(geom, seed=1)
    h = g.standard_normal((2,) + lay.in_shape)
    d = g.standard_normal((2,) + lay.out_shape)
    ht = torch.tensor(h, requires_grad=True)
    Wt = torch.tensor(W, requires_grad=True)
    a = F.conv2d(ht, Wt, stride=lay.stride, padding=lay.padding)
    np.testing.assert_allclose(lay.apply(np, W, h), a.detach().numpy(), rtol=TOL, atol=TOL)
    (a * torch.tensor(d)).sum().backward()
    np.testing.assert_allclose(lay.transpose(np, W, d), ht.grad.numpy(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(lay.weight_grad(np, d, h), Wt.grad.numpy(), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("pool", [MaxPool2d(2), MaxPool2d(3, 1), AvgPool2d(2), AvgPool2d(3, 2), MaxPool2d((2, 1))])
def test_pooling_matches_torch(pool):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    g = np.random.default_rng(2)
    z = g.standard_normal((2, 3, 7, 7)) if pool.kernel_size[0] == 3 else g.standard_normal((2, 3, 6, 6))
    zt = torch.tensor(z, requires_grad=True)
    fn = F.max_pool2d if isinstance(pool, MaxPool2d) else F.avg_pool2d
    h = fn(zt, pool.kernel_size, pool.stride)
    np.testing.assert_allclose(pool.forward(np, z), h.detach().numpy(), rtol=TOL, atol=TOL)
    gh = g.standard_normal(tuple(h.shape))
    (h * torch.tensor(gh)).sum().backward()
    np.testing.assert_allclose(pool.backward(np, gh, z), zt.grad.numpy(), rtol=TOL, atol=TOL)


def test_maxpool_ties_follow_torch_first_maximum():
    torch = pytest.importorskip("torch")
    z = np.zeros((1, 1, 4, 4))
    z[0, 0, 0, 1] = z[0, 0, 1, 0] = 2.0          # a tie inside the first window
    z[0, 0, 2:, 2:] = 1.0                        # a four-way tie
    zt = torch.tensor(z, requires_grad=True)
    torch.nn.functional.max_pool2d(zt, 2).sum().backward()
    got = MaxPool2d(2).backward(np, np.ones((1, 1, 2, 2)), z)
    np.testing.assert_array_equal(got, zt.grad.numpy())
    assert got[0, 0, 0, 1] == 1 and got[0, 0, 1, 0] == 0 and got[0, 0, 2, 2] == 1


def test_pool_backward_is_the_adjoint_of_forward_for_avg():
    g = np.random.default_rng(3)
    z, gh = g.standard_normal((2, 2, 6, 6)), g.standard_normal((2, 2, 3, 3))
    p = AvgPool2d(2)
    assert abs(np.sum(p.forward(np, z) * gh) - np.sum(z * p.backward(np, gh, z))) < TOL


def test_linear_flattens_in_torch_order():
    torch = pytest.importorskip("torch")
    g = np.random.default_rng(4)
    h = g.standard_normal((2, 3, 2, 2))
    W = g.standard_normal((5, 12))
    lay = Linear().bind((3, 2, 2), W, "t")
    ref = torch.nn.Flatten()(torch.tensor(h)).numpy() @ W.T
    np.testing.assert_allclose(lay.apply(np, W, h), ref, rtol=TOL)
    d = g.standard_normal((2, 5))
    assert lay.transpose(np, W, d).shape == (2, 3, 2, 2)


def test_parse_architecture():
    specs = parse_architecture("c8k3p1+mp2, c16k3s2 c4k1+ap2s1 l32 l10")
    assert [type(s).__name__ for s in specs] == ["Conv2d", "Conv2d", "Conv2d", "Linear", "Linear"]
    assert specs[0].pool == MaxPool2d(2) and specs[0].padding == (1, 1) and specs[0].out_channels == 8
    assert specs[1].stride == (2, 2) and specs[2].pool == AvgPool2d(2, 1)
    for bad in ["", "c8k3 x9", "c8k3", "l0"]:
        with pytest.raises(ValueError, match="architecture|out_features"):
            parse_architecture(bad)


# --- bad input ------------------------------------------------------------------------------------

def _w(*shape):
    return np.zeros(shape)


@pytest.mark.parametrize("build, match", [
    (lambda: ri.Network((_w(3, 2, 3, 3), _w(5, 48)), (_w(3), _w(5)), layers=(Conv2d(padding=1), Linear()),
                        input_shape=(1, 4, 4)), r"weights\[0\]: expected 1 input channels"),
    (lambda: ri.Network((_w(3, 1, 5, 5), _w(5, 3)), (_w(3), _w(5)), layers=(Conv2d(), Linear()),
                        input_shape=(1, 4, 4)), r"weights\[0\]: kernel 5x5 is larger than the padded input 4x4"),
    (lambda: ri.Network((_w(3, 1, 3, 3), _w(5, 47)), (_w(3), _w(5)), layers=(Conv2d(padding=1), Linear()),
                        input_shape=(1, 4, 4)), r"weights\[1\]: expected 48 columns"),
    (lambda: ri.Network((_w(3, 1, 3, 3), _w(5, 12)), (_w(3), _w(5)),
                        layers=(Conv2d(padding=1, pool=MaxPool2d(3)), Linear()), input_shape=(1, 4, 4)),
     r"weights\[0\]\.pool: pooling kernel \(3, 3\) with stride \(3, 3\) does not divide"),
    (lambda: ri.Network((_w(3, 1, 3, 3), _w(5, 48)), (_w(3), _w(5)), layers=(Conv2d(padding=1), Linear())),
     r"input_shape: a network whose first layer is a convolution needs input_shape"),
    (lambda: ri.Network((_w(5, 16), _w(3, 1, 3, 3)), (_w(5), _w(3)), layers=(Linear(), Conv2d()),
                        input_shape=(1, 4, 4)), r"layers\[1\]: the output layer must be Linear"),
    (lambda: Conv2d(stride=0), r"stride: expected an integer >= 1"),
    (lambda: Conv2d(padding=-1), r"padding: expected an integer >= 0"),
    (lambda: MaxPool2d(0), r"kernel_size: expected an integer >= 1"),
])
def test_bad_networks_are_named(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_stride_must_be_an_integer():
    with pytest.raises(TypeError, match="stride: expected an integer"):
        Conv2d(stride=1.5)


def test_wrong_input_shape_is_named():
    net = ri.Network.build((2, 6, 6), "c3k3p1+mp2 l4", seed=0)
    for bad in (np.zeros((2, 3, 6, 6)), np.zeros((2, 2, 5, 6)), np.zeros((2, 72))):
        with pytest.raises(ValueError, match=r"x: expected shape \(B, 2, 6, 6\)"):
            ri.rules.BP().updates(net, None, bad, np.zeros((2, 4)))


def test_dense_only_rules_refuse_conv_networks():
    net = ri.Network.build((1, 4, 4), "c2k3p1 l3", activation="tanh", seed=0)
    for rule in (ri.rules.Microcircuit(), ri.rules.CorInfoMax()):
        with pytest.raises(ValueError, match="dense"):
            rule.init(net, seed=0)
