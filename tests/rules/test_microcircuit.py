"""Dendritic cortical microcircuits: construction, steady state, scaling, simulator, backends.

The theorems (P-B1 .. P-B5) run in tests/proofs/test_theorems.py; these tests pin the rule's face,
its validation, the record, the scale conversions and backend consistency.
"""

import dataclasses
import math

import numpy as np
import pytest

import refimpl as ri
from refimpl.rules import Microcircuit, MicrocircuitState
from refimpl.rules import microcircuit as M


def _net(sizes=(4, 6, 5, 3), phi="softplus", seed=1):
    return ri.Network.init(list(sizes), activation=phi, output_activation="linear", init="normal", seed=seed)


def _batch(net, B=7, seed=0):
    g = np.random.default_rng(seed)
    return g.standard_normal((B, net.sizes[0])), g.standard_normal((B, net.sizes[-1]))


# --- constants and construction ----------------------------------------------------------------

def test_constants_at_defaults():
    r = Microcircuit()
    assert r.c_hidden == pytest.approx(1.0 / 1.9)
    assert r.c_out == pytest.approx(1.0 / 1.1)
    assert r.lam_out == pytest.approx(0.8 / 1.9)
    assert r.lam_I == pytest.approx(0.8 / 1.9)
    assert r.lam_A == pytest.approx(0.8 / 1.9)
    a = r.alpha(3)
    per_hidden = r.lam_A * (1 - r.lam_I) / r.c_hidden
    per_out = r.lam_A * (1 - r.lam_I) / r.c_out
    assert a == pytest.approx((per_hidden * per_out, per_out, 1.0))
    assert [s for s, _ in r.paper_scale(3)] == pytest.approx([x * r.lam_out for x in a])


@pytest.mark.parametrize("kw", [dict(g_lk=0.0), dict(g_B=-1.0), dict(g_som=math.nan), dict(g_som_I=-0.1),
                                dict(top_down="learned"), dict(lateral="x"), dict(output_rate="tanh"),
                                dict(damping=0.0), dict(damping=1.5), dict(max_iter=-1), dict(loss="ce"),
                                dict(lateral_init="zeros"), dict(eta_pi=-1.0), dict(lateral_steps=1.5)])
def test_invalid_hyper_parameters(kw):
    with pytest.raises(ValueError):
        Microcircuit(**kw)


def test_invalid_networks():
    r = Microcircuit()
    with pytest.raises(ValueError, match="depth >= 2"):
        r.init(_net((3, 2)))
    with pytest.raises(ValueError, match="output activation must be 'linear'"):
        r.init(ri.Network.init([3, 4, 2], activation="softplus", output_activation="tanh"))
    with pytest.raises(ValueError, match="one transfer function"):
        r.init(ri.Network.init([3, 4, 4, 2], activation=["softplus", "tanh"], output_activation="linear"))
    with pytest.raises(ValueError, match="no biases"):
        r.init(ri.Network.init([3, 4, 2], activation="softplus", output_activation="linear", bias_scale=0.1))


def test_init_shapes_and_self_predicting_relations():
    net = _net()
    for td in M.TOP_DOWN:
        r = Microcircuit(top_down=td)
        st = r.init(net, seed=3)
        s = net.sizes
        assert [p.shape for p in st.pi] == [(s[1], s[2]), (s[2], s[3])]
        assert [p.shape for p in st.ip] == [(s[2], s[1]), (s[3], s[2])]
        tdm = M._top_down(r, net, st)
        assert [t.shape for t in tdm] == [(s[1], s[2]), (s[2], s[3])]
        for k in range(2):
            np.testing.assert_array_equal(st.pi[k], -tdm[k])
            np.testing.assert_allclose(st.ip[k], (r.g_lk + r.g_D) / r.g_D * net.weights[k + 1], rtol=0, atol=0)
        if td == "transposed":
            assert st.top_down == (None, None)
            wpp = M.bottom_up_weights(r, net)
            np.testing.assert_allclose(tdm[0], wpp[1].T)
    # random lateral init (plastic) is seeded
    r = Microcircuit(lateral="plastic", lateral_init="random")
    a, b = r.init(net, seed=5), r.init(net, seed=5)
    np.testing.assert_array_equal(a.pi[0], b.pi[0])
    assert not np.allclose(a.pi[0], r.init(net, seed=6).pi[0])


def test_effective_network_roundtrip():
    r = Microcircuit()
    net = _net()
    wpp = M.bottom_up_weights(r, net)
    back = M.effective_network(r, wpp, "softplus")
    for W, V in zip(net.weights, back.weights):
        np.testing.assert_allclose(W, V, rtol=1e-15, atol=0)
    assert back.activations == ("softplus", "softplus", "linear")


def test_state_validation():
    net = _net()
    r = Microcircuit(lateral="plastic")
    st = r.init(net)
    x, y = _batch(net)
    bad = dataclasses.replace(st, pi=(st.pi[0], st.pi[1].T))
    with pytest.raises(ValueError, match=r"state.pi\[1\]"):
        r.updates(net, bad, x, y)
    with pytest.raises(TypeError, match="MicrocircuitState"):
        r.updates(net, ri.rules.EmptyState(), x, y)
    nan = dataclasses.replace(st, ip=(st.ip[0] * np.nan, st.ip[1]))
    with pytest.raises(ValueError, match="finite"):
        r.updates(net, nan, x, y)



def test_simulate_validates_its_inputs():
    # review of issue 7: simulate accepted a NaN input (and a target of the wrong shape) and
    # integrated NaNs; it now checks x and y as updates does.
    net = _net()
    r = Microcircuit()
    st = r.init(net)
    x, y = _batch(net)
    with pytest.raises(ValueError, match="x"):
        M.simulate(r, net, st, np.full_like(x, np.nan), steps=3)
    with pytest.raises(ValueError, match="y"):
        M.simulate(r, net, st, x, y[:, :2], steps=3)
    with pytest.raises(ValueError, match="y"):
        M.simulate(r, net, st, x, np.full_like(y, np.inf), steps=3)
    with pytest.raises(ValueError, match="x"):
        r.updates(net, st, x[:, :2], y)
    with pytest.raises(ValueError):
        r.updates(net, st, x, y[:3])


# --- steady state --------------------------------------------------------------------------------

@pytest.mark.parametrize("td", M.TOP_DOWN)
@pytest.mark.parametrize("phi", ["softplus", "tanh", "linear"])
def test_free_state_is_the_effective_network(td, phi):
    r = Microcircuit(top_down=td)
    net = _net(phi=phi)
    x, _ = _batch(net)
    pot = r.free_state(net, r.init(net), x)
    np.testing.assert_allclose(pot.uP[-1], net(x), rtol=1e-12, atol=1e-13)
    assert max(np.max(np.abs(v)) for v in pot.vA[1:-1]) <= 1e-13
    assert pot.vA[0] is None and pot.vA[-1] is None and pot.uI[-1] is None


def test_nudged_state_moves_output_towards_target_and_converges_from_any_start():
    r = Microcircuit(lateral="plastic")
    net = _net()
    x, y = _batch(net)
    st = r.init(net)
    pot = r.nudged_state(net, st, x, y)
    free = r.free_state(net, st, x)
    assert np.sum((pot.uP[-1] - y) ** 2) < np.sum((free.uP[-1] - y) ** 2)
    again = M.steady_state(r, net, st, x, y, init=free)
    for a, b in zip(pot.uP[1:], again.uP[1:]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


CASES = [  # (phi, sizes, top_down, lateral, lateral_init, target)
    ("softplus", (4, 6, 5, 3), "transposed", "ideal", "self_predicting", True),
    ("softplus", (4, 6, 5, 3), "transposed", "ideal", "self_predicting", False),
    ("tanh", (5, 7, 6, 6, 2), "random", "plastic", "random", True),
    ("sigmoid", (3, 4, 2), "transposed", "plastic", "random", True),
    ("linear", (4, 6, 5, 3), "random", "plastic", "self_predicting", False),
]


@pytest.mark.parametrize("phi,sizes,td,lateral,lat_init,target", CASES)
def test_sweep_solver_reaches_the_euler_fixed_point(phi, sizes, td, lateral, lat_init, target):
    """Issue 17: the layer-sweeping solver (default) and forward Euler (the solver before it, kept as
    method="euler" and as the fallback) reach the same fixed point. Both stop at tol = 1e-14 relative
    (or the rounding floor); the fixed point is a contraction's, so the two agree to ~ tol times the
    inverse contraction margin: 1e-12 absolute on these O(1) potentials. Negative control: two sweeps
    only (max_iter=2) are 1e-6 or more away (measured >= 6e-5)."""
    r = Microcircuit(top_down=td, lateral=lateral, lateral_init=lat_init, tol=1e-14)
    net = _net(sizes, phi)
    x, y = _batch(net)
    st = r._prepared_state(net, r.init(net, seed=3))
    yy = y if target else None
    ideal = lateral == "ideal"
    sweep = M.steady_state(r, net, st, x, yy, self_predicting=ideal)
    euler = M.steady_state(r, net, st, x, yy, method="euler")
    assert sweep.iterations <= max(1, euler.iterations / 3)  # (the free ideal state: 1 vs 0)
    assert sweep.residual <= 1e-13 and euler.residual <= 1e-13
    diff = lambda a, b: max(np.max(np.abs(u - v)) for u, v in zip(a.uP[1:] + a.uI[1:-1], b.uP[1:] + b.uI[1:-1]))
    assert diff(sweep, euler) <= 1e-12
    for name in ("vB", "vA", "vI", "e"):
        for u, v in zip(getattr(sweep, name), getattr(euler, name)):
            if u is not None:
                np.testing.assert_allclose(u, v, rtol=0, atol=1e-12)
    if ideal:  # the factorised sweep equals the general one
        general = M.steady_state(r, net, st, x, yy, self_predicting=False)
        assert diff(sweep, general) <= 1e-13
    plain = M.steady_state(r, net, st, x, yy, self_predicting=ideal, inner=1)  # no inner repetitions
    assert diff(sweep, plain) <= 1e-12 and plain.residual <= 1e-13
    if target:
        early = M.steady_state(r, net, st, x, yy, max_iter=2, self_predicting=ideal, inner=1)
        assert diff(early, euler) > 1e-6 and early.residual > 1e-6


def test_sweeps_that_do_not_contract_fall_back_to_euler():
    """A linear net with strong random top-down and lateral weights: the plain sweep map (inner=1)
    does not contract (the Gauss-Seidel iteration diverges) although the dynamics have a stable fixed
    point; the solver then returns Euler's fixed point (found by search, seed 0, feedback_scale 4)."""
    net = ri.Network.init([3, 5, 4, 2], activation="linear", output_activation="linear", init="normal", seed=0)
    r = Microcircuit(top_down="random", feedback_scale=4.0, lateral="plastic", lateral_init="random",
                     lateral_scale=1.0, tol=1e-13)
    st = r.init(net, seed=0)
    g = np.random.default_rng(0)
    x, y = g.standard_normal((4, 3)), g.standard_normal((4, 2))
    assert M._sweep_solve(r, net, st, x, y, max_iter=5000, tol=1e-13, init=None, self_predicting=False,
                          check_every=1, inner=1) is None
    pot = M.steady_state(r, net, st, x, y, inner=1)
    euler = M.steady_state(r, net, st, x, y, method="euler")
    assert pot.residual <= 1e-10 and pot.iterations == euler.iterations
    for u, v in zip(pot.uP[1:], euler.uP[1:]):
        np.testing.assert_array_equal(u, v)
    # The default sweep repeats the top pair 3 times (inner=3): that block iteration does contract
    # here (slowly, ~370 sweeps), and reaches the fixed point more closely than Euler at the same tol:
    # against Euler at tol 1e-17, 2.2e-12 (Euler at tol 1e-13: 7.2e-11, its slow modes).
    tight = M.steady_state(r, net, st, x, y, method="euler", tol=1e-17, max_iter=200000)
    default = M.steady_state(r, net, st, x, y)
    assert tight.residual <= 1e-13 and default.iterations < euler.iterations
    assert max(np.max(np.abs(u - v)) for u, v in zip(default.uP[1:], tight.uP[1:])) <= 1e-11
    with pytest.raises(ValueError, match="method: expected one of"):
        M.steady_state(r, net, st, x, y, method="newton")


def test_convergence_tests_every_k_sweeps_reach_the_same_state():
    """check_every=4 (the accelerator default: one host synchronisation per 4 sweeps) stops at most
    3 sweeps later, at the same fixed point (both at tol 1e-14; agreement 1e-13 absolute)."""
    r = Microcircuit(tol=1e-14)
    net = _net()
    x, y = _batch(net)
    st = r._prepared_state(net, r.init(net))
    a = M.steady_state(r, net, st, x, y, self_predicting=True, check_every=1)
    b = M.steady_state(r, net, st, x, y, self_predicting=True, check_every=4)
    assert b.iterations % 4 == 0 and a.iterations <= b.iterations <= a.iterations + 3
    for u, v in zip(a.uP[1:], b.uP[1:]):
        np.testing.assert_allclose(u, v, rtol=0, atol=1e-13)


def test_non_convergence_is_an_error():
    r = Microcircuit(max_iter=2)
    net = _net()
    x, y = _batch(net)
    with pytest.raises(ValueError, match="did not converge"):
        r.updates(net, r.init(net), x, y)


# --- updates: record, scaling ------------------------------------------------------------------

def test_updates_shapes_record_and_paper_scale():
    r = Microcircuit()
    net = _net()
    x, y = _batch(net)
    upd, st = r.updates(net, r.init(net), x, y)
    assert isinstance(st, MicrocircuitState)
    assert [d.shape for d in upd.dW] == [W.shape for W in net.weights]
    assert all(np.all(b == 0) for b in upd.db)
    np.testing.assert_allclose(upd.record["free"].uP[-1], net(x), rtol=1e-12, atol=1e-13)
    for key in ("nudged", "free", "errors", "v_apical", "u_inter", "u_pyr", "dW_paper", "alpha", "lam_out", "loss",
                "residual", "top_down"):
        assert key in upd.record
    N = net.depth
    pot = upd.record["nudged"]
    rates = [x] + [ri.activations.get("softplus").f(pot.uP[k]) for k in range(1, N)]
    for k in range(1, N + 1):
        paper = -(upd.record["errors"][k].T @ rates[k - 1]) / x.shape[0]
        np.testing.assert_allclose(upd.record["dW_paper"][k - 1], paper, rtol=1e-14, atol=1e-16)
        scale, c = r.paper_scale(N)[k - 1]
        np.testing.assert_allclose(upd.dW[k - 1] * scale, paper, rtol=1e-13, atol=1e-16)
    assert float(upd.record["loss"]) == pytest.approx(float(ri.losses.get("mse").value(net(x), y)))
    np.testing.assert_allclose(r.predict(net, st, x), net(x), rtol=1e-12, atol=1e-13)
    # learned (imperfect) lateral weights: the prediction is the free steady state, not net(x)
    rp = Microcircuit(lateral="plastic")
    stp = dataclasses.replace(rp.init(net), pi=tuple(0.5 * p for p in rp.init(net).pi))
    pred = rp.predict(net, stp, x)
    np.testing.assert_allclose(pred, rp.free_state(net, stp, x).uP[-1], rtol=0, atol=0)
    assert np.max(np.abs(pred - net(x))) > 1e-3


def test_no_target_no_learning_in_self_predicting_state():
    # y equal to the network's own prediction: the nudging is zero, so every update vanishes exactly.
    r = Microcircuit()
    net = _net()
    x, _ = _batch(net)
    upd, _ = r.updates(net, r.init(net), x, net(x))
    assert max(float(np.max(np.abs(d))) for d in upd.dW) <= 1e-12


def test_weak_nudging_linear_output_matches_bp_direction():
    # lam_out -> 0 with linear output rate: the rescaled updates approach BP's mse gradients.
    net = _net()
    x, y = _batch(net)
    bp, _ = ri.rules.BP(loss="mse").updates(net, ri.rules.EmptyState(), x, y)
    errs = []
    for lam in (1e-2, 1e-3):
        r = Microcircuit(g_som=lam * 1.1 / (1 - lam), output_rate="linear")
        upd, _ = r.updates(net, r.init(net), x, y)
        errs.append(max(np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(upd.dW, bp.dW)))
    assert errs[1] < 0.2 * errs[0] and errs[1] < 1e-2


# --- lateral plasticity ------------------------------------------------------------------------

def test_feedback_updates_vanish_in_self_predicting_state_and_dpi_is_a_gradient():
    torch = pytest.importorskip("torch")
    r = Microcircuit(lateral="plastic")
    net = _net()
    x, _ = _batch(net)
    st = r.init(net)
    dPI, dIP, _ = r.feedback_updates(net, st, x)
    assert max(float(np.max(np.abs(d))) for d in dPI + dIP) <= 1e-13
    # perturbed: dPI = grad of 0.5 <||v_A||^2> w.r.t. W^PI with the rates held fixed (spec P-B4)
    g = np.random.default_rng(9)
    st2 = dataclasses.replace(st, pi=tuple(p + 0.1 * g.standard_normal(p.shape) for p in st.pi))
    dPI, dIP, pot = r.feedback_updates(net, st2, x)
    phi = ri.activations.get("softplus").f
    for k in range(1, net.depth):
        r_up = torch.tensor(phi(pot.uP[k + 1]) if k + 1 < net.depth else phi(pot.uP[k + 1]))
        r_I = torch.tensor(phi(pot.uI[k]))
        P = torch.tensor(st2.pi[k - 1], requires_grad=True)
        td = torch.tensor(M._top_down(r, net, st2)[k - 1])
        vA = r_up @ td.T + r_I @ P.T
        (0.5 * (vA ** 2).sum(dim=1).mean()).backward()
        np.testing.assert_allclose(dPI[k - 1], P.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_train_feedback_modes():
    net = _net()
    x, _ = _batch(net, B=16)
    ideal = Microcircuit()
    st = dataclasses.replace(ideal.init(net), pi=tuple(p * 0 for p in ideal.init(net).pi))
    back = ideal.train_feedback(net, st, x)
    np.testing.assert_array_equal(back.pi[0], ideal.init(net).pi[0])
    frozen = Microcircuit(lateral="plastic")
    assert frozen.train_feedback(net, st, x) is st
    learn = Microcircuit(lateral="plastic", eta_pi=0.1, eta_ip=0.1, lateral_steps=20)
    g = np.random.default_rng(2)
    st3 = dataclasses.replace(learn.init(net), pi=tuple(p + 0.3 * g.standard_normal(p.shape) for p in learn.init(net).pi))
    before = np.sqrt(np.mean(np.concatenate([v.ravel() for v in learn.free_state(net, st3, x).vA[1:-1]]) ** 2))
    st4 = learn.train_feedback(net, st3, x)
    after = np.sqrt(np.mean(np.concatenate([v.ravel() for v in learn.free_state(net, st4, x).vA[1:-1]]) ** 2))
    assert after < 0.5 * before


# --- simulator ---------------------------------------------------------------------------------

def test_simulate_reaches_steady_state_and_noise_is_seeded():
    r = Microcircuit(lateral="plastic")
    net = _net((3, 4, 2))
    x, y = _batch(net, B=3)
    st = r.init(net)
    star = M.steady_state(r, net, st, x, y)
    sim = M.simulate(r, net, st, x, y, dt=0.1, steps=1500, record_every=100)
    for a, b in zip(sim.potentials.uP[1:], star.uP[1:]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    assert sim.du_max < 1e-9 and len(sim.history) == 16
    n1 = M.simulate(r, net, st, x, y, steps=50, sigma=0.1, seed=4)
    n2 = M.simulate(r, net, st, x, y, steps=50, sigma=0.1, seed=4)
    n3 = M.simulate(r, net, st, x, y, steps=50, sigma=0.1, seed=5)
    np.testing.assert_array_equal(n1.potentials.uP[1], n2.potentials.uP[1])
    assert not np.allclose(n1.potentials.uP[1], n3.potentials.uP[1])
    # input filter tau_0: still converges to the same fixed point
    f = M.simulate(r, net, st, x, y, steps=2500, tau_0=3.0)
    np.testing.assert_allclose(f.potentials.uP[-1], star.uP[-1], rtol=0, atol=1e-8)


def test_simulate_learning_follows_the_steady_state_update():
    r = Microcircuit(lateral="plastic")
    net = _net((3, 4, 2))
    x, y = _batch(net, B=3)
    st = r.init(net)
    still = M.simulate(r, net, st, x, y, steps=10, learn=True)
    for W, V in zip(net.weights, still.net.weights):
        np.testing.assert_allclose(W, V, rtol=1e-15, atol=0)
    eta = 1e-4
    sim = M.simulate(r, net, st, x, y, steps=2000, learn=True, eta_up=(eta, eta))
    upd, _ = r.updates(net, st, x, y)
    for k in range(net.depth):
        moved = (sim.net.weights[k] - net.weights[k]).ravel()
        c = r.paper_scale(net.depth)[k][1]
        expect = -(c * upd.record["dW_paper"][k]).ravel()
        cos = moved @ expect / (np.linalg.norm(moved) * np.linalg.norm(expect))
        assert cos > 0.95


def test_simulate_validation():
    r = Microcircuit()
    net = _net((3, 4, 2))
    x, y = _batch(net, B=2)
    st = r.init(net)
    for kw in (dict(dt=0.0), dict(steps=-1), dict(sigma=-1.0), dict(tau_0=0.0), dict(eta_up=(1.0,))):
        with pytest.raises(ValueError):
            M.simulate(r, net, st, x, y, **kw)


# --- training loop and backends ----------------------------------------------------------------

def test_train_loop_accepts_the_rule():
    from refimpl import train as T
    from refimpl.data import Dataset

    g = np.random.default_rng(0)
    teacher = _net((4, 5, 2), seed=7)
    xs = g.standard_normal((96, 4))
    data = Dataset(xs[:64], np.asarray(teacher(xs[:64])), xs[64:], np.asarray(teacher(xs[64:])), 0, "regression", "t")
    net = _net((4, 5, 2), seed=8)
    for rule in (T.get_rule("microcircuit"), Microcircuit(lateral="plastic", eta_pi=0.05, eta_ip=0.05)):
        res = T.train(rule, net, data, optimizer=ri.optim.SGD(lr=0.1), epochs=3, batch_size=16, seed=0)
        assert res.history[-1]["test_loss"] < T.evaluate(net, data, "mse")["test_loss"]
        assert isinstance(res.state, MicrocircuitState)


@pytest.mark.parametrize("td", M.TOP_DOWN)
def test_backends_agree(backend, td):
    r = Microcircuit(top_down=td, lateral="plastic")
    net = _net()
    x, y = _batch(net)
    st = r.init(net, seed=2)
    ref, _ = r.updates(net, st, x, y)
    bnet = backend.net(net)
    bst = MicrocircuitState(tuple(None if t is None else backend(t) for t in st.top_down),
                            tuple(backend(p) for p in st.pi), tuple(backend(p) for p in st.ip))
    upd, _ = r.updates(bnet, bst, backend(x), backend(y))
    from refimpl.backend import to_numpy

    for a, b in zip(upd.dW, ref.dW):
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-10, atol=1e-12)
    dPI, dIP, _ = r.feedback_updates(bnet, bst, backend(x))
    rPI, rIP, _ = r.feedback_updates(net, st, x)
    for a, b in zip(dPI + dIP, rPI + rIP):
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-10, atol=1e-12)
    sim = M.simulate(r, bnet, bst, backend(x), backend(y), steps=30, sigma=0.01, seed=1)
    hsim = M.simulate(r, net, st, x, y, steps=30, sigma=0.01, seed=1)
    np.testing.assert_allclose(to_numpy(sim.potentials.uP[-1]), hsim.potentials.uP[-1], rtol=1e-10, atol=1e-12)


def test_float32_runs_and_agrees_with_float64():
    r = Microcircuit()
    net = _net()
    x, y = _batch(net)
    ref, _ = r.updates(net, r.init(net), x, y)
    n32 = net.to(dtype="float32")
    upd, _ = r.updates(n32, r.init(n32), x.astype(np.float32), y.astype(np.float32))
    for a, b in zip(upd.dW, ref.dW):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)


def test_simulated_plasticity_is_a_batch_mean():
    """Issue 19 C: the plasticity of simulate without its 1/B passed every test (the only test of
    simulated learning checked the direction). A batch of 3 copies of one sample must move every
    weight (bottom-up, PI, IP) exactly as that one sample does; without 1/B it moves them 3x."""
    r = Microcircuit(lateral="plastic")
    net = _net((3, 4, 2))
    x, y = _batch(net, B=1)
    st = r.init(net)
    kw = dict(steps=40, learn=True, eta_up=(1e-2, 1e-2), eta_pi=(1e-2,), eta_ip=(1e-2,), tau_w=3.0)
    one = M.simulate(r, net, st, x, y, **kw)
    three = M.simulate(r, net, st, np.repeat(x, 3, axis=0), np.repeat(y, 3, axis=0), **kw)
    moved = 0.0
    for a, b, w in zip(one.net.weights, three.net.weights, net.weights):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)
        moved = max(moved, float(np.max(np.abs(a - w))))
    for a, b, w in zip(one.state.pi + one.state.ip, three.state.pi + three.state.ip, st.pi + st.ip):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)
        moved = max(moved, float(np.max(np.abs(a - w))))
    assert moved > 1e-6  # the comparison is not between two unmoved networks


def test_simulate_plasticity_order_phll_is_forward_euler():
    """phll updates W with the old low-pass D and then D: one step from rest leaves W exactly
    unchanged; refimpl's default ('filter_first') moves W by dt eta dt/tau_w G already."""
    r = Microcircuit(lateral="plastic")
    net = _net((3, 4, 2))
    x, y = _batch(net, B=2)
    st = r.init(net)
    kw = dict(steps=1, learn=True, eta_up=(0.1, 0.1), eta_pi=(0.1,), eta_ip=(0.1,), tau_w=3.0)
    ph = M.simulate(r, net, st, x, y, plasticity_order="phll", **kw)
    ff = M.simulate(r, net, st, x, y, **kw)
    for a, w in zip(ph.net.weights, net.weights):
        np.testing.assert_allclose(a, w, rtol=1e-15, atol=0)
    assert max(float(np.max(np.abs(a - w))) for a, w in zip(ff.net.weights, net.weights)) > 0
    # two steps: phll's W moves by dt eta D_1 = dt eta (dt/tau_w) G_0 = filter_first's first step
    ph2 = M.simulate(r, net, st, x, y, plasticity_order="phll", **dict(kw, steps=2))
    for a, b in zip(ph2.net.weights, ff.net.weights):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="plasticity_order"):
        M.simulate(r, net, st, x, y, plasticity_order="euler", **kw)


def test_random_top_down_scale():
    """Mutation survivor (issue 19): feedback_scale's default (1, the phll code's) was pinned by
    nothing: random TD_k ~ N(0, feedback_scale^2 / n_{k+1})."""
    assert Microcircuit().feedback_scale == 1.0
    net = _net((3, 200, 400, 2))
    st = Microcircuit(top_down="random").init(net, seed=0)
    td = np.asarray(st.top_down[0])
    assert td.shape == (200, 400) and abs(td.std() * math.sqrt(400) - 1.0) < 0.02


def test_simulated_lateral_learning_follows_the_steady_state_rule():
    """Mutation survivor (issue 19): a sign flip inside simulate's interneuron plasticity
    (rho(u_I) + rho(k_I v_I)) passed every test. From perturbed lateral weights, without a target,
    slow simulated learning of IP (and PI) moves them along the steady-state lateral rule
    (-dIP, -dPI of feedback_updates), as the bottom-up test above does for W."""
    r = Microcircuit(lateral="plastic")
    net = _net((3, 4, 2))
    x, _ = _batch(net, B=3)
    st = r.init(net)
    g = np.random.default_rng(7)
    st = dataclasses.replace(st, ip=tuple(p + 0.3 * g.standard_normal(p.shape) for p in st.ip),
                             pi=tuple(p + 0.3 * g.standard_normal(p.shape) for p in st.pi))
    dPI, dIP, _ = r.feedback_updates(net, st, x)
    for which, kw, ref, new in (("ip", dict(eta_ip=(1e-4,)), dIP, lambda s: s.state.ip),
                                ("pi", dict(eta_pi=(1e-4,)), dPI, lambda s: s.state.pi)):
        sim = M.simulate(r, net, st, x, None, steps=2000, learn=True, **kw)
        moved = (np.asarray(new(sim)[0]) - np.asarray(getattr(st, which)[0])).ravel()
        expect = -np.asarray(ref[0]).ravel()
        cos = moved @ expect / (np.linalg.norm(moved) * np.linalg.norm(expect))
        assert cos > 0.95, (which, cos)


def test_first_sweep_reuses_the_forward_pass_exactly_and_inner_is_validated():
    """Issue 17: starting from the forward pass, the first sweep reads its products A_k = a_k and
    rates r_k = z_k instead of recomputing them; starting from the same potentials given as ``init``
    (which recomputes them) gives bitwise the same fixed point, so the reuse changes no number."""
    r = Microcircuit(tol=1e-14)
    net = _net((5, 8, 7, 3), "softplus")
    x, y = _batch(net)
    st = r._prepared_state(net, r.init(net, seed=2))
    start = M.steady_state(r, net, st, x, None, max_iter=0, self_predicting=True)  # the forward pass
    tr = net.forward(x)
    for k in range(1, net.depth + 1):
        assert np.array_equal(start.uP[k], tr.a[k])
    a = M.steady_state(r, net, st, x, y, self_predicting=True)
    b = M.steady_state(r, net, st, x, y, self_predicting=True, init=start)
    assert a.iterations == b.iterations
    for u, v in zip(a.uP[1:] + a.vA[1:-1] + a.e[1:], b.uP[1:] + b.vA[1:-1] + b.e[1:]):
        np.testing.assert_array_equal(u, v)
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="inner: expected an integer >= 1"):
            M.steady_state(r, net, st, x, y, inner=bad)


def test_block_sweep_that_does_not_contract_falls_back_to_the_plain_sweep_first():
    """Review of issue 17: the block sweep (inner=3) can diverge where the plain sweep contracts
    (random linear nets with strong random feedback: 2 of 109 stable draws; this one found by the
    review, seed 111). The default then returns the plain sweep's fixed point (the same numbers as
    inner=1), not Euler's (which stopped 4.3e-11 away)."""
    net = ri.Network.init([8, 8, 6, 5, 5, 6], activation="linear", output_activation="linear", init="normal",
                          seed=111)
    r = Microcircuit(top_down="random", feedback_scale=2.0, lateral="plastic", lateral_init="random",
                     lateral_scale=0.5, tol=1e-14)
    st = r._prepared_state(net, r.init(net, seed=111))
    g = np.random.default_rng(0)
    x, y = g.standard_normal((3, 8)), g.standard_normal((3, 6))
    assert M._sweep_solve(r, net, st, x, y, max_iter=5000, tol=1e-14, init=None, self_predicting=False,
                          check_every=1, inner=3) is None
    plain = M.steady_state(r, net, st, x, y, inner=1)
    default = M.steady_state(r, net, st, x, y)
    euler = M.steady_state(r, net, st, x, y, method="euler")
    assert default.iterations == plain.iterations != euler.iterations
    for u, v in zip(default.uP[1:], plain.uP[1:]):
        np.testing.assert_array_equal(u, v)
    assert default.residual <= 1e-12


def test_steady_state_of_a_net_without_hidden_layer_and_integer_types_of_inner():
    """The public steady_state on depth 1 (review: the block sweep had no pair there and crashed):
    U_1 = (1 - lam_out) A_1 + lam_out y exactly. ``inner`` accepts NumPy integers."""
    r = Microcircuit(tol=1e-14)
    net = ri.Network.init([3, 2], activation="softplus", output_activation="linear", init="normal", seed=0)
    x, y = _batch(net, B=4)
    st = M.MicrocircuitState((), (), ())
    pot = M.steady_state(r, net, st, x, y)
    np.testing.assert_allclose(pot.uP[1], (1 - r.lam_out) * net(x) + r.lam_out * y, rtol=0, atol=1e-15)
    assert pot.residual == 0.0
    free = M.steady_state(r, net, st, x, None)
    np.testing.assert_array_equal(free.uP[1], net(x))
    net2 = _net((4, 6, 5, 3), "softplus")
    x2, y2 = _batch(net2)
    st2 = r._prepared_state(net2, r.init(net2, seed=0))
    a = M.steady_state(r, net2, st2, x2, y2, inner=np.int64(3))
    b = M.steady_state(r, net2, st2, x2, y2, inner=3)
    np.testing.assert_array_equal(a.uP[1], b.uP[1])
