"""``refimpl verify``: every registered theorem and its control on seeded random instances.

A *task* is one instance of one theorem, a pure function of ``(theorem, seed, index, backend,
dtype)``: instance ``index`` is drawn from ``SeedSequence([seed, crc32(theorem)],
spawn_key=(index,))`` (the ``index``-th child of ``SeedSequence([seed, crc32(theorem)]).spawn``),
so results do not depend on which other theorems run, on their order, or on scheduling.
:func:`check_task` runs it and returns a small JSON-serialisable record.

Tasks run serially (the default, no dependency) or on a Dask cluster (``workers`` for a local
cluster, ``scheduler`` for an existing one; Dask is imported only then). With ``out`` every record
is appended to a JSON Lines file as it finishes; ``resume`` keeps the complete records already
there (a line cut by a kill is dropped) and runs only the missing tasks, so a campaign killed at
any moment and restarted ends with every instance exactly once.

A theorem's row holds when every instance's check holds; its control "failed as expected" when
every instance's control reports ``holds=False``. The verdict is ``PASS`` only when both are true.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import platform
import re
import sys
import time
import traceback
import zlib
from typing import Callable, Iterable, Optional

import numpy as np

__all__ = ["select", "make_tasks", "check_task", "task_key", "run", "run_campaign", "summarize",
           "format_table", "format_row", "versions", "read_records", "report", "write_json"]

#: Fields that identify a task (and a record); everything else in a record is its result.
KEY_FIELDS = ("theorem", "seed", "index", "backend", "dtype")
#: Result fields that vary between otherwise identical runs (wall time): excluded from comparisons.
VOLATILE_FIELDS = ("seconds",)


def select(theorems, only: Optional[str]) -> list:
    """Theorems that ``only`` names: comma-separated patterns, each either a glob (``*?[``, matched
    against the full name: ``bp.*``, ``*orthogonal*``) or a plain word, which means the family of
    that name (``bp``: every ``bp.*`` theorem, not ``gaitprop.limit_equals_bp_orthogonal``) or one
    theorem's full name exactly. Raises ValueError naming a plain pattern that matches nothing."""
    theorems = list(theorems)
    if not only:
        return theorems
    pats = [p.strip() for p in only.split(",") if p.strip()]
    out = []
    for p in pats:
        glob = any(c in p for c in "*?[")
        hit = [t for t in theorems if (fnmatch.fnmatch(t.name, p) if glob else (t.name == p or t.family == p))]
        if not hit:
            fams = sorted({t.family for t in theorems})
            raise ValueError(f"--only: {p!r} names no family or theorem (families: {', '.join(fams)}; "
                             "a theorem by its full name, e.g. bp.matches_autograd; globs: 'bp.*', '*orthogonal*')")
        out.extend(t for t in hit if t not in out)
    return [t for t in theorems if t in out]


def instance_seed(name: str, seed: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(name.encode())], spawn_key=(index,))


def instances_for(thm, instances: int, thorough: bool) -> int:
    """Instances of ``thm`` in a run: ``instances`` (at most 2 for a slow theorem unless
    ``thorough``), but never fewer than ``thm.variants``, so every variant is checked."""
    n = instances if (thorough or not thm.slow) else max(1, min(instances, 2))
    return max(n, getattr(thm, "variants", 1))


def applicable(thm, backend: str, dtype: str) -> bool:
    return dtype in thm.dtypes and backend in thm.backends


def make_tasks(theorems, instances: int = 5, seed: int = 0, backend: str = "numpy",
               dtype: str = "float64", thorough: bool = False) -> list:
    """One task dict per (theorem, instance index); theorems not meaningful here get none."""
    tasks = []
    for thm in theorems:
        if not applicable(thm, backend, dtype):
            continue
        for i in range(instances_for(thm, instances, thorough)):
            tasks.append({"theorem": thm.name, "seed": int(seed), "index": i, "backend": backend, "dtype": dtype})
    return tasks


def task_key(rec: dict) -> tuple:
    return tuple(rec[k] for k in KEY_FIELDS)


def _finite_or_none(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else (None if math.isnan(v) else ("inf" if v > 0 else "-inf"))


def check_task(task: dict) -> dict:
    """Run the check and the control of one task; a pure function of the task (plus wall time)."""
    import proofs
    from refimpl.backend import resolve_namespace
    from .theorem import RngDrawer

    t0 = time.perf_counter()
    thm = proofs.get(task["theorem"])
    rec = dict(task)
    gen = np.random.default_rng(instance_seed(thm.name, task["seed"], task["index"]))
    try:
        inst = thm.draw(RngDrawer(gen, index=task["index"]), resolve_namespace(task["backend"]), task["dtype"])
        desc = inst.describe() if hasattr(inst, "describe") else repr(inst)[:200]
        rec["instance"] = re.sub(r" at 0x[0-9a-fA-F]+", "", desc)  # records are pure functions of the task
    except Exception as exc:  # a broken draw is a failure of the theorem's machinery
        rec.update(holds=False, error="inf", detail=f"draw raised {type(exc).__name__}: {exc}",
                   control_holds=None, seconds=time.perf_counter() - t0)
        return rec
    import warnings

    # a theorem may probe a regime its rule warns about (GaitProp past the rounding wall, in the
    # error_vs_gamma measurement): the record carries the numbers; the warnings would only be noise
    warnings.simplefilter("ignore", RuntimeWarning)
    try:
        ev = thm.check(inst)
        rec.update(holds=bool(ev.holds), error=_finite_or_none(ev.error), tolerance=_finite_or_none(ev.tolerance),
                   order=_finite_or_none(ev.order), detail=ev.detail)
    except Exception as exc:
        rec.update(holds=False, error="inf", tolerance=None, order=None,
                   detail=f"check raised {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
    if thm.control is not None:
        try:
            cev = thm.control(inst)
            rec.update(control_holds=bool(cev.holds), control_error=_finite_or_none(cev.error),
                       control_order=_finite_or_none(cev.order), control_detail=cev.detail)
        except Exception as exc:
            rec.update(control_holds=None, control_detail=f"control raised {type(exc).__name__}: {exc}")
    rec["seconds"] = time.perf_counter() - t0
    return rec


def _check_chunk(tasks: list) -> list:
    return [check_task(t) for t in tasks]


# --- the JSON Lines file ------------------------------------------------------------------------

def read_records(path: str, tasks: Optional[list] = None) -> list:
    """Complete records of a JSON Lines file, first occurrence of each key; a last line cut by a
    kill (no newline) is dropped. Any other line that is not a record raises ValueError naming
    the file and the line. ``tasks``: the campaign being resumed; a record that is none of its
    tasks (another seed, backend, dtype, theorem or instance count) raises ValueError naming it."""
    out, seen = [], set()
    if not os.path.exists(path):
        return out
    keys = None if tasks is None else {task_key(t) for t in tasks}
    with open(path, "r") as fh:
        for n, line in enumerate(fh, 1):
            if not line.endswith("\n"):
                break  # the last line was cut by a kill
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = task_key(rec)
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"--resume: {path} line {n} is not a verify record ({type(exc).__name__}); "
                                 "refusing to mix it into this campaign") from None
            if keys is not None and key not in keys:
                raise ValueError(f"--resume: {path} line {n} is a record of another campaign "
                                 f"({dict(zip(KEY_FIELDS, key))}); this run has seed {tasks[0]['seed']}, backend "
                                 f"{tasks[0]['backend']}, dtype {tasks[0]['dtype']}" if tasks else
                                 f"--resume: {path} line {n} is not one of this campaign's tasks")
            if key not in seen:
                seen.add(key)
                out.append(rec)
    return out


def count_resumable(path: str, tasks: list) -> int:
    """How many of ``tasks`` a resumed campaign finds done in ``path`` (validating the file)."""
    return len(read_records(path, tasks))


def check_scheduler(address: str) -> Optional[str]:
    """None if ``address`` looks like a reachable Dask scheduler, else why not (one line).
    Checked before any work: a malformed address or a closed port is reported at once."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(address if "://" in address else "tcp://" + address)
    if u.scheme not in ("tcp", "tls", "inproc", "ucx", "ws", "wss") or not u.hostname:
        return f"{address!r}: expected an address like tcp://HOST:PORT"
    try:
        port = u.port
    except ValueError:
        return f"{address!r}: the port is not a number"
    if u.scheme in ("tcp", "tls") and port is None:
        return f"{address!r}: expected an address like tcp://HOST:PORT (no port given)"
    if u.scheme in ("tcp", "tls"):
        try:
            socket.create_connection((u.hostname, port), timeout=5).close()
        except OSError as exc:
            return f"{address!r}: no scheduler reachable there ({exc.strerror or exc})"
    return None


def _rewrite(path: str, records: list) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def run_campaign(tasks: list, *, out: Optional[str] = None, resume: bool = False, workers: Optional[int] = None,
                 scheduler: Optional[str] = None, chunksize: int = 8,
                 on_record: Optional[Callable[[dict], None]] = None) -> list:
    """Run ``tasks``; returns every record of these tasks (resumed ones included), in task order.

    ``out``: JSON Lines file to append each record to as it finishes (refuses to overwrite an
    existing file unless ``resume``). ``workers``/``scheduler``: run on Dask.
    """
    done = {}
    fh = None
    if out is not None:
        if os.path.exists(out) and not resume:
            raise FileExistsError(f"out: {out!r} exists; pass resume=True (--resume) to continue that campaign, "
                                  "or choose another path")
        if resume:
            old = read_records(out, tasks)
            _rewrite(out, old)  # drop a cut last line so appends start on a fresh line
            done = {task_key(r): r for r in old}
        fh = open(out, "a")
    pending = [t for t in tasks if task_key(t) not in done]

    def emit(rec):
        done[task_key(rec)] = rec
        if fh is not None:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
        if on_record is not None:
            on_record(rec)

    try:
        if workers is None and scheduler is None:
            for t in pending:
                emit(check_task(t))
        else:
            _run_dask(pending, workers, scheduler, chunksize, emit)
    finally:
        if fh is not None:
            fh.close()
    return [done[task_key(t)] for t in tasks if task_key(t) in done]


def _run_dask(pending, workers, scheduler, chunksize, emit):
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise ImportError("--workers/--scheduler need Dask: pip install 'refimpl[dist]'") from exc
    chunks = [pending[i:i + chunksize] for i in range(0, len(pending), max(1, chunksize))]
    if not chunks:
        return
    if scheduler:
        client, cluster = Client(scheduler), None
    else:
        cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        futures = client.map(_check_chunk, chunks, pure=False)
        for fut in as_completed(futures):
            for rec in fut.result():
                emit(rec)
    finally:
        # an interrupted campaign shuts its cluster down quietly: the records written are kept,
        # and Dask's warnings about cancelled tasks and closing workers say nothing more
        import logging
        import warnings

        for name in ("distributed", "distributed.nanny", "distributed.worker", "distributed.scheduler",
                     "distributed.core", "distributed.client"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                client.close()
            finally:
                if cluster is not None:
                    cluster.close()


# --- summaries ---------------------------------------------------------------------------------

def _num(v):
    if v is None:
        return None
    return math.inf if v == "inf" else (-math.inf if v == "-inf" else float(v))


def summarize(theorems, records, backend="numpy", dtype="float64") -> list:
    """One row per theorem from its instance records (``records`` may hold other theorems too)."""
    by = {}
    for r in records:
        by.setdefault(r["theorem"], []).append(r)
    rows = []
    for thm in theorems:
        row = {"theorem": thm.name, "kind": thm.kind, "statement": thm.statement, "source": thm.source,
               "control_breaks": thm.control_breaks, "backend": backend, "dtype": dtype}
        recs = sorted(by.get(thm.name, []), key=lambda r: r["index"])
        if not applicable(thm, backend, dtype):
            row.update(verdict="SKIP", holds=None, instances=0, worst_error=None, control_failed=None,
                       detail=f"not meaningful for dtype {dtype} / backend {backend} (runs on {thm.dtypes}, {thm.backends})")
            rows.append(row)
            continue
        errors = [_num(r.get("error")) for r in recs if r.get("error") is not None]
        orders = [_num(r.get("order")) for r in recs if r.get("order") is not None]
        holds = bool(recs) and all(r.get("holds") for r in recs)
        row.update(instances=len(recs), holds=holds if thm.kind == "theorem" else None,
                   worst_error=max(errors) if errors else None,
                   tolerance=max((_num(r.get("tolerance")) or 0.0 for r in recs), default=None),
                   order_range=[min(orders), max(orders)] if orders else None,
                   seconds=sum(r.get("seconds", 0.0) for r in recs), records=recs)
        if thm.kind == "measurement":
            row.update(control_failed=None, verdict="MEASURED")
        else:
            control_failed = bool(recs) and all(r.get("control_holds") is False for r in recs)
            row.update(control_failed=control_failed, verdict="PASS" if (holds and control_failed) else "FAIL")
        rows.append(row)
    return rows


def run_theorem(thm, instances=5, seed=0, backend="numpy", dtype="float64", thorough=False) -> dict:
    """Summary row of one theorem, run serially."""
    recs = run_campaign(make_tasks([thm], instances, seed, backend, dtype, thorough))
    return summarize([thm], recs, backend, dtype)[0]


def run(theorems, instances=5, seed=0, backend="numpy", dtype="float64", thorough=False, progress=None):
    """Serial run, one summary row per theorem (``progress(row)`` after each theorem)."""
    rows = []
    for thm in theorems:
        row = run_theorem(thm, instances, seed, backend, dtype, thorough)
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("numpy", "scipy", "array_api_compat", "array_api_strict", "torch", "cupy", "dask"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def _fmt_err(row) -> str:
    e = row.get("worst_error")
    return "-" if e is None else f"{e:.2e}"


def _fmt_tol(row) -> str:
    if row.get("order_range"):
        lo, hi = row["order_range"]
        return f"order {lo:.2f}..{hi:.2f}"
    t = row.get("tolerance")
    return "-" if t is None or (isinstance(t, float) and math.isnan(t)) else f"{t:.0e}"


def _row_cells(row) -> list:
    cf = row.get("control_failed")
    cf_s = "-" if cf is None else ("yes" if cf else "NO")
    note = row.get("detail", "") if row["verdict"] == "SKIP" else ""
    return [row["theorem"], str(row.get("instances", 0)), _fmt_err(row), _fmt_tol(row), cf_s, row["verdict"], note]


_HEADER = ("theorem", "inst", "worst err", "tolerance/order", "control", "verdict", "note")
_ALIGN = ("left", "right", "right", "right", "right", "left", "left")


def format_row(row, width: int = 0) -> str:
    """One theorem's row as a line (the table's columns, without the header)."""
    c = _row_cells(row)
    return (f"{c[0]:<{width}}  {c[1]:>5}  {c[2]:>9}  {c[3]:>17}  {c[4]:>7}  {c[5]}" + (f"  {c[6]}" if c[6] else "")).rstrip()


def format_table(rows) -> str:
    """The summary table (``rich``): one row per theorem; a skipped theorem's row says why."""
    from refimpl.console import table

    rows = list(rows)
    with_note = any(r["verdict"] == "SKIP" for r in rows)
    cells = [_row_cells(r) if with_note else _row_cells(r)[:-1] for r in rows]
    n = len(_HEADER) if with_note else len(_HEADER) - 1
    return table(_HEADER[:n], cells, align=_ALIGN[:n])


def report(rows, args: dict) -> list:
    """The JSON report (issue 2): a list with one object per theorem, each carrying at least
    ``theorem``, ``holds``, ``instances``, ``worst_error``, ``control_failed``, plus the verdict, the
    run's settings (seed, backend, dtype, ...), the library versions and up to 5 failing records."""
    settings, vers = dict(args), versions()
    out = []
    for r in rows:
        r = dict(r)
        recs = r.pop("records", [])
        r["failures"] = [rec for rec in recs if not rec.get("holds") or
                         (r["kind"] == "theorem" and rec.get("control_holds") is not False)][:5]
        r["settings"] = settings
        r["versions"] = vers
        out.append(r)
    return out


def write_json(path: str, rows, args: dict) -> None:
    with open(path, "w") as fh:
        json.dump(report(rows, args), fh, indent=2, default=str)
