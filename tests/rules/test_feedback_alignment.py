"""FA, DFA and sign symmetry: against torch implementations written from the spec, on every backend,
initialisations, state handling, metrics and errors."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refimpl as ri
from refimpl.backend import to_numpy
from refimpl.rules.feedback_alignment import (FAState, DFAState, SignSymmetryState, product_feedback, usf_scale,
                                              draw_feedback, alignment, feedback_angles, weight_ratios,
                                              update_angles, MODES)
from proofs.strategies import instances, ALL_ACTIVATIONS
from proofs.theorem import compare


def _rule(mode, loss="mse", **kw):
    if mode == "fa":
        return ri.rules.FA(loss=loss, **kw)
    if mode == "dfa":
        return ri.rules.DFA(loss=loss, **kw)
    return ri.rules.SignSymmetry(mode=mode, loss=loss, **kw)


def _batch(net, B=5, seed=0, loss="mse"):
    g = np.random.default_rng(seed)
    x = g.standard_normal((B, net.sizes[0]))
    y = g.standard_normal((B, net.sizes[-1])) if loss == "mse" else g.integers(0, net.sizes[-1], B)
    return x, y


# --- the torch custom-autograd implementations reproduce our updates (the done-when) -----

@settings(max_examples=15)
@given(inst=instances(activations=ALL_ACTIVATIONS, depth=(1, 4)), mode=st.sampled_from(MODES),
       seed=st.integers(0, 2**31 - 1), step=st.integers(0, 5))
def test_every_mode_matches_torch_implementation(inst, mode, seed, step):
    """All activations including relu, depth 1 included (no control needed here)."""
    pytest.importorskip("torch")
    from proofs import feedback_alignment as P

    rule = _rule(mode, inst.loss)
    state = rule.init(inst.net, seed=seed)
    if mode in ("usf", "brsf", "frsf"):
        state = dataclasses.replace(state, step=step)
        Bt = P.torch_sign_feedback(inst.net, mode, state)
        dW, db = P.torch_fa_gradients(inst.net, None, inst.x, inst.y, inst.loss, B_torch=Bt)
    elif mode == "fa":
        dW, db = P.torch_fa_gradients(inst.net, state.B, inst.x, inst.y, inst.loss)
    else:
        dW, db = P.torch_dfa_gradients(inst.net, state.B, inst.x, inst.y, inst.loss)
    upd, _ = rule.updates(inst.net, state, inst.x, inst.y)
    ev = compare(list(upd.dW) + list(upd.db), dW + db, "oracle_grad", "float64")
    assert ev.holds, ev


def test_torch_fa_function_fails_gradcheck_unless_B_is_W():
    """ENGINEERING §2.4: an FA layer's 'gradient' is not a gradient, so gradcheck must fail; with
    B = W it is the gradient and gradcheck passes (the check of the oracle itself)."""
    torch = pytest.importorskip("torch")
    from proofs.feedback_alignment import _fa_function

    FALinear = _fa_function()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    W = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True)
    B = torch.randn(5, 4, dtype=torch.float64, generator=g)
    assert torch.autograd.gradcheck(lambda x, W, b: FALinear.apply(x, W, b, W.detach()), (x, W, b))
    assert not torch.autograd.gradcheck(lambda x, W, b: FALinear.apply(x, W, b, B), (x, W, b),
                                        raise_exception=False)


def test_fa_in_torch_via_nn_module_matches():
    """The same reproduction a user would write: nn.Linear-shaped parameters, torch.optim.SGD step."""
    torch = pytest.importorskip("torch")
    from proofs.feedback_alignment import _fa_function

    FALinear = _fa_function()
    net = ri.Network.init([6, 8, 7, 3], activation="relu", seed=4, bias_scale=0.3)
    x, y = _batch(net, 9, 1)
    rule = ri.rules.FA(feedback_init="kaiming")
    state = rule.init(net, seed=7)
    Ws = [torch.nn.Parameter(torch.tensor(np.array(W))) for W in net.weights]
    bs = [torch.nn.Parameter(torch.tensor(np.array(b))) for b in net.biases]
    Bs = [torch.tensor(np.array(B)) for B in state.B]
    h = torch.tensor(x)
    for i in range(3):
        h = FALinear.apply(h, Ws[i], bs[i], Bs[i])
        h = torch.relu(h) if i < 2 else h
    (0.5 * ((h - torch.tensor(y)) ** 2).sum(1).mean()).backward()
    opt = torch.optim.SGD(Ws + bs, lr=0.1)
    opt.step()
    upd, _ = rule.updates(net, state, x, y)
    for i in range(3):
        np.testing.assert_allclose(Ws[i].detach().numpy(), net.weights[i] - 0.1 * upd.dW[i], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(bs[i].detach().numpy(), net.biases[i] - 0.1 * upd.db[i], rtol=1e-13, atol=1e-15)


# --- backends, dtypes, purity -------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_backends_give_the_same_updates(backend, mode):
    net = ri.Network.init([4, 6, 5, 3], activation="tanh", seed=2, bias_scale=0.1)
    x, y = _batch(net, 5, 3)
    rule = _rule(mode)
    state = rule.init(net, seed=11)
    ref, ref_state = rule.updates(net, state, x, y)
    bnet = backend.net(net)
    bstate = rule.init(bnet, seed=11)
    upd, new_state = rule.updates(bnet, bstate, backend(x), backend(y))
    for a, e in zip(list(upd.dW) + list(upd.db), list(ref.dW) + list(ref.db)):
        np.testing.assert_allclose(to_numpy(a), e, rtol=1e-12, atol=1e-14)
    for a, e in zip(upd.record["B"], ref.record["B"]):
        np.testing.assert_allclose(to_numpy(a), e, rtol=1e-14, atol=0)
    if mode in ("usf", "brsf", "frsf"):
        assert new_state.step == 1 == ref_state.step


@pytest.mark.parametrize("mode", MODES)
def test_float32_is_kept(mode):
    net = ri.Network.init([4, 6, 3], seed=2, dtype="float32")
    rule = _rule(mode)
    state = rule.init(net, seed=0)
    x = np.ones((2, 4), dtype=np.float32)
    upd, _ = rule.updates(net, state, x, np.zeros((2, 3), dtype=np.float32))
    assert all(d.dtype == np.float32 for d in upd.dW + upd.db)
    assert all(b.dtype == np.float32 for b in upd.record["B"])


# --- initialisation -----------------------------------------------------------------------------

def test_init_shapes_bounds_and_determinism():
    net = ri.Network.init([5, 7, 6, 3], seed=0)
    fa = ri.rules.FA().init(net, seed=3)
    assert [b.shape for b in fa.B] == [W.shape for W in net.weights]
    for B in fa.B:
        n_out, n_in = B.shape
        assert np.max(np.abs(B)) <= math.sqrt(6 / (n_in + n_out))
    again = ri.rules.FA().init(net, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(fa.B, again.B))
    other = ri.rules.FA().init(net, seed=4)
    assert not np.array_equal(fa.B[1], other.B[1])
    k = ri.rules.FA(feedback_init="kaiming").init(net, seed=3)
    assert all(np.max(np.abs(B)) <= 1 / math.sqrt(B.shape[1]) for B in k.B)
    u = ri.rules.FA(feedback_init="uniform", scale=0.5).init(net, seed=3)
    assert all(np.max(np.abs(B)) <= 0.5 for B in u.B) and np.max(np.abs(u.B[0])) > 0.4

    dfa = ri.rules.DFA().init(net, seed=3)
    assert [b.shape for b in dfa.B] == [(3, 7), (3, 6), (3, 3)]
    np.testing.assert_array_equal(dfa.B[-1], np.eye(3))
    assert np.max(np.abs(dfa.B[0])) <= math.sqrt(6 / (3 + 7))


def test_xavier_draw_has_biotorch_variance():
    gen = np.random.default_rng(0)
    B = draw_feedback(gen, (300, 200), "xavier")
    assert abs(B.std() - math.sqrt(2 / 500)) < 0.01 * math.sqrt(2 / 500)
    B = draw_feedback(gen, (300, 200), "kaiming")
    assert abs(B.std() - 1 / math.sqrt(3 * 200)) < 0.01 / math.sqrt(3 * 200)


def test_usf_scale_is_the_init_std():
    assert usf_scale((4, 6)) == pytest.approx(math.sqrt(2 / 10), rel=1e-15)
    assert usf_scale((4, 6), "kaiming") == pytest.approx(1 / math.sqrt(18), rel=1e-15)
    assert usf_scale((4, 6), "uniform", 0.3) == pytest.approx(0.3 / math.sqrt(3), rel=1e-15)


# --- state handling -----------------------------------------------------------------------------

def test_unused_feedback_matrices_do_not_matter():
    net = ri.Network.init([4, 6, 5, 3], activation="tanh", seed=1, bias_scale=0.1)
    x, y = _batch(net)
    fa = ri.rules.FA()
    s = fa.init(net, seed=0)
    u1, _ = fa.updates(net, s, x, y)
    u2, _ = fa.updates(net, dataclasses.replace(s, B=(100 * s.B[0],) + s.B[1:]), x, y)
    assert all(np.array_equal(a, b) for a, b in zip(u1.dW + u1.db, u2.dW + u2.db))
    dfa = ri.rules.DFA()
    s = dfa.init(net, seed=0)
    u1, _ = dfa.updates(net, s, x, y)
    u2, _ = dfa.updates(net, dataclasses.replace(s, B=s.B[:-1] + (-3 * s.B[-1],)), x, y)
    assert all(np.array_equal(a, b) for a, b in zip(u1.dW + u1.db, u2.dW + u2.db))


def test_brsf_redraws_each_update_reproducibly():
    net = ri.Network.init([4, 6, 5, 3], activation="tanh", seed=1)
    x, y = _batch(net)
    rule = ri.rules.SignSymmetry(mode="brsf")
    s0 = rule.init(net, seed=5)
    B0 = rule.feedback(net, s0)
    u0, s1 = rule.updates(net, s0, x, y)
    assert s1.step == 1 and s0.step == 0 and u0.record["step"] == 0
    assert all(np.array_equal(a, b) for a, b in zip(B0, u0.record["B"]))
    B1 = rule.feedback(net, s1)
    assert not np.array_equal(B0[1], B1[1])
    assert all(np.array_equal(np.sign(b), np.sign(W)) for b, W in zip(B1, net.weights))
    again, _ = rule.updates(net, s0, x, y)  # same state, same draw
    assert all(np.array_equal(a, b) for a, b in zip(u0.dW, again.dW))
    # an independent stream per step: step 0 of brSF is not frSF's draw with the same seed
    frsf = ri.rules.SignSymmetry(mode="frsf")
    assert not np.array_equal(np.abs(B0[1]), frsf.init(net, seed=5).M[1])


def test_frsf_magnitudes_fixed_signs_follow_W():
    net = ri.Network.init([4, 6, 5, 3], activation="tanh", seed=1)
    rule = ri.rules.SignSymmetry(mode="frsf")
    s = rule.init(net, seed=2)
    assert all(np.all(M >= 0) for M in s.M)
    flipped = net.replace(weights=tuple(-W for W in net.weights))
    for a, b, M in zip(rule.feedback(net, s), rule.feedback(flipped, s), s.M):
        np.testing.assert_array_equal(a, -b)
        np.testing.assert_array_equal(np.abs(a), M)


def test_usf_feedback_is_scaled_sign():
    net = ri.Network.init([4, 6, 3], seed=1)
    B = ri.rules.SignSymmetry(mode="usf", feedback_init="kaiming").feedback(net, SignSymmetryState())
    for b, W in zip(B, net.weights):
        np.testing.assert_array_equal(b, np.sign(W) / math.sqrt(3 * W.shape[1]))


@settings(max_examples=15)
@given(inst=instances(activations=ALL_ACTIVATIONS, depth=(1, 4)), mode=st.sampled_from(("usf", "brsf", "frsf")),
       seed=st.integers(0, 1000))
def test_sign_concordance(inst, mode, seed):
    """Spec §3a-3: sign(B) = sign(W) elementwise, hence the BioTorch angle is < 90 degrees."""
    rule = ri.rules.SignSymmetry(mode=mode)
    state = rule.init(inst.net, seed=seed)
    B = rule.feedback(inst.net, state)
    for b, W in zip(B, inst.net.weights):
        np.testing.assert_array_equal(np.sign(b), np.sign(W))
    assert all(a < 90.0 for a in alignment(rule, inst.net, state)["feedback_angle"])


# --- the record ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_record_deltas_give_the_updates(mode):
    net = ri.Network.init([4, 6, 5, 3], activation="sigmoid", seed=1, bias_scale=0.1)
    x, y = _batch(net, loss="ce")
    rule = _rule(mode, "ce")
    upd, _ = rule.updates(net, rule.init(net, seed=0), x, y)
    d = upd.record["delta"]
    assert d[0] is None and len(d) == 4
    for l in range(1, 4):
        np.testing.assert_allclose(upd.dW[l - 1], d[l].T @ upd.record["trace"].h[l - 1], rtol=1e-14)
        np.testing.assert_allclose(upd.db[l - 1], d[l].sum(0), rtol=1e-14)
    if mode == "dfa":
        np.testing.assert_array_equal(upd.record["output_delta"], d[3])
        np.testing.assert_allclose(d[1], (d[3] @ upd.record["B"][0]) * net.activation(1).df(upd.record["trace"].a[1]),
                                   rtol=1e-14)


# --- metrics ------------------------------------------------------------------------------------

def test_alignment_metrics_at_the_bp_limit():
    net = ri.Network.init([4, 6, 5, 3], activation="linear", seed=1, bias_scale=0.1)
    x, y = _batch(net)
    m = alignment(ri.rules.FA(), net, FAState(B=net.weights), x, y)
    assert all(a == pytest.approx(0.0, abs=1e-5) for a in m["feedback_angle"] + m["update_angle"])
    assert all(r == pytest.approx(1.0, rel=1e-14) for r in m["norm_ratio"])
    m = alignment(ri.rules.DFA(), net, DFAState(B=product_feedback(net)), x, y)
    assert all(a == pytest.approx(0.0, abs=1e-5) for a in m["feedback_angle"] + m["update_angle"])
    # anti-aligned feedback: 180 degrees, ratio 2
    m = alignment(ri.rules.FA(), net, FAState(B=tuple(-2 * W for W in net.weights)))
    assert all(a == pytest.approx(180.0, abs=1e-5) for a in m["feedback_angle"])
    assert all(r == pytest.approx(2.0, rel=1e-14) for r in m["norm_ratio"])
    assert "update_angle" not in m


def test_metric_helpers_match_definitions():
    net = ri.Network.init([4, 6, 3], seed=1)
    x, y = _batch(net)
    rule = ri.rules.FA()
    s = rule.init(net, seed=0)
    ang = feedback_angles(s.B, net.weights)
    for a, B, W in zip(ang, s.B, net.weights):
        c = np.sum(B * W) / (np.linalg.norm(B) * np.linalg.norm(W))
        assert a == pytest.approx(np.degrees(np.arccos(c)), rel=1e-12)
    assert weight_ratios(s.B, net.weights)[1] == pytest.approx(np.linalg.norm(s.B[1]) / np.linalg.norm(net.weights[1]))
    ua = update_angles(rule, net, s, x, y)
    assert ua[-1] == pytest.approx(0.0, abs=1e-5)  # last layer is BP's
    with pytest.raises(ValueError, match="x, y: give both"):
        alignment(rule, net, s, x)


# --- errors -------------------------------------------------------------------------------------

def test_bad_hyper_parameters():
    with pytest.raises(ValueError, match="mode: expected one of"):
        ri.rules.SignSymmetry(mode="sign")
    with pytest.raises(ValueError, match="feedback_init: expected one of"):
        ri.rules.FA(feedback_init="orthogonal")
    with pytest.raises(ValueError, match="scale: feedback_init='uniform' needs"):
        ri.rules.DFA(feedback_init="uniform")
    with pytest.raises(ValueError, match="scale: only used with"):
        ri.rules.FA(scale=0.5)
    with pytest.raises(ValueError, match="loss: unknown name"):
        ri.rules.DFA(loss="hinge")


def test_bad_states():
    net = ri.Network.init([4, 6, 5, 3], seed=1)
    x, y = _batch(net)
    fa, dfa = ri.rules.FA(), ri.rules.DFA()
    s = fa.init(net)
    with pytest.raises(ValueError, match=r"B\[1\]: expected shape \(5, 6\), got \(6, 5\)"):
        fa.updates(net, dataclasses.replace(s, B=(s.B[0], s.B[1].T, s.B[2])), x, y)
    with pytest.raises(ValueError, match="B: expected 3 matrices, got 2"):
        fa.updates(net, dataclasses.replace(s, B=s.B[:2]), x, y)
    with pytest.raises(TypeError, match=r"B\[2\]: expected dtype float64"):
        fa.updates(net, dataclasses.replace(s, B=s.B[:2] + (s.B[2].astype(np.float32),)), x, y)
    bad = s.B[1].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"B\[1\]: expected finite"):
        fa.updates(net, dataclasses.replace(s, B=(s.B[0], bad, s.B[2])), x, y)
    with pytest.raises(TypeError, match="state: expected a FAState"):
        fa.updates(net, None, x, y)
    with pytest.raises(TypeError, match="state: expected a DFAState"):
        dfa.updates(net, s, x, y)
    with pytest.raises(ValueError, match=r"B\[0\]: expected shape \(3, 6\)"):
        dfa.updates(net, DFAState(B=s.B), x, y)
    sign = ri.rules.SignSymmetry(mode="frsf")
    with pytest.raises(TypeError, match="M: expected a tuple"):
        sign.updates(net, SignSymmetryState(M=None), x, y)
    with pytest.raises(ValueError, match="state.step: expected a non-negative int"):
        ri.rules.SignSymmetry(mode="brsf").updates(net, SignSymmetryState(step=-1), x, y)
    xs = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match="one array library"):
        fa.updates(net, dataclasses.replace(s, B=(s.B[0], xs.asarray(s.B[1]), s.B[2])), x, y)


def test_feedback_never_reuses_the_network_stream():
    """Network.init(seed=s) and FA(xavier).init(net, seed=s) must not draw the same numbers (B = W
    would silently make FA equal to BP); likewise FA, DFA and frSF with one seed are independent."""
    net = ri.Network.init([5, 7, 6, 3], seed=0)
    B = ri.rules.FA().init(net, seed=0).B
    assert not any(np.array_equal(b, W) for b, W in zip(B, net.weights))
    M = ri.rules.SignSymmetry(mode="frsf").init(net, seed=0).M
    assert not any(np.array_equal(m, np.abs(b)) for m, b in zip(M, B))
    with pytest.raises(TypeError, match="seed: expected a non-negative int"):
        ri.rules.SignSymmetry(mode="brsf").init(net, seed=-1)
    with pytest.raises(TypeError, match="seed: expected a non-negative int"):
        ri.rules.FA().init(net, seed=1.5)
