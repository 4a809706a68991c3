"""refimpl conform: the worked example is accepted, its slipped variant rejected with a minimal counterexample."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("refimpl.rules.feedback_alignment")

from proofs import conform as C  # noqa: E402
from refimpl.cli import main  # noqa: E402


def test_correct_fa_is_accepted():
    res = C.check("fa", "examples.torch_fa:fa_updates", instances=40)
    assert res.passed, res.summary()
    assert res.examples >= 10


def test_correct_fa_is_accepted_with_ce():
    res = C.check("fa", "examples.torch_fa:fa_updates", instances=20, hyper={"loss": "ce"})
    assert res.passed, res.summary()


def test_slipped_fa_is_rejected_with_minimal_counterexample():
    res = C.check("fa", "examples.torch_fa:fa_updates_slipped", instances=60)
    assert not res.passed
    c = res.counterexample
    # minimal: the slip needs one hidden layer with a non-linear activation, nothing more
    assert len(c["sizes"]) == 3 and c["sizes"] == [1, 1, 1]
    assert c["activations"][0] != "linear" and c["batch"] == 1
    assert "dW" in c["where"] or "db" in c["where"]
    ev = C.replay("fa", "examples.torch_fa:fa_updates_slipped", c)
    assert not ev.holds
    assert C.replay("fa", "examples.torch_fa:fa_updates", c).holds


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
    assert main(["conform", "fa", "--impl", "examples.torch_fa:fa_updates", "--instances", "20"]) == 0
    assert main(["conform", "fa", "--impl", "examples.torch_fa:fa_updates_slipped", "--instances", "40",
                 "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "minimal counterexample" in text and "--replay" in text
    cex = json.loads(out.read_text())
    assert cex["sizes"] == [1, 1, 1]
    assert main(["conform", "fa", "--impl", "examples.torch_fa:fa_updates_slipped", "--replay", str(out)]) == 1
    assert main(["conform", "fa", "--impl", "examples.torch_fa:fa_updates", "--replay", str(out)]) == 0


def test_bad_arguments(capsys):
    assert main(["conform", "nosuchrule", "--impl", "examples.torch_fa:fa_updates"]) == 2
    assert main(["conform", "fa", "--impl", "examples.torch_fa"]) == 2
    assert main(["conform", "fa", "--impl", "examples.torch_fa:nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown rule" in err and "module:function" in err


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
