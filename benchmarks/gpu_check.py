"""`make gpu-check`: everything refimpl claims about CuPy, on one NVIDIA GPU, in one command.

    python benchmarks/gpu_check.py --detect          # stdlib only: exit 2 with one line if no GPU
    python benchmarks/gpu_check.py [--out runs/gpu-check.json] [--epochs 3] [--skip-install]

Steps (each one row of the final table, also written as JSON with the versions):

1. detect the GPU and the driver's CUDA version (``nvidia-smi``); none: one line, exit 2;
2. install the CuPy wheel matching the driver (``cupy-cuda12x`` for CUDA 12, ``cupy-cuda13x`` for 13)
   and, when the venv's torch has no CUDA, torch's CUDA wheel of the pinned version (for the torch
   column of the bench; a failed torch install only removes that column);
3. ``pytest -m gpu`` (every test parametrised over the cupy backend);
4. ``refimpl verify --backend cupy`` in float64 and float32;
5. ``refimpl bench --backend cupy --rule all`` (torch CUDA BP on the same GPU as the torch column);
6. a GPU-scale training run: 50,000 generated 3x32x32 images labelled into 10 classes by a random
   conv teacher (``refimpl.data.teacher_images``), BP / FA / DTP on a convnet (``c16k3p1+mp2
   c32k3p1+mp2 l10``, ReLU), and BP / FA / DTP on a wide MLP (3072-1024-1024-10, tanh) on the
   flattened images, ``--epochs`` epochs each, seconds per epoch and test accuracy.

Exit status: 0 when every step passed, 1 when one failed, 2 without a GPU. ``--backend numpy
--small`` runs steps 3-6 on the CPU at toy sizes (no install): that is how the suite tests this
script on machines without a GPU. NOT YET RUN ON A GPU (issue 17: no device was lent to the session
that wrote it); the first run on a GPU machine is its real test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def detect():
    """``(name, driver, cuda_major)`` of the first NVIDIA GPU, or ``(None, reason, None)``."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, "nvidia-smi not found", None
    try:
        out = subprocess.run([smi], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"nvidia-smi failed ({exc})", None
    if out.returncode != 0:
        return None, f"nvidia-smi exited {out.returncode}: {out.stderr.strip()[:120] or out.stdout.strip()[:120]}", None
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", out.stdout)
    q = subprocess.run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True,
                       text=True, timeout=60)
    name = q.stdout.strip().splitlines()[0] if q.returncode == 0 and q.stdout.strip() else "NVIDIA GPU"
    if m is None:
        return None, f"{name}: nvidia-smi shows no CUDA version", None
    return name, out.stdout, int(m.group(1))


def _pip(*args):
    return subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], capture_output=True, text=True)


def install(cuda_major: int) -> dict:
    """CuPy for the driver's CUDA; torch's CUDA wheel of the pinned version when torch has no CUDA."""
    rows = {}
    if cuda_major not in (12, 13):
        raise SystemExit(f"gpu-check: the driver's CUDA {cuda_major} has no CuPy wheel here (12 or 13 expected)")
    try:
        import cupy  # noqa: F401
        rows["cupy"] = "already installed"
    except ImportError:
        pkg = f"cupy-cuda{cuda_major}x"
        r = _pip(pkg)
        rows["cupy"] = f"installed {pkg}" if r.returncode == 0 else f"FAILED pip install {pkg}: {r.stderr[-300:]}"
    try:
        import torch
        if not torch.cuda.is_available():
            ver = torch.__version__.split("+")[0]
            index = "https://download.pytorch.org/whl/" + ("cu126" if cuda_major == 12 else "cu130")
            r = _pip(f"torch=={ver}", "--index-url", index, "--force-reinstall", "--no-deps")
            rows["torch"] = (f"installed torch {ver} from {index}" if r.returncode == 0
                             else f"torch CUDA wheel not installed (bench has no torch column): {r.stderr[-200:]}")
        else:
            rows["torch"] = "CUDA build present"
    except ImportError:
        rows["torch"] = "torch absent (bench has no torch column)"
    return rows


def _run(cmd, timeout):
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
        return r.returncode, r.stdout + r.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout} s", time.perf_counter() - t0


def step_tests(backend, small):
    if backend == "numpy":  # CPU stand-in: the gpu-marked tests skip there; run one cheap test file
        cmd = [sys.executable, "-m", "pytest", "-q", "-n", "0", "tests/test_lu.py", "-k", "solve"]
    else:
        cmd = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-m", "gpu"]
    rc, out, sec = _run(cmd, 3600)
    tail = [ln for ln in out.strip().splitlines() if ln.strip()][-1:] or [""]
    return {"step": "pytest -m gpu", "ok": rc == 0, "seconds": sec, "detail": tail[0][:100]}


def step_verify(backend, dtype, small, outdir):
    path = os.path.join(outdir, f"verify-{backend}-{dtype}.json")
    cmd = [sys.executable, "-m", "refimpl", "verify", "--backend", backend, "--dtype", dtype, "--quiet", "--json", path]
    if small:
        cmd += ["--only", "bp.*", "--instances", "1"]
    rc, out, sec = _run(cmd, 7200)
    detail = ""
    try:
        rows = json.load(open(path))
        verdicts = [r.get("verdict") for r in rows]
        detail = ", ".join(f"{v} {verdicts.count(v)}" for v in sorted(set(verdicts), key=str))
    except (OSError, ValueError):
        detail = out.strip().splitlines()[-1][:100] if out.strip() else ""
    return {"step": f"verify --backend {backend} --dtype {dtype}", "ok": rc == 0, "seconds": sec, "detail": detail,
            "json": path}


def step_bench(backend, small, outdir):
    path = os.path.join(outdir, f"bench-{backend}.json")
    cmd = [sys.executable, "-m", "refimpl", "bench", "--backend", backend, "--rule", "all", "--json", path,
           "--repeats", "1" if small else "7"]
    if small:
        cmd += ["--dtype", "float64"]
    rc, out, sec = _run(cmd, 3600)
    rows = []
    try:
        rows = json.load(open(path))["results"]
    except (OSError, ValueError, KeyError):
        pass
    if small or rc != 0:
        detail = f"{len(rows)} rows" if rc == 0 else out.strip()[-100:]
    else:
        detail = "; ".join(f"{r['rule']}{'(' + r['label'] + ')' if r.get('label') else ''} {r['dtype'][-2:]}: "
                           f"{r.get('over_bp', float('nan')):.2f}xBP {r.get('over_torch', float('nan')):.2f}xtorch"
                           for r in rows if "error" not in r)
    return {"step": f"bench --backend {backend} --rule all", "ok": rc == 0, "seconds": sec, "detail": detail,
            "json": path, "rows": rows}


def step_train(backend, epochs, small):
    """Seconds per epoch of BP/FA/DTP on a convnet and on a wide MLP, 50,000 generated 3x32x32 images."""

    import refimpl as ri
    from refimpl import data as D
    from refimpl.backend import resolve_namespace
    from refimpl.rules.registry import get_rule
    from refimpl.train import train

    xp = resolve_namespace(backend)
    n_train, n_test = (256, 64) if small else (50_000, 10_000)
    shape = (3, 8, 8) if small else (3, 32, 32)
    n_in = shape[0] * shape[1] * shape[2]
    images = D.teacher_images(n_train, n_test, shape=shape, seed=0, xp=xp, dtype="float32")
    flat = D.Dataset(xp.reshape(images.x_train, (n_train, n_in)), images.y_train,
                     xp.reshape(images.x_test, (n_test, n_in)), images.y_test, images.n_classes, images.task,
                     images.name + ", flattened")
    width = 64 if small else 1024
    arch = "c4k3p1+mp2 c8k3p1+mp2 l10" if small else "c16k3p1+mp2 c32k3p1+mp2 l10"
    nets = [(f"convnet {'x'.join(map(str, shape))} {arch}", images, ("bp", "fa", "dtp"),
             lambda: ri.Network.build(shape, arch, activation="relu", init="he", seed=0, dtype="float32", xp=xp)),
            (f"mlp {n_in}-{width}-{width}-10", flat, ("bp", "fa", "dtp"),
             lambda: ri.Network.init([n_in, width, width, 10], activation="tanh", seed=0, dtype="float32", xp=xp))]
    rows = []
    for label, ds, rules, make in nets:
        for rule in rules:
            t0 = time.perf_counter()
            try:
                res = train(get_rule(rule, loss="ce"), make(), ds, optimizer="adam",
                            epochs=epochs, batch_size=256 if not small else 32, seed=0, angles=False)
                hist = res.history
                secs = [h["seconds"] for h in hist] if hist and "seconds" in hist[0] else []
                per = (sum(secs) / len(secs)) if secs else (time.perf_counter() - t0) / epochs
                acc = hist[-1].get("test_accuracy") if hist else None
                rows.append({"step": f"train {rule} on {label}", "ok": True, "seconds": time.perf_counter() - t0,
                             "detail": f"{per:.2f} s/epoch, test acc {acc if acc is None else round(float(acc), 3)}",
                             "seconds_per_epoch": per})
            except Exception as exc:  # reported as a failed row: the table must come out
                rows.append({"step": f"train {rule} on {label}", "ok": False, "seconds": time.perf_counter() - t0,
                             "detail": f"{type(exc).__name__}: {str(exc)[:90]}"})
    return rows


def table(rows) -> str:
    w = max(len(r["step"]) for r in rows)
    lines = [f"{'step':<{w}}  {'ok':<4} {'seconds':>8}  detail", "-" * (w + 40)]
    for r in rows:
        ok = "skip" if r["ok"] is None else ("yes" if r["ok"] else "NO")
        lines.append(f"{r['step']:<{w}}  {ok:<4} {r['seconds']:>8.1f}  {r['detail']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--detect", action="store_true", help="only check for a GPU (stdlib only); exit 2 without one")
    p.add_argument("--out", default=os.path.join("runs", "gpu-check.json"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--skip-install", action="store_true")
    p.add_argument("--backend", choices=("cupy", "numpy"), default="cupy", help="numpy: CPU stand-in (tests)")
    p.add_argument("--small", action="store_true", help="toy sizes (with --backend numpy: the suite's test)")
    a = p.parse_args(argv)
    gpu = cuda = None
    if a.backend == "cupy":
        gpu, info, cuda = detect()
        if gpu is None:
            print(f"gpu-check: no NVIDIA GPU on this machine ({info}); nothing was run", file=sys.stderr)
            return 2
        if a.detect:
            print(f"gpu-check: {gpu}, driver CUDA {cuda}")
            return 0
    rows = []
    if a.backend == "cupy" and not a.skip_install:
        t0 = time.perf_counter()
        inst = install(cuda)
        rows.append({"step": f"install (CUDA {cuda})", "ok": not inst["cupy"].startswith("FAILED"),
                     "seconds": time.perf_counter() - t0, "detail": "; ".join(f"{k}: {v}" for k, v in inst.items())})
    outdir = os.path.dirname(os.path.abspath(a.out)) or "."
    os.makedirs(outdir, exist_ok=True)
    rows.append(step_tests(a.backend, a.small))
    for dt in ("float64", "float32"):
        rows.append(step_verify(a.backend, dt, a.small, outdir))
    bench_row = step_bench(a.backend, a.small, outdir)
    rows.append(bench_row)
    rows += step_train(a.backend, a.epochs, a.small)
    print(f"gpu-check: {gpu or 'CPU stand-in (--backend numpy)'}")
    print(table(rows))
    import refimpl.bench as B
    with open(a.out, "w") as fh:
        json.dump({"gpu": gpu, "cuda_major": cuda, "backend": a.backend, "versions": B.versions(), "steps": rows},
                  fh, indent=2, default=str)
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
