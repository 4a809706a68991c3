import json
import subprocess
import sys

import pytest

from refimpl.cli import main

pytest.importorskip("torch")


def test_verify_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["verify", "--only", "bp.matches_autograd", "--instances", "2", "--json", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert isinstance(rep, list) and len(rep) == 1
    row = rep[0]
    assert row["settings"]["instances"] == 2 and "numpy" in row["versions"]
    assert {"theorem", "holds", "instances", "worst_error", "control_failed"} <= set(row)
    assert row["holds"] is True and row["control_failed"] is True and row["instances"] == 2
    assert "bp.matches_autograd" in capsys.readouterr().out


def test_verify_no_match_and_list(capsys):
    assert main(["verify", "--only", "nosuchtheorem"]) == 2
    assert main(["verify", "--list"]) == 0
    assert "bp.matches_finite_differences" in capsys.readouterr().out


def test_verify_fails_on_broken_theorem(monkeypatch, capsys):
    import proofs
    from proofs.theorem import Theorem, Evidence

    broken = Theorem("bp.always_false", "s", "src", "c", draw=lambda d, xp, dt: None,
                     check=lambda i: Evidence(False, 1.0, 0.0), control=lambda i: Evidence(False, 1.0, 0.0))
    monkeypatch.setattr(proofs, "THEOREMS", proofs.THEOREMS + (broken,))
    assert main(["verify", "--only", "always_false", "--instances", "1"]) == 1
    passing_control = Theorem("bp.weak", "s", "src", "c", draw=lambda d, xp, dt: None,
                              check=lambda i: Evidence(True, 0.0, 1.0), control=lambda i: Evidence(True, 0.0, 1.0))
    monkeypatch.setattr(proofs, "THEOREMS", proofs.THEOREMS + (passing_control,))
    assert main(["verify", "--only", "bp.weak", "--instances", "1"]) == 1


def test_python_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "refimpl", "verify", "--list"], capture_output=True, text=True)
    assert r.returncode == 0 and "bp.matches_autograd" in r.stdout


def test_missing_backend_exits_2_naming_it(monkeypatch, capsys):
    """Issue 17: verify/train on a backend that is not installed exit 2 with one line naming it,
    instead of reporting every theorem as FAIL. torch's absence is simulated (sys.modules entry None
    makes its import raise ImportError); CuPy is absent or without a device on CI."""
    import sys
    from refimpl.backend import backend_unavailable

    for name in ("torch", "array_api_compat.torch"):
        monkeypatch.setitem(sys.modules, name, None)
    assert "torch is not installed" in backend_unavailable("torch")
    assert main(["verify", "--backend", "torch", "--only", "bp.*"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "backend 'torch' is not available: torch is not installed" in err[0]
    assert main(["train", "--rule", "bp", "--backend", "torch", "--epochs", "1"]) == 2
    assert "torch is not installed" in capsys.readouterr().err
    assert backend_unavailable("numpy") is None  # control: an available backend passes
    if backend_unavailable("cupy") is not None:
        assert main(["verify", "--backend", "cupy"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "backend 'cupy' is not available" in err[0] and "CuPy" in err[0]
