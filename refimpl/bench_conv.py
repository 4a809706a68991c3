"""Conv rows of ``refimpl bench``: BP step of a CIFAR-shaped convnet against a torch eager step.

Network (issue 15): input 3x32x32, ``c32k3p1+mp2 c64k3p1+mp2 l10`` (conv 32 3x3 pad 1 - ReLU -
maxpool 2 - conv 64 3x3 pad 1 - ReLU - maxpool 2 - linear 4096 -> 10), batch 64, float32,
softmax cross-entropy.

* refimpl: ``ri.rules.BP(loss="ce").updates(net, None, x, y)`` (forward, loss gradient, backward,
  dW/db) on NumPy;
* torch: the same ``nn.Sequential`` with the same weights, an eager step (forward,
  ``cross_entropy``, ``backward()``, gradients reset by ``set_to_none``) on CPU with the same
  number of threads (``torch.set_num_threads``: ``--threads``, default ``OMP_NUM_THREADS`` or 1).

Both are timed interleaved (drifts in machine load hit both alike); reported: the median of each
and the spread of the per-repeat ratio (min / median / max). Before timing, the two steps' weight
gradients are compared (max relative error, float32), so a fast wrong step cannot pass unnoticed.
Usage: ``refimpl bench --conv [--repeats N] [--json PATH]``. torch is imported here only.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

ARCH = "c32k3p1+mp2 c64k3p1+mp2 l10"
INPUT = (3, 32, 32)
BATCH = 64


def _threads(threads=None) -> int:
    if threads is not None:
        return int(threads)
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


def _problem(dtype="float32", seed=0):
    from .network import Network

    net = Network.build(INPUT, ARCH, activation="relu", init="he", seed=seed, dtype=dtype)
    g = np.random.default_rng(seed + 1)
    x = g.standard_normal((BATCH,) + INPUT).astype(dtype)
    y = g.integers(0, 10, BATCH).astype(np.int64)
    return net, x, y


def _refimpl_step(net, x, y):
    from .rules import BP

    rule = BP(loss="ce")
    return lambda: rule.updates(net, None, x, y)


def torch_module(net, dtype=None, device=None):
    """``(nn.Sequential, weighted modules)`` of a refimpl network with its weights: Conv2d (+ its
    activation, + the first ``keep`` channels, + MaxPool2d / AvgPool2d), Flatten before the first
    Linear after a conv, Linear (+ activation); ``dtype``/``device``: torch's (default float32, CPU)."""
    import torch
    from .backend import to_numpy
    from .torch_bridge import activation_module, keep_module

    nn = torch.nn
    dtype = torch.float32 if dtype is None else dtype
    mods, weighted, after_conv = [], [], False
    for l in range(1, net.depth + 1):
        lay = net.layer(l)
        if getattr(lay, "kind", "linear") == "conv2d":
            mod = nn.Conv2d(lay.in_shape[0], lay.out_channels, lay.kernel_size, lay.stride, lay.padding)
            mods += [mod, activation_module(net.activations[l - 1])]
            if lay.keep is not None:  # the first `keep` channels pass on (GAIT-prop's auxiliary channels)
                mods.append(keep_module(lay.keep))
            if lay.pool is not None:
                P = nn.MaxPool2d if lay.pool.kind == "maxpool" else nn.AvgPool2d
                mods.append(P(lay.pool.kernel_size, lay.pool.stride))
            after_conv = True
        else:
            if after_conv:
                mods.append(nn.Flatten())
                after_conv = False
            mod = nn.Linear(net.sizes[l - 1], net.sizes[l])
            mods += [mod, activation_module(net.activations[l - 1])]
        weighted.append(mod)
    m = nn.Sequential(*mods).to(dtype=dtype, device=device)
    with torch.no_grad():
        for mod, W, b in zip(weighted, net.weights, net.biases):
            mod.weight.copy_(torch.as_tensor(np.asarray(to_numpy(W)), dtype=dtype, device=device))
            mod.bias.copy_(torch.as_tensor(np.asarray(to_numpy(b)), dtype=dtype, device=device))
    return m, weighted


def _torch_step(m, x, y):
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    params = list(m.parameters())

    def run():
        for p in params:
            p.grad = None
        torch.nn.functional.cross_entropy(m(xt), yt).backward()

    return run


def check_gradients(net, x, y) -> float:
    """Max over layers of ``max|dW_refimpl - dW_torch| / max|dW_torch|`` for one step (float32)."""
    from .rules import BP

    m, weighted = torch_module(net)
    _torch_step(m, x, y)()
    upd, _ = BP(loss="ce").updates(net, None, x, y)
    err = 0.0
    for mod, dW in zip(weighted, upd.dW):
        t = mod.weight.grad.numpy()
        err = max(err, float(np.max(np.abs(np.asarray(dW) - t)) / np.max(np.abs(t))))
    return err


def measure(repeats: int = 15, threads=None) -> dict:
    import torch

    n = _threads(threads)
    torch.set_num_threads(n)
    net, x, y = _problem()
    grad_err = check_gradients(net, x, y)
    m, _ = torch_module(net)
    fns = {"refimpl": _refimpl_step(net, x, y), "torch": _torch_step(m, x, y)}
    for fn in fns.values():  # warm-up (allocator, thread pools)
        fn(), fn()
    samples = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    ratios = sorted(a / b for a, b in zip(samples["refimpl"], samples["torch"]))
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {"network": f"{'x'.join(map(str, INPUT))} {ARCH}", "batch": BATCH, "dtype": "float32", "threads": n,
            "repeats": repeats, "median_seconds": med, "refimpl_over_torch": med["refimpl"] / med["torch"],
            "ratio_min": ratios[0], "ratio_median": statistics.median(ratios), "ratio_max": ratios[-1],
            "grad_rel_error_vs_torch": grad_err,
            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
            "numpy_blas_note": "set OMP_NUM_THREADS / OPENBLAS_NUM_THREADS before starting Python to pin NumPy's BLAS"}


def format_record(r: dict) -> str:
    return (f"BP step, conv {r['network']}, batch {r['batch']}, {r['dtype']}, {r['threads']} thread(s), "
            f"{r['repeats']} interleaved repeats\n"
            f"{'refimpl/torch (medians)':<30} {r['refimpl_over_torch']:.2f}\n"
            f"{'per-repeat ratio min/med/max':<30} {r['ratio_min']:.2f} / {r['ratio_median']:.2f} / {r['ratio_max']:.2f}\n"
            f"{'dW vs torch (max rel err)':<30} {r['grad_rel_error_vs_torch']:.1e}")
