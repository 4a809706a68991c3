"""refimpl.lu: one factorisation reused for solves and a 2-norm condition estimate within 2x (below)."""

import numpy as np
import pytest

import refimpl as ri
from refimpl.backend import resolve_namespace, from_numpy, to_numpy
from refimpl.lu import LU
from refimpl.rules.gaitprop import inverse_factors, check_invertible


def _with_cond(n, cond, seed):
    """A random n x n matrix with singular values log-spaced in [1/cond, 1] (cond_2 = cond exactly)."""
    g = np.random.default_rng(seed)
    U = np.linalg.qr(g.standard_normal((n, n)))[0]
    V = np.linalg.qr(g.standard_normal((n, n)))[0]
    return U @ np.diag(np.logspace(0, -np.log10(cond), n)) @ V.T


BACKENDS = ["numpy", "array_api_strict", "torch"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("trans", [False, True])
def test_solve_matches_linalg_solve(backend, trans):
    xp = resolve_namespace(backend)
    W = _with_cond(30, 1e3, 0)
    B = np.random.default_rng(1).standard_normal((30, 7))
    f = LU(from_numpy(W, xp, "float64"))
    X = to_numpy(f.solve(from_numpy(B, xp, "float64"), trans=trans))
    ref = np.linalg.solve(W.T if trans else W, B)
    # backward-stable solves of a cond-1e3 system agree to ~cond * eps = 2e-13 relative
    assert np.max(np.abs(X - ref)) <= 1e-11 * np.max(np.abs(ref))


def test_read_only_input_is_not_modified():
    W = _with_cond(12, 10.0, 2)
    W.setflags(write=False)
    before = W.copy()
    f = LU(W)
    f.solve(np.eye(12))
    assert np.array_equal(W, before)


@pytest.mark.parametrize("n", [5, 40, 300])
@pytest.mark.parametrize("cond", [1.0, 37.0, 1e4, 1e9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cond_estimate_is_a_lower_bound_within_2x(n, cond, seed):
    W = _with_cond(n, cond, seed)
    est = LU(W).cond2_estimate()
    true = np.linalg.cond(W)
    # power iteration gives lower bounds, up to the rounding of the solves with W (forward error
    # <= n cond eps relative) and of np.linalg.cond itself; the 2x is lu.py's bound
    assert true / 2 <= est <= true * (1 + 10 * n * cond * 2.2e-16 + 1e-12)


def test_singular_is_inf():
    W = _with_cond(8, 10.0, 0)
    W[:, 3] = 0.0
    assert LU(W).cond2_estimate() == np.inf
    assert LU(np.zeros((4, 4))).singular


@pytest.mark.parametrize("factor,accepted", [(0.9, True), (1.1, False), (0.3, True), (30.0, False)])
def test_inverse_factors_decide_as_the_exact_check(factor, accepted):
    """Around max_cond the estimate defers to the singular values: the decision is the exact one.
    Negative control: the same net with cond 1.1 max_cond is rejected with check_invertible's message."""
    net = ri.Network.init([6, 20, 20, 20], activation="tanh", init="orthogonal", seed=0)
    max_cond = 1e3
    W = _with_cond(20, factor * max_cond, 3)
    net = net.replace(weights=(net.weights[0], W, net.weights[2]))
    if accepted:
        facs = inverse_factors(net, max_cond=max_cond)
        assert facs[:2] == (None, None) and len(facs) == 4
        check_invertible(net, max_cond=max_cond)
    else:
        with pytest.raises(ValueError) as exact:
            check_invertible(net, max_cond=max_cond)
        with pytest.raises(ValueError) as fast:
            inverse_factors(net, max_cond=max_cond)
        assert str(fast.value) == str(exact.value)
        assert "weights[1]" in str(fast.value) and "condition number" in str(fast.value)
