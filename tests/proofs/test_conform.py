"""refimpl conform: the worked example is accepted, its slipped variant rejected with a minimal counterexample;
precision, drawn states and hyper-parameters, handed-over random quantities, counterexample files, replay
refusal, the torch adapter, the pytest fixture and the CLI's edges (issue 18)."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("refimpl.rules.feedback_alignment")

from proofs import conform as C  # noqa: E402
from refimpl.activations import get as act  # noqa: E402
from refimpl.cli import main  # noqa: E402

FA_OK = "proofs.examples.torch_fa:fa_updates"
FA_SLIP = "proofs.examples.torch_fa:fa_updates_slipped"


def test_correct_fa_is_accepted():
    res = C.check("fa", FA_OK, instances=40)
    assert res.passed, res.summary()
    assert res.examples >= 10


def test_correct_fa_is_accepted_with_ce():
    res = C.check("fa", FA_OK, instances=20, hyper={"loss": "ce"})
    assert res.passed, res.summary()


def test_slipped_fa_is_rejected_with_minimal_counterexample():
    res = C.check("fa", FA_SLIP, instances=60)
    assert not res.passed
    c = res.counterexample
    inst = c["instance"]
    # minimal: the slip needs one hidden layer with a non-linear activation, nothing more
    assert inst["sizes"] == [1, 1, 1]
    assert inst["activations"][0] != "linear" and inst["batch"] <= 2
    assert c["where"] in ("dW[0]", "db[0]")
    # shrinking kept the error visible (it was 6.75e-6, rounding-like, before issue 18)
    assert c["error"] >= 1e-3
    assert c["slip"] and "missing activation derivative" in c["slip"]
    text = res.summary()
    assert "expected:" in text and "received:" in text and "FA" in text
    ev = C.replay("fa", FA_SLIP, c)
    assert not ev.holds
    assert C.replay("fa", FA_OK, c).holds


def test_bp_conform_with_a_callable():
    from proofs.oracle import bp_gradients
    import refimpl as ri

    def my_bp(weights, biases, activations, x, y, state, loss="mse"):
        net = ri.Network(tuple(weights), tuple(biases), tuple(activations))
        dW, db, _ = bp_gradients(net, x, y, loss)
        return dW, db

    assert C.check("bp", my_bp, instances=15).passed


def test_cli_accepts_rejects_and_replays(tmp_path, capsys):
    out = tmp_path / "cex.json"
    assert main(["conform", "fa", "--impl", FA_OK, "--instances", "20"]) == 0
    assert main(["conform", "fa", "--impl", FA_SLIP, "--instances", "40", "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "minimal counterexample" in text and "--replay" in text and "expected:" in text
    cex = json.loads(out.read_text())
    assert cex["instance"]["sizes"] == [1, 1, 1]
    for key in ("rule", "hyper", "dtype", "tolerance", "version", "seed", "instance"):
        assert key in cex
    assert cex["rule"] == "fa" and cex["hyper"]["feedback_init"] == "xavier" and cex["dtype"] == "float64"
    assert main(["conform", "fa", "--impl", FA_SLIP, "--replay", str(out)]) == 1
    replayed = capsys.readouterr().out
    assert "MISMATCH" in replayed and "expected:" in replayed and "missing activation derivative" in replayed
    assert main(["conform", "fa", "--impl", FA_OK, "--replay", str(out)]) == 0
    assert "agrees" in capsys.readouterr().out


def test_bad_arguments(capsys):
    assert main(["conform", "nosuchrule", "--impl", FA_OK]) == 2
    assert main(["conform", "fa", "--impl", "proofs.examples.torch_fa"]) == 2
    assert main(["conform", "fa", "--impl", "proofs.examples.torch_fa:nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown rule" in err and "module:function" in err


@pytest.mark.parametrize("argv", [
    ["--instances", "0"], ["--instances", "-3"], ["--instances", "x"], ["--dtype", "float16"],
    ["--rtol", "-1"], ["--rtol", "nan"], ["--hyper", "beta=1:0.5"], ["--hyper", "=3"], ["--hyper", "nosuch=1"],
    ["--replay-anyway"], ["--replay", "/nonexistent/cex.json"], ["--bogus"], ["--arch", "cnn"],
])
def test_cli_edges_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(main(["conform", "fa", "--impl", FA_OK] + argv))
    assert exc_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err and len(err.splitlines()) == 1, err


def test_cli_missing_impl_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc_info:
        main(["conform", "fa"])
    assert exc_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--impl" in err and len(err.splitlines()) == 1, err


def test_check_rejects_instances_below_one():
    with pytest.raises(ValueError, match="instances"):
        C.check("fa", FA_OK, instances=0)


# --- precision -------------------------------------------------------------------------------------

def _fa_in_float32(weights, biases, activations, x, y, state, **hyper):
    """The example FA computed in float32 whatever it is handed (a float32 implementation)."""
    from proofs.examples.torch_fa import fa_updates

    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    return fa_updates([f32(W) for W in weights], [f32(b) for b in biases], activations, f32(x),
                      y if np.issubdtype(np.asarray(y).dtype, np.integer) else f32(y),
                      {"B": [f32(B) for B in state["B"]]}, **hyper)


def test_float32_implementation_passes_with_dtype_float32_only():
    res = C.check("fa", _fa_in_float32, instances=30, dtype="float32")
    assert res.passed, res.summary()
    assert res.tolerance["rtol"] == 1e-4 and "float32 row" in res.tolerance["source"]
    assert {"dW[0]", "db[0]"} <= set(res.layer_errors) and 0 < res.worst_error < 1e-4
    assert "worst per layer" in res.summary()
    bad = C.check("fa", _fa_in_float32, instances=30)
    assert not bad.passed  # float32 arithmetic judged at float64's 1e-10
    assert bad.counterexample["dtype"] == "float64"
    # --rtol overrides the table and is recorded
    ok = C.check("fa", _fa_in_float32, instances=10, rtol=1e-3, atol=1e-4)
    assert ok.passed and "user override" in ok.tolerance["source"]


def test_float32_instance_is_handed_over_in_float32():
    seen = []

    def spy(weights, biases, activations, x, y, state, **hyper):
        seen.append((weights[0].dtype, x.dtype, state["B"][0].dtype))
        from proofs.examples.torch_fa import fa_updates
        return fa_updates(weights, biases, activations, x, y, state, **hyper)

    assert C.check("fa", spy, instances=5, dtype="float32").passed
    assert all(d == (np.float32, np.float32, np.float32) for d in seen)


def test_float32_reports_per_layer_errors():
    res = C.check("fa", FA_SLIP, instances=40, dtype="float32")
    assert not res.passed
    errs = res.counterexample["errors"]
    assert set(errs) >= {"dW[0]", "db[0]", "dW[1]", "db[1]"}
    assert res.counterexample["tolerance"]["rtol"] == 1e-4


# --- target propagation: drawn feedback biases, resolved hyper-parameters -----------------------------

def _tp_numpy(weights, biases, activations, x, y, state, *, beta, loss, reduction, use_c=True, difference=True):
    """TP / DTP written from the spec (Lee et al. 2015, Eq. 5 and 13; feedback g(y) = f(y) Q^T + c,
    the layer's own activation as phi), batch rows, NumPy."""
    L = len(weights)
    h, a = [np.asarray(x, dtype=np.float64)], [None]
    for W, b, name in zip(weights, biases, activations):
        a.append(h[-1] @ W.T + b)
        h.append(act(name).f(a[-1]))
    B = h[0].shape[0]
    if loss == "mse":
        e = h[L] - y
    else:
        Y = np.eye(h[L].shape[1])[np.asarray(y)] if np.asarray(y).ndim == 1 else y
        z = np.exp(h[L] - h[L].max(1, keepdims=True))
        e = z / z.sum(1, keepdims=True) - Y
    if reduction == "mean":
        e = e / B
    t = [None] * (L + 1)
    t[L] = h[L] - beta * e
    for l in range(L, 1, -1):
        Q = state["Q"][l - 1]
        c = state["c"][l - 1] if use_c else 0.0
        g = lambda v: act(activations[l - 1]).f(v) @ Q.T + c  # noqa: E731
        t[l - 1] = g(t[l]) + (h[l - 1] - g(h[l]) if difference else 0.0)
    scale = beta * B if reduction == "sum" else beta
    dW, db = [], []
    for l in range(1, L + 1):
        r = act(activations[l - 1]).df(a[l]) * (h[l] - t[l]) / scale
        dW.append(r.T @ h[l - 1])
        db.append(r.sum(0))
    return dW, db


def test_dtp_from_the_spec_passes():
    def dtp(weights, biases, activations, x, y, state, beta, loss, reduction):
        return _tp_numpy(weights, biases, activations, x, y, state, beta=beta, loss=loss, reduction=reduction)

    assert C.check("dtp", dtp, instances=40).passed
    assert C.check("dtp", dtp, instances=20, hyper={"beta": C.Range(0.01, 1.0)}).passed


def test_tp_ignoring_feedback_biases_is_caught():
    # c is drawn (init sets it to 0, so before issue 18 this slip passed every instance)
    def tp_no_c(weights, biases, activations, x, y, state, beta, loss, reduction):
        return _tp_numpy(weights, biases, activations, x, y, state, beta=beta, loss=loss, reduction=reduction,
                         use_c=False, difference=False)

    def tp(weights, biases, activations, x, y, state, beta, loss, reduction):
        return _tp_numpy(weights, biases, activations, x, y, state, beta=beta, loss=loss, reduction=reduction,
                         difference=False)

    assert C.check("tp", tp, instances=30).passed
    res = C.check("tp", tp_no_c, instances=40)
    assert not res.passed
    c = res.counterexample
    assert c["rule"] == "tp" and c["rule_class"] == "TP" and c["hyper"]["beta"] == 0.1
    assert len(c["instance"]["sizes"]) >= 3 and any(np.any(np.asarray(v) != 0) for v in c["instance"]["state"]["c"]
                                                    if v is not None)
    assert "expected:" in res.summary() and "received:" in res.summary()
    # the drawn c is stored: replayed through JSON, the correct TP agrees and the slip does not
    c = json.loads(json.dumps(c))
    assert C.replay("tp", tp, c).holds and not C.replay("tp", tp_no_c, c).holds


def test_dtp_ignoring_feedback_biases_is_correct():
    # DTP's difference correction cancels c exactly (theorem target_prop.affine_feedback_cancels_offsets):
    # an implementation that never reads c is right, and conform must not reject it.
    def dtp_no_c(weights, biases, activations, x, y, state, beta, loss, reduction):
        return _tp_numpy(weights, biases, activations, x, y, state, beta=beta, loss=loss, reduction=reduction,
                         use_c=False)

    assert C.check("dtp", dtp_no_c, instances=30).passed


def test_dtp_with_a_wrong_beta_is_caught_and_resolved_defaults_are_handed_over():
    received = []

    def dtp_default_001(weights, biases, activations, x, y, state, beta=0.01, loss="mse", reduction="sum", **rest):
        received.append(dict(beta=beta, loss=loss, reduction=reduction, **rest))
        return _tp_numpy(weights, biases, activations, x, y, state, beta=beta, loss=loss, reduction=reduction)

    # the reference's resolved beta (0.1) reaches the implementation, so its own default never applies
    assert C.check("dtp", dtp_default_001, instances=15).passed
    import refimpl as ri
    assert set(received[0]) == set(C.resolved_hyper(ri.rules.DTP())) and received[0]["beta"] == 0.1

    def dtp_hardcoded_001(weights, biases, activations, x, y, state, loss="mse", reduction="sum"):
        return _tp_numpy(weights, biases, activations, x, y, state, beta=0.01, loss=loss, reduction=reduction)

    res = C.check("dtp", dtp_hardcoded_001, instances=60)
    assert not res.passed
    c = res.counterexample
    assert c["rule"] == "dtp" and c["hyper"]["beta"] == 0.1
    assert c["expected"] is not None and c["received"] is not None
    assert "DTP" in res.summary() and "beta=0.1" in res.summary()


def test_dtp_targets_and_drawn_beta_range():
    import refimpl as ri

    def dtp_targets(weights, biases, activations, x, y, state, beta, loss, reduction):
        net = ri.Network(tuple(weights), tuple(biases), tuple(activations))
        rule = ri.rules.DTP(beta=beta, loss=loss, reduction=reduction)
        st = ri.rules.target_prop.TPState(tuple(state["Q"]), tuple(state["c"]), state["R"])
        return list(rule.targets(net, st, x, y))

    res = C.check("dtp", dtp_targets, instances=15, targets=True, hyper={"beta": C.Range(0.01, 1.0)})
    assert res.passed, res.summary()


# --- replay -------------------------------------------------------------------------------------------

def _dtp_counterexample():
    def dtp_flipped(weights, biases, activations, x, y, state, beta, loss, reduction):
        dW, db = _tp_numpy(weights, biases, activations, x, y, state, beta=beta, loss=loss, reduction=reduction)
        return [-g for g in dW], [-g for g in db]

    res = C.check("dtp", dtp_flipped, instances=20)
    assert not res.passed
    return res.counterexample, dtp_flipped


def test_flipped_sign_is_named():
    c, _ = _dtp_counterexample()
    assert c["slip"] and c["slip"].startswith("flipped sign"), c["slip"]


def test_replay_under_another_rule_or_hyper_is_refused(tmp_path, capsys):
    c, impl = _dtp_counterexample()
    assert not C.replay("dtp", impl, c).holds
    with pytest.raises(C.ReplayRefused, match="found for rule 'dtp'"):
        C.replay("fa", FA_OK, c)
    with pytest.raises(C.ReplayRefused, match="other hyper-parameters"):
        C.replay("dtp", impl, c, hyper={"beta": 0.5})
    # explicitly asked for: replayed under the other rule
    ev = C.replay("tp", impl, c, allow_mismatch=True)
    assert isinstance(ev.holds, bool)
    path = tmp_path / "dtp.json"
    path.write_text(json.dumps(c))
    assert main(["conform", "fa", "--impl", FA_OK, "--replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "'dtp'" in err and len(err.strip().splitlines()) == 1
    assert main(["conform", "fa", "--impl", FA_OK, "--replay", str(path), "--replay-anyway"]) in (0, 1)


def test_replay_restores_drawn_state_and_dtype():
    res = C.check("fa", FA_SLIP, instances=40, dtype="float32")
    c = json.loads(json.dumps(res.counterexample))  # through JSON, as the CLI stores it
    ev = C.replay("fa", FA_SLIP, c)
    assert not ev.holds and ev.tolerance == 1e-4
    assert C.replay("fa", FA_OK, c).holds


# --- random quantities handed over: brSF and PEPITA ----------------------------------------------------

def test_brsf_independent_torch_implementation_matches():
    import torch
    from proofs.conform_torch import torch_impl, loss as tloss

    class SignFeedbackLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, W, b, Bk):
            ctx.save_for_backward(x, Bk)
            return x @ W.T + b

        @staticmethod
        def backward(ctx, dy):
            x, Bk = ctx.saved_tensors
            return dy @ Bk, dy.T @ x, dy.sum(0), None

    def step(model, x, y, M, loss):
        h, i = x, 0
        for m in model:
            if isinstance(m, torch.nn.Linear):
                Bk = M[i].abs() * torch.sign(m.weight.detach())  # brSF: |M_t| (*) sign(W)
                h = SignFeedbackLinear.apply(h, m.weight, m.bias, Bk)
                i += 1
            else:
                h = m(h)
        tloss(h, y, loss).backward()

    @torch_impl
    def brsf(model, x, y, state, loss):
        step(model, x, y, state["M"], loss)

    @torch_impl
    def brsf_own_draw(model, x, y, state, loss):  # draws its own magnitudes: cannot match
        g = torch.Generator().manual_seed(0)
        step(model, x, y, [torch.rand(W.shape, generator=g, dtype=W.dtype) for W in state["M"]], loss)

    res = C.check("brsf", brsf, instances=40)
    assert res.passed, res.summary()
    bad = C.check("brsf", brsf_own_draw, instances=40)
    assert not bad.passed and "M" in bad.counterexample["instance"]["handed_over"]
    c = json.loads(json.dumps(bad.counterexample))  # the step is stored, so M is re-derived exactly
    assert C.replay("brsf", brsf, c).holds and not C.replay("brsf", brsf_own_draw, c).holds


def test_pepita_independent_implementation_matches_with_dropout():
    def pepita(weights, biases, activations, x, y, state, sign, loss, keep_prob, **rest):
        """PEPITA (Dellaferrera & Kreiman 2022, Alg. 1; ICML FC code's modulated last-layer error)."""
        L = len(weights)
        masks = state["masks"]

        def forward(h0):
            a, h = [None], [h0]
            for l in range(1, L + 1):
                a.append(h[-1] @ weights[l - 1].T + biases[l - 1])
                hl = act(activations[l - 1]).f(a[-1])
                if l < L and masks[l - 1] is not None:
                    hl = hl * masks[l - 1]
                h.append(hl)
            return a, h

        def error(hL):
            if loss == "mse":
                return hL - y
            Y = np.eye(hL.shape[1])[np.asarray(y)] if np.asarray(y).ndim == 1 else y
            z = np.exp(hL - hL.max(1, keepdims=True))
            return z / z.sum(1, keepdims=True) - Y

        B = x.shape[0]
        a, h = forward(x)
        x_mod = x + sign * (error(h[L]) @ state["F"].T)
        am, hm = forward(x_mod)
        dW = [(h[l] - hm[l]).T @ hm[l - 1] / B for l in range(1, L)]
        db = [(h[l] - hm[l]).mean(0) for l in range(1, L)]
        delta = error(hm[L]) * act(activations[L - 1]).df(am[L])
        return dW + [delta.T @ hm[L - 1] / B], db + [delta.mean(0)]

    def pepita_no_masks(weights, biases, activations, x, y, state, **hyper):
        return pepita(weights, biases, activations, x, y, {**state, "masks": [None] * (len(weights) - 1)}, **hyper)

    kp = {"keep_prob": C.Range(0.5, 0.95)}
    res = C.check("pepita", pepita, instances=40, hyper=kp)
    assert res.passed, res.summary()
    bad = C.check("pepita", pepita_no_masks, instances=40, hyper=kp)
    assert not bad.passed and "masks" in bad.counterexample["instance"]["handed_over"]
    c = json.loads(json.dumps(bad.counterexample))  # seed, step and keep_prob stored: the same masks
    assert C.replay("pepita", pepita, c).holds and not C.replay("pepita", pepita_no_masks, c).holds


def test_corinfomax_random_sign_of_beta_is_handed_over():
    pytest.importorskip("refimpl.rules.corinfomax")
    import dataclasses

    import refimpl as ri

    rule = ri.rules.get("corinfomax", random_sign=True)
    net = ri.Network.init([3, 4, 2], activation="linear", output_activation="linear", seed=0)
    net = ri.Network(net.weights, tuple(np.zeros_like(b) for b in net.biases), net.activations)
    x = np.random.default_rng(0).uniform(0, 1, (5, 3))
    signs = set()
    for step in range(12):
        st = dataclasses.replace(rule.init(net, seed=3), step=step)
        handed = C.handed_state(rule, net, st, x)
        assert handed["signed_beta"] == rule.signed_beta(st)
        signs.add(np.sign(handed["signed_beta"]))
    assert signs == {-1.0, 1.0}  # the counter (drawn by conform) reaches both signs


def _fb_forward(weights, biases, activations, h, frm, to):
    for l in range(frm + 1, to + 1):
        h = act(activations[l - 1]).f(h @ weights[l - 1].T + biases[l - 1])
    return h


def _dtp_feedback(weights, biases, activations, x, y, state, sigma, **hyper):
    """DTP's reconstruction-loss gradients (Lee et al. 2015, Eq. 8), with the handed-over noise."""
    L = len(weights)
    h = [np.asarray(x)]
    for l in range(1, L + 1):
        h.append(_fb_forward(weights, biases, activations, h[-1], l - 1, l))
    dQ, dc = [None] * L, [None] * L
    for l in range(2, L + 1):
        eps = state["noise"][l - 1]
        B = eps.shape[0]
        xt = h[l - 1] + sigma * eps
        p = act(activations[l - 1]).f(_fb_forward(weights, biases, activations, xt, l - 1, l))
        d = p @ state["Q"][l - 1].T + state["c"][l - 1] - xt
        dQ[l - 1] = 2 / B * d.T @ p
        dc[l - 1] = 2 / B * d.sum(0)
    return dQ, dc


def _drl_feedback(weights, biases, activations, x, y, state, sigma, **hyper):
    """DRL's sequential difference-reconstruction gradients (Meulemans et al. 2020), handed-over noise."""
    L = len(weights)
    h = [np.asarray(x)]
    for l in range(1, L + 1):
        h.append(_fb_forward(weights, biases, activations, h[-1], l - 1, l))
    phi = lambda l, v: act(activations[l - 1]).f(v)  # noqa: E731
    g = lambda l, v: phi(l, v) @ state["Q"][l - 1].T + state["c"][l - 1]  # noqa: E731
    dQ, dc = [None] * L, [None] * L
    for l in range(2, L + 1):
        eps = state["noise"][l - 1]
        B = eps.shape[0]
        xt = h[l - 1] + sigma * eps
        r = {L: _fb_forward(weights, biases, activations, xt, l - 1, L)}
        for k in range(L, l - 1, -1):
            r[k - 1] = g(k, r[k]) + h[k - 1] - g(k, h[k])
        d = r[l - 1] - xt
        dQ[l - 1] = 2 / (sigma ** 2 * B) * d.T @ (phi(l, r[l]) - phi(l, h[l]))
        dc[l - 1] = np.zeros_like(state["c"][l - 1])
    return dQ, dc


@pytest.mark.parametrize("rule, impl", [("dtp", _dtp_feedback), ("drl", _drl_feedback)])
def test_feedback_updates_match_with_handed_over_noise(rule, impl):
    res = C.check(rule, impl, instances=30, feedback=True, hyper={"sigma": C.Range(0.01, 0.5)})
    assert res.passed, res.summary()

    def own_noise(weights, biases, activations, x, y, state, **hyper):
        rng = np.random.default_rng(0)
        noise = [None if n is None else rng.standard_normal(n.shape) for n in state["noise"]]
        return impl(weights, biases, activations, x, y, {**state, "noise": noise}, **hyper)

    bad = C.check(rule, own_noise, instances=30, feedback=True)
    assert not bad.passed and bad.counterexample["feedback"] and bad.counterexample["where"].startswith("d")
    assert "noise" in bad.counterexample["instance"]["handed_over"]
    assert not C.replay(rule, own_noise, json.loads(json.dumps(bad.counterexample))).holds


@pytest.mark.parametrize("rule", ["fa", "pepita"])
def test_feedback_mode_refuses_rules_without_recorded_feedback_noise(rule):
    def never_called(*args, **kwargs):  # pragma: no cover - must not run
        raise AssertionError("impl called")

    with pytest.raises(C.ReferenceRejected, match="feedback"):
        C.check(rule, never_called, instances=3, feedback=True)


# --- torch users: the adapter and the pytest fixture ---------------------------------------------------

def test_torch_fa_in_three_lines_of_pytest(refimpl_conform):
    from proofs.examples.torch_fa import fa_updates

    refimpl_conform("fa", fa_updates, instances=30)


def test_readme_torch_snippet_runs(refimpl_conform):
    # the README's "For torch users" block, executed as written (instances capped for the suite)
    import pathlib

    text = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("**For torch users.**", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    ns = {}
    exec(compile(code, "README.md", "exec"), ns)
    calls = []

    def capped(rule, impl, instances=100, **kw):
        calls.append(rule)
        return refimpl_conform(rule, impl, instances=min(instances, 30), **kw)

    ns["test_my_fa"](capped)
    assert calls == ["fa"]


def test_fixture_fails_with_the_counterexample(refimpl_conform):
    from proofs.examples.torch_fa import fa_updates_slipped

    with pytest.raises(pytest.fail.Exception, match="missing activation derivative"):
        refimpl_conform("fa", fa_updates_slipped, instances=40)


def test_to_sequential_maps_activations_in_one_place():
    import torch
    from proofs.conform_torch import to_sequential
    import refimpl as ri

    names = ["tanh", "leaky_relu(0.2)", "elu(0.5)", "softplus", "sigmoid", "relu", "linear"]
    sizes = [3] * (len(names) + 1)
    net = ri.Network.init(sizes, activation="tanh", seed=0)
    net = ri.Network(net.weights, net.biases, tuple(names))
    model = to_sequential(list(net.weights), list(net.biases), names)
    x = np.random.default_rng(0).standard_normal((4, 3)) * 3
    with torch.no_grad():
        got = model(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(got, net.forward(x).h[-1], rtol=1e-12, atol=1e-14)
    assert model[0].weight.dtype == torch.float64
    back = ri.Network.from_torch(model, 3)  # and back: the inverse map of refimpl.torch_bridge
    assert back.activations == net.activations
    np.testing.assert_array_equal(back.forward(x).h[-1], net.forward(x).h[-1])


def test_torch_adapter_accepts_returned_gradients():
    import torch
    from proofs.conform_torch import torch_impl, loss as tloss

    @torch_impl
    def bp_returning(model, x, y, state, loss):
        L = tloss(model(x), y, loss)
        return list(torch.autograd.grad(L, list(model.parameters())))

    assert C.check("bp", bp_returning, instances=15).passed


def test_torch_adapter_with_a_users_module_class():
    import torch
    from torch import nn
    from proofs.conform_torch import torch_impl, activation_module, loss as tloss
    from proofs.examples.torch_fa import FALinear

    class FANet(nn.Module):  # a user's own network class, built from the layer descriptions
        def __init__(self, layers):
            super().__init__()
            self.fcs = nn.ModuleList(nn.Linear(sp["in_features"], sp["out_features"]) for sp in layers)
            self.acts = nn.ModuleList(activation_module(sp["activation"]) for sp in layers)

        def forward(self, x, B):
            for fc, a, Bk in zip(self.fcs, self.acts, B):
                x = a(FALinear.apply(x, fc.weight, fc.bias, Bk))
            return x

    @torch_impl(model=FANet)
    def fa(model, x, y, state, loss="mse"):
        tloss(model(x, state["B"]), y, loss).backward()

    assert C.check("fa", fa, instances=20).passed
    assert C.check("fa", fa, instances=10, dtype="float32").passed


def test_layers_description_is_passed_when_named():
    seen = []

    def spy(weights, biases, activations, x, y, state, layers, loss="mse"):
        seen.append(layers)
        from proofs.examples.torch_fa import fa_updates
        return fa_updates(weights, biases, activations, x, y, state, loss=loss)

    assert C.check("fa", spy, instances=3).passed
    assert seen[0][0]["type"] == "linear" and seen[0][0]["activation"] == seen[0][0]["activation"]


# --- diagnosis --------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, expect", [
    (lambda e: -e, "flipped sign"),
    (lambda e: 2 * e, "factor 2"),
    (lambda e: 0.5 * e, "factor 1/2"),
    (lambda e: 4 * e, "factor B = 4"),
    (lambda e: e.T, "transposed"),
    (lambda e: 0.1 * e, "factor beta"),
])
def test_diagnose_names_common_slips(make, expect):
    e = np.random.default_rng(1).standard_normal((3, 3))
    assert expect in C.diagnose(make(e), e, batch=4, hyper={"beta": 0.1})


def test_diagnose_missing_derivative_and_no_false_names():
    rng = np.random.default_rng(2)
    d = rng.uniform(0.2, 0.9, 5)
    delta = rng.standard_normal(5)
    assert "missing activation derivative" in C.diagnose(delta / d, delta, derivative=d)
    assert C.diagnose(delta + 1e-3 * rng.standard_normal(5), delta) is None
    assert "transposed" in C.diagnose(np.ones((2, 3)), np.ones((3, 2)))


# --- earlier regressions ---------------------------------------------------------------------------

def test_target_conformance_needs_every_reference_target():
    # Regression: layers where the implementation returned None were skipped, so an implementation
    # returning no targets at all passed `check(..., targets=True)` vacuously.
    pytest.importorskip("refimpl.rules.target_prop")
    import dataclasses

    import refimpl as ri

    rule = ri.rules.DTP()

    def same_as_reference(weights, biases, activations, x, y, state):
        net = ri.Network(tuple(weights), tuple(biases), tuple(activations))
        st = dataclasses.replace(rule.init(net, seed=0),
                                 **{k: tuple(v) if isinstance(v, list) else v for k, v in state.items()})
        return list(rule.targets(net, st, x, y))

    def no_targets(weights, biases, activations, x, y, state):
        return [None] * (len(weights) + 1)

    assert C.check("dtp", same_as_reference, instances=10, targets=True).passed
    res = C.check("dtp", no_targets, instances=10, targets=True)
    assert not res.passed and "target[" in res.counterexample["where"]


@pytest.mark.parametrize("rule", ["microcircuit", "corinfomax"])
def test_rules_with_structural_requirements_get_networks_they_accept(rule):
    # Regression: conform drew networks with biases / non-linear outputs / mixed hidden
    # activations, which these rules reject, so `refimpl conform microcircuit|corinfomax` could not
    # run at all (and a reference error inside the comparison was reported as "impl raised").
    pytest.importorskip(f"refimpl.rules.{rule}")

    def zeros(weights, biases, activations, x, y, state, **hyper):
        return [np.zeros_like(W) for W in weights], [np.zeros_like(b) for b in biases]

    res = C.check(rule, zeros, instances=4)
    assert not res.passed and res.counterexample["where"] != "impl raised", res.summary()


def test_reference_rejection_is_not_blamed_on_the_implementation():
    def never_called(*args, **kwargs):  # pragma: no cover - must not run
        raise AssertionError("impl called")

    # GaitProp on non-invertible networks: the reference (or its init) rejects the draw.
    with pytest.raises(C.ReferenceRejected, match="rejected"):
        C.check("gaitprop", never_called, instances=3,
                network=dict(kind="any", activations=("relu",), depth=(2, 2)))
