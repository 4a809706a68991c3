"""``Network.from_torch``: a user's ``torch.nn.Sequential`` as a refimpl network, weights copied.

torch is imported only inside :func:`network_from_torch` (``refimpl`` never imports torch at
module level). The mapping is one-to-one: the i-th ``Conv2d``/``Linear`` module becomes layer
``i+1`` with ``weights[i] = module.weight`` (torch's layout, so ``upd.dW[i]`` compares with
``module.weight.grad``), ``biases[i] = module.bias`` (zeros when the module has none); an
activation module after it sets ``activations[i]`` (none: ``"linear"``); a pooling module after a
conv layer's activation becomes that layer's ``pool``; ``Flatten`` marks the (implicit) flatten
between the conv part and the dense part.
"""

from __future__ import annotations

import numpy as np

from . import layers as _layers
from .backend import from_numpy, resolve_namespace, resolve_dtype

__all__ = ["network_from_torch", "activation_name"]


def activation_name(mod, index: int):
    """refimpl's activation name of a torch activation module, or ``None`` if ``mod`` is not one."""
    import torch.nn as nn

    if isinstance(mod, nn.Tanh):
        return "tanh"
    if isinstance(mod, nn.Sigmoid):
        return "sigmoid"
    if isinstance(mod, nn.ReLU):
        return "relu"
    if isinstance(mod, nn.LeakyReLU):
        return f"leaky_relu({float(mod.negative_slope)!r})"
    if isinstance(mod, nn.ELU):
        return f"elu({float(mod.alpha)!r})"
    if isinstance(mod, nn.Softplus):
        if float(mod.beta) != 1.0:
            raise ValueError(f"module[{index}]: Softplus with beta={mod.beta} is not supported (refimpl's softplus "
                             "is log(1 + e^a), beta 1)")
        return "softplus"
    return None


def _pool_spec(mod, index: int):
    import torch.nn as nn

    for name in ("padding",):
        p = getattr(mod, name)
        if (p if isinstance(p, int) else max(p)) != 0:
            raise ValueError(f"module[{index}]: {type(mod).__name__} with padding={p} is not supported (padding 0 only)")
    if getattr(mod, "ceil_mode", False):
        raise ValueError(f"module[{index}]: {type(mod).__name__} with ceil_mode=True is not supported")
    if isinstance(mod, nn.MaxPool2d):
        d = mod.dilation
        if (d if isinstance(d, int) else max(d)) != 1 or mod.return_indices:
            raise ValueError(f"module[{index}]: MaxPool2d with dilation != 1 or return_indices is not supported")
        return _layers.MaxPool2d(mod.kernel_size, mod.stride)
    if mod.divisor_override is not None:
        raise ValueError(f"module[{index}]: AvgPool2d with divisor_override is not supported")
    return _layers.AvgPool2d(mod.kernel_size, mod.stride)


def network_from_torch(cls, module, input_shape, dtype=None, xp=None, device=None):
    import torch
    import torch.nn as nn

    if isinstance(module, nn.Sequential):
        mods = list(module)
    elif isinstance(module, (list, tuple)):
        mods = list(module)
    else:
        raise TypeError(f"module: expected a torch.nn.Sequential, got {type(module).__name__}")
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    input_shape = tuple(_layers.check_int("input_shape", n, 1) for n in input_shape)
    specs, Ws, bs, acts = [], [], [], []
    state = "start"  # what the last accepted module was: start | weighted | act | pool | flatten
    flat_seen = False
    for i, mod in enumerate(mods):
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            if isinstance(mod, nn.Conv2d):
                if flat_seen:
                    raise ValueError(f"module[{i}]: Conv2d after Flatten/Linear is not supported")
                if mod.groups != 1 or tuple(mod.dilation) != (1, 1):
                    raise ValueError(f"module[{i}]: Conv2d with groups={mod.groups}, dilation={mod.dilation} is not "
                                     "supported (groups 1, dilation 1 only)")
                if isinstance(mod.padding, str) or mod.padding_mode != "zeros":
                    raise ValueError(f"module[{i}]: Conv2d padding={mod.padding!r}, padding_mode={mod.padding_mode!r} "
                                     "is not supported (integer zero padding only)")
                specs.append(_layers.Conv2d(stride=tuple(mod.stride), padding=tuple(mod.padding)))
            else:
                flat_seen = True
                specs.append(_layers.Linear())
            W = mod.weight.detach().cpu().numpy()
            b = mod.bias.detach().cpu().numpy() if mod.bias is not None else np.zeros(W.shape[0], dtype=W.dtype)
            Ws.append(W)
            bs.append(b)
            acts.append("linear")
            state = "weighted"
            continue
        name = activation_name(mod, i)
        if name is not None:
            if state != "weighted":
                raise ValueError(f"module[{i}]: activation {type(mod).__name__} must directly follow a Conv2d or "
                                 "Linear module (one activation per layer)")
            acts[-1] = name
            state = "act"
            continue
        if isinstance(mod, nn.Identity):
            continue
        if isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            if state not in ("weighted", "act") or not isinstance(specs[-1], _layers.Conv2d):
                raise ValueError(f"module[{i}]: {type(mod).__name__} must follow a Conv2d layer (and its activation)")
            if specs[-1].pool is not None:
                raise ValueError(f"module[{i}]: a second pooling after one conv layer is not supported")
            specs[-1] = _layers.Conv2d(stride=specs[-1].stride, padding=specs[-1].padding, pool=_pool_spec(mod, i))
            state = "pool"
            continue
        if isinstance(mod, nn.Flatten):
            if mod.start_dim != 1 or mod.end_dim != -1:
                raise ValueError(f"module[{i}]: Flatten(start_dim={mod.start_dim}, end_dim={mod.end_dim}) is not "
                                 "supported (start_dim=1, end_dim=-1 only)")
            flat_seen = True
            state = "flatten"
            continue
        raise TypeError(f"module[{i}]: {type(mod).__name__} is not supported; expected Conv2d, Linear, Tanh, Sigmoid, "
                        "ReLU, LeakyReLU, ELU, Softplus, Identity, MaxPool2d, AvgPool2d or Flatten")
    if not specs:
        raise ValueError("module: expected at least one Conv2d or Linear module")
    if not isinstance(specs[-1], _layers.Linear):
        raise ValueError("module: the last weighted module must be Linear (refimpl's losses read a (B, n_L) output)")
    if state == "flatten":
        raise ValueError("module: a trailing Flatten after the last Linear is not supported")
    ns = resolve_namespace(xp)
    if dtype is None:
        dtype = "float64" if Ws[0].dtype == np.float64 else "float32"
    dt = resolve_dtype(ns, dtype)
    Wt = tuple(from_numpy(W, ns, dt, device) for W in Ws)
    bt = tuple(from_numpy(b, ns, dt, device) for b in bs)
    return cls(Wt, bt, tuple(acts), layers=tuple(specs), input_shape=input_shape)
