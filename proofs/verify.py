"""``refimpl verify``: every registered theorem and its control on seeded random instances.

Instance ``k`` of theorem ``T`` is drawn from ``SeedSequence([seed, crc32(T.name)]).spawn(n)[k]``,
so a theorem's instances do not depend on which other theorems run, nor on their order.
A row holds when every instance's check holds; its control "failed as expected" when every
instance's control reports ``holds=False``. The verdict is ``PASS`` only when both are true.
"""

from __future__ import annotations

import fnmatch
import json
import math
import platform
import sys
import time
import traceback
import zlib
from typing import Iterable, Optional

import numpy as np

from refimpl.backend import resolve_namespace
from .theorem import RngDrawer, Theorem

__all__ = ["select", "run_theorem", "run", "format_table", "versions"]


def select(theorems: Iterable[Theorem], only: Optional[str]) -> list:
    """Theorems whose name matches ``only``: comma-separated globs or substrings."""
    theorems = list(theorems)
    if not only:
        return theorems
    pats = [p.strip() for p in only.split(",") if p.strip()]
    out = []
    for t in theorems:
        for p in pats:
            if (any(c in p for c in "*?[") and fnmatch.fnmatch(t.name, p)) or p in t.name:
                out.append(t)
                break
    return out


def instance_seeds(name: str, seed: int, n: int):
    root = np.random.SeedSequence([seed, zlib.crc32(name.encode())])
    return root.spawn(n)


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("numpy", "scipy", "array_api_compat", "array_api_strict", "torch", "cupy"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def run_one(thm: Theorem, child, backend: str, dtype: str) -> dict:
    """Check and control of ``thm`` on the instance drawn from ``child`` (a SeedSequence)."""
    xp = resolve_namespace(backend)
    rec = {"theorem": thm.name, "seed_entropy": [int(v) for v in child.generate_state(2)]}
    gen = np.random.default_rng(child)
    try:
        inst = thm.draw(RngDrawer(gen), xp, dtype)
        rec["instance"] = inst.describe() if hasattr(inst, "describe") else repr(inst)[:200]
    except Exception as exc:  # a broken draw is a failure of the theorem's machinery
        rec.update(holds=False, error=math.inf, detail=f"draw raised {type(exc).__name__}: {exc}",
                   control_holds=None)
        return rec
    try:
        ev = thm.check(inst)
        rec.update(holds=bool(ev.holds), error=float(ev.error), tolerance=float(ev.tolerance),
                   order=ev.order, detail=ev.detail)
    except Exception as exc:
        rec.update(holds=False, error=math.inf, tolerance=math.nan, order=None,
                   detail=f"check raised {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
    if thm.control is not None:
        try:
            cev = thm.control(inst)
            rec.update(control_holds=bool(cev.holds), control_error=float(cev.error),
                       control_order=cev.order, control_detail=cev.detail)
        except Exception as exc:
            rec.update(control_holds=None, control_detail=f"control raised {type(exc).__name__}: {exc}")
    return rec


def run_theorem(thm: Theorem, instances: int = 5, seed: int = 0, backend: str = "numpy",
                dtype: str = "float64", thorough: bool = False) -> dict:
    """Summary row for one theorem (plus the per-instance records under ``"records"``)."""
    t0 = time.perf_counter()
    row = {"theorem": thm.name, "kind": thm.kind, "statement": thm.statement, "source": thm.source,
           "control_breaks": thm.control_breaks, "backend": backend, "dtype": dtype}
    if dtype not in thm.dtypes or backend not in thm.backends:
        row.update(verdict="SKIP", holds=None, instances=0, worst_error=None, control_failed=None,
                   detail=f"not meaningful for dtype {dtype} / backend {backend} (runs on {thm.dtypes}, {thm.backends})")
        return row
    n = instances if (thorough or not thm.slow) else max(1, min(instances, 2))
    records = [run_one(thm, child, backend, dtype) for child in instance_seeds(thm.name, seed, n)]
    holds = all(r["holds"] for r in records)
    errors = [r["error"] for r in records if r.get("error") is not None]
    orders = [r["order"] for r in records if r.get("order") is not None]
    row.update(instances=n, holds=holds if thm.kind == "theorem" else None,
               worst_error=max(errors) if errors else None,
               tolerance=max((r.get("tolerance", 0.0) for r in records), default=None),
               order_range=[min(orders), max(orders)] if orders else None,
               seconds=time.perf_counter() - t0, records=records)
    if thm.kind == "measurement":
        row.update(control_failed=None, verdict="MEASURED")
    else:
        control_failed = all(r.get("control_holds") is False for r in records)
        row.update(control_failed=control_failed,
                   verdict="PASS" if (holds and control_failed) else "FAIL")
    return row


def run(theorems, instances=5, seed=0, backend="numpy", dtype="float64", thorough=False, progress=None):
    rows = []
    for thm in theorems:
        row = run_theorem(thm, instances, seed, backend, dtype, thorough)
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def _fmt_err(row) -> str:
    e = row.get("worst_error")
    return "-" if e is None else f"{e:.2e}"


def _fmt_tol(row) -> str:
    if row.get("order_range"):
        lo, hi = row["order_range"]
        return f"order {lo:.2f}..{hi:.2f}"
    t = row.get("tolerance")
    return "-" if t is None or (isinstance(t, float) and math.isnan(t)) else f"{t:.0e}"


def format_row(row, width: int) -> str:
    cf = row.get("control_failed")
    cf_s = "-" if cf is None else ("yes" if cf else "NO")
    return (f"{row['theorem']:<{width}}  {row.get('instances', 0):>4}  {_fmt_err(row):>9}  "
            f"{_fmt_tol(row):>17}  {cf_s:>7}  {row['verdict']}")


def format_table(rows) -> str:
    width = max([len("theorem")] + [len(r["theorem"]) for r in rows])
    head = (f"{'theorem':<{width}}  {'inst':>4}  {'worst err':>9}  {'tolerance/order':>17}  "
            f"{'control':>7}  verdict")
    lines = [head, "-" * len(head)] + [format_row(r, width) for r in rows]
    return "\n".join(lines)


def report(rows, args: dict) -> dict:
    """The JSON report: settings, versions and one object per theorem."""
    slim = []
    for r in rows:
        r = dict(r)
        recs = r.pop("records", [])
        r["failures"] = [rec for rec in recs if not rec.get("holds") or rec.get("control_holds") is not False][:5]
        slim.append(r)
    return {"settings": args, "versions": versions(), "theorems": slim}


def write_json(path: str, rows, args: dict) -> None:
    with open(path, "w") as fh:
        json.dump(report(rows, args), fh, indent=2, default=str)
