"""Command line: ``refimpl verify`` (and further subcommands as their issues land).

argparse only: importing the CLI costs nothing beyond refimpl itself. The theorem machinery
(``proofs``, which needs torch for its oracle) is imported when ``verify`` runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

__all__ = ["main", "build_parser"]


def _add_verify(sub):
    p = sub.add_parser("verify", help="check every registered theorem and its control on random instances")
    p.add_argument("--only", metavar="NAMES", default=None,
                   help="comma-separated families (bp, gaitprop), full theorem names (bp.matches_autograd) "
                        "or globs ('*orthogonal*')")
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


def _markdown_table(thms) -> str:
    """README's theorem table (4 columns), from each theorem's ``readme_row``."""
    cell = lambda s: " ".join(str(s).split()).replace("|", "\\|")
    lines = ["| theorem | statement | kind of check | control (must fail) |", "|---|---|---|---|"]
    for t in thms:
        lines.append("| " + " | ".join(cell(c) for c in t.readme_row) + " |")
    return "\n".join(lines)


def _fail(cmd: str, msg: str) -> int:
    print(f"refimpl {cmd}: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2


def _check_json_path(cmd: str, path) -> Optional[str]:
    """A --json/--out file path whose directory must exist and be writable (checked before any work)."""
    import os

    d = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(d):
        return f"{path}: the directory {d} does not exist"
    if not os.access(d, os.W_OK):
        return f"{path}: the directory {d} is not writable"
    if os.path.isdir(path):
        return f"{path}: is a directory; expected a file path"
    return None


def _sigterm_as_interrupt():
    """SIGTERM ends a run like Ctrl-C (clean shutdown, files kept, no traceback); returns the undo."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


def _verify(args) -> int:
    import proofs
    from proofs import verify as V
    from .console import Progress

    try:
        thms = V.select(proofs.THEOREMS, args.only)
    except ValueError as exc:
        return _fail("verify", exc)
    if args.list:
        for t in thms:
            print(f"{t.name:<44} {t.kind:<11} {t.statement}")
        return 0
    if args.markdown:
        print(_markdown_table(thms))
        return 0
    for nm, v, lo in (("--instances", args.instances, 1), ("--seed", args.seed, 0)):
        if v < lo:
            return _fail("verify", f"{nm}: expected an integer >= {lo}, got {v}")
    if args.workers is not None and args.workers < 1:
        return _fail("verify", f"--workers: expected an integer >= 1, got {args.workers}")
    if args.resume and not args.out:
        return _fail("verify", "--resume needs --out FILE.jsonl")
    for flag, path in (("--json", args.json), ("--out", args.out)):
        if path:
            bad = _check_json_path("verify", path)
            if bad:
                return _fail("verify", f"{flag} {bad}")
    if args.scheduler:
        bad = V.check_scheduler(args.scheduler)
        if bad:
            return _fail("verify", f"--scheduler {bad}")
    campaign = args.out or args.workers or args.scheduler
    if not args.quiet:
        print(f"refimpl verify: {len(thms)} theorems, {args.instances} instances each (more where a theorem has "
              f"more variants), backend={args.backend}, dtype={args.dtype}, seed={args.seed}"
              + (f", workers={args.workers}" if args.workers else "")
              + (f", scheduler={args.scheduler}" if args.scheduler else ""), flush=True)
    tasks = V.make_tasks(thms, args.instances, args.seed, args.backend, args.dtype, args.thorough)
    done = 0
    if args.resume and args.out:
        try:
            done = V.count_resumable(args.out, tasks)
        except ValueError as exc:
            return _fail("verify", exc)
    progress = Progress(len(tasks), "instances", quiet=args.quiet, done=done, label="verify")
    interrupted = None
    restore = _sigterm_as_interrupt()
    try:
        if campaign:
            records = V.run_campaign(tasks, out=args.out, resume=args.resume, workers=args.workers,
                                     scheduler=args.scheduler, on_record=lambda rec: progress.advance(rec["theorem"]))
        else:
            records = []
            for t in tasks:
                records.append(V.check_task(t))
                progress.advance(t["theorem"])
    except (FileExistsError, ImportError, ValueError) as exc:
        progress.close()
        return _fail("verify", exc)
    except KeyboardInterrupt:
        progress.close()
        interrupted = True
    finally:
        restore()
    progress.close()
    if interrupted:
        kept = f"; the records written to {args.out} are kept (continue with --resume)" if args.out else ""
        print(f"refimpl verify: interrupted{kept}", file=sys.stderr)
        return 130
    rows = V.summarize(thms, records, args.backend, args.dtype)
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


def _add_train(sub):
    p = sub.add_parser(
        "train", help="train rules side by side on offline data; writes metrics.json and a learning-curve PNG",
        description="Train one or more rules from the same initial weights on an offline data set. "
                    "--rule takes a name and optional hyper-parameters: --rule bp --rule fa "
                    "--rule gaitprop:gamma=0.001 (values are Python literals or bare strings; several as "
                    "name:a=1,b=x). `refimpl train --list-rules` lists the rules found.")
    p.add_argument("--rule", action="append", metavar="NAME[:K=V,...]", default=None,
                   help="a rule to train (repeat for a comparison), e.g. bp, fa, dfa, gaitprop:gamma=0.001")
    p.add_argument("--list-rules", action="store_true", help="list the rule names found and exit")
    p.add_argument("--data", choices=("digits", "mnist1d", "teacher", "idx"), default="digits")
    p.add_argument("--data-path", metavar="DIR", default=None,
                   help="directory with the four MNIST IDX files (--data idx)")
    p.add_argument("--data-seed", type=int, default=None, metavar="S",
                   help="split/generator seed of the data (default: 0 for digits and teacher, 42 for mnist1d)")
    p.add_argument("--epochs", type=int, default=20, metavar="N")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the initial weights, the batch order and the rules' state (default 0)")
    p.add_argument("--backend", choices=("numpy", "array_api_strict", "torch", "cupy"), default="numpy")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output directory for metrics.json and learning_curves.png (default runs/train-DATA-seedS)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3 for adam, 0.05 for sgd)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="constant",
                   help="constant | cosine[:MIN] | step:M1,M2[:GAMMA] | exp:GAMMA (factor per 0-based epoch)")
    p.add_argument("--hidden", default=None, metavar="N,N", help="hidden widths (default 64,64)")
    p.add_argument("--sizes", default=None, metavar="N,...,N",
                   help="all layer widths n_0,...,n_L (overrides --hidden; e.g. 64,64,64,64,64 with --outputs 10 "
                        "for GAIT-prop's square networks)")
    p.add_argument("--outputs", type=int, default=None, metavar="K",
                   help="the first K output units carry the task; the others are auxiliary (targets = their "
                        "forward values, mse)")
    p.add_argument("--activation", default=None, help="hidden activation (default tanh)")
    p.add_argument("--output-activation", default=None, help="output activation (default linear)")
    p.add_argument("--init", default=None, help="weight init: xavier (default), he, normal, orthogonal")
    p.add_argument("--loss", choices=("ce", "mse"), default=None,
                   help="loss for rules that take one (default ce for classification, mse for regression; mse "
                        "for the microcircuit, CorInfoMax, GAIT-prop and TPInverse)")
    p.add_argument("--no-angles", action="store_true", help="skip the per-batch angle to BP's update")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    p.set_defaults(func=_train)


def _train(args) -> int:
    import os

    from . import data as D
    from . import optim as O
    from . import train as T

    if args.list_rules:
        rules = T.available_rules()
        for k in T.rule_names():
            cls, preset = T._resolve(k)
            extra = " ".join(f"{a}={v!r}" for a, v in preset.items())
            print(f"{k:<14} {cls.__module__}.{cls.__name__} {extra}".rstrip())
        return 0
    if not args.rule:
        print("refimpl train: give at least one --rule (e.g. --rule bp --rule fa)", file=sys.stderr)
        return 2
    auto_network = all(v is None for v in (args.sizes, args.hidden, args.outputs, args.activation,
                                           args.output_activation, args.init))
    args.hidden = "64,64" if args.hidden is None else args.hidden
    args.activation = args.activation or "tanh"
    args.output_activation = args.output_activation or "linear"
    args.init = args.init or "xavier"
    if args.seed < 0:
        return _fail("train", f"--seed: expected an integer >= 0, got {args.seed}")
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        return _fail("train", f"--out {args.out}: exists and is not a directory")
    try:
        hidden = [int(h) for h in args.hidden.split(",") if h.strip()] if args.hidden else []
        sizes = [int(h) for h in args.sizes.split(",") if h.strip()] if args.sizes else None
        if args.epochs < 1:
            raise ValueError(f"--epochs: expected an integer >= 1, got {args.epochs}")
        schedule = T.parse_schedule(args.schedule, args.epochs)
        if args.optimizer == "adam":
            opt = O.Adam(lr=1e-3 if args.lr is None else args.lr, weight_decay=args.weight_decay)
        else:
            opt = O.SGD(lr=0.05 if args.lr is None else args.lr, momentum=args.momentum,
                        weight_decay=args.weight_decay)
        for spec in args.rule:  # fail fast on unknown rules, before loading any data
            T.get_rule(T.parse_rule_spec(spec)[0])
        kw = {"path": args.data_path} if args.data == "idx" else {}
        data = D.load(args.data, seed=args.data_seed, xp=args.backend, dtype=args.dtype, **kw)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"refimpl train: {exc}", file=sys.stderr)
        return 2
    out = args.out or os.path.join("runs", f"train-{args.data}-seed{args.seed}")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        return _fail("train", f"--out {out}: cannot create the directory ({exc.strerror or exc})")
    if not args.quiet:
        print(f"refimpl train: {data.describe()}; rules {', '.join(args.rule)}; {args.epochs} epochs, "
              f"batch {args.batch_size}, {opt!r}, seed {args.seed}, backend {args.backend}", flush=True)
    import warnings

    progress = T.Progress(len(args.rule) * args.epochs, quiet=args.quiet)
    restore = _sigterm_as_interrupt()
    try:
        if sizes is not None and sizes[0] != data.n_inputs:
            raise ValueError(f"--sizes: the first width must be the {data.n_inputs} inputs of {data.name!r}, "
                             f"got {sizes[0]}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = T.compare(args.rule, data, hidden=hidden, sizes=sizes, outputs=args.outputs,
                               activation=args.activation,
                               output_activation=args.output_activation, init=args.init, optimizer=opt,
                               epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, schedule=schedule,
                               loss=args.loss, angles=not args.no_angles, progress=progress,
                               auto_network=auto_network)
    except (ValueError, TypeError) as exc:
        progress.close()
        return _fail("train", exc)
    except KeyboardInterrupt:
        progress.close()
        print("refimpl train: interrupted (nothing written)", file=sys.stderr)
        return 130
    finally:
        restore()
    progress.close()
    for w in caught:
        print(f"refimpl train: warning: {w.message}", file=sys.stderr)
    result["config"].update({"backend": args.backend,
                             "cli_args": {k: v for k, v in vars(args).items() if k != "func"}})
    path = os.path.join(out, "metrics.json")
    T.write_metrics(path, result)
    print()
    print(T.format_table(result))
    print(f"\nmetrics written to {path}")
    failed = any("error" in e for e in result["rules"].values())
    if failed:
        print("a rule failed: no learning-curve PNG written", file=sys.stderr)
    elif not args.no_plot:
        png = os.path.join(out, "learning_curves.png")
        T.plot_curves(result, png)
        print(f"learning curves written to {png}")
    return 1 if failed else 0


def _add_conform(sub):
    p = sub.add_parser("conform", help="check your implementation of a rule against the reference",
                       description="Hypothesis searches random networks and batches for a mismatch between "
                                   "IMPL and the reference rule; on a mismatch it shrinks to a minimal "
                                   "counterexample, prints it, writes it as JSON and exits 1. Adapter contract: "
                                   "impl(weights, biases, activations, x, y, state, **hyper) -> (dW, db), NumPy "
                                   "arrays (or torch tensors), gradient convention (see README).")
    p.add_argument("rule", help="rule name: bp, fa, dfa, usf, brsf, frsf, gaitprop, dtp, ... or a class name")
    p.add_argument("--impl", required=True, metavar="MODULE:FUNCTION", help="your implementation")
    p.add_argument("--instances", type=int, default=100, metavar="N", help="random instances to try (default 100)")
    p.add_argument("--hyper", action="append", default=[], metavar="K=V",
                   help="hyper-parameter for both the reference rule and your function (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    p.add_argument("--targets", action="store_true", help="compare targets (impl returns L+1 targets) instead of updates")
    p.add_argument("--out", default="conform-counterexample.json", metavar="FILE.json",
                   help="where a counterexample is written (default conform-counterexample.json)")
    p.add_argument("--replay", default=None, metavar="FILE.json", help="run one stored counterexample again")
    p.set_defaults(func=_conform)


def _parse_hyper(items) -> dict:
    import ast

    out = {}
    for item in items:
        key, eq, val = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(f"--hyper: expected key=value, got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(val.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = val.strip()
    return out


def _conform(args) -> int:
    import json
    import os

    from proofs import conform as C

    if os.getcwd() not in sys.path:  # so that --impl can name a module in the current directory
        sys.path.insert(0, os.getcwd())
    try:
        hyper = _parse_hyper(args.hyper)
        impl = C.load_impl(args.impl)
        if args.replay:
            with open(args.replay) as fh:
                cex = json.load(fh)
            ev = C.replay(args.rule, impl, cex, hyper=hyper, targets=args.targets)
            print(f"replay {args.replay}: {'agrees' if ev.holds else 'MISMATCH'} ({ev.detail}, relative error "
                  f"{ev.error:.3g}, tolerance {ev.tolerance:.0e})")
            return 0 if ev.holds else 1
        res = C.check(args.rule, impl, instances=args.instances, hyper=hyper, seed=args.seed, targets=args.targets)
    except (ValueError, TypeError, ImportError, AttributeError, FileNotFoundError) as exc:
        print(f"refimpl conform: {exc}", file=sys.stderr)
        return 2
    print(res.summary())
    if res.passed:
        return 0
    with open(args.out, "w") as fh:
        json.dump(res.counterexample, fh, indent=1)
    hyper_s = "".join(f" --hyper {h}" for h in args.hyper)
    print(f"counterexample written to {args.out}; replay it with:\n"
          f"  refimpl conform {args.rule} --impl {args.impl}{hyper_s}{' --targets' if args.targets else ''} "
          f"--replay {args.out}")
    return 1


def _add_bench(sub):
    from . import bench

    p = sub.add_parser("bench", help="BP step time against the GEMM floor and a torch eager step (ratios)",
                       description="MLP 784-1024-1024-10, batch 256, float32 and float64: ratios measured in "
                                   "one interleaved run (refimpl/floor, torch/floor, refimpl/torch).")
    bench.add_arguments(p)
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    from . import bench

    try:
        return bench.run(args)
    except ValueError as exc:
        print(f"refimpl bench: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refimpl", description="Verified reference implementations "
                                     "of credit-assignment rules.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_verify(sub)
    _add_train(sub)
    _add_conform(sub)
    _add_bench(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
