import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refimpl as ri
from refimpl.backend import to_numpy
from proofs.strategies import instances, ALL_ACTIVATIONS
from proofs.theorem import compare


@given(instances(activations=ALL_ACTIVATIONS))
def test_bp_matches_autograd(inst):
    pytest.importorskip("torch")
    from proofs import oracle

    upd, _ = ri.rules.BP(loss=inst.loss).updates(inst.net, None, inst.x, inst.y)
    dW, db, L = oracle.bp_gradients(inst.net, inst.x, inst.y, inst.loss)
    ev = compare(list(upd.dW) + list(upd.db), dW + db, "oracle_grad", "float64")
    assert ev.holds, ev
    np.testing.assert_allclose(float(upd.record["loss"]), L, rtol=1e-12)


@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_bp_every_activation_and_loss(activation, loss):
    torch = pytest.importorskip("torch")
    from proofs import oracle

    net = ri.Network.init([5, 7, 6, 4], activation=activation, output_activation="linear", seed=3, bias_scale=0.2)
    g = np.random.default_rng(0)
    x = g.standard_normal((9, 5))
    y = g.standard_normal((9, 4)) if loss == "mse" else g.integers(0, 4, 9)
    upd, _ = ri.rules.BP(loss=loss).updates(net, None, x, y)
    dW, db, _ = oracle.bp_gradients(net, x, y, loss)
    for a, e in zip(list(upd.dW) + list(upd.db), dW + db):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12 * np.max(np.abs(e)))


def test_record_deltas_are_dL_da():
    torch = pytest.importorskip("torch")
    from proofs.oracle import torch_params, torch_activation, torch_loss

    net = ri.Network.init([3, 4, 2], activation="sigmoid", seed=1)
    x = np.random.default_rng(1).standard_normal((3, 3))
    y = np.random.default_rng(2).standard_normal((3, 2))
    upd, _ = ri.rules.BP().updates(net, None, x, y)
    Ws, bs = torch_params(net, requires_grad=False)
    a1 = (torch.tensor(x) @ Ws[0].T + bs[0]).requires_grad_(True)
    a2 = (torch.sigmoid(a1) @ Ws[1].T + bs[1])
    a2.retain_grad()
    torch_loss("mse", a2, torch.tensor(y)).backward()
    np.testing.assert_allclose(upd.record["delta"][1], a1.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(upd.record["delta"][2], a2.grad.numpy(), rtol=1e-12)
    assert upd.record["delta"][0] is None


def test_backends_give_the_same_updates(backend):
    net = ri.Network.init([4, 6, 3], activation="tanh", seed=2, bias_scale=0.1)
    g = np.random.default_rng(3)
    x, y = g.standard_normal((5, 4)), g.standard_normal((5, 3))
    ref, _ = ri.rules.BP().updates(net, None, x, y)
    upd, _ = ri.rules.BP().updates(backend.net(net), None, backend(x), backend(y))
    for a, e in zip(list(upd.dW) + list(upd.db), list(ref.dW) + list(ref.db)):
        assert type(a) is type(backend(x)) or backend.name == "numpy:readonly"
        np.testing.assert_allclose(to_numpy(a), e, rtol=1e-13, atol=1e-15)
    labels = g.integers(0, 3, 5)
    ref, _ = ri.rules.BP(loss="ce").updates(net, None, x, labels)
    upd, _ = ri.rules.BP(loss="ce").updates(backend.net(net), None, backend(x), backend(labels))
    np.testing.assert_allclose(to_numpy(upd.dW[0]), ref.dW[0], rtol=1e-13, atol=1e-15)


def test_float32_is_kept():
    net = ri.Network.init([4, 6, 3], seed=2, dtype="float32")
    x = np.ones((2, 4), dtype=np.float32)
    upd, _ = ri.rules.BP().updates(net, None, x, np.zeros((2, 3), dtype=np.float32))
    assert all(d.dtype == np.float32 for d in upd.dW + upd.db)


def test_bad_inputs():
    net = ri.Network.init([4, 6, 3], seed=2)
    x = np.ones((2, 4))
    with pytest.raises(ValueError, match="loss: unknown name 'hinge'"):
        ri.rules.BP(loss="hinge")
    with pytest.raises(ValueError, match=r"y: expected shape \(2, 3\)"):
        ri.rules.BP().updates(net, None, x, np.ones((2, 2)))
    with pytest.raises(ValueError, match="y: expected 2 rows"):
        ri.rules.BP().updates(net, None, x, np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 4\)"):
        ri.rules.BP().updates(net, None, np.ones((2, 5)), np.ones((2, 3)))
    y = np.ones((2, 3))
    y[1, 2] = np.inf
    with pytest.raises(ValueError, match="y: expected finite"):
        ri.rules.BP().updates(net, None, x, y)


def test_read_only_inputs_and_weights_are_left_alone():
    """Issue 17: the forward pass adds the bias in place on its own product and the backward products
    are fused on temporaries; read-only weights, biases and batch still work and are not modified.
    The result equals the unfused formula (delta = (delta_up @ W) * (1 - tanh(a)^2)) exactly."""
    import numpy as np
    import refimpl as ri

    net = ri.Network.init([5, 7, 6, 3], activation="tanh", seed=2)
    g = np.random.default_rng(0)
    x, y = g.standard_normal((4, 5)), g.standard_normal((4, 3))
    arrays = list(net.weights) + list(net.biases) + [x, y]
    copies = [a.copy() for a in arrays]
    for a in arrays:
        a.setflags(write=False)
    upd, _ = ri.rules.BP().updates(net, None, x, y)
    for a, c in zip(arrays, copies):
        assert np.array_equal(a, c)
    tr = net.forward(x)
    d = upd.record["output_grad"]
    for l in range(3, 0, -1):
        if l < 3:
            d = (d @ net.weights[l]) * (1 - np.tanh(tr.a[l]) ** 2)
        assert np.array_equal(upd.record["delta"][l], d)
