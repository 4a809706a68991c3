"""Command line: ``refimpl verify`` (and further subcommands as their issues land).

argparse only: importing the CLI costs nothing beyond refimpl itself. The theorem machinery
(``proofs``, which needs torch for its oracle) is imported when ``verify`` runs.
"""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["main", "build_parser"]


def _add_verify(sub):
    p = sub.add_parser("verify", help="check every registered theorem and its control on random instances")
    p.add_argument("--only", metavar="PATTERN", default=None,
                   help="comma-separated globs or substrings of theorem names (e.g. 'bp.*,gaitprop')")
    p.add_argument("--instances", type=int, default=5, metavar="N", help="random instances per theorem (default 5)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="root seed (default 0)")
    p.add_argument("--backend", choices=("numpy", "array_api_strict", "torch", "cupy"), default="numpy")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--json", metavar="PATH", default=None, help="write the JSON report here")
    p.add_argument("--thorough", action="store_true", help="run slow theorems with all instances")
    p.add_argument("--list", action="store_true", help="list the theorems and exit")
    p.add_argument("--markdown", action="store_true", help="print the theorem table of README.md and exit")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    g = p.add_argument_group("campaigns", "many instances, streamed to a file, optionally on a Dask cluster")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run on a local Dask cluster of N worker processes (needs the [dist] extra)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS", help="run on an existing Dask cluster")
    g.add_argument("--out", default=None, metavar="FILE.jsonl", help="append one record per instance as it finishes")
    g.add_argument("--resume", action="store_true", help="keep the records already in --out, run only the rest")
    p.set_defaults(func=_verify)


def _progress_bar(total: int, quiet: bool):
    """A callback counting finished instances: a bar on a terminal, a line per 10% otherwise."""
    state = {"n": 0, "t0": time.perf_counter(), "next": 0.1}
    tty = sys.stdout.isatty()

    def tick(rec=None):
        state["n"] += 1
        n = state["n"]
        if quiet or total == 0:
            return
        frac = n / total
        if tty:
            bar = "#" * int(30 * frac)
            sys.stdout.write(f"\r[{bar:<30}] {n}/{total} instances  {time.perf_counter() - state['t0']:.1f}s")
            if n == total:
                sys.stdout.write("\n")
            sys.stdout.flush()
        elif frac >= state["next"] or n == total:
            print(f"  {n}/{total} instances ({100 * frac:.0f}%), {time.perf_counter() - state['t0']:.1f}s", flush=True)
            while state["next"] <= frac:
                state["next"] += 0.1

    return tick


def _markdown_table(thms) -> str:
    lines = ["| theorem | statement | control (must fail) |", "|---|---|---|"]
    for t in thms:
        ctrl = t.control_breaks if t.kind == "theorem" else "(measurement: no control)"
        cell = lambda s: " ".join(str(s).split()).replace("|", "\\|")
        lines.append(f"| `{t.name}` | {cell(t.statement)} | {cell(ctrl)} |")
    return "\n".join(lines)


def _verify(args) -> int:
    import proofs
    from proofs import verify as V

    thms = V.select(proofs.THEOREMS, args.only)
    if args.list:
        for t in thms:
            print(f"{t.name:<44} {t.kind:<11} {t.statement}")
        return 0
    if args.markdown:
        print(_markdown_table(thms))
        return 0
    if not thms:
        print(f"refimpl verify: no theorem matches --only {args.only!r}", file=sys.stderr)
        return 2
    if args.instances < 1:
        print("refimpl verify: --instances must be >= 1", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        print("refimpl verify: --workers must be >= 1", file=sys.stderr)
        return 2
    if args.resume and not args.out:
        print("refimpl verify: --resume needs --out FILE.jsonl", file=sys.stderr)
        return 2
    campaign = args.out or args.workers or args.scheduler
    if not args.quiet:
        print(f"refimpl verify: {len(thms)} theorems, {args.instances} instances each, "
              f"backend={args.backend}, dtype={args.dtype}, seed={args.seed}"
              + (f", workers={args.workers}" if args.workers else "")
              + (f", scheduler={args.scheduler}" if args.scheduler else ""), flush=True)
    if campaign:
        tasks = V.make_tasks(thms, args.instances, args.seed, args.backend, args.dtype, args.thorough)
        try:
            records = V.run_campaign(tasks, out=args.out, resume=args.resume, workers=args.workers,
                                     scheduler=args.scheduler, on_record=_progress_bar(len(tasks), args.quiet))
        except (FileExistsError, ImportError) as exc:
            print(f"refimpl verify: {exc}", file=sys.stderr)
            return 2
        rows = V.summarize(thms, records, args.backend, args.dtype)
    else:
        width = max(len(t.name) for t in thms)

        def progress(row):
            if not args.quiet:
                print(V.format_row(row, width), flush=True)

        rows = V.run(thms, args.instances, args.seed, args.backend, args.dtype, args.thorough, progress)
    print()
    print(V.format_table(rows))
    bad = [r for r in rows if r["verdict"] == "FAIL"]
    for r in bad:
        print(f"\nFAIL {r['theorem']}: holds={r['holds']} control_failed={r['control_failed']}")
        for rec in r.get("records", []):
            if not rec.get("holds") or rec.get("control_holds") is not False:
                print(f"  instance {rec.get('index')}: {rec.get('instance')}")
                print(f"    check:   {str(rec.get('detail', ''))[:400]}")
                print(f"    control: {str(rec.get('control_detail', ''))[:400]}")
                break
    n_pass = sum(r["verdict"] == "PASS" for r in rows)
    n_meas = sum(r["verdict"] == "MEASURED" for r in rows)
    n_skip = sum(r["verdict"] == "SKIP" for r in rows)
    print(f"\n{n_pass} passed, {len(bad)} failed, {n_meas} measured, {n_skip} skipped")
    if args.json:
        V.write_json(args.json, rows, {k: v for k, v in vars(args).items() if k != "func"})
        print(f"report written to {args.json}")
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refimpl", description="Verified reference implementations "
                                     "of credit-assignment rules.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_verify(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
