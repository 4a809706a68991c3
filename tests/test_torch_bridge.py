"""Network.from_torch: a torch nn.Sequential convnet maps one-to-one (forward, BP = autograd);
unsupported modules are refused by index."""

import numpy as np
import pytest

import refimpl as ri
from refimpl.layers import Conv2d, Linear, MaxPool2d, AvgPool2d

torch = pytest.importorskip("torch")
nn = torch.nn

# float64 forward and gradients of one convnet: each entry a sum of <= a few hundred O(1) terms,
# rounding ~1e-14; the done-when of issue 15 asks 1e-10.
TOL = 1e-10


def _model(pool):
    torch.manual_seed(0)
    P = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), P,
        nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(5 * 2 * 2, 7), nn.ELU(alpha=0.5), nn.Linear(7, 3)).double()


@pytest.mark.parametrize("pool", ["max", "avg", None])
def test_from_torch_reproduces_forward_and_autograd(pool):
    if pool is None:
        torch.manual_seed(1)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Sigmoid(), nn.Conv2d(4, 2, 1),
                              nn.Flatten(), nn.Linear(2 * 3 * 3, 3)).double()
    else:
        model = _model(pool)
    net = ri.Network.from_torch(model, input_shape=(3, 8, 8))
    assert net.dtype == np.float64
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8))
    y = np.random.default_rng(1).standard_normal((4, 3))
    np.testing.assert_allclose(net(x), model(torch.tensor(x)).detach().numpy(), rtol=TOL, atol=TOL)
    upd, _ = ri.rules.BP(loss="mse").updates(net, None, x, y)
    out = model(torch.tensor(x))
    (0.5 * ((out - torch.tensor(y)) ** 2).sum(1).mean()).backward()
    weighted = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    for i, m in enumerate(weighted):
        assert upd.dW[i].shape == tuple(m.weight.shape)
        np.testing.assert_allclose(upd.dW[i], m.weight.grad.numpy(), rtol=TOL, atol=TOL)
        np.testing.assert_allclose(upd.db[i], m.bias.grad.numpy(), rtol=TOL, atol=TOL)


def test_from_torch_layers_activations_and_dtype():
    net = ri.Network.from_torch(_model("max").float(), input_shape=(3, 8, 8))
    assert net.dtype == np.float32
    assert net.activations == ("tanh", "relu", "elu(0.5)", "linear")
    assert isinstance(net.layers[0], Conv2d) and net.layers[0].pool == MaxPool2d(2)
    assert net.layers[1].stride == (2, 2) and net.layers[1].pool is None
    assert isinstance(net.layers[2], Linear) and net.layers[2].in_shape == (5, 2, 2)
    assert ri.Network.from_torch(_model("avg"), (3, 8, 8), dtype="float32").dtype == np.float32
    assert net.layers[0].describe() == "conv2d(3->4,k3,s1,p1)+maxpool2"


def test_from_torch_without_bias_and_mlp():
    model = nn.Sequential(nn.Linear(4, 5, bias=False), nn.LeakyReLU(0.2), nn.Linear(5, 2)).double()
    net = ri.Network.from_torch(model, input_shape=(4,))
    assert net.is_dense and net.activations == ("leaky_relu(0.2)", "linear")
    np.testing.assert_array_equal(net.biases[0], np.zeros(5))


def test_from_torch_copies_weights():
    model = _model("max")
    net = ri.Network.from_torch(model, (3, 8, 8))
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not np.allclose(net.weights[0], model[0].weight.detach().numpy())


@pytest.mark.parametrize("model, match", [
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2)),
     r"module\[1\]: BatchNorm2d is not supported"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.Flatten(), nn.Linear(2, 2)),
     r"module\[0\]: Conv2d with groups=1, dilation=\(2, 2\)"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding="same"), nn.Flatten(), nn.Linear(32, 2)),
     r"module\[0\]: Conv2d padding='same'"),
    (lambda: nn.Sequential(nn.Linear(16, 4), nn.MaxPool2d(2)), r"module\[1\]: MaxPool2d must follow a Conv2d"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, padding=1), nn.Flatten(), nn.Linear(2, 2)),
     r"module\[1\]: MaxPool2d with padding=1"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), r"last weighted module must be Linear"),
    (lambda: nn.Sequential(nn.Linear(16, 4), nn.Tanh(), nn.ReLU(), nn.Linear(4, 2)),
     r"module\[2\]: activation ReLU must directly follow"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(9, 2)), r"weights\[1\]: expected 8 columns"),
    (lambda: nn.Sequential(nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Linear(8, 2)), r"weights\[0\]: expected 1 input channels"),
    (lambda: nn.Sequential(nn.Softplus(beta=2)), r"module\[0\]: Softplus with beta=2"),
])
def test_from_torch_refuses_naming_the_module(model, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ri.Network.from_torch(model().double(), input_shape=(1, 4, 4))


def test_from_torch_refuses_a_non_sequential():
    with pytest.raises(TypeError, match="module: expected a torch.nn.Sequential"):
        ri.Network.from_torch(nn.Linear(3, 2), input_shape=(3,))
