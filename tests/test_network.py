import numpy as np
import pytest

import refimpl as ri
from refimpl.backend import to_numpy


def test_init_shapes_and_defaults():
    net = ri.Network.init([4, 8, 8, 3], seed=0)
    assert net.depth == 3 and net.sizes == (4, 8, 8, 3)
    assert net.activations == ("tanh", "tanh", "linear")
    assert [tuple(W.shape) for W in net.weights] == [(8, 4), (8, 8), (3, 8)]
    assert [tuple(b.shape) for b in net.biases] == [(8,), (8,), (3,)]
    assert net.weights[0].dtype == np.float64


def test_init_is_deterministic_and_seed_dependent():
    a, b, c = (ri.Network.init([5, 7, 2], seed=s) for s in (1, 1, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a.weights, b.weights))
    assert not np.array_equal(a.weights[0], c.weights[0])


@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4)])
def test_orthogonal_init_is_semi_orthogonal(shape):
    n_out, n_in = shape
    W = ri.Network.init([n_in, n_out], init="orthogonal", seed=3).weights[0]
    if n_out <= n_in:
        np.testing.assert_allclose(W @ W.T, np.eye(n_out), atol=1e-13)
    else:
        np.testing.assert_allclose(W.T @ W, np.eye(n_in), atol=1e-13)


def test_init_scales():
    n = 400
    W = ri.Network.init([n, n], init="xavier", seed=0).weights[0]
    assert np.max(np.abs(W)) <= np.sqrt(6 / (2 * n))
    np.testing.assert_allclose(W.var(), 2 / (2 * n), rtol=0.05)  # U(-a, a) has variance a^2/3
    np.testing.assert_allclose(ri.Network.init([n, n], init="he", seed=0).weights[0].var(), 2 / n, rtol=0.05)
    np.testing.assert_allclose(ri.Network.init([n, n], init="normal", seed=0).weights[0].var(), 1 / n, rtol=0.05)


def test_haar_orthogonal_is_haar_distributed():
    # For a Haar orthogonal 2x2 matrix the rotation angle is uniform: its mean cos is ~0.
    g = np.random.default_rng(0)
    from refimpl.network import haar_orthogonal

    c = [haar_orthogonal(g, 2, 2)[0, 0] for _ in range(4000)]
    assert abs(np.mean(c)) < 0.05


def test_forward_matches_torch_linear():
    torch = pytest.importorskip("torch")
    from proofs.oracle import torch_forward, torch_params

    net = ri.Network.init([3, 5, 4, 2], activation="elu", seed=4, bias_scale=0.5)
    x = np.random.default_rng(5).standard_normal((7, 3))
    Ws, bs = torch_params(net, requires_grad=False)
    hs = torch_forward(Ws, bs, net.activations, torch.tensor(x), return_all=True)
    tr = net.forward(x)
    for l in range(4):
        np.testing.assert_allclose(tr.h[l], hs[l].numpy(), rtol=1e-13, atol=1e-14)
    assert len(tr.a) == len(tr.h) == 4 and tr.a[0] is x


def test_forward_backends_and_no_mutation(backend):
    net = ri.Network.init([3, 5, 2], activation="tanh", seed=1, bias_scale=0.3)
    x = np.random.default_rng(2).standard_normal((4, 3))
    bnet = backend.net(net)
    bx = backend(x)
    out = bnet.forward(bx).h[-1]
    assert type(out) is type(bx)
    np.testing.assert_allclose(to_numpy(out), net.forward(x).h[-1], rtol=1e-14, atol=1e-15)


def test_init_on_backends_gives_same_numbers(backend):
    if backend.name == "numpy:readonly":
        pytest.skip("init creates arrays; nothing read-only to test")
    a = ri.Network.init([3, 4, 2], seed=9, xp=backend.base)
    b = ri.Network.init([3, 4, 2], seed=9)
    for Wa, Wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(to_numpy(Wa), Wb)


def test_float32():
    net = ri.Network.init([3, 4, 2], seed=0, dtype="float32")
    out = net.forward(np.ones((2, 3), dtype=np.float32)).h[-1]
    assert out.dtype == np.float32
    with pytest.raises(TypeError, match=r"x: expected dtype float32"):
        net.forward(np.ones((2, 3)))


def test_to_converts_backend_and_dtype():
    net = ri.Network.init([3, 4, 2], seed=0)
    n32 = net.to(dtype="float32")
    assert n32.dtype == np.float32
    strict = net.to("array_api_strict")
    np.testing.assert_array_equal(to_numpy(strict.weights[1]), net.weights[1])


class TestBadInput:
    def net(self):
        return ri.Network.init([3, 4, 2], seed=0)

    def test_shape_mismatch_between_layers(self):
        W1, W2 = np.ones((4, 3)), np.ones((2, 5))
        with pytest.raises(ValueError, match=r"weights\[1\]: expected 4 columns"):
            ri.Network((W1, W2), (np.zeros(4), np.zeros(2)), ("tanh", "linear"))

    def test_bias_shape(self):
        with pytest.raises(ValueError, match=r"biases\[0\]: expected shape \(4,\)"):
            ri.Network((np.ones((4, 3)),), (np.zeros(3),), ("tanh",))

    def test_counts(self):
        with pytest.raises(ValueError, match="biases: expected 1 arrays"):
            ri.Network((np.ones((4, 3)),), (), ("tanh",))
        with pytest.raises(ValueError, match="activations: expected 1 names"):
            ri.Network((np.ones((4, 3)),), (np.zeros(4),), ("tanh", "tanh"))
        with pytest.raises(TypeError, match="single string"):
            ri.Network((np.ones((4, 3)),), (np.zeros(4),), "tanh")

    def test_x_width(self):
        with pytest.raises(ValueError, match=r"x: expected shape \(B, 3\)"):
            self.net().forward(np.ones((2, 4)))
        with pytest.raises(ValueError, match=r"x: expected shape \(B, 3\)"):
            self.net().forward(np.ones(3))

    def test_non_finite(self):
        W = np.ones((4, 3))
        W[1, 1] = np.inf
        with pytest.raises(ValueError, match=r"weights\[0\]: expected finite"):
            ri.Network((W,), (np.zeros(4),), ("tanh",))
        x = np.ones((2, 3))
        x[0, 0] = np.nan
        with pytest.raises(ValueError, match="x: expected finite values"):
            self.net().forward(x)

    def test_unknown_activation_and_init(self):
        with pytest.raises(ValueError, match="unknown name 'gelu'"):
            ri.Network.init([3, 2], output_activation="gelu")
        with pytest.raises(ValueError, match="unknown initialisation 'kaiming'"):
            ri.Network.init([3, 2], init="kaiming")
        with pytest.raises(ValueError, match="sizes"):
            ri.Network.init([3])
        with pytest.raises(ValueError, match="dtype"):
            ri.Network.init([3, 2], dtype="float16")

    def test_mixed_dtypes(self):
        with pytest.raises(TypeError, match=r"biases\[0\]: expected dtype float64"):
            ri.Network((np.ones((4, 3)),), (np.zeros(4, dtype=np.float32),), ("tanh",))

    def test_integer_weights(self):
        with pytest.raises(TypeError, match="float32 or float64"):
            ri.Network((np.ones((4, 3), dtype=np.int64),), (np.zeros(4, dtype=np.int64),), ("tanh",))

    def test_mixed_backends(self):
        import array_api_strict as xs

        with pytest.raises(TypeError, match=r"one array library.*biases\[0\]"):
            ri.Network((np.ones((4, 3)),), (xs.zeros(4, dtype=xs.float64),), ("tanh",))
        with pytest.raises(TypeError, match="x: array_api_strict"):
            self.net().forward(xs.ones((2, 3), dtype=xs.float64))


def test_api_edges_name_the_argument():
    """Issue 19 A: raw numpy errors or silent NaN on bad arguments."""
    with pytest.raises(ValueError, match="seed"):
        ri.Network.init([3, 2], seed=-1)
    with pytest.raises(ValueError, match="gain"):
        ri.Network.init([3, 2], gain=-1)
    net = ri.Network.init([3, 2])
    with pytest.raises(ValueError, match="empty batch"):
        ri.rules.BP(loss="mse").updates(net, ri.rules.BP().init(net), np.zeros((0, 3)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="momentum"):
        ri.optim.SGD(lr=0.1, momentum=2)
    with pytest.raises(ValueError, match="momentum"):
        ri.optim.SGD(lr=0.1, momentum=1.0)
