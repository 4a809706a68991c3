import numpy as np
import pytest

import refimpl as ri
from refimpl import ode
from refimpl.backend import to_numpy


def _setup(td=False, d=2, B=3, seed=0):
    net = ri.Network.init([d + int(td), 6, d], activation="tanh", seed=seed, gain=1.4, bias_scale=0.3)
    gen = np.random.default_rng(seed + 1)
    return net, gen.standard_normal((B, d)), gen.standard_normal((B, d))


def _flat(g):
    return np.concatenate([np.ravel(to_numpy(v)) for v in [g[0], *g[1], *g[2]]])


@pytest.mark.parametrize("td", [False, True])
@pytest.mark.parametrize("method", ["midpoint", "rk4", "bosh3", "dopri5", "dopri8"])
def test_symplectic_equals_backprop_and_shapes(td, method):
    net, x0, cot = _setup(td)
    gs = ode.gradients(net, x0, 1.0, 7, method, cot, "symplectic", time_dependent=td)
    gb = ode.gradients(net, x0, 1.0, 7, method, cot, "backprop", time_dependent=td)
    assert gs[0].shape == x0.shape
    assert [W.shape for W in gs[1]] == [W.shape for W in net.weights]
    assert [b.shape for b in gs[2]] == [b.shape for b in net.biases]
    np.testing.assert_allclose(_flat(gs), _flat(gb), rtol=1e-12, atol=1e-14)
    gc = ode.gradients(net, x0, 1.0, 7, method, cot, "checkpoint", time_dependent=td)
    np.testing.assert_array_equal(_flat(gc), _flat(gb))  # ACA is backprop, step by step


def test_backends_agree(backend):
    net, x0, cot = _setup(True)
    ref = ode.gradients(net, x0, 1.0, 4, "dopri5", cot, "symplectic", time_dependent=True)
    for mode in ode.MODES:
        g = ode.gradients(backend.net(net), backend(x0), 1.0, 4, "dopri5", backend(cot), mode, time_dependent=True)
        r = ode.gradients(net, x0, 1.0, 4, "dopri5", cot, mode, time_dependent=True)
        np.testing.assert_allclose(_flat(g), _flat(r), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(_flat(ode.gradients(backend.net(net), backend(x0), 1.0, 4, "dopri5", backend(cot),
                                                   "backprop", time_dependent=True)), _flat(ref), rtol=1e-12,
                               atol=1e-14)


def test_callable_cotangent_is_the_loss_gradient_at_x1():
    net, x0, y = _setup()
    traj = ode.solve(net, x0, 1.0, 5, "rk4")
    mse = ri.losses.get("mse")
    g1 = ode.gradients(net, x0, 1.0, 5, "rk4", lambda x1: mse.grad(x1, y))
    g2 = ode.gradients(net, x0, 1.0, 5, "rk4", mse.grad(traj.x1, y))
    np.testing.assert_array_equal(_flat(g1), _flat(g2))


def test_adaptive_gradients_use_the_recorded_grid():
    net, x0, cot = _setup(True)
    traj = ode.solve(net, x0, 1.0, None, "dopri5", rtol=1e-5, atol=1e-7, time_dependent=True)
    ga = ode.gradients(net, x0, 1.0, None, "dopri5", cot, rtol=1e-5, atol=1e-7, time_dependent=True)
    gg = ode.gradients(net, x0, 1.0, traj.ts, "dopri5", cot, "backprop", time_dependent=True)
    np.testing.assert_allclose(_flat(ga), _flat(gg), rtol=1e-12, atol=1e-14)


def test_adjoint_is_close_but_not_exact():
    net, x0, cot = _setup()
    gs = _flat(ode.gradients(net, x0, 1.0, 10, "rk4", cot, "symplectic"))
    ga = _flat(ode.gradients(net, x0, 1.0, 10, "rk4", cot, "adjoint"))
    rel = np.max(np.abs(ga - gs)) / np.max(np.abs(gs))
    assert 1e-12 < rel < 1e-3


def test_memory_report():
    net, x0, cot = _setup()
    for mode, peak in (("backprop", 12 * 4), ("symplectic", 1), ("adjoint", 1), ("checkpoint", 4)):
        rep = ode.gradients_report(net, x0, 1.0, 12, "rk4", cot, mode).report
        assert rep.peak_tapes == peak, (mode, rep)
    rep = ode.gradients_report(net, x0, 1.0, 12, "dopri5", cot, "backprop").report
    assert rep.peak_tapes == 12 * 6  # the FSAL stage is never taped


def test_tangent_matches_finite_differences():
    net, x0, cot = _setup(True)
    fld = ode.NetworkField(net, True)
    grid = ode.solvers.uniform_grid(0, 1, 6)
    d0 = np.random.default_rng(5).standard_normal(x0.shape)
    _, ds = ode.tangent.tangent(fld, x0, grid, "rk4", d0)
    eps = 1e-6
    fd = (ode.solvers.solve_grid(fld, x0 + eps * d0, grid, "rk4").x1
          - ode.solvers.solve_grid(fld, x0 - eps * d0, grid, "rk4").x1) / (2 * eps)
    np.testing.assert_allclose(ds[-1], fd, rtol=1e-7, atol=1e-8)


def test_argument_errors():
    net, x0, cot = _setup()
    with pytest.raises(ValueError, match="mode"):
        ode.gradients(net, x0, 1.0, 4, "rk4", cot, "magic")
    with pytest.raises(ValueError, match="t1"):
        ode.solve(net, x0, 0.0, 4, "rk4")
    with pytest.raises(ValueError, match="from t0"):
        ode.solve(net, x0, 1.0, [0.0, 0.5, 0.9], "rk4")
    with pytest.raises(TypeError, match="steps"):
        ode.solve(net, x0, 1.0, True, "rk4")
    with pytest.raises(ValueError, match="no embedded pair"):
        ode.solve(net, x0, 1.0, None, "rk4")
    with pytest.raises(ValueError, match="cotangent: expected shape"):
        ode.gradients(net, x0, 1.0, 4, "rk4", cot[:, :1])
    with pytest.raises(ValueError, match="sizes"):
        ode.solve(net, x0, 1.0, 4, "rk4", time_dependent=True)


def test_inputs_are_not_mutated():
    net, x0, cot = _setup()
    x0.flags.writeable = False
    cot.flags.writeable = False
    for mode in ode.MODES:
        ode.gradients(net, x0, 1.0, 3, "dopri5", cot, mode)


def test_float32_stays_float32():
    net, x0, cot = _setup(True)
    net32 = net.to(dtype="float32")
    x32, c32 = x0.astype(np.float32), cot.astype(np.float32)
    traj = ode.solve(net32, x32, 1.0, None, "bosh3", rtol=1e-4, atol=1e-6, time_dependent=True)
    assert traj.x1.dtype == np.float32
    for mode in ode.MODES:
        g = ode.gradients(net32, x32, 1.0, 5, "rk4", c32, mode, time_dependent=True)
        assert g[0].dtype == np.float32 and all(W.dtype == np.float32 for W in g[1] + g[2])
    g64 = _flat(ode.gradients(net, x0, 1.0, 5, "rk4", cot, time_dependent=True))
    g32 = _flat(ode.gradients(net32, x32, 1.0, 5, "rk4", c32, time_dependent=True))
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5)


def test_cotangent_must_have_the_shape_of_x0():
    # review regression: a (1, d) cotangent for a (B, d) batch broadcast silently over the samples
    net, x0, cot = _setup(B=3)
    for mode in ode.MODES:
        with pytest.raises(ValueError, match=r"cotangent: expected the shape of x0 \(3, 2\)"):
            ode.gradients(net, x0, 1.0, 3, "rk4", cot[:1], mode)
    with pytest.raises(ValueError, match="cotangent: expected the shape of x0"):
        ode.gradients(net, x0, 1.0, 3, "rk4", lambda x1: x1[:1])
    with pytest.raises(ValueError, match="cotangent: expected the shape of x0"):
        ode.symplectic.grad_symplectic(ode.field.NetworkField(net), x0, (0.0, 0.5, 1.0), "rk4", cot[:2])


def test_steps_accepts_numpy_integers_and_rejects_strings():
    net, x0, cot = _setup()
    a = ode.gradients(net, x0, np.float64(1.0), np.int64(3), "rk4", cot)
    b = ode.gradients(net, x0, 1.0, 3, "rk4", cot)
    np.testing.assert_array_equal(_flat(a), _flat(b))
    with pytest.raises(TypeError, match="steps: expected an int"):
        ode.solve(net, x0, 1.0, "10", "rk4")
    with pytest.raises(ValueError, match="steps: expected a positive int"):
        ode.solve(net, x0, 1.0, np.int64(0), "rk4")


def test_overflow_is_an_error_not_nan_gradients():
    net = ri.Network((50.0 * np.eye(2),), (np.zeros(2),), ("linear",))
    x0 = np.ones((1, 2))
    with pytest.raises(FloatingPointError, match="non-finite"), np.errstate(all="ignore"):
        ode.gradients(net, x0, 1e6, 8, "rk4", x0, "adjoint")
    with pytest.raises(FloatingPointError, match="non-finite"), np.errstate(all="ignore"):
        ode.solve(net, x0, 1e9, 10, "rk4")
