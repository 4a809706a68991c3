"""The torch autograd oracle, in float64.

An independent computation of what refimpl computes by hand: the forward pass is rewritten with
torch's own activation functions and losses (``torch.tanh``, ``F.leaky_relu``,
``F.cross_entropy``...), and derivatives come from autograd / ``torch.func``. The oracle never
calls refimpl's math; it only reads a :class:`refimpl.Network`'s arrays (as host copies) and the
hyper-structure of its layer specs (kind, stride, padding, pooling kernel and stride).

Layers (:mod:`refimpl.layers`) are rewritten with torch's own functions: a dense layer is
``F.linear(h.flatten(1), W, b)`` (``torch.nn.Flatten`` order), a conv layer ``F.conv2d(h, W, b,
stride, padding)``, its pooling ``F.max_pool2d`` / ``F.avg_pool2d`` after the activation (and after
any dropout mask, which has the pre-pooling shape). ``layers=None`` means every layer dense.

torch is imported inside the functions: ``import proofs`` stays cheap and the core suite runs
without the ``[oracle]`` extra.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from refimpl.backend import to_numpy
from refimpl import activations as _act

__all__ = ["torch_params", "torch_activation", "torch_forward", "torch_layer", "torch_pool", "torch_weight_grad", "net_forward", "torch_loss", "bp_gradients",
           "loss_value", "output_jacobians", "layer_jacobians", "central_difference",
           "forward_difference", "to_host", "output_errors", "gauss_newton_targets",
           "scg_expected_cost", "scg_outcome_weights",
           "rk_unrolled_gradients"]


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the oracle needs torch: pip install 'refimpl[oracle]' "
                          "(or torch==2.13.0 for the CPU wheel)") from exc
    return torch


def to_host(a) -> np.ndarray:
    """A float64 host copy of any array (refimpl side) or tensor."""
    return to_numpy(a).astype(np.float64)


def torch_params(net, requires_grad: bool = True):
    """``(Ws, bs)``: float64 torch copies of the network's weights and biases (leaves)."""
    torch = _torch()
    Ws = [torch.tensor(to_host(W), dtype=torch.float64, requires_grad=requires_grad) for W in net.weights]
    bs = [torch.tensor(to_host(b), dtype=torch.float64, requires_grad=requires_grad) for b in net.biases]
    return Ws, bs


def torch_activation(name: str) -> Callable:
    """torch's own implementation of a refimpl activation name."""
    torch = _torch()
    F = torch.nn.functional
    act = _act.get(name)
    base = act.name.split("(")[0]
    if base == "linear":
        return lambda a: a
    if base == "tanh":
        return torch.tanh
    if base == "sigmoid":
        return torch.sigmoid
    if base == "relu":
        return torch.relu
    if base == "leaky_relu":
        return lambda a: F.leaky_relu(a, negative_slope=act.param)
    if base == "elu":
        return lambda a: F.elu(a, alpha=act.param)
    if base == "softplus":
        # Exact log(1 + e^a) = logaddexp(a, 0) (derivative: sigmoid). torch's F.softplus returns
        # its input above threshold=20, an approximation off by log1p(e^-a) (2e-9 relative in the
        # gradient at a = 20.5), which made exact float64 comparisons fail there.
        return lambda a: torch.logaddexp(a, torch.zeros_like(a))
    raise ValueError(f"oracle: no torch activation for {name!r}")


def torch_layer(layer, W, b, h):
    """``a = F.linear(flatten(h), W, b)`` or ``F.conv2d(h, W, b, stride, padding)`` (``layer``: a
    refimpl layer spec, read for its kind and hyper-structure only; ``None``: dense)."""
    torch = _torch()
    F = torch.nn.functional
    if layer is None or layer.kind == "linear":
        return F.linear(h if h.dim() == 2 else h.flatten(1), W, b)
    if layer.kind == "conv2d":
        return F.conv2d(h, W, b, stride=tuple(layer.stride), padding=tuple(layer.padding))
    raise ValueError(f"oracle: no torch version of layer kind {layer.kind!r}")


def torch_pool(layer, z):
    """``F.max_pool2d`` / ``F.avg_pool2d`` of a conv layer's activation (``z`` itself without pooling)."""
    torch = _torch()
    F = torch.nn.functional
    pool = None if layer is None else getattr(layer, "pool", None)
    if pool is None:
        return z
    if pool.kind == "maxpool":
        return F.max_pool2d(z, kernel_size=tuple(pool.kernel_size), stride=tuple(pool.stride))
    if pool.kind == "avgpool":
        return F.avg_pool2d(z, kernel_size=tuple(pool.kernel_size), stride=tuple(pool.stride))
    raise ValueError(f"oracle: no torch version of pooling {pool.kind!r}")


def torch_forward(Ws, bs, activations: Sequence[str], x, return_all: bool = False, layers=None,
                  masks=None, units: bool = False):
    """``a_l = F.linear(h_{l-1}, W_l, b_l)`` / ``F.conv2d(...)``, ``z_l = M_l * f_l(a_l)``, ``h_l = pool_l(z_l)``.

    ``layers``: the layer specs (``net.layers``, or a slice of them); ``None``: dense. ``masks``:
    torch tensors (or None entries) multiplying ``z_l`` of the first ``len(masks)`` layers.
    ``return_all``: the list ``[x, h_1, ..., h_L]``; ``units=True``: ``(hs, zs)`` with ``zs`` the
    pre-pooling activations (``zs[0] = x``).
    """
    h = x
    hs, zs = [x], [x]
    for i, (W, b, name) in enumerate(zip(Ws, bs, activations)):
        lay = None if layers is None else layers[i]
        z = torch_activation(name)(torch_layer(lay, W, b, h))
        if masks is not None and i < len(masks) and masks[i] is not None:
            z = z * masks[i]
        h = torch_pool(lay, z)
        hs.append(h)
        zs.append(z)
    if units:
        return hs, zs
    return hs if return_all else h


def torch_weight_grad(layer, W_shape, delta, h):
    """``delta^T flatten(h)`` (dense) or ``torch.nn.grad.conv2d_weight(h, W_shape, delta, stride,
    padding)`` (conv): the weight gradient of the layer for the cotangent ``delta`` of ``a``."""
    torch = _torch()
    if layer is None or layer.kind == "linear":
        return delta.T @ (h if h.dim() == 2 else h.flatten(1))
    return torch.nn.grad.conv2d_weight(h, tuple(W_shape), delta, stride=tuple(layer.stride),
                                       padding=tuple(layer.padding))


def net_forward(net, Ws, bs, x, **kw):
    """:func:`torch_forward` with the network's activations and layer specs."""
    return torch_forward(Ws, bs, net.activations, x, layers=net.layers, **kw)


def torch_loss(name: str, h, y):
    """Batch mean of ``0.5 ||h - y||^2`` (mse) or softmax cross-entropy (``F.cross_entropy``)."""
    torch = _torch()
    if name == "mse":
        return 0.5 * ((h - y) ** 2).sum(dim=1).mean()
    if name == "ce":
        if y.dim() == 1:
            return torch.nn.functional.cross_entropy(h, y.long())
        return torch.nn.functional.cross_entropy(h, y)  # probability targets
    raise ValueError(f"oracle: unknown loss {name!r}")


def _torch_y(y):
    torch = _torch()
    yh = to_numpy(y)
    if np.issubdtype(yh.dtype, np.integer):
        return torch.tensor(yh, dtype=torch.int64)
    return torch.tensor(yh.astype(np.float64), dtype=torch.float64)


def bp_gradients(net, x, y, loss: str):
    """Autograd's ``(dW, db, loss_value)`` for the batch-mean loss, as host float64 arrays."""
    torch = _torch()
    Ws, bs = torch_params(net)
    xt = torch.tensor(to_host(x), dtype=torch.float64)
    L = torch_loss(loss, net_forward(net, Ws, bs, xt), _torch_y(y))
    L.backward()
    return ([W.grad.numpy().copy() for W in Ws], [b.grad.numpy().copy() for b in bs], float(L.detach()))


def loss_value(net, x, y, loss: str) -> float:
    torch = _torch()
    Ws, bs = torch_params(net, requires_grad=False)
    xt = torch.tensor(to_host(x), dtype=torch.float64)
    return float(torch_loss(loss, net_forward(net, Ws, bs, xt), _torch_y(y)))


def layer_jacobians(net, x, frm: int, to: int):
    """Per-sample Jacobians ``d h_to / d h_frm`` (``torch.func.jacrev`` under ``vmap``).

    Returns a host array of shape ``(B, n_to, n_frm)``; ``frm < to``, layers indexed as the trace.
    """
    torch = _torch()
    from torch.func import jacrev, vmap

    if not 0 <= frm < to <= net.depth:
        raise ValueError(f"frm, to: expected 0 <= frm < to <= {net.depth}, got {frm}, {to}")
    Ws, bs = torch_params(net, requires_grad=False)
    xt = torch.tensor(to_host(x), dtype=torch.float64)
    lays = net.layers
    h_frm = torch_forward(Ws[:frm], bs[:frm], net.activations[:frm], xt, layers=lays[:frm]) if frm > 0 else xt

    def tail(h):  # one sample, (n_frm,) -> (n_to,) (image-shaped layers flattened in torch order)
        out = torch_forward(Ws[frm:to], bs[frm:to], net.activations[frm:to], h[None], layers=lays[frm:to])[0]
        return out.reshape(-1)

    J = vmap(jacrev(tail))(h_frm)
    return J.reshape(J.shape[0], J.shape[1], -1).numpy().copy()


def output_jacobians(net, x):
    """Per-sample ``d h_L / d x``, shape ``(B, n_L, n_0)``."""
    return layer_jacobians(net, x, 0, net.depth)


def central_difference(f: Callable[[float], float], h: float) -> float:
    """``(f(h) - f(-h)) / (2h)``: error ``O(h^2)`` for C^3 functions."""
    return (f(h) - f(-h)) / (2 * h)


def forward_difference(f: Callable[[float], float], h: float) -> float:
    """``(f(h) - f(0)) / h``: error ``O(h)`` (the negative control of central differences)."""
    return (f(h) - f(0.0)) / h


def output_errors(net, x, y, loss: str, reduction: str = "sum"):
    """Autograd's ``dL/dh_L`` as a host array ``(B, n_L)``.

    ``reduction="sum"``: the per-sample gradient ``d l(h_L[b], y[b]) / d h_L[b]`` (gradient of the
    batch *sum*, Ernoult et al.'s convention); ``"mean"``: the gradient of the batch-mean loss (1/B
    times the former, Meulemans et al.'s convention).
    """
    torch = _torch()
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
    Ws, bs = torch_params(net, requires_grad=False)
    xt = torch.tensor(to_host(x), dtype=torch.float64)
    hL = net_forward(net, Ws, bs, xt).detach().requires_grad_(True)
    Lm = torch_loss(loss, hL, _torch_y(y))
    total = Lm * hL.shape[0] if reduction == "sum" else Lm
    (g,) = torch.autograd.grad(total, hL)
    return g.numpy().copy()


def gauss_newton_targets(net, x, y, loss: str, layer: int, beta: float, damping: float = 0.0,
                         reduction: str = "sum"):
    """Per-sample, min-norm Gauss-Newton targets for ``h_layer`` (host array ``(B, n_layer)``).

    ``t[b] = h_layer[b] - beta * Jbar_b^+ e_L[b]`` with ``Jbar_b = d h_L / d h_layer`` at sample b
    (``torch.func.jacrev``, :func:`layer_jacobians`) and ``e_L`` from :func:`output_errors` with the
    given ``reduction``. ``damping = lam > 0`` replaces the pseudo-inverse by
    ``Jbar^T (Jbar Jbar^T + lam I)^{-1}`` (Meulemans et al. 2020, Sec. 3, "GN targets"; their
    ``compute_damped_gn_update``), which interpolates between the pinv (lam -> 0) and
    ``Jbar^T / lam`` (lam -> inf). ``layer == depth`` gives the output target ``h_L - beta e_L``.
    """
    torch = _torch()
    if not 1 <= layer <= net.depth:
        raise ValueError(f"layer: expected 1 <= layer <= {net.depth}, got {layer}")
    if not (np.isfinite(damping) and damping >= 0):
        raise ValueError(f"damping: expected a finite number >= 0, got {damping}")
    Ws, bs = torch_params(net, requires_grad=False)
    xt = torch.tensor(to_host(x), dtype=torch.float64)
    h = net_forward(net, Ws, bs, xt, return_all=True)[layer]
    e = torch.tensor(output_errors(net, x, y, loss, reduction), dtype=torch.float64)
    if layer == net.depth:
        return (h - beta * e).numpy().copy()
    J = torch.tensor(layer_jacobians(net, x, layer, net.depth), dtype=torch.float64)  # (B, nL, nl)
    if damping == 0.0:
        step = (torch.linalg.pinv(J) @ e[:, :, None])[:, :, 0]
    else:
        nL = J.shape[1]
        G = J @ J.transpose(1, 2) + damping * torch.eye(nL, dtype=torch.float64)
        step = (J.transpose(1, 2) @ torch.linalg.solve(G, e[:, :, None]))[:, :, 0]
    return (h - beta * step).numpy().copy()


# --- forward-mode tangents (PEPITA's first-order theory, proofs.pepita) -------------------------

def forward_tangents(net, x, v, masks=None, units: bool = False):
    """Activities and forward tangents of every layer along the input direction ``v`` (host, ``x``'s
    shape or ``(B, n_0)`` flattened in torch order).

    The forward pass is ``z_l = M_l * f_l(apply_l(W_l, h_{l-1}) + b_l)``, ``h_l = pool_l(z_l)`` with
    the given host masks on the hidden layers (``masks[l-1]`` of ``a_l``'s shape, ``(B, n_l)``
    for a dense layer; None entries or ``masks=None``: no mask) and no mask on the output.
    ``torch.func.jvp`` (forward mode, no finite differences) gives ``u_l = d h_l / d x . v`` row by
    row. Returns ``(hs, us)``: host float64 lists indexed by layer ``0..L`` (``us[0] = v`` in
    ``x``'s shape); with ``units=True`` ``(hs, us, zs, uzs)``, adding the pre-pooling activations
    and their tangents. At a ReLU kink torch's derivative convention applies (0 at 0); at a
    max-pooling tie, torch's first-maximum rule.
    """
    torch = _torch()
    from torch.func import jvp

    Ws, bs = torch_params(net, requires_grad=False)
    xt = torch.tensor(to_host(x), dtype=torch.float64)
    vt = torch.tensor(np.asarray(v, dtype=np.float64), dtype=torch.float64).reshape(xt.shape)
    L = net.depth
    ms = [None] * (L - 1) if masks is None else [None if m is None else torch.tensor(to_host(m)) for m in masks]

    def fwd(inp):
        hs, zs = net_forward(net, Ws, bs, inp, masks=ms, units=True)
        return tuple(hs) + tuple(zs)

    out, tan = jvp(fwd, (xt,), (vt,))
    hs, us = out[:L + 1], tan[:L + 1]
    host = lambda ts: [t.numpy().copy() for t in ts]
    if units:
        return host(hs), host(us), host(out[L + 1:]), host(tan[L + 1:])
    return host(hs), host(us)


def softmax_error(logits, y) -> np.ndarray:
    """``softmax(logits) - onehot(y)`` per sample (host), with torch's softmax; ``y`` labels or one-hot."""
    torch = _torch()
    z = torch.tensor(to_host(logits), dtype=torch.float64)
    p = torch.softmax(z, dim=1)
    yh = to_numpy(y)
    if yh.ndim == 1:
        t = torch.nn.functional.one_hot(torch.tensor(yh.astype(np.int64)), z.shape[1]).to(torch.float64)
    else:
        t = torch.tensor(yh.astype(np.float64), dtype=torch.float64)
    return (p - t).numpy().copy()


# --- stochastic computation graphs (refimpl.scg): autograd of the enumerated objective ---------

def _scg_torch_forward(graph, theta_t, quadrature: int):
    """Every joint outcome of ``graph`` as one torch batch: ``(values, log_weight)``.

    Written independently of refimpl.scg's math: outcome tables by ``itertools.product``, Gaussian
    points from ``numpy.polynomial.hermite_e.hermegauss`` (weights / sqrt(2 pi)), log-probabilities
    from ``torch.distributions``, ops rewritten in torch. Every Gaussian (pathwise or score) is
    integrated by the change of variables ``w = mu + sigma x_k``, so the result is differentiable.
    """
    import itertools
    import math

    torch = _torch()
    from numpy.polynomial.hermite_e import hermegauss
    from refimpl.scg import graph as G, ops as O, distributions as D

    # per stochastic node: list of outcome rows (host) and fixed weights
    tables = []
    for w in graph.stochastic:
        d = graph[w].dist
        if isinstance(d, D.Bernoulli):
            rows = [np.array(b, dtype=np.float64) for b in itertools.product((0.0, 1.0), repeat=d.size)]
            fixed = [1.0] * len(rows)
        elif isinstance(d, D.Categorical):
            rows = [np.eye(d.size)[k] for k in range(d.size)]
            fixed = [1.0] * len(rows)
        else:
            x, wt = hermegauss(quadrature)
            wt = wt / math.sqrt(2 * math.pi)
            rows = [np.array(c) for c in itertools.product(x, repeat=d.size)]
            fixed = [float(np.prod(c)) for c in itertools.product(wt, repeat=d.size)]
        tables.append((w, rows, fixed))
    combos = list(itertools.product(*[range(len(t[1])) for t in tables]))
    N = len(combos)
    chosen = {w: torch.tensor(np.stack([rows[c[k]] for c in combos]) if N else np.zeros((0, 1)), dtype=torch.float64)
              for k, (w, rows, fixed) in enumerate(tables)}
    logw = torch.tensor(np.array([sum(math.log(t[2][c[k]]) for k, t in enumerate(tables)) for c in combos]),
                        dtype=torch.float64)
    offs = graph.offsets()
    vals = {}

    def rows_of(v):
        return v.expand(N, v.shape[0]) if v.ndim == 1 else v

    for name in graph.order:
        node = graph[name]
        if isinstance(node, G.Param):
            a, b = offs[name]
            vals[name] = theta_t[a:b]
        elif isinstance(node, G.Input):
            vals[name] = torch.tensor(to_host(node.value), dtype=torch.float64)  # rows_of where used
        elif isinstance(node, (G.Deterministic, G.Cost)):
            op, u = node.op, [vals[p] for p in node.parents]
            if isinstance(op, O.Affine):
                y = rows_of(u[0]) @ u[1].reshape(op.n_out, op.n_in).T
                vals[name] = y + u[2] if len(u) == 3 else y
                continue
            u = [rows_of(v) for v in u]
            if isinstance(op, O.Activation):
                vals[name] = torch_activation(op.name)(u[0])
            elif isinstance(op, O.LinearCombination):
                vals[name] = sum(c * v for c, v in zip(op.coeffs, u))
            elif isinstance(op, O.Product):
                vals[name] = u[0] * u[1]
            elif isinstance(op, O.Polynomial):
                vals[name] = sum(a * u[0] ** k for k, a in enumerate(op.coeffs))
            elif isinstance(op, O.Concat):
                vals[name] = torch.cat(u, dim=1)
            elif isinstance(op, O.SumAll):
                vals[name] = sum(v.sum(dim=1, keepdim=True) for v in u)
            elif isinstance(op, O.Reparam):
                vals[name] = u[0] + torch.exp(u[1]) * u[2]
            else:
                raise TypeError(f"oracle: no torch version of op {type(op).__name__}")
        else:
            d, u, x = node.dist, [rows_of(vals[p]) for p in node.parents], chosen[name]
            if isinstance(d, D.Bernoulli):
                logw = logw + torch.distributions.Bernoulli(logits=u[0], validate_args=False).log_prob(x).sum(dim=1)
                vals[name] = x
            elif isinstance(d, D.Categorical):
                logw = logw + torch.distributions.Categorical(logits=u[0], validate_args=False).log_prob(x.argmax(dim=1))
                vals[name] = x
            elif isinstance(d, D.Gaussian):
                vals[name] = u[0] + torch.exp(u[1]) * x
            else:  # standard normal noise
                vals[name] = x
    return vals, logw


def scg_expected_cost(graph, theta, quadrature: int = 40, order: int = 1):
    """``E(theta) = sum_outcomes P(outcome) sum_c c`` of a refimpl.scg graph, with torch autograd
    derivatives: returns host float64 ``(E, grad)`` (``order=1``) or ``(E, grad, hessian)``."""
    torch = _torch()

    def E(th):
        vals, logw = _scg_torch_forward(graph, th, quadrature)
        total = sum(vals[c][:, 0] for c in graph.costs)
        return (torch.exp(logw) * total).sum()

    # Tiny tensors: intra-op threads only add overhead (8x on a loaded 2-core machine); the
    # thread count is restored on exit.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        th = torch.tensor(to_host(theta), dtype=torch.float64, requires_grad=True)
        e = E(th)
        (g,) = torch.autograd.grad(e, th)
        if order == 1:
            return float(e.detach()), g.numpy().copy()
        h = torch.autograd.functional.hessian(E, th.detach(), vectorize=True)
        return float(e.detach()), g.numpy().copy(), h.numpy().copy()
    finally:
        torch.set_num_threads(threads)


def scg_outcome_weights(graph, theta, quadrature: int = 40):
    """Host float64 probability weights of the outcomes, in ``itertools.product`` order of the
    stochastic nodes (the order refimpl.scg.enumerate_outcomes uses as well)."""
    torch = _torch()
    th = torch.tensor(to_host(theta), dtype=torch.float64)
    _, logw = _scg_torch_forward(graph, th, quadrature)
    return torch.exp(logw).numpy().copy()


# --- neural ODE: autograd through an unrolled Runge-Kutta solver (refimpl.ode) -----------------

def rk_unrolled_gradients(net, x0, grid, a, b, c, cotangent, time_dependent: bool = False):
    """Autograd through the explicit RK steps ``(a, b, c)`` (float sequences) on ``grid``.

    The vector field is the network written with torch's own ops (``F.linear``, ``torch.tanh``, ...;
    softplus as ``logaddexp(a, 0)``), on ``[x, t]`` with the time as the last input column when
    ``time_dependent``; every stage of every step is evaluated, including
    stages with ``b_i = 0``. Returns host float64 ``(dx0, dW, db, x1)`` for the scalar
    ``L = sum(x_N * cotangent)``, i.e. the vjp of the discretised map with ``dL/dx_N = cotangent``.
    The grid is a constant (no step-size control is differentiated).
    """
    torch = _torch()
    Ws, bs = torch_params(net)
    x = torch.tensor(to_host(x0), dtype=torch.float64, requires_grad=True)
    # torch's F.softplus returns its input above threshold=20, an approximation off by
    # log1p(exp(-20)) = 2e-9, which a 1e-10 comparison detects once RK stages reach such values:
    # softplus is evaluated exactly here as logaddexp(a, 0).
    acts = [torch_activation(n) if _act.get(n).name != "softplus"
            else (lambda a: torch.logaddexp(a, torch.zeros((), dtype=a.dtype))) for n in net.activations]
    s = len(b)

    def f(X, t):
        if time_dependent:
            X = torch.cat([X, torch.full((X.shape[0], 1), float(t), dtype=torch.float64)], dim=1)
        for W, bb, act in zip(Ws, bs, acts):
            X = act(torch.nn.functional.linear(X, W, bb))
        return X

    ts = [float(t) for t in grid]
    y = x
    for n in range(len(ts) - 1):
        h = ts[n + 1] - ts[n]
        ks = []
        for i in range(s):
            Xi = y
            for j in range(i):
                if a[i][j] != 0:
                    Xi = Xi + h * a[i][j] * ks[j]
            ks.append(f(Xi, ts[n] + c[i] * h))
        y = y + h * sum(b[i] * ks[i] for i in range(s) if b[i] != 0)
    cot = torch.tensor(to_host(cotangent), dtype=torch.float64)
    (y * cot).sum().backward()
    return (x.grad.numpy().copy(), [W.grad.numpy().copy() for W in Ws], [bb.grad.numpy().copy() for bb in bs],
            y.detach().numpy().copy())
