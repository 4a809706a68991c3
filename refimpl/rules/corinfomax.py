r"""CorInfoMax: correlative information maximisation without weight symmetry.

Bozkurt, Pehlevan & Erdogan, "Correlative Information Maximization: a biologically plausible
approach to supervised deep neural networks without weight symmetry", NeurIPS 2023
(arXiv 2306.04810). Equations as integrated by the authors' code (``ContrastiveCorInfoMaxHopfield``
in ``BariscanBozkurt/Supervised-CorInfoMax``, ``src/ContrastiveModels.py``) and restated in
spec corinfomax.md §1-2 (EBD paper, App. F).

**Model.** Layers ``r_0 = x`` (clamped), ``r_1 .. r_{P-1}`` hidden, ``r_P`` output (``P = net.depth``).
Every activity lives in the box ``[0, 1]``; the activation is the projection onto it,
``sigma_+(u) = min(1, max(u, 0))`` (the code's ``hard_sigmoid``). Predictors:

* forward ``W_{f,k} = net.weights[k]`` (``(n_{k+1}, n_k)``), maps ``r_k -> r_{k+1}``;
* backward ``W_{b,k} = state.Wb[k]`` (``(n_k, n_{k+1})``, the shape of ``net.weights[k].T``), maps
  ``r_{k+1} -> r_k``, for ``k = 1 .. P-1``; ``state.Wb[0]`` is ``None`` (the input is clamped, the
  code never uses or trains ``W_{b,0}``);
* lateral ``B_k = state.B[k-1]`` (``(n_k, n_k)``, symmetric), ``B_k ~ (R_{r_k} + eps I)^{-1}``.

``net.activations`` are not used (the nonlinearity is the box projection by construction) and the
model has no biases: ``net.biases`` must be zero and ``db = 0``.

**Neural dynamics** (batch rows ``R_k: (N, n_k)``; ``gamma = (1 - lam) / lam``), one Euler step
per layer in the Gauss-Seidel order ``k = 1 .. P`` (layer ``k+1`` sees the new ``r_k``; layer ``k``
sees the old ``r_{k+1}``), then ``r_k <- sigma_+(u_k)`` at once:

    hidden k:  V_B = R_{k-1} W_{f,k-1}^T,  V_A = eps (2 gamma R_k B_k + g_lk R_k) + R_{k+1} W_{b,k}^T
               U_k <- U_k + eta_s [ -g_lk U_k + (V_B - U_k)/eps + (V_A - U_k)/eps ]
    output P:  V_B = R_{P-1} W_{f,P-1}^T,  V_A = gamma R_P B_P + g_lk R_P - beta (R_P - Y)
               U_P <- U_P + eta_s [ -g_lk U_P + (V_B - U_P)/eps + (V_A - c U_P) ]

with ``c = 1`` (``output_apical_leak=True``, the code) or ``c = 0`` (open question A-Q1, see below).
Inside the box (``r = u``) the ``g_lk`` terms cancel, and the hidden right-hand side is exactly the
gradient of the stop-gradient objective (predictor inputs held fixed)

    J_sg = sum_{k<P} gamma r_k^T B_k r_k + (gamma/2) r_P^T B_P r_P
           - sum_{k=1}^{P} 1/(2 eps) ||r_k - W_{f,k-1} r_{k-1}||^2
           - sum_{k=1}^{P-1} 1/(2 eps) ||r_k - W_{b,k} r_{k+1}||^2 - (beta/2) ||y - r_P||^2,

and the output's is the gradient of ``J_sg - (c/2) ||r_P||^2`` (theorems
``corinfomax.dynamics_are_stop_gradient_ascent``, ``corinfomax.full_gradient_residual``).

Step size ``eta_s``: ``neural_lr_rule = "constant"`` (``neural_lr``), ``"divide_by_loop_index"``
(``max(neural_lr / (t + 1), neural_lr_stop)``) or ``"divide_by_slow_loop_index"``
(``max(neural_lr / (t * neural_lr_decay + 1), neural_lr_stop)``), ``t`` the sweep index within a phase.

**Training step** (code ``batch_step_hopfield``): free phase (``beta = 0``, ``T_free`` sweeps from
``u = r = 0``); nudged phase (``+beta``, ``T_nudge`` sweeps, from the free state; as in the code the
membrane potentials restart at the *clipped* free activities, ``u <- r^0``); optional third phase
(``three_phase=True``: ``-beta``, ``T_nudge`` sweeps, continuing from the nudged state as the code
does), which then replaces the free phase in the updates, and the updates are halved.

With the local least-squares losses ``l_f = 1/2 <||r_{k+1} - W_{f,k} r_k||^2>`` and
``l_b = 1/2 <||r_k - W_{b,k} r_{k+1}||^2>`` (``<.>`` the batch mean), whose gradients are
``dl_f/dW = -<e_fwd r_k^T>``, the contrastive updates in gradient convention (DESIGN.md) are

    dW[k]  = (1/beta) [dl_f/dW(r^beta) - dl_f/dW(r^0)] = -(E^b.T R_k^b - E^0.T R_k^0) / (N beta)
    dWb[k] = (1/beta) [dl_b/dW(r^beta) - dl_b/dW(r^0)]                     (k = 1 .. P-1)

(``+ eps W`` each with ``weight_decay=True``; three phases: ``r^0 -> r^{-beta}``, ``1/beta -> 1/(2 beta)``),
so ``W <- W - mu dW`` is the paper's ascent step ``W += (mu/beta)[<e^b r^bT> - <e^0 r^0T>]``. The
per-layer rates ``mu_{f,k}`` of the paper belong to the optimiser. ``dW`` is a local EP-style
estimate; it is *not* BP's gradient, not even in the limit beta -> 0 (theorem table, spec P-A4),
with one exception: with tied ``W_b = W_f^T`` the first layer's ``dW[0] -> eps * dC/dW_{f,0}``
(``C = 1/2 <||y - r_P||^2>`` at the free fixed point; note the factor ``eps``), theorem
``corinfomax.ep_limit_first_layer_tied``.

The backward predictors and lateral weights are updated inside :meth:`CorInfoMax.updates` and
returned in the new state (they are not parameters of ``net``):

    Wb[k] <- Wb[k] - feedback_lr[k] * dWb[k]                             (:meth:`feedback_updates`)
    lateral="dropped" (the code):  Z = R_k^b B_k,  B_k <- (B_k - gamma Z^T Z / N) / lam
    lateral="exact" (Sherman-Morrison/Woodbury):   B_k <- (B_k - Z^T ((N/gamma) I + R_k^b Z^T)^{-1} Z) / lam

from the **nudged** state. "exact" is the exact inverse of ``lam R + (1 - lam) <r r^T>`` given
``B = R^{-1}`` (rank-one Sherman-Morrison for ``N = 1``); "dropped" drops its denominator
``(1 + gamma r^T B r)`` (valid for ``gamma ~ 1e-5``; error per step exactly
``-(gamma^2/lam) q/(1 + gamma q) z z^T`` for one sample, ``q = r^T B r``, ``z = B r``). With
``symmetrize=True`` ``B`` is replaced by ``(B + B^T)/2`` after each step (the unsymmetrised exact
recursion is unstable in floating point for ``lam`` far from 1, spec P-A5).

**Open question A-Q1 (output apical term).** The code's output soma has apical gain 1 and the
term ``(V_A - u_P)``, i.e. an extra leak ``-u_P``: the output dynamics ascend ``J_sg - 1/2 ||r_P||^2``
(exact identity, theorem ``corinfomax.dynamics_are_stop_gradient_ascent``). ``output_apical_leak``
keeps it (default, the code and the published results) or drops it (``False``: the output
ascends ``J_sg`` as the EBD App. F statement of the objective reads).

Inference: free phase only, prediction ``argmax r_P`` (:meth:`CorInfoMax.predict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from ..backend import namespace, rng as _rng, from_numpy, check_finite, device_of
from .base import Updates, check_batch, check_state_shapes

__all__ = ["CorInfoMax", "CorInfoMaxState", "Phase", "box", "neural_step_size", "soma_rhs", "relax",
           "forward_errors", "backward_errors", "local_ls_gradients", "lateral_update",
           "stop_gradient_residual", "field_at", "ridge_predictors", "error_correlation",
           "schur_error_correlation", "correlative_information", "joint_information",
           "NEURAL_LR_RULES", "LATERAL_FORMS"]

NEURAL_LR_RULES = ("constant", "divide_by_loop_index", "divide_by_slow_loop_index")
LATERAL_FORMS = ("dropped", "exact")


# --- the box -------------------------------------------------------------------------------------

def box(u):
    """``sigma_+(u) = min(1, max(u, 0))``: the projection onto ``[0, 1]`` (code: ``hard_sigmoid``)."""
    xp = namespace(u)
    return xp.clip(u, 0.0, 1.0)


# --- state ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CorInfoMaxState:
    """Backward predictors, lateral weights and the batch counter.

    ``Wb[i]``: ``W_{b,i}`` of shape ``(n_i, n_{i+1})`` (= ``net.weights[i].T``), ``Wb[0] = None``;
    ``B[i]``: lateral weights of layer ``i+1``, ``(n_{i+1}, n_{i+1})``; ``step``: number of
    ``updates`` calls (seeds the random sign of beta); ``seed``: the seed of ``init``.
    """

    Wb: tuple
    B: tuple
    step: int = 0
    seed: int = 0


@dataclass(frozen=True)
class Phase:
    """One relaxation: ``R[k]``, ``U[k]`` for ``k = 0..P`` (``R[0] = x``, ``U[0] = None``) and the
    basal/apical potentials ``VB[k]``, ``VA[k]`` of the last sweep (index 0 None); ``beta``."""

    R: tuple
    U: tuple
    VB: tuple
    VA: tuple
    beta: float


# --- the equations -------------------------------------------------------------------------------

def neural_step_size(rule: "CorInfoMax", t: int) -> float:
    """``eta_s`` at sweep ``t`` (0-based) of a phase, by ``rule.neural_lr_rule`` (code
    ``run_neural_dynamics_hopfield``)."""
    if rule.neural_lr_rule == "constant":
        return rule.neural_lr
    if rule.neural_lr_rule == "divide_by_loop_index":
        return max(rule.neural_lr / (t + 1), rule.neural_lr_stop)
    return max(rule.neural_lr / (t * rule.neural_lr_decay + 1), rule.neural_lr_stop)


def _gamma(lam: float) -> float:
    return (1.0 - lam) / lam


def soma_rhs(rule: "CorInfoMax", net, state: CorInfoMaxState, k: int, Uk, R, y, beta: float, VB=None):
    """Right-hand side of layer ``k``'s soma (spec §2 "Dynamics (row-major)") and its ``(V_B, V_A)``.

    ``R``: activities of every layer, ``R[0] = x``; ``Uk``: layer ``k``'s membrane potential;
    ``y``: the target (used only when ``beta != 0``); ``VB``: the basal input ``R[k-1] W_{f,k-1}^T``
    when the caller has it (:func:`relax` passes the input drive of layer 1, constant while ``x`` is
    clamped). Returns ``(rhs, V_B, V_A)``, each ``(N, n_k)``.
    """
    P = net.depth
    eps, g, gam = rule.eps, rule.g_lk, _gamma(rule.lam)
    Rk = R[k]
    if VB is None:
        VB = R[k - 1] @ net.weights[k - 1].T
    if k < P:
        VA = eps * (2 * gam * (Rk @ state.B[k - 1]) + g * Rk) + R[k + 1] @ state.Wb[k].T
        rhs = -g * Uk + (VB - Uk) / eps + (VA - Uk) / eps
    else:
        VA = gam * (Rk @ state.B[k - 1]) + g * Rk
        if beta != 0:
            VA = VA - beta * (Rk - y)
        leak = Uk if rule.output_apical_leak else 0.0
        rhs = -g * Uk + (VB - Uk) / eps + (VA - leak)
    return rhs, VB, VA


def relax(rule: "CorInfoMax", net, state: CorInfoMaxState, x, y, beta: float, steps: int,
          start: Optional[tuple] = None) -> Phase:
    """Run ``steps`` Gauss-Seidel Euler sweeps of the neural dynamics at nudging ``beta``.

    ``start``: activities ``(r_1, ..., r_P)`` to start from (``u`` restarts at them, as the code's
    ``copy_neurons``); ``None``: ``u = r = 0`` (code ``init_neurons``).
    """
    xp = namespace(x)
    P = net.depth
    N = x.shape[0]
    if start is None:
        R = [x] + [xp.zeros((N, n), dtype=x.dtype, device=device_of(x)) for n in net.sizes[1:]]
    else:
        R = [x] + list(start)
    U = [None] + R[1:]
    VB = [None] * (P + 1)
    VA = [None] * (P + 1)
    drive = x @ net.weights[0].T  # layer 1's basal input: x is clamped, so once per phase (issue 17)
    for t in range(steps):
        eta = neural_step_size(rule, t)
        for k in range(1, P + 1):
            rhs, VB[k], VA[k] = soma_rhs(rule, net, state, k, U[k], R, y, beta, VB=drive if k == 1 else None)
            U[k] = U[k] + eta * rhs
            R[k] = box(U[k])
    return Phase(tuple(R), tuple(U), tuple(VB), tuple(VA), float(beta))


def field_at(rule: "CorInfoMax", net, state: CorInfoMaxState, R, y, beta: float) -> tuple:
    """``F_k(r)``: every layer's right-hand side evaluated at ``u = r`` (no sequencing): inside the
    box the dynamics' velocity, and the per-layer stop-gradient gradient of the fixed-point (KKT)
    conditions (spec P-A3). Tuple indexed ``0..P`` (entry 0 None)."""
    return (None,) + tuple(soma_rhs(rule, net, state, k, R[k], R, y, beta)[0] for k in range(1, net.depth + 1))


def forward_errors(net, R) -> tuple:
    """``E_fwd[i] = R[i+1] - R[i] W_{f,i}^T`` (``(N, n_{i+1})``), ``i = 0..P-1``."""
    return tuple(R[i + 1] - R[i] @ W.T for i, W in enumerate(net.weights))


def backward_errors(state: CorInfoMaxState, R) -> tuple:
    """``E_bwd[i] = R[i] - R[i+1] W_{b,i}^T`` (``(N, n_i)``), ``i = 1..P-1``; entry 0 None."""
    return (None,) + tuple(R[i] - R[i + 1] @ state.Wb[i].T for i in range(1, len(state.Wb)))


def local_ls_gradients(net, state: CorInfoMaxState, R) -> tuple:
    """Gradients of the local least-squares losses at activities ``R``:
    ``dl_f/dW_{f,i} = -E_fwd[i]^T R[i] / N`` and ``dl_b/dW_{b,i} = -E_bwd[i]^T R[i+1] / N``;
    returns ``(gf, gb)`` (``gb[0] = None``)."""
    N = R[0].shape[0]
    Ef, Eb = forward_errors(net, R), backward_errors(state, R)
    gf = tuple(-(E.T @ R[i]) / N for i, E in enumerate(Ef))
    gb = (None,) + tuple(-(Eb[i].T @ R[i + 1]) / N for i in range(1, len(Eb)))
    return gf, gb


def stop_gradient_residual(rule: "CorInfoMax", net, state: CorInfoMaxState, R) -> tuple:
    """The terms the stop-gradient dynamics leave out of the full gradient of ``J`` (spec P-A2(b)):
    ``(1/eps) E_fwd[k] W_{f,k}`` (layers ``k = 1..P-1``) ``+ (1/eps) E_bwd[k-1] W_{b,k-1}`` (layers
    ``k = 2..P``), row-major. Tuple indexed ``0..P`` (entry 0 None)."""
    P = net.depth
    Ef, Eb = forward_errors(net, R), backward_errors(state, R)
    out = [None]
    for k in range(1, P + 1):
        xp = namespace(R[k])
        res = xp.zeros_like(R[k])
        if k < P:
            res = res + (Ef[k] @ net.weights[k]) / rule.eps
        if k >= 2:
            res = res + (Eb[k - 1] @ state.Wb[k - 1]) / rule.eps
        out.append(res)
    return tuple(out)


def lateral_update(B, Rk, lam: float, form: str = "dropped", symmetrize: bool = True):
    """One lateral step from the batch ``Rk: (N, n)`` (spec §1.4 step 5, §2 "Lateral update").

    ``form="dropped"``: ``(B - gamma Z^T Z / N) / lam`` with ``Z = Rk B`` (the code);
    ``form="exact"``: ``(B - Z^T ((N/gamma) I + Rk Z^T)^{-1} Z) / lam``, the exact inverse of
    ``lam B^{-1} + (1 - lam) Rk^T Rk / N`` (Woodbury; Sherman-Morrison for ``N = 1``).
    """
    xp = namespace(B, Rk)
    if not 0.0 < lam < 1.0:
        raise ValueError(f"lam: expected 0 < lam < 1, got {lam!r}")
    if form not in LATERAL_FORMS:
        raise ValueError(f"form: expected one of {LATERAL_FORMS}, got {form!r}")
    gam = _gamma(lam)
    N = Rk.shape[0]
    Z = Rk @ B
    if form == "dropped":
        Bn = (B - gam * (Z.T @ Z) / N) / lam
    else:
        S = (N / gam) * xp.eye(N, dtype=B.dtype, device=device_of(B)) + Rk @ Z.T
        Bn = (B - Z.T @ xp.linalg.solve(S, Z)) / lam
    if symmetrize:
        Bn = 0.5 * (Bn + Bn.T)
    return Bn


# --- correlative information (spec §1.1, P-A1) -----------------------------------------------------

def _eye_like(M):
    xp = namespace(M)
    return xp.eye(M.shape[0], dtype=M.dtype, device=device_of(M))


def _logdet(M) -> Any:
    xp = namespace(M)
    lo = float(xp.min(xp.linalg.eigvalsh(0.5 * (M + M.T))))
    if not lo > 0:
        raise ValueError(f"logdet: expected a positive definite matrix (a correlation plus eps I), got smallest "
                         f"eigenvalue {lo:.3g}")
    return xp.linalg.slogdet(M)[1]


def ridge_predictors(Rx, Ry, Rxy, eps: float):
    """Optimal (regularised least-squares) predictors ``W_f* = R_yx (R_x + eps I)^{-1}`` (``x -> y``)
    and ``W_b* = R_xy (R_y + eps I)^{-1}`` (``y -> x``); ``Rxy = <x y^T>`` of shape ``(n_x, n_y)``."""
    xp = namespace(Rx, Ry, Rxy)
    Wf = xp.linalg.solve(Rx + eps * _eye_like(Rx), Rxy).T  # (R_x + eps I) symmetric
    Wb = xp.linalg.solve(Ry + eps * _eye_like(Ry), Rxy.T).T
    return Wf, Wb


def error_correlation(X, Y, W):
    """``<(y - W x)(y - W x)^T>`` over the batch rows of ``X: (N, n_x)``, ``Y: (N, n_y)``."""
    E = Y - X @ W.T
    return E.T @ E / X.shape[0]


def schur_error_correlation(Ry, Rx, Ryx, eps: float):
    """The eps-regularised Schur complement minus ``eps I``:
    ``R_e(eps) = R_y - R_yx (R_x + eps I)^{-1} R_xy`` so that ``R_e(eps) + eps I = S_y(eps)``
    (spec A-Q2; ``= R_e(W*) + eps W* W*^T`` for the ridge predictor, the real error correlation plus
    ``eps W* W*^T``)."""
    xp = namespace(Ry, Rx, Ryx)
    return Ry - Ryx @ xp.linalg.solve(Rx + eps * _eye_like(Rx), Ryx.T)


def correlative_information(R_out, R_err, eps: float):
    """``1/2 logdet(R_out + eps I) - 1/2 logdet(R_err + eps I)`` (spec §1.1): the forward form with
    ``R_out = R_y`` and the forward error correlation, the backward form with ``R_x`` and the
    backward one."""
    return 0.5 * _logdet(R_out + eps * _eye_like(R_out)) - 0.5 * _logdet(R_err + eps * _eye_like(R_err))


def joint_information(Rx, Ry, Rxy, eps: float):
    """``1/2 [logdet(R_x + eps I) + logdet(R_y + eps I) - logdet(R_joint + eps I)]``, the value both
    forms take with Schur-complement errors (spec A-Q2)."""
    xp = namespace(Rx, Ry, Rxy)
    top = xp.concat([Rx, Rxy], axis=1)
    bot = xp.concat([Rxy.T, Ry], axis=1)
    Rj = xp.concat([top, bot], axis=0)
    return 0.5 * (_logdet(Rx + eps * _eye_like(Rx)) + _logdet(Ry + eps * _eye_like(Ry))
                  - _logdet(Rj + eps * _eye_like(Rj)))


# --- the rule --------------------------------------------------------------------------------------

def _as_layer_tuple(value, n: int, name: str) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * n
    vals = tuple(value)
    if len(vals) != n:
        raise ValueError(f"{name}: expected a number or {n} per-layer values, got {len(vals)}")
    return tuple(float(v) for v in vals)


@dataclass(frozen=True)
class CorInfoMax:
    """CorInfoMax-EP (spec corinfomax.md; module docstring for the equations).

    Hyper-parameters (defaults: the MNIST scripts of the code, spec §1.5):
        lam: forgetting factor ``lambda`` of the correlations, ``0 < lam < 1`` (0.99999);
            ``gamma = (1 - lam) / lam``.
        eps: ``epsilon`` of the correlative information (0.15).
        g_lk: leak conductance (the code's ``hopfield_g``; 0.5).
        neural_lr, neural_lr_stop, neural_lr_rule, neural_lr_decay: the step size ``eta_s``
            (0.05, 0.001, ``"constant"``, 0.01).
        t_free, t_nudge: sweeps of the free and nudged (and third) phases (30, 10).
        beta: nudging strength, non-zero (1.0).
        random_sign: draw the sign of beta per batch (``use_random_sign_beta``), from ``state.seed``
            and ``state.step`` (False).
        three_phase: add the ``-beta`` phase (False).
        feedback_lr: rates ``mu_{b,k}`` of the backward predictors, one number or ``P`` values
            (entry 0 unused; 0.15).
        lateral: ``"dropped"`` (the code) or ``"exact"`` (Sherman-Morrison/Woodbury).
        symmetrize: symmetrise ``B`` after each lateral step (True).
        weight_decay: add ``eps W`` to ``dW`` and ``dWb`` (False), so ``W <- W - mu dW`` is
            ``W <- (1 - mu eps) W - mu dW_contrast``. The authors' code decays the *already updated*
            weight, ``W <- (1 - mu eps)(W - mu dW_contrast)``: the two differ by ``mu^2 eps dW_contrast``
            (O(mu^2); pinned in tests/rules/test_corinfomax.py). To reproduce the code exactly, keep
            ``weight_decay=False`` and multiply by ``(1 - mu eps)`` after the optimiser's step.
        output_apical_leak: the output's ``-u_P`` apical term (True, the code; A-Q1).
        init_gain: gain of the Xavier-uniform ``Wb`` and of ``J`` in ``B = J J^T`` (1.0).
        loss: ``"mse"`` (the nudging is the gradient of ``1/2 ||y - r_P||^2``); targets are one-hot rows.

    ``x`` is clamped as ``r_0``; the paper's inputs lie in ``[0, 1]`` like every other layer (not
    enforced: the equations need no such bound). The paper's per-layer forward rates ``mu_{f,k}`` and
    its epoch schedule belong to the optimiser; ``feedback_lr`` is applied as given at every step.
    """

    lam: float = 0.99999
    eps: float = 0.15
    g_lk: float = 0.5
    neural_lr: float = 0.05
    neural_lr_stop: float = 0.001
    neural_lr_rule: str = "constant"
    neural_lr_decay: float = 0.01
    t_free: int = 30
    t_nudge: int = 10
    beta: float = 1.0
    random_sign: bool = False
    three_phase: bool = False
    feedback_lr: Any = 0.15
    lateral: str = "dropped"
    symmetrize: bool = True
    weight_decay: bool = False
    output_apical_leak: bool = True
    init_gain: float = 1.0
    loss: str = "mse"

    def __post_init__(self):
        def pos(name, strict=True):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or \
                    (v <= 0 if strict else v < 0):
                raise ValueError(f"{name}: expected a finite number {'>' if strict else '>='} 0, got {v!r}")

        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not 0.0 < self.lam < 1.0:
            raise ValueError(f"lam: expected 0 < lam < 1, got {self.lam!r}")
        for name in ("eps", "neural_lr", "init_gain"):
            pos(name)
        for name in ("g_lk", "neural_lr_stop", "neural_lr_decay"):
            pos(name, strict=False)
        for name, lo in (("t_free", 1), ("t_nudge", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}: expected an integer >= {lo}, got {v!r}")
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not math.isfinite(self.beta) \
                or self.beta == 0:
            raise ValueError(f"beta: expected a finite non-zero number, got {self.beta!r}")
        if self.neural_lr_rule not in NEURAL_LR_RULES:
            raise ValueError(f"neural_lr_rule: expected one of {NEURAL_LR_RULES}, got {self.neural_lr_rule!r}")
        if self.lateral not in LATERAL_FORMS:
            raise ValueError(f"lateral: expected one of {LATERAL_FORMS}, got {self.lateral!r}")
        if self.loss != "mse":
            raise ValueError(f"loss: CorInfoMax nudges with the mse gradient beta (y - r_P); expected 'mse', "
                             f"got {self.loss!r}")
        fl = self.feedback_lr
        vals = (fl,) if isinstance(fl, (int, float)) and not isinstance(fl, bool) else tuple(fl)
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"feedback_lr: expected finite numbers >= 0, got {fl!r}")

    # --- state ----------------------------------------------------------------------------------

    def init(self, net, seed: int = 0) -> CorInfoMaxState:
        """Code initialisation: ``Wb`` Xavier-uniform (``(n_k, n_{k+1})``), ``B_k = J J^T`` with
        ``J`` Xavier-uniform ``(n_k, n_k)``; drawn on the host from ``seed``."""
        self._check_net(net)
        gen = _rng(seed)
        xp, dt = net.xp, net.dtype
        dev = device_of(net.weights[0])
        sizes = net.sizes
        P = net.depth

        def xavier(n_out, n_in):
            bound = self.init_gain * math.sqrt(6.0 / (n_in + n_out))
            return gen.uniform(-bound, bound, size=(n_out, n_in))

        Wb = [None]
        for k in range(1, P):
            Wb.append(from_numpy(xavier(sizes[k], sizes[k + 1]), xp, dt, dev))
        B = []
        for k in range(1, P + 1):
            J = xavier(sizes[k], sizes[k])
            B.append(from_numpy(J @ J.T, xp, dt, dev))
        return CorInfoMaxState(tuple(Wb), tuple(B), 0, int(seed))

    def _check_net(self, net):
        net.require_dense("CorInfoMax (Bozkurt et al. 2024, dense layers only)")
        xp = net.xp
        if net.depth < 1:
            raise ValueError("net: expected at least one layer")
        for i, b in enumerate(net.biases):
            if bool(xp.any(b != 0)):
                raise ValueError(f"net.biases[{i}]: CorInfoMax has no biases; expected zeros, got a non-zero "
                                 "vector (use Network.init(..., bias_scale=0))")

    def check_state(self, net, state: CorInfoMaxState) -> None:
        """Shapes of ``state.Wb`` (``W[i].T``, entry 0 None) and ``state.B`` (square per layer)."""
        if not isinstance(state, CorInfoMaxState):
            raise TypeError(f"state: expected a CorInfoMaxState (from CorInfoMax.init), got {type(state).__name__}")
        s = net.sizes
        P = net.depth
        if len(state.Wb) != P or state.Wb[0] is not None:
            raise ValueError(f"state.Wb: expected {P} entries with Wb[0] = None, got {len(state.Wb)} entries")
        check_state_shapes(state.Wb, [None] + [(s[k], s[k + 1]) for k in range(1, P)], "state.Wb")
        check_state_shapes(state.B, [(s[k], s[k]) for k in range(1, P + 1)], "state.B")
        xp = net.xp
        for i, M in enumerate(state.Wb[1:], start=1):
            check_finite(xp, M, f"state.Wb[{i}]")
        for i, M in enumerate(state.B):
            check_finite(xp, M, f"state.B[{i}]")

    # --- phases ---------------------------------------------------------------------------------

    def _batch(self, net, state, x, y=None):
        self._check_net(net)
        self.check_state(net, state)
        if y is None:
            xp = net.check_input(x, "x")
            return xp, None
        xp, y = check_batch(net, x, y, "mse")
        return xp, y

    def signed_beta(self, state: CorInfoMaxState) -> float:
        """``beta`` with its sign for this batch (random from ``(seed, step)`` if ``random_sign``)."""
        if not self.random_sign:
            return float(self.beta)
        import numpy as _np  # host-side seed arithmetic only

        gen = _rng(_np.random.SeedSequence([int(state.seed), int(state.step), 0xC1]))
        return float(self.beta) * (1.0 if gen.integers(0, 2) == 1 else -1.0)

    def free_phase(self, net, state, x, y=None) -> Phase:
        """Free relaxation (``beta = 0``, ``t_free`` sweeps from ``u = 0``)."""
        xp, y = self._batch(net, state, x, y)
        return relax(self, net, state, x, y, 0.0, self.t_free)

    def phases(self, net, state, x, y) -> dict:
        """``{"free", "nudged"[, "third"], "beta"}``: the phases of one training step."""
        xp, y = self._batch(net, state, x, y)
        beta = self.signed_beta(state)
        free = relax(self, net, state, x, y, 0.0, self.t_free)
        nudged = relax(self, net, state, x, y, beta, self.t_nudge, start=free.R[1:])
        out = {"free": free, "nudged": nudged, "beta": beta}
        if self.three_phase:
            out["third"] = relax(self, net, state, x, y, -beta, self.t_nudge, start=nudged.R[1:])
        return out

    def predict(self, net, state, x):
        """``r_P`` of the free phase (the code's evaluation; classify with ``argmax``)."""
        return self.free_phase(net, state, x).R[-1]

    # --- updates --------------------------------------------------------------------------------

    def _contrast(self, net, state, ph):
        beta = ph["beta"]
        pos = ph["nudged"]
        neg = ph["third"] if self.three_phase else ph["free"]
        scale = 1.0 / (2.0 * beta) if self.three_phase else 1.0 / beta
        gf_p, gb_p = local_ls_gradients(net, state, pos.R)
        gf_n, gb_n = local_ls_gradients(net, state, neg.R)
        dW = tuple(scale * (a - b) for a, b in zip(gf_p, gf_n))
        dWb = (None,) + tuple(scale * (a - b) for a, b in zip(gb_p[1:], gb_n[1:]))
        if self.weight_decay:
            dW = tuple(d + self.eps * W for d, W in zip(dW, net.weights))
            dWb = (None,) + tuple(d + self.eps * W for d, W in zip(dWb[1:], state.Wb[1:]))
        return dW, dWb

    def feedback_updates(self, net, state, x, y) -> tuple:
        """Gradient-convention updates ``dWb`` of the backward predictors (entry 0 None), as applied in
        :meth:`updates` with ``feedback_lr``."""
        ph = self.phases(net, state, x, y)
        return self._contrast(net, state, ph)[1]

    def updates(self, net, state, x, y):
        """One CorInfoMax-EP step: ``(Updates(dW, db=0, record), new_state)``.

        The new state has ``Wb[k] - feedback_lr[k] * dWb[k]``, the lateral step of every ``B_k`` from the
        nudged activities, and ``step + 1``. ``record``: ``r_free``, ``r_nudged`` (``r_third``), ``u_*``,
        ``v_basal_*``, ``v_apical_*``, ``e_fwd_*``, ``e_bwd_*`` (tuples by layer, index 0 None/input),
        ``dWb``, ``lateral_z`` (``Z = R_k^beta B_k``), ``beta`` (signed), ``loss`` (free-phase
        ``1/2 <||r_P - y||^2>``).
        """
        xp, yv = self._batch(net, state, x, y)
        ph = self.phases(net, state, x, yv)
        dW, dWb = self._contrast(net, state, ph)
        P = net.depth
        lrs = _as_layer_tuple(self.feedback_lr, P, "feedback_lr")
        Wb = (None,) + tuple(state.Wb[k] - lrs[k] * dWb[k] for k in range(1, P))
        Rn = ph["nudged"].R
        Z = tuple(Rn[k] @ state.B[k - 1] for k in range(1, P + 1))
        B = tuple(lateral_update(state.B[k - 1], Rn[k], self.lam, self.lateral, self.symmetrize)
                  for k in range(1, P + 1))
        new_state = replace(state, Wb=Wb, B=B, step=state.step + 1)
        db = tuple(xp.zeros_like(b) for b in net.biases)
        N = x.shape[0]
        rec = {"beta": ph["beta"], "dWb": dWb, "lateral_z": Z,
               "loss": float(xp.sum((ph["free"].R[-1] - yv) ** 2)) / (2 * N)}
        for name in ("free", "nudged", "third"):
            if name not in ph:
                continue
            p = ph[name]
            rec[f"r_{name}"] = p.R
            rec[f"u_{name}"] = p.U
            rec[f"v_basal_{name}"] = p.VB
            rec[f"v_apical_{name}"] = p.VA
            rec[f"e_fwd_{name}"] = forward_errors(net, p.R)
            rec[f"e_bwd_{name}"] = backward_errors(state, p.R)
        return Updates(dW, db, rec), new_state
