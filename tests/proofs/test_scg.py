"""proofs.scg on the spec's named structures (chain with an upstream cost, fork, diamond), the
strategy's limits, and the condition under which the old optimal-baseline formula is right."""

import numpy as np
import pytest

from proofs import scg as P
from proofs.theorem import RngDrawer
from refimpl import scg

pytest.importorskip("torch")

SPECS = {
    "chain_upstream_cost": {"n0": 2, "nodes": [("categorical", 3, [0]), ("categorical", 4, [1])],
                            "costs": [(1, [0, -1, 1]), (3, [2, 0, -2])], "hidden": 2, "activation": "tanh",
                            "topology": "chain", "seed": 1},
    "fork": {"n0": 2, "nodes": [("categorical", 2, [0]), ("categorical", 3, [1]), ("categorical", 4, [1])],
             "costs": [(1, [0, -1, 1]), (4, [2, 3, 0, -3])], "hidden": 1, "activation": "sigmoid",
             "topology": "fork", "seed": 2},
    "diamond": {"n0": 1, "nodes": [("categorical", 2, [0]), ("bernoulli", 1, [1]), ("categorical", 3, [1]),
                                   ("categorical", 4, [2, 3])],
                "costs": [(1, [0, -1, 1]), (5, [4, 0, -4])], "hidden": 1, "activation": "softplus",
                "topology": "diamond", "seed": 3},
}


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("thm", [t for t in P.THEOREMS if t.draw in (P._draw,)] or P.THEOREMS[:1],
                         ids=lambda t: t.name)
def test_named_structures(name, thm):
    g, th = P.build_scg(SPECS[name])
    inst = P.SCGInstance(g, th, SPECS[name])
    assert thm.check(inst).holds
    assert not thm.control(inst).holds


def test_named_structures_baselines_and_hessians():
    for spec in SPECS.values():
        g, th = P.build_scg(spec)
        inst = P.SCGInstance(g, th, spec, {"baselines": {w: "parent" for w in g.stochastic}, "scale": 1.0,
                                           "offset": 0.3})
        assert P._check_baseline(inst).holds and not P._check_baseline(inst, biased=True).holds
        ev = P._check_causal(inst)
        assert ev.holds, ev


def test_draw_respects_the_outcome_limit():
    for seed in range(30):
        spec = P.draw_scg(RngDrawer(np.random.default_rng(seed)), max_outcomes=36)
        g, th = P.build_scg(spec)
        assert scg.n_outcomes(g) <= 36
        assert len(g.costs) >= 2 and all(g.downstream_costs(w) for w in g.stochastic)


def test_old_baseline_formula_is_right_when_g0_is_s_times_q():
    """theta only in w's distribution, theta-free cost: g_0 = s_w Q_w, both formulas agree."""
    g = scg.Graph()
    g.param("l", (3,))
    g.categorical("w", "l")
    g.input("r", np.array([1.0, -0.5, 2.0]))
    g.deterministic("rw", ["w", "r"], scg.ops.Product())
    g.cost("c", ["rw"])
    th = g.init_theta(0)
    s = scg.enumerate_outcomes(g, th)
    assert abs(P._b_star(s, "w") - P._b_old(s, "w")) < 1e-14
    inst = P.SCGInstance(g, th, {})
    assert P._check_optimal(inst).holds and P._control_optimal(inst).holds  # the control needs theta in a cost
