"""Every registered theorem: its check holds and its control fails, on Hypothesis-drawn instances.

The Hypothesis draws go through the same ``draw`` functions as ``refimpl verify``, so a failure
shrinks to a small structure (depth, widths, batch) and prints the drawn values.
"""

import pytest
from hypothesis import given, settings, strategies as st

import proofs
from proofs.theorem import HypothesisDrawer

pytest.importorskip("torch")

FAST = [t for t in proofs.THEOREMS if not t.slow]
SLOW = [t for t in proofs.THEOREMS if t.slow]
#: Other backends, float32 and slow theorems run a fifth of the profile's examples (5 under `ci`'s
#: 25, 200 under `thorough`): a fixed 5 made HYPOTHESIS_PROFILE=thorough scale numpy float64 only.
FEW = max(5, settings.default.max_examples // 5)
SLOW_FEW = max(2, settings.default.max_examples // 12)


def _run(thm, data, backend="numpy", dtype="float64"):
    from refimpl.backend import resolve_namespace

    inst = thm.draw(HypothesisDrawer(data), resolve_namespace(backend), dtype)
    ev = thm.check(inst)
    assert ev.holds, f"{thm.name} failed on {getattr(inst, 'describe', lambda: inst)()}: {ev}"
    if thm.control is not None:
        cev = thm.control(inst)
        assert not cev.holds, f"{thm.name}: control did not fail ({thm.control_breaks}): {cev}"


@pytest.mark.parametrize("thm", FAST, ids=lambda t: t.name)
@given(data=st.data())
def test_theorem_numpy_float64(thm, data):
    _run(thm, data)


@pytest.mark.parametrize("backend", ["array_api_strict", "torch"])
@pytest.mark.parametrize("thm", FAST, ids=lambda t: t.name)
@settings(max_examples=FEW)
@given(data=st.data())
def test_theorem_other_backends(thm, backend, data):
    if backend not in thm.backends:
        pytest.skip(f"{thm.name} does not run on {backend}")
    _run(thm, data, backend)


@pytest.mark.parametrize("thm", [t for t in FAST if "float32" in t.dtypes], ids=lambda t: t.name)
@settings(max_examples=FEW)
@given(data=st.data())
def test_theorem_float32(thm, data):
    _run(thm, data, "numpy", "float32")


@pytest.mark.slow
@pytest.mark.parametrize("thm", SLOW, ids=lambda t: t.name)
@settings(max_examples=SLOW_FEW)
@given(data=st.data())
def test_slow_theorem(thm, data):
    _run(thm, data)


def test_registry_names_are_unique_and_namespaced():
    names = [t.name for t in proofs.THEOREMS]
    assert len(names) == len(set(names))
    assert all(t.name.split(".")[0] in proofs.FAMILIES for t in proofs.THEOREMS)
    assert all(t.control is not None for t in proofs.THEOREMS if t.kind == "theorem")
