"""log p, its derivatives, sampling frequencies and Gauss-Hermite rules."""

import math

import numpy as np
import pytest

from refimpl.scg import distributions as D

torch = pytest.importorskip("torch")


def _torch_logp(dist, w, u):
    if isinstance(dist, D.Bernoulli):
        return torch.distributions.Bernoulli(logits=u[0]).log_prob(w).sum(-1)
    if isinstance(dist, D.Categorical):
        return torch.distributions.Categorical(logits=u[0]).log_prob(w.argmax(-1))
    if isinstance(dist, D.Gaussian):
        return torch.distributions.Normal(u[0], torch.exp(u[1])).log_prob(w).sum(-1)
    return torch.distributions.Normal(0.0, 1.0).log_prob(w).sum(-1)


CASES = [
    (D.Bernoulli(3), lambda g: (g.integers(0, 2, (4, 3)).astype(float), [g.standard_normal((4, 3)) * 2])),
    (D.Categorical(4), lambda g: (np.eye(4)[g.integers(0, 4, 4)], [g.standard_normal((4, 4)) * 2])),
    (D.Gaussian(2), lambda g: (g.standard_normal((4, 2)), [g.standard_normal((4, 2)), 0.5 * g.standard_normal((4, 2))])),
    (D.StandardNormal(2), lambda g: (g.standard_normal((4, 2)), [])),
]


@pytest.mark.parametrize("dist,make", CASES, ids=lambda v: type(v).__name__ if not callable(v) else "")
def test_log_prob_and_derivatives_match_torch(dist, make):
    w, u = make(np.random.default_rng(0))
    lp = dist.log_prob(np, w, u)
    wt, ut = torch.tensor(w), [torch.tensor(v) for v in u]
    np.testing.assert_allclose(lp, _torch_logp(dist, wt, ut).numpy(), rtol=1e-13)
    first, second = dist.first(np, w, u), dist.second(np, w, u)
    for b in range(w.shape[0]):
        def f(*args):
            return _torch_logp(dist, wt[b:b + 1], [a[None] for a in args])[0]
        row = tuple(v[b] for v in ut)
        if not row:
            continue
        J = torch.autograd.functional.jacobian(f, row)
        H = torch.autograd.functional.hessian(f, row)
        for i in range(len(u)):
            np.testing.assert_allclose(first[i][b, 0], J[i].numpy(), rtol=1e-12, atol=1e-14)
            for j in range(len(u)):
                h = second[(i, j)][b, 0] if (i, j) in second else second[(j, i)][b, 0].T if (j, i) in second else 0
                np.testing.assert_allclose(h, H[i][j].numpy(), rtol=1e-12, atol=1e-14)


def test_sampling_frequencies_z_test():
    """Bernoulli and categorical draws: per-outcome frequency z-scores below 4.5 (fixed seed)."""
    gen = np.random.default_rng(123)
    N = 20000
    l = np.array([[0.3, -1.2, 2.0]])
    w = D.Bernoulli(3).sample(np, [np.repeat(l, N, 0)], gen)
    p = 1 / (1 + np.exp(-l[0]))
    z = (w.mean(0) - p) / np.sqrt(p * (1 - p) / N)
    assert np.all(np.abs(z) < 4.5), z
    w = D.Categorical(3).sample(np, [np.repeat(l, N, 0)], gen)
    assert np.all(w.sum(1) == 1)
    p = np.exp(l[0]) / np.exp(l[0]).sum()
    z = (w.mean(0) - p) / np.sqrt(p * (1 - p) / N)
    assert np.all(np.abs(z) < 4.5), z


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 20, 60])
def test_gauss_hermite_exact_to_degree_2n_minus_1(n):
    x, w = D.gauss_hermite(n)
    assert abs(w.sum() - 1) < 1e-14
    for k in range(0, 2 * n):
        exact = 0.0 if k % 2 else float(math.prod(range(k - 1, 0, -2)))  # (k-1)!!
        got = float(np.sum(w * x ** k))
        # rounding: n terms of size up to sum w |x|^k (odd moments cancel to 0), each node off by
        # ~eps |J| (eigenvalues), i.e. ~k eps relatively in x^k
        scale = max(1.0, float(np.sum(w * np.abs(x) ** k)))
        assert abs(got - exact) <= 10 * (n + k) * 2.2e-16 * scale, (n, k, got, exact)
    # degree 2n is not integrated exactly (the rule's order is sharp): the rule misses E x^{2n}
    # by exactly n! (= the squared norm of the monic He_n)
    exact = float(math.prod(range(2 * n - 1, 0, -2)))
    miss = exact - float(np.sum(w * x ** (2 * n)))
    assert abs(miss - math.factorial(n)) <= 1e-10 * exact, (n, miss, math.factorial(n))


def test_gauss_hermite_matches_numpy_and_large_n():
    from numpy.polynomial.hermite_e import hermegauss

    x, w = D.gauss_hermite(30)
    xr, wr = hermegauss(30)
    np.testing.assert_allclose(x, xr, atol=1e-12)
    # Golub-Welsch weights are accurate to ~eps absolutely (tail weights ~1e-21 relatively less so)
    np.testing.assert_allclose(w, wr / math.sqrt(2 * math.pi), rtol=1e-9, atol=1e-16)
    x, w = D.gauss_hermite(400)  # no overflow (the spec's note on recurrences)
    assert np.all(np.isfinite(w)) and abs(w.sum() - 1) < 1e-12


def test_gauss_hermite_rejects_bad_n():
    with pytest.raises(ValueError, match="quadrature"):
        D.gauss_hermite(0)
