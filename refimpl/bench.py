r"""Step time of every rule against BP, against the rule's own floor and against a torch eager BP step.

``refimpl bench [--rule all|NAME ...] [--dtype float32|float64|both] [--repeats N] [--json PATH]
[--backend numpy|cupy]`` (``make bench``; ``python benchmarks/step_time.py``). One row per rule and
network (float32 and float64), three ratios measured in the same run, interleaved so that drifts in
the load of a shared machine hit all of them alike:

* ``/BP``: the rule's ``updates`` (what ``refimpl.train`` calls per batch; feedback training by
  ``train_feedback`` is not included) over ``ri.rules.BP().updates`` on the same network and batch;
* ``/floor``: over the rule's *floor*, the matrix products (and factorisations) its algorithm cannot
  avoid, run alone on preallocated operands (:data:`FLOORS`, counted below);
* ``/torch``: over an eager torch BP step of the same network (forward, loss, ``backward()``) on the
  same device and thread count.

Each ratio is the median over ``--repeats`` interleaved repeats (in alternating order) of the
ratio of the two times taken in one repeat (a time is the mean of enough calls to last
:data:`MIN_SAMPLE_SECONDS`); ``spread`` is the interquartile range of the per-repeat ``/BP``
ratios (how noisy the machine was). Absolute times (medians) only with ``--json``.

**Networks.** ``mlp``: 784-1024-1024-10 (tanh, tanh, linear), batch 256, mse on one-hot targets
(PEPITA: its cross-entropy). ``invertible`` (GAIT-prop, TPInverse: every layer after the first
square): 784-1024-1024-1024, orthogonal init, inputs ``0.5 xi``, targets ``h_L + 0.001 xi`` (TPInverse's
full-size targets must stay in tanh's range). ``microcircuit``: the same MLP with softplus hidden units and no
biases, and the paper's 784-500-10 at batch 32 (Sacramento et al. 2018, MNIST). ``corinfomax``: the
same MLP (box activities, no biases, inputs in [0, 1]) and the paper's 784-500-10 at batch 20
(Bozkurt et al. 2023, MNIST). ``conv`` (every rule defined on conv networks, :data:`CONV_RULES`):
3x32x32 input, ``c32k3p1+mp2 c64k3p1+mp2 l10`` (conv 32 - ReLU - maxpool 2 - conv 64 - ReLU -
maxpool 2 - linear 10), He init, batch 64, mse on one-hot targets (PEPITA: cross-entropy), torch's
step on the same ``nn.Sequential``.

**Floors** (``L`` layers of sizes ``n_0..n_L``, batch ``B``; a "product" is one GEMM of the shape
the rule uses):

* BP, FA, sign symmetry: ``L`` forward ``h_{l-1} W_l^T``, ``L-1`` backward ``delta_l W_l`` (resp. ``B_l``),
  ``L`` weight gradients ``delta_l^T h_{l-1}``: ``3L - 1``.
* DFA: ``L`` forward, ``L-1`` direct projections ``e B_l`` (``(B, n_L) x (n_L, n_l)``), ``L`` weight gradients.
* PEPITA: two forward passes (``2L``), the modulation ``e F^T`` (``(B, n_L) x (n_L, n_0)``), ``L`` weight
  gradients.
* DTP / DRL / L-DRL: ``L`` forward, ``2(L-1)`` feedback products (``g_l(t_l)`` and ``g_l(h_l)``
  per layer ``l = L..2``), ``L`` weight gradients. TP: ``L-1`` feedback products (``g_l(t_l)`` only).
* GAIT-prop, TPInverse: ``L`` forward, ``L-1`` LU factorisations of ``W_l`` (``l >= 2``) and ``L-1``
  triangular solve pairs with ``B`` right-hand sides, ``L`` weight gradients (the condition
  estimate, ``O(n^2)`` per layer, is not counted).
* Microcircuit (ideal lateral weights): ``N`` forward (the start and the input drive), per sweep
  3 times the top pair's two products (``A_N = r_{N-1} W_N^T`` and the apical ``V_A,N-1``), once
  ``A_k = r_{k-1} W_k^T`` for ``2 <= k < N`` and ``V_A,k`` for ``k <= N-2``, times the sweeps the
  step actually made (reported), ``N`` weight gradients; the final map evaluation is not counted,
  nor the products of the first sweep that the forward pass already made.
* Conv rows: the same counts with each layer's products in their GEMM form (refimpl/layers.py:
  conv forward ``W (C_out x C_in kh kw) @ cols (C_in kh kw x B H' W')``, transpose and weight
  gradient likewise, :func:`_layer_gemms`); DFA's projections go to the pre-pooling units, PEPITA's
  modulation to the 3x32x32 input. The im2col / col2im copies and the pooling are *not* counted:
  they are what a conv row's ``/floor`` shows above 1. GAIT-prop / TPInverse on the invertible
  convnet: forward, per inverted layer one LU of its ``C_out x C_out`` patch matrix (dense: ``W_l``)
  and the triangular solves for its ``B H' W'`` patches (dense: ``B`` rows), weight gradients.
* CorInfoMax: per sweep and layer ``k``: the basal ``R_{k-1} W_{f,k-1}^T`` (for ``k >= 2``; the input
  drive is constant, counted once), the lateral ``R_k B_k``, the backward ``R_{k+1} W_{b,k}^T``
  (``k < P``), times ``t_free + t_nudge`` sweeps; the contrast: forward and backward errors and
  their gradients in both phases (``4P + 4(P-1)`` products), the lateral update ``Z = R B``,
  ``Z^T Z`` (``2P``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from . import rules as _rules
from .network import Network
from . import __version__

SIZES = [784, 1024, 1024, 10]
BATCH = 256
#: the papers' sizes: microcircuit (Sacramento et al. 2018, MNIST, batch 32), CorInfoMax (batch 20)
MC_PAPER = ([784, 500, 10], 32)
CIM_PAPER = ([784, 500, 10], 20)


# --- cases ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One bench row: a rule spec, a network kind, sizes and batch."""

    rule: str
    kind: str  # "mlp", "invertible", "microcircuit", "corinfomax", "conv", "conv_invertible"
    sizes: tuple
    batch: int
    label: str = ""


def cases(names) -> list:
    """The rows for rule ``names`` (``["all"]``: every rule of the registry)."""
    from .rules.registry import rule_names, _resolve, _canon

    known = rule_names(include_aliases=False)
    if "all" in names:
        names = known
    out = []
    for name in names:
        key = _canon(_resolve(name)[0].__name__)
        mlp = tuple(SIZES)
        if key in ("gaitprop", "tpinverse"):
            out.append(Case(name, "invertible", tuple([SIZES[0]] + [SIZES[1]] * (len(SIZES) - 1)), BATCH))
        elif key == "microcircuit":
            out.append(Case(name, "microcircuit", mlp, BATCH))
            out.append(Case(name, "microcircuit", tuple(MC_PAPER[0]), MC_PAPER[1], "paper"))
        elif key == "corinfomax":
            out.append(Case(name, "corinfomax", mlp, BATCH))
            out.append(Case(name, "corinfomax", tuple(CIM_PAPER[0]), CIM_PAPER[1], "paper"))
        else:
            out.append(Case(name, "mlp", mlp, BATCH))
    return out


#: The convolutional rows' network (issue 15's speed goal; ``refimpl bench --conv`` times its BP step
#: against torch's with cross-entropy): input 3x32x32, ReLU, batch 64.
CONV_INPUT = (3, 32, 32)
CONV_ARCH = "c32k3p1+mp2 c64k3p1+mp2 l10"
CONV_BATCH = 64
#: Rules with a conv row: every rule defined on conv networks (the microcircuit and CorInfoMax
#: are dense-only). GAIT-prop and TPInverse invert every layer after the first, so their row is on
#: an invertible convnet of the same input (:data:`CONV_INV_ARCH`; BP's step on that net is their
#: ``/BP``).
CONV_RULES = ("bp", "fa", "dfa", "signsymmetry", "pepita", "tp", "dtp", "drl", "ldrl", "gaitprop", "tpinverse")
#: GAIT-prop's invertible convnet (Dalm et al. 2023's construction, as refimpl's digits benchmark):
#: per-patch square matrices (36 = 4*3*3, 72 = 8*3*3 outputs; 8 channels passed on, the rest
#: auxiliary), no pooling after layer 1, a square dense output (512 = 8*8*8), leaky-ReLU(0.1),
#: orthogonal init; inputs 0.5 xi, targets ``h_L + 0.001 xi`` (as the dense invertible row).
CONV_INV_ARCH = "c4k3p1 c36k3s2p1+keep8 c72k3s2p1+keep8 l512"
INVERTIBLE_RULES = ("gaitprop", "tpinverse")


def conv_cases(names) -> list:
    """The convolutional rows for rule ``names`` (``["all"]``: :data:`CONV_RULES`)."""
    from .rules.registry import _resolve, _canon

    keys = CONV_RULES if "all" in names else [_canon(_resolve(n)[0].__name__) for n in names]
    sizes = (int(np.prod(CONV_INPUT)),)  # placeholder; the network is CONV_ARCH / CONV_INV_ARCH
    return [Case(k, "conv_invertible" if k in INVERTIBLE_RULES else "conv", sizes, CONV_BATCH, "conv")
            for k in keys if k in CONV_RULES]


def _problem(case: Case, dtype, xp, dev):
    """``(net, x, y)`` for a case, drawn on the host from fixed seeds and moved to ``xp``."""
    from .backend import from_numpy

    sizes, B = list(case.sizes), case.batch
    g = np.random.default_rng(1)
    if case.kind == "conv":
        net = Network.build(CONV_INPUT, CONV_ARCH, activation="relu", init="he", seed=0, dtype=dtype, xp=xp)
        x = from_numpy(g.standard_normal((B,) + CONV_INPUT), xp, dtype, dev)
        y = from_numpy(np.eye(net.sizes[-1])[g.integers(0, net.sizes[-1], B)], xp, dtype, dev)
        return net, x, y
    if case.kind == "conv_invertible":
        net = Network.build(CONV_INPUT, CONV_INV_ARCH, activation="leaky_relu(0.1)", output_activation="linear",
                            init="orthogonal", seed=0, dtype=dtype, xp=xp)
        x = from_numpy(0.5 * g.standard_normal((B,) + CONV_INPUT), xp, dtype, dev)
        y = net(x) + from_numpy(1e-3 * g.standard_normal((B, net.sizes[-1])), xp, dtype, dev)
        return net, x, y
    hidden = {"mlp": "tanh", "invertible": "tanh", "microcircuit": "softplus", "corinfomax": "linear"}[case.kind]
    init = "orthogonal" if case.kind == "invertible" else "xavier"
    net = Network.init(sizes, activation=hidden, output_activation="linear", init=init, seed=0, dtype=dtype,
                       xp=xp)
    if case.kind in ("microcircuit", "corinfomax"):
        net = net.replace(biases=tuple(b * 0 for b in net.biases))
    xh = g.random((B, sizes[0])) if case.kind == "corinfomax" else g.standard_normal((B, sizes[0]))
    if case.kind == "invertible":  # hidden units away from saturation, small output error: TPInverse's
        xh = 0.5 * xh              # full-size targets must stay inside tanh's range
    x = from_numpy(xh, xp, dtype, dev)
    if case.kind == "invertible":
        y = net(x) + from_numpy(1e-3 * g.standard_normal((B, sizes[-1])), xp, dtype, dev)
    else:
        y = from_numpy(np.eye(sizes[-1])[g.integers(0, sizes[-1], B)], xp, dtype, dev)
    return net, x, y


# --- floors --------------------------------------------------------------------------------------

def _layer_gemms(net, B) -> tuple:
    """Per layer the GEMM shapes ``(m, k, n)`` of its forward product, its transpose (input
    gradient) and its weight gradient: dense ``(B, n_in, n_out)``, ``(B, n_out, n_in)``,
    ``(n_out, B, n_in)``; conv (im2col form, refimpl/layers.py) ``(C_out, C_in kh kw, B H' W')``,
    ``(C_in kh kw, C_out, B H' W')``, ``(C_out, B H' W', C_in kh kw)``."""
    fwd, back, wgrad = [], [], []
    for l in range(1, net.depth + 1):
        lay = net.layer(l)
        if getattr(lay, "kind", "linear") == "conv2d":
            Co, Ho, Wo = lay.out_shape
            K = lay.in_shape[0] * lay.kernel_size[0] * lay.kernel_size[1]
            P = B * Ho * Wo
            fwd.append(("gemm", Co, K, P))
            back.append(("gemm", K, Co, P))
            wgrad.append(("gemm", Co, P, K))
        else:
            n_in, n_out = net.sizes[l - 1], net.sizes[l]
            fwd.append(("gemm", B, n_in, n_out))
            back.append(("gemm", B, n_out, n_in))
            wgrad.append(("gemm", n_out, B, n_in))
    return fwd, back, wgrad


def _floor_ops(case: Case, rule, record, net=None) -> list:
    """The unavoidable operations of a case as ``("gemm", m, k, n)``, ``("lu", n)``, ``("trs", n, m)``."""
    from .rules.registry import _canon

    s, B = list(case.sizes), case.batch
    L = len(s) - 1
    fwd = [("gemm", B, s[l - 1], s[l]) for l in range(1, L + 1)]
    wgrad = [("gemm", s[l], B, s[l - 1]) for l in range(1, L + 1)]
    back = [("gemm", B, s[l], s[l - 1]) for l in range(2, L + 1)]
    key = _canon(type(rule).__name__)
    if case.kind == "conv_invertible":  # per inverted layer: LU of its (patch) matrix, solves for every patch
        fwd, _, wgrad = _layer_gemms(net, B)
        lus, trs = [], []
        for l in range(2, net.depth + 1):
            lay = net.layer(l)
            if getattr(lay, "kind", "linear") == "conv2d":
                Co, Ho, Wo = lay.out_shape
                lus.append(("lu", Co))
                trs.append(("trs", Co, B * Ho * Wo))
            else:
                lus.append(("lu", net.sizes[l]))
                trs.append(("trs", net.sizes[l], B))
        return fwd + lus + trs + wgrad
    if case.kind == "conv":
        fwd, back_all, wgrad = _layer_gemms(net, B)
        back = back_all[1:]  # layers 2..L: the input gradient of layer 1 is never needed
        L, n_L = net.depth, net.sizes[-1]
        if key == "dfa":  # e B_l over the pre-pooling units a_l of every hidden layer
            return fwd + [("gemm", B, n_L, int(np.prod(net.layer(l).out_shape))) for l in range(1, L)] + wgrad
        if key == "pepita":  # two forward passes, the modulation e F^T onto the input image
            return fwd + fwd + [("gemm", B, n_L, int(np.prod(CONV_INPUT)))] + wgrad
    if key in ("bp", "fa", "signsymmetry"):
        return fwd + back + wgrad
    if key == "dfa":
        return fwd + [("gemm", B, s[L], s[l]) for l in range(1, L)] + wgrad
    if key == "pepita":
        return fwd + fwd + [("gemm", B, s[L], s[0])] + wgrad
    if key == "tp":  # t_{l-1} = g_l(t_l): one feedback product per layer
        return fwd + back + wgrad
    if key in ("dtp", "drl", "ldrl"):  # t_{l-1} = h_{l-1} + g_l(t_l) - g_l(h_l): two
        return fwd + back + back + wgrad
    if key in ("gaitprop", "tpinverse"):
        return fwd + [("lu", s[l]) for l in range(2, L + 1)] + [("trs", s[l], B) for l in range(2, L + 1)] + wgrad
    if key == "microcircuit":
        sweeps = int(record["nudged"].iterations)
        inner = 3  # microcircuit._sweep_solve's default repetitions of the top pair
        top = [("gemm", B, s[L - 1], s[L]), ("gemm", B, s[L], s[L - 1])] * inner
        per = top + [("gemm", B, s[k - 1], s[k]) for k in range(2, L)] + \
            [("gemm", B, s[k + 1], s[k]) for k in range(1, L - 1)]
        ops = fwd + per * sweeps + wgrad
        for k in range(2, L + 1):  # the first sweep reads A_k (k >= 2) from the forward pass
            ops.remove(("gemm", B, s[k - 1], s[k]))
        return ops
    if key == "corinfomax":
        P = L
        per = [("gemm", B, s[k - 1], s[k]) for k in range(2, P + 1)] + \
              [("gemm", B, s[k], s[k]) for k in range(1, P + 1)] + \
              [("gemm", B, s[k + 1], s[k]) for k in range(1, P)]
        contrast = 2 * (fwd + wgrad + back + [("gemm", s[k], B, s[k + 1]) for k in range(1, P)])
        lateral = [("gemm", B, s[k], s[k]) for k in range(1, P + 1)] + [("gemm", s[k], B, s[k]) for k in range(1, P + 1)]
        return [fwd[0]] + per * (rule.t_free + rule.t_nudge) + contrast + lateral
    raise ValueError(f"rule: no floor known for {type(rule).__name__}")


def _floor(ops, xp, dtype, dev):
    """A callable running ``ops`` on preallocated operands (no allocation but the results)."""
    from .backend import from_numpy
    from .lu import LU

    g = np.random.default_rng(0)
    r = lambda *shape: from_numpy(g.standard_normal(shape), xp, dtype, dev)
    prepared = []
    cache = {}
    for op in ops:
        if op not in cache:
            if op[0] == "gemm":
                cache[op] = (r(op[1], op[2]), r(op[2], op[3]))
            elif op[0] == "lu":
                A = r(op[1], op[1]) + 4 * op[1] ** 0.5 * xp.eye(op[1], dtype=dtype)
                cache[op] = (A,)
            else:
                A = r(op[1], op[1]) + 4 * op[1] ** 0.5 * xp.eye(op[1], dtype=dtype)
                cache[op] = (LU(A), r(op[1], op[2]))
        prepared.append((op[0], cache[op]))

    def run():
        for kind, args in prepared:
            if kind == "gemm":
                args[0] @ args[1]
            elif kind == "lu":
                LU(args[0])
            else:
                args[0].solve(args[1])
    return run


# --- torch ---------------------------------------------------------------------------------------

def _torch_step(net, x, y, device):
    import torch
    import torch.nn.functional as tF
    from .backend import to_numpy

    td = torch.float32 if "32" in str(net.dtype) else torch.float64
    T = lambda a: torch.tensor(to_numpy(a), dtype=td, device=device)
    Ws = [T(W).requires_grad_(True) for W in net.weights]
    bs = [T(b).requires_grad_(True) for b in net.biases]
    xt, yt = T(x), T(y)
    acts = {"tanh": torch.tanh, "softplus": tF.softplus, "linear": lambda a: a, "relu": torch.relu,
            "sigmoid": torch.sigmoid}
    fs = [acts.get(a, lambda a: a) for a in net.activations]

    def run():
        for p in Ws + bs:
            p.grad = None
        h = xt
        for W, b, f in zip(Ws, bs, fs):
            h = f(tF.linear(h, W, b))
        loss = 0.5 * ((h - yt) ** 2).sum(dim=1).mean()
        loss.backward()

    return run


def _torch_conv_step(net, x, y, device):
    """An eager torch BP step (mse, batch mean) of the conv network, the same weights: the module
    :func:`refimpl.bench_conv.torch_module` builds."""
    import torch
    from .backend import to_numpy
    from .bench_conv import torch_module

    td = torch.float32 if "32" in str(net.dtype) else torch.float64
    m, _ = torch_module(net, td, device)
    xt = torch.tensor(to_numpy(x), dtype=td, device=device)
    yt = torch.tensor(to_numpy(y), dtype=td, device=device)
    params = list(m.parameters())

    def run():
        for p in params:
            p.grad = None
        loss = 0.5 * ((m(xt) - yt) ** 2).sum(dim=1).mean()
        loss.backward()

    return run


# --- timing --------------------------------------------------------------------------------------

def _sync(xp):
    from .backend import backend_name

    name = backend_name(xp)
    if name == "cupy":
        import cupy

        cupy.cuda.Device().synchronize()
    elif name == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


#: a sample is at least this long: fast steps (the papers' small nets) are run ``number`` times per
#: sample (as timeit does), so one page fault or scheduler hiccup does not decide a ratio
MIN_SAMPLE_SECONDS = 0.05


def _timer(fn, sync):
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    number = max(1, int(MIN_SAMPLE_SECONDS / max(time.perf_counter() - t0, 1e-9)))

    def timed():
        sync()
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        return (time.perf_counter() - t0) / number
    return timed


def _quietly(fn):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn()


def measure(case: Case, dtype: str, repeats: int, backend: str = "numpy") -> dict:
    """One row: medians of the interleaved repeats and the ratios."""
    from .backend import resolve_namespace, device_of
    from .rules.registry import get_rule

    xp = resolve_namespace(backend)
    net, x, y = _problem(case, dtype, xp, None)
    dev = device_of(x)
    rule = get_rule(case.rule)
    arch = {"conv": CONV_ARCH, "conv_invertible": CONV_INV_ARCH}.get(case.kind)
    net_desc = ("x".join(map(str, CONV_INPUT)) + " " + arch) if arch else "-".join(map(str, case.sizes))
    rec = {"rule": case.rule, "net": net_desc, "batch": case.batch, "kind": case.kind,
           "label": case.label, "dtype": dtype, "backend": backend}
    try:
        state = rule.init(net, seed=0)
        upd, _ = rule.updates(net, state, x, y)
    except (ValueError, TypeError) as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
        return rec
    bp = _rules.BP(loss="mse")
    # a warning of the rule (GAIT-prop's float32 rounding) was shown by the call above: once is enough
    quiet = lambda fn: (lambda: _quietly(fn))
    fns = {"rule": quiet(lambda: rule.updates(net, state, x, y)), "bp": lambda: bp.updates(net, None, x, y),
           "floor": _floor(_floor_ops(case, rule, upd.record, net), xp, net.dtype, dev)}
    if case.kind == "microcircuit":
        rec["sweeps"] = int(upd.record["nudged"].iterations)
    if case.kind == "corinfomax":
        rec["sweeps"] = rule.t_free + rule.t_nudge
    try:
        import torch

        tdev = "cuda" if backend == "cupy" else "cpu"
        fns["torch"] = (_torch_conv_step(net, x, y, tdev) if case.kind.startswith("conv")
                        else _torch_step(net, x, y, tdev))
        sync_t = (lambda: torch.cuda.synchronize()) if tdev == "cuda" else (lambda: None)
    except ImportError:
        sync_t = None
    sync = lambda: _sync(xp)
    timed = {k: _timer(fn, sync_t if k == "torch" else sync) for k, fn in fns.items()}
    for t in timed.values():  # warm-up (thread pools, allocators, caches)
        t(), t()
    samples = {k: [] for k in timed}
    for i in range(repeats):  # alternate the order: what ran just before (freed memory) biases a timing
        for k in (list(timed) if i % 2 == 0 else list(timed)[::-1]):
            samples[k].append(timed[k]())
    med = {k: statistics.median(v) for k, v in samples.items()}
    # ratios of the pairs timed back to back in one repeat, then their median (and quartiles)
    ratio = lambda a, b: sorted(x / y for x, y in zip(samples[a], samples[b]))
    q = lambda v, p: v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
    per = ratio("rule", "bp")
    rec.update({"median_seconds": med, "over_bp": statistics.median(per),
                "over_floor": statistics.median(ratio("rule", "floor")),
                "bp_over_floor": statistics.median(ratio("bp", "floor")),
                "over_bp_q25": q(per, 0.25), "over_bp_q75": q(per, 0.75)})
    if "torch" in med:
        rec["over_torch"] = statistics.median(ratio("rule", "torch"))
    # the BP-only names of the first version of this command
    if case.rule in ("bp",):
        rec["refimpl_over_floor"] = rec["over_floor"]
        if "torch" in med:
            rec["refimpl_over_torch"] = rec["over_torch"]
            rec["torch_over_floor"] = statistics.median(ratio("torch", "floor"))
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


def format_table(recs) -> str:
    head = (f"{'rule':<13} {'net':<20} {'batch':>5} {'dtype':<8} {'sweeps':>6} {'/BP':>7} {'spread':>13} "
            f"{'/floor':>7} {'/torchBP':>8}")
    lines = [head, "-" * len(head)]
    for r in recs:
        name = r["rule"] + (f" ({r['label']})" if r.get("label") else "")
        if "error" in r:
            lines.append(f"{name:<13} {r['net']:<20} {r['batch']:>5} {r['dtype']:<8} n/a: {r['error'][:60]}")
            continue
        sp = f"{r['over_bp_q25']:.2f}-{r['over_bp_q75']:.2f}"
        lines.append(f"{name:<13} {r['net']:<20} {r['batch']:>5} {r['dtype']:<8} {r.get('sweeps', ''):>6} "
                     f"{r['over_bp']:>7.2f} {sp:>13} {r['over_floor']:>7.2f} {r.get('over_torch', float('nan')):>8.2f}")
    return "\n".join(lines)


def format_markdown(recs) -> str:
    """README's speed table: one line per row with its float32 and float64 ratios side by side."""
    def cell(r, key, spread=False):
        if r is None or "error" in r:
            return "n/a"
        v = f"{r[key]:.2f}" if key in r else ""
        return v + (f" ({r['over_bp_q25']:.2f}–{r['over_bp_q75']:.2f})" if spread and v else "")

    keys = []
    by = {}
    for r in recs:
        k = (r["rule"], r.get("label", ""), r["net"], r["batch"])
        if k not in by:
            keys.append(k)
        by.setdefault(k, {})[r["dtype"]] = r
    lines = ["| rule | net | batch | sweeps | f32 /BP | f32 /floor | f32 /torch BP | f64 /BP | f64 /floor | "
             "f64 /torch BP |", "|---|---|---|---|---|---|---|---|---|---|"]
    for k in sorted(keys):
        f32, f64 = by[k].get("float32"), by[k].get("float64")
        sweeps = "/".join(str(r["sweeps"]) for r in (f32, f64) if r is not None and "sweeps" in r)
        name = k[0] + (f" ({k[1]})" if k[1] else "")
        lines.append(f"| {name} | {k[2]} | {k[3]} | {sweeps} | {cell(f32, 'over_bp', True)} | "
                     f"{cell(f32, 'over_floor')} | {cell(f32, 'over_torch')} | {cell(f64, 'over_bp', True)} | "
                     f"{cell(f64, 'over_floor')} | {cell(f64, 'over_torch')} |")
    return "\n".join(lines)


def add_arguments(p):
    p.add_argument("--rule", action="append", default=None, metavar="NAME",
                   help="a rule name (repeatable) or 'all' (default: bp)")
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    p.add_argument("--backend", choices=("numpy", "cupy", "torch"), default="numpy")
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats (medians are reported)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the records with absolute times and versions")
    p.add_argument("--markdown", action="store_true", help="also print the table as README's markdown table")
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
    from .backend import backend_unavailable

    if args.repeats < 1:
        raise ValueError(f"--repeats: expected >= 1, got {args.repeats}")
    if getattr(args, "conv", False):
        return _run_conv(args)
    missing = backend_unavailable(args.backend)
    if missing:
        raise ValueError(missing)
    names = args.rule or ["bp"]
    rows = cases(names) + conv_cases(names)
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    recs = []
    print(f"refimpl bench: {len(rows)} rows x {len(dtypes)} dtypes, backend {args.backend}, "
          f"{args.repeats} interleaved repeats (medians; spread = IQR of the per-repeat /BP ratios)", flush=True)
    for dt in dtypes:
        for c in rows:
            recs.append(measure(c, dt, args.repeats, args.backend))
            print(format_table(recs[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(recs))
    if getattr(args, "markdown", False):
        print()
        print(format_markdown(recs))
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
