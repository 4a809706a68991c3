"""BP step time against the GEMM floor and against a PyTorch eager step (ratios from one run).

Network 784-1024-1024-10 (tanh, tanh, linear), batch 256, mse loss; float32 and float64.

* refimpl: ``ri.rules.BP().updates(net, state, x, y)`` (forward, loss gradient, backward, dW/db);
* floor: the same eight GEMMs alone on preallocated operands (3 forward ``h @ W.T``, 2 backward
  ``delta @ W``, 3 weight gradients ``delta.T @ h``), i.e. what no implementation can beat;
* torch: an eager step of the same network (forward, loss, ``backward()``) on CPU with the same
  number of threads, gradients zeroed by ``set_to_none``.

Timings are medians over interleaved repeats; only ratios measured in the same run are reported
(the machines are shared and noisy). Usage: ``refimpl bench [--repeats N] [--json PATH]`` (or
``python benchmarks/step_time.py``); ``--json`` writes the records with library versions. torch is
imported only here, inside the functions, and is optional (the torch column is then absent).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from . import rules as _rules
from .network import Network
from . import __version__

SIZES = [784, 1024, 1024, 10]
BATCH = 256


def _bp_step(net, x, y):
    rule = _rules.BP(loss="mse")
    return lambda: rule.updates(net, None, x, y)


def _gemm_floor(dtype, seed=0):
    g = np.random.default_rng(seed)
    r = lambda *s: g.standard_normal(s).astype(dtype)
    Ws = [r(SIZES[i + 1], SIZES[i]) for i in range(3)]
    hs = [r(BATCH, SIZES[i]) for i in range(3)]
    ds = [r(BATCH, SIZES[i + 1]) for i in range(3)]

    def run():
        for i in range(3):
            hs[i] @ Ws[i].T            # forward
        ds[2] @ Ws[2]                  # backward data
        ds[1] @ Ws[1]
        for i in range(3):
            ds[i].T @ hs[i]            # weight gradients

    return run


def _torch_step(net, x, y, dtype):
    import torch

    td = torch.float32 if dtype == "float32" else torch.float64
    Ws = [torch.tensor(np.asarray(W), dtype=td, requires_grad=True) for W in net.weights]
    bs = [torch.tensor(np.asarray(b), dtype=td, requires_grad=True) for b in net.biases]
    xt, yt = torch.tensor(x, dtype=td), torch.tensor(y, dtype=td)

    def run():
        for p in Ws + bs:
            p.grad = None
        h = xt
        for i in range(3):
            a = torch.nn.functional.linear(h, Ws[i], bs[i])
            h = torch.tanh(a) if i < 2 else a
        loss = 0.5 * ((h - yt) ** 2).sum(dim=1).mean()
        loss.backward()

    return run


def _time(fn, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def measure(dtype: str, repeats: int):
    net = Network.init(SIZES, activation="tanh", seed=0, dtype=dtype)
    g = np.random.default_rng(1)
    x = g.standard_normal((BATCH, SIZES[0])).astype(dtype)
    y = g.standard_normal((BATCH, SIZES[-1])).astype(dtype)
    fns = {"refimpl": _bp_step(net, x, y), "floor": _gemm_floor(dtype)}
    try:
        import torch

        torch.set_num_threads(max(1, torch.get_num_threads()))
        fns["torch"] = _torch_step(net, x, y, dtype)
    except ImportError:
        pass
    for fn in fns.values():  # warm-up (BLAS thread pools, torch allocator)
        fn(), fn()
    samples = {k: [] for k in fns}
    for _ in range(repeats):  # interleaved, so drifts in machine load hit all three alike
        for k, fn in fns.items():
            samples[k] += _time(fn, 1)
    med = {k: statistics.median(v) for k, v in samples.items()}
    rec = {"dtype": dtype, "median_seconds": med, "refimpl_over_floor": med["refimpl"] / med["floor"]}
    if "torch" in med:
        rec["torch_over_floor"] = med["torch"] / med["floor"]
        rec["refimpl_over_torch"] = med["refimpl"] / med["torch"]
    return rec


def versions():
    out = {"python": platform.python_version(), "numpy": np.__version__, "refimpl": __version__}
    try:
        import torch

        out["torch"] = torch.__version__
        out["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return out


def add_arguments(p):
    p.add_argument("--repeats", type=int, default=15, help="interleaved repeats (medians are reported)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the records with library versions")
    p.add_argument("--conv", action="store_true",
                   help="the conv rows instead: BP step of a CIFAR-shaped convnet (3x32x32, conv 32 - pool - conv 64 "
                        "- pool - linear 10, batch 64, float32) against a torch eager step with the same threads "
                        "(refimpl/bench_conv.py; needs torch)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="--conv: torch threads (default OMP_NUM_THREADS, else 1; pin NumPy's BLAS with "
                        "OMP_NUM_THREADS / OPENBLAS_NUM_THREADS before starting)")


def _run_conv(args) -> int:
    from . import bench_conv

    try:
        import torch  # noqa: F401
    except ImportError:
        raise ValueError("--conv: the conv rows compare against torch, which is not installed") from None
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: expected >= 1, got {args.threads}")
    rec = bench_conv.measure(args.repeats, args.threads)
    print(bench_conv.format_record(rec))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"versions": versions(), "results": [rec]}, fh, indent=2)
    return 0


def run(args) -> int:
    if args.repeats < 1:
        raise ValueError(f"--repeats: expected >= 1, got {args.repeats}")
    if getattr(args, "conv", False):
        return _run_conv(args)
    recs = [measure(dt, args.repeats) for dt in ("float32", "float64")]
    print(f"BP step, MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, {args.repeats} interleaved repeats (medians)")
    print(f"{'dtype':<8} {'refimpl/floor':>14} {'torch/floor':>12} {'refimpl/torch':>14}")
    for r in recs:
        print(f"{r['dtype']:<8} {r['refimpl_over_floor']:>14.2f} {r.get('torch_over_floor', float('nan')):>12.2f} "
              f"{r.get('refimpl_over_torch', float('nan')):>14.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"versions": versions(), "results": recs}, fh, indent=2)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
