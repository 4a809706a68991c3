import numpy as np
import pytest

import refimpl as ri
from refimpl.backend import to_numpy
from refimpl.ode.field import NetworkField


def _net(td=False, d=3, seed=0):
    return ri.Network.init([d + int(td), 5, 4, d], activation="tanh", seed=seed, gain=1.3, bias_scale=0.3)


@pytest.mark.parametrize("td", [False, True])
def test_vjp_and_jvp_match_autograd(backend, td):
    torch = pytest.importorskip("torch")
    from proofs import oracle

    net = _net(td)
    gen = np.random.default_rng(1)
    x, v, u = (gen.standard_normal((4, 3)) for _ in range(3))
    t = 0.37
    fld = NetworkField(backend.net(net), td)
    tape = fld.tape(backend(x), t)
    xbar, Wbar, bbar = fld.vjp(tape, backend(v))
    _, Ju = fld.jvp(backend(x), t, backend(u))
    Ws, bs = oracle.torch_params(net)
    xt = torch.tensor(x, requires_grad=True)
    inp = torch.cat([xt, torch.full((4, 1), t, dtype=torch.float64)], 1) if td else xt
    out = oracle.torch_forward(Ws, bs, net.activations, inp)
    np.testing.assert_allclose(to_numpy(tape.out), out.detach().numpy(), rtol=1e-12, atol=1e-13)
    (out * torch.tensor(v)).sum().backward()
    np.testing.assert_allclose(to_numpy(xbar), xt.grad.numpy(), rtol=1e-12, atol=1e-13)
    for mine, W in zip(Wbar + bbar, Ws + bs):
        np.testing.assert_allclose(to_numpy(mine), W.grad.numpy(), rtol=1e-12, atol=1e-13)
    # jvp: <v, J u> = <J^T v, u> per sample
    lhs = np.sum(v * to_numpy(Ju), axis=1)
    rhs = np.sum(to_numpy(xbar) * u, axis=1)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-13)


def test_tape_bytes():
    fld = NetworkField(_net())
    tape = fld.tape(np.zeros((2, 3)))
    # inputs of the 3 layers (3 + 5 + 4 columns) and pre-activations (5 + 4 + 3), 2 rows, 8 bytes
    assert tape.nbytes == 2 * 8 * (3 + 5 + 4 + 5 + 4 + 3)


def test_shape_errors():
    with pytest.raises(ValueError, match="sizes\\[0\\] == 3"):
        NetworkField(ri.Network.init([4, 3], seed=0))
    with pytest.raises(ValueError, match="sizes\\[0\\] == 4"):
        NetworkField(ri.Network.init([3, 3], seed=0), time_dependent=True)
    with pytest.raises(TypeError, match="Network"):
        NetworkField("net")
    fld = NetworkField(_net())
    with pytest.raises(ValueError, match="x0: expected shape"):
        fld.check_state(np.zeros((2, 4)))
    with pytest.raises(TypeError, match="dtype"):
        fld.check_state(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="finite"):
        fld.check_state(np.full((2, 3), np.nan))
