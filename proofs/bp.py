"""Backpropagation's theorems: it is the gradient (against autograd, and against finite differences).

* ``bp.matches_autograd``: ``BP.updates`` equals torch autograd's ``.grad`` of the batch-mean loss,
  every layer, every activation, both losses (exact identity, float64 rtol 1e-10).
* ``bp.matches_finite_differences``: the directional derivative ``<dtheta, v>`` built from BP's
  updates equals the central difference ``(L(theta + s v) - L(theta - s v)) / 2s`` of refimpl's own
  forward pass up to ``O(s^2)`` (order check), for C^3 activations.
"""

from __future__ import annotations

import numpy as np

import refimpl as ri
from refimpl.backend import to_numpy, from_numpy, rng as host_rng
from . import oracle
from .strategies import draw_instance, draw_network, draw_batch, NetInstance, ALL_ACTIVATIONS, SMOOTH_ACTIVATIONS
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
    return draw_instance(d, xp, dtype, activations=ALL_ACTIVATIONS, output_activations=OUTPUT_ACTIVATIONS)


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
    return ri.Network(tuple(shift(W) for W in Ws), tuple(shift(b) for b in bs), net.activations)


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
    net = draw_network(d, xp, dtype, activations=SMOOTH_ACTIVATIONS,
                       output_activations=("tanh", "sigmoid", "softplus") if loss == "mse" else SMOOTH_ACTIVATIONS,
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


THEOREMS = (
    Theorem(
        name="bp.matches_autograd", variants=2,
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
        name="bp.matches_finite_differences", variants=2,
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
)
