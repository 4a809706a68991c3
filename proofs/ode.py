"""The symplectic adjoint method's theorems (Matsubara, Miyatake & Yaguchi, NeurIPS 2021).

* ``ode.partner_symplectic_condition`` (spec P-C3): the partner tableau built from the forward
  tableau satisfies ``b_i A_ij + b_j a_ji - b_i b_j = 0`` exactly (Fractions). Control: the forward
  tableau itself as partner (``A = a``).
* ``ode.partner_matches_published`` (P-C3): the unified construction (stages with ``b_i = 0``
  included) reproduces the hard-coded dopri5 / dopri8 partner tables of the authors' code exactly.
  Control: the construction without the ``b_i = 0`` rule (zero-weight stages dropped).
* ``ode.symplectic_equals_autograd`` (P-C1): symplectic-adjoint ``(dx0, dW, db)`` equals torch
  autograd through the same RK steps (fixed grid; methods of order <= 4), rtol 1e-10. Control: the
  continuous adjoint.
* ``ode.symplectic_equals_autograd_zero_weights`` (P-C1): the same for midpoint, dopri5, dopri8 (live
  stages with ``b_i = 0``). Control: those stages dropped from the adjoint sweep.
* ``ode.symplectic_equals_autograd_adaptive`` (P-C1, adaptive): the same on the recorded grid of
  an adaptive solve. Control: autograd on a uniform grid with the same number of steps.
* ``ode.adjoint_error_order`` (P-C2): continuous adjoint minus the exact discrete gradient
  vanishes as ``h^p`` (slope ``p``, Richardson limit 0) and is not rounding (coarsest error
  > 1e-12). Control: the symplectic adjoint in its place (no ``h``-dependence, ~1e-16).
* ``ode.bilinear_invariant`` (P-C4): ``lambda_n^T delta_n`` (per sample) is constant in ``n`` for the
  partner pair, with ``delta_n`` the tangent of the RK map. Control: ``lambda_n`` of the continuous
  adjoint (the same RK run backward on the adjoint ODE, nonlinear field).
* ``ode.memory_model`` (P-C5): live tapes at the peak are ``N s_eff`` (backprop), ``s_eff`` (ACA) and 1
  (symplectic, continuous adjoint), with the checkpoint / stage-state / f / vjp counts of the formula. Control:
  tapes not freed after their vjp (a retained graph): the symplectic count becomes ``N s_eff``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field
from fractions import Fraction
from typing import Any

import numpy as np

from refimpl import ode
from refimpl.backend import rng as host_rng, from_numpy, to_numpy
from refimpl.ode.field import NetworkField
from refimpl.ode.memory import Ledger
from refimpl.ode.solvers import uniform_grid, solve_adaptive
from . import oracle
from .strategies import network_from_matrices
from .theorem import Theorem, Evidence, compare, order_check, flat
from .tolerances import tolerance

__all__ = ["THEOREMS", "ODEInstance", "draw_ode", "PUBLISHED"]

SOURCE = ("Matsubara, Miyatake & Yaguchi, 'Symplectic adjoint method for exact gradient of neural ODE with "
          "minimal memory', NeurIPS 2021 (arXiv 2102.09750); Sanz-Serna, SIAM Review 58(1) 2016")

#: Step counts per method for the exactness and invariant theorems: coarse enough that the
#: continuous adjoint (the control) is off by far more than the 1e-10 tolerance (its error is
#: O(h^p); measured >= 1e-7 on these ranges for the fields drawn below).
N_RANGE = {"euler": (1, 32), "midpoint": (1, 16), "heun": (1, 16), "fehlberg2": (1, 16), "bosh3": (1, 10),
           "rk4": (1, 5), "rk38": (1, 5), "dopri5": (1, 4), "dopri8": (1, 2)}

#: Coarser ranges for the invariant theorem, whose control (drift of lambda_n . delta_n under the
#: continuous adjoint, relative to max_n sum |lambda_n delta_n|) is smaller than the gradient error.
INVARIANT_N_RANGE = {"euler": (1, 20), "midpoint": (1, 10), "heun": (1, 10), "fehlberg2": (1, 10),
                     "bosh3": (1, 6), "rk4": (1, 4), "rk38": (1, 4)}

#: Geometric step-count grids for the order check of the continuous adjoint's error: fine enough to be
#: in the asymptotic regime (five points: the Richardson model absorbs three higher-order terms),
#: coarse enough that the finest error stays >= 1e4 above rounding. dopri5/dopri8 are left out: on
#: these fields their error is already near rounding at h = 1/8 (measured), so neither the slope nor
#: the "not exact" floor can be judged reliably.
ORDER_STEPS = {"euler": (16, 32, 64, 128), "midpoint": (8, 16, 32, 64), "heun": (8, 16, 32, 64),
               "fehlberg2": (8, 16, 32, 64), "bosh3": (8, 16, 32, 64), "rk4": (8, 16, 32, 64),
               "rk38": (8, 16, 32, 64)}

#: Slope tolerance: the coarse points carry an h^(p+1) term; on strongly nonlinear draws it shifts
#: the fitted slope by up to +0.33 (measured, rk38), so +-0.5 (still separating p from p +- 1).
ORDER_SLOPE_TOL = 0.5
#: The Richardson limit must lie 1e3 below the finest measured error (or within the exact-identity
#: tolerance): four points model the error up to h^(p+2), and the neglected h^(p+3) term leaks into
#: the extrapolated constant at ~1e-3..1e-5 of the finest error on these grids (euler's errors are
#: ~1e-2, so an absolute 1e-10 would demand 8 orders of extrapolation accuracy). A plateau (an O(1)
#: bias of the continuous adjoint) would sit at the level of the finest error and fail.
ORDER_LIMIT_FRACTION = 1e-3

#: Observed order of (continuous adjoint - discrete gradient). It is the method's order p except for
#: heun (explicit trapezoid), where the leading error terms of the two gradients coincide and the
#: difference is O(h^3) on every field tried (measured slope 3.00 +- 0.01 on 8 of 8 random fields).
#: Sketch (review): one step of the exact discrete adjoint is
#:   lambda_n = lambda' + h/2 [J(x_n)^T (lambda' + h J(X_2)^T lambda') + J(X_2)^T lambda'],  X_2 = x_n + h f(x_n),
#: and one backward Heun step of the continuous adjoint is the same expression with x_n -> X~_2 =
#: x_{n+1} - h f(x_{n+1}) and X_2 -> x_{n+1}. Both substitutions move the evaluation point by O(h^2)
#: (X_2 - x_{n+1} = -h^2/2 J f + O(h^3), x_n - X~_2 = +h^2/2 J f + O(h^3)), with opposite signs, so
#: the O(h^3) local terms cancel and the local difference is O(h^4): global O(h^3).
ADJOINT_ORDER = {"heun": 3}


@dataclass(frozen=True)
class ODEInstance:
    """A vector field (network), initial states, a cotangent ``dL/dx(T)``, a method and a grid."""

    net: Any
    x0: Any
    cot: Any
    method: str
    steps: int
    T: float
    time_dependent: bool
    params: dict = dc_field(default_factory=dict)

    @property
    def field(self) -> NetworkField:
        return NetworkField(self.net, self.time_dependent)

    @property
    def grid(self):
        return uniform_grid(0.0, self.T, self.steps)

    def describe(self) -> str:
        return (f"method={self.method} N={self.steps} T={self.T:.3g} sizes={list(self.net.sizes)} "
                f"acts={list(self.net.activations)} B={self.x0.shape[0]} time_dependent={self.time_dependent} "
                f"{ {k: v for k, v in self.params.items() if k != 'grid'} or ''}").strip()


def draw_ode(d, xp, dtype, methods=ode.tableaux.NAMES, steps=None, dims=(1, 4)) -> ODEInstance:
    """A nonlinear MLP field ``d -> hidden -> d`` (tanh or softplus hidden layers, weights of spectral
    norm in [1.2, 2], biases 0.3 N(0, 1)), a batch of initial states and a cotangent, all built from
    one drawn seed. (sigmoid is left out of the draw: with slope <= 1/4 it makes fields so nearly
    linear that the controls can fall under the tolerance; the theorems themselves hold for it.)"""
    method = d.variant("method", methods)
    dim = d.integer(*dims)
    td = d.boolean()
    depth = d.integer(1, 3)
    hidden = [d.integer(2, 8) for _ in range(depth - 1)]
    acts = [d.choice(("tanh", "softplus")) for _ in range(depth - 1)]
    # depth 1 needs a nonlinear output (an affine field makes the continuous adjoint's dL/dx0 exact)
    acts.append("tanh" if depth == 1 else "linear")
    B = d.integer(1, 4)
    N = steps if steps is not None else d.integer(*N_RANGE[method])
    seed = d.seed()
    gen = host_rng(seed)
    sizes = [dim + int(td)] + hidden + [dim]
    # Every weight matrix has spectral norm in [1.2, 2] so that the field is strongly nonlinear on the
    # unit time interval: the controls (continuous adjoint) are then off by far more than rounding.
    Ws = []
    for i in range(depth):
        G = gen.standard_normal((sizes[i + 1], sizes[i]))
        Ws.append(gen.uniform(1.2, 2.0) * G / np.linalg.norm(G, 2))
    bs = [0.3 * gen.standard_normal(sizes[i + 1]) for i in range(depth)]
    net = network_from_matrices(Ws, bs, acts, xp, dtype)
    x0 = from_numpy(gen.standard_normal((B, dim)), net.xp, net.dtype)
    cot = from_numpy(gen.standard_normal((B, dim)), net.xp, net.dtype)
    return ODEInstance(net, x0, cot, method, N, 1.0, td, {"seed": seed})


def _labels(L):
    return ["dx0"] + [f"dW[{i}]" for i in range(L)] + [f"db[{i}]" for i in range(L)]


def _oracle(inst: ODEInstance, grid):
    fl = ode.tableaux.get(inst.method).as_floats()
    dx0, dW, db, _ = oracle.rk_unrolled_gradients(inst.net, inst.x0, grid, fl["a"], fl["b"], fl["c"],
                                                  inst.cot, inst.time_dependent)
    return [dx0] + dW + db


def _grads(inst: ODEInstance, mode: str, grid=None, **kw):
    g = ode.gradients(inst.net, inst.x0, inst.T, list(grid) if grid is not None else inst.steps, inst.method,
                      inst.cot, mode, time_dependent=inst.time_dependent, **kw)
    return [g[0]] + list(g[1]) + list(g[2])


# --- P-C3: partner tableaux ----------------------------------------------------------------------

def _draw_method(d, xp, dtype):
    return d.variant("method", ode.tableaux.NAMES)


def _residual_evidence(method, A) -> Evidence:
    R = ode.partner.symplectic_residual(method, A)
    entries = [v for row in R if row is not None for v in row]
    worst = max((abs(v) for v in entries), default=Fraction(0))
    nz = sum(1 for v in entries if v != 0)
    return Evidence(nz == 0, float(worst), 0.0,
                    f"{method}: {nz} non-zero residual entries of {len(entries)} (exact rational arithmetic)")


def _check_symplectic_condition(method):
    return _residual_evidence(method, None)


def _control_symplectic_condition(method):
    return _residual_evidence(method, ode.partner.naive_partner_A(method))


F = Fraction
#: Partner tables hard-coded in the authors' code (tksmatsubara/symplectic-adjoint-method,
#: ``torch_symplectic_adjoint/_impl/integrators/dopri5.py`` and ``dopri8.py``, ``_NEU`` / ``_BAR``), as
#: exact rationals. Layout (``Partner.neu_bar``): row r = 1..s-1 is stage i = s - r, entries j = s..i+1.
#: dopri8: every row of both tables (the code writes them as ratios of integers, so they are exact);
#: the 14th (FSAL) stage of its forward tableau is not part of the partner.
PUBLISHED = {
    "dopri5": {
        "stages": 6,
        "neu": {0: [F(1, 9)], 1: [F(7, 125), F(18, 125)], 2: [F(11683, 4500), F(-7049, 1000), F(371, 72)],
                3: [F(-355, 252), F(1585, 424), F(-175, 72), F(75, 742)],
                4: [F(9017, 2205), F(-19372, 1855), F(440, 63), F(960, 2597), F(0)]},
        "bar": {0: [F(0)], 1: [F(0)] * 2, 2: [F(0)] * 3, 3: [F(0)] * 4, 4: [F(0)] * 4 + [F(384, 175)]},
        "weights": [F(11, 84), F(-2187, 6784), F(125, 192), F(500, 1113), F(0), F(35, 384)],
        "bar_weights": [0, 0, 0, 0, 1, 0],
    },
    "dopri8": {
        "stages": 13,
        "neu": {
            1: [F(186761549042728961, 671826677798686320), F(-13044081466939006446902177, 64368506637923003453177865)],
            0: [F(0)],
            2: [F(-61598110345541547, 694695416270123300), F(-2411658090954153134620288897, 3049517975992625372695427340),
                F(139791111856574170070071187, 113697363579865834448468943)],
            3: [F(-5398496251982342741, 8243652038824969600), F(-21987369510455401648986461, 13859308812032820525614420),
                F(7404639072441659110823711607, 2659655553258596191827979360),
                F(-129173231872577966433350661, 1200624377407681538943222730)],
            4: [F(-2624711169979735153, 3471443898324056490), F(-1103766288737564164606481668, 529766253893973667150089675),
                F(484643324827250007758701216, 145149230435826152564020685),
                F(444013336603854332148668, 1680536301344969541794915),
                F(-133108603556005756186879120, 582385289742846193717972331)],
            5: [F(2826519938428700025, 224059299485069936), F(-2299788906764250379099931453, 414385774371171866816668530),
                F(-1466088042221472999353138649, 138591599461195804542993080),
                F(1155255452519538374070146179, 146965131163149886257507459),
                F(-208260358115912280156118040, 69717157530267056614114547),
                F(-15350595203032274860033469, 30233839358800946913658884)],
            6: [F(-697354273247171275, 216646211903911088), F(-13248269604039710557523155, 1011756231706450102576497),
                F(1307938852659315456446042625, 75701730282467701544928362),
                F(2110789618639142420377905, 6693403120976785085526509),
                F(111640010912416803759032250, 58768230041291697523577023),
                F(-81820077966510204726946750, 32742243326854671287500401),
                F(-59816810598644424865631, 1078900338498465192000000)],
            7: [F(-411421997, 2172175220), F(126306049862531543, 1219172756446958445),
                F(155860542037965285, 1075947339043359601), F(-78353834362448272, 407216207049202699),
                F(439407265640914250, 3587835516948870229), F(12791706037063305, 505392009632873764),
                F(-1737001108102087, 284575399125000000), F(-177715479, 21365556500)],
            8: [F(-5068492393, 1738960268), F(1684111556215992233, 1481383344584234970),
                F(335796475747222823, 127321123622064708), F(-28663960366160743005, 17576873860937697554),
                F(90360402694348676, 187517957099419867), F(8638885590319325, 31661039239888821),
                F(14117481343952646, 525545004018380657), F(-177715479, 17092445200), F(0)],
            9: [F(0)] * 10, 10: [F(0)] * 11,
            11: [F(109618342708096, 22257476734651), F(-1831908834609070381080704, 1240769074036022749006545),
                 F(-2928339617258372943399552, 635845511609274864902237),
                 F(62786907708375146413148928, 21617938033500062638399163),
                 F(-729103746047357884016640, 579818609677755331055003),
                 F(753970274215206566084160, 2644631450324027678974813),
                 F(52761154624575874710912, 192110595126172582762529), F(-3726250016794416, 74808563662120375),
                 F(0), F(0), F(0), F(0)]},
        "bar": {**{r: [F(0)] * (r + 1) for r in range(8)}, 8: [F(0)] * 8 + [F(75, 64)], 9: [F(0)] * 8 + [F(-75, 64), F(3, 32)],
                10: [F(0)] * 10 + [F(1, 16)],
                11: [F(0)] * 8 + [F(104837520, 14005451), F(10483752, 14005451), F(6989168, 14005451),
                                  F(55913344, 42016353)]},
        # the code's c_sol of the partner tables (stages in reverse order): b_i, with the four b_i = 0
        # stages carrying weight 1 in the "bar" table
        "weights": [F(1, 4), F(-528747749, 2220607170), F(118820643, 751138087), F(760417239, 1151165299),
                    F(-1041891430, 1371343529), F(561292985, 797845732), F(181606767, 758867731),
                    F(-59238493, 1068277825), F(0), F(0), F(0), F(0), F(14005451, 335480064)],
        "bar_weights": [0] * 8 + [1, 1, 1, 1, 0],
    },
}


def _neu_bar_without_zero_rule(method, stages):
    """Control: couplings ``b_j a_ji / b_i`` only where ``b_i, b_j != 0``, zero-weight stages dropped."""
    tab = ode.tableaux.get(method)
    a, b = tab.a, tab.b
    neu, bar = [], []
    for r in range(1, stages):
        i = stages - r - 1
        neu.append([b[j] * a[j][i] / b[i] if (b[i] != 0 and b[j] != 0) else F(0) for j in range(stages - 1, i, -1)])
        bar.append([F(0) for _ in range(stages - 1, i, -1)])
    return neu, bar


def _published_evidence(method, neu, bar) -> Evidence:
    pub = PUBLISHED[method]
    bad, total = [], 0
    for key, table in (("neu", neu), ("bar", bar)):
        for r, row in pub[key].items():
            total += len(row)
            for k, (mine, theirs) in enumerate(zip(table[r], row)):
                if mine != theirs:
                    bad.append(f"{key}[{r}][{k}]: {mine} vs published {theirs}")
            if len(table[r]) != len(row):
                bad.append(f"{key}[{r}]: length {len(table[r])} vs {len(row)}")
    return Evidence(not bad, float(len(bad)), 0.0,
                    f"{method}: {len(bad)} of {total} published entries differ" + (f"; first: {bad[0]}" if bad else ""))


def _draw_published(d, xp, dtype):
    return d.variant("method", tuple(PUBLISHED))


def _check_published(method):
    p = ode.partner.partner(method)
    neu, bar = p.neu_bar(PUBLISHED[method]["stages"])
    ev = _published_evidence(method, neu, bar)
    pw = PUBLISHED[method]["weights"]
    if pw is not None:  # the code's c_sol tables: weights in reverse stage order, split like the couplings
        s = PUBLISHED[method]["stages"]
        b = p.tableau.b
        mine = [p.weight[i] if b[i] != 0 else F(0) for i in reversed(range(s))]
        mine_bar = [p.weight[i] if b[i] == 0 else F(0) for i in reversed(range(s))]
        if mine != pw or mine_bar != [F(v) for v in PUBLISHED[method]["bar_weights"]]:
            return Evidence(False, ev.error + 1, 0.0, ev.detail + "; weights differ")
    return ev


def _control_published(method):
    neu, bar = _neu_bar_without_zero_rule(method, PUBLISHED[method]["stages"])
    return _published_evidence(method, neu, bar)


# --- P-C1: exactness against autograd --------------------------------------------------------------

#: Methods of P-C1 / P-C4 whose control is the continuous adjoint: orders <= 4. On these unit-horizon
#: fields dopri5 and dopri8 are so accurate at h <= 1 that their continuous adjoint can come within
#: 1e-12 of the exact gradient (measured), and longer steps make the check itself ill-conditioned
#: (rounding ~1e-10 at h = 1.5..3). Both are checked by ``_zero_weights`` (control: the b_i = 0 rule
#: dropped) and ``_adaptive`` (control: another grid) instead.
CONTINUOUS_CONTROL_METHODS = ("euler", "midpoint", "heun", "fehlberg2", "bosh3", "rk4", "rk38")
#: Methods with a live stage of weight b_i = 0 (midpoint: b_1; dopri5: b_2; dopri8: b_2..b_5).
ZERO_WEIGHT_METHODS = tuple(m for m in ode.tableaux.NAMES
                            if any(ode.tableaux.get(m).b[i] == 0 for i in ode.tableaux.get(m).live))


def _draw_fixed(d, xp, dtype):
    return draw_ode(d, xp, dtype, methods=CONTINUOUS_CONTROL_METHODS)


def _draw_invariant(d, xp, dtype):
    method = d.variant("method", CONTINUOUS_CONTROL_METHODS)
    return draw_ode(d, xp, dtype, methods=(method,), steps=d.integer(*INVARIANT_N_RANGE[method]))


def _draw_zero_weights(d, xp, dtype):
    return draw_ode(d, xp, dtype, methods=ZERO_WEIGHT_METHODS)


def _without_zero_rule(method) -> dict:
    """Partner coefficients with the b_i = 0 rule dropped: couplings b_j a_ji / b_i only where
    b_i, b_j != 0, zero-weight stages get weight 0 (they contribute nothing)."""
    tab = ode.tableaux.get(method)
    a, b, s = tab.a, tab.b, tab.stages
    coupling = tuple(tuple(float(b[j] * a[j][i] / b[i]) if (j > i and b[i] != 0 and b[j] != 0) else 0.0
                           for j in range(s)) for i in range(s))
    return {"weight": tuple(float(v) for v in b), "carries": tuple(v != 0 for v in b), "coupling": coupling}


def _check_zero_weights(inst):
    return _vs_oracle(inst, "symplectic")


def _control_zero_weights(inst):
    g = ode.symplectic.grad_symplectic(inst.field, inst.x0, inst.grid, inst.method, inst.cot,
                                       coefficients=_without_zero_rule(inst.method))
    actual = [g.dx0] + list(g.dW) + list(g.db)
    ev = compare(actual, _oracle(inst, inst.grid), "oracle_grad", inst.net.dtype, labels=_labels(inst.net.depth))
    return Evidence(ev.holds, ev.error, ev.tolerance, f"zero-weight stages dropped: {ev.detail}")


def _vs_oracle(inst, mode, grid=None, oracle_grid=None, **kw):
    grid_used = grid if grid is not None else inst.grid
    actual = _grads(inst, mode, grid, **kw)
    expected = _oracle(inst, oracle_grid if oracle_grid is not None else grid_used)
    ev = compare(actual, expected, "oracle_grad", inst.net.dtype, labels=_labels(inst.net.depth))
    return Evidence(ev.holds, ev.error, ev.tolerance, f"{mode} vs autograd, N={len(grid_used) - 1}: {ev.detail}")


def _check_fixed(inst):
    return _vs_oracle(inst, "symplectic")


def _control_fixed(inst):
    return _vs_oracle(inst, "adjoint")


#: dopri8 is left out: two or three adaptive steps already make its solution so accurate that the
#: control (another grid with as many steps) changes the gradient by only ~1e-10 (measured); its
#: per-step exactness is checked at fixed steps by ``_zero_weights``, and a recorded grid is a
#: fixed grid.
ADAPTIVE_METHODS = ("heun", "bosh3", "fehlberg2", "dopri5")


def _draw_adaptive(d, xp, dtype):
    inst = draw_ode(d, xp, dtype, methods=ADAPTIVE_METHODS, steps=1)
    rtol = 10.0 ** d.real(-4.0, -2.0)
    T = d.real(1.0, 2.0)
    traj = solve_adaptive(inst.field, inst.x0, 0.0, T, inst.method, rtol=rtol, atol=rtol * 1e-2)
    params = dict(inst.params, rtol=rtol, grid=tuple(traj.ts))
    return ODEInstance(inst.net, inst.x0, inst.cot, inst.method, traj.steps, T, inst.time_dependent, params)


def _check_adaptive(inst):
    grid = inst.params["grid"]
    # gradients() with steps=None re-runs the adaptive solve; its grid must be the recorded one
    traj = ode.solve(inst.net, inst.x0, inst.T, None, inst.method, rtol=inst.params["rtol"],
                     atol=inst.params["rtol"] * 1e-2, time_dependent=inst.time_dependent)
    if tuple(traj.ts) != tuple(grid):
        return Evidence(False, math.inf, 0.0, "adaptive grid is not reproducible")
    actual = ode.gradients(inst.net, inst.x0, inst.T, None, inst.method, inst.cot, "symplectic",
                           time_dependent=inst.time_dependent, rtol=inst.params["rtol"],
                           atol=inst.params["rtol"] * 1e-2)
    actual = [actual[0]] + list(actual[1]) + list(actual[2])
    ev = compare(actual, _oracle(inst, grid), "oracle_grad", inst.net.dtype, labels=_labels(inst.net.depth))
    return Evidence(ev.holds, ev.error, ev.tolerance, f"recorded grid of {len(grid) - 1} steps: {ev.detail}")


def _control_adaptive(inst):
    grid = inst.params["grid"]
    uni = uniform_grid(0.0, inst.T, len(grid) - 1)
    return _vs_oracle(inst, "symplectic", grid=grid, oracle_grid=uni)


# --- P-C2: the continuous adjoint's error is O(h^p) -------------------------------------------------

#: "Not exact" must be distinguishable from rounding: at the coarsest grid the continuous adjoint must
#: be off by more than 1e-12 relative, 5e3 x the rounding level of an exact method (symplectic minus
#: backprop differ by <= 2e-16 relative, measured on every draw of this theorem). Weakly nonlinear
#: draws reach 6e-12 at h = 1/8 with a clean slope (rk4, d = 2), hence not higher.
INEXACT_FLOOR = 1e-12


def _draw_order(d, xp, dtype):
    # d >= 2: for a scalar field the elementary differentials of different trees coincide and leading
    # error terms can cancel (rk4 on f(x) = tanh(w x + b): measured slope 5.3 instead of 4).
    return draw_ode(d, xp, dtype, methods=tuple(ORDER_STEPS), steps=1, dims=(2, 4))


def _order_evidence(inst, mode):
    tab = ode.tableaux.get(inst.method)
    Ns = ORDER_STEPS[inst.method]
    ref = {N: flat(_grads_n(inst, "backprop", N)) for N in Ns}
    scale = float(np.linalg.norm(ref[Ns[-1]]))
    diff = lambda h: flat(_grads_n(inst, mode, int(round(inst.T / h)))) - ref[int(round(inst.T / h))]
    steps = [inst.T / N for N in Ns]
    p = ADJOINT_ORDER.get(inst.method, tab.order)
    cache = {h: diff(h) for h in steps}
    errs = [float(np.linalg.norm(cache[h])) / scale for h in steps]
    rtol, atol = tolerance("exact_identity", inst.net.dtype)
    factor = max(1.0, ORDER_LIMIT_FRACTION * errs[-1] / (rtol + atol))
    ev = order_check(lambda h: cache[h], steps, p, scale=scale, dtype=inst.net.dtype, slope_tol=ORDER_SLOPE_TOL,
                     limit_factor=factor)
    coarse = errs[0]
    holds = ev.holds and coarse > INEXACT_FLOOR
    return Evidence(holds, ev.error, ev.tolerance,
                    f"{mode} - backprop, {inst.method} (order {p}): {ev.detail}; coarsest error {coarse:.2e} "
                    f"(must exceed {INEXACT_FLOOR:.0e})", ev.order, ev.expected_order)


def _grads_n(inst, mode, N):
    g = ode.gradients(inst.net, inst.x0, inst.T, N, inst.method, inst.cot, mode, time_dependent=inst.time_dependent)
    return [g[0]] + list(g[1]) + list(g[2])


def _check_order(inst):
    return _order_evidence(inst, "adjoint")


def _control_order(inst):
    return _order_evidence(inst, "symplectic")


# --- P-C4: the bilinear invariant ------------------------------------------------------------------

def _invariant_evidence(inst, mode):
    xp = inst.net.xp
    gen = host_rng(inst.params["seed"] + 1)
    delta0 = from_numpy(gen.standard_normal(tuple(inst.x0.shape)), xp, inst.net.dtype)
    _, deltas = ode.tangent.tangent(inst.field, inst.x0, inst.grid, inst.method, delta0)
    rec = ode.gradients_report(inst.net, inst.x0, inst.T, inst.steps, inst.method, inst.cot, mode,
                               time_dependent=inst.time_dependent, record=True)
    I = np.stack([np.sum(to_numpy(l) * to_numpy(dl), axis=1) for l, dl in zip(rec.lambdas, deltas)])
    S = np.stack([np.sum(np.abs(to_numpy(l) * to_numpy(dl)), axis=1) for l, dl in zip(rec.lambdas, deltas)])
    rtol, atol = tolerance("exact_identity", inst.net.dtype)
    drift = np.max(np.abs(I - I[-1][None, :]), axis=0)      # per sample
    scale = np.max(S, axis=0)
    ok = bool(np.all(drift <= atol + rtol * scale))
    rel = float(np.max(drift / np.maximum(scale, 1e-300)))
    return Evidence(ok, rel, rtol, f"{mode}: max_n |lambda_n.delta_n - lambda_N.delta_N| / max_n sum|lambda delta| "
                                   f"= {rel:.2e} over {inst.steps} steps")


def _check_invariant(inst):
    return _invariant_evidence(inst, "symplectic")


def _control_invariant(inst):
    return _invariant_evidence(inst, "adjoint")


# --- P-C5: memory model ----------------------------------------------------------------------------

def _draw_memory(d, xp, dtype):
    method = d.variant("method", ode.tableaux.NAMES)
    return draw_ode(d, xp, dtype, methods=(method,), steps=d.integer(2, 12))


def _memory_evidence(inst, release: bool):
    tab = ode.tableaux.get(inst.method)
    N, s = inst.steps, tab.effective_stages
    fld, grid = inst.field, inst.grid
    bp = ode.backprop.grad_backprop(fld, inst.x0, grid, tab, inst.cot, ledger=Ledger("backprop")).report
    sy = ode.symplectic.grad_symplectic(fld, inst.x0, grid, tab, inst.cot,
                                        ledger=Ledger("symplectic", release=release)).report
    ad = ode.adjoint.grad_adjoint(fld, inst.x0, grid, tab, inst.cot, ledger=Ledger("adjoint")).report
    ac = ode.checkpoint.grad_checkpoint(fld, inst.x0, grid, tab, inst.cot, ledger=Ledger("checkpoint")).report
    one_tape = fld.tape(inst.x0, 0.0).nbytes
    expected = {
        "backprop.peak_tapes": (bp.peak_tapes, N * s), "backprop.peak_bytes": (bp.peak_tape_bytes, N * s * one_tape),
        "backprop.checkpoints": (bp.checkpoints, 0), "backprop.f": (bp.f_evals, N * s), "backprop.vjp": (bp.vjp_evals, N * s),
        "symplectic.peak_tapes": (sy.peak_tapes, 1), "symplectic.peak_bytes": (sy.peak_tape_bytes, one_tape),
        "symplectic.checkpoints": (sy.checkpoints, N + 1), "symplectic.stage_states": (sy.stage_states, s),
        "symplectic.f": (sy.f_evals, 3 * N * s - N), "symplectic.vjp": (sy.vjp_evals, N * s),
        "adjoint.peak_tapes": (ad.peak_tapes, 1), "adjoint.checkpoints": (ad.checkpoints, 0),
        "adjoint.f": (ad.f_evals, 2 * N * s), "adjoint.vjp": (ad.vjp_evals, N * s),
        "checkpoint.peak_tapes": (ac.peak_tapes, s), "checkpoint.peak_bytes": (ac.peak_tape_bytes, s * one_tape),
        "checkpoint.checkpoints": (ac.checkpoints, N + 1), "checkpoint.f": (ac.f_evals, 2 * N * s),
        "checkpoint.vjp": (ac.vjp_evals, N * s),
        # the same peaks as seen by the interpreter (weak references to the Tape objects): a method that
        # calls close() but still holds its tapes (a retained graph) fails here, not in its own count
        "backprop.held": (bp.peak_held, N * s), "symplectic.held": (sy.peak_held, 1),
        "adjoint.held": (ad.peak_held, 1), "checkpoint.held": (ac.peak_held, s),
    }
    bad = [f"{k}: {got} (formula {want})" for k, (got, want) in expected.items() if got != want]
    return Evidence(not bad, float(len(bad)), 0.0,
                    f"N={N} s_eff={s}: " + ("all counts match" if not bad else "; ".join(bad)))


def _check_memory(inst):
    return _memory_evidence(inst, True)


def _control_memory(inst):
    return _memory_evidence(inst, False)


NUMPY_ONLY = ("numpy",)

THEOREMS = (
    Theorem(
        name="ode.partner_symplectic_condition",
        architectures=(), variants=9,
        table=("the partner `A_ij = b_j(1 − a_ji/b_i)` of every tableau (euler … dopri8) satisfies `b_i A_ij + b_j a_ji − b_i b_j = 0`",
               "exact, rational arithmetic",
               "`A = a` (forward tableau as its own adjoint)"),
        statement="the partner A_ij = b_j (1 - a_ji / b_i) of every tableau satisfies b_i A_ij + b_j a_ji - b_i b_j = 0 "
                  "for all i, j with b_i != 0, exactly in rational arithmetic",
        source=SOURCE + "; spec P-C3",
        conditions="A is the partner of the forward tableau (B = b, C = c)",
        draw=_draw_method, check=_check_symplectic_condition, control=_control_symplectic_condition,
        control_breaks="the forward tableau reused as its own adjoint (A = a)",
        dtypes=("float64",), backends=NUMPY_ONLY,
    ),
    Theorem(
        name="ode.partner_matches_published",
        architectures=(), variants=2,
        table=("the unified partner (zero-weight stages kept) reproduces the authors' hard-coded dopri5 / dopri8 `_NEU`/`_BAR` tables entry by entry",
               "exact, rational arithmetic",
               "zero-weight stages dropped"),
        statement="the unified partner construction (w_i = b_i or 1, G_ij = w_j a_ji / w_i) reproduces the authors' "
                  "hard-coded dopri5 and dopri8 partner tables (_NEU, _BAR) entry by entry, exactly",
        source=SOURCE + "; code: tksmatsubara/symplectic-adjoint-method integrators/dopri5.py, dopri8.py",
        conditions="stages with b_i = 0 are kept (coefficient b_j a_ji for b_i = 0, a_ji / b_i for b_j = 0)",
        draw=_draw_published, check=_check_published, control=_control_published,
        control_breaks="zero-weight stages dropped (only the b_i, b_j != 0 rule)",
        dtypes=("float64",), backends=NUMPY_ONLY,
    ),
    Theorem(
        name="ode.symplectic_equals_autograd", variants=7,
        table=("symplectic-adjoint `(dL/dx0, dL/dW, dL/db)` = torch autograd through the same RK steps (euler, midpoint, heun, fehlberg2, bosh3, rk4, rk38; autonomous and time-dependent fields)",
               "exact, float64 rtol 1e-10",
               "continuous adjoint"),
        statement="symplectic-adjoint (dL/dx0, dL/dW, dL/db) equal torch autograd through the same RK steps "
                  "(fixed grid; euler, midpoint, heun, fehlberg2, bosh3, rk4, rk38; autonomous and time-dependent fields) "
                  "to rounding",
        source=SOURCE + "; spec P-C1",
        conditions="partner tableau of the forward tableau; same grid; gradient of the discretised map",
        draw=_draw_fixed, check=_check_fixed, control=_control_fixed,
        control_breaks="the continuous adjoint (optimise-then-discretise) in place of the symplectic adjoint",
        dtypes=("float64",),
    ),
    Theorem(
        name="ode.symplectic_equals_autograd_zero_weights", variants=3,
        table=("the same for tableaux with live `b_i = 0` stages (midpoint, dopri5, dopri8)",
               "exact, float64 rtol 1e-10",
               "zero-weight stages dropped from the adjoint sweep"),
        statement="for tableaux with live zero-weight stages (midpoint, dopri5, dopri8), the symplectic adjoint with "
                  "the unified partner (w_i = 1, no lambda_{n+1} term where b_i = 0) equals autograd through the "
                  "same RK steps to rounding",
        source=SOURCE + "; spec §1.2 (unified form) and P-C1",
        conditions="stages with b_i = 0 are kept in the adjoint sweep",
        draw=_draw_zero_weights, check=_check_zero_weights, control=_control_zero_weights,
        control_breaks="zero-weight stages dropped from the adjoint sweep (only the b_i != 0 partner rule)",
        dtypes=("float64",),
    ),
    Theorem(
        name="ode.symplectic_equals_autograd_adaptive", variants=4,
        table=("the same on the recorded grid of an adaptive solve (heun, bosh3, fehlberg2, dopri5)",
               "exact, float64 rtol 1e-10",
               "autograd on a uniform grid with as many steps"),
        statement="on the recorded grid of an adaptive solve (heun, bosh3, fehlberg2, dopri5; rtol 1e-4..1e-2), the symplectic "
                  "adjoint equals autograd through the same RK steps with the step sizes held constant",
        source=SOURCE + "; spec P-C1 (adaptive)",
        conditions="the backward pass uses the accepted grid of the forward pass",
        draw=_draw_adaptive, check=_check_adaptive, control=_control_adaptive,
        control_breaks="autograd on a uniform grid with the same number of steps (not the recorded grid)",
        dtypes=("float64",),
    ),
    Theorem(
        name="ode.adjoint_error_order", variants=7,
        table=("continuous adjoint − exact discrete gradient = O(h^p) (heun: O(h³), measured)",
               "order p + Richardson limit, coarsest error > 1e-12 (fields of dimension ≥ 2)",
               "symplectic adjoint in its place (no h-dependence)"),
        statement="the continuous adjoint differs from the exact discrete gradient by O(h^p) (p the method's order): "
                  "slope p on a geometric grid, Richardson limit 0, coarsest error > 1e-12",
        source=SOURCE + "; spec P-C2",
        conditions="nonlinear field; continuous adjoint solved backward with the same tableau on the reversed grid",
        draw=_draw_order, check=_check_order, control=_control_order,
        control_breaks="the symplectic adjoint in place of the continuous adjoint (exact: no h^p term)",
        dtypes=("float64",), backends=("numpy", "torch"),
    ),
    Theorem(
        name="ode.bilinear_invariant",
        table=("`λ_n·δ_n` (per sample) is constant along the grid for the partner pair (`δ_n` the RK tangent)",
               "exact, float64 rtol 1e-10",
               "`λ_n` of the continuous adjoint"),
        statement="lambda_n . delta_n (per sample) is constant over the grid for the partner pair: delta_n the tangent "
                  "of the RK map, lambda_n the symplectic adjoint",
        source=SOURCE + "; Sanz-Serna 2016; spec P-C4",
        conditions="partner pair (b_i A_ij + b_j a_ji = b_i b_j); nonlinear field",
        draw=_draw_invariant, check=_check_invariant, control=_control_invariant,
        control_breaks="lambda_n from the continuous adjoint (the same RK run backward on the adjoint ODE)",
        dtypes=("float64",),
    ),
    Theorem(
        name="ode.memory_model",
        table=("peak live tapes: backprop `N s_eff`, symplectic 1, continuous adjoint 1; checkpoints `N+1`, f / vjp counts of the formula",
               "exact counts",
               "tapes kept after their vjp (a retained graph)"),
        statement="peak live tapes: backprop N s_eff, ACA s_eff, symplectic adjoint 1, continuous adjoint 1; symplectic "
                  "and ACA keep N+1 checkpoints, symplectic s_eff stage states; f evaluations N s_eff (backprop) / "
                  "2 N s_eff (ACA, continuous adjoint) / 3 N s_eff - N (symplectic); vjps N s_eff; the live-tape peaks "
                  "both as counted and as held (weak references to the tapes)",
        source=SOURCE + " (Table 1, memory column); spec P-C5 (s_eff = s minus dead FSAL stages)",
        conditions="each tape is freed right after its vjp",
        draw=_draw_memory, check=_check_memory, control=_control_memory,
        control_breaks="tapes are kept after their vjp (a retained graph): the symplectic peak becomes N s_eff",
        dtypes=("float64",),
    ),
)
