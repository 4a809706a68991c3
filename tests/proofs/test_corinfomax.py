"""The CorInfoMax oracle pieces themselves: the implicit-differentiation gradient against finite
differences of the converged free phase, the objective gradients against finite differences, and
the information functions' domain errors."""

import dataclasses

import numpy as np
import pytest

import refimpl as ri
from refimpl.backend import to_numpy
from refimpl.rules import corinfomax as C

torch = pytest.importorskip("torch")

import proofs.corinfomax as M  # noqa: E402


def _setup(tied=False, seed=0):
    net = ri.Network.init([4, 5, 3], activation="relu", output_activation="relu", seed=seed, gain=0.5)
    net = net.replace(weights=tuple(np.abs(W) for W in net.weights))  # activity reaches every layer
    rule = C.CorInfoMax(lam=0.99, eps=0.2, g_lk=0.5, neural_lr=0.9 / (0.5 + 2 / 0.2))
    st = rule.init(net, seed=seed + 1)
    if tied:
        st = dataclasses.replace(st, Wb=(None,) + tuple(W.T for W in net.weights[1:]))
    g = np.random.default_rng(seed)
    x = g.uniform(0, 1, (3, 4))
    y = np.eye(3)[g.integers(0, 3, 3)]
    return rule, net, st, x, y


@pytest.mark.parametrize("tied", [False, True])
def test_implicit_gradient_matches_finite_differences(tied):
    rule, net, st, x, y = _setup(tied)
    sweeps = 900
    free = C.relax(rule, net, st, x, y, 0.0, sweeps)
    grads = M._interior_grad(rule, net, st, x, y, free.R)
    gen = np.random.default_rng(5)
    V = [gen.standard_normal(tuple(W.shape)) for W in net.weights]

    def cost(s):
        moved = net.replace(weights=tuple(W + s * v for W, v in zip(net.weights, V)))
        r = C.relax(rule, moved, st, x, y, 0.0, sweeps).R[-1]
        return 0.5 * float(np.sum((y - r) ** 2)) / x.shape[0]

    h = 1e-5
    fd = (cost(h) - cost(-h)) / (2 * h)
    exact = sum(float(np.sum(g * v)) for g, v in zip(grads, V))
    assert fd == pytest.approx(exact, rel=1e-6, abs=1e-10)


def test_objective_gradients_match_finite_differences():
    rule, net, st, x, y = _setup()
    g = np.random.default_rng(1)
    R = tuple(g.uniform(0.1, 0.9, (3, n)) for n in net.sizes[1:])
    grads = M.torch_objective_gradients(rule, net, st, x, R, y, 0.6, stop_gradient=False)

    def J(R):
        P, eps, gam = net.depth, rule.eps, (1 - rule.lam) / rule.lam
        r = (x,) + R
        out = 0.0
        for k in range(1, P + 1):
            B = to_numpy(st.B[k - 1])
            out += (gam if k == P else 2 * gam) / 2 * np.sum((r[k] @ B) * r[k])
            out -= np.sum((r[k] - r[k - 1] @ to_numpy(net.weights[k - 1]).T) ** 2) / (2 * eps)
            if k < P:
                out -= np.sum((r[k] - r[k + 1] @ to_numpy(st.Wb[k]).T) ** 2) / (2 * eps)
        return out - 0.3 * np.sum((y - r[P]) ** 2) - 0.5 * np.sum(r[P] ** 2)

    d = [g.standard_normal(a.shape) for a in R]
    h = 1e-5
    fd = (J(tuple(a + h * v for a, v in zip(R, d))) - J(tuple(a - h * v for a, v in zip(R, d)))) / (2 * h)
    exact = sum(float(np.sum(a * v)) for a, v in zip(grads[1:], d))
    assert fd == pytest.approx(exact, rel=1e-7)


def test_information_functions_reject_indefinite_matrices():
    with pytest.raises(ValueError, match="positive definite"):
        C.correlative_information(-np.eye(2), np.eye(2), 0.1)


def test_joint_information_is_mutual_information_of_gaussians():
    # for eps = 0 and a 2-d Gaussian correlation with coefficient rho, I = -1/2 log(1 - rho^2)
    rho = 0.6
    Rx, Ry, Rxy = np.eye(1), np.eye(1), np.array([[rho]])
    assert float(C.joint_information(Rx, Ry, Rxy, 0.0)) == pytest.approx(-0.5 * np.log(1 - rho ** 2), rel=1e-14)


def test_kkt_theorem_converges_on_slow_draw():
    """Regression (review 2026-11-22): on this draw 600 sweeps left a KKT violation of 2.6e-6, above the
    old fixed 1e-6 tolerance, so the theorem failed. It now iterates to the fixed point of the sweep map
    (velocity <= 1e-13) and checks the autograd stop-gradient gradient at 1e-10."""
    from proofs.theorem import RngDrawer

    inst = M._draw_kkt(RngDrawer(np.random.default_rng(91)), "numpy", "float64")
    ph = C.relax(inst.rule, inst.net, inst.state, inst.x, inst.y, inst.rule.beta, 600)
    assert M._velocity(inst.rule, inst.net, inst.state, ph, inst.y) > 1e-8  # 600 sweeps: not converged
    ev = M._check_kkt(inst)
    assert ev.holds, ev.detail
    assert ev.error <= 1e-13
    assert not M._control_kkt(inst).holds
