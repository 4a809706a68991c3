"""Backpropagation's theorems: it is the gradient (against autograd, and against finite differences).

* ``bp.matches_autograd``: ``BP.updates`` equals torch autograd's ``.grad`` of the batch-mean loss,
  every layer, every activation, both losses (exact identity, float64 rtol 1e-10).
* ``bp.matches_finite_differences``: the directional derivative ``<dtheta, v>`` built from BP's
  updates equals the central difference ``(L(theta + s v) - L(theta - s v)) / 2s`` of refimpl's own
  forward pass up to ``O(s^2)`` (order check), for C^3 activations.
* ``bp.conv_equals_toeplitz``: a conv layer is the dense layer of its unrolled (Toeplitz) matrix
  ``T`` (:func:`refimpl.layers.conv_toeplitz`): ``apply`` is ``h @ T.T``, ``transpose`` is
  ``delta @ T``, ``weight_grad`` is the dense gradient ``delta^T h`` pulled back through
  ``W -> T(W)`` (``dW_k = <delta^T h, T(e_k)>``), ``bias_grad`` likewise (exact).
* ``bp.maxpool_backward_first_argmax``: max pooling's transpose routes each output's gradient to
  the *first* maximum of its window in row-major order, as torch's ``max_pool2d`` backward does,
  on maps with deliberate ties (exact: the routing is a selection).

The first two draw MLPs and convolutional networks (:func:`proofs.strategies.draw_conv_network`,
with and without max/average pooling); the torch oracle builds the same network with
``F.conv2d`` / ``F.max_pool2d`` / ``F.avg_pool2d``. Tolerances: the float64 ``oracle_grad`` /
``exact_identity`` rows. A conv layer's entries are sums of ``C_in*kh*kw <= 27`` products (forward),
``C_out*kh*kw`` (transpose) and ``B*H'*W' <= 6*49`` (weight gradient) in another order than
torch's, so the rounding is ``O(n eps)`` with ``n`` at most a few hundred, relative to the
largest entry: the same error model as a dense layer of that width, far inside 1e-10.
"""

from __future__ import annotations

import numpy as np

import refimpl as ri
from refimpl.backend import to_numpy, from_numpy, rng as host_rng, resolve_namespace, namespace
from . import oracle
from .strategies import (draw_instance, draw_network, draw_conv_network, draw_batch, NetInstance, host_like,
                         ALL_ACTIVATIONS, SMOOTH_ACTIVATIONS)
from .theorem import Theorem, Evidence, compare, order_check
from .tolerances import tolerance

__all__ = ["THEOREMS"]


# --- bp.matches_autograd ------------------------------------------------------------------------

#: Output activations of bp.matches_autograd: all but relu. A relu output layer that is dead on
#: every sample of the batch makes every gradient exactly zero on both sides, so no perturbation of
#: the oracle can show (the control "passed" on 1 of 400 draws: sizes [10, 3, 2, 1], relu output,
#: batch 13). relu stays covered in the hidden layers, where the same ``df`` is used.
OUTPUT_ACTIVATIONS = tuple(a for a in ALL_ACTIVATIONS if a != "relu")


def _draw_any(d, xp, dtype):
    """An instance whose hidden layers get a nonzero gradient (at most 20 draws).

    A network whose hidden layers are all dead on the batch (ReLU) leaves the loss a function of
    the output bias alone; with a leaky output at a negative pre-activation its gradient is ~1e-4
    of the usual size and the control's 1e-8 shift moves it by less than the tolerance's atol
    (refimpl verify --only bp --seed 7 --instances 200, instance 112: conv2d -> linear(72->1)
    ReLU dead on all 3 samples, every gradient but db[2] exactly 0). Such a draw is redrawn.
    """
    for _ in range(20):
        inst = draw_instance(d, xp, dtype, activations=ALL_ACTIVATIONS, output_activations=OUTPUT_ACTIVATIONS,
                             architectures=("mlp", "conv"))
        if inst.net.depth == 1:
            return inst
        dW, _, _ = oracle.bp_gradients(inst.net, inst.x, inst.y, inst.loss)
        if any(np.any(g != 0) for g in dW[:-1]):
            return inst
    return inst


def _bp_vs_oracle(inst: NetInstance, oracle_net) -> Evidence:
    upd, _ = ri.rules.BP(loss=inst.loss).updates(inst.net, ri.rules.EmptyState(), inst.x, inst.y)
    dW, db, _ = oracle.bp_gradients(oracle_net, inst.x, inst.y, inst.loss)
    L = inst.net.depth
    labels = [f"dW[{i}]" for i in range(L)] + [f"db[{i}]" for i in range(L)]
    return compare(list(upd.dW) + list(upd.db), dW + db, "oracle_grad", inst.net.dtype, labels=labels)


def _check_autograd(inst):
    return _bp_vs_oracle(inst, inst.net)


def _perturbed(net, rel: float):
    """The network with every parameter shifted by ``rel * (1 + |p|)`` (host float64 copy)."""
    Ws = [to_numpy(W).astype(np.float64) for W in net.weights]
    bs = [to_numpy(b).astype(np.float64) for b in net.biases]
    shift = lambda p: p + rel * (1.0 + np.abs(p))
    return host_like(net, [shift(W) for W in Ws], [shift(b) for b in bs], xp="numpy", dtype="float64")


def _control_autograd(inst):
    # Break "both sides see the same parameters": the oracle gets them shifted by 100 * rtol.
    rtol, _ = tolerance("oracle_grad", inst.net.dtype)
    return _bp_vs_oracle(inst, _perturbed(inst.net, 100 * rtol))


# --- bp.matches_finite_differences -------------------------------------------------------------

#: Steps of the order check. Truncation error ~ C s^2 (C = third directional derivative / 6)
#: stays far above rounding (~ eps |L| / s ~ 1e-12 at s = 5e-4) on this grid.
FD_STEPS = (4e-3, 2e-3, 1e-3, 5e-4)


def _draw_smooth(d, xp, dtype):
    loss = d.variant("loss", ("mse", "ce"))
    # A depth-1 linear network under mse has a quadratic loss, for which central differences are
    # exact (no s^2 term to measure): the output activation is then drawn non-linear.
    outs = ("tanh", "sigmoid", "softplus") if loss == "mse" else SMOOTH_ACTIVATIONS
    if d.choice(("mlp", "conv")) == "conv":
        # Max pooling is not C^3 (a kink where a window's argmax changes): no max pooling here.
        net = draw_conv_network(d, xp, dtype, pools=(None, "avg"), activations=SMOOTH_ACTIVATIONS,
                                output_activations=outs, output_width=(2, 6) if loss == "ce" else None)
        x, y = draw_batch(d, net, loss, batch=(1, 6))
        return NetInstance(net, x, y, loss, params={"direction_seed": d.seed()})
    net = draw_network(d, xp, dtype, activations=SMOOTH_ACTIVATIONS, output_activations=outs,
                       output_width=(2, 12) if loss == "ce" else None)  # 1-class ce is constant
    x, y = draw_batch(d, net, loss)
    return NetInstance(net, x, y, loss, params={"direction_seed": d.seed()})


def _fd_evidence(inst, scheme: str):
    net, loss = inst.net, ri.losses.get(inst.loss)
    upd, _ = ri.rules.BP(loss=inst.loss).updates(net, ri.rules.EmptyState(), inst.x, inst.y)
    params = list(net.weights) + list(net.biases)
    g = np.concatenate([to_numpy(a).ravel() for a in list(upd.dW) + list(upd.db)])
    gen = host_rng(inst.params["direction_seed"])
    v_host = [gen.standard_normal(tuple(p.shape)) for p in params]
    nv = np.sqrt(sum(float(np.sum(v * v)) for v in v_host))
    v_host = [v / nv for v in v_host]
    gv = float(sum(np.sum(to_numpy(a) * v) for a, v in zip(list(upd.dW) + list(upd.db), v_host)))
    L = net.depth

    def loss_at(s: float) -> float:
        moved = [p + from_numpy(s * v, net.xp, net.dtype) for p, v in zip(params, v_host)]
        shifted = net.replace(weights=tuple(moved[:L]), biases=tuple(moved[L:]))
        return float(loss.value(shifted.forward(inst.x).h[-1], inst.y))

    scale = float(np.linalg.norm(g))
    steps = _fd_grid(loss_at, gv, scale)
    diff_fn = oracle.central_difference if scheme == "central" else oracle.forward_difference
    return order_check(lambda s: np.array([diff_fn(loss_at, s) - gv]), steps, 2,
                       scale=scale, dtype=net.dtype, depth=L)


def _fd_grid(loss_at, gv: float, scale: float):
    """:data:`FD_STEPS`, moved up by factors of 4 (at most 3 times) while the truncation error it
    predicts at the smallest step, ``e(s_max) (s_min / s_max)^2``, is under 10 times the rounding
    error of the central difference there, ``eps max(1, |L|) / s_min`` (relative to ``scale``).

    Along some directions the third derivative is tiny; on the fixed grid the smallest step's
    error is then rounding, and the fitted slope drifts off 2 although the theorem holds (1 of
    1000 draws: slope 2.25 with errors 2e-10 .. 2e-12). The grid is chosen from the central
    difference only, and the control uses the same grid. A wrong gradient is no easier to pass:
    its constant error makes e(s_max) large (no move), and the Richardson limit must still vanish.
    The estimate ``eps max(1, |L|) / s`` is about 3 times the measured spread of the central
    difference under 1e-7 relative changes of ``s`` (5 draws), so 10 leaves the rounding share of
    the smallest step's error near 1/30; a larger factor moved grids that were fine, which weakens
    the control (its first-order term, ``(s/2) v^T H v``, matters most at small steps).
    """
    eps = float(np.finfo(np.float64).eps)
    L0 = abs(loss_at(0.0))
    steps = FD_STEPS
    for _ in range(3):
        s_max, s_min = max(steps), min(steps)
        trunc = abs(oracle.central_difference(loss_at, s_max) - gv) / scale * (s_min / s_max) ** 2
        rounding = eps * max(1.0, L0) / s_min / scale
        if trunc >= 10 * rounding:
            break
        steps = tuple(4 * s for s in steps)
    return steps


def _check_fd(inst):
    return _fd_evidence(inst, "central")


def _control_fd(inst):
    # Break the symmetric stencil: one-sided differences are only first order.
    return _fd_evidence(inst, "forward")


# --- bp.conv_equals_toeplitz --------------------------------------------------------------------

def _draw_toeplitz(d, xp, dtype):
    """One conv layer of a drawn conv network (any stride, padding, kernel, pooling), an input
    ``h`` of its input shape and a cotangent ``delta`` of its output shape (batch 1-4)."""
    net = draw_conv_network(d, xp, dtype)
    convs = [l for l, lay in enumerate(net.layers, start=1) if lay.kind == "conv2d"]
    l = d.choice(convs)
    B = d.integer(1, 4)
    gen = host_rng(d.seed())
    lay = net.layer(l)
    h = from_numpy(gen.standard_normal((B,) + tuple(lay.in_shape)), net.xp, net.dtype)
    delta = from_numpy(gen.standard_normal((B,) + tuple(lay.out_shape)), net.xp, net.dtype)
    return NetInstance(net, h, delta, "none", params={"layer": l, "describe": lay.describe()})


def _shifted_toeplitz(layer, W):
    """The Toeplitz matrix of ``layer`` with every window moved down one row (a wrong padding:
    offset ``p + 1`` instead of ``p``), output shape kept: ``T @ S`` with ``S`` the row shift."""
    T = ri.layers.conv_toeplitz(layer, W)
    C, H, Wd = layer.in_shape
    S = np.zeros((C * H * Wd, C * H * Wd))
    idx = np.arange(C * H * Wd).reshape(C, H, Wd)
    for r in range(H - 1):
        S[idx[:, r, :].ravel(), idx[:, r + 1, :].ravel()] = 1.0  # input row r+1 read where row r was
    return T @ S


def _toeplitz_evidence(inst, make_T):
    net, l = inst.net, inst.params["layer"]
    xp, lay, W = net.xp, net.layer(l), net.weights[l - 1]
    h, delta = inst.x, inst.y
    B = h.shape[0]
    Wh = to_numpy(W).astype(np.float64)
    T = make_T(lay, Wh)
    hf = to_numpy(h).astype(np.float64).reshape(B, -1)
    df = to_numpy(delta).astype(np.float64).reshape(B, -1)
    G = df.T @ hf                                    # the dense layer's weight gradient, (n_out, n_in)
    # dW_k = <G, dT/dW_k> = <G, T(e_k)> (T is linear in W)
    dW = np.zeros(Wh.shape)
    for k in np.ndindex(*Wh.shape):
        E = np.zeros(Wh.shape)
        E[k] = 1.0
        dW[k] = float(np.sum(G * make_T(lay, E)))
    Co = lay.out_shape[0]
    db = df.reshape(B, Co, -1).sum(axis=(0, 2))      # a channel's bias is shared by its positions
    actual = [xp.reshape(lay.apply(xp, W, h), (B, -1)), xp.reshape(lay.transpose(xp, W, delta), (B, -1)),
              lay.weight_grad(xp, delta, h), lay.bias_grad(xp, delta)]
    expected = [hf @ T.T, df @ T, dW, db]
    ev = compare(actual, expected, "exact_identity", net.dtype,
                 labels=["apply", "transpose", "weight_grad", "bias_grad"])
    return Evidence(ev.holds, ev.error, ev.tolerance, f"{inst.params['describe']}: {ev.detail}")


def _check_toeplitz(inst):
    return _toeplitz_evidence(inst, ri.layers.conv_toeplitz)


def _control_toeplitz(inst):
    return _toeplitz_evidence(inst, _shifted_toeplitz)


# --- bp.maxpool_backward_first_argmax -----------------------------------------------------------

def _draw_maxpool_ties(d, xp, dtype):
    """A max pooling (kernel 1-3 a side, not 1x1; stride 1-3), a map ``z`` whose values are
    integers in {0, 1, 2} (ties in most windows) with the first window made all-equal (at least one
    tie for certain), and a cotangent ``g`` with no zero entries."""
    kh, kw = d.integer(1, 3), d.integer(1, 3)
    if kh == kw == 1:
        kh = 2
    sh, sw = d.integer(1, 3), d.integer(1, 3)
    Ho, Wo = d.integer(1, 3), d.integer(1, 3)
    H, W = kh + sh * (Ho - 1), kw + sw * (Wo - 1)
    B, C = d.integer(1, 3), d.integer(1, 2)
    gen = host_rng(d.seed())
    z = gen.integers(0, 3, size=(B, C, H, W)).astype(np.float64)
    z[:, :, :kh, :kw] = 2.0
    g = gen.uniform(0.5, 1.5, size=(B, C, Ho, Wo)) * np.where(gen.random((B, C, Ho, Wo)) < 0.5, -1.0, 1.0)
    pool = ri.layers.MaxPool2d((kh, kw), (sh, sw))
    xpn = resolve_namespace(xp)
    return _PoolInstance(pool=pool, z=from_numpy(z, xpn, dtype), g=from_numpy(g, xpn, dtype), dtype=dtype,
                         text=f"{pool.describe()} on {B}x{C}x{H}x{W}, values in {{0, 1, 2}}")


class _PoolInstance(dict):
    def describe(self):
        return self["text"]


def _torch_maxpool_grad(pool, z_host, g_host, flip: bool):
    import torch
    z = torch.tensor(z_host, dtype=torch.float64)
    g = torch.tensor(g_host, dtype=torch.float64)
    if flip:  # torch's first maximum on the mirrored map = the last maximum on the map itself
        z, g = z.flip(2, 3), g.flip(2, 3)
    z.requires_grad_(True)
    out = torch.nn.functional.max_pool2d(z, kernel_size=tuple(pool.kernel_size), stride=tuple(pool.stride))
    out.backward(g)
    dz = z.grad
    return (dz.flip(2, 3) if flip else dz).numpy().copy()


def _maxpool_evidence(inst, flip):
    pool, z, g = inst["pool"], inst["z"], inst["g"]
    xp = namespace(z)
    got = pool.backward(xp, g, z)
    want = _torch_maxpool_grad(pool, to_numpy(z).astype(np.float64), to_numpy(g).astype(np.float64), flip)
    return compare([got], [want], "exact_identity", inst["dtype"], labels=["P^T g"])


THEOREMS = (
    Theorem(
        name="bp.matches_autograd",
        architectures=("mlp", "conv"), variants=2,
        table=("BP's layer-by-layer updates equal torch autograd's gradients (all activations, mse and ce)",
               "exact, float64 rtol 1e-10",
               "oracle parameters shifted by 100·rtol"),
        statement="BP's layer-by-layer deltas give dW_l = delta_l^T h_{l-1}, db_l = sum_b delta_l equal "
                  "to torch autograd's gradient of the batch-mean loss (every activation, mse and ce)",
        source="Rumelhart, Hinton & Williams (1986); oracle: torch.autograd in float64",
        conditions="same parameters, batch and loss on both sides",
        draw=_draw_any, check=_check_autograd, control=_control_autograd,
        control_breaks="the oracle's parameters are shifted by 100*rtol (relative): the check must see it",
    ),
    Theorem(
        name="bp.matches_finite_differences",
        architectures=("mlp", "conv"), variants=2,
        table=("⟨BP update, v⟩ equals central differences of the loss to O(s²) (C³ activations)",
               "order 2 + Richardson limit",
               "one-sided differences (order 1)"),
        statement="<BP update, v> = (L(theta + s v) - L(theta - s v)) / 2s + O(s^2) for C^3 activations; "
                  "Richardson limit of the difference vanishes to rounding",
        source="Taylor's theorem (central differences are second order)",
        conditions="C^3 activations (tanh, sigmoid, softplus, linear); symmetric stencil",
        draw=_draw_smooth, check=_check_fd, control=_control_fd,
        control_breaks="one-sided stencil (L(theta + s v) - L(theta)) / s, first order only",
        dtypes=("float64",),
    ),
    Theorem(
        name="bp.conv_equals_toeplitz",
        architectures=("conv",),
        table=('a conv layer (any kernel, stride, padding) is the dense layer of its unrolled Toeplitz matrix `T`: forward `h Tᵀ`, input-gradient `δ T`, weight and bias gradients (`δᵀh` pulled back to the kernel)',
               'exact, float64 rtol 1e-10',
               '`T` with a wrong padding (windows offset by one row)'),
        statement="a conv layer (any kernel, stride, padding) is the dense layer of its unrolled Toeplitz matrix T: "
                  "flatten(apply(W, h)) = flatten(h) T^T, flatten(transpose(W, delta)) = flatten(delta) T, "
                  "weight_grad = (delta^T h) pulled back through W -> T(W), bias_grad = delta summed per channel",
        source="definition of the discrete cross-correlation (torch Conv2d); T from refimpl.layers.conv_toeplitz "
               "(an explicit loop over output positions)",
        conditions="T built with the layer's own stride, padding and kernel",
        draw=_draw_toeplitz, check=_check_toeplitz, control=_control_toeplitz,
        control_breaks="T with a wrong padding (every window offset by one input row, output shape kept)",
    ),
    Theorem(
        name="bp.maxpool_backward_first_argmax",
        architectures=("conv",),
        table=("max pooling's transpose sends each output's gradient to the first maximum of its window (row-major), summed where windows overlap: torch's `max_pool2d` backward, ties included",
               'exact vs torch autograd',
               'the last maximum of each window'),
        statement="max pooling's transpose P^T g sends each output's gradient to the first maximum of its window "
                  "(row-major), summed where windows overlap: equal to torch's max_pool2d backward, ties included",
        source="torch.nn.functional.max_pool2d (CPU kernel keeps the first index attaining the max); "
               "refimpl.layers.MaxPool2d",
        conditions="the same map z (integer values: many ties, the first window all-equal) and cotangent g",
        draw=_draw_maxpool_ties, check=lambda inst: _maxpool_evidence(inst, False),
        control=lambda inst: _maxpool_evidence(inst, True),
        control_breaks="the last maximum of each window instead (torch's rule on the mirrored map)",
    ),
)
