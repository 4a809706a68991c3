"""PEPITA: the rule against a plain NumPy transcription of the equations, its options and errors.

The theorems (first-order theory, BP limit, sign flip, alignment) are run by
tests/proofs/test_theorems.py through ``proofs.pepita``.
"""

import dataclasses
import math

import numpy as np
import pytest

import refimpl as ri
from refimpl.rules.pepita import PEPITA, PEPITAState, dropout_masks, alignment_angle, product_F
from refimpl.backend import to_numpy


def _net(sizes=(6, 5, 4, 3), act="relu", seed=1):
    return ri.Network.init(list(sizes), activation=act, output_activation="linear", seed=seed, bias_scale=0.1)


def _batch(n0=6, c=3, B=7, seed=0):
    g = np.random.default_rng(seed)
    return g.standard_normal((B, n0)), g.integers(0, c, size=B)


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def _reference(net, F, x, y, masks, sign, last, pres, variant="pepita", tl_lr=0.0):
    """The equations of spec pepita_fa.md §1.1 / §1.5, written out with host NumPy."""
    Ws = [to_numpy(W) for W in net.weights]
    bs = [to_numpy(b) for b in net.biases]
    acts = [ri.activations.get(a) for a in net.activations]
    L = len(Ws)
    t = np.eye(Ws[-1].shape[0])[y]
    B = x.shape[0]

    def fwd(inp, Ws, bs):
        h = [inp]
        for l in range(L):
            z = acts[l].f(h[-1] @ Ws[l].T + bs[l])
            if l < L - 1 and masks[l] is not None:
                z = z * masks[l]
            h.append(z)
        return h

    h = fwd(x, Ws, bs)
    e = _softmax(h[L]) - t
    xm = x + sign * e @ F.T
    if variant == "time_local":
        yhat = _softmax(h[L])
        G1 = [h[l].T @ h[l - 1] / B for l in range(1, L)] + [yhat.T @ h[L - 1] / B]
        g1 = [h[l].mean(0) for l in range(1, L)] + [yhat.mean(0)]
        W1 = [W - tl_lr * G for W, G in zip(Ws, G1)]
        b1 = [b - tl_lr * g for b, g in zip(bs, g1)]
        hm = fwd(xm, W1, b1)
        G2 = [-hm[l].T @ hm[l - 1] / B for l in range(1, L)] + [-t.T @ hm[L - 1] / B]
        g2 = [-hm[l].mean(0) for l in range(1, L)] + [-t.mean(0)]
        return [a + b for a, b in zip(G1, G2)], [a + b for a, b in zip(g1, g2)], xm
    hm = fwd(xm, Ws, bs)
    em = _softmax(hm[L]) - t
    if variant == "hebbian":
        yhat = _softmax(h[L])
        dW = [(h[l].T @ h[l - 1] - hm[l].T @ hm[l - 1]) / B for l in range(1, L)]
        dW.append((yhat.T @ h[L - 1] - t.T @ hm[L - 1]) / B)
        db = [(h[l] - hm[l]).mean(0) for l in range(1, L)] + [e.mean(0)]
        return dW, db, xm
    pre = hm if pres == "modulated" else h
    es = em if last == "modulated" else e
    dW = [(h[l] - hm[l]).T @ pre[l - 1] / B for l in range(1, L)] + [es.T @ pre[L - 1] / B]
    db = [(h[l] - hm[l]).mean(0) for l in range(1, L)] + [es.mean(0)]
    return dW, db, xm


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("last", ["modulated", "first"])
@pytest.mark.parametrize("pres", ["modulated", "forward"])
@pytest.mark.parametrize("keep", [1.0, 0.7])
def test_matches_numpy_transcription(sign, last, pres, keep):
    net = _net()
    x, y = _batch()
    rule = PEPITA(sign=sign, last_layer_error=last, presynaptic=pres, keep_prob=keep, F_scale=0.5)
    st = rule.init(net, seed=4)
    upd, st2 = rule.updates(net, st, x, y)
    masks = [None if m is None else to_numpy(m) for m in rule.masks(net, st, x.shape[0])]
    dW, db, xm = _reference(net, to_numpy(st.F), x, y, masks, sign, last, pres)
    for a, b in zip(list(upd.dW) + list(upd.db), dW + db):
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(to_numpy(upd.record["x_mod"]), xm, rtol=1e-12, atol=1e-14)
    assert st2.step == st.step + 1
    for k in ("masks", "a", "h", "a_mod", "h_mod", "error", "error_mod", "x_mod", "activity_difference"):
        assert k in upd.record


@pytest.mark.parametrize("variant", ["hebbian", "time_local"])
def test_variants_match_numpy_transcription(variant):
    net = _net()
    x, y = _batch()
    rule = PEPITA(variant=variant, keep_prob=0.8, tl_lr=0.05, F_scale=0.5)
    st = rule.init(net, seed=2)
    upd, _ = rule.updates(net, st, x, y)
    masks = [None if m is None else to_numpy(m) for m in rule.masks(net, st, x.shape[0])]
    dW, db, _ = _reference(net, to_numpy(st.F), x, y, masks, 1, "modulated", "modulated", variant, 0.05)
    for a, b in zip(list(upd.dW) + list(upd.db), dW + db):
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-12, atol=1e-14)


def test_time_local_equals_two_sgd_steps():
    """With plain SGD at lr = tl_lr, W - lr dW is the Hebbian step followed by the anti-Hebbian one."""
    net = _net()
    x, y = _batch()
    rule = PEPITA(variant="time_local", tl_lr=0.1)
    st = rule.init(net, seed=0)
    upd, _ = rule.updates(net, st, x, y)
    G2 = upd.record["anti_hebbian"][0]
    mid = upd.record["weights_mid"]
    for W, d, Wm, g2 in zip(net.weights, upd.dW, mid, G2):
        np.testing.assert_allclose(to_numpy(W - 0.1 * d), to_numpy(Wm - 0.1 * g2), rtol=1e-13, atol=1e-15)


def test_masks_shared_and_deterministic():
    net = _net(sizes=(6, 20, 20, 3))
    x, y = _batch()
    rule = PEPITA(keep_prob=0.5)
    st = rule.init(net, seed=0)
    u1, s1 = rule.updates(net, st, x, y)
    u2, _ = rule.updates(net, st, x, y)
    u3, _ = rule.updates(net, s1, x, y)
    for l in (1, 2):
        m = to_numpy(u1.record["masks"][l - 1])
        assert set(np.unique(m)) <= {0.0, 2.0}
        # both passes see the same mask: dropped units are zero in both
        assert np.all(to_numpy(u1.record["h"][l])[m == 0] == 0)
        assert np.all(to_numpy(u1.record["h_mod"][l])[m == 0] == 0)
        np.testing.assert_array_equal(m, to_numpy(u2.record["masks"][l - 1]))
    assert not np.array_equal(to_numpy(u1.record["masks"][0]), to_numpy(u3.record["masks"][0]))


def test_zero_F_hidden_updates_vanish_and_output_is_gradient():
    net = _net(act="tanh")
    x, y = _batch()
    rule = PEPITA()
    st = dataclasses.replace(rule.init(net), F=np.zeros((6, 3)))
    upd, _ = rule.updates(net, st, x, y)
    bp, _ = ri.rules.BP(loss="ce").updates(net, ri.rules.EmptyState(), x, y)
    for d in upd.dW[:-1]:
        assert np.all(to_numpy(d) == 0)
    np.testing.assert_allclose(to_numpy(upd.dW[-1]), to_numpy(bp.dW[-1]), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(to_numpy(upd.db[-1]), to_numpy(bp.db[-1]), rtol=1e-12, atol=1e-15)


def test_uniform_F_init_scale():
    net = _net(sizes=(400, 10, 50))
    F = to_numpy(PEPITA(F_scale=0.05).init(net, seed=0).F)
    a = 0.05 * math.sqrt(6 / 400)
    assert F.shape == (400, 50) and np.max(np.abs(F)) <= a
    assert abs(F.std() / (0.05 * math.sqrt(2 / 400)) - 1) < 0.05


def test_product_F_init_scale_and_factors():
    net = _net(sizes=(200, 60, 40, 30))
    st = PEPITA(F_init="product").init(net, seed=0)
    assert [tuple(B.shape) for B in st.factors] == [(200, 60), (60, 40), (40, 30)]
    np.testing.assert_allclose(to_numpy(st.F), to_numpy(product_F(st.factors)))
    sigma = 0.05 * math.sqrt(2 / 200)
    assert 0.7 < to_numpy(st.F).std() / sigma < 1.3


def test_weight_mirroring_aligns_factors_and_keeps_scale():
    net = _net(sizes=(8, 12, 4), act="relu")
    x, y = _batch(n0=8, c=4, B=64)
    for sign in (1, -1):
        rule = PEPITA(sign=sign, F_init="product", mirror=True, wm_lr=0.5, wm_wd=0.0)
        st = rule.init(net, seed=1)
        for _ in range(300):
            st = rule.train_feedback(net, st, x, y)
            st = dataclasses.replace(st, step=st.step + 1)
        ang = [ri.metrics.angle(B, W.T) for B, W in zip(st.factors, net.weights)]
        # later factors mirror W_l^T; the first mirrors -sign W_1^T
        assert ang[1] < 30
        assert (ang[0] > 120) if sign == 1 else (ang[0] < 60)
        assert abs(to_numpy(st.F).std(ddof=1) / (0.05 * math.sqrt(2 / 8)) - 1) < 1e-6
    g = PEPITA(F_init="product", mirror=True).feedback_updates(net, st, x, y)
    assert [tuple(a.shape) for a in g] == [tuple(B.shape) for B in st.factors]


def test_no_mirror_train_feedback_is_identity():
    net = _net()
    x, y = _batch()
    rule = PEPITA()
    st = rule.init(net)
    assert rule.train_feedback(net, st, x, y) is st


def test_normalize_rows_and_bias_updates_off():
    net = _net()
    x, y = _batch()
    upd, _ = PEPITA(normalize=True, bias_updates=False).updates(net, PEPITA().init(net), x, y)
    h = to_numpy(upd.record["h"][1])
    n = np.linalg.norm(h, axis=1)
    np.testing.assert_allclose(n[n > 0], 1.0)
    assert all(np.all(to_numpy(b) == 0) for b in upd.db)


def test_alignment_angle():
    net = _net(sizes=(5, 4, 3), act="linear")
    M = to_numpy(net.weights[1]) @ to_numpy(net.weights[0])
    assert alignment_angle(net, M.T) == pytest.approx(0.0, abs=1e-6)
    assert alignment_angle(net, -M.T) == pytest.approx(180.0, abs=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"sign": 0}, "sign"), ({"sign": True}, "sign"), ({"keep_prob": 0.0}, "keep_prob"),
    ({"keep_prob": 1.5}, "keep_prob"), ({"variant": "mixed"}, "variant"), ({"F_init": "normal"}, "F_init"),
    ({"last_layer_error": "second"}, "last_layer_error"), ({"presynaptic": "x"}, "presynaptic"),
    ({"mirror": True}, "mirror"), ({"variant": "hebbian", "presynaptic": "forward"}, "presynaptic"),
    ({"F_scale": -1.0}, "F_scale"), ({"loss": "hinge"}, "loss"), ({"F_scale": float("nan")}, "F_scale"),
])
def test_bad_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PEPITA(**kwargs)


def test_bad_state_and_inputs():
    net = _net()
    x, y = _batch()
    rule = PEPITA()
    st = rule.init(net)
    with pytest.raises(ValueError, match=r"state.F: expected shape \(6, 3\)"):
        rule.updates(net, dataclasses.replace(st, F=np.zeros((3, 6))), x, y)
    with pytest.raises(ValueError, match="state.F"):
        rule.updates(net, dataclasses.replace(st, F=np.full((6, 3), np.nan)), x, y)
    with pytest.raises(TypeError, match="PEPITAState"):
        rule.updates(net, ri.rules.EmptyState(), x, y)
    with pytest.raises(ValueError, match="x"):
        rule.updates(net, st, x[:, :4], y)
    with pytest.raises(ValueError, match="x"):
        rule.updates(net, st, np.full_like(x, np.inf), y)


def test_bad_factors_and_stream_are_rejected():
    # review of issue 6: factors of another dtype or with NaN were accepted (train_feedback then
    # silently promoted F or produced a NaN F), and a negative / non-integer dropout seed gave a raw
    # numpy error (or was accepted) instead of one naming the argument.
    net = _net()
    x, y = _batch()
    rule = PEPITA(F_init="product", mirror=True)
    st = rule.init(net)
    f32 = tuple(B.astype(np.float32) for B in st.factors)
    with pytest.raises(TypeError, match=r"state.factors\[0\]: expected dtype float64"):
        rule.train_feedback(net, dataclasses.replace(st, factors=f32), x, y)
    nan = (st.factors[0] * np.nan,) + tuple(st.factors[1:])
    with pytest.raises(ValueError, match=r"state.factors\[0\]: expected finite"):
        rule.train_feedback(net, dataclasses.replace(st, factors=nan), x, y)
    for bad in (-1, 0.5, True):
        with pytest.raises(ValueError, match="state.seed"):
            rule.updates(net, dataclasses.replace(st, seed=bad), x, y)
    with pytest.raises(ValueError, match="state.step"):
        rule.updates(net, dataclasses.replace(st, step=-3), x, y)
    rule.updates(net, dataclasses.replace(st, seed=np.int64(3)), x, y)  # numpy integers are fine


def test_backends_agree(backend):
    net = _net()
    x, y = _batch()
    rule = PEPITA(keep_prob=0.8, F_scale=0.3)
    st = rule.init(net, seed=5)
    ref, _ = rule.updates(net, st, x, y)
    bnet = backend.net(net)
    bst = rule.init(bnet, seed=5)
    upd, _ = rule.updates(bnet, bst, backend(x), backend(y))
    for a, b in zip(list(upd.dW) + list(upd.db), list(ref.dW) + list(ref.db)):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-12, atol=1e-14)


def test_F_stream_is_not_the_network_stream():
    """Network.init(seed=s) and PEPITA.init(seed=s) must not draw F from W_1's uniforms."""
    net = ri.Network.init([6, 5, 3], activation="relu", seed=0, init="xavier")
    F = to_numpy(PEPITA(F_scale=1.0).init(net, seed=0).F).ravel()
    W = to_numpy(net.weights[0]).ravel()[:F.size]
    assert abs(np.corrcoef(F, W)[0, 1]) < 0.9


@pytest.mark.parametrize("kwargs", [{"keep_prob": 0.8}, {"variant": "time_local"}, {"variant": "hebbian"},
                                    {"F_init": "product", "mirror": True}])
def test_float32_stays_float32(kwargs):
    net = ri.Network.init([6, 5, 3], activation="relu", seed=1, dtype="float32")
    x, y = _batch(c=3, B=4)
    x = x.astype(np.float32)
    rule = PEPITA(**kwargs)
    st = rule.train_feedback(net, rule.init(net), x, y)
    upd, _ = rule.updates(net, st, x, y)
    assert st.F.dtype == np.float32
    assert all(a.dtype == np.float32 for a in list(upd.dW) + list(upd.db))


@pytest.mark.parametrize("loss, out", [("mse", "sigmoid"), ("mse", "tanh"), ("ce", "linear")])
def test_zero_F_output_update_is_autograd_for_any_output_activation(loss, out):
    # review of issue 6: the output update keeps f_L'(a_L) so that it is the delta rule for any
    # output activation / loss the rule accepts, but every theorem draws linear logits with ce; this
    # pins the claim against autograd (F = 0, no dropout: PEPITA's output update is BP's).
    from proofs import oracle

    net = ri.Network.init([5, 4, 3], activation="tanh", output_activation=out, seed=3, bias_scale=0.1)
    g = np.random.default_rng(1)
    x = g.standard_normal((6, 5))
    y = np.eye(3)[g.integers(0, 3, 6)] if loss == "ce" else g.standard_normal((6, 3))
    rule = PEPITA(loss=loss)
    st = dataclasses.replace(rule.init(net), F=np.zeros((5, 3)))
    upd, _ = rule.updates(net, st, x, y)
    dW, db, _ = oracle.bp_gradients(net, x, y, loss)
    np.testing.assert_allclose(to_numpy(upd.dW[-1]), dW[-1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(to_numpy(upd.db[-1]), db[-1], rtol=1e-12, atol=1e-14)
    assert np.all(to_numpy(upd.dW[0]) == 0)
