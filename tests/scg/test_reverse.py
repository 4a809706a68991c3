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
