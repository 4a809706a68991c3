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
    from .backend import backend_unavailable

    missing = None if (args.list or args.markdown) else backend_unavailable(args.backend)
    if missing:  # before importing the theorems: a missing backend is exit 2, not a column of FAILs
        print(f"refimpl verify: {missing}", file=sys.stderr)
        return 2
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
    p.add_argument("--data", choices=("digits", "mnist1d", "teacher", "teacher-images", "idx"), default="digits",
                   help="digits (8x8 images: 1x8x8 with a convolutional --arch, 64 inputs otherwise), mnist1d, "
                        "teacher (dense teacher-student), teacher-images (3x32x32 images labelled by a random conv "
                        "teacher, 10000/2000), idx (MNIST files)")
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
    from .layers import ARCHITECTURE_HELP

    p.add_argument("--arch", default=None, metavar="SPEC",
                   help="the network's layers instead of --hidden/--sizes, for convolutional networks: "
                        + ARCHITECTURE_HELP.replace("%", "%%") + ". The last layer's width must be the data's "
                        "number of classes. A convolutional first layer loads the data as images (digits: "
                        "1x8x8). Rules defined for dense networks only refuse it (exit 2)")
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
        from .backend import backend_unavailable

        missing = backend_unavailable(args.backend)
        if missing:
            raise ValueError(missing)
        for spec in args.rule:  # fail fast on unknown rules, before loading any data
            T.get_rule(T.parse_rule_spec(spec)[0])
        kw = {"path": args.data_path} if args.data == "idx" else {}
        layers = None
        if args.arch is not None:
            from .layers import Conv2d, parse_architecture

            layers = parse_architecture(args.arch)
            if isinstance(layers[0], Conv2d):
                if args.data not in ("digits", "teacher-images"):
                    raise ValueError(f"--arch: a convolutional network needs image data (--data digits or "
                                     f"teacher-images), got --data {args.data}")
                if args.data == "digits":
                    kw["images"] = True
            if args.sizes:
                raise ValueError("--arch: give either --arch or --sizes, not both")
        data = D.load(args.data, seed=args.data_seed, xp=args.backend, dtype=args.dtype, **kw)
        if data.is_images and (layers is None or not isinstance(layers[0], Conv2d)):
            data = data.flat()  # a dense first layer reads the flattened image
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

    net = None
    if layers is not None:  # build the network and let every rule refuse it now, not after training others
        try:
            net = T.build_network(data, layers=layers, activation=args.activation,
                                  output_activation=args.output_activation, init=args.init, seed=args.seed)
            loss = args.loss or ("ce" if data.task == "classification" else "mse")
            T.check_rules_support(T.build_rules(args.rule, loss), net, data, seed=args.seed)
        except (ValueError, TypeError) as exc:
            print(f"refimpl train: {exc}", file=sys.stderr)
            return 2
        if not args.quiet:
            print(f"network: {net.describe()}", flush=True)
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
                               loss=args.loss, angles=not args.no_angles, progress=progress, net=net,
                               auto_network=auto_network and net is None)
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


def _one_line_errors(p):
    """argparse errors of this subcommand as one line on stderr, exit 2 (not usage + message)."""
    def error(message):
        sys.stderr.write(f"{p.prog}: {message}\n")
        raise SystemExit(2)

    p.error = error
    return p


def _add_conform(sub):
    p = sub.add_parser("conform", help="check your implementation of a rule against the reference",
                       description="Hypothesis searches random networks, batches, states and hyper-parameter "
                                   "ranges for a mismatch between IMPL and the reference rule; on a mismatch it "
                                   "shrinks to a minimal counterexample, prints it (expected and received values, "
                                   "the slip's name when recognisable), writes it as JSON and exits 1. Adapter "
                                   "contract: impl(weights, biases, activations, x, y, state, **hyper) -> (dW, db), "
                                   "NumPy arrays (or torch tensors), gradient convention; hyper = every "
                                   "hyper-parameter of the reference as resolved (see README). --arch conv: "
                                   "weights (out, in, kh, kw), x (B, C, H, W), and an impl that names `layers` gets "
                                   "the layer descriptions (stride, padding, pooling, flatten).")
    p.add_argument("rule", help="rule name: bp, fa, dfa, usf, brsf, frsf, gaitprop, dtp, ... or a class name")
    p.add_argument("--impl", required=True, metavar="MODULE:FUNCTION", help="your implementation")
    p.add_argument("--instances", type=int, default=100, metavar="N", help="random instances to try (default 100)")
    p.add_argument("--hyper", action="append", default=[], metavar="K=V|K=LO:HI",
                   help="hyper-parameter of the reference (your function receives every resolved one); "
                        "LO:HI draws it per instance (log-uniform when 0 < LO and HI >= 10 LO; integers if both are); "
                        "repeatable")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="precision the instance is handed over in; judged against the float64 reference with "
                        "that row of the tolerance table (default float64)")
    p.add_argument("--rtol", type=float, default=None, help="override the table's relative tolerance (recorded)")
    p.add_argument("--atol", type=float, default=None, help="override the table's absolute tolerance (recorded)")
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    p.add_argument("--targets", action="store_true", help="compare targets (impl returns L+1 targets) instead of updates")
    p.add_argument("--arch", choices=("mlp", "conv", "any"), default="mlp",
                   help="networks to draw: mlp (dense, the default), conv (1-3 Conv2d layers with optional 2x2 max/avg "
                        "pooling, then 1-2 Linear; weights (out, in, kh, kw), x (B, C, H, W)) or any (either); gaitprop "
                        "and tpinverse get invertible convs with auxiliary channels (keep) and a square output whose "
                        "first `outputs` units carry the loss (outputs follows the draw); rules without a conv form "
                        "(microcircuit, corinfomax) refuse conv")
    p.add_argument("--feedback", action="store_true",
                   help="compare feedback updates (dQ, dc) of TP/DTP/DRL/LDRL; the noise is in state['noise']")
    p.add_argument("--out", default="conform-counterexample.json", metavar="FILE.json",
                   help="where a counterexample is written (default conform-counterexample.json)")
    p.add_argument("--replay", default=None, metavar="FILE.json", help="run one stored counterexample again "
                   "(its rule, hyper-parameters, dtype and tolerance)")
    p.add_argument("--replay-anyway", action="store_true",
                   help="replay under RULE/--hyper even if the file was written for another rule or hyper-parameters")
    p.set_defaults(func=_conform)
    _one_line_errors(p)


def _parse_hyper(items) -> dict:
    """``k=v`` (a Python literal or a bare string) or ``k=lo:hi`` (a range drawn per instance)."""
    import ast

    out = {}
    for item in items:
        key, eq, val = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(f"--hyper: expected key=value or key=lo:hi, got {item!r}")
        val = val.strip()
        lo, colon, hi = val.partition(":")
        if colon:
            try:
                a, b = ast.literal_eval(lo.strip()), ast.literal_eval(hi.strip())
            except (ValueError, SyntaxError):
                a = b = None
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
                from proofs.conform import Range

                try:
                    out[key.strip()] = Range(a, b)
                except ValueError as exc:
                    raise ValueError(f"--hyper {item!r}: {exc}") from None
                continue
        try:
            out[key.strip()] = ast.literal_eval(val)
        except (ValueError, SyntaxError):
            out[key.strip()] = val
    return out


def _conform(args) -> int:
    import json
    import math
    import os

    def fail(msg) -> int:
        print(f"refimpl conform: {msg}", file=sys.stderr)
        return 2

    if args.instances < 1:
        return fail(f"--instances: expected an integer >= 1, got {args.instances}")
    for nm in ("rtol", "atol"):
        v = getattr(args, nm)
        if v is not None and not (math.isfinite(v) and v >= 0):
            return fail(f"--{nm}: expected a finite number >= 0, got {v}")
    if args.replay_anyway and not args.replay:
        return fail("--replay-anyway needs --replay FILE.json")
    from proofs import conform as C

    if os.getcwd() not in sys.path:  # so that --impl can name a module in the current directory
        sys.path.insert(0, os.getcwd())
    try:
        hyper = _parse_hyper(args.hyper)
        impl = C.load_impl(args.impl)
        if args.replay:
            with open(args.replay) as fh:
                try:
                    cex = json.load(fh)
                except json.JSONDecodeError as exc:
                    return fail(f"--replay {args.replay}: not a JSON file ({exc})")
            ev, report = C.replay_details(args.rule, impl, cex, hyper=hyper, targets=args.targets or None,
                                          feedback=args.feedback or None,
                                          allow_mismatch=args.replay_anyway, rtol=args.rtol, atol=args.atol,
                                          dtype=args.dtype if args.dtype != "float64" else None)
            print(f"replay {args.replay} ({cex.get('rule')}, dtype {cex.get('dtype')}): "
                  f"{'agrees' if ev.holds else 'MISMATCH'} ({ev.detail}, relative error "
                  f"{ev.error:.3g}, rtol {ev.tolerance:.0e})")
            if report is not None:
                print(C.format_counterexample(report, header="  replayed", what="instance"))
            return 0 if ev.holds else 1
        res = C.check(args.rule, impl, instances=args.instances, hyper=hyper, seed=args.seed, targets=args.targets,
                      dtype=args.dtype, rtol=args.rtol, atol=args.atol, feedback=args.feedback,
                      architectures={"mlp": ("mlp",), "conv": ("conv",), "any": ("mlp", "conv")}[args.arch])
    except C.ReplayRefused as exc:
        return fail(f"--replay refused: {exc}")
    except (ValueError, TypeError, ImportError, AttributeError, FileNotFoundError, IsADirectoryError) as exc:
        return fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    print(res.summary())
    if res.passed:
        return 0
    with open(args.out, "w") as fh:
        json.dump(res.counterexample, fh, indent=1)
    hyper_s = "".join(f" --hyper {h}" for h in args.hyper)
    print(f"counterexample written to {args.out}; replay it with:\n"
          f"  refimpl conform {args.rule} --impl {args.impl}{hyper_s}{' --targets' if args.targets else ''}"
          f"{' --feedback' if args.feedback else ''} "
          f"--replay {args.out}")
    return 1


def _add_bench(sub):
    from . import bench

    p = sub.add_parser("bench", help="every rule's step time against BP, its own floor and a torch eager BP step "
                                     "(ratios)",
                       description="One row per rule (--rule all|NAME): MLP 784-1024-1024-10 batch 256 (an invertible "
                                   "square net for GAIT-prop/TPInverse, the papers' sizes as a second row for the "
                                   "microcircuit and CorInfoMax), float32 and float64; ratios from one interleaved "
                                   "run. Absolute times only with --json.")
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
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "conform":  # one line, as every other bad argument of conform
            print(f"refimpl conform: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
            return 2
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
