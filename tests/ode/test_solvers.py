import math

import numpy as np
import pytest

import refimpl as ri
from refimpl import ode
from refimpl.backend import to_numpy
from refimpl.ode.field import NetworkField
from refimpl.ode.solvers import solve_grid, solve_adaptive, uniform_grid, check_grid


def _field(td=True):
    net = ri.Network.init([2 + int(td), 8, 2], activation="tanh", seed=3, gain=1.5, bias_scale=0.3)
    return NetworkField(net, td)


X0 = np.random.default_rng(0).standard_normal((3, 2))


@pytest.mark.parametrize("name", ["euler", "midpoint", "heun", "rk4", "rk38", "bosh3", "fehlberg2", "dopri5"])
def test_global_error_has_the_method_order(name):
    fld = _field()
    tab = ode.tableaux.get(name)
    ref = solve_grid(fld, X0, uniform_grid(0, 1, 512), "dopri8").x1
    Ns = {1: (16, 32, 64), 2: (8, 16, 32), 3: (8, 16, 32), 4: (4, 8, 16), 5: (4, 8, 16)}[tab.order]
    errs = [np.max(np.abs(solve_grid(fld, X0, uniform_grid(0, 1, N), name).x1 - ref)) for N in Ns]
    slope = np.polyfit(np.log([1 / N for N in Ns]), np.log(errs), 1)[0]
    assert abs(slope - tab.order) < 0.35, (name, errs, slope)


def test_adaptive_reaches_t1_and_meets_the_tolerance():
    fld = _field()
    ref = solve_grid(fld, X0, uniform_grid(0, 2, 400), "dopri8").x1
    for name in ode.tableaux.ADAPTIVE:
        traj = solve_adaptive(fld, X0, 0.0, 2.0, name, rtol=1e-6, atol=1e-8)
        assert traj.ts[0] == 0.0 and traj.ts[-1] == 2.0
        assert all(b > a for a, b in zip(traj.ts, traj.ts[1:]))
        assert len(traj.xs) == len(traj.ts)
        err = np.max(np.abs(traj.x1 - ref))
        assert err < 1e-3, (name, err, traj.steps)
        # replaying the recorded grid gives the same solution
        np.testing.assert_array_equal(solve_grid(fld, X0, traj.ts, name).x1, traj.x1)


def test_tighter_tolerance_takes_more_steps():
    fld = _field()
    n = [solve_adaptive(fld, X0, 0.0, 1.0, "dopri5", rtol=r, atol=r * 1e-2).steps for r in (1e-3, 1e-6, 1e-9)]
    assert n[0] < n[1] < n[2]


def test_backends_agree(backend):
    fld = _field()
    ref = solve_grid(fld, X0, uniform_grid(0, 1, 5), "dopri5").x1
    fb = NetworkField(backend.net(fld.net), True)
    out = solve_grid(fb, backend(X0), uniform_grid(0, 1, 5), "dopri5").x1
    np.testing.assert_allclose(to_numpy(out), ref, rtol=1e-12, atol=1e-14)
    ad = solve_adaptive(fb, backend(X0), 0.0, 1.0, "bosh3", rtol=1e-5)
    ad_ref = solve_adaptive(fld, X0, 0.0, 1.0, "bosh3", rtol=1e-5)
    assert len(ad.ts) == len(ad_ref.ts)


def test_argument_errors():
    fld = _field()
    with pytest.raises(ValueError, match="steps: expected a positive int"):
        uniform_grid(0, 1, 0)
    with pytest.raises(ValueError, match="strictly increasing"):
        check_grid([0.0, 0.5, 0.5, 1.0])
    with pytest.raises(ValueError, match="no embedded pair"):
        solve_adaptive(fld, X0, 0.0, 1.0, "rk4")
    with pytest.raises(ValueError, match="t1"):
        solve_adaptive(fld, X0, 1.0, 0.0, "dopri5")
    with pytest.raises(ValueError, match="rtol"):
        solve_adaptive(fld, X0, 0.0, 1.0, "dopri5", rtol=-1.0)
    with pytest.raises(RuntimeError, match="max_steps"):
        solve_adaptive(fld, X0, 0.0, 1.0, "dopri5", rtol=1e-12, atol=1e-14, max_steps=3)


@pytest.mark.parametrize("name", sorted(ode.tableaux.ADAPTIVE))
def test_controller_is_the_documented_formula(name):
    """Issue 19 C: the controller's exponent 1/q instead of 1/(q+1) broke no claim (the grid is a
    constant of every gradient method) - only more rejected steps. The accepted grid must be the
    one the module docstring's controller gives: replayed here independently (own RK step from the
    tableau's floats, own error norm), h <- h min(10, max(0.2, 0.9 rms^(-1/(q+1)))), q = min(p, p_err)."""
    fld = _field()
    tab = ode.tableaux.get(name)
    co = tab.as_floats()
    q = min(tab.order, tab.err_order or tab.order)
    rtol, atol, t1 = 1e-6, 1e-8, 2.0
    traj = solve_adaptive(fld, X0, 0.0, t1, name, rtol=rtol, atol=atol, h0=0.05)
    x, t, h, ts, rejected = X0, 0.0, 0.05, [0.0], 0
    while t < t1:
        t_new = t1 if (t + h >= t1 or t1 - (t + h) < 1e-12 * t1) else t + h
        h = t_new - t
        # summed in the module's order (x + (h w_i) k_i over non-zero weights): the error estimate
        # cancels O(1) slopes down to ~rtol |x| (dopri8: far below), so another order would differ
        K = []
        for i in range(tab.stages):
            Xi = x
            for j in range(i):
                if co["a"][i][j] != 0.0:
                    Xi = Xi + (h * co["a"][i][j]) * K[j]
            K.append(to_numpy(fld.f(Xi, t + co["c"][i] * h)))
        x_new, err = x, x * 0
        for bi, be, k in zip(co["b"], co["b_err"], K):
            x_new = x_new + (h * bi) * k if bi != 0.0 else x_new
            err = err + (h * (bi - be)) * k if bi - be != 0.0 else err
        ratio = math.sqrt(np.mean((err / (atol + rtol * np.maximum(np.abs(x), np.abs(x_new)))) ** 2))
        if ratio <= 1:
            t, x = t_new, x_new
            ts.append(t)
        else:
            rejected += 1
        h *= 10.0 if ratio == 0 else min(10.0, max(0.2, 0.9 * ratio ** (-1.0 / (q + 1))))
    assert len(ts) == len(traj.ts) and traj.rejected == rejected, (len(ts), len(traj.ts), rejected, traj.rejected)
    # same arithmetic in the same order: the grids agree to rounding; a wrong exponent changes
    # every factor by percents
    np.testing.assert_allclose(traj.ts, ts, rtol=1e-13, atol=0)


def test_grid_solve_counts_its_field_evaluations():
    """Mutation survivor (issue 19): Trajectory.f_evals of a grid solve is N * live stages."""
    fld = _field()
    for name in ("rk4", "dopri5", "midpoint"):
        traj = solve_grid(fld, X0, uniform_grid(0, 1, 7), name)
        assert traj.f_evals == 7 * len(ode.tableaux.get(name).live), name


def test_adaptive_starting_step_is_hairers():
    """Mutation survivor (issue 19): the starting step (h0=None, Hairer I §II.4) was pinned by
    nothing. Replayed: d0 = rms(x/sc), d1 = rms(f0/sc), h = 0.01 d0/d1, d2 = rms((f(x + h f0) - f0)/sc)/h,
    h1 = (0.01/max(d1, d2))^(1/(p+1)), first step min(100 h, h1, t1 - t0)."""
    fld = _field()
    rtol, atol = 1e-6, 1e-8
    for name in ("dopri5", "bosh3"):
        p = ode.tableaux.get(name).order
        traj = solve_adaptive(fld, X0, 0.0, 2.0, name, rtol=rtol, atol=atol)
        sc = atol + rtol * np.abs(X0)
        rms = lambda v: math.sqrt(float(np.mean(v * v)))
        f0 = to_numpy(fld.f(X0, 0.0))
        d0, d1 = rms(X0 / sc), rms(f0 / sc)
        hh = 0.01 * d0 / d1
        d2 = rms((to_numpy(fld.f(X0 + hh * f0, hh)) - f0) / sc) / hh
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (p + 1))
        h = min(100 * hh, h1, 2.0)
        # the first attempted step is h; accepted unless rejected (then 0.2..1 times it)
        first = traj.ts[1] - traj.ts[0]
        assert first == pytest.approx(h, rel=1e-12) or (traj.rejected > 0 and first < h), (name, first, h)
