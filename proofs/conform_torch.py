"""`refimpl conform` for torch users: refimpl's network as an ``nn.Sequential``, and an adapter that
turns a torch training-step function into the conform contract.

    from proofs.conform_torch import torch_impl

    @torch_impl
    def my_fa(model, x, y, state, loss="mse"):     # model: nn.Sequential of (Conv2d, act, pool,)* (Flatten,)
        ...                                         #        (Linear, act)*; set .grad on its Conv2d/Linear
                                                    # parameters (or return (dW, db) / [grad per parameter])

    proofs.conform.check("fa", my_fa, instances=200)   # or the pytest fixture refimpl_conform

* :func:`to_sequential` builds ``nn.Sequential(Linear, act, Linear, act, ...)`` from the instance;
  on a convolutional instance (conform ``--arch conv``) each conv layer is ``Conv2d, act``, then
  :func:`keep_module` when it passes on only its first ``keep`` channels (GAIT-prop/TPInverse's
  invertible convs) and, when pooled, ``MaxPool2d``/``AvgPool2d``, and an ``nn.Flatten()`` precedes the first ``Linear`` after a
  conv (torch flatten order, as refimpl's). Activation names are parsed once, by
  :func:`activation_module` (through :func:`refimpl.activations.get`), so a user never parses
  ``"leaky_relu(0.2)"``.
* The function receives ``model`` (parameters in the instance's dtype, float64 or float32, with
  ``requires_grad``), ``x``, ``y`` (integer labels stay int64), ``state`` (arrays as tensors,
  lists as lists of tensors, scalars as they are) and the hyper-parameters it names (all of them
  with ``**hyper``).
* ``@torch_impl(model=MyNet)``: your own ``nn.Module`` class (called with conform's layer
  descriptions) instead of the ``nn.Sequential``; the weights go into its ``nn.Conv2d`` /
  ``nn.Linear`` layers in order (:func:`load_weights`).
* It may set ``.grad`` on the ``nn.Conv2d``/``nn.Linear`` parameters (return ``None``), return ``(dW, db)``
  (per-layer lists), return one gradient per ``model.parameters()`` entry, or, for ``--targets``,
  the ``L + 1`` targets.

:func:`loss` is refimpl's loss convention in torch (mse ``0.5 ||h - y||^2`` summed over units,
every loss averaged over the batch; ce on logits with labels or one-hot rows).

torch is imported when these functions run, never at import of refimpl.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

__all__ = ["activation_module", "keep_module", "to_sequential", "weighted_layers", "linear_layers", "load_weights",
           "load_linear_weights", "torch_impl", "loss", "state_to_torch"]


def activation_module(name: str):
    """The ``torch.nn`` module of refimpl's activation ``name``: :func:`refimpl.torch_bridge.activation_module`
    (the one place that maps names to torch modules and back)."""
    from refimpl.torch_bridge import activation_module as _am

    return _am(name)


def keep_module(keep: int):
    """The module of a conv layer with ``keep`` (``z[:, :keep]``, after its activation, before its
    pooling): :func:`refimpl.torch_bridge.keep_module` (``Network.from_torch`` maps it back)."""
    from refimpl.torch_bridge import keep_module as _km

    return _km(keep)


def _torch_dtype(a):
    import torch

    return torch.float32 if np.asarray(a).dtype == np.float32 else torch.float64


def _conv_module(i: int, sp: dict, W, dt):
    from torch import nn

    Co, Ci, kh, kw = (int(n) for n in np.asarray(W).shape)
    ks = tuple(sp.get("kernel_size", (kh, kw)))
    if ks != (kh, kw) or int(sp.get("in_channels", Ci)) != Ci or int(sp.get("out_channels", Co)) != Co:
        raise ValueError(f"layers[{i}] ({sp.get('spec')}): expected a weight of shape "
                         f"({sp.get('out_channels')}, {sp.get('in_channels')}, {ks[0]}, {ks[1]}), got {(Co, Ci, kh, kw)}")
    return nn.Conv2d(Ci, Co, (kh, kw), stride=tuple(sp["stride"]), padding=tuple(sp["padding"]), bias=True).to(dt)


def _pool_module(i: int, pool: dict):
    from torch import nn

    cls = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}.get(pool.get("type"))
    if cls is None:
        raise ValueError(f"layers[{i}].pool: expected type 'max' or 'avg', got {pool!r}")
    return cls(tuple(pool["kernel_size"]), tuple(pool["stride"]))


def to_sequential(weights, biases, activations, dtype=None, requires_grad: bool = True, layers=None):
    """``nn.Sequential(Linear_1, act_1, ..., Linear_L, act_L)`` holding copies of ``weights``
    (``(n_out, n_in)``, the ``nn.Linear`` layout) and ``biases``; ``dtype`` defaults to the arrays'
    (float32 or float64). ``layers``: conform's layer descriptions (:func:`proofs.conform.layer_specs`),
    needed for a convolutional instance: a ``"conv2d"`` entry becomes ``nn.Conv2d(in_channels,
    out_channels, kernel_size, stride, padding)`` (weights ``(out, in, kh, kw)``), its activation,
    :func:`keep_module` (``z[:, :keep]``) when ``keep`` is set, and
    ``nn.MaxPool2d``/``nn.AvgPool2d(kernel_size, stride)`` when ``pool`` is set; an
    ``nn.Flatten()`` goes before a linear layer whose input is an image (``flatten``: torch order).
    ``Network.from_torch`` maps the result back (:mod:`refimpl.torch_bridge`)."""
    import torch
    from torch import nn

    if not (len(weights) == len(biases) == len(activations)):
        raise ValueError(f"weights, biases, activations: expected one per layer, got {len(weights)}, "
                         f"{len(biases)}, {len(activations)}")
    if layers is not None and len(layers) != len(weights):
        raise ValueError(f"layers: expected one description per layer ({len(weights)}), got {len(layers)}")
    for i, sp in enumerate(layers or ()):
        if sp.get("type") not in ("linear", "conv2d"):
            raise ValueError(f"layers[{i}]: a {sp.get('type')!r} layer ({sp.get('spec')}) has no torch module in "
                             "to_sequential (linear and conv2d layers)")
    if layers is None and any(np.asarray(W).ndim != 2 for W in weights):
        raise ValueError("layers: a convolutional instance (4-d weights) needs conform's layer descriptions "
                         "(stride, padding, pooling); pass layers=...")
    dt = dtype or _torch_dtype(weights[0])
    mods = []
    for i, (W, b, a) in enumerate(zip(weights, biases, activations)):
        W = np.asarray(W)
        sp = layers[i] if layers is not None else {"type": "linear"}
        if sp.get("type") == "conv2d":
            m = _conv_module(i, sp, W, dt)
        else:
            if W.ndim != 2:
                raise ValueError(f"weights[{i}]: a linear layer expects a 2-d weight, got shape {W.shape}")
            if sp.get("flatten"):
                mods.append(nn.Flatten())
            m = nn.Linear(W.shape[1], W.shape[0], bias=True).to(dt)
        with torch.no_grad():
            m.weight.copy_(torch.as_tensor(W, dtype=dt))
            m.bias.copy_(torch.as_tensor(np.asarray(b), dtype=dt))
        m.weight.requires_grad_(requires_grad)
        m.bias.requires_grad_(requires_grad)
        mods += [m, activation_module(a)]
        if sp.get("type") == "conv2d" and sp.get("keep") is not None:  # the first `keep` channels pass on
            mods.append(keep_module(int(sp["keep"])))
        if sp.get("type") == "conv2d" and sp.get("pool") is not None:
            mods.append(_pool_module(i, sp["pool"]))
    return nn.Sequential(*mods)


def weighted_layers(model) -> list:
    """The ``nn.Conv2d`` and ``nn.Linear`` modules of ``model`` in order (the layers refimpl's
    ``weights`` index)."""
    from torch import nn

    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def linear_layers(model) -> list:
    """:func:`weighted_layers` (the name of before conv instances, kept: on a dense model the
    ``nn.Linear`` modules in order)."""
    return weighted_layers(model)


def state_to_torch(state: dict, dtype):
    """Arrays as tensors (float arrays in ``dtype``), lists element-wise, everything else as is."""
    import torch

    def conv(v):
        if isinstance(v, np.ndarray):
            return torch.as_tensor(v, dtype=dtype) if np.issubdtype(v.dtype, np.floating) else torch.as_tensor(v)
        if isinstance(v, (list, tuple)):
            return [conv(a) for a in v]
        if isinstance(v, dict):
            return {k: conv(a) for k, a in v.items()}
        return v

    return {k: conv(v) for k, v in state.items()}


def loss(h, y, name: str = "mse"):
    """refimpl's batch-mean loss in torch: ``mse`` = mean_b 0.5 ||h_b - y_b||^2; ``ce`` = mean_b
    cross-entropy of the logits ``h`` (``y`` integer labels or one-hot / probability rows)."""
    import torch.nn.functional as F

    if name == "mse":
        return 0.5 * ((h - y) ** 2).sum(1).mean()
    if name == "ce":
        return F.cross_entropy(h, y.long()) if y.dim() == 1 else F.cross_entropy(h, y)
    raise ValueError(f"loss: expected 'mse' or 'ce', got {name!r}")


def _call_kwargs(fn, hyper: dict) -> dict:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(hyper)
    return {k: v for k, v in hyper.items() if k in params}


def _np(t):
    if t is None:
        return None
    if hasattr(t, "detach"):
        return t.detach().cpu().numpy()
    return np.asarray(t)


def load_weights(module, weights, biases, dtype=None):
    """Copy ``weights``/``biases`` into ``module``'s ``nn.Conv2d``/``nn.Linear`` layers in order
    (:func:`weighted_layers`; shapes checked), cast the module to ``dtype`` and make the parameters
    require gradients; returns ``module``."""
    import torch

    lins = weighted_layers(module)
    if len(lins) != len(weights):
        raise ValueError(f"model: expected {len(weights)} nn.Conv2d/nn.Linear layers (one per refimpl layer), "
                         f"found {len(lins)}")
    dt = dtype or _torch_dtype(weights[0])
    module.to(dt)
    with torch.no_grad():
        for i, (m, W, b) in enumerate(zip(lins, weights, biases)):
            W, b = np.asarray(W), np.asarray(b)
            if tuple(m.weight.shape) != W.shape or m.bias is None or tuple(m.bias.shape) != b.shape:
                raise ValueError(f"model: {type(m).__name__} #{i} has weight {tuple(m.weight.shape)} and bias "
                                 f"{None if m.bias is None else tuple(m.bias.shape)}, expected {W.shape} and {b.shape}")
            m.weight.copy_(torch.as_tensor(W, dtype=dt))
            m.bias.copy_(torch.as_tensor(b, dtype=dt))
    for p in module.parameters():
        p.requires_grad_(True)
        p.grad = None
    return module


def load_linear_weights(module, weights, biases, dtype=None):
    """:func:`load_weights` (the name of before conv instances, kept)."""
    return load_weights(module, weights, biases, dtype)


def _adapter_signature(weights, biases, activations, x, y, state, layers=None, **hyper):  # pragma: no cover
    """The signature every :func:`torch_impl` adapter shows conform."""


_ADAPTER_SIGNATURE = inspect.signature(_adapter_signature)


def torch_impl(fn=None, *, model=None):
    """Wrap ``fn(model, x, y, state, **hyper)`` (see the module docstring) into conform's contract
    ``impl(weights, biases, activations, x, y, state, **hyper) -> (dW, db)``.

    ``model``: your own ``nn.Module`` instead of :func:`to_sequential`'s: a callable
    ``model(layers) -> nn.Module`` receiving conform's layer descriptions (``in_features``,
    ``out_features``, ``activation`` per layer; conv layers as :func:`proofs.conform.layer_specs`);
    the instance's weights are copied into its ``nn.Conv2d``/``nn.Linear`` layers in order
    (:func:`load_weights`). Usable as ``@torch_impl`` or
    ``@torch_impl(model=MyNet)``.
    """
    if fn is None:
        return lambda f: torch_impl(f, model=model)
    import torch  # fail early, with the import error, if torch is missing

    @functools.wraps(fn)
    def adapter(weights, biases, activations, x, y, state, layers=None, **hyper):
        dt = _torch_dtype(weights[0])
        if model is None:
            net = to_sequential(weights, biases, activations, dtype=dt, layers=layers)
        else:
            specs = layers if layers is not None else [
                {"type": "linear", "in_features": int(np.asarray(W).shape[1]),
                 "out_features": int(np.asarray(W).shape[0]), "activation": a, "bias": True}
                for W, a in zip(weights, activations)]
            net = load_weights(model(specs), weights, biases, dt)
        if layers is not None:
            hyper = dict(hyper, layers=layers)  # for an fn that names it
        xt = torch.as_tensor(np.asarray(x), dtype=dt)
        yn = np.asarray(y)
        yt = torch.as_tensor(yn) if np.issubdtype(yn.dtype, np.integer) else torch.as_tensor(yn, dtype=dt)
        out = fn(net, xt, yt, state_to_torch(dict(state), dt), **_call_kwargs(fn, hyper))
        lins = weighted_layers(net)
        L = len(lins)
        if out is None:
            missing = [i for i, m in enumerate(lins) if m.weight.grad is None or m.bias.grad is None]
            if missing:
                raise ValueError(f"the torch implementation returned nothing and left .grad unset on layer(s) "
                                 f"{missing} (expected .grad on every nn.Conv2d/nn.Linear weight and bias, or a "
                                 "return value)")
            return [_np(m.weight.grad) for m in lins], [_np(m.bias.grad) for m in lins]
        if isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(o, (tuple, list)) for o in out):
            return [_np(g) for g in out[0]], [_np(g) for g in out[1]]
        if isinstance(out, (tuple, list)) and len(out) == 2 * L and all(hasattr(o, "shape") for o in out):
            params = list(net.parameters())  # one gradient per parameter, in model.parameters() order
            by_id = {id(p): g for p, g in zip(params, out)}
            return [_np(by_id[id(m.weight)]) for m in lins], [_np(by_id[id(m.bias)]) for m in lins]
        if isinstance(out, (tuple, list)) and len(out) == L + 1:  # targets
            return [_np(t) for t in out]
        raise ValueError("the torch implementation must set .grad (return None), return (dW, db), one gradient "
                         f"per model parameter ({2 * L}), or L + 1 = {L + 1} targets; got {type(out).__name__}")

    adapter.torch_fn = fn
    # conform reads the signature to decide what to pass: the adapter's own (it takes ``layers``,
    # which a conv instance needs, and filters ``hyper`` for ``fn`` itself), not ``fn``'s that
    # functools.wraps would expose
    adapter.__signature__ = _ADAPTER_SIGNATURE
    return adapter
