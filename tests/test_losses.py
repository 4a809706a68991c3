import numpy as np
import pytest

from refimpl import losses
from refimpl.backend import to_numpy


def _data(seed, B=5, n=4):
    g = np.random.default_rng(seed)
    return g.standard_normal((B, n)), g.standard_normal((B, n)), g.integers(0, n, size=B)


@pytest.mark.parametrize("name", ["mse", "ce"])
def test_value_and_grad_match_torch(name):
    torch = pytest.importorskip("torch")
    from proofs.oracle import torch_loss

    h, y, labels = _data(0)
    target = y if name == "mse" else np.eye(4)[labels]
    ht = torch.tensor(h, requires_grad=True)
    L = torch_loss(name, ht, torch.tensor(target))
    L.backward()
    loss = losses.get(name)
    np.testing.assert_allclose(loss.value(h, target), L.item(), rtol=1e-13)
    np.testing.assert_allclose(loss.grad(h, target), ht.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(loss.error(h, target), h.shape[0] * ht.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_ce_integer_labels_equal_one_hot():
    h, _, labels = _data(1)
    ce = losses.get("ce")
    np.testing.assert_allclose(ce.value(h, labels), ce.value(h, np.eye(4)[labels]), rtol=1e-15)
    np.testing.assert_allclose(ce.grad(h, labels), ce.grad(h, np.eye(4)[labels]), rtol=1e-15)


def test_ce_stable_for_large_logits():
    h = np.array([[1000.0, 0.0, -1000.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert np.isfinite(losses.get("ce").value(h, np.array([2])))


@pytest.mark.parametrize("name", ["mse", "ce"])
def test_backends(name, backend):
    h, y, labels = _data(2)
    target = y if name == "mse" else np.eye(4)[labels]
    loss = losses.get(name)
    np.testing.assert_allclose(to_numpy(loss.grad(backend(h), backend(target))), loss.grad(h, target), rtol=1e-14)
    if name == "ce":
        np.testing.assert_allclose(to_numpy(loss.grad(backend(h), backend(labels))), loss.grad(h, target), rtol=1e-14)


def test_bad_inputs():
    h, y, labels = _data(3)
    with pytest.raises(ValueError, match="unknown name 'l1'"):
        losses.get("l1")
    with pytest.raises(ValueError, match=r"y: expected shape \(5, 4\)"):
        losses.get("mse").value(h, y[:, :3])
    with pytest.raises(ValueError, match=r"y: integer labels must lie in \[0, 3\]"):
        losses.get("ce").value(h, labels + 4)
    with pytest.raises(ValueError, match="one-hot"):
        losses.get("ce").value(h, y)
    bad = y.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="y: expected finite"):
        losses.get("mse").value(h, bad)
    with pytest.raises(TypeError, match="y: expected dtype float64"):
        losses.get("mse").value(h, y.astype(np.float32))
