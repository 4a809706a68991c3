"""Stochastic computation graphs: the theorems of Schulman et al. (2015) and DiCE (Foerster et al.
2018), checked exactly by enumerating every outcome (spec ``scg.md`` §4, P-D1..P-D5).

Every check compares refimpl.scg's estimator, averaged over the exact outcome table, with torch
autograd of the enumerated objective ``E(theta) = sum_outcomes P(outcome) sum_c c``
(:func:`proofs.oracle.scg_expected_cost`). No Monte Carlo anywhere: the expectations are exact
sums, so the tolerances are those of exact identities (float64 only: the table's float32 rows
would say nothing about a 1e-10 identity).

* ``scg.surrogate_unbiased`` (P-D1, Theorem 1): E[grad L_surr] = grad E.
* ``scg.baseline_unbiased`` (P-D2): baselines of non-descendants keep the mean.
* ``scg.optimal_baseline`` (P-D2, corrected formula): b* = E[s_w.g_0]/E|s_w|^2 minimises the exact
  variance.
* ``scg.downstream_vs_total`` (P-D3): downstream-only and total-cost Q have equal means, different
  variances.
* ``scg.pathwise_score_quadrature`` (P-D4): Gaussian node, polynomial cost of degree k: pathwise
  with ceil((k+1)/2) and score function with ceil((k+3)/2) Gauss-Hermite nodes are both exact.
* ``scg.quadrature_tanh_cost`` (measurement, P-D4): the Gauss-Hermite error for a tanh cost at
  n = 5..80 nodes (root-exponential convergence; not exact).
* ``scg.dice_hessian_exact`` (P-D5): E[hess DiCE] = hess E; the surrogate's is not.
* ``scg.surrogate_hessian_bias`` (P-D5): E[H_surr] - hess E = -sum_c E[c g_tau g_tau^T + g_tau g_c^T
  + g_c g_tau^T] exactly.
* ``scg.surrogate_hessian_pathwise_only`` (P-D5, corrected condition): the surrogate Hessian is
  unbiased when theta reaches no distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from refimpl import scg
from refimpl.backend import from_numpy, to_numpy, rng as host_rng, resolve_namespace, resolve_dtype, namespace
from refimpl.scg import ops
from . import oracle
from .theorem import Theorem, Evidence, compare
from .tolerances import tolerance

__all__ = ["THEOREMS", "SCGInstance", "draw_scg", "build_scg"]


# --- random graphs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SCGInstance:
    """A graph, its theta, the drawn structure (``spec``) and extra parameters of a theorem."""

    graph: object
    theta: object
    spec: dict
    params: dict = field(default_factory=dict)
    twin: Optional[tuple] = None  # (graph, theta) of a variant, where a theorem needs one

    def describe(self) -> str:
        # Only plain parameters: graphs and arrays in params would print memory addresses, and a
        # campaign record must be a pure function of its task (proofs/verify.py).
        simple = {k: v for k, v in (self.params or {}).items() if isinstance(v, (int, float, str, bool))}
        return f"{self.spec} {simple or ''}".strip()


def _layer(g, name, x, n_out, const_gen, xp, dtype):
    """Affine layer with Params (``const_gen is None``) or constant weights drawn from ``const_gen``."""
    if const_gen is None:
        return g.affine(name, x, n_out)
    n_in = g[x].size
    W = const_gen.standard_normal((n_out, n_in)) / math.sqrt(n_in)
    b = const_gen.standard_normal(n_out) / math.sqrt(n_in)
    Wn = g.input(name + ".W", from_numpy(W.ravel(), xp, dtype))
    bn = g.input(name + ".b", from_numpy(b, xp, dtype))
    return g.deterministic(name, [x, Wn, bn], ops.Affine(n_in, n_out))


def _net(g, name, inputs, hidden, n_out, act, const_gen, xp, dtype):
    x = inputs[0] if len(inputs) == 1 else g.deterministic(name + "/in", list(inputs), ops.Concat())
    if hidden:
        a = _layer(g, name + "/1", x, hidden, const_gen, xp, dtype)
        x = g.deterministic(name + "/1.h", [a], ops.Activation(act))
    return _layer(g, name, x, n_out, const_gen, xp, dtype)


def _ref(p, names):
    """Node index in a spec: 0 = x, k = w_k, -k = the logits f_k of w_k (theta-dependent)."""
    return "x" if p == 0 else names[p - 1] if p > 0 else f"f{-p}"


def build_scg(spec: dict, xp="numpy", dtype="float64", dist_params: bool = True):
    """Build the graph of ``spec`` (see :func:`draw_scg`) and its theta.

    ``dist_params=False``: the distributions' logits use constant weights (theta reaches no
    distribution: the pathwise-only case of P-D5)."""
    ns = resolve_namespace(xp)
    dt = resolve_dtype(ns, dtype)
    gen = host_rng(spec["seed"])
    const_gen = None if dist_params else host_rng(spec["seed"] + 1)
    g = scg.Graph()
    g.input("x", from_numpy(gen.uniform(-1, 1, spec["n0"]), ns, dt))
    hid, act = spec["hidden"], spec["activation"]
    names = []
    for k, (kind, size, parents) in enumerate(spec["nodes"], start=1):
        par = [("x" if p == 0 else names[p - 1]) for p in parents]
        width = size
        logits = _net(g, f"f{k}", par, hid, width, act, const_gen, ns, dt)
        names.append(g.bernoulli(f"w{k}", logits) if kind == "bernoulli" else g.categorical(f"w{k}", logits))
        for ci, (after, reads) in enumerate(spec["costs"]):
            if after == k:
                cpar = [_ref(p, names) for p in reads]
                g.cost(f"c{ci}", [_net(g, f"c{ci}f", cpar, hid, 1, act, None, ns, dt)])
    for ci, (after, reads) in enumerate(spec["costs"]):
        if after == 0 or after > len(spec["nodes"]):
            cpar = [_ref(p, names) for p in reads]
            g.cost(f"c{ci}", [_net(g, f"c{ci}f", cpar, hid, 1, act, None, ns, dt)])
    theta = g.init_theta(spec["seed"] + 2, ns, dt)
    return g, theta


def draw_scg(d, xp="numpy", dtype="float64", *, max_nodes=4, max_outcomes=256, hidden=(0, 3),
             small: bool = False):
    """A random SCG spec: 1..max_nodes discrete nodes (Bernoulli with 1-2 units, categorical with
    2-4 classes; joint outcomes <= max_outcomes), topology chain / fork / diamond / random, logits
    and costs from small MLPs (hidden width drawn from ``hidden``, 0: one affine layer; weights
    N(0, 1/fan_in)). Costs: ``c0`` upstream (reads x and w1's logits, and w1 when there are >= 2
    nodes: it is then upstream of w2..), a final cost reading the sink nodes, x and the last node's
    logits, and sometimes a middle cost. theta enters every distribution and every cost, and is
    shared between distributions and costs (the logits nodes feed costs; spec P-D1)."""
    m = d.integer(1, max_nodes)
    topo = d.variant("topology", ("chain", "fork", "diamond", "random"))
    nodes, outcomes = [], 1
    for k in range(1, m + 1):
        kind = d.choice(("bernoulli", "categorical"))
        size = d.integer(1, 2) if kind == "bernoulli" else d.integer(2, 4)
        n_out = 2 ** size if kind == "bernoulli" else size
        if outcomes * n_out > max_outcomes:
            kind, size, n_out = "bernoulli", 1, 2
            if outcomes * 2 > max_outcomes:
                break
        outcomes *= n_out
        if k == 1:
            parents = [0]
        elif topo == "chain":
            parents = [k - 1]
        elif topo == "fork":
            parents = [1] if k < m or m < 3 else [1, 0]
        elif topo == "diamond":
            parents = [1] if k < m or m < 3 else list(range(2, m))
        else:
            parents = [p for p in range(0, k) if d.boolean()] or [k - 1]
        nodes.append((kind, size, parents))
    m = len(nodes)
    children = {p for (_, _, ps) in nodes for p in ps}
    sinks = [k for k in range(1, m + 1) if k not in children]
    # upstream cost: reads x and w1's logits f1 (theta shared with w1's distribution), and w1 when
    # there are >= 2 nodes (it is then upstream of w2..)
    costs = [(1, [0, -1] + ([1] if m >= 2 else []))]
    if m >= 3 and d.boolean():
        mid = d.integer(2, m - 1)
        costs.append((mid, [mid]))
    costs.append((m + 1, sinks + [0, -m]))
    spec = {"n0": d.integer(1, 2 if small else 3), "nodes": nodes, "costs": costs,
            "hidden": 0 if small else d.integer(*hidden), "activation": d.choice(("tanh", "sigmoid", "softplus")),
            "topology": topo, "seed": d.integer(0, 2**30)}
    return spec


def _draw(d, xp, dtype, **kw):
    spec = draw_scg(d, xp, dtype, **kw)
    g, th = build_scg(spec, xp, dtype)
    return SCGInstance(g, th, spec)


def _expected_grad(s, **kw):
    return scg.weighted_mean(s.weights, scg.surrogate(s, record=False, **kw).per_sample)


# --- P-D1 -----------------------------------------------------------------------------------------

def _check_unbiased(inst, score_terms=True):
    s = scg.enumerate_outcomes(inst.graph, inst.theta)
    _, grad = oracle.scg_expected_cost(inst.graph, inst.theta)
    est = _expected_grad(s, score_terms=score_terms)
    # The batch estimate (per_sample=False: one backward pass of the summed surrogate, divided by
    # the B rows) is the mean of the per-sample estimates; the enumeration's rows are a batch too.
    batch = scg.surrogate(s, record=False, score_terms=score_terms, per_sample=False)
    xp = namespace(batch.grad)
    per = scg.surrogate(s, record=False, score_terms=score_terms).per_sample
    return compare([est, batch.grad], [grad, xp.mean(per, axis=0)], "oracle_grad", inst.theta.dtype,
                   labels=["E[grad L_surr]", "batch grad = mean of per-sample grads"])


# --- P-D2 mean ------------------------------------------------------------------------------------

def _draw_baselines(d, xp, dtype):
    inst = _draw(d, xp, dtype)
    kinds = {w: d.choice(("constant", "input", "theta", "parent", "ancestor")) for w in inst.graph.stochastic}
    return SCGInstance(inst.graph, inst.theta, inst.spec,
                       {"baselines": kinds, "scale": d.real(0.5, 2.0), "offset": d.real(-1.0, 1.0)})


def _baselines(inst, biased: bool = False):
    g, a, c = inst.graph, inst.params["scale"], inst.params["offset"]

    def fn(*vals):
        xp = namespace(*vals)
        tot = 0.0
        for v in vals:
            tot = tot + xp.sum(xp.tanh(v), axis=-1)
        return a * tot + c

    out = {}
    for k, (w, kind) in enumerate(inst.params["baselines"].items()):
        anc = [v for v in g.stochastic if g.influences(v, w)]
        if kind == "constant":
            out[w] = scg.ConstantBaseline(c)
        elif kind == "input":
            out[w] = scg.FunctionBaseline(fn, ("x",))
        elif kind == "theta":  # a theta-dependent baseline (held constant): a Param of w's own logits net
            p = [q for q in g.params if q.startswith(f"f{w[1:]}")][0]
            out[w] = scg.FunctionBaseline(lambda v: fn(v) * 0 + a * float(to_numpy(v).sum()) + c, (p,))
        elif kind == "parent":  # w's own logits: a non-descendant that depends on theta and ancestors
            out[w] = scg.FunctionBaseline(fn, g[w].parents)
        else:
            out[w] = scg.FunctionBaseline(fn, tuple(anc) or ("x",))
    if biased:  # reads w itself: b = a * sum_i (i + 1) w_i + c varies over every outcome of w
        w = g.stochastic[0]

        def fw(v):
            xp = namespace(v)
            k = xp.arange(1, v.shape[1] + 1, dtype=v.dtype)
            return a * xp.sum(v * k[None, :], axis=1) + c

        out[w] = scg.FunctionBaseline(fw, (w,), allow_biased=True)
    return out


def _check_baseline(inst, biased=False):
    s = scg.enumerate_outcomes(inst.graph, inst.theta)
    _, grad = oracle.scg_expected_cost(inst.graph, inst.theta)
    est = _expected_grad(s, baselines=_baselines(inst, biased))
    return compare([est], [grad], "oracle_grad", inst.theta.dtype, labels=["E[grad L_surr with baselines]"])


# --- P-D2 variance ----------------------------------------------------------------------------------

def _vertex_evidence(inst, center_fn):
    """The exact variance V(b) of the estimator with constant baseline b on node w is a parabola;
    its vertex (through b0 - delta, b0, b0 + delta, exact up to rounding) must be b0."""
    g, th = inst.graph, inst.theta
    w = g.stochastic[0]
    s = scg.enumerate_outcomes(g, th)
    b0 = center_fn(s, w)
    delta = 0.5 * (1 + abs(b0))

    def V(b):
        sur = scg.surrogate(s, baselines={w: scg.ConstantBaseline(b)}, record=False)
        return float(scg.weighted_variance(s.weights, sur.per_sample))

    vm, v0, vp = V(b0 - delta), V(b0), V(b0 + delta)
    curv = vm - 2 * v0 + vp
    vertex = b0 + delta * (vm - vp) / (2 * curv)
    rtol, atol = tolerance("oracle_grad", th.dtype)
    err = abs(vertex - b0) / (1 + abs(b0))
    grid = [V(b0 + delta * j / 50) for j in range(-3, 4)]
    return Evidence(bool(err <= rtol and curv > 0), err, rtol,
                    f"b0={b0:.9g}, vertex={vertex:.9g}, V(b0)={v0:.6g}, grid argmin offset "
                    f"{int(np.argmin(grid)) - 3} (steps of {delta / 50:.3g})")


def _b_star(s, w):
    sur = scg.surrogate(s, record=True)
    sw, g0 = to_numpy(sur.record["score"][w]), to_numpy(sur.per_sample)
    P = to_numpy(s.weights)
    return float(np.sum(P * np.sum(sw * g0, 1)) / np.sum(P * np.sum(sw * sw, 1)))


def _b_old(s, w):
    sur = scg.surrogate(s, record=True)
    sw, Q = to_numpy(sur.record["score"][w]), to_numpy(sur.record["Q"][w])
    P = to_numpy(s.weights)
    n2 = np.sum(sw * sw, 1)
    return float(np.sum(P * Q * n2) / np.sum(P * n2))


def _check_optimal(inst):
    # the library's formula (refimpl.scg.optimal_constant_baseline) must equal the host one, and be the vertex
    b_lib = scg.optimal_constant_baseline(inst.graph, inst.theta, inst.graph.stochastic[0])
    ev = _vertex_evidence(inst, lambda s, w: b_lib)
    b_host = _b_star(scg.enumerate_outcomes(inst.graph, inst.theta), inst.graph.stochastic[0])
    agree = abs(b_lib - b_host) <= 1e-12 * (1 + abs(b_host))
    return Evidence(ev.holds and agree, ev.error, ev.tolerance, ev.detail + f"; library b*={b_lib:.9g}")


def _control_optimal(inst):
    return _vertex_evidence(inst, _b_old)


# --- P-D3 -------------------------------------------------------------------------------------------

#: relative gap below which two exact variances count as equal: rounding of a weighted sum of
#: squares is ~1e-15 relative, a real difference is O(1); 1e-8 separates the two by 7 orders.
VAR_GAP = 1e-8


def _check_causal(inst, control=False):
    g, th = inst.graph, inst.theta
    s = scg.enumerate_outcomes(g, th)
    down = scg.surrogate(s, record=False)
    if control:  # Q_w = total minus downstream costs (the costs w cannot influence): drops the signal
        qd = scg.q_values(s, "downstream")
        bl = {w: scg.FunctionBaseline(lambda *_, q=qd[w]: q, (w,), allow_biased=True) for w in g.stochastic}
        other = scg.surrogate(s, cost_scope="all", baselines=bl, record=False)
    else:
        other = scg.surrogate(s, cost_scope="all", record=False)
    m_d, m_a = scg.weighted_mean(s.weights, down.per_sample), scg.weighted_mean(s.weights, other.per_sample)
    v_d = float(scg.weighted_variance(s.weights, down.per_sample))
    v_a = float(scg.weighted_variance(s.weights, other.per_sample))
    ev = compare([m_a], [m_d], "exact_identity", th.dtype, labels=["E[grad] total vs downstream"])
    gap = abs(v_a - v_d) / max(v_a, v_d)
    return Evidence(bool(ev.holds and gap > VAR_GAP), ev.error, ev.tolerance,
                    f"{ev.detail}; Var downstream {v_d:.6g}, Var other {v_a:.6g} (relative gap {gap:.3g})")


# --- P-D4 -------------------------------------------------------------------------------------------

def _draw_gauss(d, xp, dtype):
    spec = {"K": d.integer(2, 3), "units": d.integer(1, 2), "degree": d.integer(1, 6), "seed": d.integer(0, 2**30),
            "n0": d.integer(1, 2)}
    return SCGInstance(None, None, spec)


def _gauss_graph(spec, reparam, xp, dtype):
    ns = resolve_namespace(xp)
    dt = resolve_dtype(ns, dtype)
    gen = host_rng(spec["seed"])
    g = scg.Graph()
    g.input("x", from_numpy(gen.uniform(-1, 1, spec["n0"]), ns, dt))
    g.affine("f1", "x", spec["K"])
    g.categorical("w1", "f1")
    g.affine("mu", "w1", spec["units"])
    g.affine("ls", "w1", spec["units"], init_std=0.3)
    z = g.gaussian("z", "mu", "ls", reparam=reparam)
    coeffs = tuple(float(c) for c in gen.uniform(-1, 1, spec["degree"] + 1))
    g.deterministic("pz", [z], ops.Polynomial(coeffs))
    g.affine("cw", "w1", 1)
    g.cost("c1", ["pz", "cw"])
    g.affine("c0f", "x", 1)
    g.cost("c0", ["c0f"])
    return g, g.init_theta(spec["seed"] + 1, ns, dt)


def _quad_evidence(inst, n_path, n_score):
    xp = namespace(inst.params["xp_probe"]) if "xp_probe" in inst.params else None
    spec = inst.spec
    gp, th = inst.params["path"]
    gs, _ = inst.params["score"]
    _, grad = oracle.scg_expected_cost(gs, th, quadrature=40)  # exact: degree <= 6 + 2 << 79
    ep = _expected_grad(scg.enumerate_outcomes(gp, th, n_path))
    es = _expected_grad(scg.enumerate_outcomes(gs, th, n_score))
    ev = compare([ep, es], [grad, grad], "oracle_grad", th.dtype,
                 labels=[f"pathwise, {n_path} nodes", f"score function, {n_score} nodes"])
    return Evidence(ev.holds, ev.error, ev.tolerance, f"degree {spec['degree']}: {ev.detail}")


def _n_path(k):
    return math.ceil((k + 1) / 2)


def _n_score(k):
    return math.ceil((k + 3) / 2)


def _draw_gauss_full(d, xp, dtype):
    inst = _draw_gauss(d, xp, dtype)
    gp, th = _gauss_graph(inst.spec, True, xp, dtype)
    gs, _ = _gauss_graph(inst.spec, False, xp, dtype)
    return SCGInstance(gp, th, inst.spec, {"path": (gp, th), "score": (gs, th)})


def _check_quad(inst):
    k = inst.spec["degree"]
    return _quad_evidence(inst, _n_path(k), _n_score(k))


def _control_quad(inst):
    k = inst.spec["degree"]
    return _quad_evidence(inst, _n_path(k), _n_path(k))  # the score function needs one more node


# --- P-D4, non-polynomial costs (measurement) ------------------------------------------------------

#: Gauss-Hermite node counts of the tanh-cost measurement; reference: 320 nodes, checked against 640.
QUAD_NS = (5, 10, 20, 40, 80)


def _draw_tanh(d, xp, dtype):
    return SCGInstance(None, None, {"seed": d.integer(0, 2**30), "slope": d.real(0.5, 1.5)},
                       {"xp": xp, "dtype": dtype})


def _measure_tanh(inst):
    """Relative error of the expected pathwise gradient with n Gauss-Hermite nodes for the cost
    tanh(a z + b), z ~ N(mu(w1), sigma(w1)^2): tanh has poles at distance pi/(2a) from the real
    axis, so the error falls only root-exponentially in n (spec P-D4), unlike a polynomial cost
    (exact from ceil((k+1)/2) nodes) — a reference of quadrature accuracy, not a theorem."""
    spec, xp, dtype = inst.spec, inst.params["xp"], inst.params["dtype"]
    ns = resolve_namespace(xp)
    dt = resolve_dtype(ns, dtype)
    gen = host_rng(spec["seed"])
    g = scg.Graph()
    g.input("x", from_numpy(gen.uniform(-1, 1, 1), ns, dt))
    g.affine("f1", "x", 2)
    g.categorical("w1", "f1")
    g.affine("mu", "w1", 1)
    g.affine("ls", "w1", 1, init_std=0.3)
    z = g.gaussian("z", "mu", "ls", reparam=True)
    W = g.param("a.W", (1, 1), init_value=[[spec["slope"]]])
    b = g.param("a.b", (1,), init_value=[0.3])
    g.deterministic("a", [z, W, b], ops.Affine(1, 1))
    g.deterministic("t", ["a"], ops.Activation("tanh"))
    g.cost("c", ["t"])
    th = g.init_theta(spec["seed"] + 1, ns, dt)
    ref = to_numpy(scg.expected_gradient(g, th, quadrature=320))
    ref2 = to_numpy(scg.expected_gradient(g, th, quadrature=640))
    scale = float(np.abs(ref).max())
    errs = [float(np.abs(to_numpy(scg.expected_gradient(g, th, quadrature=n)) - ref).max()) / scale
            for n in QUAD_NS]
    s1 = scg.enumerate_outcomes(g, th, quadrature=1)  # both outcomes of w1
    a_sigma = spec["slope"] * float(np.exp(to_numpy(s1.values["ls"])).max())
    detail = ", ".join(f"n={n}: {e:.1e}" for n, e in zip(QUAD_NS, errs))
    detail += (f"; a*sigma = {a_sigma:.2f} (poles at distance pi/(2 a sigma) in noise units); reference 320 nodes "
               f"(vs 640: {float(np.abs(ref2 - ref).max()) / scale:.1e})")
    return Evidence(True, errs[QUAD_NS.index(40)], math.nan, "relative gradient error " + detail)


# --- P-D5 -------------------------------------------------------------------------------------------

def _draw_small(d, xp, dtype):
    return _draw(d, xp, dtype, max_nodes=3, max_outcomes=36, small=True)


def _hessians(inst):
    s = scg.enumerate_outcomes(inst.graph, inst.theta)
    _, _, H = oracle.scg_expected_cost(inst.graph, inst.theta, order=2)
    return s, H


def _check_dice(inst):
    s, H = _hessians(inst)
    d = scg.dice(s, order=2)
    d1 = scg.dice(s, order=1)  # the first-order objective is its own code path (reverse mode)
    g = oracle.scg_expected_cost(inst.graph, inst.theta)[1]
    return compare([scg.weighted_mean(s.weights, d.per_sample_hessian), scg.weighted_mean(s.weights, d.per_sample),
                    scg.weighted_mean(s.weights, d1.per_sample)],
                   [H, g, g], "oracle_grad", inst.theta.dtype,
                   labels=["E[hess DiCE]", "E[grad DiCE] (order 2 pass)", "E[grad DiCE] (order=1)"])


def _control_dice(inst):
    s, H = _hessians(inst)
    return compare([scg.weighted_mean(s.weights, scg.surrogate_hessian(s))], [H], "oracle_grad",
                   inst.theta.dtype, labels=["E[hess L_surr]"])


def _bias_evidence(inst, cross_terms=True):
    s, H = _hessians(inst)
    d = scg.dice(s, order=2)
    xp = namespace(inst.theta)
    Hs = to_numpy(scg.weighted_mean(s.weights, scg.surrogate_hessian(s)))
    W = to_numpy(s.weights)
    bias = np.zeros_like(H)
    for c in inst.graph.costs:
        cc, gt, gc = to_numpy(s.cost(c)), to_numpy(d.record["grad_tau"][c]), to_numpy(d.record["grad_cost"][c])
        term = cc[:, None, None] * gt[:, :, None] * gt[:, None, :]
        if cross_terms:
            cross = gt[:, :, None] * gc[:, None, :]
            term = term + cross + np.swapaxes(cross, 1, 2)
        bias = bias - np.einsum("b,bij->ij", W, term)
    return compare([Hs - H], [bias], "oracle_grad", inst.theta.dtype, labels=["E[H_surr] - hess E"])


def _draw_pathwise_only(d, xp, dtype):
    spec = draw_scg(d, xp, dtype, max_nodes=3, max_outcomes=36, small=True)
    # a hidden layer makes the costs non-quadratic in theta: without it hess E would be 0 on both
    # sides and the check vacuous
    spec = dict(spec, hidden=d.integer(1, 2))
    g0, th0 = build_scg(spec, xp, dtype, dist_params=False)
    g1, th1 = build_scg(spec, xp, dtype, dist_params=True)
    return SCGInstance(g0, th0, spec, twin=(g1, th1))


def _surr_hess_evidence(graph, theta):
    s = scg.enumerate_outcomes(graph, theta)
    _, _, H = oracle.scg_expected_cost(graph, theta, order=2)
    if not np.any(H):  # pragma: no cover - guarded by the draw
        return Evidence(False, math.inf, 0.0, "hess E is identically 0: the check would be vacuous")
    return compare([scg.weighted_mean(s.weights, scg.surrogate_hessian(s))], [H], "oracle_grad", theta.dtype,
                   labels=["E[hess L_surr]"])


# --- registry ---------------------------------------------------------------------------------------

_SRC = "Schulman, Heess, Weber & Abbeel, NeurIPS 2015 (arXiv 1506.05254)"
_DICE = "Foerster et al., DiCE, ICML 2018 (arXiv 1802.05098)"
_F64 = ("float64",)

THEOREMS = (
    Theorem(
        name="scg.surrogate_unbiased",
        architectures=(), variants=4,
        table=("Σ_outcomes P·∇L_surr = ∇E[Σc] (Schulman et al. 2015, Thm 1): score terms log p(w)·Q̂_w with downstream costs only, plus pathwise ∇c; chains/forks/diamonds, θ shared by distributions and costs; the batch estimate is the mean of the per-sample ones",
               "exact by enumeration vs torch autograd of the enumerated E, rtol 1e-10",
               "score terms dropped (pathwise only)"),
        statement="sum_outcomes P * grad L_surr = grad E[sum_c c] (torch autograd of the enumerated objective): "
                  "score terms log p(w|DEPS_w) * Q_w with downstream costs only, plus pathwise grad c",
        source=_SRC + ", Theorem 1 and Corollary 1 (section 4); spec scg.md P-D1",
        conditions="discrete nodes (exact enumeration); theta in distributions and costs; chains, forks, "
                   "diamonds, a cost upstream of later nodes",
        draw=_draw, check=_check_unbiased, control=lambda i: _check_unbiased(i, score_terms=False),
        control_breaks="the score terms are dropped (pathwise-only estimator) while theta enters distributions",
        dtypes=_F64,
    ),
    Theorem(
        name="scg.baseline_unbiased",
        architectures=(), variants=4,
        table=("baselines of non-descendants of w (constant, input, θ, w's logits, ancestors) keep the mean",
               "exact, rtol 1e-10",
               "baseline reading w itself"),
        statement="with Q_w - b_w, b_w any function of non-descendants of w (constant, input, theta, w's own "
                  "logits, ancestors), the expected surrogate gradient is still grad E",
        source=_SRC + ", section 3 (variance reduction); spec scg.md P-D2",
        conditions="every baseline reads only nodes that w does not influence",
        draw=_draw_baselines, check=_check_baseline, control=lambda i: _check_baseline(i, biased=True),
        control_breaks="the first node's baseline reads w itself (allow_biased=True): biased",
        dtypes=_F64,
    ),
    Theorem(
        name="scg.optimal_baseline",
        architectures=(), variants=4,
        table=("the exact variance is a parabola in a constant baseline with vertex b* = E[s_w·g₀]/E‖s_w‖² (corrected formula)",
               "exact (vertex of the exact parabola)",
               "old formula E[Q̂‖s‖²]/E‖s‖²"),
        statement="the exact variance of the estimator is a parabola in a constant baseline b on node w with "
                  "vertex b* = E[s_w . g_0] / E[|s_w|^2] (s_w = grad log p(w), g_0 = estimate with b = 0)",
        source="derivation (spec scg.md P-D2, corrected formula); " + _SRC + ", section 3",
        conditions="exact variances by enumeration; the corrected b* (pathwise terms and other nodes' score "
                   "terms included in g_0); costs non-linear in w's logits (hidden layer >= 1), else "
                   "E[s_w . grad c] = 0 and the two formulas coincide",
        draw=lambda d, xp, dt: _draw(d, xp, dt, hidden=(1, 3)), check=_check_optimal, control=_control_optimal,
        control_breaks="the old formula E[Q |s|^2]/E[|s|^2], optimal only when g_0 = s_w Q_w (theta here also "
                       "enters costs and other distributions)",
        dtypes=_F64,
    ),
    Theorem(
        name="scg.downstream_vs_total",
        architectures=(), variants=4,
        table=("Q̂_w = downstream costs vs total cost: equal means, different exact variances (neither always lower)",
               "exact means; variance gap > 1e-8 rel.",
               "Q̂_w = only the costs not downstream of w"),
        statement="Q_w = downstream costs and Q_w = total cost give the same expected gradient (to 1e-10) and "
                  "different exact variances (relative gap > 1e-8; neither is always lower)",
        source=_SRC + ", section 2 (Q_w = costs downstream of w); spec scg.md P-D3",
        conditions="a cost that is not downstream of some node whose distribution theta reaches",
        draw=_draw, check=_check_causal, control=lambda i: _check_causal(i, control=True),
        control_breaks="Q_w = only the costs NOT downstream of w (total minus downstream): the mean changes",
        dtypes=_F64,
    ),
    Theorem(
        name="scg.pathwise_score_quadrature",
        architectures=(),
        table=("Gaussian node, polynomial cost of degree k: pathwise with ⌈(k+1)/2⌉ and score function with ⌈(k+3)/2⌉ Gauss–Hermite nodes are exact",
               "exact (GH exact to degree 2n−1)",
               "score function with ⌈(k+1)/2⌉ nodes"),
        statement="categorical w1 -> Gaussian z(mu(w1), sigma(w1)) -> polynomial cost of degree k: the expected "
                  "pathwise gradient with ceil((k+1)/2) Gauss-Hermite nodes and the expected score-function "
                  "gradient with ceil((k+3)/2) nodes both equal grad E exactly (GH with n nodes is exact for "
                  "degree <= 2n-1; d log p/d log sigma adds degree 2)",
        source=_SRC + ", section 2 (pathwise vs score function); spec scg.md P-D4",
        conditions="polynomial cost in the Gaussian node (non-polynomial costs are only approximated: "
                   "tanh-type costs converge root-exponentially, spec P-D4)",
        draw=_draw_gauss_full, check=_check_quad, control=_control_quad,
        control_breaks="the score function gets only ceil((k+1)/2) nodes (enough for pathwise, one too few for it)",
        dtypes=_F64,
    ),
    Theorem(
        name="scg.quadrature_tanh_cost",
        architectures=(),
        table=("relative error of the expected pathwise gradient for a tanh cost of a Gaussian node at n = 5..80 Gauss–Hermite nodes (reference 320 nodes): root-exponential, e.g. 6e-4 at n = 40 when a·σ ≈ 1.8, 3e-12 when a·σ ≈ 0.4",
               "measurement",
               "—"),
        statement="relative error of the expected pathwise gradient with n = 5, 10, 20, 40, 80 Gauss-Hermite "
                  "nodes for a tanh cost of a Gaussian node (error reported: n = 40)",
        source="spec scg.md P-D4 (non-polynomial costs are not integrated exactly)",
        conditions="measurement: no control, no verdict",
        draw=_draw_tanh, check=_measure_tanh, kind="measurement", dtypes=_F64,
    ),
    Theorem(
        name="scg.dice_hessian_exact",
        architectures=(), variants=4,
        table=("E[∇²DiCE] = ∇²E and E[∇DiCE] = ∇E (Foerster et al. 2018; the gradient of both the order-2 pass and `dice(order=1)`)",
               "exact vs torch Hessian, rtol 1e-10",
               "the surrogate loss's Hessian"),
        statement="E[hess DiCE] = hess E and E[grad DiCE] = grad E (torch autograd Hessian of the enumerated "
                  "objective); hess DiCE = c(g_tau g_tau^T + H_tau) + g_tau g_c^T + g_c g_tau^T + H_c per cost",
        source=_DICE + ", section 3; spec scg.md P-D5",
        conditions="discrete nodes, smooth activations",
        draw=_draw_small, check=_check_dice, control=_control_dice,
        control_breaks="the surrogate loss's Hessian (Q held constant) instead of DiCE's: biased since theta "
                       "reaches a distribution upstream of a cost",
        dtypes=_F64,
    ),
    Theorem(
        name="scg.surrogate_hessian_bias",
        architectures=(), variants=4,
        table=("E[∇²L_surr] − ∇²E = −Σ_c E[c∇τ_c∇τ_cᵀ + ∇τ_c∇cᵀ + ∇c∇τ_cᵀ]",
               "exact",
               "bias without the cross terms"),
        statement="E[hess L_surr] - hess E = -sum_c E[c g_tau g_tau^T + g_tau g_c^T + g_c g_tau^T] exactly",
        source="derivation from DiCE's second derivative (spec scg.md §1); " + _DICE,
        conditions="discrete nodes; Q_w downstream, no baselines",
        draw=_draw_small, check=_bias_evidence, control=lambda i: _bias_evidence(i, cross_terms=False),
        control_breaks="the cross terms g_tau g_c^T + g_c g_tau^T are left out of the bias",
        dtypes=_F64,
    ),
    Theorem(
        name="scg.surrogate_hessian_pathwise_only",
        architectures=(), variants=4,
        table=("θ in no distribution ⇒ the surrogate Hessian is unbiased",
               "exact",
               "θ also in the distributions' logits"),
        statement="when theta reaches no distribution (grad tau_c = 0 for every cost), E[hess L_surr] = hess E",
        source="spec scg.md P-D5 (corrected condition); " + _DICE,
        conditions="the distributions' logits use constant weights; theta only in costs",
        draw=_draw_pathwise_only, check=lambda i: _surr_hess_evidence(i.graph, i.theta),
        control=lambda i: _surr_hess_evidence(*i.twin),
        control_breaks="the same structure with theta in the distributions' logits",
        dtypes=_F64,
    ),
)
