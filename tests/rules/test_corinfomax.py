"""CorInfoMax: the rule against a plain NumPy transcription of the code's equations, its options and errors.

The theorems (information forms, stop-gradient dynamics, KKT, local contrast, lateral updates) are run
by tests/proofs/test_theorems.py through ``proofs.corinfomax``.
"""

import dataclasses

import numpy as np
import pytest

import refimpl as ri
from refimpl.backend import to_numpy
from refimpl.rules.corinfomax import (CorInfoMax, CorInfoMaxState, relax, lateral_update, neural_step_size, box,
                                      soma_rhs)


def _net(sizes=(5, 7, 6, 4), seed=0, gain=1.0):
    return ri.Network.init(list(sizes), activation="relu", output_activation="relu", seed=seed, gain=gain)


def _batch(n0=5, c=4, B=9, seed=0):
    g = np.random.default_rng(seed)
    return g.uniform(0, 1, (B, n0)), np.eye(c)[g.integers(0, c, B)]


def _reference_relax(rule, Ws, Wb, Bs, x, y, beta, steps, start=None, jacobi=False):
    """The code's run_neural_dynamics_hopfield, transcribed in column-free NumPy (rows = samples)."""
    P = len(Ws)
    eps, g, gam = rule.eps, rule.g_lk, (1 - rule.lam) / rule.lam
    r = [x] + ([np.zeros((x.shape[0], W.shape[0])) for W in Ws] if start is None else [a.copy() for a in start])
    u = [None] + [a.copy() for a in r[1:]]
    for t in range(steps):
        eta = neural_step_size(rule, t)
        old = [a.copy() for a in r]
        src = old if jacobi else r
        for k in range(1, P + 1):
            vb = src[k - 1] @ Ws[k - 1].T
            if k < P:
                va = eps * (2 * gam * src[k] @ Bs[k - 1] + g * src[k]) + src[k + 1] @ Wb[k].T
                du = -g * u[k] + (vb - u[k]) / eps + (va - u[k]) / eps
            else:
                va = gam * src[k] @ Bs[k - 1] + g * src[k] - beta * (src[k] - y)
                du = -g * u[k] + (vb - u[k]) / eps + (va - u[k])
            u[k] = u[k] + eta * du
            r[k] = np.clip(u[k], 0, 1)
    return r, u


def _host_state(st):
    return [None] + [to_numpy(W) for W in st.Wb[1:]], [to_numpy(B) for B in st.B]


def test_relax_matches_transcription_gauss_seidel():
    net = _net()
    rule = CorInfoMax(lam=0.9, g_lk=0.3, neural_lr=0.04)
    st = rule.init(net, seed=3)
    x, y = _batch()
    Ws = [to_numpy(W) for W in net.weights]
    Wb, Bs = _host_state(st)
    for beta in (0.0, 0.7):
        ph = relax(rule, net, st, x, y, beta, 12)
        r, u = _reference_relax(rule, Ws, Wb, Bs, x, y, beta, 12)
        for k in range(1, 4):
            np.testing.assert_allclose(to_numpy(ph.R[k]), r[k], rtol=1e-13, atol=1e-14)
            np.testing.assert_allclose(to_numpy(ph.U[k]), u[k], rtol=1e-13, atol=1e-14)
    # the sweep order matters: a simultaneous (Jacobi) update gives other numbers
    rj, _ = _reference_relax(rule, Ws, Wb, Bs, x, y, 0.7, 12, jacobi=True)
    assert np.max(np.abs(to_numpy(ph.R[3]) - rj[3])) > 1e-6


def test_nudged_phase_restarts_u_at_clipped_free_state():
    net = _net(gain=2.5)  # large weights: many saturated units, u != r at the end of the free phase
    rule = CorInfoMax(lam=0.99, t_free=20, t_nudge=5)
    st = rule.init(net, seed=1)
    x, y = _batch()
    ph = rule.phases(net, st, x, y)
    free = ph["free"]
    assert any(np.any(to_numpy(free.U[k]) != to_numpy(free.R[k])) for k in range(1, 4))
    Ws = [to_numpy(W) for W in net.weights]
    Wb, Bs = _host_state(st)
    r, _ = _reference_relax(rule, Ws, Wb, Bs, x, y, 1.0, 5, start=[to_numpy(a) for a in free.R[1:]])
    for k in range(1, 4):
        np.testing.assert_allclose(to_numpy(ph["nudged"].R[k]), r[k], rtol=1e-13, atol=1e-14)


def test_updates_against_transcription():
    net = _net()
    rule = CorInfoMax(lam=0.95, t_free=15, t_nudge=6, beta=0.8, feedback_lr=(0.0, 0.2, 0.1), weight_decay=True)
    st = rule.init(net, seed=5)
    x, y = _batch()
    upd, st2 = rule.updates(net, st, x, y)
    Ws = [to_numpy(W) for W in net.weights]
    Wb, Bs = _host_state(st)
    r0, _ = _reference_relax(rule, Ws, Wb, Bs, x, y, 0.0, 15)
    rb, _ = _reference_relax(rule, Ws, Wb, Bs, x, y, 0.8, 6, start=r0[1:])
    N = x.shape[0]
    for i, W in enumerate(Ws):
        e0, eb = r0[i + 1] - r0[i] @ W.T, rb[i + 1] - rb[i] @ W.T
        exp = -(eb.T @ rb[i] - e0.T @ r0[i]) / (N * 0.8) + rule.eps * W
        np.testing.assert_allclose(to_numpy(upd.dW[i]), exp, rtol=1e-12, atol=1e-13)
        assert np.all(to_numpy(upd.db[i]) == 0)
    lrs = (0.0, 0.2, 0.1)
    for k in (1, 2):
        e0, eb = r0[k] - r0[k + 1] @ Wb[k].T, rb[k] - rb[k + 1] @ Wb[k].T
        exp = -(eb.T @ rb[k + 1] - e0.T @ r0[k + 1]) / (N * 0.8) + rule.eps * Wb[k]
        np.testing.assert_allclose(to_numpy(upd.record["dWb"][k]), exp, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(to_numpy(st2.Wb[k]), Wb[k] - lrs[k] * exp, rtol=1e-12, atol=1e-13)
    gam = (1 - 0.95) / 0.95
    for k in (1, 2, 3):
        z = rb[k] @ Bs[k - 1]
        exp = (Bs[k - 1] - gam * z.T @ z / N) / 0.95
        np.testing.assert_allclose(to_numpy(st2.B[k - 1]), 0.5 * (exp + exp.T), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(to_numpy(upd.record["lateral_z"][k - 1]), z, rtol=1e-12, atol=1e-13)
    assert st2.step == st.step + 1
    assert upd.record["loss"] == pytest.approx(0.5 * np.mean(np.sum((r0[-1] - y) ** 2, axis=1)))
    fb = rule.feedback_updates(net, st, x, y)
    assert fb[0] is None
    for k in (1, 2):
        np.testing.assert_allclose(to_numpy(fb[k]), to_numpy(upd.record["dWb"][k]), rtol=0, atol=0)


def test_record_names_and_shapes():
    net = _net()
    rule = CorInfoMax(three_phase=True, t_free=5, t_nudge=3)
    st = rule.init(net)
    x, y = _batch()
    upd, _ = rule.updates(net, st, x, y)
    rec = upd.record
    for ph in ("free", "nudged", "third"):
        for name in ("r", "u", "v_basal", "v_apical", "e_fwd"):
            assert len(rec[f"{name}_{ph}"]) in (3, 4)
        assert rec[f"e_bwd_{ph}"][0] is None and len(rec[f"e_bwd_{ph}"]) == 3
        assert tuple(rec[f"r_{ph}"][2].shape) == (9, 6)
    assert [tuple(d.shape) for d in upd.dW] == [tuple(W.shape) for W in net.weights]


def test_three_phase_uses_minus_beta_phase_and_halves():
    net = _net()
    rule = CorInfoMax(three_phase=True, t_free=8, t_nudge=4, beta=0.5)
    st = rule.init(net, seed=2)
    x, y = _batch()
    upd, _ = rule.updates(net, st, x, y)
    rec = upd.record
    rp, rm = [to_numpy(a) for a in rec["r_nudged"]], [to_numpy(a) for a in rec["r_third"]]
    N = x.shape[0]
    for i, W in enumerate(net.weights):
        W = to_numpy(W)
        ep, em = rp[i + 1] - rp[i] @ W.T, rm[i + 1] - rm[i] @ W.T
        exp = -(ep.T @ rp[i] - em.T @ rm[i]) / (N * 2 * 0.5)
        np.testing.assert_allclose(to_numpy(upd.dW[i]), exp, rtol=1e-12, atol=1e-13)
    # the third phase continues from the nudged state (the code), not from the free state
    ref = relax(rule, net, st, x, y, -0.5, 4, start=rec["r_nudged"][1:])
    np.testing.assert_allclose(to_numpy(ref.R[-1]), rm[-1], rtol=0, atol=0)


def test_random_sign_is_deterministic_and_takes_both_signs():
    net = _net()
    rule = CorInfoMax(random_sign=True, beta=0.7)
    st = rule.init(net, seed=4)
    signs = [rule.signed_beta(dataclasses.replace(st, step=s)) for s in range(20)]
    assert set(signs) == {0.7, -0.7}
    assert signs == [rule.signed_beta(dataclasses.replace(st, step=s)) for s in range(20)]
    assert CorInfoMax(beta=-0.3).signed_beta(st) == -0.3


def test_neural_step_size_rules():
    r = CorInfoMax(neural_lr=0.05, neural_lr_stop=0.001, neural_lr_rule="divide_by_slow_loop_index",
                   neural_lr_decay=0.01)
    assert neural_step_size(r, 0) == 0.05
    assert neural_step_size(r, 100) == pytest.approx(0.025)
    assert neural_step_size(dataclasses.replace(r, neural_lr_rule="divide_by_loop_index"), 99) == 0.001
    assert neural_step_size(dataclasses.replace(r, neural_lr_rule="constant"), 99) == 0.05


def test_lateral_forms():
    g = np.random.default_rng(0)
    J = g.standard_normal((4, 4))
    B = J @ J.T + np.eye(4)
    r = g.uniform(0, 1, (1, 4))
    lam = 0.8
    gam = (1 - lam) / lam
    z = (B @ r[0])[:, None]
    q = float(r[0] @ B @ r[0])
    sm = (B - gam * z @ z.T / (1 + gam * q)) / lam
    np.testing.assert_allclose(lateral_update(B, r, lam, "exact", symmetrize=False), sm, rtol=1e-13)
    np.testing.assert_allclose(lateral_update(B, r, lam, "dropped", symmetrize=False), (B - gam * z @ z.T) / lam,
                               rtol=1e-13)
    # exact = inverse of the updated correlation, batch of 3 (Woodbury)
    X = g.uniform(0, 1, (3, 4))
    R = lam * np.linalg.inv(B) + (1 - lam) * X.T @ X / 3
    np.testing.assert_allclose(lateral_update(B, X, lam, "exact"), np.linalg.inv(R), rtol=1e-11)
    with pytest.raises(ValueError, match="form"):
        lateral_update(B, r, lam, "woodbury")
    with pytest.raises(ValueError, match="lam"):
        lateral_update(B, r, 1.0)


def test_init_shapes_and_symmetry():
    net = _net()
    st = CorInfoMax().init(net, seed=0)
    assert st.Wb[0] is None
    assert [tuple(W.shape) for W in st.Wb[1:]] == [(7, 6), (6, 4)]
    assert [tuple(B.shape) for B in st.B] == [(7, 7), (6, 6), (4, 4)]
    for B in st.B:
        B = to_numpy(B)
        np.testing.assert_array_equal(B, B.T)
        assert np.all(np.linalg.eigvalsh(B) >= -1e-12)


@pytest.mark.parametrize("kw, match", [
    ({"lam": 1.0}, "lam"), ({"lam": 0.0}, "lam"), ({"eps": 0.0}, "eps"), ({"beta": 0.0}, "beta"),
    ({"t_free": 0}, "t_free"), ({"neural_lr_rule": "cosine"}, "neural_lr_rule"), ({"lateral": "sm"}, "lateral"),
    ({"loss": "ce"}, "loss"), ({"feedback_lr": -1.0}, "feedback_lr"), ({"g_lk": -0.1}, "g_lk"),
])
def test_hyper_parameter_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        CorInfoMax(**kw)


def test_input_errors():
    net = _net()
    rule = CorInfoMax(t_free=2, t_nudge=2)
    st = rule.init(net)
    x, y = _batch()
    with pytest.raises(ValueError, match="biases"):
        rule.updates(ri.Network.init([5, 7, 6, 4], bias_scale=0.1), st, x, y)
    with pytest.raises(ValueError, match="x"):
        rule.updates(net, st, x[:, :3], y)
    with pytest.raises(ValueError, match="state.B"):
        rule.updates(net, dataclasses.replace(st, B=st.B[:2] + (np.eye(3),)), x, y)
    with pytest.raises(TypeError, match="state"):
        rule.updates(net, None, x, y)
    with pytest.raises(ValueError, match="state.Wb"):
        rule.updates(net, dataclasses.replace(st, Wb=(None, np.ones((7, 6)), np.full((6, 4), np.nan))), x, y)
    with pytest.raises(ValueError, match="finite"):
        rule.updates(net, st, x, np.full_like(y, np.nan))


def test_backends_agree(backend):
    net = _net()
    rule = CorInfoMax(lam=0.9, t_free=10, t_nudge=4, lateral="exact", three_phase=True)
    st = rule.init(net, seed=1)
    x, y = _batch()
    ref, ref_st = rule.updates(net, st, x, y)
    bnet = backend.net(net)
    bst = CorInfoMaxState((None,) + tuple(backend(to_numpy(W)) for W in st.Wb[1:]),
                          tuple(backend(to_numpy(B)) for B in st.B), st.step, st.seed)
    upd, st2 = rule.updates(bnet, bst, backend(x), backend(y))
    for a, b in zip(upd.dW, ref.dW):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-12, atol=1e-14)
    for a, b in zip(st2.B + st2.Wb[1:], ref_st.B + ref_st.Wb[1:]):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(to_numpy(rule.predict(bnet, bst, backend(x))), to_numpy(ref.record["r_free"][-1]),
                               rtol=1e-12, atol=1e-14)


def test_float32_stays_float32():
    net = ri.Network.init([5, 7, 4], activation="relu", output_activation="relu", seed=0, dtype="float32")
    rule = CorInfoMax(t_free=5, t_nudge=3)
    st = rule.init(net)
    x, y = _batch(c=4)
    upd, st2 = rule.updates(net, st, x.astype(np.float32), y.astype(np.float32))
    assert all(d.dtype == np.float32 for d in upd.dW) and all(B.dtype == np.float32 for B in st2.B)


def test_box_and_output_leak_variant():
    u = np.array([-0.5, 0.0, 0.3, 1.0, 1.7])
    np.testing.assert_array_equal(box(u), [0.0, 0.0, 0.3, 1.0, 1.0])
    net = _net(sizes=(3, 2))
    x, y = _batch(n0=3, c=2, B=2)
    r = np.full((2, 2), 0.4)
    for leak in (True, False):
        rule = CorInfoMax(output_apical_leak=leak)
        st = rule.init(net)
        rhs, _, _ = soma_rhs(rule, net, st, 1, r, (x, r), y, 0.0)
        rhs0, _, _ = soma_rhs(CorInfoMax(output_apical_leak=not leak), net, st, 1, r, (x, r), y, 0.0)
        np.testing.assert_allclose(rhs - rhs0, -r if leak else r, rtol=1e-14)


def test_train_loop_runs_and_state_evolves():
    from refimpl import data as D
    from refimpl.train import train

    data = D.digits(seed=0)
    net = ri.Network.init([64, 16, 10], activation="relu", output_activation="relu", seed=0)
    rule = CorInfoMax(lam=0.999, t_free=8, t_nudge=4)
    st0 = rule.init(net, seed=1)
    res = train(rule, net, data, optimizer=ri.optim.SGD(lr=0.5), epochs=1, batch_size=64, state=st0, angles=False)
    assert res.state.step == -(-data.n_train // 64)
    assert not np.allclose(to_numpy(res.state.B[0]), to_numpy(st0.B[0]))
    assert not np.allclose(to_numpy(res.state.Wb[1]), to_numpy(st0.Wb[1]))


@pytest.mark.parametrize("three_phase", [False, True])
def test_gradient_convention_reproduces_the_codes_in_place_update(three_phase):
    """Review 2026-11-22: ``W - mu dW`` is literally the code's step (batch_step_hopfield)
    ``W += -(1/(beta (three_phase + 1))) mu mean(e_free r_free^T - e_nudged r_nudged^T)``; with weight decay the
    code then applies ``W -= mu eps W`` to the *updated* W, which differs from ``dW += eps W`` by exactly
    ``-mu eps Delta`` (Delta the code's contrastive step, itself proportional to mu): second order in the rate,
    a documented judgement call."""
    net = _net()
    mu, beta = 0.3, -0.7
    rule = CorInfoMax(lam=0.95, t_free=12, t_nudge=5, beta=beta, three_phase=three_phase)
    st = rule.init(net, seed=2)
    x, y = _batch()
    upd, _ = rule.updates(net, st, x, y)
    rec = upd.record
    free = rec["r_third"] if three_phase else rec["r_free"]
    nud = rec["r_nudged"]
    for i, W in enumerate(net.weights):
        W = to_numpy(W)
        ef = to_numpy(free[i + 1]) - to_numpy(free[i]) @ W.T
        en = to_numpy(nud[i + 1]) - to_numpy(nud[i]) @ W.T
        outer = lambda e, r: np.mean(e[:, :, None] * to_numpy(r)[:, None, :], axis=0)  # mean of e r^T per sample
        delta = -(1 / (beta * (int(three_phase) + 1))) * mu * (outer(ef, free[i]) - outer(en, nud[i]))
        np.testing.assert_allclose(W - mu * to_numpy(upd.dW[i]), W + delta, rtol=1e-12, atol=1e-14)
        # weight decay: code order (decay after the step) vs gradient convention
        dwd = to_numpy(upd.dW[i]) + rule.eps * W
        code = (W + delta) - mu * rule.eps * (W + delta)
        np.testing.assert_allclose(code - (W - mu * dwd), -mu * rule.eps * delta, rtol=1e-10, atol=1e-15)
