"""Mutation testing of the rules, the ODE solvers and the SCG estimators (``make mutants``).

A small self-contained mutation tester (no dependency): it enumerates every mutation point of
the modules under ``refimpl/rules``, ``refimpl/ode`` and ``refimpl/scg`` with the operators

    arith    a + b <-> a - b, a * b <-> a / b, a ** b -> a * b
    const    a numeric literal c -> c + 1 (0 -> 1, 1 -> 2, 0.5 -> 1.5, ...)
    negate   -a -> a
    compare  < <-> <=, > <-> >=, == <-> !=

draws a seeded sample of them (``--sample N``; all with ``--sample 0``), applies each one to a
copy of the repository and runs the tests that mirror the mutated module (``tests/rules/test_X``,
``tests/proofs/test_X`` and the cross-family tests for a rule; ``tests/ode`` + ``tests/proofs/test_ode``
for the ODE package; ``tests/scg`` + ``tests/proofs/test_scg`` for SCG) with ``pytest -x``, and
``refimpl verify --only FAMILY`` when the tests let the mutant live (``--no-verify`` skips that).
A mutant is *killed* when either fails or exceeds the time limit. Mutants in docstrings,
error messages, ``__all__``, validation branches (lines inside ``if ...: raise``) are not
generated: they change no number.

Reports the kill rate (overall and per package) and lists the survivors with file:line and the
mutated line, so that each can be judged (a real gap in the tests, or an equivalent mutant).
Usage: ``python tools/mutants.py --sample 60 --seed 0 [--jobs 2] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, asdict
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("refimpl/rules", "refimpl/ode", "refimpl/scg")
SKIP_FILES = {"__init__.py", "registry.py", "base.py"}

_ARITH = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "*"),
          ast.Pow: ("**", "*")}
_CMP = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
        ast.Eq: ("==", "!="), ast.NotEq: ("!=", "==")}


@dataclass
class Mutant:
    path: str
    line: int
    col: int
    end_line: int
    end_col: int
    replacement: str
    operator: str
    original: str

    def describe(self) -> str:
        return f"{self.path}:{self.line} [{self.operator}] {self.original.strip()!r} -> {self.replacement!r}"


def _lines(src):
    return src.splitlines(keepends=True)


def _offset(lines, line, col):
    return sum(len(l) for l in lines[:line - 1]) + col


def _excluded_lines(tree) -> set:
    """Docstrings, ``raise`` statements and the tests of validation branches (``if ...: raise``)."""
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            out.update(range(body[0].lineno, body[0].end_lineno + 1))
        if isinstance(node, ast.Raise):
            out.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.If) and node.body and all(isinstance(s, ast.Raise) for s in node.body):
            out.update(range(node.test.lineno, node.test.end_lineno + 1))
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            out.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.JoinedStr):
            out.update(range(node.lineno, node.end_lineno + 1))
    return out


def enumerate_mutants(path: str) -> list:
    src = open(os.path.join(ROOT, path)).read()
    lines = _lines(src)
    tree = ast.parse(src)
    skip = _excluded_lines(tree)
    found = []

    def text(n):
        return ast.get_source_segment(src, n)

    for node in ast.walk(tree):
        ln = getattr(node, "lineno", None)
        if ln is None or ln in skip:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            old, new = _ARITH[type(node.op)]
            # the operator token lies between the operands
            a = _offset(lines, node.left.end_lineno, node.left.end_col_offset)
            b = _offset(lines, node.right.lineno, node.right.col_offset)
            seg = src[a:b]
            i = seg.find(old)
            if i < 0 or (old == "*" and seg[i:i + 2] == "**"):
                continue
            pos = a + i
            found.append((pos, pos + len(old), new, "arith", lines[ln - 1]))
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP:
            old, new = _CMP[type(node.ops[0])]
            a = _offset(lines, node.left.end_lineno, node.left.end_col_offset)
            b = _offset(lines, node.comparators[0].lineno, node.comparators[0].col_offset)
            i = src[a:b].find(old)
            if i >= 0:
                found.append((a + i, a + i + len(old), new, "compare", lines[ln - 1]))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
            a = _offset(lines, node.lineno, node.col_offset)
            b = _offset(lines, node.end_lineno, node.end_col_offset)
            found.append((a, b, repr(node.value + 1), "const", lines[ln - 1]))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            a = _offset(lines, node.lineno, node.col_offset)
            found.append((a, a + 1, "", "negate", lines[ln - 1]))
    out = []
    for a, b, new, op, orig in found:
        line = src.count("\n", 0, a) + 1
        out.append(Mutant(path, line, a, src.count("\n", 0, b) + 1, b, new, op, orig))
    return out


def all_mutants() -> list:
    out = []
    for pkg in PACKAGES:
        for name in sorted(os.listdir(os.path.join(ROOT, pkg))):
            if name.endswith(".py") and name not in SKIP_FILES:
                out.extend(enumerate_mutants(f"{pkg}/{name}"))
    return out


def targets(path: str):
    """(pytest paths, verify family) that judge a mutant of ``path``."""
    pkg, name = path.split("/")[1], os.path.basename(path)[:-3]
    if pkg == "rules":
        fam = name
        tests = [f"tests/rules/test_{name}.py", f"tests/proofs/test_{name}.py", "tests/rules/test_equivalences.py"]
        return [t for t in tests if os.path.exists(os.path.join(ROOT, t))], fam
    if pkg == "ode":
        return ["tests/ode", "tests/proofs/test_ode.py"], "ode"
    return ["tests/scg", "tests/proofs/test_scg.py", "tests/test_readme.py"], "scg"


def _copy_tree(dst, src=ROOT):
    for d in ("refimpl", "proofs", "tests", "examples"):
        shutil.copytree(os.path.join(src, d), os.path.join(dst, d),
                        ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(src, f), dst)


#: the tree the mutants are applied to: a snapshot taken at start (edits made while it runs don't leak in)
_BASE = {"dir": ROOT}


def run_mutant(m: Mutant, timeout: float, verify: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="refimpl-mutant-") as tmp:
        _copy_tree(tmp, _BASE["dir"])
        p = os.path.join(tmp, m.path)
        src = open(p).read()
        open(p, "w").write(src[:m.col] + m.replacement + src[m.end_col:])
        env = dict(os.environ, PYTHONPATH=tmp, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   MKL_NUM_THREADS="1", HYPOTHESIS_PROFILE=os.environ.get("HYPOTHESIS_PROFILE", "ci"))
        tests, fam = targets(m.path)
        t0 = time.perf_counter()
        cmds = [[sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider",
                 "-m", "not slow", *tests]]
        if verify:
            cmds.append([sys.executable, "-m", "refimpl", "verify", "--quiet", "--only", fam])
        for cmd in cmds:
            try:
                r = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return {"killed": True, "by": "timeout " + cmd[2], "seconds": time.perf_counter() - t0}
            if r.returncode != 0:
                return {"killed": True, "by": "pytest" if cmd[2] == "pytest" else "verify",
                        "seconds": time.perf_counter() - t0}
        return {"killed": False, "by": None, "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=60, help="mutants to run (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per test command (then: killed)")
    ap.add_argument("--no-verify", action="store_true", help="judge by the tests only")
    ap.add_argument("--only", default=None, help="substring of the paths to mutate")
    ap.add_argument("--list", action="store_true", help="count the mutation points and exit")
    ap.add_argument("--json", default=None, help="write every result here")
    ap.add_argument("--rerun-survivors", default=None, metavar="FILE.json",
                    help="run again only the mutants that lived in an earlier --json report")
    args = ap.parse_args(argv)
    muts = [m for m in all_mutants() if args.only is None or args.only in m.path]
    if args.list:
        by = {}
        for m in muts:
            by[m.path] = by.get(m.path, 0) + 1
        for k, v in sorted(by.items()):
            print(f"{v:5d}  {k}")
        print(f"{len(muts):5d}  mutation points")
        return 0
    rng = random.Random(args.seed)
    sample = muts if args.sample == 0 or args.sample >= len(muts) else rng.sample(muts, args.sample)
    if args.rerun_survivors:
        # the files may have moved since: find each survivor again by its line and operator
        lived = [r for r in json.load(open(args.rerun_survivors)) if not r["killed"]]
        sample = []
        for r in lived:
            same = [m for m in all_mutants() if (m.path, m.operator, m.original, m.replacement) ==
                    (r["path"], r["operator"], r["original"], r["replacement"])]
            sample.extend(same[:1] if len(same) == 1 else [m for m in same if m.line == r["line"]][:1] or same[:1])
    print(f"mutants: {len(sample)} of {len(muts)} mutation points (seed {args.seed}), {args.jobs} job(s)", flush=True)
    results = []

    def one(m):
        res = run_mutant(m, args.timeout, not args.no_verify)
        res.update(asdict(m))
        print(f"  {'killed' if res['killed'] else 'LIVED '} ({res['by'] or '-'}, {res['seconds']:.0f}s)  {m.describe()}",
              flush=True)
        return res

    with tempfile.TemporaryDirectory(prefix="refimpl-mutants-base-") as base:
        _copy_tree(base)
        _BASE["dir"] = base
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
            results = list(ex.map(one, sample))
    killed = sum(r["killed"] for r in results)
    print(f"\nkill rate: {killed}/{len(results)} = {100 * killed / max(1, len(results)):.1f}%")
    for pkg in PACKAGES:
        rs = [r for r in results if r["path"].startswith(pkg)]
        if rs:
            print(f"  {pkg:<15} {sum(r['killed'] for r in rs)}/{len(rs)}")
    lived = [r for r in results if not r["killed"]]
    if lived:
        print("survivors:")
        for r in lived:
            print(f"  {r['path']}:{r['line']} [{r['operator']}] {r['original'].strip()}  ->  {r['replacement']!r}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
