"""benchmarks/gpu_check.py (`make gpu-check`) off a GPU: one line and exit 2; its pieces on the CPU.

The script itself has not run on a GPU yet (issue 17 note); these tests keep its CPU-reachable
paths honest: detection without nvidia-smi, the training step and the table at toy sizes."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "benchmarks", "gpu_check.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_without_a_gpu_one_line_and_exit_2(monkeypatch, capsys):
    gc = _load()
    monkeypatch.setattr(gc.shutil, "which", lambda name: None)
    for argv in ([], ["--detect"]):
        assert gc.main(argv) == 2
        cap = capsys.readouterr()
        assert cap.out == "" and len(cap.err.strip().splitlines()) == 1
        assert "no NVIDIA GPU" in cap.err and "nvidia-smi not found" in cap.err


def test_detect_reads_the_driver_cuda(monkeypatch):
    gc = _load()

    class R:
        def __init__(self, out):
            self.returncode, self.stdout, self.stderr = 0, out, ""

    monkeypatch.setattr(gc.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(gc.subprocess, "run", lambda cmd, **kw: R("NVIDIA H200, 570.1\n" if len(cmd) > 1 else
                                                                  "| Driver Version: 570.1   CUDA Version: 12.8 |"))
    name, _, major = gc.detect()
    assert name == "NVIDIA H200, 570.1" and major == 12
    monkeypatch.setattr(gc.subprocess, "run", lambda cmd, **kw: R("no version here"))
    assert gc.detect()[0] is None


def test_training_step_and_table_on_the_cpu():
    gc = _load()
    rows = gc.step_train("numpy", 1, small=True)
    assert [r["step"].split()[1] for r in rows] == ["bp", "fa", "dtp"] * 2
    assert [r["step"].split()[3] for r in rows] == ["convnet"] * 3 + ["mlp"] * 3  # image data, then flattened
    assert all(r["ok"] for r in rows), rows
    assert all(r["seconds_per_epoch"] > 0 for r in rows)
    text = gc.table(rows)
    assert "s/epoch" in text and "skip" not in text


@pytest.mark.skipif(not __import__("shutil").which("make"), reason="make not installed")
def test_make_gpu_check_without_a_gpu_is_one_line_and_status_2():
    import shutil
    import subprocess
    import sys

    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi: make gpu-check would run for real")
    r = subprocess.run(["make", "-s", "gpu-check", f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "no NVIDIA GPU" in lines[0], (r.returncode, lines)
