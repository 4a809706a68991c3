"""Campaign throughput: instances per second, serial vs a local Dask cluster, as a ratio in one run.

    python benchmarks/campaign_throughput.py [--instances 300] [--only bp] [--workers 2]

Runs the same campaign (same theorems, seed and instances, so the same records) serially and on
``LocalCluster(n_workers=W)``; reports both throughputs and their ratio. Dask start-up is
included in the Dask time (it is what a user waits for); the ratio therefore grows with the
campaign size. Records are checked to be identical (wall time aside).
"""

from __future__ import annotations

import argparse
import json
import time

import proofs
from proofs import verify as V


def _strip(recs):
    return sorted(({k: v for k, v in r.items() if k not in V.VOLATILE_FIELDS} for r in recs), key=V.task_key)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=300)
    p.add_argument("--only", default="bp")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    thms = V.select(proofs.THEOREMS, a.only)
    tasks = V.make_tasks(thms, a.instances, seed=0)
    t0 = time.perf_counter()
    serial = V.run_campaign(tasks)
    t_serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    dask = V.run_campaign(tasks, workers=a.workers)
    t_dask = time.perf_counter() - t0
    same = _strip(serial) == _strip(dask)
    rec = {"tasks": len(tasks), "theorems": [t.name for t in thms], "workers": a.workers,
           "serial_per_s": len(tasks) / t_serial, "dask_per_s": len(tasks) / t_dask,
           "speedup": t_serial / t_dask, "identical_records": same, "versions": V.versions()}
    print(f"{len(tasks)} instances of {len(thms)} theorems: serial {rec['serial_per_s']:.1f}/s, "
          f"dask x{a.workers} {rec['dask_per_s']:.1f}/s (start-up included), speed-up {rec['speedup']:.2f}; "
          f"records identical: {same}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rec, fh, indent=2)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
