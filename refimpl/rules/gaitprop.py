r"""GAIT-prop and target propagation through exact inverses, on invertible networks.

GAIT-prop (gradient-adjusted incremental target propagation; Ahmad, van Gerven & Ambrogioni,
NeurIPS 2020, arXiv 2006.06438 [P1]; adaptive gamma: Dalm, Ahmad, Ambrogioni & van Gerven, TMLR
2023, arXiv 2102.11598 [P2]) sends a *target* down the network through the exact inverse of every
layer, ``g_l^{-1}(t) = W_l^{-1} (f_l^{-1}(t) - b_l)``, nudging each layer's activity only slightly
towards the target from above. The algorithm below is the one of the authors' code (C1:
``nasiryahm/GAIT-prop``, ``SquareInvNet.get_gait_updates``; C2: ``artcogsys/GAIT_prop_scaling``,
``propagate_target`` / ``compute_adaptive_gamma``), in refimpl's batch-row convention
(``x: (B, n_0)``, ``W_l: (n_l, n_{l-1})``, ``a_l = h_{l-1} @ W_l.T + b_l``, ``h_l = f_l(a_l)``,
``D_l = f_l'(a_l)``):

.. code-block:: text

    tau_L = y (mse) or h_L - e_L (any loss; e_L = per-sample dl/dh_L),   m_L = 1
    for l = L, ..., 1:
        E_l     = m_l * (h_l - tau_l)                    local error (per sample)
        Delta_l = E_l * D_l / B                          ~ dL/da_l of the batch-mean loss
        dW_l    = Delta_l.T @ h_{l-1},   db_l = sum_b Delta_l[b]
        k_l     = gamma_l * D_l**2                        gradient-adjusted nudge factor
        u_l     = (1 - k_l) * h_l + k_l * tau_l          nudged activity (argument of f_l^{-1})
        tau_{l-1} = (f_l^{-1}(u_l) - b_l) @ inv(W_l).T   (computed with a linear solve)
        m_{l-1} = m_l / gamma_l

Fixed gamma (C1, P1): ``gamma_l = gamma``, so ``m_l = gamma^{-(L-l)}``. Adaptive gamma (C2, P2):
per sample and layer ``gamma_l[b] = gamma * sqrt(n_l) / ||tau_l[b] - h_l[b]||``, so every nudge has
norm ``gamma * sqrt(n_l)`` before the ``D^2`` weighting (a sample with zero error keeps
``gamma_l = gamma``; its nudge is zero anyway).

**Scale.** The multipliers ``m_l`` are part of the update (DESIGN.md, gradient convention): to
first order ``tau_{l-1} - h_{l-1} = gamma_l (D_l * (tau_l - h_l)) @ inv(W_l).T + O(gamma^2)`` (one
``D`` is the forward derivative, the other cancels the ``1/f'`` of ``f^{-1}``), so
``E_{l-1} = (D_l * E_l) @ inv(W_l).T + O(gamma)``: the gamma -> 0 limit is the recursion of
:func:`inverse_backward`, which for orthogonal ``W_l`` (``inv(W_l).T = W_l``) *is* BP's
``e_{l-1} = (D_l * e_l) @ W_l`` -- same direction and magnitude (P1 abstract: "backpropagation and
GAIT-prop give identical updates when synaptic weight matrices are orthogonal"). For piecewise-linear
activations (identity, leaky-ReLU) the first-order expansion is exact as long as no nudge crosses
the kink, so GAIT-prop then equals BP up to rounding at any small gamma.
**Precision.** The ``1/gamma`` multipliers amplify the rounding of the nudged targets: the
relative error of the updates is about ``eps * gamma^-(L-1)`` for fixed gamma and about
``L * eps / gamma`` for adaptive gamma (``proofs.gaitprop.rounding_bound``), on top of the
``O(gamma)`` truncation of smooth activations and the kink crossings of large nudges. In float64
this is negligible for the published settings at moderate depth, but not beyond (fixed 1e-3:
~1e-6 relative at L = 4, ~1 at L = 6, the spec's round-off wall; adaptive 1e-6: ~1e-9 at L = 6).
In float32 (``eps = 1.2e-7``) it is not negligible: measured on 20-unit nets with orthogonal
``W_2..W_L`` (batch 8), fixed gamma = 1e-3 (C1) gives relative errors to BP of ~1e-4 / 0.2 / 1e2
at L = 2 / 3 / 4, and adaptive gamma = 1e-7 (C2's setting) ~1 at every depth. A large adaptive
gamma (1e-2) keeps float32 rounding at ~1e-5, but then the truncation (tanh: ~5e-3) or, for
leaky-ReLU, kink crossings (often O(1) errors at L = 4) dominate. Use float64 (as C2 does).
Where the estimate ``eps * gamma^-(L-1)`` (fixed) or ``L * eps / gamma`` (adaptive) reaches 0.1,
``updates`` emits a ``RuntimeWarning`` (the result is legal but rounding noise); nothing is raised.
To get back C1's own numbers: C1 returns ``-dW`` (negative gradients, applied with ``+lr``);
C2's local loss ``m * sum (t - h)^2`` has no 1/2 and sums over the batch, so C2's autograd
gradients are ``B * dW`` (its output target ``h - 1/2 dCE/dh`` compensates the missing 1/2).

**Targets.** :meth:`GaitProp.targets` returns ``(None, tau_1, ..., tau_L)``: C1's targets (label
target ``tau_L`` with ``m_L = 1``, incremental targets below; literal for C1, checked against its
code on identical weights). The target of the input is never needed (``W_1`` may be non-square) and
is ``None``. The multipliers are in ``upd.record["multipliers"]``. The equivalent bookkeeping with an
incremental output target ``t_L = h_L - gamma e_L`` and ``m_L = 1/gamma`` gives the same updates; it
is not the one exposed. C2's scaling code (Dalm et al.) differs by factors of 2 that cancel in the
updates: its label target is ``h_L - e_L/2`` (the gradient of a summed mse without 1/2, halved), so
its fixed-gamma nudges are half of refimpl's and its adaptive multipliers differ by a factor 2;
refimpl's targets are C1's, its updates equal both codes' after their own scaling.

**Network requirements.** Layers ``l = 2..L`` (those a target is inverted through) must be square,
with an invertible activation (``linear``, ``tanh``, ``sigmoid``, ``leaky_relu``, ``elu``,
``softplus``; not ``relu``) and a well-conditioned ``W_l`` (condition number at most ``max_cond``,
default ``1/sqrt(eps)`` of the dtype: the solve then keeps at least half the digits). Layer 1 may be
non-square and have any activation. A non-square *output* is handled with auxiliary units (P1/C1
``SquareInvNet``, P2/C2): a square output layer whose first ``outputs`` units are the network's
outputs; the others get their own forward value as target (zero error). Non-square hidden layers
(C1's ``TowerInvNet``) are not supported. Conv layers ``2..L``: square, well-conditioned per-patch
matrix, no pooling (below); a dense layer after a conv must be square in the flattened width.

**Convolutional layers** (P2 / C2 ``InvConv``; :mod:`refimpl.rules.invertible_conv`). Every line
above is a layer operation (:mod:`refimpl.layers`), so the same loop runs on conv networks:
``dW_l = weight_grad_l(Delta_l, h_{l-1})``, ``Delta_l = P_l^T(E_l) * D_l`` (``P_l^T``: the transpose of
layer ``l``'s pooling or channel selection, identity for dense layers), and the inverse of an
invertible conv layer (square per-patch matrix ``P_l = W_l.reshape(C_out, C_in*kh*kw)``, no pooling) is
C2's per-patch inverse with its reconstruction correction, ``g_l^{-1}(u) = col2im(P_l^{-1} rows(f_l^{-1}(u)
- b_l)) - (N_l - 1) * h_{l-1}`` (:func:`~refimpl.rules.invertible_conv.conv_inverse`; ``N_l``: patches
covering each pixel, ``h_{l-1}``: the layer's forward input of the same batch). It is the exact inverse
when the patches tile the input (stride = kernel, no padding); with overlapping patches it is exact at
the forward point and its derivative is the transposed convolution with ``inv(P_l).T`` in ``W_l``'s place
(:func:`inverse_transpose`), so the gamma -> 0 limit is again BP with ``W_l`` replaced by ``inv(W_l).T``
(= BP for orthogonal ``P_l``, with or without overlap), but a reachable target ``f(conv(x + d) + b)``
comes back as ``x + N d``, not ``x + d`` (``proofs.gaitprop.conv_inverse_counts_overlaps``). A conv
layer with ``keep=k`` passes only its first ``k`` channels on; its other channels are auxiliary: the
nudge acts on ``z_l = f_l(a_l)`` (every channel), whose target is ``tau_l`` on the kept channels and
the forward value on the auxiliary ones (C2 ``inverse_pass``), and adaptive gamma's norm and ``n_l``
count every channel (C2 ``compute_adaptive_gamma``). Layer 1 may be any conv (pooling included).

**Orthogonality regulariser** (added to ``dW``, not part of the theorems; applied to every square
layer): ``ortho_form="full"`` is C2's ``||W_l^T W_l - I||_F^2`` (gradient ``4 W_l (W_l^T W_l - I)``),
``"offdiag"`` is C1's ``sum_{i != j} (W_l^T W_l)_{ij}^2`` (gradient ``4 W_l (M - diag M)``,
``M = W_l^T W_l``), both times ``ortho``; on a conv layer to its per-patch matrix ``P_l`` when square
(C2 ``InvConv.get_ortho_gradient``), reshaped to the kernel's shape. ``ortho`` is relative to refimpl's batch-mean gradients
(as in C1, which adds it to batch-mean updates); C2's lambda is relative to batch-*summed*
gradients, i.e. C2's lambda corresponds to ``ortho = lambda / B``.

:class:`TPInverse` is plain target propagation through the same exact inverses (C1
``get_tp_updates``): ``tau_{l-1} = g_l^{-1}(tau_l)``, ``m_l = 1``. It is *not* BP: for linear
networks its targets are exactly the Gauss-Newton targets ``h_l - J_l^{-1} e_L``
(``J_l = dh_L/dh_l``), see ``proofs/gaitprop.py``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional

from .. import losses as _losses
from ..backend import namespace
from ..layers import Conv2d
from . import invertible_conv as _ic
from .base import Updates, EmptyState, check_batch

__all__ = ["GaitProp", "TPInverse", "gamma_limit", "inverse_backward", "layer_inverse",
           "check_invertible", "inverse_factors", "output_target", "output_error", "ortho_penalty", "ortho_gradient",
           "ORTHO_FORMS"]

ORTHO_FORMS = ("full", "offdiag")


# --- validation --------------------------------------------------------------------------------

def _check_outputs(net, outputs) -> int:
    n_L = net.sizes[-1]
    if outputs is None:
        return n_L
    if isinstance(outputs, bool) or not isinstance(outputs, numbers.Integral):
        raise TypeError(f"outputs: expected None or an int (number of output units the loss sees), "
                        f"got {outputs!r}")
    if not 1 <= outputs <= n_L:
        raise ValueError(f"outputs: expected 1 <= outputs <= {n_L} (the output layer's width), got {outputs}")
    return int(outputs)


def _default_max_cond(xp, dtype) -> float:
    eps = 2.0 ** -52 if dtype == xp.float64 else 2.0 ** -23
    return 1.0 / math.sqrt(eps)


def _check_structure(net, l: int, activations: bool, rule: str) -> None:
    W = net.weights[l - 1]
    if W.shape[0] != W.shape[1]:
        raise ValueError(
            f"weights[{l - 1}]: {rule} propagates targets down through layer {l}, which must be square "
            f"(n_{l} == n_{l - 1}) to be inverted; got shape {tuple(W.shape)}. Only the first layer may "
            "be non-square; for fewer outputs use a square output layer with `outputs=k` "
            "(auxiliary units, P1/C1 SquareInvNet)")
    act = net.activation(l)
    if activations and not act.invertible:
        raise ValueError(
            f"activations[{l - 1}]: {rule} inverts f_{l}, but {act.name!r} is not invertible; use an "
            "invertible activation (linear, tanh, sigmoid, leaky_relu, elu, softplus) on layers 2..L")


def _exact_cond(net, l: int, max_cond: float, rule: str) -> float:
    """``cond_2(W_l)`` from its singular values; ``ValueError`` when above ``max_cond``."""
    xp = net.xp
    s = xp.linalg.svdvals(net.weights[l - 1])
    s_max, s_min = float(xp.max(s)), float(xp.min(s))
    cond = math.inf if s_min == 0.0 else s_max / s_min
    if not cond <= max_cond:
        raise ValueError(
            f"weights[{l - 1}]: {rule} needs an invertible W_{l}, but its condition number is {cond:.3g} "
            f"(smallest singular value {s_min:.3g}) > max_cond = {max_cond:.3g}; the inverse would "
            "be dominated by rounding (singular or nearly singular weights)")
    return cond


def check_invertible(net, *, activations: bool = True, max_cond: Optional[float] = None,
                     rule: str = "GaitProp") -> tuple:
    """Raise ``ValueError`` unless every layer ``l = 2..L`` can be inverted; return the condition numbers.

    Checks: ``W_l`` square (``n_l == n_{l-1}``); ``f_l`` invertible (when ``activations``);
    ``cond_2(W_l) = s_max / s_min <= max_cond`` (default ``1/sqrt(eps)`` of the dtype, ~6.7e7 in
    float64, ~2.9e3 in float32: the linear solve then has relative error ``<= cond * eps <=
    sqrt(eps)``). A conv layer is checked on its per-patch matrix ``W.reshape(C_out, C_in*kh*kw)``
    (:func:`refimpl.rules.invertible_conv.check_conv_invertible`: square, no pooling, conditioned).
    Returns ``(None, None, cond_2, ..., cond_L)`` (a tuple of length L+1), computed
    exactly from the singular values (the rules' steps use :func:`inverse_factors` instead, which
    makes the same decision without an SVD).
    """
    if max_cond is None:
        max_cond = _default_max_cond(net.xp, net.dtype)
    conds = [None, None]
    for l in range(2, net.depth + 1):
        if isinstance(net.layer(l), Conv2d):
            conds.append(_ic.check_conv_invertible(net, l, activations=activations, max_cond=max_cond, rule=rule))
            continue
        _check_structure(net, l, activations, rule)
        conds.append(_exact_cond(net, l, max_cond, rule))
    return tuple(conds)


def inverse_factors(net, *, activations: bool = True, max_cond: Optional[float] = None,
                    rule: str = "GaitProp") -> tuple:
    """The checks of :func:`check_invertible` without an SVD per step; returns ``(None, None, LU_2, ..., LU_L)``.

    Each ``W_l`` is LU-factored once (:class:`refimpl.lu.LU`; the factors serve every solve of the
    step) and ``cond_2(W_l)`` is estimated from the factors by block power iteration, a lower
    estimate within 2x of the true value (:mod:`refimpl.lu`). The layer is accepted when the
    estimate is ``<= max_cond / 2``; otherwise the exact singular values decide, with
    :func:`check_invertible`'s error. So the decision is the one of the exact ``cond_2 <= max_cond``
    (same ``max_cond`` meaning, same message), and the SVD is paid only for layers within 2x of the
    limit or beyond it (the error path). Cost per layer: one ``getrf`` (which the solves need anyway)
    and ``O(n^2)`` per power step instead of an ``O(n^3)`` SVD (issue 17: GAIT-prop's step was 28x BP's, two thirds of it the SVD).
    """
    from ..lu import LU

    if max_cond is None:
        max_cond = _default_max_cond(net.xp, net.dtype)
    facs = [None, None]
    for l in range(2, net.depth + 1):
        if isinstance(net.layer(l), Conv2d):  # the per-patch matrix P_l (refimpl.rules.invertible_conv)
            _ic.check_conv_structure(net, l, activations=activations, rule=rule)
            f = LU(_ic.patch_matrix(net.xp, net.weights[l - 1]))
            if not f.cond2_estimate() <= max_cond / 2:
                _ic.conv_cond(net, l, max_cond=max_cond, rule=rule)
            facs.append(f)
            continue
        _check_structure(net, l, activations, rule)
        f = LU(net.weights[l - 1])
        if not f.cond2_estimate() <= max_cond / 2:
            _exact_cond(net, l, max_cond, rule)
        facs.append(f)
    return tuple(facs)


def _check_gamma(gamma, name="gamma"):
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) \
            or not 0 < gamma <= 1:
        raise ValueError(f"{name}: expected a finite number in (0, 1], got {gamma!r}")


# --- the pieces ----------------------------------------------------------------------------------

def layer_inverse(net, l: int, t, name: Optional[str] = None, forward_input=None, factors=None):
    r"""``g_l^{-1}(t) = (f_l^{-1}(t) - b_l) @ inv(W_l).T``: the input of layer ``l`` that produces ``t``.

    Computed as ``solve(W_l, (f_l^{-1}(t) - b_l).T).T`` (no explicit inverse); ``factors``: an
    :class:`refimpl.lu.LU` of ``W_l`` to solve with (None: ``xp.linalg.solve``). ``t``: ``(B, n_l)``;
    raises ``ValueError`` (from :meth:`Activation.inverse`) if ``t`` leaves the range of ``f_l``.
    The result has the shape of the layer's input (a dense layer after a conv: un-flattened).
    An invertible conv layer is inverted per patch, with C2's reconstruction correction, which needs
    the layer's ``forward_input`` ``h_{l-1}`` (:func:`refimpl.rules.invertible_conv.conv_inverse`).
    """
    if isinstance(net.layer(l), Conv2d):
        return _ic.conv_inverse(net, l, t, forward_input, name=name, factors=factors)
    xp = namespace(t)
    act = net.activation(l)
    a = act.inverse(t, name=name or f"target of h[{l}] (input of f_{l}^-1)")
    R = (a - net.biases[l - 1]).T
    g = (xp.linalg.solve(net.weights[l - 1], R) if factors is None else factors.solve(R)).T
    return xp.reshape(g, (t.shape[0],) + tuple(net.layer(l).in_shape))


def inverse_transpose(net, l: int, delta):
    r"""``delta @ inv(W_l).T`` (``solve(W_l, delta.T).T``; conv: the transposed convolution with the
    per-patch ``inv(P_l).T``), in the shape of the layer's input: the derivative of :func:`layer_inverse`
    at the forward point, i.e. BP's ``transpose_l(W_l, delta)`` with ``inv(W_l).T`` in ``W_l``'s place."""
    if isinstance(net.layer(l), Conv2d):
        return _ic.conv_inverse_transpose(net, l, delta)
    xp = namespace(delta)
    g = xp.linalg.solve(net.weights[l - 1], delta.T).T
    return xp.reshape(g, (delta.shape[0],) + tuple(net.layer(l).in_shape))


def output_error(loss, h, y, outputs: Optional[int] = None):
    """Per-sample ``e_L = dl_b/dh_L[b]`` ``(B, n_L)``; with ``outputs = k`` the loss sees ``h[:, :k]`` and
    the auxiliary units ``k..n_L-1`` get zero error."""
    loss = _losses.get(loss)
    xp = namespace(h)
    n = h.shape[1]
    k = n if outputs is None else outputs
    e = loss.error(h[:, :k], y)
    if k == n:
        return e
    return xp.concat([e, xp.zeros((h.shape[0], n - k), dtype=h.dtype)], axis=1)


def output_target(loss, h, y, outputs: Optional[int] = None):
    """The label target ``tau_L``: ``y`` for mse (C1), ``h_L - e_L`` in general (C2's
    ``y_hat - 1/2 dCE/dy_hat`` in refimpl's 1/2-scaled local loss); auxiliary units: ``h_L``."""
    loss = _losses.get(loss)
    xp = namespace(h)
    n = h.shape[1]
    k = n if outputs is None else outputs
    hk = h[:, :k]
    t = loss.prepare(y, hk) if loss.name == "mse" else hk - loss.error(hk, y)
    if k == n:
        return t
    return xp.concat([t, h[:, k:]], axis=1)


def ortho_penalty(W, form: str = "full"):
    """``||W^T W - I||_F^2`` (``full``, C2) or ``sum_{i != j} (W^T W)_ij^2`` (``offdiag``, C1); 0-d array."""
    xp = namespace(W)
    G = _ortho_residual(xp, W, form)
    return xp.sum(G * G)


def _ortho_residual(xp, W, form):
    if form not in ORTHO_FORMS:
        raise ValueError(f"ortho_form: expected one of {ORTHO_FORMS}, got {form!r}")
    M = W.T @ W
    n = M.shape[0]
    eye = xp.eye(n, dtype=W.dtype)
    if form == "full":
        return M - eye
    return M - M * eye


def ortho_gradient(W, form: str = "full"):
    """Gradient of :func:`ortho_penalty`: ``4 W (W^T W - I)`` or ``4 W (M - diag M)``, ``M = W^T W``."""
    xp = namespace(W)
    return 4 * (W @ _ortho_residual(xp, W, form))


def _row_norm(xp, v):
    """Per-sample Euclidean norm of ``v`` over all its units, ``(B, 1)``."""
    f = xp.reshape(v, (v.shape[0], -1))
    return xp.sqrt(xp.sum(f * f, axis=1, keepdims=True))


def _per_sample(xp, m, ndim: int):
    """A per-sample ``(B, 1)`` factor (or a float) shaped to broadcast against a ``ndim``-d array."""
    if isinstance(m, (int, float)) or ndim == 2:
        return m
    return xp.reshape(m, (m.shape[0],) + (1,) * (ndim - 1))


# --- the gamma -> 0 recursion ------------------------------------------------------------------

def inverse_backward(net, trace, e):
    r"""GAIT-prop's gamma -> 0 limit: ``Delta_L = e * D_L``, ``Delta_{l-1} = (Delta_l @ inv(W_l).T) * D_{l-1}``.

    ``e = dL/dh_L`` (batch-mean convention, as :func:`refimpl.rules.bp.backward`); BP's recursion with
    ``W_l`` replaced by ``inv(W_l).T`` (spec §0 "gamma -> 0 recursion"; P1). Returns the deltas
    ``(None, Delta_1, ..., Delta_L)``. Needs only square invertible ``W_l`` for ``l >= 2``; the
    activations need not be invertible (only ``f'`` is used). On any layer type
    (:mod:`refimpl.layers`): ``Delta_{l-1} = P_{l-1}^T(inverse_transpose_l(Delta_l)) * D_{l-1}``
    (:func:`inverse_transpose`; ``P^T``: the transpose of layer ``l-1``'s pooling / channel
    selection, zero on auxiliary channels).
    """
    return _inverse_backward(net, trace, e)[0]


def _inverse_backward(net, trace, e):
    xp = namespace(e)
    L = net.depth
    deltas, errors = [None] * (L + 1), [None] * (L + 1)
    errors[L] = e
    deltas[L] = net.activation(L).times_df(e, trace.a[L], trace.z[L])
    for l in range(L, 1, -1):
        errors[l - 1] = inverse_transpose(net, l, deltas[l])                      # Delta_l @ inv(W_l).T
        dz = net.layer(l - 1).unpool(xp, errors[l - 1], trace.z[l - 1])           # P_{l-1}^T (identity for dense)
        deltas[l - 1] = net.activation(l - 1).times_df(dz, trace.a[l - 1], trace.z[l - 1])
    return tuple(deltas), tuple(errors)


def gamma_limit(net, x, y, loss="mse", outputs: Optional[int] = None, max_cond: Optional[float] = None) -> Updates:
    r"""The gamma -> 0 limit of GAIT-prop's updates (no targets): ``dW_l = Delta_l.T @ h_{l-1}``, with the
    deltas of :func:`inverse_backward` started from ``e = dL/dh_L`` (batch-mean loss on the first
    ``outputs`` units). Equal to BP's gradients exactly when ``W_2..W_L`` are orthogonal.

    ``record``: ``trace``, ``output_grad`` (``e``), ``delta`` (``Delta_l``), ``error``
    (``E_l = Delta_{l+1} @ inv(W_{l+1}).T``, the limit's estimate of ``dL/dh_l``; ``error[L] = e``).
    """
    lossf = _losses.get(loss)
    xp, _ = check_batch(net, x, y)
    k = _check_outputs(net, outputs)
    check_invertible(net, activations=False, max_cond=max_cond, rule="gamma_limit")
    trace = net.forward(x)
    e = output_error(lossf, trace.h[-1], y, k) / x.shape[0]
    deltas, errors = _inverse_backward(net, trace, e)
    L = net.depth
    dW = tuple(net.layer(l).weight_grad(xp, deltas[l], trace.h[l - 1]) for l in range(1, L + 1))
    db = tuple(net.layer(l).bias_grad(xp, deltas[l]) for l in range(1, L + 1))
    record = {"trace": trace, "output_grad": e, "delta": deltas, "error": errors}
    return Updates(dW, db, record)


# --- the target pass shared by GAIT-prop and TP ---------------------------------------------------

def _target_pass(net, trace, tau_L, gamma: Optional[float], adaptive: bool, rule: str, factors):
    """Targets ``tau_l``, multipliers ``m_l``, nudge factors ``gamma_l`` and nudged activities ``u_l``.

    ``gamma=None`` is plain TP (``u_l = tau_l``, ``m_l = 1``); ``factors``: :func:`inverse_factors`.
    Returns tuples of length ``L+1``.
    The nudge acts on ``z_l = f_l(a_l)`` (``h_l`` itself unless layer ``l`` passes on only ``keep``
    of its channels: the auxiliary channels then get their forward value as target, C2
    ``inverse_pass``); adaptive gamma's norm and ``n_l`` count every unit of ``z_l`` (C2).
    """
    xp = namespace(tau_L)
    L = net.depth
    taus, mults, gammas, nudged = [None] * (L + 1), [None] * (L + 1), [None] * (L + 1), [None] * (L + 1)
    taus[L], mults[L] = tau_L, 1.0
    for l in range(L, 1, -1):
        z, tau = trace.z[l], _with_auxiliary(xp, net.layer(l), taus[l], trace.z[l])
        if gamma is None:
            u, g = tau, None
        else:
            D = net.activation(l).df(trace.a[l])
            diff = tau - z
            if adaptive:
                r = _row_norm(xp, diff)
                pos = r > 0
                safe = xp.where(pos, r, xp.ones_like(r))
                n_l = math.prod(z.shape[1:])
                g = xp.where(pos, (gamma * math.sqrt(n_l)) / safe, xp.full_like(r, gamma))
            else:
                g = gamma
            k = _per_sample(xp, g, z.ndim) * (D * D)
            u = (1 - k) * z + k * tau
        name = (f"{rule}: target for h[{l}]" + ("" if gamma is None else " after the gamma nudge")
                + f" (input of f_{l}^-1 when inverting layer {l})")
        taus[l - 1] = layer_inverse(net, l, u, name=name, forward_input=trace.h[l - 1], factors=factors[l])
        nudged[l], gammas[l] = u, g
        mults[l - 1] = mults[l] if g is None else mults[l] / g
    return tuple(taus), tuple(mults), tuple(gammas), tuple(nudged)


def _with_auxiliary(xp, layer, tau, z):
    """The target of ``z_l``: ``tau_l`` on the channels passed on, the forward ``z_l`` on the auxiliary
    ones (``keep``; C2 ``tf.concat([target[:, :filters], hidden[:, filters:]])``); ``tau_l`` otherwise."""
    keep = getattr(layer, "keep", None)
    if keep is None or keep == z.shape[1]:
        return tau
    return xp.concat([tau, z[:, keep:, ...]], axis=1)


def rounding_estimate(net, gamma: float, adaptive: bool) -> float:
    """Relative rounding error of the updates the ``1/gamma`` multipliers amplify (module docstring,
    'Precision'): ``eps * gamma^-(L-1)`` fixed, ``L * eps / gamma`` adaptive, eps of the net's dtype."""
    eps = 2.220446049250313e-16 if net.dtype == net.xp.float64 else 1.1920928955078125e-07
    L = net.depth
    return L * eps / gamma if adaptive else eps * gamma ** -(L - 1)


def _warn_rounding(net, gamma, adaptive) -> None:
    import warnings

    est = rounding_estimate(net, gamma, adaptive)
    if est >= 0.1:
        warnings.warn(f"GaitProp: with gamma={gamma:g} ({'adaptive' if adaptive else 'fixed'}), depth {net.depth} and "
                      f"dtype {net.dtype}, the 1/gamma multipliers amplify rounding to ~{est:.2g} relative error: the "
                      "updates are rounding noise (use float64, or a larger gamma / smaller depth)",
                      RuntimeWarning, stacklevel=4)


def _local_updates(net, trace, taus, mults, B):
    """``E_l = m_l (h_l - tau_l) / B``, ``Delta_l = P_l^T(E_l) * D_l``, ``dW_l = Delta_l.T @ h_{l-1}``
    (any layer type: ``weight_grad``/``bias_grad``; ``P_l^T`` = identity for dense layers)."""
    xp = namespace(trace.h[-1])
    L = net.depth
    errors, deltas = [None] * (L + 1), [None] * (L + 1)
    for l in range(1, L + 1):
        errors[l] = _per_sample(xp, mults[l], trace.h[l].ndim) * (trace.h[l] - taus[l]) / B
        dz = net.layer(l).unpool(xp, errors[l], trace.z[l])                     # P_l^T (identity for dense)
        deltas[l] = net.activation(l).times_df(dz, trace.a[l], trace.z[l])
    dW = tuple(net.layer(l).weight_grad(xp, deltas[l], trace.h[l - 1]) for l in range(1, L + 1))
    db = tuple(net.layer(l).bias_grad(xp, deltas[l]) for l in range(1, L + 1))
    return dW, db, tuple(errors), tuple(deltas)


def _square_ortho_gradient(xp, W, form):
    """:func:`ortho_gradient` of a square ``W`` or of a conv's square per-patch matrix
    ``W.reshape(C_out, C_in*kh*kw)`` (P2/C2 ``InvConv.get_ortho_gradient``), in ``W``'s shape; else None."""
    M = _ic.patch_matrix(xp, W) if W.ndim == 4 else W
    if M.shape[0] != M.shape[1]:
        return None
    return xp.reshape(ortho_gradient(M, form), W.shape)


def _add_ortho(net, dW, ortho, form):
    grads = tuple(_square_ortho_gradient(net.xp, W, form) for W in net.weights)
    if ortho == 0:
        return dW, grads
    return tuple(d if g is None else d + ortho * g for d, g in zip(dW, grads)), grads


def _check_common(self):
    _losses.get(self.loss)
    if self.outputs is not None and (isinstance(self.outputs, bool) or not isinstance(self.outputs, int)
                                     or self.outputs < 1):
        raise ValueError(f"outputs: expected None or a positive int (number of output units the loss sees), "
                         f"got {self.outputs!r}")
    if isinstance(self.ortho, bool) or not isinstance(self.ortho, (int, float)) or not math.isfinite(self.ortho) \
            or self.ortho < 0:
        raise ValueError(f"ortho: expected a finite number >= 0 (regulariser weight), got {self.ortho!r}")
    if self.ortho_form not in ORTHO_FORMS:
        raise ValueError(f"ortho_form: expected one of {ORTHO_FORMS}, got {self.ortho_form!r}")
    if self.max_cond is not None and (not isinstance(self.max_cond, (int, float)) or not self.max_cond > 1):
        raise ValueError(f"max_cond: expected None or a number > 1, got {self.max_cond!r}")


# --- the rules -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class GaitProp:
    r"""GAIT-prop (P1, Algorithm 1 as in C1 ``get_gait_updates``; adaptive gamma of P2/C2).

    Arguments:
        gamma: nudge size in (0, 1] (C1: 1e-3 fixed; C2: 1e-7 adaptive).
        adaptive: per-sample, per-layer ``gamma_l = gamma sqrt(n_l) / ||tau_l - h_l||`` (C2).
        loss: ``"mse"`` (C1) or ``"ce"`` (C2); batch-mean, on the first ``outputs`` units.
        ortho: weight of the orthogonality regulariser added to ``dW`` (0: none).
        ortho_form: ``"full"`` (C2, ``||W^T W - I||^2``) or ``"offdiag"`` (C1).
        outputs: number of leading output units the loss sees (auxiliary units above; None: all).
        max_cond: largest condition number accepted for ``W_2..W_L`` (None: ``1/sqrt(eps)``).

    ``updates`` returns gradient-convention updates equal to BP's gradients in the gamma -> 0 limit
    for orthogonal ``W_2..W_L`` (module docstring). ``record``: ``trace``, ``loss``, ``targets``
    (``tau_l``), ``multipliers`` (``m_l``: floats for fixed gamma, ``(B, 1)`` arrays for adaptive),
    ``gammas`` (``gamma_l`` of the nudge through layer ``l``, ``l = 2..L``), ``nudged`` (``u_l``),
    ``error`` (``m_l (h_l - tau_l) / B``: the per-sample local error over ``B``, GAIT-prop's
    estimate of ``dL/dh_l``), ``delta`` (``error * D_l``, the estimate of ``dL/da_l``; both equal BP's in
    the limit), ``dW_local`` (``dW`` without the regulariser),
    ``ortho_grad`` (regulariser gradient per layer, ``None`` for non-square layers), ``bookkeeping``.
    All per-layer tuples have length L+1 and are indexed by layer.
    """

    gamma: float = 1e-3
    adaptive: bool = False
    loss: str = "mse"
    ortho: float = 0.0
    ortho_form: str = "full"
    outputs: Optional[int] = None
    max_cond: Optional[float] = None

    def __post_init__(self):
        _check_gamma(self.gamma)
        if not isinstance(self.adaptive, bool):
            raise TypeError(f"adaptive: expected a bool, got {type(self.adaptive).__name__}")
        _check_common(self)

    def init(self, net, seed=0):
        check_invertible(net, activations=True, max_cond=self.max_cond, rule="GaitProp")
        _check_outputs(net, self.outputs)
        return EmptyState()

    def _pass(self, net, x, y):
        loss = _losses.get(self.loss)
        k = _check_outputs(net, self.outputs)
        xp, _ = check_batch(net, x, y)
        factors = inverse_factors(net, activations=True, max_cond=self.max_cond, rule="GaitProp")
        _warn_rounding(net, self.gamma, self.adaptive)
        trace = net.forward(x)
        tau_L = output_target(loss, trace.h[-1], y, k)
        taus, mults, gammas, nudged = _target_pass(net, trace, tau_L, self.gamma, self.adaptive, "GaitProp",
                                                   factors)
        return loss, k, trace, taus, mults, gammas, nudged

    def targets(self, net, state, x, y) -> tuple:
        """``(None, tau_1, ..., tau_L)``: C1/C2's targets (label target at the output, ``m_L = 1``)."""
        return self._pass(net, x, y)[3]

    def updates(self, net, state, x, y):
        loss, k, trace, taus, mults, gammas, nudged = self._pass(net, x, y)
        dW, db, errors, deltas = _local_updates(net, trace, taus, mults, x.shape[0])
        dW_all, ortho_grads = _add_ortho(net, dW, self.ortho, self.ortho_form)
        record = {
            "trace": trace, "loss": loss.value(trace.h[-1][:, :k], y), "targets": taus, "multipliers": mults,
            "gammas": gammas, "nudged": nudged, "error": errors, "delta": deltas, "dW_local": dW,
            "ortho_grad": ortho_grads,
            "bookkeeping": "label target tau_L = y (mse) / h_L - e_L, m_L = 1; "
                           "tau_{l-1} = g_l^-1((1 - gamma_l D_l^2) h_l + gamma_l D_l^2 tau_l), m_{l-1} = m_l / gamma_l",
        }
        return Updates(dW_all, db, record), state


@dataclass(frozen=True)
class TPInverse:
    r"""Target propagation through exact inverses (C1 ``get_tp_updates``; P1's TP baseline).

    ``tau_L`` as in :class:`GaitProp`; ``tau_{l-1} = g_l^{-1}(tau_l) = (f_l^{-1}(tau_l) - b_l) @ inv(W_l).T``;
    local updates ``Delta_l = (h_l - tau_l) * D_l / B``, ``dW_l = Delta_l.T @ h_{l-1}`` (no
    multipliers). Not BP: for linear networks the targets are the Gauss-Newton targets
    ``h_l - J_l^{-1} e_L``. Full-size targets must stay in the range of every ``f_l`` (tanh: (-1, 1));
    otherwise ``ValueError``. ``record`` as :class:`GaitProp` (``multipliers`` all 1, no ``gammas``).
    """

    loss: str = "mse"
    ortho: float = 0.0
    ortho_form: str = "full"
    outputs: Optional[int] = None
    max_cond: Optional[float] = None

    def __post_init__(self):
        _check_common(self)

    def init(self, net, seed=0):
        check_invertible(net, activations=True, max_cond=self.max_cond, rule="TPInverse")
        _check_outputs(net, self.outputs)
        return EmptyState()

    def _pass(self, net, x, y):
        loss = _losses.get(self.loss)
        k = _check_outputs(net, self.outputs)
        check_batch(net, x, y)
        factors = inverse_factors(net, activations=True, max_cond=self.max_cond, rule="TPInverse")
        trace = net.forward(x)
        tau_L = output_target(loss, trace.h[-1], y, k)
        taus, mults, _, _ = _target_pass(net, trace, tau_L, None, False, "TPInverse", factors)
        return loss, k, trace, taus, mults

    def targets(self, net, state, x, y) -> tuple:
        """``(None, tau_1, ..., tau_L)``: the label target inverted layer by layer."""
        return self._pass(net, x, y)[3]

    def updates(self, net, state, x, y):
        loss, k, trace, taus, mults = self._pass(net, x, y)
        dW, db, errors, deltas = _local_updates(net, trace, taus, mults, x.shape[0])
        dW_all, ortho_grads = _add_ortho(net, dW, self.ortho, self.ortho_form)
        record = {"trace": trace, "loss": loss.value(trace.h[-1][:, :k], y), "targets": taus,
                  "multipliers": mults, "error": errors, "delta": deltas, "dW_local": dW,
                  "ortho_grad": ortho_grads,
                  "bookkeeping": "label target tau_L = y (mse) / h_L - e_L; tau_{l-1} = g_l^-1(tau_l); m_l = 1"}
        return Updates(dW_all, db, record), state
