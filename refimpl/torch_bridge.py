"""``Network.from_torch``: a user's ``torch.nn.Sequential`` as a refimpl network, weights copied.

torch is imported only inside :func:`network_from_torch` (``refimpl`` never imports torch at
module level). The mapping is one-to-one: the i-th ``Conv2d``/``Linear`` module becomes layer
``i+1`` with ``weights[i] = module.weight`` (torch's layout, so ``upd.dW[i]`` compares with
``module.weight.grad``), ``biases[i] = module.bias`` (zeros when the module has none); an
activation module after it sets ``activations[i]`` (none: ``"linear"``); a :func:`keep_module`
after a conv layer's activation becomes that layer's ``keep`` (``Conv2d(keep=n)``: the first ``n``
channels pass on); a pooling module after it becomes that layer's ``pool``; ``Flatten`` marks the
(implicit) flatten between the conv part and the dense part.
"""

from __future__ import annotations

import numpy as np

from . import layers as _layers
from .backend import from_numpy, resolve_namespace, resolve_dtype

__all__ = ["network_from_torch", "activation_name", "activation_module", "keep_module"]


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
    if type(mod).__name__ == "ExactSoftplus" and type(mod).__module__ == __name__:
        return "softplus"
    if isinstance(mod, nn.Softplus):
        if float(mod.beta) != 1.0:
            raise ValueError(f"module[{index}]: Softplus with beta={mod.beta} is not supported (refimpl's softplus "
                             "is log(1 + e^a), beta 1)")
        return "softplus"
    return None


def activation_module(name: str):
    """The ``torch.nn`` module computing refimpl's activation ``name`` (``"tanh"``,
    ``"leaky_relu(0.2)"``, ``"elu(0.5)"``, ...; parsed by :func:`refimpl.activations.get`): the
    inverse of :func:`activation_name`. ``softplus`` is an exact ``log(1 + e^a)`` module
    (``nn.Softplus`` returns ``a`` itself above its threshold 20, 2e-9 off)."""
    import torch.nn as nn

    from .activations import get

    act = get(name)
    base = act.name.split("(")[0]
    if base == "softplus":
        return _exact_softplus_class()()
    table = {"linear": nn.Identity, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}
    if base in table:
        return table[base]()
    if base == "leaky_relu":
        return nn.LeakyReLU(act.param)
    return nn.ELU(act.param)  # the remaining name get() accepts


def _exact_softplus_class():
    import torch
    import torch.nn as nn

    class ExactSoftplus(nn.Module):
        """``log(1 + e^a) = logaddexp(a, 0)`` without ``nn.Softplus``'s threshold."""

        def forward(self, a):
            return torch.logaddexp(a, torch.zeros_like(a))

    ExactSoftplus.__module__ = __name__
    return ExactSoftplus


def keep_module(keep: int):
    """The ``torch.nn`` module of refimpl's ``Conv2d(keep=n)``: ``z[:, :n]`` (the first ``n`` channels of
    the activated conv output pass on, the others are auxiliary; Dalm et al. 2023 / C2 ``filters``).
    Goes between a conv layer's activation and its pooling; :func:`network_from_torch` maps it back."""
    return _keep_class()(_layers.check_int("keep", keep, 1))


def _keep_class():
    import torch.nn as nn

    class KeepChannels(nn.Module):
        """``z[:, :keep]``: refimpl's ``Conv2d(keep=n)`` (the other channels are auxiliary)."""

        def __init__(self, keep: int):
            super().__init__()
            self.keep = keep

        def forward(self, z):
            return z[:, :self.keep]

        def extra_repr(self) -> str:
            return f"keep={self.keep}"

    KeepChannels.__module__ = __name__
    return KeepChannels


def _is_keep(mod) -> bool:
    return type(mod).__name__ == "KeepChannels" and type(mod).__module__ == __name__


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
        if _is_keep(mod):
            if state not in ("weighted", "act") or not isinstance(specs[-1], _layers.Conv2d):
                raise ValueError(f"module[{i}]: keep_module must follow a Conv2d layer (and its activation), "
                                 "before its pooling")
            last = specs[-1]
            specs[-1] = _layers.Conv2d(stride=last.stride, padding=last.padding, keep=mod.keep)
            state = "keep"
            continue
        if isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            if state not in ("weighted", "act", "keep") or not isinstance(specs[-1], _layers.Conv2d):
                raise ValueError(f"module[{i}]: {type(mod).__name__} must follow a Conv2d layer (and its activation)")
            if specs[-1].pool is not None:
                raise ValueError(f"module[{i}]: a second pooling after one conv layer is not supported")
            specs[-1] = _layers.Conv2d(stride=specs[-1].stride, padding=specs[-1].padding, pool=_pool_spec(mod, i),
                                       keep=specs[-1].keep)
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
                        "ReLU, LeakyReLU, ELU, Softplus, Identity, keep_module, MaxPool2d, AvgPool2d or Flatten")
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
