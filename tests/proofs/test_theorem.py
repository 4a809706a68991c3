import math

import numpy as np
import pytest

import proofs
from proofs.theorem import Theorem, Evidence, compare, order_check, RngDrawer
from proofs.verify import instance_seed
from refimpl.backend import resolve_namespace


def test_compare_per_array_scaling():
    big, small = np.ones(3) * 1e3, np.ones(3) * 1e-2
    ok = compare([big, small], [big, small * (1 + 1e-12)], "exact_identity", "float64")
    assert ok.holds
    bad = compare([big, small], [big, small * (1 + 1e-6)], "exact_identity", "float64")
    assert not bad.holds and "1" in bad.detail


def test_compare_rejects_nonfinite_and_shape():
    assert not compare([np.array([np.nan])], [np.zeros(1)], "oracle_grad", "float64").holds
    assert not compare([np.zeros(2)], [np.zeros(3)], "oracle_grad", "float64").holds


def test_order_check_accepts_right_order_and_rejects_wrong_one():
    c = np.array([1.0, -2.0, 0.5])
    second = lambda s: c * s**2 + 0.3 * c * s**3
    ev = order_check(second, [1e-2, 5e-3, 2.5e-3, 1.25e-3], 2, scale=1.0)
    assert ev.holds and abs(ev.order - 2) < 0.1
    first = lambda s: c * s
    assert not order_check(first, [1e-2, 5e-3, 2.5e-3, 1.25e-3], 2, scale=1.0).holds
    # right slope but a non-vanishing limit (the rule converges to the wrong thing)
    offset = lambda s: c * s**2 + 1e-7 * c
    assert not order_check(offset, [1e-2, 5e-3, 2.5e-3, 1.25e-3], 2, scale=1.0).holds


def test_order_check_nonfinite_fails():
    assert not order_check(lambda s: np.array([np.nan]), [1e-2, 5e-3, 2.5e-3], 1, scale=1.0).holds


def test_theorem_requires_control_and_family_name():
    ev = lambda i: Evidence(True, 0.0, 1.0)
    with pytest.raises(ValueError, match="control"):
        Theorem("x.y", "s", "src", "c", draw=None, check=ev)
    with pytest.raises(ValueError, match="family.name"):
        Theorem("xy", "s", "src", "c", draw=None, check=ev, control=ev)
    Theorem("x.m", "s", "src", "c", draw=None, check=ev, kind="measurement")


def test_rng_drawer_bounds():
    d = RngDrawer(np.random.default_rng(0))
    vals = {d.integer(1, 3) for _ in range(200)}
    assert vals == {1, 2, 3}
    assert d.choice(["a"]) == "a"
    assert 0 <= d.real(0, 1) <= 1


def test_compare_fails_on_nonfinite_expected_and_missing_arrays():
    # Regression: a NaN on the expected (oracle) side made `diff > tol` False and compare held.
    assert not compare([np.ones(3)], [np.full(3, np.nan)], "oracle_grad", "float64").holds
    assert not compare([np.ones(3)], [np.array([1.0, np.inf, 1.0])], "oracle_grad", "float64").holds
    # Regression: one side None raised AttributeError instead of reporting a mismatch.
    assert not compare([None], [np.ones(3)], "oracle_grad", "float64").holds
    assert not compare([np.ones(3)], [None], "oracle_grad", "float64").holds
    assert compare([None], [None], "oracle_grad", "float64").holds


def test_order_check_rejects_bad_grids_and_scales():
    c = np.array([1.0, -2.0])
    with pytest.raises(ValueError, match="steps"):
        order_check(lambda s: c * s**2, [1e-2, 1e-2, 5e-3], 2, scale=1.0)
    with pytest.raises(ValueError, match="steps"):
        order_check(lambda s: c * s**2, [1e-2, 0.0, 5e-3], 2, scale=1.0)
    with pytest.raises(ValueError, match="scale"):
        order_check(lambda s: c * s**2, [1e-2, 5e-3, 2.5e-3], 2, scale=float("nan"))


def test_order_check_is_not_vacuous():
    # A difference that is identically zero (comparing code with itself) has no order to measure.
    assert not order_check(lambda s: np.zeros(3), [1e-2, 5e-3, 2.5e-3, 1.25e-3], 2, scale=1.0).holds
    # Pure rounding noise neither.
    gen = np.random.default_rng(0)
    assert not order_check(lambda s: 1e-15 * gen.standard_normal(3), [1e-2, 5e-3, 2.5e-3, 1.25e-3], 2,
                           scale=1.0).holds


# --- Theorem.architectures: declared = drawn -----------------------------------------------

#: instances drawn per theorem (the verify default is 5; the conv-or-MLP choice is a variant or a
#: 1/2 choice, so 12 draws miss a kind with probability <= 2^-12 for a plain choice); slow
#: theorems: 2 (their draws are cheap, their checks are not)
DRAWS = 12

#: Theorems whose instance is a seed or a configuration from which the check builds its own
#: networks (dense ones, said in their conditions), and the max-pooling tie maps (conv-only).
BUILDS_ITS_OWN = {"feedback_alignment.fa_aligns_linear_teacher": ("mlp",), "pepita.alignment_sign": ("mlp",),
                  "gaitprop.error_vs_gamma": ("mlp",), "corinfomax.ep_gradient_cosine": ("mlp",),
                  "bp.maxpool_backward_first_argmax": ("conv",)}


def _kinds(thm) -> set:
    xp = resolve_namespace("numpy")
    kinds = set()
    for i in range(2 if thm.slow else DRAWS):
        inst = thm.draw(RngDrawer(np.random.default_rng(instance_seed(thm.name, 0, i)), index=i), xp, "float64")
        net = getattr(inst, "net", None)
        if net is not None:
            kinds.add("mlp" if net.is_dense else "conv")
    return kinds


@pytest.mark.parametrize("thm", proofs.THEOREMS, ids=lambda t: t.name)
def test_declared_architectures_are_the_drawn_ones(thm):
    """Every theorem: the declared network kinds are the drawn ones; a theorem whose instances hold
    no network declares () unless it builds its own (:data:`BUILDS_ITS_OWN`, checked by name)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        kinds = _kinds(thm)
    if thm.name in BUILDS_ITS_OWN:
        assert not kinds and thm.architectures == BUILDS_ITS_OWN[thm.name], thm.name
    else:
        assert kinds == set(thm.architectures), (thm.name, kinds, thm.architectures)
    summary = thm.readme_row[1]
    if set(thm.architectures) == {"mlp", "conv"}:
        assert summary.endswith("[MLP and conv nets]")
    elif thm.architectures == ("conv",):  # conv layers or their pooling
        assert "conv" in summary.lower() or "pool" in summary.lower()
    else:
        assert "[MLP and conv nets]" not in summary


def test_architectures_are_validated():
    ok = dict(name="x.y", statement="s", source="s", conditions="c", draw=lambda *a: None,
              check=lambda i: Evidence(True, 0.0, 0.0), control=lambda i: Evidence(False, 1.0, 0.0))
    assert Theorem(**ok, architectures=()).architectures == ()
    for bad in (("cnn",), ("mlp", "transformer"), ["mlp"], "mlp"):
        with pytest.raises(ValueError, match="architectures: expected"):
            Theorem(**ok, architectures=bad)
