"""Peak memory and time of the three neural-ODE gradient methods as the number of steps N grows.

    python benchmarks/ode_memory.py [--ns 10,100,1000,10000] [--json out.json] [--no-torch]

Field: ``f(x) = W3 tanh(W2 tanh(W1 x + b1) + b2) + b3`` with widths 2-16-16-2 (a
``refimpl.Network``), batch 8, float64, T = 1, the 3/8 rule (``rk38``: torchdiffeq's ``rk4``
method is this rule, so both libraries take exactly the same steps; the benchmark checks that
their final states agree). For each N:

* refimpl (NumPy): ``refimpl.ode.gradients(..., mode=)`` for ``backprop`` (reverse mode through
  the steps), ``symplectic``, ``adjoint`` (continuous adjoint) and ``checkpoint`` (ACA). Peak memory is the tracemalloc
  peak of the call (NumPy reports its buffers to tracemalloc), next to the ledger's count of live
  tapes.
* torchdiffeq (if installed, ``pip install 'refimpl[bench]'``): ``odeint`` + ``backward()``
  (backprop through the solver) and ``odeint_adjoint`` (continuous adjoint, same fixed grid both
  ways) on the same weights. Peak memory is the peak of the bytes held by tensors saved for
  backward (``torch.autograd.graph.saved_tensors_hooks``, distinct storages counted once), i.e.
  the autograd graph; tracemalloc does not see torch's CPU allocator.

Times come from a second, uninstrumented run of each configuration (tracemalloc and the hooks
slow both libraries down).

The two memory measures are not the same quantity, so the table compares *ratios*: growth of each
method from the smallest N, backprop over the exact low-memory method within each library, and
time ratios. Every record carries the library versions.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import tracemalloc
import weakref

import numpy as np

import refimpl as ri
from refimpl import ode

WIDTHS = [2, 16, 16, 2]
BATCH = 8
METHOD = "rk38"


def _setup(seed=0):
    net = ri.Network.init(WIDTHS, activation="tanh", seed=seed, gain=1.2, bias_scale=0.2)
    gen = np.random.default_rng(seed + 1)
    return net, gen.standard_normal((BATCH, WIDTHS[0])), gen.standard_normal((BATCH, WIDTHS[-1]))


def refimpl_time(net, x0, cot, N, mode):
    t0 = time.perf_counter()
    ode.gradients(net, x0, 1.0, N, METHOD, cot, mode)
    return time.perf_counter() - t0


def refimpl_run(net, x0, cot, N, mode):
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    rec = ode.gradients_report(net, x0, 1.0, N, METHOD, cot, mode)
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return {"peak_bytes": int(peak), "seconds": dt, "live_tapes": rec.report.peak_tapes,
            "tape_bytes": rec.report.peak_tape_bytes, "grad": rec}


class _SavedMeter:
    """Live bytes of distinct storages saved for backward, and their peak."""

    def __init__(self):
        self.live = 0
        self.peak = 0
        self.refs = {}

    def _release(self, key):
        n, nb = self.refs[key]
        if n == 1:
            del self.refs[key]
            self.live -= nb
        else:
            self.refs[key] = (n - 1, nb)

    def pack(self, t):
        st = t.untyped_storage()
        key = st.data_ptr()
        n, nb = self.refs.get(key, (0, st.nbytes()))
        if n == 0:
            self.live += nb
            self.peak = max(self.peak, self.live)
        self.refs[key] = (n + 1, nb)
        # keep a detached alias (same storage): holding ``t`` itself would tie the graph node to its
        # own output in a reference cycle and delay the release until the cyclic GC runs
        holder = _Holder(t.detach())
        weakref.finalize(holder, self._release, key)
        return holder

    @staticmethod
    def unpack(holder):
        return holder.t


class _Holder:
    __slots__ = ("t", "__weakref__")

    def __init__(self, t):
        self.t = t


def torch_run(net, x0, cot, N, adjoint: bool, meter_on: bool = True):
    import torch
    import torchdiffeq

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.W = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(np.asarray(W))) for W in net.weights])
            self.b = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(np.asarray(b))) for b in net.biases])

        def forward(self, t, x):
            h = x
            for i, (W, b) in enumerate(zip(self.W, self.b)):
                h = torch.nn.functional.linear(h, W, b)
                if i < len(self.W) - 1:
                    h = torch.tanh(h)
            return h

    fld = Field()
    x = torch.tensor(x0, requires_grad=True)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    opts = {"step_size": 1.0 / N}
    meter = _SavedMeter()
    import contextlib

    ctx = torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack) if meter_on else contextlib.nullcontext()
    t0 = time.perf_counter()
    with ctx:
        if adjoint:
            y = torchdiffeq.odeint_adjoint(fld, x, ts, method="rk4", options=opts, adjoint_method="rk4",
                                           adjoint_options=opts)
        else:
            y = torchdiffeq.odeint(fld, x, ts, method="rk4", options=opts)
        (y[-1] * torch.tensor(cot)).sum().backward()
    dt = time.perf_counter() - t0
    return {"peak_bytes": int(meter.peak), "seconds": dt, "x1": y[-1].detach().numpy(),
            "dx0": x.grad.numpy().copy()}


def versions():
    out = {"python": platform.python_version(), "numpy": np.__version__, "refimpl": ri.__version__}
    try:
        import torch
        import torchdiffeq

        out.update(torch=torch.__version__, torchdiffeq=torchdiffeq.__version__)
    except ImportError:
        pass
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ns", default="10,100,1000,10000")
    p.add_argument("--json", default=None)
    p.add_argument("--no-torch", action="store_true")
    a = p.parse_args(argv)
    Ns = [int(v) for v in a.ns.split(",")]
    net, x0, cot = _setup()
    have_torch = False
    if not a.no_torch:
        try:
            import torchdiffeq  # noqa: F401
            have_torch = True
        except ImportError:
            print("torchdiffeq not installed (pip install 'refimpl[bench]'): refimpl columns only")
    rows = []
    for N in Ns:
        row = {"N": N}
        for mode in ("backprop", "symplectic", "adjoint", "checkpoint"):
            r = refimpl_run(net, x0, cot, N, mode)
            row[mode] = {k: v for k, v in r.items() if k != "grad"}
            row[mode]["seconds"] = refimpl_time(net, x0, cot, N, mode)  # uninstrumented
            if mode == "backprop":
                ref_dx0 = np.asarray(r["grad"].dx0)
            if mode == "symplectic":
                row["symplectic_vs_backprop_rel"] = float(np.max(np.abs(np.asarray(r["grad"].dx0) - ref_dx0))
                                                          / np.max(np.abs(ref_dx0)))
        if have_torch:
            for key, adj in (("td_odeint", False), ("td_adjoint", True)):
                r = torch_run(net, x0, cot, N, adj)
                row[key] = {"peak_bytes": r["peak_bytes"],
                            "seconds": torch_run(net, x0, cot, N, adj, meter_on=False)["seconds"]}
                if not adj:
                    x1 = ode.solve(net, x0, 1.0, N, METHOD).x1
                    row["same_steps_x1_diff"] = float(np.max(np.abs(r["x1"] - x1)))
                    row["td_odeint_dx0_vs_refimpl_rel"] = float(np.max(np.abs(r["dx0"] - ref_dx0))
                                                                / np.max(np.abs(ref_dx0)))
        rows.append(row)
        if "same_steps_x1_diff" in row:
            print(f"N={N}: torchdiffeq rk4 vs refimpl rk38 final state max diff {row['same_steps_x1_diff']:.1e}; "
                  f"odeint dx0 vs refimpl backprop rel {row['td_odeint_dx0_vs_refimpl_rel']:.1e}")
        print(f"N={N}: " + ", ".join(f"{k} {v['peak_bytes'] / 1e6:.3f} MB {v['seconds']:.2f} s"
                                     for k, v in row.items() if isinstance(v, dict)), flush=True)
    print()
    print(table(rows, have_torch))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"versions": versions(), "widths": WIDTHS, "batch": BATCH, "method": METHOD, "rows": rows},
                      fh, indent=2)
    return rows


def table(rows, have_torch) -> str:
    n0 = rows[0]
    keys = ["backprop", "symplectic", "adjoint", "checkpoint"] + (["td_odeint", "td_adjoint"] if have_torch else [])
    head = ("| N | " + " | ".join(f"{k} peak (x N={n0['N']})" for k in keys)
            + " | refimpl backprop / symplectic: memory, time"
            + (" | torchdiffeq odeint / adjoint: memory, time | refimpl symplectic / torchdiffeq adjoint: time" if have_torch else "")
            + " | live tapes bp / sympl | symplectic = backprop (rel) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [str(r["N"])]
        for k in keys:
            cells.append(f"{r[k]['peak_bytes'] / 1e6:.3g} MB ({r[k]['peak_bytes'] / max(n0[k]['peak_bytes'], 1):.3g}x)")
        cells.append(f"{r['backprop']['peak_bytes'] / r['symplectic']['peak_bytes']:.3g}x, "
                     f"{r['backprop']['seconds'] / r['symplectic']['seconds']:.2f}x")
        if have_torch:
            cells.append(f"{r['td_odeint']['peak_bytes'] / max(r['td_adjoint']['peak_bytes'], 1):.3g}x, "
                         f"{r['td_odeint']['seconds'] / r['td_adjoint']['seconds']:.2f}x")
            cells.append(f"{r['symplectic']['seconds'] / r['td_adjoint']['seconds']:.2f}x")
        cells.append(f"{r['backprop']['live_tapes']} / {r['symplectic']['live_tapes']}")
        cells.append(f"{r['symplectic_vs_backprop_rel']:.1e}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
