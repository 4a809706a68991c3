"""GAIT-prop and TP through exact inverses: the rule's face, its pieces against torch autograd, its errors.

The theorems themselves (GAIT-prop = BP for orthogonal weights, ...) run from
tests/proofs/test_theorems.py; here are the properties of the implementation around them.
"""

import math

import numpy as np
import pytest
from hypothesis import given, example, settings, strategies as st

import refimpl as ri
from refimpl.backend import to_numpy
from refimpl.network import haar_orthogonal
from refimpl.rules import gaitprop as G
from refimpl.rules.gaitprop import GaitProp, TPInverse, gamma_limit
from proofs.theorem import order_check, flat


def make_net(seed, n=6, n0=4, L=3, act="tanh", out=None, weights="orthogonal", cond=4.0, bias=0.1):
    g = np.random.default_rng(seed)
    Ws = [g.standard_normal((n, n0)) / math.sqrt(n0)]
    for _ in range(1, L):
        if weights == "orthogonal":
            Ws.append(haar_orthogonal(g, n, n))
        else:
            U, V = haar_orthogonal(g, n, n), haar_orthogonal(g, n, n)
            Ws.append(U @ np.diag(np.exp(g.uniform(-0.5, 0.5, n) * math.log(cond))) @ V.T)
    bs = [bias * g.standard_normal(n) for _ in range(L)]
    acts = [act] * (L - 1) + [out or act]
    return ri.Network(tuple(Ws), tuple(bs), tuple(acts))


def batch(seed, net, B=5, k=None, scale=1.0):
    g = np.random.default_rng(seed + 1000)
    k = k or net.sizes[-1]
    return g.standard_normal((B, net.sizes[0])), scale * g.standard_normal((B, k))


def bp(net, x, y, loss="mse", outputs=None):
    from proofs.gaitprop import bp_reference

    pytest.importorskip("torch")
    return bp_reference(net, x, y, loss, outputs or net.sizes[-1])


# --- the face of the rule --------------------------------------------------------------------------

def test_face_shapes_record_and_targets():
    net = make_net(0, L=4)
    x, y = batch(0, net)
    rule = GaitProp(gamma=1e-3)
    state = rule.init(net, seed=0)
    upd, state2 = rule.updates(net, state, x, y)
    assert state2 is state
    assert [d.shape for d in upd.dW] == [W.shape for W in net.weights]
    assert [d.shape for d in upd.db] == [b.shape for b in net.biases]
    r = upd.record
    for key in ("targets", "multipliers", "gammas", "nudged", "error", "delta"):
        assert len(r[key]) == net.depth + 1, key
    taus = rule.targets(net, state, x, y)
    assert len(taus) == net.depth + 1 and taus[0] is None
    np.testing.assert_array_equal(taus[-1], y)  # label target (C1), m_L = 1
    for a, b in zip(taus[1:], r["targets"][1:]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(r["multipliers"][1:], [1e-3 ** -(net.depth - l) for l in range(1, net.depth + 1)], rtol=1e-15)
    # the local-loss form: Delta_l = m_l (h_l - tau_l) f'(a_l) / B and dW_l = Delta_l^T h_{l-1}
    tr = r["trace"]
    for l in range(1, net.depth + 1):
        D = net.activation(l).df(tr.a[l])
        delta = r["multipliers"][l] * (tr.h[l] - taus[l]) * D / x.shape[0]
        np.testing.assert_allclose(r["delta"][l], delta, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(upd.dW[l - 1], delta.T @ tr.h[l - 1], rtol=1e-12, atol=1e-15)
    # the nudge: u_l = (1 - gamma D^2) h_l + gamma D^2 tau_l and tau_{l-1} = g_l^{-1}(u_l)
    for l in range(2, net.depth + 1):
        D = net.activation(l).df(tr.a[l])
        u = (1 - 1e-3 * D * D) * tr.h[l] + 1e-3 * D * D * taus[l]
        np.testing.assert_allclose(r["nudged"][l], u, rtol=1e-15, atol=1e-16)
        W, b = net.weights[l - 1], net.biases[l - 1]
        np.testing.assert_allclose(taus[l - 1] @ W.T + b, np.arctanh(u), rtol=1e-10, atol=1e-12)


def test_output_layer_is_bp_whatever_the_weights():
    """The output layer's update never uses an inverse: it is BP's for any invertible W (mse and ce)."""
    net = make_net(1, L=3, act="leaky_relu(0.1)", weights="invertible")
    x, y = batch(1, net)
    for loss, yy in (("mse", y), ("ce", np.eye(6)[np.arange(5) % 6])):
        for adaptive in (False, True):
            upd, _ = GaitProp(gamma=1e-3, adaptive=adaptive, loss=loss).updates(net, None, x, yy)
            dW, db = bp(net, x, yy, loss)
            np.testing.assert_allclose(upd.dW[-1], dW[-1], rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(upd.db[-1], db[-1], rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(upd.record["error"][-1], ri.losses.get(loss).grad(net(x), yy), rtol=1e-12)


def test_ce_output_target_is_h_minus_error():
    net = make_net(2, L=2, act="tanh", out="linear")
    x, _ = batch(2, net)
    labels = np.array([0, 3, 5, 1, 2])
    taus = GaitProp(loss="ce").targets(net, None, x, labels)
    h = net(x)
    np.testing.assert_allclose(taus[-1], h - (ri.losses.softmax(h) - np.eye(6)[labels]), rtol=1e-14)


def test_adaptive_gamma_nudge_has_norm_gamma_sqrt_n():
    net = make_net(3, L=4, act="tanh", n=7)
    x, y = batch(3, net, scale=0.5)
    gamma = 1e-4
    upd, _ = GaitProp(gamma=gamma, adaptive=True).updates(net, None, x, y)
    r = upd.record
    for l in range(2, net.depth + 1):
        g_l = to_numpy(r["gammas"][l])
        assert g_l.shape == (5, 1)
        diff = r["targets"][l] - r["trace"].h[l]
        np.testing.assert_allclose(g_l[:, 0] * np.linalg.norm(diff, axis=1), gamma * math.sqrt(7), rtol=1e-9)
        np.testing.assert_allclose(r["multipliers"][l - 1], r["multipliers"][l] / g_l, rtol=1e-14)


def test_adaptive_gamma_sample_with_zero_error():
    """A sample whose output already equals its label has no error: gamma_L falls back to gamma (C2 would
    divide by zero). Below the output its target is g^-1(h_l), which reconstructs h_{l-1} only up to
    rounding; that rounding is what the sample contributes (~eps/gamma relative), never NaN."""
    net = make_net(4, L=3, act="leaky_relu")
    x, y = batch(4, net)
    y[2] = net(x)[2]
    upd, _ = GaitProp(gamma=1e-6, adaptive=True).updates(net, None, x, y)
    assert all(np.all(np.isfinite(d)) for d in upd.dW + upd.db)
    assert to_numpy(upd.record["gammas"][3])[2, 0] == 1e-6
    np.testing.assert_array_equal(upd.record["delta"][3][2], 0.0)
    for l in (1, 2):
        d = upd.record["delta"][l]
        assert np.max(np.abs(d[2])) <= 1e-8 * np.max(np.abs(d))
    dW, _ = bp(net, x, y)
    for a, e in zip(upd.dW, dW):
        np.testing.assert_allclose(a, e, rtol=1e-7, atol=1e-12)


def test_identity_network_is_exact_at_any_gamma():
    """No kink, no curvature: the target map is exactly affine, GAIT = BP even at gamma = 0.5, depth 6."""
    net = make_net(5, L=6, act="linear")
    x, y = batch(5, net)
    upd, _ = GaitProp(gamma=0.5).updates(net, None, x, y)
    dW, db = bp(net, x, y)
    for a, e in zip(list(upd.dW) + list(upd.db), dW + db):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-13)


def test_crossing_a_kink_breaks_the_equality():
    """The piecewise-linear theorem's condition matters: a large gamma whose nudges cross the kink is not BP."""
    from proofs.gaitprop import kink_crossings

    net = make_net(6, L=3, act="leaky_relu(0.1)", n=8)
    x, y = batch(6, net, B=8, scale=3.0)
    upd, _ = GaitProp(gamma=1.0).updates(net, None, x, y)
    assert kink_crossings(net, upd.record) > 0
    dW, _ = bp(net, x, y)
    assert np.linalg.norm(upd.dW[0] - dW[0]) > 1e-3 * np.linalg.norm(dW[0])


@settings(max_examples=15)
@given(seed=st.integers(0, 2**31 - 1), L=st.integers(2, 5), n=st.integers(1, 8), cond=st.floats(1.5, 8.0))
def test_gait_converges_to_the_inverse_recursion_for_any_invertible_weights(seed, L, n, cond):
    """Orthogonality is not needed for the limit itself: GAIT-prop -> gamma_limit at first order in gamma
    for any invertible W (the recursion is BP only when W is orthogonal). tanh on every layer: an
    inverted non-linear layer is what makes the first-order term non-zero."""
    net = make_net(seed, n=n, L=L, act="tanh", weights="invertible", cond=cond)
    x, y = batch(seed, net, B=3, scale=0.5)
    ref = flat(list(gamma_limit(net, x, y).dW) + list(gamma_limit(net, x, y).db))

    def diff(g):
        upd, _ = GaitProp(gamma=g, adaptive=True).updates(net, None, x, y)
        return flat(list(upd.dW) + list(upd.db)) - ref

    ev = order_check(diff, (2e-3, 1e-3, 5e-4, 2.5e-4), 1, scale=float(np.linalg.norm(ref)), depth=L)
    assert ev.holds, ev.detail


@settings(max_examples=15)
@given(seed=st.integers(0, 2**31 - 1), L=st.integers(2, 5), n=st.integers(1, 8),
       act=st.sampled_from(["tanh", "leaky_relu", "sigmoid", "relu", "linear"]))
def test_gamma_limit_is_the_explicit_inverse_recursion(seed, L, n, act):
    """gamma_limit against a host re-derivation with np.linalg.inv (any invertible W, any activation:
    the recursion uses f' only, so even relu is allowed)."""
    net = make_net(seed, n=n, L=L, act=act, weights="invertible")
    x, y = batch(seed, net, B=4)
    upd = gamma_limit(net, x, y)
    tr = net.forward(x)
    B = x.shape[0]
    delta = (tr.h[-1] - y) / B * net.activation(L).df(tr.a[L])
    for l in range(L, 0, -1):
        np.testing.assert_allclose(upd.dW[l - 1], delta.T @ tr.h[l - 1], rtol=1e-9, atol=1e-13)
        if l > 1:
            delta = (delta @ np.linalg.inv(net.weights[l - 1]).T) * net.activation(l - 1).df(tr.a[l - 1])


# --- auxiliary output units -----------------------------------------------------------------------

def test_auxiliary_output_units():
    pytest.importorskip("torch")
    from proofs import oracle

    net = make_net(7, n=6, L=3, act="leaky_relu(0.1)")
    x, y = batch(7, net, k=2)
    rule = GaitProp(gamma=1e-6, adaptive=True, outputs=2)
    upd, _ = rule.updates(net, rule.init(net), x, y)
    h = net(x)
    tau_L = upd.record["targets"][-1]
    np.testing.assert_array_equal(tau_L[:, :2], y)
    np.testing.assert_array_equal(tau_L[:, 2:], h[:, 2:])  # aux units target their forward value
    np.testing.assert_array_equal(upd.dW[-1][2:], 0.0)
    # = BP of mse on the full output with the aux labels set to the forward values (zero error)
    dW, db, _ = oracle.bp_gradients(net, x, np.concatenate([y, h[:, 2:]], axis=1), "mse")
    for a, e in zip(list(upd.dW) + list(upd.db), dW + db):
        np.testing.assert_allclose(a, e, rtol=1e-7, atol=1e-12)
    assert float(upd.record["loss"]) == pytest.approx(0.5 * np.mean(np.sum((h[:, :2] - y) ** 2, axis=1)))


# --- TP through exact inverses --------------------------------------------------------------------

def test_tp_equals_bp_for_orthogonal_linear_networks():
    """Corollary of TP = Gauss-Newton: for linear orthogonal networks J^{-1} = J^T, so TP = BP."""
    net = make_net(8, L=4, act="linear")
    x, y = batch(8, net)
    upd, _ = TPInverse().updates(net, None, x, y)
    dW, db = bp(net, x, y)
    for a, e in zip(list(upd.dW) + list(upd.db), dW + db):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("act,weights", [("linear", "invertible"), ("leaky_relu(0.1)", "orthogonal")])
def test_tp_is_not_bp(act, weights):
    net = make_net(9, L=4, act=act, weights=weights)
    x, y = batch(9, net)
    upd, _ = TPInverse().updates(net, None, x, y)
    dW, _ = bp(net, x, y)
    angles = ri.metrics.layer_angles(upd.dW, tuple(dW))
    assert angles[-1] < 1e-6  # the output layer is the same
    assert max(angles[:-1]) > 5.0


def test_tp_target_outside_tanh_range_is_a_clear_error():
    net = make_net(10, L=3, act="tanh")
    x, _ = batch(10, net)
    with pytest.raises(ValueError, match="TPInverse: target for h\\[3\\].*tanh.*< 1"):
        TPInverse().updates(net, None, x, np.full((5, 6), 2.0))


# --- orthogonality regulariser ------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["full", "offdiag"])
def test_ortho_gradient_matches_autograd(form):
    torch = pytest.importorskip("torch")
    W = np.random.default_rng(11).standard_normal((5, 5))
    Wt = torch.tensor(W, requires_grad=True)
    M = Wt.T @ Wt
    R = M - torch.eye(5, dtype=torch.float64) if form == "full" else M - torch.diag(torch.diag(M))
    (R ** 2).sum().backward()
    np.testing.assert_allclose(G.ortho_gradient(W, form), Wt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(float(G.ortho_penalty(W, form)), float((R ** 2).sum().detach()), rtol=1e-12)


def test_ortho_is_added_to_square_layers_only():
    net = make_net(12, n=5, n0=3, L=3, act="leaky_relu")
    x, y = batch(12, net)
    plain, _ = GaitProp(gamma=1e-3).updates(net, None, x, y)
    for form in ("full", "offdiag"):
        reg, _ = GaitProp(gamma=1e-3, ortho=0.3, ortho_form=form).updates(net, None, x, y)
        np.testing.assert_array_equal(reg.dW[0], plain.dW[0])  # (5, 3): not square, not regularised
        assert reg.record["ortho_grad"][0] is None
        for l in (1, 2):
            np.testing.assert_allclose(reg.dW[l], plain.dW[l] + 0.3 * G.ortho_gradient(net.weights[l], form),
                                       rtol=1e-14, atol=1e-15)
            np.testing.assert_array_equal(reg.record["dW_local"][l], plain.dW[l])
        for a, b in zip(reg.db, plain.db):
            np.testing.assert_array_equal(a, b)
    # orthogonal W: the full penalty's gradient vanishes (to rounding)
    assert np.max(np.abs(G.ortho_gradient(net.weights[1], "full"))) < 1e-13


# --- errors ----------------------------------------------------------------------------------------

def test_errors_name_the_problem():
    net = make_net(13, L=3, act="leaky_relu")
    x, y = batch(13, net)
    relu = net.replace(activations=("leaky_relu", "relu", "linear"))
    with pytest.raises(ValueError, match=r"activations\[1\].*'relu' is not invertible"):
        GaitProp().updates(relu, None, x, y)
    with pytest.raises(ValueError, match=r"activations\[1\].*'relu' is not invertible"):
        TPInverse().init(relu)
    # relu on the first layer is fine: nothing is inverted through it
    GaitProp().updates(net.replace(activations=("relu", "leaky_relu", "linear")), None, x, y)
    g = np.random.default_rng(0)
    tower = ri.Network((g.standard_normal((6, 4)), g.standard_normal((5, 6)), g.standard_normal((5, 5))),
                       (np.zeros(6), np.zeros(5), np.zeros(5)), ("tanh",) * 3)
    with pytest.raises(ValueError, match=r"weights\[1\].*must be square.*\(5, 6\).*outputs=k"):
        GaitProp().updates(tower, None, x, y[:, :5])
    singular = net.replace(weights=(net.weights[0], np.zeros((6, 6)), net.weights[2]))
    with pytest.raises(ValueError, match=r"weights\[1\].*condition number is inf"):
        GaitProp().updates(singular, None, x, y)
    W = net.weights[1] @ np.diag([1, 1, 1, 1, 1, 1e-9])
    with pytest.raises(ValueError, match=r"weights\[1\].*condition number is 1e\+09.*max_cond = 6.71e\+07"):
        GaitProp().updates(net.replace(weights=(net.weights[0], W, net.weights[2])), None, x, y)
    with pytest.raises(ValueError, match=r"weights\[1\]"):
        gamma_limit(net.replace(weights=(net.weights[0], W, net.weights[2])), x, y)
    GaitProp(max_cond=1e10).updates(net.replace(weights=(net.weights[0], W, net.weights[2])), None, x, y)
    with pytest.raises(ValueError, match=r"y: expected shape \(5, 2\)"):
        GaitProp(outputs=2).updates(net, None, x, y)
    with pytest.raises(ValueError, match=r"outputs: expected 1 <= outputs <= 6"):
        GaitProp(outputs=7).updates(net, None, x, y)
    # gamma_limit's outputs argument is validated too (was: a raw slicing TypeError for 2.5, True taken as 1)
    for bad in (2.5, True, "2"):
        with pytest.raises(TypeError, match=r"outputs: expected None or an int"):
            gamma_limit(net, x, y[:, :1], outputs=bad)
    bad_x = x.copy()
    bad_x[0, 0] = np.nan
    with pytest.raises(ValueError, match="x: expected finite"):
        GaitProp().updates(net, None, bad_x, y)


@pytest.mark.parametrize("kwargs,match", [
    ({"gamma": 0.0}, "gamma: expected a finite number in \\(0, 1\\]"),
    ({"gamma": 1.5}, "gamma"), ({"gamma": float("nan")}, "gamma"), ({"gamma": True}, "gamma"),
    ({"adaptive": 1}, "adaptive: expected a bool"),
    ({"ortho": -1.0}, "ortho: expected a finite number >= 0"),
    ({"ortho_form": "half"}, "ortho_form: expected one of"),
    ({"outputs": 0}, "outputs: expected None or a positive int"),
    ({"loss": "l1"}, "loss: unknown name"),
    ({"max_cond": 0.5}, "max_cond"),
])
def test_bad_hyper_parameters(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GaitProp(**kwargs)


def test_tanh_target_domain_error_names_the_layer():
    """A fixed gamma near 1 with a far label pushes tanh's nudged target out of (-1, 1)."""
    net = make_net(14, L=2, act="tanh")
    x, _ = batch(14, net)
    with pytest.raises(ValueError, match=r"GaitProp: target for h\[2\] after the gamma nudge.*tanh"):
        GaitProp(gamma=1.0).updates(net, None, x, np.full((5, 6), 5.0))


# --- backends and dtypes -----------------------------------------------------------------------------

def test_backends_give_the_same_updates(backend):
    """Backends round differently (solve, atanh): the targets agree to ~eps and the differences of
    deepest targets are amplified by the largest multiplier m_1 (gamma^-(L-1) = 1e6 fixed, ~L/gamma
    adaptive), hence rtol = 1e-13 * m_1 (the rounding model of proofs.gaitprop.rounding_bound)."""
    net = make_net(15, L=3, act="leaky_relu(0.1)")
    x, y = batch(15, net)
    for rule, m1 in ((GaitProp(gamma=1e-3, ortho=0.1), 1e6),
                     (GaitProp(gamma=1e-6, adaptive=True, ortho_form="offdiag", ortho=1.0), 3e6), (TPInverse(), 1.0)):
        ref, _ = rule.updates(net, None, x, y)
        upd, _ = rule.updates(backend.net(net), None, backend(x), backend(y))
        for a, e in zip(list(upd.dW) + list(upd.db), list(ref.dW) + list(ref.db)):
            assert backend.name == "numpy:readonly" or type(a) is type(backend(x))
            np.testing.assert_allclose(to_numpy(a), e, rtol=1e-13 * m1, atol=1e-13 * m1 * np.max(np.abs(e)))
    lim = gamma_limit(backend.net(net), backend(x), backend(y))
    np.testing.assert_allclose(to_numpy(lim.dW[0]), gamma_limit(net, x, y).dW[0], rtol=1e-12)


def test_float32_is_kept():
    net = make_net(16, L=3, act="leaky_relu").to(dtype="float32")
    x, y = batch(16, net)
    x, y = x.astype(np.float32), y.astype(np.float32)
    upd, _ = GaitProp(gamma=1e-2, adaptive=True, ortho=0.1).updates(net, None, x, y)
    assert all(d.dtype == np.float32 for d in upd.dW + upd.db)
    assert all(t.dtype == np.float32 for t in upd.record["targets"][1:])


def test_float32_rounding_is_amplified_by_the_multipliers():
    """Pins the module docstring's 'Precision' paragraph: the 1/gamma multipliers amplify rounding
    (~eps * gamma^-(L-1) fixed, ~L eps / gamma adaptive). Identity layers (no truncation, no kink):
    pure rounding. In float32 a large adaptive gamma stays close to BP, while C1's fixed 1e-3 and
    C2's adaptive 1e-7 at depth 4 are rounding noise (measured relative errors ~6e1 and ~2; the
    same fixed 1e-3 in float64: ~4e-7)."""
    net = make_net(17, n=20, n0=20, L=4, act="linear")
    x, y = batch(17, net, B=8, scale=0.5)
    dW, _ = bp(net, x, y)
    n32, x32, y32 = net.to(dtype="float32"), x.astype(np.float32), y.astype(np.float32)

    def rel(rule, n, xx, yy):
        upd, _ = rule.updates(n, None, xx, yy)
        return max(np.linalg.norm(to_numpy(a).astype(np.float64) - e) / np.linalg.norm(e) for a, e in zip(upd.dW, dW))

    assert rel(GaitProp(gamma=1e-2, adaptive=True), n32, x32, y32) < 1e-3
    assert rel(GaitProp(gamma=1e-3), net, x, y) < 1e-5
    assert rel(GaitProp(gamma=1e-3), n32, x32, y32) > 1.0
    assert rel(GaitProp(gamma=1e-7, adaptive=True), n32, x32, y32) > 0.1


def test_train_loop_runs_gaitprop_with_auxiliary_outputs():
    from refimpl import data as D
    from refimpl.train import train

    data = D.digits(seed=0)
    net = ri.Network.init([64, 64, 64], activation="leaky_relu(0.1)", output_activation="leaky_relu(0.1)",
                          init="orthogonal", seed=0)
    res = train(GaitProp(gamma=1e-3), net, data, optimizer=ri.optim.Adam(lr=1e-3), epochs=1, batch_size=64,
                seed=0, outputs=10)
    assert res is not None


def test_float32_past_the_rounding_wall_warns():
    """Issue 19 A: float32 GAIT-prop at a depth where README says the result is rounding noise
    (fixed gamma 1e-3, L = 4: eps gamma^-3 ~ 1e2) warns; float64 there and float32 at L = 2 do not."""
    import warnings

    from refimpl.rules import GaitProp

    def run(dtype, L):
        net = ri.Network.init([6] * (L + 1), activation="leaky_relu(0.1)", output_activation="leaky_relu(0.1)",
                              init="orthogonal", seed=0, dtype=dtype)
        x = np.random.default_rng(0).standard_normal((4, 6)).astype(dtype)
        rule = GaitProp(gamma=1e-3)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            rule.updates(net, rule.init(net), x, x)
        return [str(m.message) for m in w if issubclass(m.category, RuntimeWarning)]

    assert any("rounding noise" in m for m in run("float32", 4))
    assert run("float64", 4) == [] and run("float32", 2) == []


@pytest.mark.parametrize("form", ["full", "offdiag"])
def test_ortho_regulariser_descends_its_penalty(form):
    """Mutation survivor (issue 19): the regulariser's sign (d - ortho g) passed every test. The
    added term must be ortho * the gradient of ortho_penalty (central differences), so that
    W - lr dW descends the penalty."""
    from refimpl.rules import GaitProp
    from refimpl.rules import gaitprop as G

    if form not in G.ORTHO_FORMS:
        pytest.skip(f"no ortho_form {form!r}")
    net = ri.Network.init([4, 5, 5, 5], activation="leaky_relu(0.1)", output_activation="leaky_relu(0.1)",
                          seed=2, gain=1.3)
    x = np.random.default_rng(1).standard_normal((3, 4))
    y = np.random.default_rng(2).standard_normal((3, 5))
    upd0, _ = GaitProp(gamma=1e-3).updates(net, None, x, y)
    upd1, _ = GaitProp(gamma=1e-3, ortho=0.3, ortho_form=form).updates(net, None, x, y)
    for i in (1, 2):
        W = np.asarray(net.weights[i])
        num = np.zeros_like(W)
        h = 1e-6
        for idx in np.ndindex(W.shape):
            E = np.zeros_like(W)
            E[idx] = h
            num[idx] = (float(G.ortho_penalty(W + E, form)) - float(G.ortho_penalty(W - E, form))) / (2 * h)
        np.testing.assert_allclose(np.asarray(upd1.dW[i]) - np.asarray(upd0.dW[i]), 0.3 * num, rtol=1e-6, atol=1e-8)
