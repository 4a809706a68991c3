r"""PEPITA: forward-only learning by error-driven input modulation, and its variants.

Two forward passes with the same weights and the same dropout masks; the second sees the input
modulated by the output error projected through a fixed matrix ``F``. In refimpl's batch-row form
(``x: (B, n_0)``, ``W_l: (n_l, n_{l-1})``, spec pepita_fa.md §0), with ``e = loss.error(h_L, y)``
the per-sample output error (``softmax(h_L) - y`` for ``loss="ce"``; rows carry no 1/B):

    pass 1     h_0 = x,      h_l = M_l * f_l(h_{l-1} W_l^T + b_l)   (l < L),  e = error(h_L, y)
    modulate   x_mod = x + sign * (e @ F.T)                          F: (n_0, n_L)
    pass 2     h_0' = x_mod, h_l' = M_l * f_l(h_{l-1}' W_l^T + b_l)            (same M_l)
    hidden     dW_l = (h_l - h_l').T @ P_{l-1} / B,   db_l = mean_b (h_l - h_l')
    output     dW_L = (e_* * f_L'(a_L^*)).T @ P_{L-1} / B,   db_L = mean_b (e_* * f_L'(a_L^*))

``P = h'`` (presynaptic ``"modulated"``, both papers; ``P_0 = x_mod``) or ``P = h`` (``"forward"``,
the ICLR ``forward`` mode); ``e_* = e' = error(h_L', y)`` (``last_layer_error="modulated"``, ICML
FC code) or ``e_* = e`` (``"first"``, ICML conv code and ICLR code). ``f_L'`` is 1 for the papers'
softmax read-out (linear logits + ``ce``); it is kept so that the output update is the delta rule
for any output activation. ``M_l`` are inverted-dropout masks (entries in ``{0, 1/keep_prob}``) on
the hidden layers only, drawn from ``(state.seed, state.step)``: both passes share them and every
call of :meth:`PEPITA.updates` advances ``state.step``.

Sources: Dellaferrera & Kreiman, "Error-driven input modulation: solving the credit assignment
problem without a backward pass", ICML 2022 (arXiv 2201.11665), Algorithm 1 and the official code
``GiorgiaD/PEPITA`` (``Tutorial_PEPITA_FullyConnectedNets_CIFAR-10.ipynb``, ``functions.py``);
Srinivasan et al., "Forward learning with top-down feedback: empirical and analytical
characterization", ICLR 2024 (arXiv 2302.05440), code ``ravifrancesco/PEPITA``
(``pepita/models/FCnet.py``). Spec: /work/shared/spec/pepita_fa.md §1.

Sign and scale (gradient convention). ``dW`` is the quantity both codes *subtract*
(ICML: ``V <- gamma V - eta G; W <- W + V``; ICLR: ``G`` written into ``.grad``), so it is
returned unchanged: ``W <- W - lr * dW`` is PEPITA's step. Only the output update with
``e_* = e`` is a gradient (of the batch-mean cross-entropy). To first order in the size of ``F``
(spec §3b; :mod:`proofs.pepita`), with ``s = -sign`` and ``U_l`` the forward tangent
``U_0 = e @ F.T``, ``U_l = M_l * f_l'(a_l) * (U_{l-1} @ W_l.T)``:

    h_l - h_l' = s U_l + O(|F|^2)       (exact for ReLU while no unit crosses its kink)
    dW_l       = s U_l.T @ h_{l-1} / B + O(|F|^2)     (adaptive feedback alignment, feedback W_1 F)

so with ``sign = +1`` (ICML, ``x + F e``) the descended direction is the *negative* AFA update and
the forward weights anti-align with ``F``; with ``sign = -1`` (ICLR, ``x - F e``) they align. The
hidden updates are of the size of ``F``: the BP limit is ``dW_1 / eps -> grad_{W_1} CE`` for a
one-hidden-layer net with ``F = -sign * eps * pinv(W_1) W_2^T`` (:mod:`proofs.pepita`); to get that
scale, divide the hidden updates by ``eps`` yourself. ``dW`` carries the paper's own scale.
This is a deliberate exception to DESIGN.md's "scaled so that the rule equals BP in its limit":
``eps`` is the size of ``F``, which is part of the *state* (drawn by :meth:`PEPITA.init`, rescaled
by mirroring, or a user's ``F`` such as ``F*``), not a hyper-parameter of the rule, so the rule has
nothing to divide by; the output update is at BP's scale and the hidden ones at ``eps`` times it,
as in both papers, so their learning rates apply unchanged.

Variants (ICLR 2024, §"PEPITA-Hebbian", "PEPITA-TL"; spec §1.5), by their formulas:

* ``variant="hebbian"``: ``dW_l = (h_l.T @ h_{l-1} - h_l'.T @ h_{l-1}') / B`` (hidden) and
  ``dW_L = (yhat.T @ h_{L-1} - y.T @ h_{L-1}') / B`` with ``yhat = y + e`` the prediction
  (``softmax(h_L)`` under ``ce``).
* ``variant="time_local"``: first the Hebbian half ``G1_l = h_l.T @ h_{l-1} / B``
  (``yhat.T @ h_{L-1} / B`` at the output) is applied as a plain SGD step of size ``tl_lr``; the
  modulated pass then runs with the updated weights ``W - tl_lr G1`` and gives the anti-Hebbian half
  ``G2_l = -h_l'.T @ h_{l-1}' / B`` (``-y.T @ h_{L-1}' / B``). ``dW = G1 + G2``: with plain SGD at
  ``lr = tl_lr`` the trainer's step ``W - lr dW`` equals the two sequential steps exactly. (The
  ICLR code makes two optimiser calls, so with momentum its buffer is updated twice; not modelled.)

Options: ``F_init="uniform"`` (ICML): ``F_ij ~ U(-a, a)``, ``a = F_scale * sqrt(6 / n_0)``, i.e.
std ``F_scale * sqrt(2 / n_0)``; ``F_init="product"`` (ICLR ``init="normal"``): ``F = B_1 ... B_L``
with ``B_l: (n_{l-1}, n_l)`` i.i.d. ``N(0, s^2)``, ``s = (sigma_F / sqrt(prod hidden n_l))^(1/L)``,
``sigma_F = F_scale * sqrt(2 / n_0)``. ``mirror=True`` (needs ``"product"``) trains the factors by
weight mirroring in :meth:`PEPITA.train_feedback` (ICLR ``FCnet.mirror_weights``, Akrout et al.
2019): ``xi ~ N(0, wm_sigma^2)`` minus its scalar mean, ``zeta = f_l(xi W_l^T + b_l)``, gradient
``-xi.T @ zeta / B`` (first factor: ``sign * xi.T @ zeta / B``, so that ``F`` moves toward
``-sign (W_L...W_1)^T``, the direction in which the first-order update descends), one SGD step with
``wm_lr``, weight decay ``wm_wd``, then all factors rescaled by ``(sigma_F / std(F))^(1/L)``
(``normalize_B``). ``normalize=True`` divides every hidden activity row by its Euclidean norm
(``h_l <- h_l / ||h_l||``, both passes; ICLR "activation normalisation").

Quirks of the public code that are *stated here and not reproduced*:

* ICML numpy code (``functions.py``): the hidden difference is multiplied by the dropout mask a
  second time (``delta_a *= drop_mask``), scaling kept units by ``1/p^2``; here the mask is
  applied once (as the tutorial and the ICLR code do).
* ICML conv code divides conv updates by the batch size twice; only FC networks are covered here.
* The two codebases use opposite modulation signs (ICML ``x + F e``, ICLR ``x - F e``; some
  versions of ``FCnet.py`` have ``x + e @ B.T``): ``sign`` is a parameter, default ICML.
* ICLR ``mode="mixed"`` (PEPITA-Hebbian) is overwritten by the plain PEPITA gradient in the code,
  so that mode trains plain PEPITA; ``variant="hebbian"`` follows the formula instead.
* ICLR ``Normalization`` divides by the Frobenius norm of the *whole batch* (a sample's update
  then depends on the other samples); ``normalize=True`` normalises each sample.
* ICLR mirroring is called twice per step (only the second gradient is used), uses the softmax
  output for the last factor and a fresh dropout draw; here one call, the layer's own activation
  (linear logits), no dropout.
* One version of ICLR ``generate_B(init="uniform")`` uses ``sqrt(6 / n_L)`` instead of
  ``sqrt(6 / n_0)``; the ICML tutorial's ``sqrt(6 / nin)`` (input width) is used here.
* ICML's momentum form ``V <- gamma V - eta G`` differs from PyTorch's ``v <- mu v + G`` right
  after a learning-rate decay; refimpl's optimisers are PyTorch's form.

Convolutional layers (:mod:`refimpl.layers`): the same equations with the layer operations.
``F`` keeps shape ``(n_0, n_L)`` with ``n_0 = C*H*W`` and projects the error onto the input image,
``x_mod = x + sign * reshape(e @ F.T, x.shape)`` (torch flatten order; the ICML paper's CIFAR-10
convnet modulates the image the same way). ``dW_l = weight_grad_l(z_l - z_l', P_{l-1}) / B`` where
``z_l = M_l * f_l(a_l)`` are the layer's own units *before* its pooling (``h_l = pool(z_l)``; a
kernel update needs a quantity in ``a_l``'s shape, and without pooling ``z_l = h_l`` is the papers'
``h_l``); the dropout masks ``M_l`` have ``a_l``'s shape. This is refimpl's choice for pooled
blocks: the papers give no equation for them, and the ICML conv code was not available to check
(stated in docs/notes/issue-15-convolution.md). The first-order statements of the theorems carry
over with ``U_l`` the forward tangent of ``z_l`` through the poolings' Jacobians. ``normalize`` and
``F_init="product"`` (mirroring) are defined for dense networks only and refuse a conv network.

Biases: both codebases use ``bias=False``. refimpl networks have biases; their updates are the
same rules with presynaptic factor 1 (``bias_updates=False`` returns zeros instead, so that zero
biases stay zero as in the papers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np

from .. import losses as _losses
from ..backend import from_numpy, rng as _rng, device_of, to_numpy
from .base import Updates, check_batch

__all__ = ["PEPITA", "PEPITAState", "uniform_F", "product_factors", "product_F", "masked_forward",
           "dropout_masks", "alignment_angle"]

VARIANTS = ("pepita", "hebbian", "time_local")
_STREAM_TAG = 0x9E717A  # "PEPITA": separates F's stream from the network's (see PEPITA.init)
F_INITS = ("uniform", "product")


# --- F and its factors -------------------------------------------------------------------------

def uniform_F(gen: np.random.Generator, n0: int, nL: int, F_scale: float) -> np.ndarray:
    """ICML init (host): ``F_ij ~ U(-a, a)``, ``a = F_scale * sqrt(6 / n0)`` (std ``F_scale * sqrt(2/n0)``)."""
    a = F_scale * math.sqrt(6.0 / n0)
    return gen.uniform(-a, a, size=(n0, nL))


def _sigma_F(n0: int, F_scale: float) -> float:
    return F_scale * math.sqrt(2.0 / n0)


def product_factors(gen: np.random.Generator, sizes, F_scale: float) -> list:
    """ICLR ``init="normal"`` (host): ``B_l: (n_{l-1}, n_l)`` i.i.d. ``N(0, s^2)``,
    ``s = (sigma_F / sqrt(prod_{hidden} n_l))^(1/L)``, so that ``std(B_1...B_L) ~= sigma_F``."""
    sizes = list(sizes)
    L = len(sizes) - 1
    el = float(np.prod(sizes[1:-1])) if L > 1 else 1.0
    s = (_sigma_F(sizes[0], F_scale) / math.sqrt(el)) ** (1.0 / L)
    return [gen.standard_normal((sizes[l - 1], sizes[l])) * s for l in range(1, L + 1)]


def product_F(factors):
    """``F = B_1 @ B_2 @ ... @ B_L`` (shape ``(n_0, n_L)``)."""
    F = factors[0]
    for Bl in factors[1:]:
        F = F @ Bl
    return F


# --- the two passes ----------------------------------------------------------------------------

def dropout_masks(net, batch: int, keep_prob: float, seed: int, step: int):
    """Inverted-dropout masks for the hidden layers (tuple of length L-1, ``(batch, *a_l.shape)``:
    ``(batch, n_l)`` for a dense layer, ``(batch, C, H, W)`` of the pre-pooling output of a conv layer).

    Entries are ``1/keep_prob`` with probability ``keep_prob`` and 0 otherwise, drawn on the host
    from ``SeedSequence([seed, step])``; ``None`` entries when ``keep_prob == 1`` (no dropout).
    """
    L = net.depth
    if keep_prob >= 1.0:
        return (None,) * (L - 1)
    gen = _rng(np.random.SeedSequence([int(seed), int(step)]))
    xp, dev = net.xp, device_of(net.weights[0])
    out = []
    for l in range(1, L):
        m = (gen.random((batch,) + tuple(net.layer(l).out_shape)) < keep_prob).astype(np.float64) / keep_prob
        out.append(from_numpy(m, xp, net.dtype, dev))
    return tuple(out)


def _normalize_rows(xp, h):
    n = xp.sqrt(xp.sum(h * h, axis=1, keepdims=True))
    return h / xp.where(n > 0, n, xp.ones_like(n))


def masked_forward(net, x, masks=None, normalize: bool = False, weights=None, biases=None, units: bool = False):
    """Forward pass with dropout masks on the hidden layers: ``z_l = M_l * f_l(a_l)``, ``h_l = pool_l(z_l)``
    (``h_l = z_l`` without pooling, e.g. every dense layer).

    Returns ``(a, h)`` (``(a, h, z)`` with ``units=True``), tuples indexed by layer (index 0 is
    the input). ``weights``/``biases`` override the network's (used by the time-local variant).
    ``normalize`` divides each hidden activity row by its norm (after the mask; dense networks).
    """
    xp = net.xp
    Ws = net.weights if weights is None else weights
    bs = net.biases if biases is None else biases
    L = net.depth
    a, h, z = [x], [x], [x]
    for l in range(1, L + 1):
        a_l = net.pre_activation(l, h[-1], weight=Ws[l - 1], bias=bs[l - 1])
        z_l = net.activation(l).f(a_l)
        if l < L:
            if masks is not None and masks[l - 1] is not None:
                z_l = z_l * masks[l - 1]
            if normalize:
                z_l = _normalize_rows(xp, z_l)
        a.append(a_l)
        z.append(z_l)
        h.append(net.layer(l).post(xp, z_l))
    return (tuple(a), tuple(h), tuple(z)) if units else (tuple(a), tuple(h))


def alignment_angle(net, F) -> float:
    """Angle (degrees) between ``vec(F)`` and ``vec((W_L ... W_1)^T)`` (ICML ``functions.py``
    "Angle between Ws and B"; both ``(n_0, n_L)``)."""
    from ..metrics import angle

    net.require_dense("alignment_angle (the product W_L ... W_1 of dense weights)")
    M = net.weights[0]
    for W in net.weights[1:]:
        M = W @ M
    return angle(F, M.T)


# --- the rule ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PEPITAState:
    """``F: (n_0, n_L)``; ``factors``: ``(B_1, ..., B_L)`` with ``B_l: (n_{l-1}, n_l)`` when ``F``
    is a product (else None; ``updates`` uses ``F`` as given, mirroring recomputes it from the
    factors); ``seed``, ``step``: the
    dropout (and mirroring noise) stream, ``step`` advanced by every call of ``updates``."""

    F: Any
    factors: Optional[tuple] = None
    seed: int = 0
    step: int = 0


def _check_choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")


def _check_real(name, value, lo=None, hi=None, lo_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ValueError(f"{name}: expected a value {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ValueError(f"{name}: expected a value <= {hi}, got {value!r}")


@dataclass(frozen=True)
class PEPITA:
    """PEPITA and its ICLR-2024 variants; see the module docstring for the equations.

    Arguments:
        sign: ``+1`` (ICML, ``x_mod = x + e F^T``) or ``-1`` (ICLR, ``x_mod = x - e F^T``).
        F_scale: multiplier of the He scale of ``F`` (paper: 0.05).
        F_init: ``"uniform"`` (ICML) or ``"product"`` (ICLR factorised, needed by ``mirror``).
        last_layer_error: ``"modulated"`` (ICML FC code, ``e' = error of pass 2``) or ``"first"``.
        keep_prob: dropout keep probability of the hidden layers (papers: 0.9; 1 = no dropout).
        presynaptic: ``"modulated"`` (``h_{l-1}'``, ``x_mod``) or ``"forward"`` (``h_{l-1}``, ``x``).
        variant: ``"pepita"``, ``"hebbian"`` (PEPITA-Hebbian) or ``"time_local"`` (PEPITA-TL).
        loss: the output error, ``"ce"`` (softmax cross-entropy on logits, the papers) or ``"mse"``.
        tl_lr: step size of the Hebbian half-step of ``"time_local"``.
        normalize: per-sample activity normalisation of the hidden layers.
        mirror, wm_lr, wm_wd, wm_sigma: weight mirroring of the factors of ``F``
            (ICLR ``config.py`` defaults WMLR 0.01, WMWD 1e-4, noise 0.1); applied on every batch.
        bias_updates: return bias updates (False: zeros, the papers have no biases).
    """

    sign: int = 1
    F_scale: float = 0.05
    F_init: str = "uniform"
    last_layer_error: str = "modulated"
    keep_prob: float = 1.0
    presynaptic: str = "modulated"
    variant: str = "pepita"
    loss: str = "ce"
    tl_lr: float = 0.01
    normalize: bool = False
    mirror: bool = False
    wm_lr: float = 0.01
    wm_wd: float = 1e-4
    wm_sigma: float = 0.1
    bias_updates: bool = True

    def __post_init__(self):
        if isinstance(self.sign, bool) or self.sign not in (1, -1):
            raise ValueError(f"sign: expected +1 (ICML, x + F e) or -1 (ICLR, x - F e), got {self.sign!r}")
        _check_real("F_scale", self.F_scale, lo=0.0)
        _check_choice("F_init", self.F_init, F_INITS)
        _check_choice("last_layer_error", self.last_layer_error, ("modulated", "first"))
        _check_real("keep_prob", self.keep_prob, lo=0.0, hi=1.0, lo_open=True)
        _check_choice("presynaptic", self.presynaptic, ("modulated", "forward"))
        _check_choice("variant", self.variant, VARIANTS)
        if self.variant != "pepita" and self.presynaptic != "modulated":
            raise ValueError(f"presynaptic: 'forward' is a mode of variant 'pepita' only, got variant {self.variant!r}")
        _losses.get(self.loss)
        _check_real("tl_lr", self.tl_lr, lo=0.0)
        for nm in ("wm_lr", "wm_wd", "wm_sigma"):
            _check_real(nm, getattr(self, nm), lo=0.0)
        if self.mirror and self.F_init != "product":
            raise ValueError("mirror: weight mirroring needs F_init='product' (a factorised F), "
                             f"got F_init={self.F_init!r}")

    # --- state ------------------------------------------------------------------------------

    def init(self, net, seed=0) -> PEPITAState:
        """``F`` (and its factors) drawn on the host from ``seed``, moved to the network's backend.

        An integer ``seed`` is mixed with a PEPITA tag (``SeedSequence([seed, _STREAM_TAG])``):
        ``Network.init(seed=s)`` draws ``W_1`` from ``rng(s)``, and an ``F`` drawn from the same
        stream would reuse its uniforms (feedback_alignment hit the same: ``B = W``).
        """
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seed = np.random.SeedSequence([int(seed), _STREAM_TAG])
        gen = _rng(seed)
        xp, dt, dev = net.xp, net.dtype, device_of(net.weights[0])
        n0, nL = net.sizes[0], net.sizes[-1]
        self._check_layers(net)
        if self.F_init == "uniform":
            F = from_numpy(uniform_F(gen, n0, nL, self.F_scale), xp, dt, dev)
            factors = None
        else:
            fs = product_factors(gen, net.sizes, self.F_scale)
            factors = tuple(from_numpy(B, xp, dt, dev) for B in fs)
            F = product_F(factors)
        stream = int(gen.integers(0, 2**31 - 1))
        return PEPITAState(F=F, factors=factors, seed=stream, step=0)

    def _check_layers(self, net):
        if not net.is_dense:
            if self.normalize:
                net.require_dense("PEPITA's normalize=True (per-sample activity normalisation of dense layers)")
            if self.F_init == "product" or self.mirror:
                net.require_dense("PEPITA's F_init='product' / weight mirroring (factors shaped like dense W_l^T)")

    def _check_state(self, net, state):
        self._check_layers(net)
        if not isinstance(state, PEPITAState):
            raise TypeError(f"state: expected a PEPITAState (from PEPITA.init), got {type(state).__name__}")
        n0, nL = net.sizes[0], net.sizes[-1]
        if state.F is None or tuple(state.F.shape) != (n0, nL):
            got = None if state.F is None else tuple(state.F.shape)
            raise ValueError(f"state.F: expected shape ({n0}, {nL}) (n_0, n_L), got {got}")
        if state.F.dtype != net.dtype:
            raise TypeError(f"state.F: expected dtype {net.dtype} (as the network), got {state.F.dtype}")
        xp = net.xp
        if not bool(xp.all(xp.isfinite(state.F))):
            raise ValueError("state.F: expected finite values")
        if state.factors is not None:
            L = net.depth
            exp = [(net.sizes[l - 1], net.sizes[l]) for l in range(1, L + 1)]
            if len(state.factors) != L or any(tuple(B.shape) != s for B, s in zip(state.factors, exp)):
                raise ValueError(f"state.factors: expected {L} matrices of shapes {exp} (those of W_l^T), got "
                                 f"{[tuple(B.shape) for B in state.factors]}")
            for i, Bl in enumerate(state.factors):
                if Bl.dtype != net.dtype:
                    raise TypeError(f"state.factors[{i}]: expected dtype {net.dtype} (as the network), got {Bl.dtype}")
                if not bool(xp.all(xp.isfinite(Bl))):
                    raise ValueError(f"state.factors[{i}]: expected finite values")
        for nm in ("seed", "step"):
            v = getattr(state, nm)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"state.{nm}: expected an integer >= 0 (the dropout stream), got {v!r}")
        if self.mirror and state.factors is None:
            raise ValueError("state.factors: weight mirroring needs the factors of F (init with F_init='product')")

    def masks(self, net, state, batch: int):
        """The dropout masks ``updates`` uses for a batch of ``batch`` samples at this state."""
        return dropout_masks(net, batch, self.keep_prob, state.seed, state.step)

    # --- updates ----------------------------------------------------------------------------

    def modulated_input(self, x, e, F):
        """``x_mod = x + sign * (e @ F.T)`` (reshaped to ``x``'s shape for image inputs)."""
        from ..backend import namespace
        xp = namespace(x, e, F)
        return x + self.sign * xp.reshape(e @ F.T, x.shape)

    def updates(self, net, state, x, y):
        loss = _losses.get(self.loss)
        xp, y = check_batch(net, x, y, loss)
        self._check_state(net, state)
        B = x.shape[0]
        L = net.depth
        masks = self.masks(net, state, B)
        a, h, z = masked_forward(net, x, masks, self.normalize, units=True)
        e = loss.error(h[L], y)
        x_mod = self.modulated_input(x, e, state.F)
        record = {"masks": masks, "a": a, "h": h, "error": e, "x_mod": x_mod,
                  "loss": loss.value(h[L], y)}
        dfL = net.activation(L).df

        # dense layers: wg(l, d, p) = d.T @ p and bg(l, d) = sum_b d; conv layers: the layer's own
        # weight / bias gradient of refimpl.layers (the same contraction over batch and positions)
        def wg(l, d, p):
            return net.layer(l).weight_grad(xp, d, p)

        def bg(l, d):
            return net.layer(l).bias_grad(xp, d)

        if self.variant == "time_local":
            yhat = y + e
            G1 = [wg(l, z[l], h[l - 1]) / B for l in range(1, L)] + [wg(L, yhat, h[L - 1]) / B]
            g1 = [bg(l, z[l]) / B for l in range(1, L)] + [bg(L, yhat) / B]
            W1 = tuple(W - self.tl_lr * G for W, G in zip(net.weights, G1))
            b1 = tuple(b - self.tl_lr * g for b, g in zip(net.biases, g1))
            a_m, h_m, z_m = masked_forward(net, x_mod, masks, self.normalize, weights=W1, biases=b1, units=True)
            G2 = [-wg(l, z_m[l], h_m[l - 1]) / B for l in range(1, L)] + [-wg(L, y, h_m[L - 1]) / B]
            g2 = [-bg(l, z_m[l]) / B for l in range(1, L)] + [-bg(L, y) / B]
            dW = tuple(p + q for p, q in zip(G1, G2))
            db = tuple(p + q for p, q in zip(g1, g2))
            record.update({"a_mod": a_m, "h_mod": h_m, "error_mod": loss.error(h_m[L], y),
                           "hebbian": (tuple(G1), tuple(g1)), "anti_hebbian": (tuple(G2), tuple(g2)),
                           "weights_mid": W1, "biases_mid": b1})
        else:
            a_m, h_m, z_m = masked_forward(net, x_mod, masks, self.normalize, units=True)
            e_mod = loss.error(h_m[L], y)
            record.update({"a_mod": a_m, "h_mod": h_m, "error_mod": e_mod})
            if self.variant == "hebbian":
                yhat = y + e
                dW = tuple([(wg(l, z[l], h[l - 1]) - wg(l, z_m[l], h_m[l - 1])) / B for l in range(1, L)]
                           + [(wg(L, yhat, h[L - 1]) - wg(L, y, h_m[L - 1])) / B])
                db = tuple([bg(l, z[l] - z_m[l]) / B for l in range(1, L)] + [bg(L, e) / B])
            else:
                pre = h_m if self.presynaptic == "modulated" else h
                if self.last_layer_error == "modulated":
                    delta_L = e_mod * dfL(a_m[L])
                else:
                    delta_L = e * dfL(a[L])
                diff = [None] + [z[l] - z_m[l] for l in range(1, L)]   # h_l - h_l' (pre-pooling units)
                dW = tuple([wg(l, diff[l], pre[l - 1]) / B for l in range(1, L)] + [wg(L, delta_L, pre[L - 1]) / B])
                db = tuple([bg(l, diff[l]) / B for l in range(1, L)] + [bg(L, delta_L) / B])
                record.update({"activity_difference": tuple(diff), "output_delta": delta_L,
                               "presynaptic": pre})
        if not self.bias_updates:
            db = tuple(xp.zeros_like(g) for g in db)
        return Updates(dW, db, record), replace(state, step=state.step + 1)

    # --- weight mirroring -------------------------------------------------------------------

    def _mirror_noise(self, net, state, batch: int):
        gen = _rng(np.random.SeedSequence([int(state.seed), int(state.step), 1]))
        out = []
        for l in range(1, net.depth + 1):
            xi = self.wm_sigma * gen.standard_normal((batch, net.sizes[l - 1]))
            out.append(from_numpy(xi - xi.mean(), net.xp, net.dtype, device_of(net.weights[0])))
        return out

    def feedback_updates(self, net, state, x, y):
        """Gradient-convention updates of the factors ``B_l`` by weight mirroring (tuple of length L).

        ``grad B_l = -xi.T @ zeta / B`` with ``zeta = f_l(xi W_l^T + b_l)`` (first factor:
        ``+sign * xi.T @ zeta / B``, see the module docstring); ``B`` = batch size of ``x``.
        """
        self._check_state(net, state)
        if state.factors is None:
            raise ValueError("state.factors: weight mirroring needs the factors of F (init with F_init='product')")
        Bn = x.shape[0]
        out = []
        for l, xi in enumerate(self._mirror_noise(net, state, Bn), start=1):
            zeta = net.activation(l).f(xi @ net.weights[l - 1].T + net.biases[l - 1])
            g = -(xi.T @ zeta) / Bn
            out.append(-self.sign * g if l == 1 else g)
        return tuple(out)

    def train_feedback(self, net, state, x, y):
        """One mirroring step (if ``mirror``): SGD on the factors, then ``normalize_B``; else ``state``."""
        if not self.mirror:
            return state
        xp = net.xp
        grads = self.feedback_updates(net, state, x, y)
        fs = tuple(Bl - self.wm_lr * (g + self.wm_wd * Bl) for Bl, g in zip(state.factors, grads))
        F = product_F(fs)
        n = F.shape[0] * F.shape[1]
        mean = xp.sum(F) / n
        std = math.sqrt(float(xp.sum((F - mean) ** 2)) / max(n - 1, 1))
        target = _sigma_F(net.sizes[0], self.F_scale)
        if std > 0:
            c = (target / std) ** (1.0 / net.depth)
            fs = tuple(Bl * c for Bl in fs)
            F = product_F(fs)
        return replace(state, F=F, factors=fs)
