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
