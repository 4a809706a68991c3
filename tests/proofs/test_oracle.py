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
