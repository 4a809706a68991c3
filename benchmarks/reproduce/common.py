"""Shared driver of the reproduction scripts: several seeds of ``refimpl.train.compare``, one table.

Every script in this folder describes one published comparison (what the paper or library
reported, on which data) and its CPU-sized stand-in here; it calls :func:`run`, which

* trains all rules side by side (same initial weights per seed) with :func:`refimpl.train.compare`,
* writes ``<out>/results.json`` (every seed's metrics.json-style record, plus the table rows) and
  ``<out>/table.md``, and a learning-curve PNG of the first seed,
* prints the table: final test/train accuracy as mean ± std over seeds with the per-seed values,
  the per-layer angle to BP's update (mean over the last epoch's batches, then over seeds), and the
  training seconds per run.

Rules that do not exist yet in ``refimpl.rules`` are reported as "not available" (scripts are
written for every family of the comparison; rows appear as the families land).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time

from refimpl import train as T


def _available(spec) -> bool:
    if not isinstance(spec, str):
        return True
    try:
        T.get_rule(T.parse_rule_spec(spec)[0])
        return True
    except ValueError:
        return False


def _ms(vals):
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def table(results: list, rules: list) -> list:
    """One row per rule from the per-seed ``compare`` results."""
    rows = []
    for key in rules:
        entries = [r["rules"][key] for r in results if key in r["rules"]]
        last = [e["epochs"][-1] for e in entries if e["epochs"]]
        errors = [e["error"] for e in entries if "error" in e]
        test = [x.get("test_accuracy") for x in last]
        train = [x.get("train_accuracy") for x in last]
        angs = [x["angles"] for x in last if x.get("angles")]
        mean_ang = ([statistics.mean([a[i] for a in angs if a[i] is not None and not math.isnan(a[i])] or [math.nan])
                     for i in range(len(angs[0]))] if angs else [])
        rows.append({
            "rule": key, "seeds": len(last),
            "test_accuracy": _ms(test), "test_accuracy_per_seed": [round(t, 4) for t in test if t is not None],
            "train_accuracy": _ms(train),
            "test_loss": _ms([x.get("test_loss") for x in last]),
            "angle_deg": "/".join("-" if math.isnan(a) else f"{a:.1f}" for a in mean_ang) or "-",
            "seconds": _ms([e.get("seconds") for e in entries]),
            "errors": errors,
        })
    return rows


def markdown(rows: list, missing: list) -> str:
    head = "| rule | seeds | test acc. (mean ± std) | per seed | train acc. | test loss | angle to BP (deg, per layer, last epoch) | s per run |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['rule']} | {r['seeds']} | {r['test_accuracy']} | "
                     f"{', '.join(f'{v:.3f}' for v in r['test_accuracy_per_seed'])} | {r['train_accuracy']} | "
                     f"{r['test_loss']} | {r['angle_deg']} | {r['seconds']} |")
        for e in r["errors"][:1]:
            lines.append(f"| {r['rule']} (error) | | {e[:120]} | | | | | |")
    for m in missing:
        lines.append(f"| {m} | 0 | not available in refimpl.rules yet | | | | | |")
    return "\n".join(lines)


def run(name: str, rules: dict, data, *, seeds=(0, 1, 2), out=None, **compare_kw) -> dict:
    """Run ``rules`` (``{key: spec or rule}``) on ``data`` for each seed; write and print the table."""
    out = out or os.path.join("runs", "reproduce", name)
    os.makedirs(out, exist_ok=True)
    present = {k: r for k, r in rules.items() if _available(r)}
    missing = [k for k in rules if k not in present]
    results = []
    t0 = time.perf_counter()
    for s in seeds:
        r = T.compare(present, data, seed=s, **compare_kw)
        results.append(r)
        accs = {k: e["epochs"][-1].get("test_accuracy") if e["epochs"] else None for k, e in r["rules"].items()}
        print(f"[{name}] seed {s}: " + ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} -" for k, v in accs.items()),
              flush=True)
    rows = table(results, list(present))
    md = markdown(rows, missing)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"name": name, "seeds": list(seeds), "rows": rows, "missing": missing,
                   "runs": results, "total_seconds": time.perf_counter() - t0}, f, indent=1, default=str)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(md + "\n")
    if results:
        T.plot_curves(results[0], os.path.join(out, "learning_curves_seed%d.png" % seeds[0]))
    print()
    print(f"{name}: {data.describe()}; {results[0]['network'] if results else ''}; {results[0]['config'] if results else ''}")
    print(md)
    print(f"\n({time.perf_counter() - t0:.1f} s; written to {out}/)")
    sys.stdout.flush()
    return {"rows": rows, "missing": missing, "runs": results}
