"""Hypothesis profiles and the backend fixture shared by the suite.

Profiles (chosen with HYPOTHESIS_PROFILE, default ``ci``):
* ``ci``: derandomized, no database, no deadline (the built-in CI profile, restated);
* ``dev``: 20 examples, for fast local iteration;
* ``thorough``: 1000 examples, random, with the example database (nightly / before a release).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", database=None, deadline=None, derandomize=True, print_blob=True,
                          max_examples=25, suppress_health_check=(HealthCheck.too_slow,))
settings.register_profile("dev", deadline=None, max_examples=20, suppress_health_check=(HealthCheck.too_slow,))
settings.register_profile("thorough", deadline=None, max_examples=1000, derandomize=False,
                          suppress_health_check=(HealthCheck.too_slow,))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _has_cuda() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


BACKENDS = ["numpy", "numpy:readonly", "array_api_strict",
            pytest.param("torch", marks=pytest.mark.oracle),
            pytest.param("cupy", marks=pytest.mark.gpu)]


class Backend:
    """Moves host NumPy arrays to one backend (``numpy:readonly`` gives read-only NumPy arrays)."""

    def __init__(self, name: str):
        self.name = name
        base = name.split(":")[0]
        if base == "torch":
            pytest.importorskip("torch")
        if base == "cupy" and not _has_cuda():
            pytest.skip("cupy backend needs CuPy and a CUDA device")
        if base == "array_api_strict":
            pytest.importorskip("array_api_strict")
        from refimpl.backend import resolve_namespace

        self.base = base
        self.xp = resolve_namespace(base)

    def __call__(self, a, dtype="float64"):
        from refimpl.backend import from_numpy

        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.integer):
            out = from_numpy(a.astype(np.float64), self.xp, "float64")
            return self.xp.astype(out, self.xp.int64)
        out = from_numpy(a, self.xp, dtype)
        if self.name == "numpy:readonly":
            out = np.asarray(out)
            out.flags.writeable = False
        return out

    def net(self, net):
        """A refimpl Network moved to this backend (read-only arrays for numpy:readonly)."""
        import refimpl as ri
        from refimpl.backend import to_numpy

        return ri.Network(tuple(self(to_numpy(W)) for W in net.weights),
                          tuple(self(to_numpy(b)) for b in net.biases), net.activations,
                          layers=net.layers, input_shape=net.input_shape)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return Backend(request.param)
