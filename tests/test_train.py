"""refimpl.train: the loop on every rule found, determinism, schedules, errors, the `train` CLI."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest

import refimpl as ri
from refimpl import data as D
from refimpl import train as T
from refimpl.backend import to_numpy
from refimpl.rules.base import Updates

HIST_KEYS = {"epoch", "lr", "train_loss", "test_loss", "batch_loss", "angles", "seconds", "wall_seconds", "steps"}


def _rule_params():
    """Every rule the registry finds now, plus the aliases that preset hyper-parameters (usf, ...),
    so rules that land later are covered without editing this file."""
    rules = T.available_rules()
    names = list(rules) + [a for a, (k, preset) in T.ALIASES.items() if preset and k in rules]
    return sorted(names)


def _tiny(task="regression", n_out=6, seed=0):
    return D.teacher_student(sizes=(6, 6, n_out), activation="tanh", task=task, n_train=24, n_test=8, seed=seed)


def _candidates():
    """(data, net) pairs a rule is tried on, first fit wins: square leaky-ReLU nets suit rules that
    invert layers (TP, GAIT-prop); classification data suits rules whose loss is ce (PEPITA)."""
    for act in ("leaky_relu", "tanh"):
        for task in ("regression", "classification"):
            yield _tiny(task), ri.Network.init([6, 6, 6, 6], activation=act, seed=1)


@pytest.mark.parametrize("name", _rule_params())
def test_loop_runs_every_rule(name):
    errors = []
    for data, net in _candidates():
        try:
            res = T.train(name, net, data, optimizer=ri.optim.SGD(lr=0.01), epochs=2, batch_size=8, seed=0)
        except (ValueError, TypeError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        h = res.history
        assert [r["epoch"] for r in h] == [1, 2] and h[-1]["steps"] == 6
        for r in h:
            assert HIST_KEYS <= set(r)
            assert math.isfinite(r["train_loss"]) and math.isfinite(r["test_loss"])
            assert len(r["angles"]) == net.depth
            assert all(math.isnan(a) or 0 <= a <= 180 for a in r["angles"])
            if data.task == "classification":
                assert 0 <= r["train_accuracy"] <= 1 and 0 <= r["test_accuracy"] <= 1
        moved = any(not np.array_equal(to_numpy(a), to_numpy(b)) for a, b in zip(res.net.weights, net.weights))
        assert moved, f"rule {name}: training did not change the weights"
        return
    pytest.fail(f"rule {name!r} did not train on any candidate network:\n" + "\n".join(errors))


def test_bp_angles_are_zero_and_fa_like_rules_differ():
    data = _tiny()
    net = ri.Network.init([6, 8, 8, 6], activation="tanh", seed=0)
    h = T.train("bp", net, data, optimizer="adam", epochs=1, batch_size=8, seed=0).history
    assert max(h[0]["angles"]) < 1e-5
    if "fa" in T.rule_names():
        h = T.train("fa", net, data, optimizer="adam", epochs=1, batch_size=8, seed=0).history
        assert h[0]["angles"][-1] < 1e-5  # FA's output layer gets the true delta
        assert h[0]["angles"][0] > 1.0    # random feedback: hidden updates differ from BP


def test_derived_seeds_keep_feedback_away_from_the_network_seed():
    a, b = T.derived_seeds(0)
    assert a != b and 0 not in (a, b)
    assert T.derived_seeds(0) == (a, b) and T.derived_seeds(1) != (a, b)


def test_deterministic_for_a_seed():
    name = "fa" if "fa" in T.rule_names() else "bp"
    data = _tiny("classification")
    net = ri.Network.init([6, 8, 6], activation="tanh", seed=0)
    rule = T.get_rule(name, loss="ce")

    def run(seed):
        r = T.train(rule, net, data, optimizer=ri.optim.Adam(lr=1e-2), epochs=3, batch_size=5, seed=seed)
        hist = [{k: v for k, v in rec.items() if k not in ("seconds", "wall_seconds")} for rec in r.history]
        return [to_numpy(W) for W in r.net.weights], hist

    w1, h1 = run(0)
    w2, h2 = run(0)
    w3, h3 = run(1)
    assert h1 == h2 and all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert not all(np.array_equal(a, b) for a, b in zip(w1, w3))


def test_partial_last_batch_and_drop_last():
    data = _tiny()  # 24 samples
    net = ri.Network.init([6, 6, 6], seed=0)
    assert T.train("bp", net, data, optimizer="sgd", epochs=1, batch_size=7, seed=0).history[-1]["steps"] == 4
    assert T.train("bp", net, data, optimizer="sgd", epochs=1, batch_size=7, seed=0,
                   drop_last=True).history[-1]["steps"] == 3


@pytest.mark.parametrize("xp_name", ["array_api_strict", "torch"])
def test_other_backends_match_numpy(xp_name):
    if xp_name == "torch":
        pytest.importorskip("torch")
    else:
        pytest.importorskip("array_api_strict")
    data = _tiny("classification")
    net = ri.Network.init([6, 8, 6], seed=0)
    ref = T.train(T.get_rule("bp", loss="ce"), net, data, optimizer="adam", epochs=2, batch_size=8, seed=0)
    other = T.train(T.get_rule("bp", loss="ce"), net.to(xp_name), data.to(xp_name), optimizer="adam", epochs=2,
                    batch_size=8, seed=0)
    for a, b in zip(ref.net.weights, other.net.weights):
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=1e-10, atol=1e-12)
    assert other.history[-1]["test_accuracy"] == ref.history[-1]["test_accuracy"]


# --- the feedback-training contract ------------------------------------------------------------

@dataclass(frozen=True)
class _FbState:
    calls: tuple = ()


@dataclass(frozen=True)
class _FakeFeedbackRule:
    """BP with a train_feedback hook that logs (kind, first input row) for every call."""

    loss: str = "mse"

    def init(self, net, seed=0):
        return _FbState()

    def train_feedback(self, net, state, x, y):
        return _FbState(state.calls + (("fb", float(x[0, 0])),))

    def updates(self, net, state, x, y):
        upd, _ = ri.rules.BP(loss=self.loss).updates(net, ri.rules.EmptyState(), x, y)
        return upd, _FbState(state.calls + (("upd", float(x[0, 0])),))


def test_train_feedback_is_called_first_on_the_same_batch():
    data = _tiny()
    net = ri.Network.init([6, 6, 6], seed=0)
    res = T.train(_FakeFeedbackRule(), net, data, optimizer="sgd", epochs=2, batch_size=8, seed=0)
    calls = res.state.calls
    assert len(calls) == 2 * 2 * 3
    for i in range(0, len(calls), 2):
        assert calls[i][0] == "fb" and calls[i + 1][0] == "upd" and calls[i][1] == calls[i + 1][1]


# --- schedules ---------------------------------------------------------------------------------

def test_schedules():
    assert T.Constant()(7) == 1.0
    s = T.StepDecay((2, 4), 0.1)
    assert [s(e) for e in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    c = T.Cosine(10, 0.1)
    assert c(0) == pytest.approx(1.0) and c(10) == pytest.approx(0.1) and c(5) == pytest.approx(0.55)
    assert T.Exponential(0.5)(3) == 0.125
    assert T.parse_schedule("step:60,90", 100) == T.StepDecay((60, 90), 0.1)
    assert T.parse_schedule("step:3:0.5", 10) == T.StepDecay((3,), 0.5)
    assert T.parse_schedule("cosine", 10) == T.Cosine(10)
    assert T.parse_schedule("exp:0.9", 10) == T.Exponential(0.9)
    with pytest.raises(ValueError, match="schedule"):
        T.parse_schedule("linear", 10)
    with pytest.raises(ValueError, match="milestones"):
        T.StepDecay((5, 2))


def test_schedule_sets_the_epoch_learning_rate():
    data = _tiny()
    net = ri.Network.init([6, 6, 6], seed=0)
    h = T.train("bp", net, data, optimizer=ri.optim.SGD(lr=0.1), epochs=4, batch_size=8, seed=0,
                schedule=T.StepDecay((1, 3), 0.5)).history
    assert [r["lr"] for r in h] == pytest.approx([0.1, 0.05, 0.05, 0.025])
    # lr 0 from epoch 2 on: the weights stop moving
    frozen = T.train("bp", net, data, optimizer=ri.optim.SGD(lr=0.1), epochs=3, batch_size=8, seed=0,
                     schedule=lambda e: 1.0 if e == 0 else 0.0).history
    assert frozen[1]["train_loss"] == frozen[2]["train_loss"]


# --- rule registry -----------------------------------------------------------------------------

def test_rule_specs():
    assert T.parse_rule_spec("gaitprop:gamma=0.001") == ("gaitprop", {"gamma": 0.001})
    assert T.parse_rule_spec("x:a=1,b=ce,c=True,d=(1, 2),e=None") == (
        "x", {"a": 1, "b": "ce", "c": True, "d": (1, 2), "e": None})
    with pytest.raises(ValueError, match="key=value"):
        T.parse_rule_spec("bp:0.1")
    assert T.get_rule("bp:loss=ce") == ri.rules.BP(loss="ce")
    assert T.get_rule("BackProp", loss="ce") == ri.rules.BP(loss="ce")
    assert T.get_rule("bp:loss=mse", loss="ce").loss == "mse"  # the spec wins over defaults
    assert T.get_rule(ri.rules.BP) == ri.rules.BP()
    r = ri.rules.BP(loss="ce")
    assert T.get_rule(r) is r


def test_unknown_rule_and_hyper_parameter():
    with pytest.raises(ValueError, match=r"unknown rule 'nosuch'; known rules: .*bp"):
        T.get_rule("nosuch")
    with pytest.raises(TypeError, match=r"unknown hyper-parameter\(s\) \['gamma'\]"):
        T.get_rule("bp:gamma=1")
    if "usf" in T.rule_names():
        assert T.get_rule("usf").mode == "usf" and T.get_rule("brsf:mode=frsf").mode == "frsf"


# --- bad arguments and divergence --------------------------------------------------------------

def test_bad_arguments():
    data = _tiny()
    net = ri.Network.init([6, 6, 6], seed=0)
    kw = dict(optimizer="sgd", epochs=1, batch_size=8, seed=0)
    with pytest.raises(ValueError, match="batch_size: expected at most the 24 training samples"):
        T.train("bp", net, data, **{**kw, "batch_size": 25})
    with pytest.raises(ValueError, match="epochs"):
        T.train("bp", net, data, **{**kw, "epochs": 0})
    with pytest.raises(ValueError, match="seed"):
        T.train("bp", net, data, **{**kw, "seed": -1})
    with pytest.raises(ValueError, match="unknown rule"):
        T.train("nosuch", net, data, **kw)
    with pytest.raises(ValueError, match="input width 6 and output width 6"):
        T.train("bp", ri.Network.init([5, 6, 6], seed=0), data, **kw)
    with pytest.raises(TypeError, match="dtype"):
        T.train("bp", ri.Network.init([6, 6, 6], seed=0, dtype="float32"), data, **kw)
    with pytest.raises(TypeError, match="Dataset"):
        T.train("bp", net, (data.x_train, data.y_train), **kw)
    with pytest.raises(ValueError, match="optimizer"):
        T.train("bp", net, data, **{**kw, "optimizer": "lbfgs"})
    with pytest.raises(ValueError, match="'ce' needs a classification"):
        T.train(ri.rules.BP(loss="ce"), net, data, **kw)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_stops_with_a_clear_error():
    data = D.teacher_student(sizes=(6, 6, 6), n_train=64, n_test=8, seed=0)
    net = ri.Network.init([6, 16, 6], activation="relu", seed=0)
    with pytest.raises(T.NonFiniteLossError, match=r"rule 'BP', epoch \d+, batch \d+") as info:
        T.train("bp", net, data, optimizer=ri.optim.SGD(lr=1e3), epochs=50, batch_size=8, seed=0)
    assert isinstance(info.value, ValueError) and info.value.epoch >= 1 and info.value.rule == "BP"


# --- compare, metrics.json, plot, CLI -----------------------------------------------------------

def _check_schema(m, rules, epochs, classification=True):
    assert {"data", "seed", "rules"} <= set(m)
    assert list(m["rules"]) == rules
    for key in rules:
        eps = m["rules"][key]["epochs"]
        assert [e["epoch"] for e in eps] == list(range(1, epochs + 1))
        for e in eps:
            assert {"epoch", "train_loss", "test_loss", "seconds"} <= set(e)
            if classification:
                assert 0 <= e["train_accuracy"] <= 1 and 0 <= e["test_accuracy"] <= 1


def test_compare_uses_the_same_initial_weights(tmp_path):
    data = _tiny("classification")
    rules = ["bp", "fa"] if "fa" in T.rule_names() else ["bp", "bp:loss=mse"]
    m = T.compare(rules, data, hidden=(8,), epochs=2, batch_size=8, seed=3)
    _check_schema(m, rules, 2)
    inits = [m["rules"][k]["initial"] for k in rules]
    if rules[1] == "fa":
        assert inits[0] == inits[1]
    T.write_metrics(tmp_path / "m.json", m)
    back = json.loads((tmp_path / "m.json").read_text())
    assert back["rules"][rules[0]]["epochs"][1]["test_loss"] == m["rules"][rules[0]]["epochs"][1]["test_loss"]
    T.plot_curves(m, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = T.format_table(m)
    assert f"{m['rules']['bp']['epochs'][-1]['test_accuracy']:.4f}" in table
    with pytest.raises(ValueError, match="once"):
        T.compare(["bp", "bp"], data, epochs=1, batch_size=8)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_compare_keeps_going_after_a_divergent_rule():
    data = D.teacher_student(sizes=(6, 6, 6), n_train=64, n_test=8, seed=0)
    m = T.compare({"stable": ri.rules.BP(), "wild": ri.rules.BP()}, data, hidden=(16,), activation="relu",
                  optimizer=ri.optim.SGD(lr=1e3), epochs=30, batch_size=8, angles=False)
    assert "error" in m["rules"]["wild"] and "NonFiniteLossError" in m["rules"]["wild"]["error"]


def test_progress_modes():
    rec = {"epoch": 1, "train_loss": 0.5, "test_loss": 0.6, "test_accuracy": 0.9, "angles": [10.0, 0.0],
           "seconds": 0.1}
    s = io.StringIO()
    p = T.Progress(2, stream=s)  # StringIO is not a TTY: plain lines
    p("bp", rec)
    p.close()
    assert "bp" in s.getvalue() and "test_acc 0.9000" in s.getvalue() and "\r" not in s.getvalue()
    s = io.StringIO()
    p = T.Progress(2, stream=s, force="rich")  # the rich bar (a real dependency), forced on a non-TTY
    p("bp", rec)
    p("bp", {**rec, "epoch": 2})
    p.close()
    assert "2/2" in s.getvalue() and "epochs" in s.getvalue()


def test_cli_train_end_to_end(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from refimpl.cli import main

    rules = ["bp", "fa"] if "fa" in T.rule_names() else ["bp"]
    argv = ["train", "--data", "digits", "--epochs", "2", "--seed", "1", "--hidden", "16", "--batch-size", "64",
            "--out", str(tmp_path)]
    for r in rules:
        argv += ["--rule", r]
    assert main(argv) == 0
    out = capsys.readouterr().out
    m = json.loads((tmp_path / "metrics.json").read_text())
    _check_schema(m, rules, 2)
    assert m["data"] == "digits" and m["seed"] == 1
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000
    # the printed table shows the numbers of metrics.json
    import re

    table = out[re.search(r"^rule +epochs", out, re.M).start():]
    for r in rules:
        last = m["rules"][r]["epochs"][-1]
        row = next(line for line in table.splitlines() if line.startswith(r + " "))
        assert f"{last['test_accuracy']:.4f}" in row and f"{last['train_loss']:.4f}" in row
    assert "epoch   1" in out  # plain progress lines (pytest's stdout is not a TTY)


def test_cli_train_errors(tmp_path, capsys):
    from refimpl.cli import main

    assert main(["train", "--rule", "nosuch", "--out", str(tmp_path)]) == 2
    assert "unknown rule 'nosuch'" in capsys.readouterr().err
    assert main(["train", "--rule", "bp", "--epochs", "0", "--out", str(tmp_path)]) == 2
    assert main(["train", "--rule", "bp", "--data", "teacher", "--batch-size", "5000", "--out", str(tmp_path)]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path)]) == 2
    assert main(["train", "--list-rules"]) == 0
    assert "bp" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--rule", "bp", "--data", "cifar"])


def test_cli_train_regression_with_hyper_parameters(tmp_path, capsys):
    from refimpl.cli import main

    rc = main(["train", "--rule", "bp:loss=mse", "--data", "teacher", "--epochs", "2", "--hidden", "8",
               "--optimizer", "sgd", "--lr", "0.05", "--schedule", "step:1:0.5", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    _check_schema(m, ["bp:loss=mse"], 2, classification=False)
    assert [e["lr"] for e in m["rules"]["bp:loss=mse"]["epochs"]] == pytest.approx([0.05, 0.025])
    assert "train_accuracy" not in m["rules"]["bp:loss=mse"]["epochs"][0]


def test_auxiliary_output_units():
    """A 6-wide output layer whose first 3 units carry the task (GAIT-prop's square nets): BP
    without an `outputs` field trains with aux targets = forward values, i.e. exactly BP on the
    loss of the first 3 units."""
    data = D.teacher_student(sizes=(6, 6, 3), n_train=24, n_test=8, seed=0)
    net = ri.Network.init([6, 6, 6], activation="tanh", seed=0)
    res = T.train("bp", net, data, optimizer="sgd", epochs=2, batch_size=8, seed=0, outputs=3)
    assert max(res.history[-1]["angles"]) < 1e-5
    # one step by hand: the gradient of the loss on the first 3 units only
    import torch

    W = [torch.tensor(to_numpy(w), requires_grad=True) for w in net.weights]
    b = [torch.tensor(to_numpy(v), requires_grad=True) for v in net.biases]
    x = torch.tensor(to_numpy(data.x_train[:24]))
    y = torch.tensor(to_numpy(data.y_train[:24]))
    h = torch.tanh(x @ W[0].T + b[0]) @ W[1].T + b[1]
    (0.5 * ((h[:, :3] - y) ** 2).sum(1).mean()).backward()
    one = T.train("bp", net, data, optimizer=ri.optim.SGD(lr=0.1), epochs=1, batch_size=24, seed=0, outputs=3)
    np.testing.assert_allclose(to_numpy(one.net.weights[1]), to_numpy(net.weights[1]) - 0.1 * W[1].grad.numpy(),
                               rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="need loss 'mse'"):
        T.train(ri.rules.BP(loss="ce"), net, D.teacher_student(sizes=(6, 6, 3), task="classification", n_train=24,
                                                               n_test=8), optimizer="sgd", epochs=1, batch_size=8,
                outputs=3)
    with pytest.raises(ValueError, match="outputs"):
        T.train("bp", net, data, optimizer="sgd", epochs=1, batch_size=8, outputs=7)


@dataclass(frozen=True)
class _ShiftedReadout:
    """BP whose read-out is ``net(x) + 1`` (stands in for a rule with its own inference, e.g. a free phase)."""

    loss: str = "mse"

    def init(self, net, seed=0):
        return ri.rules.EmptyState()

    def updates(self, net, state, x, y):
        return ri.rules.BP(loss=self.loss).updates(net, state, x, y)

    def predict(self, net, state, x):
        return net(x) + 1.0


def test_metrics_use_the_rules_predict():
    data = _tiny()
    net = ri.Network.init([6, 6, 6], seed=0)
    a = T.train("bp", net, data, optimizer="sgd", epochs=1, batch_size=8, seed=0)
    b = T.train(_ShiftedReadout(), net, data, optimizer="sgd", epochs=1, batch_size=8, seed=0)
    expected = T.evaluate(a.net, data, "mse", forward=lambda x: a.net(x) + 1.0)
    assert b.history[0]["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-12)
    assert b.history[0]["test_loss"] != pytest.approx(a.history[0]["test_loss"])
    m = T.compare({"shifted": _ShiftedReadout()}, data, hidden=(6,), epochs=1, batch_size=8, loss="mse")
    assert m["rules"]["shifted"]["readout"] == "predict"


def test_cli_train_sizes_and_auxiliary_outputs(tmp_path, capsys):
    from refimpl.cli import main

    rc = main(["train", "--rule", "bp", "--data", "teacher", "--epochs", "1", "--sizes", "20,8,8", "--outputs", "5",
               "--out", str(tmp_path), "--quiet", "--no-plot"])
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["network"]["sizes"] == [20, 8, 8] and max(m["rules"]["bp"]["epochs"][0]["angles"]) < 1e-5
    assert main(["train", "--rule", "bp", "--data", "teacher", "--sizes", "7,8,5", "--out", str(tmp_path)]) == 2
    assert "--sizes" in capsys.readouterr().err


def test_progress_and_tables_use_rich():
    """Issue 19: one well-kept library (rich, a core dependency) draws the bars and the tables;
    the two home-made bars are gone."""
    import inspect

    import refimpl.cli as cli
    from refimpl import console

    assert "rich" in inspect.getsource(console)
    assert "#" * 3 not in inspect.getsource(cli) and "'#' *" not in inspect.getsource(T)
    import tomllib
    import pathlib

    deps = tomllib.loads((pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("rich") for d in deps)


# --- issue 19: `refimpl train --rule X` on its defaults ------------------------------------------

@pytest.mark.parametrize("rule", ["gaitprop", "tpinverse", "microcircuit", "corinfomax"])
def test_cli_train_defaults_pick_what_the_rule_supports(rule, tmp_path, capsys):
    pytest.importorskip("sklearn")
    from refimpl.cli import main

    assert main(["train", "--rule", rule, "--epochs", "1", "--no-angles", "--no-plot", "--quiet",
                 "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    e = m["rules"][rule]
    assert "error" not in e and e["epochs"]
    if rule in ("microcircuit", "corinfomax", "gaitprop", "tpinverse"):
        assert e["loss"] == "mse"
    if rule in ("gaitprop", "tpinverse"):
        assert e["network"]["sizes"] == [64, 64, 64, 64] and e["network"]["outputs"] == 10


def test_cli_train_rejected_network_exits_2_with_one_line_before_training(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from refimpl.cli import main

    assert main(["train", "--rule", "gaitprop", "--hidden", "64,64", "--epochs", "50", "--out", str(tmp_path)]) == 2
    cap = capsys.readouterr()
    assert cap.err.count("\n") == 1 and cap.err.startswith("refimpl train: rule gaitprop:") and "--sizes" in cap.err
    assert "epoch   1" not in cap.out and not (tmp_path / "metrics.json").exists()
    assert main(["train", "--rule", "microcircuit", "--loss", "ce", "--out", str(tmp_path)]) == 2
    assert "loss" in capsys.readouterr().err
    assert main(["train", "--rule", "bp", "--seed", "-1", "--out", str(tmp_path)]) == 2
    assert "--seed" in capsys.readouterr().err


# --- convolutional networks --------------------------------------------------------------------

def _digits_images_small():
    pytest.importorskip("sklearn")
    d = D.digits(seed=0, images=True)
    # 200 training images keep the loop cheap; the split and the shapes are the real ones
    return D.Dataset(d.x_train[:200, ...], d.y_train[:200], d.x_test[:100, ...], d.y_test[:100], 10,
                     "classification", "digits-images[:200]")


def test_train_a_convnet_on_digit_images():
    data = _digits_images_small()
    net = T.build_network(data, layers="c4k3p1+mp2 c8k3p1+mp2 l10", activation="relu", seed=0)
    assert net.input_shape == (1, 8, 8) and not net.is_dense
    rule = T.get_rule("bp", loss="ce")
    net2, _, hist = T.train(rule, net, data, optimizer=ri.optim.Adam(lr=1e-2), epochs=4, batch_size=20, seed=0)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    # it learns: chance is 0.1, measured 0.44 after 4 epochs on 200 images
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] and hist[-1]["test_accuracy"] > 0.3
    assert all(a == pytest.approx(0.0, abs=1e-5) for a in hist[-1]["angles"])  # BP vs BP, per layer
    assert net2.weights[0].shape == (4, 1, 3, 3)


def test_conv_angles_are_angles_of_the_flattened_kernels():
    """The per-layer angle to BP of a conv layer is the angle between dW arrays of kernel shape,
    flattened; DFA's hidden conv updates differ from BP's (angle in (0, 180)), its output layer's
    update equals BP's (angle 0)."""
    data = _digits_images_small()
    net = T.build_network(data, layers="c4k3p1+mp2 l10", activation="tanh", seed=0)
    dfa = T.get_rule("dfa", loss="ce")
    state = dfa.init(net, seed=1)
    x, y = data.x_train[:16, ...], data.y_train[:16]
    upd, _ = dfa.updates(net, state, x, y)
    ref, _ = T._bp_reference(net, x, y, ri.losses.get("ce"), 10)
    angs = ri.metrics.layer_angles(upd.dW, ref)
    a, b = to_numpy(upd.dW[0]).ravel(), to_numpy(ref[0]).ravel()
    expect = math.degrees(math.acos(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    assert upd.dW[0].shape == (4, 1, 3, 3) and angs[0] == pytest.approx(expect, abs=1e-9)
    # output layer: the same update as BP up to rounding; arccos near 1 resolves angles only down to
    # sqrt(2 eps) rad ~ 1.2e-6 degrees in float64, hence 1e-5
    assert 0 < angs[0] < 180 and angs[1] == pytest.approx(0.0, abs=1e-5)
    hist = T.train(dfa, net, data, epochs=1, batch_size=50, seed=0).history
    assert len(hist[0]["angles"]) == 2 and 0 < hist[0]["angles"][0] < 180


def test_train_names_an_input_shape_mismatch():
    data = _digits_images_small()
    dense = ri.Network.init([64, 16, 10], seed=0)
    with pytest.raises(ValueError, match=r"input shape \(1, 8, 8\).*data.flat\(\)"):
        T.train("bp", dense, data, epochs=1)
    T.train("bp", dense, data.flat(), epochs=1, angles=False)  # flattened, the dense net trains
    conv = T.build_network(data, layers="c2k3+mp2 l10", seed=0)
    with pytest.raises(ValueError, match=r"data.images"):
        T.train("bp", conv, data.flat(), epochs=1)
    with pytest.raises(ValueError, match="image samples"):
        T.build_network(data)  # a dense default on image data
    with pytest.raises(ValueError, match="10 outputs"):
        T.build_network(data, layers="c2k3 l7")


def test_compare_with_an_architecture_records_it_and_keeps_refusals_as_errors():
    data = _digits_images_small()
    # DTP runs on conv layers since issue 16; the microcircuit (dense-only paper) is refused up front
    with pytest.raises(ValueError, match="rule microcircuit:loss=mse: .*dense"):
        T.compare(["bp", "microcircuit:loss=mse"], data, layers="c2k3p1+mp2 l10", epochs=1, batch_size=50, seed=0)
    res = T.compare(["bp", "dtp"], data, layers="c2k3p1+mp2 l10", epochs=1, batch_size=50, seed=0)
    assert res["network"]["layers"] == "conv2d(1->2,k3,s1,p1)+maxpool2 | linear(32->10)"
    assert res["network"]["input_shape"] == [1, 8, 8] and res["dataset"]["input_shape"] == [1, 8, 8]
    assert "error" not in res["rules"]["bp"] and "error" not in res["rules"]["dtp"]
    rules = T.build_rules(["bp", "microcircuit"], "mse")
    net = T.build_network(data, layers="c2k3p1+mp2 l10", seed=0)
    with pytest.raises(ValueError, match="rule 'microcircuit' does not run on this network"):
        T.check_rules_support(rules, net, data)
    T.check_rules_support({"bp": rules["bp"]}, net, data)


def test_cli_train_conv_architecture(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from refimpl.cli import main

    argv = ["train", "--rule", "bp", "--rule", "dfa", "--arch", "c4k3p1+mp2 l10", "--activation", "relu",
            "--epochs", "1", "--batch-size", "128", "--no-plot", "--out", str(tmp_path)]
    assert main(argv) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["data"] == "digits-images" and m["network"]["layers"].startswith("conv2d(1->4,k3,s1,p1)")
    assert len(m["rules"]["dfa"]["epochs"][-1]["angles"]) == 2
    capsys.readouterr()
    # a rule defined for dense networks only refuses, before any training: exit 2, one line
    assert main(["train", "--rule", "bp", "--rule", "microcircuit", "--loss", "mse", "--arch", "c4k3p1+mp2 l10",
                 "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "microcircuit" in err and "dense" in err
    assert main(["train", "--rule", "bp", "--arch", "c4k3 l10", "--data", "teacher", "--out", str(tmp_path)]) == 2
    assert "needs image data" in capsys.readouterr().err
    assert main(["train", "--rule", "bp", "--arch", "c4k3 q9", "--out", str(tmp_path)]) == 2
    assert "cannot read layer 'q9'" in capsys.readouterr().err
    # a dense --arch on digits reads the flat inputs
    assert main(["train", "--rule", "bp", "--arch", "l16 l10", "--epochs", "1", "--no-plot", "--quiet",
                 "--out", str(tmp_path / "d")]) == 0



def test_failed_run_writes_no_png_and_prints_the_whole_error(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from refimpl.cli import main

    rc = main(["train", "--rule", "bp", "--data", "teacher", "--activation", "relu", "--hidden", "16",
               "--optimizer", "sgd", "--lr", "1e3", "--momentum", "0", "--epochs", "30", "--out", str(tmp_path)])
    cap = capsys.readouterr()
    assert rc == 1 and not (tmp_path / "learning_curves.png").exists()
    assert "NonFiniteLossError" in cap.out and "no learning-curve PNG" in cap.err


def test_a_run_near_chance_says_so(tmp_path):
    pytest.importorskip("sklearn")
    from refimpl import data as D

    data = D.load("digits", seed=0)
    with pytest.warns(RuntimeWarning, match="near chance"):
        m = T.compare(["bp:loss='ce'"], data, hidden=(8,), epochs=1, batch_size=64, seed=0,
                      optimizer=ri.optim.SGD(lr=1e-6), angles=False)
    assert "near_chance" in m["rules"]["bp:loss='ce'"]
    assert "near chance" in T.format_table(m)


def test_plot_with_many_rules_puts_the_legend_outside(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    from refimpl import data as D

    data = D.load("digits", seed=0)
    m = T.compare(["bp", "fa", "dfa", "usf"], data, hidden=(8,), epochs=1, batch_size=128, seed=0)
    T.plot_curves(m, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 10_000
