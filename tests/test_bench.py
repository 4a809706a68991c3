"""`refimpl bench` runs and reports ratios (no timing assertions: performance lives in benchmarks)."""

import json

from refimpl import bench
from refimpl.cli import main


def test_bench_reports_ratios(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "SIZES", [16, 32, 32, 4])
    monkeypatch.setattr(bench, "BATCH", 8)
    out = tmp_path / "b.json"
    assert main(["bench", "--repeats", "2", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert {r["dtype"] for r in rep["results"]} == {"float32", "float64"}
    assert all(r["refimpl_over_floor"] > 0 for r in rep["results"])
    assert "refimpl/floor" in capsys.readouterr().out
    assert main(["bench", "--repeats", "0"]) == 2


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
