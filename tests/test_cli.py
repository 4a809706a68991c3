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
    assert main(["verify", "--only", "bp.always_false", "--instances", "1"]) == 1
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


# --- issue 19: verify's output and edges ------------------------------------------------------

def test_verify_prints_each_theorem_once(capsys):
    assert main(["verify", "--only", "bp", "--instances", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("bp.matches_autograd", "bp.matches_finite_differences"):
        assert out.count(name) == 1, out


def test_only_means_a_family_or_an_exact_name():
    import proofs
    from proofs import verify as V

    names = lambda only: [t.name for t in V.select(proofs.THEOREMS, only)]
    assert names("bp") == [t.name for t in proofs.THEOREMS if t.name.startswith("bp.")]  # not gaitprop.*_bp_*
    assert "bp.matches_autograd" in names("bp") and not any("gaitprop" in n for n in names("bp"))
    assert names("bp.matches_autograd") == ["bp.matches_autograd"]
    assert "gaitprop.limit_equals_bp_orthogonal" in names("*bp*")
    assert names("bp,ode.memory_model")[-1] == "ode.memory_model"
    with pytest.raises(ValueError, match="'matches' names no family"):
        V.select(proofs.THEOREMS, "matches")


def test_skipped_theorems_say_why(capsys):
    assert main(["verify", "--only", "bp.matches_finite_differences", "--dtype", "float32", "--instances", "1"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("bp.matches_finite_differences"))
    assert "SKIP" in row and "not meaningful for dtype float32" in row


@pytest.mark.parametrize("argv, match", [
    (["--seed", "-1"], "--seed"),
    (["--instances", "0"], "--instances"),
    (["--json", "/nonexistent-dir-19/r.json"], "--json"),
    (["--out", "/nonexistent-dir-19/c.jsonl"], "--out"),
    (["--scheduler", "not an address"], "--scheduler"),
    (["--scheduler", "tcp://127.0.0.1:9"], "--scheduler"),
    (["--only", "nosuch"], "--only"),
])
def test_verify_bad_arguments_exit_2_before_any_work(argv, match, capsys):
    assert main(["verify", "--only", "bp", *argv] if "--only" not in argv else ["verify", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"refimpl verify: {match}") and err.count("\n") == 1, err


def test_resume_refuses_foreign_lines_and_other_seeds(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    assert main(["verify", "--only", "bp.matches_autograd", "--instances", "2", "--out", str(out), "--quiet"]) == 0
    good = out.read_text()
    # another seed's campaign
    assert main(["verify", "--only", "bp.matches_autograd", "--instances", "2", "--seed", "1", "--out", str(out),
                 "--resume", "--quiet"]) == 2
    assert "line 1 is a record of another campaign" in capsys.readouterr().err
    # a junk line in the middle (not a cut last line)
    out.write_text(good.splitlines(keepends=True)[0] + "junk\n" + good.splitlines(keepends=True)[1])
    assert main(["verify", "--only", "bp.matches_autograd", "--instances", "2", "--out", str(out), "--resume",
                 "--quiet"]) == 2
    assert "line 2 is not a verify record" in capsys.readouterr().err
    # a cut last line is still dropped and redone
    out.write_text(good[:-20])
    assert main(["verify", "--only", "bp.matches_autograd", "--instances", "2", "--out", str(out), "--resume",
                 "--quiet"]) == 0


def test_resumed_progress_counts_what_was_done(tmp_path):
    import io
    from refimpl.console import Progress

    s = io.StringIO()
    p = Progress(10, "instances", stream=s, done=3)
    for _ in range(7):
        p.advance()
    assert "10/10 instances (100%)" in s.getvalue() and "4/10" in s.getvalue()


def test_sigterm_ends_a_campaign_quietly(tmp_path):
    """SIGTERM (and Ctrl-C) on a campaign: exit 130, one line, no traceback, records kept."""
    import os
    import signal
    import time

    out = tmp_path / "c.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "refimpl", "verify", "--only", "target_prop", "--instances", "5",
                          "--out", str(out), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.time()
    while time.time() - t0 < 60 and not (out.exists() and out.read_text().count("\n") >= 2):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and "--resume" in err
    assert out.read_text().count("\n") >= 2
