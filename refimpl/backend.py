"""Array backends: the namespace of the inputs, dtypes, seeded randomness, transfers.

Every public function of refimpl starts with ``xp = namespace(*arrays)`` and uses ``xp.`` for all
array work, so that NumPy, CuPy, torch and ``array_api_strict`` inputs run through the same code
and come back as arrays of their own kind (DESIGN.md, "Backends").

Random numbers are not part of the array API standard. :func:`rng` returns a host
``numpy.random.Generator``; draws are made on the host in float64 and moved to the target backend
with :func:`from_numpy`, so one seed gives the same numbers on every backend and device.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import array_api_compat

__all__ = [
    "namespace",
    "resolve_namespace",
    "resolve_dtype",
    "rng",
    "from_numpy",
    "to_numpy",
    "asarray",
    "device_of",
    "is_floating",
    "check_finite",
    "check_same_dtype",
    "backend_name",
    "backend_unavailable",
    "BACKENDS",
]

#: Names accepted wherever a backend is chosen by name (CLI, ``Network.init(xp=...)``).
BACKENDS = ("numpy", "array_api_strict", "torch", "cupy")


def _namespace_name(xp) -> str:
    name = getattr(xp, "__name__", type(xp).__name__)
    return name


def namespace(*arrays, names: tuple[str, ...] | None = None):
    """Return the array-API namespace shared by ``arrays`` (``None`` and Python scalars ignored).

    Raises ``TypeError`` naming the arguments when the inputs come from different libraries
    (array_api_compat's own message does not say which argument is the odd one).
    """
    present = [(i, a) for i, a in enumerate(arrays) if a is not None and not isinstance(a, (int, float, bool))]
    if not present:
        raise TypeError("namespace: expected at least one array argument, got none")
    try:
        return array_api_compat.array_namespace(*(a for _, a in present))
    except TypeError as exc:
        labels = names or tuple(f"argument {i}" for i in range(len(arrays)))
        kinds = ", ".join(f"{labels[i]}: {type(a).__module__}.{type(a).__name__}" for i, a in present)
        raise TypeError(
            "all arrays must come from one array library (mixed backends are not converted "
            f"silently); got {kinds}"
        ) from exc


def resolve_namespace(xp=None):
    """Turn ``xp`` (None, a backend name, or a namespace module) into an array-API namespace.

    ``None`` and ``"numpy"`` mean NumPy. Names: ``numpy``, ``array_api_strict``, ``torch``, ``cupy``.
    """
    if xp is None:
        xp = "numpy"
    if isinstance(xp, str):
        if xp == "numpy":
            import array_api_compat.numpy as mod
        elif xp == "array_api_strict":
            try:
                import array_api_strict as mod
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ImportError("backend 'array_api_strict' needs the package array-api-strict "
                                  "(pip install refimpl[test])") from exc
        elif xp == "torch":
            try:
                import array_api_compat.torch as mod
            except ImportError as exc:  # pragma: no cover
                raise ImportError("backend 'torch' needs torch (pip install refimpl[oracle])") from exc
        elif xp == "cupy":
            try:
                import array_api_compat.cupy as mod
            except ImportError as exc:  # pragma: no cover
                raise ImportError("backend 'cupy' needs CuPy and a CUDA device (pip install refimpl[gpu])") from exc
        else:
            raise ValueError(f"xp: expected None, a namespace or one of {BACKENDS}, got {xp!r}")
        return mod
    # A raw library module (numpy, torch, cupy) is wrapped in its compat namespace.
    name = _namespace_name(xp)
    if name == "numpy":
        import array_api_compat.numpy as mod
        return mod
    if name == "torch":
        import array_api_compat.torch as mod
        return mod
    if name == "cupy":
        import array_api_compat.cupy as mod
        return mod
    return xp


def backend_unavailable(name: str) -> str | None:
    """``None`` if backend ``name`` can run here, else one line naming what is missing.

    ``cupy`` needs the package *and* a CUDA device; ``torch`` and ``array_api_strict`` the package.
    The CLI turns the line into exit status 2 (a missing backend is not a failed theorem)."""
    try:
        resolve_namespace(name)
    except ImportError:
        pkg, how = {"cupy": ("CuPy", "pip install refimpl[gpu], or `make gpu-check` on a GPU machine"),
                    "torch": ("torch", "pip install refimpl[oracle]"),
                    "array_api_strict": ("array-api-strict", "pip install refimpl[test]")}.get(name, (name, ""))
        return f"backend {name!r} is not available: {pkg} is not installed ({how})"
    if name == "cupy":
        try:
            import cupy

            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDA driver/runtime errors have several types
            return f"backend 'cupy' is not available: CuPy is installed but CUDA does not work ({exc})"
        if n < 1:
            return "backend 'cupy' is not available: CuPy is installed but no CUDA device is visible"
    return None


def backend_name(xp) -> str:
    """Short name of a namespace: ``numpy``, ``array_api_strict``, ``torch``, ``cupy`` or its module name."""
    name = _namespace_name(xp)
    for short in BACKENDS:
        if name == short or name.endswith("." + short) or name.startswith(short):
            return short
    return name


def resolve_dtype(xp, dtype):
    """Resolve ``dtype`` (a name such as ``"float64"`` or a dtype object) in namespace ``xp``."""
    if isinstance(dtype, str):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        return getattr(xp, dtype)
    return dtype


def is_floating(xp, dtype) -> bool:
    return dtype in (xp.float32, xp.float64)


def rng(seed) -> np.random.Generator:
    """Host random generator for ``seed`` (an int, a SeedSequence or a Generator, returned as is).

    Draws are made on the host so that one seed gives identical numbers on every backend.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool,)) or not isinstance(seed, (int, np.integer, np.random.SeedSequence)):
        raise TypeError(f"seed: expected an int, a numpy SeedSequence or Generator, got {type(seed).__name__}")
    return np.random.default_rng(seed)


def device_of(x):
    return array_api_compat.device(x)


def from_numpy(a: np.ndarray, xp, dtype=None, device=None):
    """Move a host NumPy array to namespace ``xp`` (and ``device``), cast to ``dtype``.

    The result never shares memory with ``a``.
    """
    a = np.array(a, copy=True)
    if dtype is not None:
        dtype = resolve_dtype(xp, dtype)
    if backend_name(xp) == "numpy":
        out = xp.asarray(a)
    elif backend_name(xp) == "torch":
        import torch

        out = torch.from_numpy(a)
        if device is not None:
            out = out.to(device)
    else:
        out = xp.asarray(a, device=device) if device is not None else xp.asarray(a)
    if dtype is not None and out.dtype != dtype:
        out = xp.astype(out, dtype)
    return out


def to_numpy(x) -> np.ndarray:
    """Copy any supported array to a host NumPy array (the one host/device transfer helper)."""
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        return np.array(x, copy=True)
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy().copy()
    return np.array(np.from_dlpack(x), copy=True)


def asarray(x, *, like):
    """``x`` (host data or an array) as an array of ``like``'s namespace, device and dtype."""
    xp = namespace(like)
    if isinstance(x, np.ndarray) or isinstance(x, (list, tuple, float, int)):
        return from_numpy(np.asarray(x, dtype=np.float64), xp, dtype=like.dtype, device=device_of(like))
    return xp.asarray(x, dtype=like.dtype, device=device_of(like))


def check_finite(xp, x, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` if ``x`` holds NaN or inf (non-finite inputs are rejected)."""
    if not bool(xp.all(xp.isfinite(x))):
        n_bad = int(xp.sum(xp.astype(~xp.isfinite(x), xp.int64)))
        raise ValueError(f"{name}: expected finite values, got {n_bad} NaN/inf entries (shape {tuple(x.shape)})")


def check_same_dtype(arrays, names, expected=None) -> None:
    """Raise ``TypeError`` if the arrays do not all share one floating dtype."""
    dtypes = [(n, a.dtype) for n, a in zip(names, arrays) if a is not None]
    ref_name, ref = dtypes[0] if expected is None else ("the network", expected)
    for n, d in dtypes:
        if d != ref:
            raise TypeError(f"{n}: expected dtype {ref} (as {ref_name}), got {d}; "
                            "dtypes are never mixed silently, cast explicitly")


def norm(xp, x) -> float:
    """Frobenius / Euclidean norm of ``x`` as a Python float."""
    return math.sqrt(float(xp.sum(x * x)))
