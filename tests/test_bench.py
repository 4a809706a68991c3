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
    assert len(recs) == len(rule_names(include_aliases=False)) + 2
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
