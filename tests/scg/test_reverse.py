import numpy as np

from refimpl import scg
from .helpers import chain_graph, gauss_graph


def test_reverse_pass_equals_forward_mode_per_row():
    """The reverse pass (vjps) and first-order forward mode (local Jacobians) give the same
    per-row gradients of every cost and every log p."""
    for g, th in (chain_graph(), gauss_graph(True), gauss_graph(False)):
        s = scg.sample(g, th, seed=3, batch=6)
        jt = scg.jets(s, order=1)
        B = s.batch
        for c in g.costs:
            rev = scg.backward(s, {c: np.ones((B, 1))})
            fwd = jt.cost(c)[0] if jt.hess[c] is not None else jt.grad[c][:, 0, :]
            np.testing.assert_allclose(rev, np.broadcast_to(fwd, rev.shape), rtol=1e-12, atol=1e-14)
        for w in g.stochastic:
            rev = scg.backward(s, scg.surrogate.__globals__["score_seeds"](s, {w: np.ones(B)}))
            np.testing.assert_allclose(rev, jt.grad_log_prob[w], rtol=1e-12, atol=1e-14)


def test_summed_reverse_pass_equals_sum_of_rows():
    g, th = chain_graph()
    s = scg.sample(g, th, seed=1, batch=5)
    seeds = {c: np.ones((5, 1)) for c in g.costs}
    np.testing.assert_allclose(scg.backward(s, seeds, per_sample=False), scg.backward(s, seeds).sum(0), rtol=1e-13)


def test_reverse_pass_of_an_mlp_cost_equals_bp(backend):
    """A deterministic graph x -> MLP -> 0.5 |h - y|^2 (per-row inputs, training-size widths, summed
    reverse pass): the batch-mean gradient is refimpl's BP gradient of the mse loss."""
    import refimpl as ri
    from refimpl.backend import to_numpy

    gen = np.random.default_rng(0)
    B, sizes = 32, [20, 64, 64, 10]
    net = ri.Network.init(sizes, activation="tanh", seed=1, bias_scale=0.1)
    x, y = gen.standard_normal((B, 20)), gen.standard_normal((B, 10))
    g = scg.Graph()
    g.input("x", backend(x))
    g.input("y", backend(y))
    g.mlp("h", ["x"], sizes[1:], activation="tanh")
    g.deterministic("e", ["h", "y"], scg.ops.LinearCombination((1.0, -1.0)))
    g.deterministic("e2", ["e"], scg.ops.Polynomial((0.0, 0.0, 0.5)))
    g.cost("c", ["e2"])
    vals = {}
    for i in range(net.depth):
        vals[f"h/{i + 1}.W"] = to_numpy(net.weights[i])
        vals[f"h/{i + 1}.b"] = to_numpy(net.biases[i])
    th = backend(np.concatenate([vals[p].ravel() for p in g.params]))
    s = scg.evaluate(g, th, {})
    sur = scg.surrogate(s, per_sample=False, record=False)
    upd, _ = ri.rules.BP(loss="mse").updates(net, ri.rules.EmptyState(), x, y)
    got = g.unflatten(sur.grad)
    for i in range(net.depth):
        np.testing.assert_allclose(to_numpy(got[f"h/{i + 1}.W"]), upd.dW[i], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(to_numpy(got[f"h/{i + 1}.b"]), upd.db[i], rtol=1e-10, atol=1e-13)
