import numpy as np
import pytest

from refimpl import backend as B


def test_namespace_names_mixed_arguments():
    import array_api_strict as xs

    with pytest.raises(TypeError, match="W: numpy.ndarray, b: array_api_strict"):
        B.namespace(np.ones(2), xs.ones(2), names=("W", "b"))


def test_rng_is_host_and_deterministic():
    a = B.rng(5).standard_normal(4)
    np.testing.assert_array_equal(a, B.rng(5).standard_normal(4))
    with pytest.raises(TypeError, match="seed"):
        B.rng(1.5)


def test_from_numpy_copies_and_casts(backend):
    a = np.arange(6.0).reshape(2, 3)
    out = B.from_numpy(a, backend.xp, "float32")
    assert out.dtype == backend.xp.float32
    a[0, 0] = 99
    assert B.to_numpy(out)[0, 0] == 0
    back = B.to_numpy(backend(np.arange(3.0)))
    assert isinstance(back, np.ndarray) and back.flags.writeable


def test_resolve():
    assert B.backend_name(B.resolve_namespace(None)) == "numpy"
    assert B.backend_name(B.resolve_namespace("array_api_strict")) == "array_api_strict"
    with pytest.raises(ValueError, match="xp: expected"):
        B.resolve_namespace("jax")
    with pytest.raises(ValueError, match="dtype"):
        B.resolve_dtype(np, "int8")


def test_check_finite_reports_count():
    with pytest.raises(ValueError, match="v: expected finite values, got 2 NaN/inf"):
        B.check_finite(B.resolve_namespace(), np.array([1.0, np.nan, np.inf]), "v")
