"""The package face: `import refimpl` is cheap and pulls in no optional dependency (DESIGN.md)."""

import subprocess
import sys


def test_import_pulls_no_optional_dependency():
    code = ("import sys, refimpl as ri; ri.ode.solve; ri.scg; ri.rules.get('bp'); "
            "print(sorted(m for m in ('torch', 'hypothesis', 'dask', 'matplotlib', 'sklearn', 'mnist1d') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_names():
    import refimpl as ri

    for name in ("Network", "Trace", "rules", "losses", "activations", "optim", "metrics", "backend", "ode", "scg"):
        assert hasattr(ri, name), name
    for name in ("BP", "FA", "DFA", "SignSymmetry", "GaitProp", "TPInverse", "TP", "DTP", "DRL", "LDRL",
                 "PEPITA", "Microcircuit", "CorInfoMax", "get"):
        assert hasattr(ri.rules, name), name
