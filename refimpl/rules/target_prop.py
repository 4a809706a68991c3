"""Target propagation: TP, DTP, DRL (sequential and direct feedback) and L-DRL.

Conventions (DESIGN.md; batch rows, ``a_l = h_{l-1} W_l^T + b_l``, ``h_l = s_l(a_l)``).

**Feedback mappings.** Layer ``l``'s sequential feedback maps layer ``l`` back to layer ``l-1``
(Ernoult et al. 2022's "inverted block", E-code ``backward_layers.py::invert``)::

    g_l(y) = phi_l(y) @ Q_l^T + c_l,        Q_l: (n_{l-1}, n_l) = shape of W_l^T,  c_l: (n_{l-1},)

stored as ``state.Q[l-1]``, ``state.c[l-1]``. ``phi_l`` is set by ``feedback_activation``:

* ``"same"`` (default): layer ``l``'s own activation (affine feedback on linear layers); this is
  Ernoult's block ``g(y) = Q ELU(y) + c`` for ELU nets;
* ``"jmc"``: the *Jacobian-matching* nonlinearity with ``phi_l'(s_l(a)) = s_l'(a)``, e.g.
  ``phi(y) = y - y^3/3`` for tanh (``phi'(tanh a) = 1 - tanh^2 a``). Then
  ``J_g(h_l) = Q_l diag(s_l'(a_l))`` and ``Q_l = W_l^T`` satisfies the JMC ``J_g = J_f^T`` at every
  sample exactly (spec target_prop.md §3c, C2(ii)); given for every activation (``JMC_PHI``);
* ``"inverse"``: ``phi_l = s_l^{-1}``; with ``Q_l = W_l^{-1}``, ``c_l = -W_l^{-1} b_l`` the feedback
  is the exact inverse ``g_l = f_l^{-1}`` (:meth:`exact_inverse_state`);
* any activation name (e.g. ``"linear"`` for affine feedback, ``"elu"``).

Meulemans et al.'s form ``g(h) = t(Q h + d)`` (nonlinearity *after* the linear map) is not
implemented: every theorem below is about feedback Jacobians, which both forms reach.

**Any layer type** (:mod:`refimpl.layers`; issue 16). Written with the layer operations, the
sequential feedback of layer ``l`` is

    g_l(y) = transpose_l(Q_l, phi_l(P_l^T y)) + c_l

* dense layer: ``transpose(Q^T, u) = u @ Q^T`` (``Q_l`` keeps ``W_l^T``'s shape), ``P = I``: the
  formula above; a dense layer after a convolution returns its feedback in the image shape of
  ``h_{l-1}`` (torch's flatten order) with ``c_l`` per input unit ``(C*H*W,)``;
* conv layer: ``transpose(Q, u)`` is the transposed convolution ``conv_transpose2d(u, Q)`` with the
  layer's stride and padding, cropped to the known input size ``(H, W)`` of ``h_{l-1}`` (what
  torch's ``output_padding = (H + 2p - k) mod s`` selects), ``Q_l`` in ``W_l``'s own layout
  ``(C_out, C_in, kh, kw)`` = ``ConvTranspose2d(C_out -> C_in)``'s weight, so ``Q_l = W_l`` is the
  exact transpose (adjoint); ``c_l: (C_in,)``, one bias per input channel (``ConvTranspose2d``'s);
* pooled conv block ``h_l = P_l(f_l(conv(h_{l-1})))``: ``g_l`` first unpools ``y`` (shape of
  ``h_l``) to the pre-pool shape of ``z_l`` with ``P_l^T`` -- max pooling: each value goes to the
  position of its window's forward argmax, zeros elsewhere (E-code ``MaxUnpool2d`` through the
  forward indices; summed where windows overlap, where ``MaxUnpool2d`` overwrites); average pooling:
  its transpose, ``y / (kh kw)`` on every position of the window (E-code upsamples with
  ``AdaptiveAvgPool2d`` instead, ``kh kw`` times this) -- then applies ``phi_l`` and the transposed
  convolution. This is the E-code's inverted block ``[MaxUnpool, ELU, ConvTranspose2d]``.
  ``Q_l = W_l`` with ``phi_l`` linear is then ``J_f^T`` exactly; with the JMC ``phi_l`` and max
  pooling too (``phi'`` is only read at the argmax positions, where ``P^T h_l = s(a_l)``), not with
  average pooling of a nonlinear layer (``phi'`` at ``h/(kh kw)`` is not ``s'(a)``).

The argmax that ``P_l^T`` routes through is the forward pass's that produced the argument: the
clean pass (``trace.z``) for targets, ``g(h_l)``, ``g(h_l + eta)`` and DRL's corrected path; the
noisy pass for ``g(f(x + eps))`` (the E-code's "magic bridge" holds the indices of the last forward
call). Every feedback map is linear in ``Q_l``, so each feedback-loss gradient below is one
``weight_grad_l(u, d) = d/dQ <d, transpose_l(Q, u)>`` (dense: ``d^T u`` in ``Q``'s layout) with
``u`` the feedback input and ``d`` the loss's residual; ``dc_l`` sums ``d`` over the batch (and the
positions, conv). Direct feedback reaches the flattened units of any layer (``Q_l: (n_l, n_L)``).

Direct feedback (``DRL(feedback="direct_linear")``, DDTP-linear of Meulemans et al. 2020) maps the
linear output ``a_L`` straight to hidden layer ``l``: ``g_l(a_L) = a_L @ Q_l^T (+ c_l)`` with
``state.Q[l-1]`` of shape ``(n_l, n_L)`` (the direct analogue of ``W^T``), ``state.Q[L-1] = None``.
``"direct_rhl"`` (DDTP-RHL) uses ``z(a_L) = tanh(a_L @ R^T)`` with a fixed random ``R``
(``state.R``, shape ``(rhl_width, n_L)``) in place of ``a_L`` for layers ``1..L-2``; the last
hidden layer keeps the linear map. Meulemans' random layer is a ``torch.nn.Linear`` with its
default bias, ``tanh(a_L R^T + r)`` with a fixed random ``r ~ U(-1/sqrt(n_L), 1/sqrt(n_L))``:
``DRL(feedback="direct_rhl", rhl_bias=True)`` adds it (``state.r``, shape ``(rhl_width,)``); the
default has no bias (the theorems are about the feedback Jacobian, which ``r`` only shifts).

**Targets.** Output target (spec §2.0) ``t_L = h_L - beta * e`` where ``e`` is the per-sample
derivative ``dl_b/dh_L[b]`` (``reduction="sum"``: Ernoult's summed loss) or the gradient of the
batch-mean loss ``e / B`` (``reduction="mean"``: Meulemans' convention; his ``eta_hat`` is this
``beta``). Then, for ``l = L .. 2``:

    TP   (Lee et al. 2015):   t_{l-1} = g_l(t_l)
    DTP  (difference):        t_{l-1} = g_l(t_l) + h_{l-1} - g_l(h_l)
    direct (DDTP):            t_l = h_l + g_l(a_L - beta e_a) - g_l(a_L),   e_a = e * s_L'(a_L)

``targets()[0]`` is ``None``: no update uses a target for the input.

**Forward updates** (spec §0, §2.3): the gradient of the local losses
``sum_l 0.5 * sum_b ||h_l - t_l||^2`` with the layer inputs detached, divided by ``beta * B``
(``"sum"``) or ``beta`` (``"mean"``):

    dW_l = (s_l'(a_l) * (h_l - t_l))^T @ h_{l-1} / (beta B),    db_l = sum_b (...) / (beta B)

(any layer: ``delta_l = s_l'(a_l) P_l^T(h_l - t_l) / (beta B)``, ``dW_l = weight_grad_l(delta_l,
h_{l-1})``, ``db_l = bias_grad_l(delta_l)``; the targets of a pooled block are on its pooled output,
as the E-code's block-wise local loss).

so that the output layer's update is exactly BP's gradient of the batch-mean loss, and every layer's
update equals BP's (JMC feedback, spec C3) or the Gauss-Newton-target regression (exact inverses,
spec A4) as ``beta -> 0``. Paper scales: Ernoult's optimiser sees ``beta * dW`` (``"sum"``).
Meulemans' hand-coded forward gradient (his local loss ``||h_l - t_l||^2`` averaged over the batch,
no 1/2) is ``(2 beta / B) dW`` with ``reduction="mean"`` (checked against his code on identical
weights, issue 19). His ``target_stepsize`` eta maps to ``beta`` through the output loss: for
``"ce"`` ``beta = eta``; for ``"mse"`` ``beta = 2 eta / n_L`` (``torch.nn.MSELoss`` averages over
the ``n_L`` output units and has no 1/2, so its gradient is ``2 / n_L`` times refimpl's).

**Feedback losses** (per-sample value ``l_b``; ``feedback_updates`` returns the gradient of the batch
mean ``(1/B) sum_b l_b`` with respect to ``Q_l, c_l``, written out below):

* ``TP``/``DTP`` reconstruction (Lee et al. 2015; E-code ``vanilla_dtp.py``):
  ``x~ = h_{l-1} + sigma eps``, ``r = g_l(f_l(x~))``, ``l_b = ||r - x~||^2``;
  ``dQ_l = (2/B) (r - x~)^T phi_l(f_l(x~))``, ``dc_l = (2/B) sum_b (r - x~)``.
  (Meulemans' scale is this divided by ``n_{l-1} max(sigma, 0.02)^2``.)
* ``DRL`` sequential (Meulemans et al. 2020, M-code ``DTPDRLNetwork``): ``x~ = h_{l-1} + sigma eps``,
  forwarded to ``h~_L``; ``r_L = h~_L``, ``r_{k-1} = g_k(r_k) + h_{k-1} - g_k(h_k)`` for
  ``k = L..l``; ``l_b = ||r_{l-1} - x~||^2 / sigma^2``;
  ``dQ_l = (2/(sigma^2 B)) (r_{l-1} - x~)^T (phi_l(r_l) - phi_l(h_l))``, ``dc_l = 0`` (c cancels).
  (Meulemans' ``mse`` means over units too: his loss is this divided by ``n_{l-1}``.)
* ``DRL`` direct (M-code ``DDTPMLPLayer``): ``h~_l = h_l + sigma eps``, ``a~_L`` its linear output,
  ``r = h_l + g_l(a~_L) - g_l(a_L)``, ``l_b = ||r - h~_l||^2 / sigma^2``;
  ``dQ_l = (2/(sigma^2 B)) (r - h~_l)^T (z(a~_L) - z(a_L))``, ``dc_l = 0``.
* ``LDRL`` (Ernoult et al. 2022, E-code ``feedback_loss.py``): ``x = h_{l-1}``, ``y = h_l``,
  ``eps, eta ~ N(0, sigma^2)``, ``dr = g(f(x+eps)) - g(y)``, ``dr_y = g(y+eta) - g(y)``,
  ``l_b = -2 eps . dr + ||dr_y||^2``. With ``U = phi(f(x+eps)) - phi(y)``,
  ``V = phi(y+eta) - phi(y)``: ``dQ_l = (2/B) ((V Q^T)^T V - eps^T U)``, ``dc_l = 0`` exactly
  (spec §3d-6). No ``1/sigma^2``, as in the code.

``samples`` noise draws per iteration are averaged (rows replicated). Feedback weight decay is the
optimiser's ``weight_decay`` (Meulemans' ``feedback_wd``).

**Feedback training** (``train_feedback(net, state, x, y) -> state``, the training-loop contract):
one forward pass, then ``max_l K_l`` rounds; in round ``k`` every layer with ``K_l > k`` takes one
optimiser step (SGD with momentum, Ernoult; or Adam, Meulemans) on its own loss, all layers from
the same parameters (simultaneous steps, as Meulemans' single ``feedback_optimizer.step()``).
Noise seeds derive from ``(seed, state.step, layer, round)``. Per-layer hyper-parameters
(``iterations``, ``sigma``, ``lr_fb``) are a scalar or a tuple in *forward order* over the trained
maps: ``g_2..g_L`` (sequential) or layers ``1..L-1`` (direct). ``g_1`` (to the input) is never
trained or used (as in both codes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np

from .. import activations as _act
from .. import losses as _losses
from .. import optim as _optim
from .. import layers as _layers
from ..backend import namespace, from_numpy, rng as host_rng, device_of, to_numpy
from .base import Updates, check_batch, check_state_shapes

__all__ = ["TP", "DTP", "DRL", "LDRL", "TPState", "FeedbackUpdates", "FeedbackPhi", "feedback_phi", "apply_feedback",
           "JMC_PHI", "output_target", "forward_updates", "reconstruction_loss", "drl_sequential_loss",
           "drl_direct_loss", "ldrl_loss", "feedback_jacobian", "output_jacobians", "drl_direct_optimum"]


# --- feedback nonlinearities ------------------------------------------------------------------

@dataclass(frozen=True)
class FeedbackPhi:
    """The nonlinearity ``phi`` of a feedback map ``g(y) = phi(y) @ Q^T + c`` and its derivative."""

    name: str
    f: Any
    df: Any


def _jmc_tanh():
    return (lambda y: y - y * y * y / 3, lambda y: 1 - y * y)


def _jmc(act: _act.Activation):
    """``phi`` with ``phi'(s(a)) = s'(a)`` for the activation ``s`` (see ``JMC_PHI``)."""
    base = act.name.split("(")[0]
    if base == "linear":
        return (lambda y: y, lambda y: namespace(y).ones_like(y))
    if base == "tanh":  # s' = 1 - tanh^2 = 1 - y^2
        return _jmc_tanh()
    if base == "sigmoid":  # s' = y (1 - y)
        return (lambda y: y * y / 2 - y * y * y / 3, lambda y: y * (1 - y))
    if base == "softplus":  # s'(a) = sigmoid(a) = 1 - exp(-y)
        return (lambda y: y + namespace(y).exp(-y), lambda y: 1 - namespace(y).exp(-y))
    if base in ("relu", "leaky_relu"):  # s'(a) depends on the sign of a = the sign of y
        return (act.f, act.df)
    if base == "elu":  # a > 0: s' = 1; a <= 0: s' = alpha e^a = y + alpha
        alpha = act.param

        def f(y):
            xp = namespace(y)
            return xp.where(y > 0, y, y * y / 2 + alpha * y)

        def df(y):
            xp = namespace(y)
            return xp.where(y > 0, xp.ones_like(y), y + alpha)

        return (f, df)
    raise ValueError(f"feedback_activation 'jmc': no Jacobian-matching phi for activation {act.name!r}")


#: The activations for which ``feedback_activation="jmc"`` is defined (``phi'(s(a)) = s'(a)``):
#: linear ``y``; tanh ``y - y^3/3``; sigmoid ``y^2/2 - y^3/3``; softplus ``y + e^{-y}``;
#: relu / leaky_relu themselves; elu ``y`` (y > 0), ``y^2/2 + alpha y`` (y <= 0).
JMC_PHI = ("linear", "tanh", "sigmoid", "softplus", "relu", "leaky_relu", "elu")


def feedback_phi(spec: str, layer_activation: str) -> FeedbackPhi:
    """The feedback nonlinearity for a layer with activation ``layer_activation``.

    ``spec``: ``"same"``, ``"jmc"``, ``"inverse"`` or an activation name (module docstring).
    """
    act = _act.get(layer_activation)
    if spec == "same":
        return FeedbackPhi(act.name, act.f, act.df)
    if spec == "jmc":
        f, df = _jmc(act)
        return FeedbackPhi(f"jmc({act.name})", f, df)
    if spec == "inverse":
        if not act.invertible:
            raise ValueError(f"feedback_activation 'inverse': activation {act.name!r} is not invertible")

        def inv(y):
            return act.inverse(y, "feedback input (inverse of " + act.name + ")")

        def dinv(y):  # (s^-1)'(y) = 1 / s'(s^-1(y))
            return 1 / act.df(inv(y))

        return FeedbackPhi(f"inverse({act.name})", inv, dinv)
    if not isinstance(spec, str):
        raise TypeError(f"feedback_activation: expected a name, got {type(spec).__name__}")
    other = _act.get(spec)
    return FeedbackPhi(other.name, other.f, other.df)


def _phis(net, spec):
    """``phis[l]`` for ``l = 1..L`` (index 0 None)."""
    return (None,) + tuple(feedback_phi(spec, net.activations[l - 1]) for l in range(1, net.depth + 1))


# --- state ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TPState:
    """Feedback parameters of a target-propagation rule.

    ``Q[i]``, ``c[i]``: layer ``i+1``'s feedback (module docstring for shapes); ``R``: the fixed
    random layer of DDTP-RHL (else None), ``r`` its fixed bias (``rhl_bias=True``; else None); ``opt``: per-layer feedback-optimiser states (None until
    the first ``train_feedback``); ``step``: number of ``train_feedback`` calls (seeds the noise).
    """

    Q: tuple
    c: tuple
    R: Any = None
    opt: Optional[tuple] = None
    step: int = 0
    r: Any = None


@dataclass(frozen=True)
class FeedbackUpdates:
    """Gradient-convention updates of the feedback parameters (``Q <- Q - lr * dQ`` descends).

    ``dQ[i]``, ``dc[i]`` have the shapes of ``state.Q[i]``, ``state.c[i]`` (None where layer
    ``i+1``'s feedback is not trained); ``loss[i]`` the batch-mean feedback loss (float or None);
    ``record`` the noise and intermediates.
    """

    dQ: tuple
    dc: tuple
    loss: tuple
    record: dict = field(default_factory=dict)


# --- shared equations -------------------------------------------------------------------------

def _fb_weight(layer, Q):
    """``Q`` in the forward weight's layout (what ``layer.transpose`` takes in ``W``'s place): a
    dense feedback is stored with the shape of ``W^T`` (``Q.T`` has ``W``'s), a conv feedback in
    ``W``'s own (``ConvTranspose2d``) layout ``(C_out, C_in, kh, kw)``."""
    return Q.T if isinstance(layer, _layers.Linear) else Q


def _fb_layout(layer, G):
    """A gradient in ``W``'s layout (``layer.weight_grad``) back in the layout of ``Q``."""
    return G.T if isinstance(layer, _layers.Linear) else G


def _fb_bias(xp, layer, c):
    """``c`` broadcast over ``h_{l-1}``: per input unit (dense, reshaped to the input's shape) or
    per input channel (conv: ``ConvTranspose2d``'s bias)."""
    if isinstance(layer, _layers.Linear):
        return xp.reshape(c, (1,) + tuple(layer.in_shape))
    return xp.reshape(c, (1, c.shape[0], 1, 1))


def _fb_bias_grad(xp, layer, d):
    """``sum`` of ``d`` (shape of ``h_{l-1}``) over what ``c`` is broadcast over: the batch (dense,
    flattened) or batch and positions (conv)."""
    if isinstance(layer, _layers.Linear):
        return xp.reshape(xp.sum(d, axis=0), (layer.in_features,))
    return xp.sum(d, axis=(0, 2, 3))


def _rowsum(xp, v):
    """Per-sample sum over every non-batch axis."""
    return xp.sum(v, axis=tuple(range(1, v.ndim)))


def _feedback_input(xp, layer, phi: FeedbackPhi, y, z):
    """``phi_l(P_l^T y)``: the unpooling at the forward pre-pool activation ``z`` (the identity
    without pooling), then the feedback nonlinearity."""
    return phi.f(layer.unpool(xp, y, z))


def _g(xp, layer, phi: FeedbackPhi, Q, c, y, z):
    """``g_l(y) = transpose_l(Q_l, phi_l(P_l^T y)) + c_l`` (dense: ``phi(y) @ Q^T + c``)."""
    return layer.transpose(xp, _fb_weight(layer, Q), _feedback_input(xp, layer, phi, y, z)) + _fb_bias(xp, layer, c)


def apply_feedback(net, phi: FeedbackPhi, Q, c, layer: int, y, z=None):
    """``g_layer(y) = transpose(Q, phi(P^T y)) + c`` (module docstring): layer ``layer``'s
    sequential feedback at ``y`` (shape of ``h_layer``), unpooled through the argmax of the
    pre-pool activation ``z`` (needed only for a max-pooled layer; ``P^T`` of average pooling does
    not depend on it)."""
    lay = net.layer(layer)
    xp = namespace(y)
    if z is None:
        if lay.pool is not None and isinstance(lay.pool, _layers.MaxPool2d):
            raise ValueError(f"z: layer {layer} ({lay.describe()}) is max-pooled; its feedback unpools through the "
                             "argmax of the forward pre-pool activation z (trace.z[layer])")
        if lay.pool is not None:
            z = xp.zeros((y.shape[0],) + tuple(lay.out_shape), dtype=y.dtype)
    return _g(xp, lay, phi, Q, c, y, z)


def output_target(loss, trace, y, beta, reduction):
    """``t_L = h_L - beta e`` with ``e`` per sample (``"sum"``) or of the batch mean (``"mean"``)."""
    loss = _losses.get(loss)
    hL = trace.h[-1]
    e = loss.error(hL, y) if reduction == "sum" else loss.grad(hL, y)
    return hL - beta * e, e


def forward_updates(net, trace, targets, beta, reduction):
    """``delta_l = s_l'(a_l) P_l^T(h_l - t_l) / (beta B)`` (sum) or ``/ beta`` (mean);
    ``dW_l = weight_grad_l(delta_l, h_{l-1})`` (dense: ``delta_l^T h_{l-1}``), ``db_l = bias_grad_l(delta_l)``."""
    xp = namespace(trace.h[0])
    B = trace.h[0].shape[0]
    scale = beta * B if reduction == "sum" else beta
    dW, db, local = [], [], []
    for l in range(1, net.depth + 1):
        lay = net.layer(l)
        # s_l'(a_l) P_l^T(h_l - t_l) by the fused backward product (bitwise df(a) * g), then / scale
        r = net.activation(l).times_df(lay.unpool(xp, trace.h[l] - targets[l], trace.z[l]), trace.a[l], trace.z[l])
        r = r / scale
        dW.append(lay.weight_grad(xp, r, trace.h[l - 1]))
        db.append(lay.bias_grad(xp, r))
        local.append(r)
    return tuple(dW), tuple(db), tuple(local)


def feedback_jacobian(phi: FeedbackPhi, Q, y):
    """Per-sample Jacobian of ``g(y) = phi(y) Q^T + c``: ``Q diag(phi'(y_b))``, shape ``(B, n_out, n_in)``."""
    return Q[None, :, :] * phi.df(y)[:, None, :]


def output_jacobians(net, trace, frm: int):
    """Per-sample ``dh_L/dh_frm`` by the chain rule, shape ``(B, n_L, n_frm)`` (``0 <= frm < L``).

    ``J = D_L W_L D_{L-1} W_{L-1} ... D_{frm+1} W_{frm+1}`` with ``D_l = diag(s_l'(a_l))``.
    Dense networks only (a conv layer's Jacobian is its unrolled Toeplitz matrix, which the rules
    never form).
    """
    net.require_dense("output_jacobians (per-sample Jacobians as products of dense weight matrices)")
    xp = namespace(trace.h[0])
    L = net.depth
    if not 0 <= frm < L:
        raise ValueError(f"frm: expected 0 <= frm < {L}, got {frm}")
    B = trace.h[0].shape[0]
    n = net.sizes[frm]
    J = xp.broadcast_to(xp.eye(n, dtype=trace.h[0].dtype)[None, :, :], (B, n, n))
    for l in range(frm + 1, L + 1):
        D = net.activation(l).df(trace.a[l])  # (B, n_l)
        J = D[:, :, None] * (net.weights[l - 1][None, :, :] @ J)
    return J


def drl_direct_optimum(J):
    """Minimiser of the small-sigma direct DRL ``sum_b ||Q J_b - I||_F^2`` over ``Q`` (no decay):

        Q* = (sum_b J_b^T) (sum_b J_b J_b^T)^{-1}          (normal equations; spec §3b B2)

    ``J``: per-sample ``Jbar_l`` of shape ``(B, n_L, n_l)`` (e.g. :func:`output_jacobians`);
    returns ``(n_l, n_L)``. For one sample with full row rank it is ``pinv(Jbar_l)``; for a batch,
    the least-squares compromise that DRL-trained direct linear feedback converges to.
    """
    xp = namespace(J)
    if J.ndim != 3:
        raise ValueError(f"J: expected per-sample Jacobians of shape (B, n_L, n_l), got {tuple(J.shape)}")
    Jt = xp.permute_dims(J, (0, 2, 1))
    S1 = xp.sum(Jt, axis=0)          # (n_l, n_L)
    S2 = xp.sum(J @ Jt, axis=0)      # (n_L, n_L), symmetric
    return xp.linalg.solve(S2, S1.T).T


def _forward_from(net, h, frm: int, to: int):
    """``h_to`` from ``h_frm`` through layers ``frm+1..to``; returns ``(a_to, z_to, h_to)``
    (pre-activation, pre-pooling activation, layer output)."""
    a = z = None
    xp = namespace(h)
    for l in range(frm + 1, to + 1):
        a = net.pre_activation(l, h)
        z = net.activation(l).f(a)
        h = net.layer(l).post(xp, z)
    return a, z, h


# --- the feedback losses (per-sample value and the written-out gradient) ----------------------
#
# Every feedback map is linear in its weight: g_l(y) = transpose_l(Q_l, u) + c_l with
# u = phi_l(P_l^T y). Hence <d, transpose_l(Q, u)> = <Q, weight_grad_l(u, d)> for any d of the shape
# of h_{l-1}: the gradient of a loss sum_b <d_b, g_l(y_b)> w.r.t. Q_l is weight_grad_l(u, d) (dense:
# u^T d, returned as d^T u in Q's layout) and w.r.t. c_l the sum of d over what c is broadcast over.

def reconstruction_loss(net, trace, phi, Q, c, layer, eps, sigma):
    """Lee et al.'s denoising reconstruction loss for ``g_layer`` (module docstring).

    ``eps``: standard normal, shape of ``h_{layer-1}``. The noisy forward pass's own pooling
    indices unpool its output (``g`` inverts the forward pass that produced its argument).
    Returns ``(l_b (B,), dQ, dc, record)``.
    """
    xp = namespace(eps)
    B = eps.shape[0]
    lay = net.layer(layer)
    xt = trace.h[layer - 1] + sigma * eps
    _, zt, yt = _forward_from(net, xt, layer - 1, layer)
    p = _feedback_input(xp, lay, phi, yt, zt)
    r = lay.transpose(xp, _fb_weight(lay, Q), p) + _fb_bias(xp, lay, c)
    d = r - xt
    lb = _rowsum(xp, d * d)
    dQ = (2 / B) * _fb_layout(lay, lay.weight_grad(xp, p, d))
    dc = (2 / B) * _fb_bias_grad(xp, lay, d)
    return lb, dQ, dc, {"x_noisy": xt, "reconstruction": r}


def drl_sequential_loss(net, trace, phis, Qs, cs, layer, eps, sigma):
    """Meulemans et al.'s DRL for the sequential feedback ``g_layer`` (module docstring).

    ``Qs, cs``: all layers' feedback (``Qs[l-1]`` for ``g_l``); ``eps`` shape of ``h_{layer-1}``.
    Only the output ``r_L`` comes from the noisy forward pass; the difference-corrected path below
    it unpools through the clean forward pass's indices (``trace.z``), as the targets do.
    """
    xp = namespace(eps)
    B = eps.shape[0]
    L = net.depth
    lay = net.layer(layer)
    xt = trace.h[layer - 1] + sigma * eps
    _, _, r = _forward_from(net, xt, layer - 1, L)
    r_above = r
    for k in range(L, layer - 1, -1):  # r_{k-1} = g_k(r_k) + h_{k-1} - g_k(h_k)
        r_above = r
        lk = net.layer(k)
        r = (_g(xp, lk, phis[k], Qs[k - 1], cs[k - 1], r, trace.z[k]) + trace.h[k - 1]
             - _g(xp, lk, phis[k], Qs[k - 1], cs[k - 1], trace.h[k], trace.z[k]))
    d = r - xt
    lb = _rowsum(xp, d * d) / sigma ** 2
    u = (_feedback_input(xp, lay, phis[layer], r_above, trace.z[layer])
         - _feedback_input(xp, lay, phis[layer], trace.h[layer], trace.z[layer]))
    dQ = (2 / (sigma ** 2 * B)) * _fb_layout(lay, lay.weight_grad(xp, u, d))
    dc = xp.zeros_like(cs[layer - 1])
    return lb, dQ, dc, {"x_noisy": xt, "reconstruction": r}


def _inverse_or_raise(xp, W, i):
    """``W^{-1}``, or ValueError naming the layer when W is singular to working precision
    (``cond(W) > 1/eps``: the inverse would be rounding noise or a LinAlgError)."""
    Wh = np.asarray(to_numpy(W), dtype=np.float64)
    cond = np.linalg.cond(Wh) if np.all(np.isfinite(Wh)) else np.inf
    if not cond < 1.0 / np.finfo(np.dtype(str(W.dtype).split(".")[-1])).eps:
        raise ValueError(f"exact_inverse_state: weights[{i}] is singular to working precision (cond {cond:.3g}); "
                         "an exact inverse needs an invertible W")
    return xp.linalg.inv(W)


def _direct_features(trace_aL, R, use_rhl: bool, r=None):
    if not use_rhl:
        return trace_aL
    xp = namespace(trace_aL)
    a = trace_aL @ R.T
    return xp.tanh(a if r is None else a + r)


def _unflatten(xp, v, like):
    """``v`` (B, n) in the shape of ``like`` (a direct feedback reaches a conv layer's units in
    torch's flatten order)."""
    return v if like.ndim == 2 else xp.reshape(v, tuple(like.shape))


def _flatten(xp, v):
    return v if v.ndim == 2 else xp.reshape(v, (v.shape[0], -1))


def drl_direct_loss(net, trace, Q, layer, eps, sigma, R=None, difference: bool = True, r=None):
    """Meulemans et al.'s DRL for the direct feedback of hidden ``layer`` (module docstring).

    ``R`` given: DDTP-RHL features ``tanh(a_L R^T)`` (``tanh(a_L R^T + r)`` with the bias ``r``). ``difference=False`` is DDTP-control (the
    ablation without the difference correction: ``r = g(a~_L)``), whose gradient is
    ``(2/(sigma^2 B)) (r - h~)^T z(a~_L)`` (a bias ``c`` would be needed to reconstruct ``h``;
    direct maps carry none, as in DDTP-linear). On an image-shaped layer the direct map reaches
    the flattened units (``Q_l: (n_l, n_L)``, torch's flatten order).
    """
    xp = namespace(eps)
    B = eps.shape[0]
    L = net.depth
    ht = trace.h[layer] + sigma * eps
    at, _, _ = _forward_from(net, ht, layer, L)
    use_rhl = R is not None
    zt = _direct_features(at, R, use_rhl, r)
    z0 = _direct_features(trace.a[L], R, use_rhl, r)
    if difference:
        u = zt - z0
        r = trace.h[layer] + _unflatten(xp, u @ Q.T, ht)
    else:
        u = zt
        r = _unflatten(xp, zt @ Q.T, ht)
    d = r - ht
    lb = _rowsum(xp, d * d) / sigma ** 2
    dQ = (2 / (sigma ** 2 * B)) * (_flatten(xp, d).T @ u)
    return lb, dQ, None, {"h_noisy": ht, "reconstruction": r}


def ldrl_loss(net, trace, phi, Q, c, layer, eps, eta):
    """Ernoult et al.'s local difference reconstruction loss for ``g_layer`` (module docstring).

    ``eps`` (shape of ``h_{layer-1}``) and ``eta`` (shape of ``h_layer``) are the noises *with*
    their scale sigma (``N(0, sigma^2)``), as in the E-code. Unpooling indices as in the E-code's
    "magic bridge": ``g(f(x + eps))`` through the noisy forward pass's own argmax, ``g(y)`` and
    ``g(y + eta)`` through the clean pass's (``trace.z``).
    """
    xp = namespace(eps)
    B = eps.shape[0]
    lay = net.layer(layer)
    x, y, z = trace.h[layer - 1], trace.h[layer], trace.z[layer]
    _, zx, yx = _forward_from(net, x + eps, layer - 1, layer)
    py = _feedback_input(xp, lay, phi, y, z)
    U = _feedback_input(xp, lay, phi, yx, zx) - py
    V = _feedback_input(xp, lay, phi, y + eta, z) - py
    M = _fb_weight(lay, Q)
    dr, dry = lay.transpose(xp, M, U), lay.transpose(xp, M, V)
    lb = -2 * _rowsum(xp, eps * dr) + _rowsum(xp, dry * dry)
    dQ = (2 / B) * _fb_layout(lay, lay.weight_grad(xp, V, dry) - lay.weight_grad(xp, U, eps))
    dc = xp.zeros_like(c)
    return lb, dQ, dc, {"dr": dr, "dr_y": dry}


# --- hyper-parameter helpers ------------------------------------------------------------------

def _check_positive(name, v, allow_zero=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {bound}, got {v!r}")


def _check_schedule(name, v, integer=False, allow_zero=False):
    vals = v if isinstance(v, (tuple, list)) else (v,)
    for x in vals:
        if integer:
            if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 0:
                raise ValueError(f"{name}: expected a non-negative integer (or a tuple of them), got {v!r}")
        else:
            _check_positive(name, x, allow_zero)


def _per_layer(value, trained, L, name):
    """Tuple of length L (entry ``l-1`` for layer ``l``) from a scalar or a tuple over ``trained``."""
    out = [None] * L
    if isinstance(value, (tuple, list)):
        if len(value) != len(trained):
            raise ValueError(f"{name}: expected a scalar or {len(trained)} values (one per trained feedback "
                             f"map, forward order: layers {list(trained)}), got {len(value)}")
        for l, v in zip(trained, value):
            out[l - 1] = v
    else:
        for l in trained:
            out[l - 1] = value
    return tuple(out)


def _fb_fan_in(shape):
    """Fan-in of a feedback map with weight of ``shape``: dense ``(n_in, n_out)`` -> ``n_out``;
    transposed conv ``(C_out, C_in, kh, kw)`` -> ``C_out kh kw``."""
    return shape[1] if len(shape) == 2 else shape[0] * shape[2] * shape[3]


def _check_sequential_shapes(net, state, Qs, cs):
    """ValueError naming the layer, its type and the layout rule when ``state.Q[i]`` / ``state.c[i]``
    do not fit layer ``i+1``'s feedback (bad input, issue 16 item 5)."""
    for name, arrays, shapes in (("state.Q", state.Q, Qs), ("state.c", state.c, cs)):
        if not isinstance(arrays, (tuple, list)) or len(arrays) != len(shapes):
            got = len(arrays) if isinstance(arrays, (tuple, list)) else type(arrays).__name__
            raise ValueError(f"{name}: expected {len(shapes)} arrays (one per layer), got {got}")
        for i, (a, s) in enumerate(zip(arrays, shapes)):
            if a is not None and tuple(a.shape) == tuple(s):
                continue
            lay = net.layers[i]
            if isinstance(lay, _layers.Linear):
                rule = ("a dense layer's feedback weight has the shape of W^T, (in_features, out_features)"
                        if name == "state.Q" else "a dense layer's feedback bias has one entry per input unit")
            else:
                rule = ("a conv layer's feedback is a transposed convolution with its weight in W's layout "
                        "(out, in, kh, kw) (ConvTranspose2d's)" if name == "state.Q"
                        else "a conv layer's feedback bias has one entry per input channel")
            got = None if a is None else tuple(a.shape)
            raise ValueError(f"{name}[{i}]: layer {i + 1} ({lay.describe()}): {rule}: expected shape {tuple(s)}, "
                             f"got {got}")


# --- the rules --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _TargetProp:
    """Shared hyper-parameters (see the module docstring).

    beta: output target step (> 0). loss: ``"mse"`` or ``"ce"``. reduction: ``"sum"`` (per-sample
    error, Ernoult) or ``"mean"`` (batch-mean gradient, Meulemans). feedback_activation: ``"same"``,
    ``"jmc"``, ``"inverse"`` or a name. sigma, iterations, lr_fb: feedback-training noise, steps
    per batch and learning rate (scalar or per trained layer, forward order). optimizer: ``"sgd"``
    (with ``momentum``) or ``"adam"``. weight_decay: feedback weight decay. samples: noise draws
    per iteration. init_scale: std of the initial feedback weights times ``sqrt(fan_in)``.
    seed: seeds the feedback-training noise.
    """

    beta: float = 0.1
    loss: str = "mse"
    reduction: str = "sum"
    feedback_activation: str = "same"
    sigma: Any = 0.1
    iterations: Any = 20
    lr_fb: Any = 1e-3
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    samples: int = 1
    init_scale: float = 1.0
    seed: int = 0

    _difference = True
    _direct = False

    def __post_init__(self):
        _check_positive("beta", self.beta)
        _losses.get(self.loss)
        if self.reduction not in ("sum", "mean"):
            raise ValueError(f"reduction: expected 'sum' (per-sample error) or 'mean' (batch-mean gradient), "
                             f"got {self.reduction!r}")
        if self.feedback_activation not in ("same", "jmc", "inverse"):
            _act.get(self.feedback_activation)
        _check_schedule("sigma", self.sigma)
        _check_schedule("iterations", self.iterations, integer=True)
        _check_schedule("lr_fb", self.lr_fb, allow_zero=True)
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {self.optimizer!r}")
        _check_positive("momentum", self.momentum, allow_zero=True)
        _check_positive("weight_decay", self.weight_decay, allow_zero=True)
        _check_positive("init_scale", self.init_scale, allow_zero=True)
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples: expected an integer >= 1, got {self.samples!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise TypeError(f"seed: expected an int, got {type(self.seed).__name__}")

    # -- structure --

    def trained_layers(self, net):
        """The layers whose feedback is trained: ``2..L`` (sequential) or ``1..L-1`` (direct)."""
        L = net.depth
        return tuple(range(1, L)) if self._direct else tuple(range(2, L + 1))

    def feedback_shapes(self, net):
        """Shapes of ``state.Q`` and ``state.c``: sequential ``g_l`` of a dense layer ``Q_l:
        (n_in, n_out)`` (``W_l^T``'s), ``c_l: (n_in,)``; of a conv layer ``Q_l`` in ``W_l``'s layout
        ``(C_out, C_in, kh, kw)`` (``ConvTranspose2d``'s), ``c_l: (C_in,)`` (per channel). Direct:
        ``Q_l: (n_l, n_features)`` onto the flattened units of layer ``l``."""
        n = net.sizes
        L = net.depth
        if self._direct:
            nf = self._feature_width(net)
            Qs = tuple((n[l], nf[l - 1]) for l in range(1, L)) + (None,)
            cs = tuple((n[l],) for l in range(1, L)) + (None,)
            return Qs, cs
        Qs, cs = [], []
        for lay in net.layers:
            if isinstance(lay, _layers.Linear):
                Qs.append((lay.in_features, lay.out_features))
                cs.append((lay.in_features,))
            else:
                Qs.append(tuple(lay.weight_shape()))
                cs.append((lay.in_shape[0],))
        return tuple(Qs), tuple(cs)

    def _feature_width(self, net):
        return tuple(net.sizes[-1] for _ in range(net.depth))

    def _rhl(self, state, layer, L):
        return None

    def phis(self, net):
        return _phis(net, self.feedback_activation)

    # -- state --

    def init(self, net, seed=0):
        """Random feedback ``Q ~ N(0, init_scale^2 / fan_in)``, ``c = 0`` (from ``seed``); the
        fan-in of a feedback map is ``n_out`` (dense) or ``C_out kh kw`` (transposed convolution)."""
        xp, dt = net.xp, net.dtype
        dev = device_of(net.weights[0])
        gen = host_rng(seed)
        R = self._draw_R(gen, net)
        Qs, cs = self.feedback_shapes(net)
        Q = tuple(None if s is None else from_numpy(gen.standard_normal(s) * self.init_scale / math.sqrt(_fb_fan_in(s)),
                                                    xp, dt, dev)
                  for s in Qs)
        c = tuple(None if s is None else xp.zeros(s, dtype=dt, device=dev) for s in cs)
        return TPState(Q, c, R, r=self._draw_rhl_bias(gen, net))

    def _draw_rhl_bias(self, gen, net):
        return None

    def _rhl_bias(self, state, layer, L):
        return None

    def _draw_R(self, gen, net):
        return None

    def symmetric_state(self, net, state=None):
        """The exact transpose ``Q_l = W_l^T`` (dense) / ``Q_l = W_l`` (conv: the transposed
        convolution with the forward kernel), ``c_l = 0`` (Ernoult's ``init_symetric_weights``);
        sequential feedback only."""
        if self._direct:
            raise ValueError("symmetric_state: direct feedback has no W^T (use a state with Q set by hand)")
        xp = net.xp
        base = state if state is not None else self.init(net)
        _, cs = self.feedback_shapes(net)
        Q = tuple(_fb_layout(lay, W) for lay, W in zip(net.layers, net.weights))
        c = tuple(xp.zeros(s, dtype=net.dtype, device=device_of(net.weights[0])) for s in cs)
        return replace(base, Q=Q, c=c)

    def exact_inverse_state(self, net, state=None):
        """Feedback with ``transpose_l(Q_l, a) + c_l = f_l``'s affine part inverted; with
        ``feedback_activation="inverse"``, ``g_l = f_l^{-1}`` exactly.

        Dense (square ``W_l``): ``Q_l = W_l^{-1}``, ``c_l = -b_l W_l^{-T}``. Conv: defined when the
        convolution is a bijection whose inverse is itself a transposed convolution, i.e.
        non-overlapping windows that tile the input (``stride = kernel``, padding 0, no pooling)
        with ``C_out = C_in kh kw``: per window ``a_p = W_mat x_p + b`` with the square
        ``W_mat = W.reshape(C_out, C_in kh kw)``, so ``Q_l = reshape(W_mat^{-T}, W.shape)``
        (``transpose`` multiplies each window by ``Q_mat^T``) and ``c_l = -W_mat^{-1} b``, which a
        per-channel feedback bias holds only for 1x1 kernels or ``b = 0`` (ValueError otherwise).
        """
        if self._direct:
            raise ValueError("exact_inverse_state: needs sequential feedback")
        xp = net.xp
        Q, c = [], []
        for i, (lay, W, b) in enumerate(zip(net.layers, net.weights, net.biases)):
            where = f"exact_inverse_state: layer {i + 1} ({lay.describe()})"
            if isinstance(lay, _layers.Linear):
                if W.shape[0] != W.shape[1]:
                    raise ValueError(f"{where}: weights[{i}] has shape {tuple(W.shape)}; an exact inverse needs "
                                     "square layers")
                Wi = _inverse_or_raise(xp, W, i)
                Q.append(Wi)
                c.append(-(b @ Wi.T))
                continue
            Co, Ci, kh, kw = (int(n) for n in W.shape)
            tiles = (tuple(lay.stride) == (kh, kw) and tuple(lay.padding) == (0, 0)
                     and lay.in_shape[1] % kh == 0 and lay.in_shape[2] % kw == 0)
            if lay.pool is not None or not tiles or Co != Ci * kh * kw:
                raise ValueError(f"{where}: an exact inverse by a transposed convolution needs non-overlapping "
                                 f"windows that tile the input (stride = kernel, padding 0, no pooling) and "
                                 f"C_out = C_in*kh*kw = {Ci * kh * kw}; got C_out {Co}, stride {lay.stride}, "
                                 f"padding {lay.padding}, pool {lay.pool}")
            if kh * kw > 1 and bool(xp.any(b != 0)):
                raise ValueError(f"{where}: the inverse's offset -W^{{-1}} b varies inside the {kh}x{kw} window, but a "
                                 f"transposed-convolution feedback bias is per channel (c: ({Ci},)); use a zero "
                                 f"forward bias or 1x1 kernels")
            Wi = xp.linalg.inv(xp.reshape(W, (Co, Ci * kh * kw)))       # (Ci kh kw, Co)
            Q.append(xp.reshape(Wi.T, (Co, Ci, kh, kw)))
            c.append(xp.reshape(-(Wi @ b), (Ci, kh * kw))[:, 0])
        base = state if state is not None else self.init(net)
        return replace(base, Q=tuple(Q), c=tuple(c))

    def check_state(self, net, state):
        if not isinstance(state, TPState):
            raise TypeError(f"state: expected a TPState (from rule.init), got {type(state).__name__}")
        Qs, cs = self.feedback_shapes(net)
        if self._direct:
            check_state_shapes(state.Q, Qs, "state.Q")
            check_state_shapes(state.c, cs, "state.c")
        else:
            _check_sequential_shapes(net, state, Qs, cs)
        if getattr(self, "feedback", None) == "direct_rhl":
            # without R the RHL layers would silently fall back to linear features (when
            # rhl_width == n_L the Q shapes cannot tell the two apart)
            want = (self.rhl_width, net.sizes[-1])
            if state.R is None or tuple(state.R.shape) != want:
                got = None if state.R is None else tuple(state.R.shape)
                raise ValueError(f"state.R: expected the fixed random feedback layer of shape {want} "
                                 f"(DDTP-RHL, from rule.init), got {got}")
            if getattr(self, "rhl_bias", False) and (state.r is None or tuple(state.r.shape) != (self.rhl_width,)):
                got = None if state.r is None else tuple(state.r.shape)
                raise ValueError(f"state.r: expected the fixed random bias of shape ({self.rhl_width},) "
                                 f"(DDTP-RHL with rhl_bias=True, from rule.init), got {got}")

    # -- targets and updates --

    def _propagate(self, net, state, trace, tL, e):
        L = net.depth
        t = [None] * (L + 1)
        t[L] = tL
        if self._direct:
            aL = trace.a[L]
            dL = -self.beta * e * net.activation(L).df(aL)  # a^_L - a_L
            for l in range(1, L):
                R, r = self._rhl(state, l, L), self._rhl_bias(state, l, L)
                u = _direct_features(aL + dL, R, R is not None, r) - _direct_features(aL, R, R is not None, r)
                t[l] = trace.h[l] + _unflatten(namespace(u), u @ state.Q[l - 1].T, trace.h[l])
            return tuple(t)
        phis = self.phis(net)
        xp = namespace(tL)
        for l in range(L, 1, -1):
            lay, Q, c, z = net.layer(l), state.Q[l - 1], state.c[l - 1], trace.z[l]
            g_t = _g(xp, lay, phis[l], Q, c, t[l], z)
            if self._difference:
                t[l - 1] = g_t + trace.h[l - 1] - _g(xp, lay, phis[l], Q, c, trace.h[l], z)
            else:
                t[l - 1] = g_t
        return tuple(t)

    def targets(self, net, state, x, y):
        """Targets ``(None, t_1, ..., t_L)`` (module docstring)."""
        return self._targets(net, state, x, y)[0]

    def _targets(self, net, state, x, y):
        xp, yf = check_batch(net, x, y, self.loss)
        self.check_state(net, state)
        trace = net.forward(x)
        tL, e = output_target(self.loss, trace, yf, self.beta, self.reduction)
        return self._propagate(net, state, trace, tL, e), trace, yf, e

    def updates(self, net, state, x, y):
        """Forward updates (gradient convention, divided by beta; module docstring).

        ``record``: ``trace``, ``targets``, ``output_error`` (``e`` as used in ``t_L``), ``loss``,
        ``local_delta`` (``s'(a_l)(h_l - t_l)/(beta B)``, tuple over layers 1..L).
        """
        t, trace, yf, e = self._targets(net, state, x, y)
        dW, db, local = forward_updates(net, trace, t, self.beta, self.reduction)
        loss = _losses.get(self.loss)
        record = {"trace": trace, "targets": t, "output_error": e, "loss": loss.value(trace.h[-1], yf),
                  "local_delta": (None,) + local}
        return Updates(dW, db, record), state

    # -- feedback --

    def _noise(self, net, layer, shape, key):
        gen = host_rng(np.random.SeedSequence([int(self.seed) & 0xFFFFFFFF] + [int(k) & 0xFFFFFFFF for k in key] + [layer]))
        return from_numpy(gen.standard_normal(shape), net.xp, net.dtype, device_of(net.weights[0]))

    def _layer_loss(self, net, trace, state, layer, sigma, key):
        raise NotImplementedError

    def feedback_updates(self, net, state, x, y=None, key=(0,)):
        """Gradient of each trained layer's feedback loss w.r.t. ``(Q_l, c_l)`` (module docstring).

        ``key``: integers seeding the noise (with the rule's ``seed`` and the layer). The noise and
        the per-sample loss values are in ``record[layer]``. ``y`` is not used (the feedback losses
        are unsupervised); it is accepted for the uniform face.
        """
        xp = net.check_input(x, "x")
        self.check_state(net, state)
        trace = net.forward(x)
        return self._feedback_updates(net, state, trace, tuple(key))

    def _feedback_updates(self, net, state, trace, key):
        L = net.depth
        sig = _per_layer(self.sigma, self.trained_layers(net), L, "sigma")
        M = self.samples
        if M > 1:  # replicate rows: M independent draws per sample
            xp = namespace(trace.h[0])
            trace = type(trace)(tuple(xp.concat([a] * M, axis=0) for a in trace.a),
                                tuple(xp.concat([h] * M, axis=0) for h in trace.h),
                                tuple(xp.concat([z] * M, axis=0) for z in trace.z))
        dQ, dc, lo = [None] * L, [None] * L, [None] * L
        rec = {}
        for l in self.trained_layers(net):
            lb, gQ, gc, r = self._layer_loss(net, trace, state, l, sig[l - 1], key)
            xp = namespace(lb)
            dQ[l - 1], dc[l - 1] = gQ, gc
            lo[l - 1] = float(xp.mean(lb))
            r["per_sample_loss"] = lb
            rec[l] = r
        return FeedbackUpdates(tuple(dQ), tuple(dc), tuple(lo), rec)

    def _optimizer(self, lr):
        if self.optimizer == "sgd":
            return _optim.SGD(lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return _optim.Adam(lr=lr, weight_decay=self.weight_decay)

    def train_feedback(self, net, state, x, y=None):
        """The rule's feedback-training schedule on one batch (module docstring); returns the new state."""
        net.check_input(x, "x")
        self.check_state(net, state)
        trace = net.forward(x)
        L = net.depth
        trained = self.trained_layers(net)
        K = _per_layer(self.iterations, trained, L, "iterations")
        lr = _per_layer(self.lr_fb, trained, L, "lr_fb")
        Q, c = list(state.Q), list(state.c)
        opt = list(state.opt) if state.opt is not None else [None] * L
        rounds = max([K[l - 1] for l in trained], default=0)
        for k in range(rounds):
            cur = replace(state, Q=tuple(Q), c=tuple(c))
            fb = self._feedback_updates(net, cur, trace, (state.step, k))
            for l in trained:
                if K[l - 1] <= k:
                    continue
                o = self._optimizer(lr[l - 1])
                params = (Q[l - 1],) if c[l - 1] is None or fb.dc[l - 1] is None else (Q[l - 1], c[l - 1])
                grads = (fb.dQ[l - 1],) if len(params) == 1 else (fb.dQ[l - 1], fb.dc[l - 1])
                if opt[l - 1] is None:
                    opt[l - 1] = o.init(params)
                new, opt[l - 1] = o.step(params, grads, opt[l - 1])
                Q[l - 1] = new[0]
                if len(new) == 2:
                    c[l - 1] = new[1]
        return replace(state, Q=tuple(Q), c=tuple(c), opt=tuple(opt), step=state.step + 1)


@dataclass(frozen=True)
class TP(_TargetProp):
    """Target propagation (Bengio 2014; Lee et al. 2015, Eq. 5): ``t_{l-1} = g_l(t_l)``.

    Feedback trained by the denoising reconstruction loss (Lee et al. 2015, Eq. 8). See the module
    docstring for the feedback form, output target, forward-update scale and loss normalisation.
    """

    _difference = False

    def _layer_loss(self, net, trace, state, layer, sigma, key):
        eps = self._noise(net, layer, tuple(trace.h[layer - 1].shape), key)
        lb, dQ, dc, rec = reconstruction_loss(net, trace, self.phis(net)[layer], state.Q[layer - 1],
                                              state.c[layer - 1], layer, eps, sigma)
        rec["eps"] = eps
        return lb, dQ, dc, rec


@dataclass(frozen=True)
class DTP(TP):
    """Difference target propagation (Lee et al. 2015, Eq. 13):
    ``t_{l-1} = g_l(t_l) + h_{l-1} - g_l(h_l)``; reconstruction-trained feedback (as :class:`TP`)."""

    _difference = True


@dataclass(frozen=True)
class DRL(_TargetProp):
    """DTP with feedback trained by the difference reconstruction loss (Meulemans et al. 2020).

    ``feedback="sequential"`` (DTP-DRL: layer-wise ``g_l``, difference-corrected path to the output),
    ``"direct_linear"`` (DDTP-linear: ``g_l(a_L) = a_L Q_l^T``) or ``"direct_rhl"`` (DDTP-RHL, fixed
    random hidden feedback layer of width ``rhl_width``). As ``sigma -> 0`` the loss is
    ``||J_path Jbar_l - I||_F^2`` per sample, minimised by ``J_path = Jbar_l^+`` (the Gauss-Newton
    condition): DTP then propagates Gauss-Newton targets (spec §3b). Defaults follow
    ``mnist_DDTPlinear.py``'s optimiser (Adam); ``beta`` is Meulemans' ``target_stepsize`` eta when
    ``reduction="mean"`` and the loss is ``"ce"`` (``"mse"``: ``beta = 2 eta / n_L``, module docstring).
    ``rhl_bias``: DDTP-RHL's random layer with a fixed random bias, ``tanh(a_L R^T + r)``, as in
    Meulemans' code (``nn.Linear``'s default bias init ``U(-1/sqrt(n_L), 1/sqrt(n_L))``); False:
    ``tanh(a_L R^T)``.
    """

    feedback: str = "sequential"
    rhl_width: int = 256
    optimizer: str = "adam"
    rhl_bias: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.feedback not in ("sequential", "direct_linear", "direct_rhl"):
            raise ValueError(f"feedback: expected 'sequential', 'direct_linear' or 'direct_rhl', got {self.feedback!r}")
        if isinstance(self.rhl_width, bool) or not isinstance(self.rhl_width, int) or self.rhl_width < 1:
            raise ValueError(f"rhl_width: expected a positive integer, got {self.rhl_width!r}")
        if not isinstance(self.rhl_bias, bool):
            raise TypeError(f"rhl_bias: expected a bool, got {self.rhl_bias!r}")
        if self.rhl_bias and self.feedback != "direct_rhl":
            raise ValueError(f"rhl_bias: only DDTP-RHL (feedback='direct_rhl') has a random layer, got "
                             f"feedback={self.feedback!r}")
        object.__setattr__(self, "_direct", self.feedback != "sequential")

    def _feature_width(self, net):
        L = net.depth
        if self.feedback != "direct_rhl":
            return tuple(net.sizes[-1] for _ in range(L))
        return tuple(net.sizes[-1] if l == L - 1 else self.rhl_width for l in range(1, L + 1))

    def _draw_R(self, gen, net):
        if self.feedback != "direct_rhl":
            return None
        nL = net.sizes[-1]
        return from_numpy(gen.standard_normal((self.rhl_width, nL)) / math.sqrt(nL), net.xp, net.dtype,
                          device_of(net.weights[0]))

    def _rhl(self, state, layer, L):
        return state.R if (self.feedback == "direct_rhl" and layer < L - 1) else None

    def _draw_rhl_bias(self, gen, net):
        if not self.rhl_bias:
            return None
        bound = 1.0 / math.sqrt(net.sizes[-1])
        return from_numpy(gen.uniform(-bound, bound, (self.rhl_width,)), net.xp, net.dtype, device_of(net.weights[0]))

    def _rhl_bias(self, state, layer, L):
        return state.r if (self.rhl_bias and layer < L - 1) else None

    def _layer_loss(self, net, trace, state, layer, sigma, key):
        if self._direct:
            eps = self._noise(net, layer, tuple(trace.h[layer].shape), key)
            lb, dQ, _, rec = drl_direct_loss(net, trace, state.Q[layer - 1], layer, eps, sigma,
                                             R=self._rhl(state, layer, net.depth),
                                             r=self._rhl_bias(state, layer, net.depth))
            dc = namespace(dQ).zeros_like(state.c[layer - 1])
        else:
            eps = self._noise(net, layer, tuple(trace.h[layer - 1].shape), key)
            lb, dQ, dc, rec = drl_sequential_loss(net, trace, self.phis(net), state.Q, state.c, layer, eps, sigma)
        rec["eps"] = eps
        return lb, dQ, dc, rec


@dataclass(frozen=True)
class LDRL(_TargetProp):
    """DTP with feedback trained by the local difference reconstruction loss (Ernoult et al. 2022).

    As ``sigma -> 0``, ``E[loss] = sigma^2 (||J_g - J_f^T||_F^2 - ||J_f||_F^2)``: minimised by the
    Jacobian-matching condition ``J_g = J_f^T``, under which DTP's targets are BP's to first order in
    beta (spec §3c). Defaults: Ernoult's SGD with momentum 0.9; ``beta`` as in the E-code with
    ``reduction="sum"``.
    """

    def _layer_loss(self, net, trace, state, layer, sigma, key):
        eps = sigma * self._noise(net, layer, tuple(trace.h[layer - 1].shape), key)
        eta = sigma * self._noise(net, layer + 1000003, tuple(trace.h[layer].shape), key)
        lb, dQ, dc, rec = ldrl_loss(net, trace, self.phis(net)[layer], state.Q[layer - 1], state.c[layer - 1],
                                    layer, eps, eta)
        rec["eps"], rec["eta"] = eps, eta
        return lb, dQ, dc, rec
