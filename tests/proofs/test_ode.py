"""Pinned instances and helpers of proofs/ode.py (the registered theorems run in test_theorems.py)."""

import numpy as np
import pytest

import refimpl as ri
from refimpl import ode
from proofs import ode as P
from proofs.theorem import RngDrawer

pytest.importorskip("torch")


def test_oracle_softplus_is_exact_above_torch_threshold():
    # torch's F.softplus returns a for a > 20 (off by 2e-9); the oracle must not (found by the adaptive
    # theorem: pre-activations > 20 inside dopri5 stages).
    net = ri.Network((np.full((4, 2), 0.3), np.full((2, 4), 0.5)), (np.full(4, 20.5), np.zeros(2)),
                     ("softplus", "linear"))
    x0, cot = np.zeros((1, 2)), np.ones((1, 2))
    inst = P.ODEInstance(net, x0, cot, "dopri5", 2, 0.1, False)
    assert P._check_zero_weights(inst).holds


def test_heun_adjoint_error_is_third_order():
    inst = P.draw_ode(RngDrawer(np.random.default_rng(9000)), "numpy", "float64", methods=("heun",), steps=1)
    ev = P._check_order(inst)
    assert ev.holds and abs(ev.order - 3) < 0.1, ev


def test_zero_weight_methods():
    assert P.ZERO_WEIGHT_METHODS == ("midpoint", "dopri5", "dopri8")


def test_without_zero_rule_changes_only_zero_weight_tableaux():
    # for tableaux without live zero weights the control coefficients equal the partner's
    for m in ("rk4", "bosh3", "euler"):
        pf = ode.partner.partner(m).as_floats()
        ctl = P._without_zero_rule(m)
        live = ode.tableaux.get(m).live
        assert all(pf["coupling"][i][j] == ctl["coupling"][i][j] for i in live for j in live)


def test_memory_control_counts_every_tape():
    inst = P.draw_ode(RngDrawer(np.random.default_rng(3)), "numpy", "float64", methods=("dopri5",), steps=4)
    assert P._check_memory(inst).holds
    ev = P._control_memory(inst)
    assert not ev.holds and "symplectic.peak_tapes: 24" in ev.detail


def test_memory_theorem_catches_tapes_that_are_closed_but_still_held():
    # review: the counted peak trusts the methods' close() calls; the weak-reference count does not.
    # A symplectic sweep that calls close() but keeps every tape (a retained graph) must fail the theorem.
    from refimpl.ode.memory import Ledger

    class Hoarding(Ledger):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.kept = []

        def open(self, tape):
            super().open(tape)
            self.kept.append(tape)

    inst = P.draw_ode(RngDrawer(np.random.default_rng(3)), "numpy", "float64", methods=("rk4",), steps=4)
    rep = ode.symplectic.grad_symplectic(inst.field, inst.x0, inst.grid, "rk4", inst.cot, ledger=Hoarding("s")).report
    assert rep.peak_tapes == 1 and rep.peak_held == 16
    ok = ode.symplectic.grad_symplectic(inst.field, inst.x0, inst.grid, "rk4", inst.cot, ledger=Ledger("s")).report
    assert ok.peak_tapes == 1 and ok.peak_held == 1
