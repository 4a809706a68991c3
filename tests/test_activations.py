import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from refimpl import activations as A
from refimpl.backend import to_numpy

NAMES = ["linear", "tanh", "sigmoid", "relu", "leaky_relu", "leaky_relu(0.2)", "elu", "elu(0.5)", "softplus"]


def _points(seed, n=64):
    x = np.random.default_rng(seed).standard_normal(n) * 3
    return x[np.abs(x) > 1e-3]  # away from kinks, where f' is one-sided


@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_torch_autograd(name):
    torch = pytest.importorskip("torch")
    from proofs.oracle import torch_activation

    x = _points(0)
    act = A.get(name)
    xt = torch.tensor(x, requires_grad=True)
    torch_activation(name)(xt).sum().backward()
    np.testing.assert_allclose(act.df(x), xt.grad.numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(act.f(x), torch_activation(name)(torch.tensor(x)).numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "leaky_relu(0.2)", "elu"])
def test_derivative_at_kink_follows_torch(name):
    torch = pytest.importorskip("torch")
    from proofs.oracle import torch_activation

    xt = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    torch_activation(name)(xt).sum().backward()
    assert A.get(name).df(np.zeros(1))[0] == xt.grad.numpy()[0]


@pytest.mark.parametrize("name", [n for n in NAMES if A.get(n).invertible])
def test_inverse_roundtrip(name):
    act = A.get(name)
    x = _points(1)
    np.testing.assert_allclose(act.inverse(act.f(x)), x, rtol=1e-9, atol=1e-12)


def test_derivative_by_central_differences():
    # Dot-product (JAX check_grads) form: <f'(x) * u, 1> vs (sum f(x + s u) - sum f(x - s u)) / 2s, order s^2.
    for name in ["tanh", "sigmoid", "softplus", "elu"]:
        act = A.get(name)
        x = _points(2)
        u = np.random.default_rng(3).standard_normal(x.shape)
        exact = float(np.sum(act.df(x) * u))
        errs = []
        for s in (1e-3, 5e-4):
            fd = (np.sum(act.f(x + s * u)) - np.sum(act.f(x - s * u))) / (2 * s)
            errs.append(abs(fd - exact))
        assert errs[1] < errs[0] / 3 or errs[1] < 1e-10, (name, errs)


@pytest.mark.parametrize("name,bad", [("tanh", 1.0), ("tanh", -1.5), ("sigmoid", 0.0), ("sigmoid", 1.2),
                                      ("softplus", -0.1), ("elu", -1.0)])
def test_inverse_domain_errors(name, bad):
    with pytest.raises(ValueError, match=name.split("(")[0]):
        A.get(name).inverse(np.array([0.1, bad]), name="target")


def test_not_invertible():
    assert A.get("relu").inv is None
    with pytest.raises(ValueError, match="not invertible"):
        A.get("relu").inverse(np.ones(2))


def test_unknown_and_bad_parameters():
    with pytest.raises(ValueError, match="unknown name 'swish'"):
        A.get("swish")
    with pytest.raises(ValueError, match="slope"):
        A.get("leaky_relu(0)")
    with pytest.raises(ValueError, match="alpha"):
        A.get("elu(-1)")
    with pytest.raises(TypeError, match="activation"):
        A.get(3)


def test_no_overflow_at_extremes():
    x = np.array([-800.0, -50.0, 0.0, 50.0, 800.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is harmless
        for name in NAMES:
            act = A.get(name)
            assert np.all(np.isfinite(act.f(x))) and np.all(np.isfinite(act.df(x)))


@pytest.mark.parametrize("name", NAMES)
def test_backends_agree(name, backend):
    x = _points(4)
    act = A.get(name)
    out = act.f(backend(x))
    assert type(out) is type(backend(x))
    np.testing.assert_allclose(to_numpy(out), act.f(x), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(to_numpy(act.df(backend(x))), act.df(x), rtol=1e-14, atol=1e-15)


@given(st.floats(-30, 30, allow_nan=False, allow_subnormal=False))
def test_dtype_preserved_float32(v):
    x = np.array([v], dtype=np.float32)
    for name in NAMES:
        assert A.get(name).f(x).dtype == np.float32
        assert A.get(name).df(x).dtype == np.float32


@pytest.mark.parametrize("name", ["linear", "leaky_relu", "leaky_relu(0.2)", "elu", "tanh", "softplus"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_inverse_rejects_non_finite(name, bad):
    # Regression: NaN fails every `>` / `<` bound test silently, so inverses with unbounded ends
    # (linear, leaky_relu, elu above) returned NaN instead of raising.
    with pytest.raises(ValueError, match="finite"):
        A.get(name).inverse(np.array([0.1, bad]), name="target")


@pytest.mark.parametrize("name", ["linear", "tanh", "sigmoid", "relu", "leaky_relu", "elu", "softplus"])
@pytest.mark.parametrize("backend", ["numpy", "array_api_strict", "torch"])
def test_times_df_is_the_backward_product_and_leaves_inputs_alone(name, backend):
    """Issue 17: ``times_df(g, a, z)`` = ``g * df(a)``, bitwise for the fused tanh/sigmoid forms (the
    same products in the same order, exact negations), on read-only NumPy inputs and every backend;
    the inputs are not modified. Control: a fused form from the wrong z (z = a) differs."""
    from refimpl.backend import resolve_namespace, from_numpy, to_numpy

    xp = resolve_namespace(backend)
    gen = np.random.default_rng(3)
    a_h, g_h = 2 * gen.standard_normal((5, 7)), gen.standard_normal((5, 7))
    act = A.get(name)
    a, g = from_numpy(a_h, xp, "float64"), from_numpy(g_h, xp, "float64")
    z = act.f(a)
    if backend == "numpy":
        for arr in (a, g, z):
            arr.setflags(write=False)
    before = [to_numpy(v) for v in (a, g, z)]
    out = to_numpy(act.times_df(g, a, z))
    assert np.array_equal(out, to_numpy(g * act.df(a)))
    assert np.array_equal(to_numpy(act.times_df(g, a)), out)  # without z: g * df(a)
    for v, b in zip((a, g, z), before):
        assert np.array_equal(to_numpy(v), b)
    if act.fused is not None:
        assert not np.allclose(to_numpy(act.times_df(g, a, a)), out)


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict", "torch"])
def test_in_place_forms_are_bitwise_the_written_formulas(backend):
    """Issue 17: softplus, sigmoid, relu and elu work on one temporary / compare with a 0-d zero (a
    fresh full-size ``zeros_like`` costs ~3 ms per 256x1024 float64 array in NumPy: page faults). The
    results are bitwise the formulas in their comments, on read-only NumPy input, float64 and float32,
    including 0, -0, huge and tiny arguments; the input is not modified."""
    from refimpl.backend import resolve_namespace, from_numpy, to_numpy

    xp = resolve_namespace(backend)
    gen = np.random.default_rng(5)
    special = np.array([0.0, -0.0, 1e-300, -1e-300, 40.0, -40.0, 700.0, -700.0, 1e6, -1e6])
    for dtype in ("float64", "float32"):
        x_h = np.concatenate([4 * gen.standard_normal(200), special]).astype(dtype)
        x = from_numpy(x_h, xp, dtype)
        if backend == "numpy":
            x.setflags(write=False)
        zero = xp.zeros_like(x)
        written = {
            "softplus": xp.maximum(x, zero) + xp.log1p(xp.exp(-xp.abs(x))),
            "sigmoid": 0.5 * (1 + xp.tanh(0.5 * x)),
            "relu": xp.maximum(x, zero),
            "elu": xp.where(x > 0, x, 1.0 * xp.expm1(xp.minimum(x, zero))),
        }
        for name, want in written.items():
            got = to_numpy(A.get(name).f(x))
            assert got.dtype == np.dtype(dtype)
            assert np.array_equal(got, to_numpy(want)), (name, dtype)
        assert np.array_equal(to_numpy(x), x_h)


@pytest.mark.parametrize("name", NAMES)
def test_torch_autograd_runs_through_every_activation(name):
    """Review of issue 17: the in-place forms must not modify an output torch autograd saved for
    its backward pass (the first in-place sigmoid did: "modified by an inplace operation"). On torch
    tensors that require gradients, f(x).sum().backward() gives df(x) (away from kinks)."""
    torch = pytest.importorskip("torch")
    act = A.get(name)
    xh = _points(7)
    x = torch.tensor(xh, dtype=torch.float64, requires_grad=True)
    act.f(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), to_numpy(act.df(torch.tensor(xh))), rtol=1e-12, atol=1e-15)
