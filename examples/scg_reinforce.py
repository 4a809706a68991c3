"""REINFORCE with a baseline on a contextual bandit, verified exactly by enumeration.

    .venv/bin/python examples/scg_reinforce.py

A state s ~ Categorical(p_s) (fixed), an action a ~ Categorical(softmax(W onehot(s))) with the
policy weights W (4 x 3) as theta, and the cost -R[s, a] (costs are minimised; the reward enters
with a minus sign). The surrogate loss log pi(a | s) * (Q_a - b) + cost gives an unbiased estimate
of grad E[cost] for any baseline b that does not read a; this script prints

* the exact gradient (torch autograd of the enumerated objective) and refimpl's exact mean of the
  estimator (every one of the 12 outcomes, weighted by its probability);
* the exact variance (trace of the covariance) of the one-sample estimator without a baseline,
  with the constant E[cost], with the optimal constant b* = E[s.g0]/E|s|^2, and with the
  state-value baseline V(s) = E[cost | s] (a function of the non-descendant s);
* a baseline that reads the action itself: biased;
* a seeded Monte-Carlo check: the sample mean's z-score against the exact mean and the sample
  variance against the exact variance.
"""

from __future__ import annotations

import numpy as np

from refimpl import scg
from refimpl.scg import ops


def build():
    p_s = np.array([0.5, 0.3, 0.2])
    R = np.array([[1.0, 0.0, 0.5, 2.0],
                  [0.0, 3.0, 1.0, 0.5],
                  [2.0, 1.0, 0.0, 1.0]])       # R[s, a]
    g = scg.Graph()
    g.input("state_logits", np.log(p_s))
    g.categorical("s", "state_logits")
    g.param("W", (4, 3), init_std=0.5)
    g.deterministic("logits", ["s", "W"], ops.Affine(3, 4))
    g.categorical("a", "logits")
    g.input("negRT", (-R.T).ravel())             # row j of -R^T is -R[:, j]
    g.deterministic("negR_s", ["s", "negRT"], ops.Affine(3, 4))   # -R[s, :]
    g.deterministic("cost_sa", ["negR_s", "a"], ops.Product())
    g.cost("cost", ["cost_sa"])
    return g, g.init_theta(seed=0)


def state_value(logits, negR_s):
    """V(s) = sum_a pi(a | s) (-R[s, a]): reads only the action's non-descendants."""
    z = logits - logits.max(axis=1, keepdims=True)
    pi = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return (pi * negR_s).sum(axis=1)


def main(n_mc: int = 20000, seed: int = 1):
    from proofs import oracle

    g, theta = build()
    E, exact = oracle.scg_expected_cost(g, theta)
    s = scg.enumerate_outcomes(g, theta)
    b_star = scg.optimal_constant_baseline(g, theta, "a")
    baselines = {
        "none": {},
        f"constant E[cost] = {E:.4f}": {"a": scg.ConstantBaseline(E)},
        f"optimal constant b* = {b_star:.4f}": {"a": scg.ConstantBaseline(b_star)},
        "state value V(s)": {"a": scg.FunctionBaseline(state_value, ("logits", "negR_s"))},
        "reads the action (biased)": {"a": scg.FunctionBaseline(lambda a: 2.0 * a[:, 0], ("a",),
                                                                allow_biased=True)},
    }
    mc = scg.sample(g, theta, seed=seed, batch=n_mc)
    print(f"E[cost] = {E:.6f}; {s.batch} outcomes; |grad E| = {np.linalg.norm(exact):.6f} (torch autograd)")
    print(f"Monte Carlo: {n_mc} rows, seed {seed}\n")
    head = f"{'baseline':36s} {'|E[g] - grad E|':>16s} {'Var (exact)':>12s} {'Var (MC)':>10s} {'max |z| of MC mean':>19s}"
    print(head)
    print("-" * len(head))
    for name, bl in baselines.items():
        per = scg.surrogate(s, baselines=bl, record=False).per_sample
        mean = scg.weighted_mean(s.weights, per)
        var = float(scg.weighted_variance(s.weights, per))
        rows = scg.surrogate(mc, baselines=bl, record=False).per_sample
        se = rows.std(axis=0, ddof=1) / np.sqrt(n_mc)
        z = np.abs(rows.mean(axis=0) - exact) / se
        var_mc = float(np.sum(rows.var(axis=0, ddof=1)))
        print(f"{name:36s} {np.abs(mean - exact).max():16.2e} {var:12.6f} {var_mc:10.6f} {z.max():19.2f}")
    print("\nexact gradient dE/dW (rows: actions, columns: states):")
    print(np.array2string(exact.reshape(4, 3), precision=6, suppress_small=True))


if __name__ == "__main__":
    main()
