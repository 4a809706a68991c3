"""`refimpl bench` runs and reports ratios (no timing assertions: performance lives in benchmarks)."""

import json

import pytest

from refimpl import bench
from refimpl.cli import main


def _small(monkeypatch):
    monkeypatch.setattr(bench, "SIZES", [16, 32, 32, 4])
    monkeypatch.setattr(bench, "BATCH", 8)
    monkeypatch.setattr(bench, "MC_PAPER", ([16, 12, 4], 4))
    monkeypatch.setattr(bench, "CIM_PAPER", ([16, 12, 4], 4))
    monkeypatch.setattr(bench, "MIN_SAMPLE_SECONDS", 0.0)
    monkeypatch.setattr(bench, "CONV_INPUT", (2, 6, 6))
    monkeypatch.setattr(bench, "CONV_ARCH", "c3k3p1+mp2 c4k3p1 l5")
    monkeypatch.setattr(bench, "CONV_BATCH", 3)
    monkeypatch.setattr(bench, "CONV_INV_ARCH", "c2k3p1 c18k3s2p1+keep4 l36")


def test_bench_reports_ratios(tmp_path, monkeypatch, capsys):
    _small(monkeypatch)
    out = tmp_path / "b.json"
    assert main(["bench", "--repeats", "2", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert {r["dtype"] for r in rep["results"]} == {"float32", "float64"}
    assert all(r["refimpl_over_floor"] > 0 for r in rep["results"])
    assert "/floor" in capsys.readouterr().out
    assert main(["bench", "--repeats", "0"]) == 2
    assert main(["bench", "--rule", "nosuchrule"]) == 2


def test_bench_all_rules_have_a_row_and_a_floor(tmp_path, monkeypatch, capsys):
    """--rule all: every registered rule has a row (two for the microcircuit and CorInfoMax: the
    papers' sizes), none fails on its network, every ratio is positive; absolute times only in JSON."""
    from refimpl.rules.registry import rule_names

    _small(monkeypatch)
    out = tmp_path / "all.json"
    assert main(["bench", "--rule", "all", "--repeats", "1", "--dtype", "float64", "--json", str(out)]) == 0
    recs = json.loads(out.read_text())["results"]
    assert sorted({r["rule"] for r in recs}) == rule_names(include_aliases=False)
    assert [r for r in recs if "error" in r] == []
    conv = [r for r in recs if r["kind"].startswith("conv")]
    assert sorted(r["rule"] for r in conv) == sorted(bench.CONV_RULES)  # every rule defined on convnets
    for r in conv:
        inv = r["rule"] in ("gaitprop", "tpinverse")  # their row is on the invertible convnet
        assert r["label"] == "conv" and r["net"] == ("2x6x6 c2k3p1 c18k3s2p1+keep4 l36" if inv
                                                     else "2x6x6 c3k3p1+mp2 c4k3p1 l5")
    assert len(recs) == len(rule_names(include_aliases=False)) + 2 + len(bench.CONV_RULES)
    for r in recs:
        assert r["over_bp"] > 0 and r["over_floor"] > 0 and r["over_bp_q25"] <= r["over_bp_q75"]
    assert {r["label"] for r in recs if r["rule"] in ("microcircuit", "corinfomax")} == {"", "paper"}
    assert all(r["sweeps"] >= 1 for r in recs if r["rule"] == "microcircuit")
    text = capsys.readouterr().out
    assert "seconds" not in text and "/torchBP" in text


def test_floor_counts():
    """The floor's product counts stated in bench's docstring (3L - 1 for BP; GAIT-prop's LU)."""
    import refimpl as ri

    c = bench.Case("bp", "mlp", (5, 6, 7, 3), 4)
    assert len(bench._floor_ops(c, ri.rules.BP(), {})) == 3 * 3 - 1
    g = bench.Case("gaitprop", "invertible", (5, 6, 6, 6), 4)
    ops = bench._floor_ops(g, ri.rules.GaitProp(), {})
    assert [o[0] for o in ops].count("lu") == 2 and [o[0] for o in ops].count("trs") == 2
    with pytest.raises(ValueError, match="no floor"):
        bench._floor_ops(c, object(), {})


def test_conv_floor_counts_the_im2col_gemms():
    """Conv rows: the same product counts as the dense rows, each conv product in its im2col GEMM
    shape (C_out x C_in kh kw x B H' W' forward), the first layer's input gradient not counted."""
    import refimpl as ri

    net = ri.Network.build((2, 6, 6), "c3k3p1+mp2 c4k3s2p1 l5", seed=0)
    c = bench.Case("bp", "conv", (72,), 7, "conv")
    ops = bench._floor_ops(c, ri.rules.BP(), {}, net)
    assert len(ops) == 3 * 3 - 1
    assert ops[0] == ("gemm", 3, 2 * 9, 7 * 6 * 6)          # conv1 forward
    assert ops[1] == ("gemm", 4, 3 * 9, 7 * 2 * 2)          # conv2 forward (3x3 pooled, stride 2)
    assert ops[2] == ("gemm", 7, 16, 5)                     # linear forward (4*2*2 inputs)
    assert ops[3] == ("gemm", 3 * 9, 4, 7 * 2 * 2)          # conv2 transpose (col2im GEMM)
    dfa = bench._floor_ops(bench.Case("dfa", "conv", (72,), 7, "conv"), ri.rules.DFA(), {}, net)
    assert ("gemm", 7, 5, 3 * 6 * 6) in dfa and ("gemm", 7, 5, 4 * 2 * 2) in dfa  # e B_l, pre-pooling units
    inv = ri.Network.build((2, 6, 6), "c2k3p1 c18k3s2p1+keep4 l36", activation="tanh", output_activation="linear",
                           init="orthogonal", seed=0)
    g = bench._floor_ops(bench.Case("gaitprop", "conv_invertible", (72,), 7, "conv"), ri.rules.GaitProp(), {}, inv)
    assert [o for o in g if o[0] != "gemm"] == [("lu", 18), ("lu", 36), ("trs", 18, 7 * 3 * 3), ("trs", 36, 7)]
    assert len([o for o in g if o[0] == "gemm"]) == 2 * 3  # forward and weight gradients


def test_bench_conv_reports_the_ratio_and_checks_gradients(tmp_path, monkeypatch, capsys):
    """The conv rows run (a smaller convnet and batch keep the test cheap), and the refimpl step's
    gradients agree with torch's before anything is timed."""
    import pytest

    pytest.importorskip("torch")
    from refimpl import bench_conv

    monkeypatch.setattr(bench_conv, "INPUT", (3, 8, 8))
    monkeypatch.setattr(bench_conv, "BATCH", 4)
    monkeypatch.setattr(bench_conv, "ARCH", "c4k3p1+mp2 c6k3p1+mp2 l10")
    out = tmp_path / "c.json"
    assert main(["bench", "--conv", "--repeats", "2", "--threads", "1", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())["results"][0]
    assert rec["threads"] == 1 and rec["refimpl_over_torch"] > 0
    assert rec["ratio_min"] <= rec["ratio_median"] <= rec["ratio_max"]
    assert rec["grad_rel_error_vs_torch"] < 1e-5  # float32 sums over 4*8*8 terms: ~1e-7 relative
    assert "refimpl/torch" in capsys.readouterr().out
    assert main(["bench", "--conv", "--threads", "0"]) == 2


def test_bench_markdown_is_one_line_per_row_with_both_dtypes(monkeypatch, capsys):
    """--markdown prints README's speed table: a header, one line per (rule, net) with the float32
    and float64 ratios side by side, sweeps as f32/f64 for the iterative rules."""
    _small(monkeypatch)
    assert main(["bench", "--rule", "bp", "--rule", "microcircuit", "--repeats", "1", "--markdown"]) == 0
    out = capsys.readouterr().out
    md = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert md[0].startswith("| rule | net | batch | sweeps | f32 /BP")
    rows = md[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| bp", "| bp (conv)", "| microcircuit", "| microcircuit (paper)"]
    for r in rows:
        assert len(r.split("|")) == 12 and "n/a" not in r
    mc = rows[2].split(" | ")
    assert "/" in mc[3]  # sweeps f32/f64


def test_torch_module_is_the_same_network():
    """bench_conv.torch_module (the torch side of every conv row) computes refimpl's forward pass, on
    a pooled ReLU convnet and on GAIT-prop's invertible one with auxiliary channels (float64)."""
    pytest.importorskip("torch")
    import numpy as np
    import torch
    import refimpl as ri
    from refimpl.bench_conv import torch_module

    for arch, act in (("c3k3p1+mp2 c4k3s2p1+ap2 l5", "relu"), ("c2k3p1 c18k3s2p1+keep4 l36", "leaky_relu(0.1)")):
        net = ri.Network.build((2, 6, 6), arch, activation=act, output_activation="linear", seed=1)
        x = np.random.default_rng(0).standard_normal((3, 2, 6, 6))
        m, weighted = torch_module(net, torch.float64)
        assert len(weighted) == net.depth
        np.testing.assert_allclose(m(torch.from_numpy(x)).detach().numpy(), net(x), rtol=1e-12, atol=1e-13)
