"""Each op's hand-written first/second derivatives and vjp against torch autograd."""

import numpy as np
import pytest

from refimpl.scg import ops

torch = pytest.importorskip("torch")

OPS = [
    (ops.Affine(3, 2), [(4, 3), (6,), (2,)]),
    (ops.Affine(3, 2), [(4, 3), (6,)]),
    (ops.Activation("tanh"), [(4, 3)]),
    (ops.Activation("sigmoid"), [(4, 3)]),
    (ops.Activation("softplus"), [(4, 3)]),
    (ops.Activation("elu"), [(4, 3)]),
    (ops.LinearCombination((0.5, -2.0)), [(4, 3), (4, 3)]),
    (ops.Product(), [(4, 3), (4, 3)]),
    (ops.Polynomial((0.1, -1.0, 0.5, 0.3)), [(4, 3)]),
    (ops.Concat(), [(4, 2), (4, 3)]),
    (ops.SumAll(), [(4, 2), (4, 3)]),
    (ops.Reparam(), [(4, 3), (4, 3), (4, 3)]),
]


def _torch_value(op, u):
    if isinstance(op, ops.Affine):
        y = u[0] @ u[1].reshape(op.n_out, op.n_in).T
        return y + u[2] if len(u) == 3 else y
    if isinstance(op, ops.Activation):
        import proofs.oracle as o
        return o.torch_activation(op.name)(u[0])
    if isinstance(op, ops.LinearCombination):
        return sum(c * v for c, v in zip(op.coeffs, u))
    if isinstance(op, ops.Product):
        return u[0] * u[1]
    if isinstance(op, ops.Polynomial):
        return sum(a * u[0] ** k for k, a in enumerate(op.coeffs))
    if isinstance(op, ops.Concat):
        return torch.cat(u, 1)
    if isinstance(op, ops.SumAll):
        return sum(v.sum(1, keepdim=True) for v in u)
    return u[0] + torch.exp(u[1]) * u[2]


@pytest.mark.parametrize("op,shapes", OPS, ids=lambda v: type(v).__name__ if isinstance(v, ops.Op) else "")
def test_derivatives_match_autograd(op, shapes):
    gen = np.random.default_rng(0)
    u = [gen.standard_normal(s) for s in shapes]
    y = op.value(np, u)
    B = 4
    ut = [torch.tensor(v) for v in u]
    np.testing.assert_allclose(y, _torch_value(op, ut).numpy(), rtol=1e-13, atol=1e-14)
    first, second = op.first(np, u), op.second(np, u)
    cot = gen.standard_normal(y.shape)
    vj = op.vjp(np, u, cot, per_sample=True)
    for b in range(B):
        # per-row function of the inputs (unbatched inputs shared)
        def f(*args):
            full = [torch.cat([ut[i][:b], a[None], ut[i][b + 1:]]) if ut[i].ndim == 2 else a
                    for i, a in enumerate(args)]
            return _torch_value(op, full)[b]
        row = tuple(v[b] if v.ndim == 2 else v for v in ut)
        J = torch.autograd.functional.jacobian(f, row)
        for i, g in enumerate(first):
            Gi = np.broadcast_to(g, (B,) + g.shape[1:])[b] if g is not None else 0.0
            np.testing.assert_allclose(Gi, J[i].numpy(), rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(vj[i][b], cot[b] @ J[i].numpy(), rtol=1e-12, atol=1e-13)
        for o in range(y.shape[1]):
            H = torch.autograd.functional.hessian(lambda *a: f(*a)[o], row)
            for i in range(len(u)):
                for j in range(len(u)):
                    if (i, j) in second:
                        h = np.broadcast_to(second[(i, j)], (B,) + second[(i, j)].shape[1:])[b, o]
                    elif (j, i) in second:
                        h = np.broadcast_to(second[(j, i)], (B,) + second[(j, i)].shape[1:])[b, o].T
                    else:
                        h = 0.0
                    np.testing.assert_allclose(h, H[i][j].numpy(), rtol=1e-12, atol=1e-13)


def test_affine_summed_vjp_equals_sum_of_rows():
    gen = np.random.default_rng(1)
    op = ops.Affine(3, 2)
    u = [gen.standard_normal((5, 3)), gen.standard_normal(6), gen.standard_normal(2)]
    cot = gen.standard_normal((5, 2))
    rows, tot = op.vjp(np, u, cot, True), op.vjp(np, u, cot, False)
    for r, t in zip(rows[1:], tot[1:]):
        np.testing.assert_allclose(r.sum(0), t, rtol=1e-13)
