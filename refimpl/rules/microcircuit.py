r"""Dendritic cortical microcircuits (Sacramento, Costa, Bengio & Senn, NeurIPS 2018).

A rate-based network of pyramidal cells (soma ``u^P``, basal ``v_B``, apical ``v_A``) and
interneurons (soma ``u^I``, dendrite ``v^I``), one interneuron per pyramidal cell of the layer
above (``dim I_k = dim P_{k+1}``). Layers ``k = 0`` (input rates, clamped), ``1..N-1`` hidden,
``N`` output; ``r_k = phi(u^P_k)``. In batch-row form (``(B, n)`` arrays, shapes of
``torch.nn.Linear``; spec microcircuit.md §1-2):

    V_B,k = r_{k-1} @ Wpp_k.T                                 basal (bottom-up, plastic)
    V_A,k = rho_{k+1}(U^P_{k+1}) @ TD_k.T + rho_{k+1}(U^I_k) @ PI_k.T   apical (top-down + lateral)
    V^I_k = r_k @ IP_k.T                                      interneuron dendrite (plastic)
    du^P_k/dt = -g_lk u + g_B (V_B - u) + g_A (V_A - u) + sigma xi        hidden pyramidal
    du^I_k/dt = -g_lk u + g_D (V^I - u) + g_somI (U^P_{k+1} - u) + sigma xi  interneuron
    du^P_N/dt = -g_lk u + g_B (V_B - u) + g_som (y - u) + sigma xi        output (nudging only
                                                                          while a target is shown)

``rho_k`` is the rate function of layer ``k``'s pyramidal cells: ``phi`` for hidden layers and,
for the output, ``phi`` (``output_rate="phi"``, the paper's and the phll code's choice) or the
identity (``output_rate="linear"``). Interneuron ``I_k`` mimics ``P_{k+1}`` and uses ``rho_{k+1}``.

Plasticity ("dendritic prediction of somatic activity", Urbanczik & Senn 2014; paper eqs. for
dW^{PP}, dW^{IP}, dW^{PI}), paper sign (ascent), per sample:

    dWpp_k/dt = eta [rho_k(u^P_k) - rho_k(vhat_B,k)] r_{k-1}^T,  vhat_B,k = c_k v_B,k
    dIP_k/dt  = eta [rho_{k+1}(u^I_k) - rho_{k+1}(vhat^I_k)] r_k^T,  vhat^I_k = g_D/(g_lk+g_D) v^I_k
    dPI_k/dt  = eta [V_rest - v_A,k] rho_{k+1}(u^I_k)^T,  V_rest = 0

with ``c_k = g_B/(g_lk+g_B+g_A)`` (hidden) and ``c_N = g_B/(g_lk+g_B)`` (output).

**The refimpl network is the effective network** (a deliberate departure from spec §2, which
stores ``Wpp`` in ``net.weights``): with no target and in the self-predicting state the apical
potentials vanish and ``u^P_k = c_k Wpp_k r_{k-1}``, i.e. the microcircuit computes the
feed-forward network with weights ``W_k = c_k Wpp_k``, hidden activation ``phi`` and a linear
output (the output is the potential ``u^P_N`` compared with the target). ``net`` is that network,
so ``net(x)`` *is* the microcircuit's prediction, and BP on ``net`` is the comparison that the
paper's theorem makes. :func:`bottom_up_weights` gives ``Wpp_k = W_k / c_k`` and
:func:`effective_network` goes back. The model has no biases: ``net.biases`` must be zero and
``db = 0``.

Steady state (the paper's SM and phll ``SteadNet``): every ``du/dt = 0``,

    u^P_k = c_k v_B + lam_A v_A,  lam_A = g_A/(g_lk+g_B+g_A)
    u^I_k = (1 - lam_I) vhat^I + lam_I u^P_{k+1},  lam_I = g_somI/(g_lk+g_D+g_somI)
    u^P_N = (1 - lam_out) vhat_B,N + lam_out y,  lam_out = g_som/(g_lk+g_B+g_som)

reached from the feed-forward pass by layer-by-layer sweeps of these maps from the output down,
falling back to forward Euler on the dynamics (step halving on divergence) where the sweeps do not
contract (:func:`steady_state`). With the ideal lateral weights the free steady state *is* the
feed-forward pass, so ``updates`` only evaluates the map there (no free solve).

**Scaling of ``updates``** (gradient convention, DESIGN.md). With ``E_k`` the plasticity errors
``rho_k(U^P_k) - rho_k(Vhat_B,k)`` at the nudged steady state,

    dW[k] = - c_k E_k^T r_{k-1} / (B c_k alpha_k lam_out) = - E_k^T r_{k-1} / (B alpha_k lam_out),
    alpha_k = prod_{j=k}^{N-1} lam_A (1 - lam_I) / c_{j+1}    (alpha_N = 1),

so that, as ``lam_out -> 0`` with transposed top-down weights (``TD_k = Wpp_{k+1}^T``) and the
self-predicting lateral weights, ``dW`` tends to BP's gradient on ``net`` whose output delta is
``rho_N'(u_N) * (u_N - y) / B`` (exactly BP's mse gradient for ``output_rate="linear"``; with
``phi`` at the output every output unit's error is weighted by ``phi'(u_N) > 0``), with error
``O(lam_out)`` (theorem ``microcircuit.updates_approach_bp``; spec P-B3). With random top-down
weights the limit is feedback alignment with ``feedback[k] = c_{k+1} TD_k^T``.

**The paper's own scale.** ``record["dW_paper"][k-1] = -E_k^T r_{k-1} / B`` is the gradient-convention
update of the synaptic weights ``Wpp_k`` (the paper's step, steady-state variant, is
``Wpp_k <- Wpp_k - eta_k T_pattern dW_paper[k-1]``). The two scales are related by
``dW_paper[k-1] = alpha_k lam_out dW[k-1]``, and a step of ``Wpp_k`` by ``-eta dW_paper`` moves
``net.W[k-1] = c_k Wpp_k`` by ``-eta c_k dW_paper[k-1]``; :meth:`Microcircuit.paper_scale` returns
``(alpha_k lam_out, c_k)`` per layer. So ``W <- W - lr dW`` with ``lr_k = eta_k T_pattern alpha_k
lam_out c_k`` reproduces the paper's step exactly.

Sources: Sacramento et al. 2018 (NeurIPS; arXiv 1810.11393), Sec. 2-3 and SM; constants and the
steady-state procedure as in the third-party code phll/Neuro-Backprop (``PyraLNet.py``,
``SteadNet.py``), read, not copied; spec microcircuit.md (derivations of alpha_k, the
self-predicting W^IP and the scale alpha_k / c_k).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field, replace
from typing import Optional

from .. import activations as _act
from .. import losses as _losses
from ..backend import namespace, rng as _rng, from_numpy, device_of, check_finite
from ..network import Network
from .base import Updates, check_batch, check_state_shapes

__all__ = ["Microcircuit", "MicrocircuitState", "Potentials", "Simulation", "steady_state", "simulate",
           "self_predicting", "bottom_up_weights", "effective_network", "plasticity_errors",
           "TOP_DOWN", "LATERAL", "OUTPUT_RATES", "SOLVERS"]

TOP_DOWN = ("transposed", "random")
LATERAL = ("ideal", "plastic")
OUTPUT_RATES = ("phi", "linear")


# --- state and records -------------------------------------------------------------------------

@dataclass(frozen=True)
class MicrocircuitState:
    """Top-down and lateral weights, one entry per hidden layer ``k = 1..N-1`` (entry ``k-1``).

    * ``top_down[k-1]``: ``TD_k = W^{PP}_{k,k+1}``, shape ``(n_k, n_{k+1})``; ``None`` entries
      with ``top_down="transposed"`` (then ``TD_k = Wpp_{k+1}^T`` of the current network).
    * ``pi[k-1]``: ``W^{PI}_k`` (interneuron -> pyramidal, apical), shape ``(n_k, n_{k+1})``.
    * ``ip[k-1]``: ``W^{IP}_k`` (pyramidal -> interneuron), shape ``(n_{k+1}, n_k)``.
    """

    top_down: tuple
    pi: tuple
    ip: tuple


@dataclass(frozen=True)
class Potentials:
    """Compartment potentials at one state, tuples indexed by layer ``0..N`` (``None`` where undefined).

    ``uP[0]`` is the input rate ``x``; ``uP[k]``, ``vB[k]``, ``vB_hat[k]``, ``e[k]`` for ``k = 1..N``;
    ``vA[k]``, ``uI[k]``, ``vI[k]``, ``vI_hat[k]`` for hidden ``k = 1..N-1``. ``e[k] =
    rho_k(uP[k]) - rho_k(vB_hat[k])`` is the bottom-up plasticity error. ``residual`` is the largest
    change of a potential in the last iteration (max-norm), ``iterations`` the number done.
    """

    uP: tuple
    uI: tuple
    vB: tuple
    vB_hat: tuple
    vA: tuple
    vI: tuple
    vI_hat: tuple
    e: tuple
    residual: float
    iterations: int
    target: bool
    #: the rates ``rho_k(uP[k])`` (``rates[0] = x``), as the solver computed them at the returned
    #: potentials (bitwise ``rho_k(uP[k])``); kept so that the plasticity does not re-evaluate them
    rates: Optional[tuple] = None

    def as_dict(self) -> dict:
        return {"u_pyr": self.uP, "u_inter": self.uI, "v_basal": self.vB, "v_basal_hat": self.vB_hat,
                "v_apical": self.vA, "v_inter": self.vI, "v_inter_hat": self.vI_hat, "errors": self.e,
                "residual": self.residual, "iterations": self.iterations}


# --- the network <-> synaptic weights ----------------------------------------------------------

def _c(rule, k: int, N: int) -> float:
    return rule.c_out if k == N else rule.c_hidden


def bottom_up_weights(rule, net) -> tuple:
    """The synaptic bottom-up weights ``Wpp_k = net.W[k-1] / c_k`` (tuple of length N)."""
    N = net.depth
    return tuple(W / _c(rule, i + 1, N) for i, W in enumerate(net.weights))


def effective_network(rule, wpp, phi: str = "softplus") -> Network:
    """The feed-forward network a microcircuit with synaptic weights ``wpp`` implements:
    ``W_k = c_k Wpp_k``, zero biases, activations ``phi`` (hidden) and ``linear`` (output)."""
    wpp = tuple(wpp)
    N = len(wpp)
    xp = namespace(*wpp)
    Ws = tuple(_c(rule, i + 1, N) * W for i, W in enumerate(wpp))
    bs = tuple(xp.zeros((W.shape[0],), dtype=W.dtype, device=device_of(W)) for W in Ws)
    return Network(Ws, bs, (phi,) * (N - 1) + ("linear",))


def self_predicting(rule, net, top_down) -> tuple:
    """Lateral weights of the self-predicting state (spec §1.5), ``(pi, ip)``:
    ``PI_k = -TD_k`` and ``IP_k = (g_lk+g_D)/g_D * c_{k+1} Wpp_{k+1} = (g_lk+g_D)/g_D * net.W[k]``
    (0-based ``net.W[k]`` is layer ``k+1``). The general form holds for the top interneurons too
    (``c_N`` there), which is why it is written with the network's weights."""
    N = net.depth
    f = (rule.g_lk + rule.g_D) / rule.g_D
    pi = tuple(-td for td in top_down)
    ip = tuple(f * net.weights[k] for k in range(1, N))
    return pi, ip


def _top_down(rule, net, state) -> tuple:
    if rule.top_down == "transposed":
        N = net.depth
        return tuple(net.weights[k].T / _c(rule, k + 1, N) for k in range(1, N))
    return tuple(state.top_down)


# --- steady state ------------------------------------------------------------------------------

def _rates(rule, net):
    """(rho_k for k = 1..N) as a list indexed by layer (index 0 unused)."""
    N = net.depth
    phi = _act.get(net.activations[0]).f
    out = phi if rule.output_rate == "phi" else (lambda u: u)
    return [None] + [phi] * (N - 1) + [out]


def _max_abs(xp, arrays) -> float:
    m = 0.0
    for a in arrays:
        if a is not None and a.shape[0] * (a.shape[1] if a.ndim > 1 else 1) > 0:
            m = max(m, float(xp.max(xp.abs(a))))
    return m


def _potentials(rule, net, wpp, td, pi, ip, x, uP, uI, y, rho, vB1=None):
    """Dendritic potentials and the somatic fixed-point map at the given somatic potentials
    (``vB1``: the input drive ``x @ Wpp_1.T`` when already computed)."""
    N = net.depth
    lam_out, lam_I = rule.lam_out, rule.lam_I
    kI = rule.g_D / (rule.g_lk + rule.g_D)
    r = [x] + [rho[k](uP[k]) for k in range(1, N + 1)]
    vB = [None] + [vB1 if k == 1 and vB1 is not None else r[k - 1] @ wpp[k - 1].T for k in range(1, N + 1)]
    vA = [None] * (N + 1)
    vI = [None] * (N + 1)
    new_uP = [x] + [None] * N
    new_uI = [None] * (N + 1)
    for k in range(1, N):
        vA[k] = r[k + 1] @ td[k - 1].T + rho[k + 1](uI[k]) @ pi[k - 1].T
        vI[k] = r[k] @ ip[k - 1].T
        new_uP[k] = rule.c_hidden * vB[k] + rule.lam_A * vA[k]
        new_uI[k] = (1 - lam_I) * kI * vI[k] + lam_I * uP[k + 1]
    if y is None:
        new_uP[N] = rule.c_out * vB[N]
    else:
        new_uP[N] = (1 - lam_out) * rule.c_out * vB[N] + lam_out * y
    return vB, vA, vI, new_uP, new_uI


def _assemble(rule, net, x, uP, uI, vB, vA, vI, rho, residual, iterations, target, rates=None) -> Potentials:
    """:class:`Potentials` at ``uP``; ``rates`` (``rho_k(uP[k])``, ``rates[0] = x``): reused where the
    caller has them (bitwise the same values)."""
    N = net.depth
    kI = rule.g_D / (rule.g_lk + rule.g_D)
    vB_hat = [None] + [_c(rule, k, N) * vB[k] for k in range(1, N + 1)]
    if rates is None:
        rates = [x] + [rho[k](uP[k]) for k in range(1, N + 1)]
    vI_hat = [None] + [kI * vI[k] for k in range(1, N)] + [None]
    e = [None] + [rates[k] - rho[k](vB_hat[k]) for k in range(1, N + 1)]
    return Potentials(tuple(uP), tuple(uI), tuple(vB), tuple(vB_hat), tuple(vA), tuple(vI), tuple(vI_hat),
                      tuple(e), float(residual), int(iterations), bool(target), tuple(rates))


SOLVERS = ("sweep", "euler")


def steady_state(rule, net, state, x, y=None, *, max_iter: Optional[int] = None, tol: Optional[float] = None,
                 damping: Optional[float] = None, init=None, method: str = "sweep",
                 self_predicting: bool = False, check_every: Optional[int] = None, top_down=None,
                 trace=None, inner: int = 3) -> Potentials:
    """The fixed point of the somatic dynamics (all ``du/dt = 0``), target on iff ``y`` is given.

    ``method="sweep"`` (default): layer-by-layer Gauss-Seidel sweeps of the steady-state map from the
    output down (:func:`_sweep_solve`); when the sweeps do not contract (a fixed point that is
    stable for the dynamics but not for the sweep map) it falls back to ``"euler"``: forward Euler
    on the dynamics with step control (:func:`_euler_solve`, the solver before issue 17). Both stop
    on the same relative ``tol`` and return the same :class:`Potentials`: dendritic potentials
    evaluated at the returned somatic ones and ``residual = max|F(U) - U|`` there. ``max_iter``
    bounds sweeps (resp. Euler steps), each one evaluation of the map. ``self_predicting=True``:
    the caller guarantees the ideal lateral weights (``PI_k = -TD_k``, ``IP_k = (g_lk+g_D)/g_D
    W_{k+1}``, :func:`self_predicting`), which halves the matrix products of a sweep (below).
    ``check_every``: sweeps between convergence tests (each one host synchronisation; default 1 on
    the CPU, 4 on an accelerator). ``damping`` is the Euler step (``rule.damping``). ``top_down``
    (the matrices ``TD_k`` as :func:`_top_down` gives them) and ``trace`` (``net.forward(x)``, the
    start when ``init`` is None): reused when the caller has them already (``Microcircuit.updates``).
    ``inner``: how often a sweep repeats the top pair (output and last hidden layer; 1 = plain
    top-down sweeps; :func:`_sweep_solve`); when the block sweep does not contract the plain sweep
    is tried before Euler.
    """
    if method not in SOLVERS:
        raise ValueError(f"method: expected one of {SOLVERS}, got {method!r}")
    if method == "sweep":
        # the block sweep (inner > 1) first; where it does not contract, the plain sweep (it can
        # contract where the block sweep does not: found on random linear nets with strong random
        # feedback, 2 of 109 stable draws), then Euler
        for k in ((inner, 1) if _as_inner(inner) > 1 else (1,)):
            pot = _sweep_solve(rule, net, state, x, y, max_iter=max_iter, tol=tol, init=init,
                               self_predicting=self_predicting, check_every=check_every, top_down=top_down,
                               trace=trace, inner=k)
            if pot is not None:
                return pot
    return _euler_solve(rule, net, state, x, y, max_iter=max_iter, tol=tol, damping=damping, init=init)


def _as_inner(inner) -> int:
    """``inner`` as an int >= 1 (NumPy integers accepted), else a ValueError naming it."""
    try:
        k = operator.index(inner)
    except TypeError:
        k = None
    if k is None or isinstance(inner, bool) or k < 1:
        raise ValueError(f"inner: expected an integer >= 1 (repetitions of the top pair per sweep), got {inner!r}")
    return k


def _sweep_solve(rule, net, state, x, y, *, max_iter, tol, init, self_predicting, check_every, top_down=None,
                 trace=None, inner: int = 3):
    r"""Gauss-Seidel sweeps of the steady-state map, output layer first; ``None`` if they do not contract.

    One sweep (spec §1.6 maps, each population set to its steady-state value given its inputs'
    *latest* values; the third-party phll ``SteadNet`` sweeps layer by layer the same way), written
    with the network's weights ``W_k = c_k Wpp_k`` so that ``A_k = c_k V_B,k = r_{k-1} @ W_k.T``:

        repeat `inner` times (the top pair, A_{N-1} fixed):
            U_N       = (1 - lam_out) A_N + lam_out y         (A_N = c_N V_B,N; no target: U_N = A_N)
            U_{N-1}   = A_{N-1} + lam_A V_A,N-1               (U^I_{N-1}, V_A,N-1 as below)
        for k = N-2, ..., 1:
            U^I_k = (1 - lam_I) kI r_k @ IP_k.T + lam_I U_{k+1}
            V_A,k = rho(U_{k+1}) @ TD_k.T + rho(U^I_k) @ PI_k.T
            U_k   = A_k + lam_A V_A,k

    ``inner = 1`` is the plain top-down sweep. The slow mode of the plain sweep is the loop between
    the output and the last hidden layer (measured on 784-1024-1024-10: with that pair solved
    three times per sweep the sweeps needed to 1e-15 fall from 16 to 8, while repeating it costs
    only products with the narrow output layer, ``B n_{N-1} n_N``); a block Gauss-Seidel
    iteration with the same fixed points. ``A_1 = x @ W_1.T`` (the input drive) is computed once per
    solve, and the first sweep from the forward pass reads its products ``A_k`` and rates. The
    interneurons are not iterated separately: ``U^I_k`` is an explicit function of ``U_k`` and ``U_{k+1}``, so a sweep is a
    map of the pyramidal potentials alone and has exactly the fixed points of the full map.
    With the ideal lateral weights (``self_predicting``) ``kI IP_k = W_{k+1}`` and ``PI_k = -TD_k``,
    so ``kI r_k @ IP_k.T = A_{k+1}`` (the product already made for ``U_{k+1}`` in this sweep, from the
    same ``r_k``) and ``V_A,k = (rho(U_{k+1}) - rho(U^I_k)) @ TD_k.T``: two products per hidden layer
    instead of four (equal up to rounding; with ``TD_k = W_{k+1}.T / c_{k+1}`` for transposed top-down
    weights the scalar is applied to the ``(B, n_k)`` product, not to the matrix).

    Matrix products (the floor of ``refimpl bench``): per sweep, with ``self_predicting``, ``inner``
    times the top pair's two (``A_N``, ``V_A,N-1``), and ``A_{N-1}`` (``N >= 3``) and ``A_k``
    (``2 <= k < N-1``), ``V_A,k`` (``k <= N-2``) once; without ``self_predicting`` the ``IP`` and ``PI``
    products on top (``2 inner`` for the top pair, 2 per lower hidden layer); in the first sweep from
    the forward pass the ``A_k`` are the forward pass's; once per solve the input drive (taken from
    the forward pass when starting there) and one evaluation of the map at the returned state
    (dendrites and ``residual = max|F(U) - U|``, as the Euler solver reports them).

    Measured (softplus, transposed top-down, ideal lateral, float64): the plain sweep (``inner=1``)
    contracts by ~0.12 per sweep, 15-17 sweeps to 1e-14 on 784-500-10 (batch 1 and 32),
    784-1024-1024-10 (batch 256) and 30-20-20-20-5, against 68-149 Euler steps; with ``inner=3``
    8 sweeps on 784-1024-1024-10 and 5 on 784-500-10 (each of those = 3 plain sweeps: its only
    hidden layer is the top pair's). Anderson acceleration (memory 2-5) on the plain sweep saved
    only 1-4 sweeps at the cost of the Gram products and was not adopted (issue 17 note).

    Convergence: the a-posteriori distance estimate ``q / (1 - q) * change <= tol * max(1, max|U|)``,
    ``change`` the largest change of a potential in the sweep and ``q`` the larger of the last two
    observed contraction ratios (for a contraction with Lipschitz factor ``q``, ``|U - U*| <= q / (1 -
    q) change``; the observed ratios only estimate it: where the change dips while the error does
    not, the stop comes early -- on 105 random contracting nets the true error at the stop was
    median 0.02, at most 5.8 times ``tol * scale``, the largest at a linear net's rounding floor,
    where the old change-only test gave 17.6; in the first two tests, without ratios, ``change``
    itself); or
    stalled at rounding (no new best in 3 sweeps -- 3 tests -- once below ``max(10 tol, 64 eps)``,
    relative; Euler waits 10 steps, its slow modes make progress that late, a sweep contracting by
    ~0.1 does not: float32 with the default tol 1e-14 stops there).
    Not contracting (non-finite, 1e3 above its best, or no new best in 40 sweeps above that floor):
    ``None``, and the caller falls back to Euler.
    """
    xp = namespace(x)
    N = net.depth
    max_iter = rule.max_iter if max_iter is None else int(max_iter)
    tol = rule.tol if tol is None else float(tol)
    inner = _as_inner(inner)
    if check_every is None:
        check_every = 1 if "cpu" in str(device_of(x)).lower() else 4
    rho = _rates(rule, net)
    W = net.weights
    td = _top_down(rule, net, state) if top_down is None else top_down
    pi, ip = state.pi, state.ip
    lam_A, lam_I, lam_out = rule.lam_A, rule.lam_I, rule.lam_out
    kI = rule.g_D / (rule.g_lk + rule.g_D)
    eps = 2.220446049250313e-16 if x.dtype == xp.float64 else 1.1920928955078125e-07
    A0 = None  # products A_k = r_{k-1} @ W_k.T of the starting state, where the forward pass made them
    if init is None:
        tr = net.forward(x) if trace is None else trace
        drive = tr.a[1]  # x @ W_1.T (zero biases): the input drive, constant over the solve
        uP = [x] + [tr.a[k] for k in range(1, N + 1)]
        uI = [None] + [tr.a[k + 1] for k in range(1, N)] + [None]
        # At the forward pass U_k = a_k, so r_k = phi(a_k) = z_k (hidden) and r_{k-1} @ W_k.T = a_k:
        # the first sweep (and a max_iter=0 evaluation) reads them instead of recomputing them
        # (bitwise the same values: the same functions of the same arrays, the biases are zero).
        A0 = tr.a
        r = [x] + [tr.z[k] for k in range(1, N)] + [rho[N](tr.a[N])]
    else:
        drive = x @ W[0].T
        uP, uI = list(init.uP), list(init.uI)
        r = [x] + [rho[k](uP[k]) for k in range(1, N + 1)]

    def vA_of(k, r_up, uI_k, r):
        if self_predicting:
            return (r_up - rho[k + 1](uI_k)) @ td[k - 1].T
        return r_up @ td[k - 1].T + rho[k + 1](uI_k) @ pi[k - 1].T

    def uI_of(k, A_up, uP_up, r):
        v = A_up if self_predicting else kI * (r[k] @ ip[k - 1].T)
        t = (1 - lam_I) * v
        t += lam_I * uP_up  # (1 - lam_I) v + lam_I U_{k+1}, on one temporary
        return t

    def change_of(new, old):
        d = new - old
        return xp.max(xp.abs(d))

    def A_of(k, first):
        return A0[k] if first and A0 is not None else r[k - 1] @ W[k - 1].T

    best, best_it, it = math.inf, 0, 0
    tested = []  # the changes at the last convergence tests
    while it < max_iter and N == 1:  # no hidden layer: U_1 = (1 - lam_out) A_1 + lam_out y, one sweep
        new = drive if y is None else (1 - lam_out) * drive + lam_out * y
        change = change_of(new, uP[1])
        uP[1], r[1] = new, rho[1](new)
        it += 1
        if float(change) <= tol * max(1.0, _max_abs(xp, uP[1:])) or it >= 2:
            break
    while it < max_iter and N >= 2:
        # the top pair (N-1, N), iterated `inner` times with A_{N-1} fixed (its loop is the slow mode)
        start_top, start_low = uP[N], uP[N - 1]
        A_low = drive if N == 2 else A_of(N - 1, it == 0)  # r_{N-2} is not yet updated in this sweep
        for rep in range(inner):
            A_up = A_of(N, it == 0 and rep == 0)
            new = A_up if y is None else (1 - lam_out) * A_up + lam_out * y
            uP[N], r[N] = new, rho[N](new)
            uI[N - 1] = uI_of(N - 1, A_up, uP[N], r)
            vA = vA_of(N - 1, r[N], uI[N - 1], r)
            vA *= lam_A
            vA += A_low  # A_{N-1} + lam_A V_A,N-1
            uP[N - 1], r[N - 1] = vA, rho[N - 1](vA)
        change = xp.maximum(change_of(uP[N], start_top), change_of(uP[N - 1], start_low))
        A_up = A_low
        for k in range(N - 2, 0, -1):
            uI[k] = uI_of(k, A_up, uP[k + 1], r)
            vA = vA_of(k, r[k + 1], uI[k], r)
            A_up = drive if k == 1 else A_of(k, it == 0)  # r_{k-1} is not yet updated in this sweep
            vA *= lam_A  # vA is this sweep's own product: in place, no temporaries
            vA += A_up
            new = vA     # A_k + lam_A V_A,k
            change = xp.maximum(change, change_of(new, uP[k]))
            uP[k], r[k] = new, rho[k](new)
        it += 1
        if it % check_every and it < max_iter:
            continue  # no host synchronisation between tests
        ch = float(change)
        if not math.isfinite(ch) or (best < math.inf and ch > 1e3 * max(best, 1e-300)):
            return None
        scale = max(1.0, _max_abs(xp, uP[1:]))
        if len(tested) >= 2 and tested[-2] > 0 and tested[-1] > 0:
            # a-posteriori estimate of the distance to the fixed point (for a contraction with factor q,
            # |U - U*| <= q / (1 - q) |U - U_prev|), q (per sweep) estimated by the larger of the last two
            # observed ratios of changes (no estimate, i.e. not converged, while they are >= 1)
            q = max(tested[-1] / tested[-2], ch / tested[-1]) ** (1.0 / check_every)
            if q < 1 and q / (1 - q) * ch <= tol * scale:
                break
        elif ch <= tol * scale:  # the first tests (the start may be the fixed point: the free phase)
            break
        tested.append(ch)
        if ch < best:
            best, best_it = ch, it
        elif it - best_it >= 3 * check_every and ch <= max(10 * tol, 64 * eps) * scale:
            break  # at the rounding floor: a contraction this fast that makes no progress in 3 sweeps never will
        elif it - best_it > 40:
            return None
    # one evaluation of the map at the returned state (Jacobi: every input at its returned value)
    A = [None, drive] + [A_of(k, it == 0) for k in range(2, N + 1)]
    vB = [None] + [A[k] / _c(rule, k, N) for k in range(1, N + 1)]
    vA, vI, nP, nI = [None] * (N + 1), [None] * (N + 1), [x] + [None] * N, [None] * (N + 1)
    for k in range(1, N):
        vI[k] = A[k + 1] / kI if self_predicting else r[k] @ ip[k - 1].T
        nI[k] = (1 - lam_I) * kI * vI[k] + lam_I * uP[k + 1]
        vA[k] = vA_of(k, r[k + 1], uI[k], r)
        nP[k] = A[k] + lam_A * vA[k]
    nP[N] = A[N] if y is None else (1 - lam_out) * A[N] + lam_out * y
    residual = _max_abs(xp, [nP[k] - uP[k] for k in range(1, N + 1)] + [nI[k] - uI[k] for k in range(1, N)])
    return _assemble(rule, net, x, uP, uI, vB, vA, vI, rho, residual, it, y is not None, rates=r)


def _euler_solve(rule, net, state, x, y=None, *, max_iter: Optional[int] = None, tol: Optional[float] = None,
                 damping: Optional[float] = None, init=None) -> Potentials:
    """Forward Euler on the somatic dynamics to their fixed point (the solver before issue 17).

    The iteration is forward Euler on the somatic dynamics themselves (spec §1.2): each population
    moves by ``w (g_pop / g_max) (F_pop(U) - U_pop)``, where ``F_pop`` is its steady-state map (spec
    §1.6), ``g_pop`` its total conductance (``g_lk+g_B+g_A`` hidden pyramidal, ``g_lk+g_D+g_somI``
    interneurons, ``g_lk+g_B(+g_som)`` output) and ``w = damping`` (default ``rule.damping``), i.e.
    an Euler step ``dt = w / g_max``. Hence every stable fixed point of the dynamics is reached for
    small enough ``w``: when the residual blows up (non-finite or 1e3 above its best value) the
    iteration restarts from the initial state with ``w`` halved (at most 8 times), and when it
    falls by less than half in 200 iterations *and* either makes no progress (a cycle of the
    discrete map) or its consecutive displacements are not aligned (an oscillating mode at the edge
    of stability), ``w`` is halved in place, never below 1/64 of its value at the (re)start: a slow
    but stable mode of the dynamics is not a reason to shrink the step (unconditional halving froze
    the iteration there). Plain
    simultaneous (Jacobi) iteration is the case of equal weights; spec §1.6 notes that undamped Jacobi
    diverges on some nets, and equal-weight damping still diverged on linear nets whose dynamics are
    stable (strong lateral feedback: eigenvalues of F' far below -1).

    Starts from the feed-forward pass (``init``: a :class:`Potentials` instead). Stops when the max-norm
    of ``F(U) - U`` over all potentials is ``<= tol * max(1, max|U|)``, when it stalls at rounding level
    (no new best in 10 iterations once below ``max(10 tol, 64 eps)``, relative) or after ``max_iter`` iterations; the returned
    ``residual`` is ``max|F(U) - U|`` at the returned state (no exception here: callers judge it).
    """
    xp = namespace(x)
    N = net.depth
    max_iter = rule.max_iter if max_iter is None else int(max_iter)
    tol = rule.tol if tol is None else float(tol)
    w = rule.damping if damping is None else float(damping)
    rho = _rates(rule, net)
    wpp = bottom_up_weights(rule, net)
    td = _top_down(rule, net, state)
    pi, ip = state.pi, state.ip
    gP = rule.g_lk + rule.g_B + rule.g_A
    gI = rule.g_lk + rule.g_D + rule.g_som_I
    gN = rule.g_lk + rule.g_B + (rule.g_som if y is not None else 0.0)
    gmax = max(gP, gI, gN)
    eps = 2.220446049250313e-16 if x.dtype == xp.float64 else 1.1920928955078125e-07
    if init is None:
        tr = net.forward(x)
        uP0 = [x] + [tr.a[k] for k in range(1, N + 1)]
        uI0 = [None] + [tr.a[k + 1] for k in range(1, N)] + [None]
    else:
        uP0, uI0 = list(init.uP), list(init.uI)
    it = 0
    for _attempt in range(9):
        uP, uI = list(uP0), list(uI0)
        wP, wI, wN = w * gP / gmax, w * gI / gmax, w * gN / gmax
        best = (math.inf, it)
        mark = (it, math.inf)
        diverged = False
        prev, cos_sum, cos_n = None, 0.0, 0
        w_floor = w / 64
        while True:
            vB, vA, vI, nP, nI = _potentials(rule, net, wpp, td, pi, ip, x, uP, uI, y, rho)
            dP = [None] + [nP[k] - uP[k] for k in range(1, N + 1)]
            dI = [None] + [nI[k] - uI[k] for k in range(1, N)] + [None]
            steps = dP[1:] + dI[1:N]
            residual = _max_abs(xp, dP[1:] + dI[1:N])
            if not math.isfinite(residual) or residual > 1e3 * max(best[0], 1e-300) and best[0] < math.inf:
                diverged = True
                break
            scale = max(1.0, _max_abs(xp, uP[1:] + uI[1:N]))
            if residual <= tol * scale or it >= max_iter:
                break
            if residual < best[0]:
                best = (residual, it)
            elif it - best[1] > 10 and residual <= max(10 * tol, 64 * eps) * scale:
                break
            if it - mark[0] >= 200:
                # slow contraction. If the iteration makes no progress (residual > 0.9 of the last
                # mark: a cycle of the discrete map) or oscillates (consecutive displacements not
                # aligned: mean cosine over its last 10 iterations < 0.5) halve the step. A slow mode of the
                # dynamics themselves (displacements aligned, residual falling) is left alone, and
                # the step is never halved in place below w_floor: halving there only slows it
                # further, and unconditional halving froze the iteration (w -> 2e-7, residual
                # constant at 3e-2) on a net whose fixed point Euler reaches (review of issue 7).
                if residual > 0.5 * mark[1] and w > w_floor and \
                        (residual > 0.9 * mark[1] or cos_sum / max(cos_n, 1) < 0.5):
                    w = w / 2
                    wP, wI, wN = w * gP / gmax, w * gI / gmax, w * gN / gmax
                mark = (it, residual)
                cos_sum, cos_n = 0.0, 0
            if prev is not None and it - mark[0] >= 190:  # sampled over the window's last 10 iterations
                dot = sum(float(xp.sum(a * b)) for a, b in zip(steps, prev))
                nn = math.sqrt(sum(float(xp.sum(a * a)) for a in steps) * sum(float(xp.sum(b * b)) for b in prev))
                cos_sum, cos_n = cos_sum + (dot / nn if nn > 0 else 1.0), cos_n + 1
            prev = steps
            uP = [x] + [uP[k] + (wN if k == N else wP) * dP[k] for k in range(1, N + 1)]
            uI = [None] + [uI[k] + wI * dI[k] for k in range(1, N)] + [None]
            it += 1
        if not diverged or it >= max_iter:
            break
        w = w / 2
    if diverged:
        residual = math.inf
    return _assemble(rule, net, x, uP, uI, vB, vA, vI, rho, residual, it, y is not None)


def plasticity_errors(rule, net, pot: Potentials) -> tuple:
    """The bottom-up plasticity errors ``e_k = rho_k(u^P_k) - rho_k(c_k v_B,k)`` (``pot.e``)."""
    return pot.e


# --- the Euler simulator -----------------------------------------------------------------------

@dataclass(frozen=True)
class Simulation:
    """Result of :func:`simulate`: the final potentials, network and state (weights after
    plasticity), ``du_max`` = max |du/dt| at the last step, and ``history``: per recorded step
    ``(t, max|du/dt|, rms v_A)``."""

    potentials: Potentials
    net: Network
    state: MicrocircuitState
    du_max: float
    history: tuple


def simulate(rule, net, state, x, y=None, *, dt: float = 0.1, steps: int = 1000, sigma: float = 0.0,
             seed: int = 0, tau_0: Optional[float] = None, learn: bool = False, eta_up=None,
             eta_pi=None, eta_ip=None, tau_w: float = 30.0, record_every: int = 0,
             plasticity_order: str = "filter_first") -> Simulation:
    """Forward-Euler (Euler-Maruyama when ``sigma > 0``) integration of the somatic dynamics.

    Per step (spec §1.2-1.3; phll ``PyraLNet``): ``u <- u + dt f(u) + sigma sqrt(dt) xi`` for every
    pyramidal and interneuron soma, from ``u = 0``, input and target constant over the run (a
    pattern). ``tau_0``: inputs and targets are low-pass filtered, ``r_0 <- r_0 + dt/tau_0 (x - r_0)``
    from ``r_0 = 0`` (clamped if None). With ``learn=True`` the three plasticity rules run along the
    dynamics with a low-pass filter ``D`` of the instantaneous update ``G`` (the *batch mean* of the
    paper-sign update, ``(1/B) sum_b``, so a batch of B copies of one sample moves W exactly as that
    sample does): ``eta_up`` (per layer, length N), ``eta_pi``, ``eta_ip`` (per hidden layer, length
    N-1) default to zero. The bottom-up step moves ``net.W[k-1] = c_k Wpp_k`` by ``c_k dt eta D``.
    Noise ``xi`` is drawn on the host from ``seed``.

    ``plasticity_order`` (the pair ``(W, D)`` per step):
        ``"filter_first"`` (default): ``D <- D + dt/tau_w (G - D)``, then ``W <- W + dt eta D``
            with the *new* D (semi-implicit; one step from rest already moves W).
        ``"phll"``: the phll code's order, plain forward Euler on ``(W, D)``:
            ``W <- W + dt eta D`` with the *old* D, then ``D <- D + dt/tau_w (G - D)``
            (one step from rest leaves W exactly unchanged). The two differ by O(dt^2 eta/tau_w) per step.

    Where this differs from the phll code (read for issue 19, stated so that results compare):
    noise: phll adds ``dt sigma xi`` per step, refimpl ``sigma sqrt(dt) xi`` (Euler-Maruyama: the
    noise of a run does not depend on dt); phll's ``sigma`` is refimpl's ``sigma sqrt(dt)``. Input
    filter: phll's low-pass of the input starts at the first pattern and is advanced *before* each
    step; refimpl's starts at 0 and is advanced *after* the step (the step sees the previous r_0).
    """
    xp = namespace(x)
    N = net.depth
    net.check_input(x)
    if y is not None:
        check_batch(net, x, y, "mse")
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt: expected a finite step > 0, got {dt!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma: expected a finite noise level >= 0, got {sigma!r}")
    if tau_0 is not None and not tau_0 > 0:
        raise ValueError(f"tau_0: expected None or a time constant > 0, got {tau_0!r}")
    if not tau_w > 0:
        raise ValueError(f"tau_w: expected a time constant > 0, got {tau_w!r}")
    if plasticity_order not in ("filter_first", "phll"):
        raise ValueError(f"plasticity_order: expected 'filter_first' or 'phll', got {plasticity_order!r}")
    phll = plasticity_order == "phll"
    eta_up = tuple(eta_up) if eta_up is not None else (0.0,) * N
    eta_pi = tuple(eta_pi) if eta_pi is not None else (0.0,) * (N - 1)
    eta_ip = tuple(eta_ip) if eta_ip is not None else (0.0,) * (N - 1)
    if len(eta_up) != N or len(eta_pi) != N - 1 or len(eta_ip) != N - 1:
        raise ValueError(f"eta_up, eta_pi, eta_ip: expected lengths {N}, {N - 1}, {N - 1}, got "
                         f"{len(eta_up)}, {len(eta_pi)}, {len(eta_ip)}")
    rho = _rates(rule, net)
    dev = device_of(x)
    B = x.shape[0]
    gen = _rng(seed) if sigma > 0 else None
    sizes = net.sizes
    zeros = lambda n: xp.zeros((B, n), dtype=x.dtype, device=dev)
    uP = [x] + [zeros(sizes[k]) for k in range(1, N + 1)]
    uI = [None] + [zeros(sizes[k + 1]) for k in range(1, N)] + [None]
    r0 = x if tau_0 is None else zeros(sizes[0])
    yt = None if y is None else (y if tau_0 is None else xp.zeros_like(y))
    wpp = list(bottom_up_weights(rule, net))
    pi, ip = list(state.pi), list(state.ip)
    tds = list(state.top_down) if rule.top_down == "random" else None
    D_up = [xp.zeros_like(W) for W in wpp]
    D_pi = [xp.zeros_like(P) for P in pi]
    D_ip = [xp.zeros_like(P) for P in ip]
    kI = rule.g_D / (rule.g_lk + rule.g_D)
    history = []
    du_max = math.inf
    g = rule
    for step in range(steps + 1):
        td = tds if tds is not None else [wpp[k].T for k in range(1, N)]
        r = [r0] + [rho[k](uP[k]) for k in range(1, N + 1)]
        vB = [None] + [r[k - 1] @ wpp[k - 1].T for k in range(1, N + 1)]
        vA = [None] * (N + 1)
        vI = [None] * (N + 1)
        du = [None] * (N + 1)
        dI = [None] * (N + 1)
        for k in range(1, N):
            vA[k] = r[k + 1] @ td[k - 1].T + rho[k + 1](uI[k]) @ pi[k - 1].T
            vI[k] = r[k] @ ip[k - 1].T
            du[k] = -g.g_lk * uP[k] + g.g_B * (vB[k] - uP[k]) + g.g_A * (vA[k] - uP[k])
            dI[k] = -g.g_lk * uI[k] + g.g_D * (vI[k] - uI[k]) + g.g_som_I * (uP[k + 1] - uI[k])
        du[N] = -g.g_lk * uP[N] + g.g_B * (vB[N] - uP[N])
        if yt is not None:
            du[N] = du[N] + g.g_som * (yt - uP[N])
        du_max = _max_abs(xp, du[1:] + dI[1:N])
        if record_every and step % record_every == 0:
            va = [a for a in vA[1:N]]
            rms = math.sqrt(sum(float(xp.sum(a * a)) for a in va) / max(1, sum(a.shape[0] * a.shape[1] for a in va)))
            history.append((step * dt, du_max, rms))
        if step == steps:
            break
        if learn:
            for k in range(1, N + 1):
                vhat = _c(rule, k, N) * vB[k]
                G = (rho[k](uP[k]) - rho[k](vhat)).T @ r[k - 1] / B
                old = D_up[k - 1]
                D_up[k - 1] = D_up[k - 1] + (dt / tau_w) * (G - D_up[k - 1])
                wpp[k - 1] = wpp[k - 1] + dt * eta_up[k - 1] * (old if phll else D_up[k - 1])
            for k in range(1, N):
                GI = (rho[k + 1](uI[k]) - rho[k + 1](kI * vI[k])).T @ r[k] / B
                GP = (-vA[k]).T @ rho[k + 1](uI[k]) / B
                old_ip, old_pi = D_ip[k - 1], D_pi[k - 1]
                D_ip[k - 1] = D_ip[k - 1] + (dt / tau_w) * (GI - D_ip[k - 1])
                D_pi[k - 1] = D_pi[k - 1] + (dt / tau_w) * (GP - D_pi[k - 1])
                ip[k - 1] = ip[k - 1] + dt * eta_ip[k - 1] * (old_ip if phll else D_ip[k - 1])
                pi[k - 1] = pi[k - 1] + dt * eta_pi[k - 1] * (old_pi if phll else D_pi[k - 1])
        noise = (lambda shape: from_numpy(sigma * math.sqrt(dt) * gen.standard_normal(shape), xp, x.dtype, dev)) \
            if gen is not None else None
        uP = [uP[0]] + [uP[k] + dt * du[k] + (noise(tuple(uP[k].shape)) if noise else 0.0) for k in range(1, N + 1)]
        uI = [None] + [uI[k] + dt * dI[k] + (noise(tuple(uI[k].shape)) if noise else 0.0) for k in range(1, N)] + [None]
        if tau_0 is not None:
            r0 = r0 + (dt / tau_0) * (x - r0)
            if yt is not None:
                yt = yt + (dt / tau_0) * (y - yt)
        if not math.isfinite(du_max):
            break
    new_net = effective_network(rule, wpp, net.activations[0]) if learn else net
    new_state = replace(state, pi=tuple(pi), ip=tuple(ip)) if learn else state
    pot = _assemble(rule, net, r0, uP, uI, vB, vA, vI, rho, du_max, steps, y is not None)
    return Simulation(pot, new_net, new_state, du_max, tuple(history))


# --- the rule ----------------------------------------------------------------------------------

def _pos(name, v, allow_zero=False):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        raise ValueError(f"{name}: expected a finite number {'>= 0' if allow_zero else '> 0'}, got {v!r}")


@dataclass(frozen=True)
class Microcircuit:
    r"""The microcircuit's bottom-up learning at the nudged steady state, as a refimpl rule.

    Hyper-parameters (defaults: spec §1.4, phll code):
        g_lk, g_B, g_A, g_D: leak, basal, apical, interneuron-dendrite conductances.
        g_som: output nudging conductance (``lam_out = g_som/(g_lk+g_B+g_som)``, the theorem's
            small parameter); g_som_I: interneuron nudging (``lam_I``, any value in [0, 1) works).
        top_down: ``"transposed"`` (``TD_k = Wpp_{k+1}^T`` of the current network) or
            ``"random"`` (fixed, drawn by ``init``: ``N(0, feedback_scale^2 / n_{k+1})``).
        lateral: ``"ideal"`` (lateral weights set to the self-predicting state of the current
            network before every solve: the fixed point of lateral plasticity) or ``"plastic"``
            (the state's lateral weights; :meth:`train_feedback` applies ``lateral_steps`` steps of
            the lateral rules with rates ``eta_pi``, ``eta_ip`` at the free steady state).
        lateral_init: ``"self_predicting"`` or ``"random"`` (``N(0, lateral_scale^2/fan_in)``).
        output_rate: ``"phi"`` (paper, phll) or ``"linear"`` rate of the output cells.
        max_iter, tol, damping: the steady-state solver (:func:`steady_state`).
        loss: ``"mse"`` only (the output potential is nudged towards the target).

    ``updates`` returns ``dW[k] = -E_k^T r_{k-1} / (B alpha_k lam_out)`` (module docstring), ``db = 0``;
    ``record``: ``nudged`` and ``free`` (:class:`Potentials` of the target-on and no-target steady
    states: every compartment, the plasticity errors, the residual), ``errors`` (E_k, indexed by
    layer), ``v_apical``, ``u_inter``, ``u_pyr`` (nudged), ``dW_paper`` (the paper's scale),
    ``alpha``, ``lam_out``, ``loss`` (mse of the free output, :meth:`predict`), ``residual``
    (nudged), ``top_down``.
    """

    g_lk: float = 0.1
    g_B: float = 1.0
    g_A: float = 0.8
    g_D: float = 1.0
    g_som: float = 0.8
    g_som_I: float = 0.8
    top_down: str = "transposed"
    feedback_scale: float = 1.0
    lateral: str = "ideal"
    lateral_init: str = "self_predicting"
    lateral_scale: float = 0.1
    eta_pi: float = 0.0
    eta_ip: float = 0.0
    lateral_steps: int = 1
    output_rate: str = "phi"
    max_iter: int = 5000
    tol: float = 1e-14
    damping: float = 0.5
    loss: str = "mse"

    def __post_init__(self):
        for name in ("g_lk", "g_B", "g_A", "g_D", "g_som", "feedback_scale", "lateral_scale", "tol"):
            _pos(name, getattr(self, name))
        for name in ("g_som_I", "eta_pi", "eta_ip"):
            _pos(name, getattr(self, name), allow_zero=True)
        if self.top_down not in TOP_DOWN:
            raise ValueError(f"top_down: expected one of {TOP_DOWN}, got {self.top_down!r}")
        if self.lateral not in LATERAL:
            raise ValueError(f"lateral: expected one of {LATERAL}, got {self.lateral!r}")
        if self.lateral_init not in ("self_predicting", "random"):
            raise ValueError(f"lateral_init: expected 'self_predicting' or 'random', got {self.lateral_init!r}")
        if self.output_rate not in OUTPUT_RATES:
            raise ValueError(f"output_rate: expected one of {OUTPUT_RATES}, got {self.output_rate!r}")
        for name in ("max_iter", "lateral_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {v!r}")
        if not (0 < self.damping <= 1):
            raise ValueError(f"damping: expected a value in (0, 1], got {self.damping!r}")
        if _losses.get(self.loss).name != "mse":
            raise ValueError(f"loss: the microcircuit nudges the output potential towards the target "
                             f"(squared error); expected 'mse', got {self.loss!r}")

    # --- constants --------------------------------------------------------------------------

    @property
    def c_hidden(self) -> float:
        """``c_k = g_B/(g_lk+g_B+g_A)``: hidden soma / basal attenuation."""
        return self.g_B / (self.g_lk + self.g_B + self.g_A)

    @property
    def c_out(self) -> float:
        """``c_N = g_B/(g_lk+g_B)``: output soma / basal attenuation (no apical compartment)."""
        return self.g_B / (self.g_lk + self.g_B)

    @property
    def lam_out(self) -> float:
        return self.g_som / (self.g_lk + self.g_B + self.g_som)

    @property
    def lam_I(self) -> float:
        return self.g_som_I / (self.g_lk + self.g_D + self.g_som_I)

    @property
    def lam_A(self) -> float:
        return self.g_A / (self.g_lk + self.g_B + self.g_A)

    def alpha(self, N: int) -> tuple:
        """``alpha_k = prod_{j=k}^{N-1} lam_A (1 - lam_I) / c_{j+1}`` for ``k = 1..N`` (index k-1)."""
        out = []
        for k in range(1, N + 1):
            a = 1.0
            for j in range(k, N):
                a *= self.lam_A * (1 - self.lam_I) / (self.c_out if j + 1 == N else self.c_hidden)
            out.append(a)
        return tuple(out)

    def paper_scale(self, N: int) -> tuple:
        """Per layer ``(alpha_k lam_out, c_k)``: ``dW_paper[k-1] = alpha_k lam_out dW[k-1]`` is the
        gradient-convention update of the synaptic ``Wpp_k``; it moves ``net.W[k-1]`` by ``c_k`` times it."""
        return tuple((a * self.lam_out, self.c_out if k == N else self.c_hidden)
                     for k, a in zip(range(1, N + 1), self.alpha(N)))

    # --- validation -------------------------------------------------------------------------

    def _check_net(self, net):
        net.require_dense("the dendritic microcircuit (Sacramento et al. 2018, dense layers only)")
        N = net.depth
        if N < 2:
            raise ValueError(f"net: a microcircuit needs at least one hidden layer (depth >= 2), got depth {N}")
        if net.activations[-1] != "linear":
            raise ValueError(f"net: the output is the somatic potential u_N, so the output activation must be "
                             f"'linear', got {net.activations[-1]!r}")
        hidden = set(net.activations[:-1])
        if len(hidden) != 1:
            raise ValueError(f"net: one transfer function phi for every hidden layer expected, got {net.activations[:-1]}")
        xp = net.xp
        for i, b in enumerate(net.biases):
            if bool(xp.any(b != 0)):
                raise ValueError(f"net.biases[{i}]: the microcircuit has no biases; expected zeros, "
                                 f"got max |b| = {float(xp.max(xp.abs(b))):.3g}")

    def _expected_shapes(self, net):
        s = net.sizes
        N = net.depth
        return ([(s[k], s[k + 1]) for k in range(1, N)], [(s[k + 1], s[k]) for k in range(1, N)])

    def check_state(self, net, state):
        if not isinstance(state, MicrocircuitState):
            raise TypeError(f"state: expected a MicrocircuitState (rule.init), got {type(state).__name__}")
        td_shapes, ip_shapes = self._expected_shapes(net)
        if self.top_down == "random":
            check_state_shapes(tuple(state.top_down), td_shapes, "state.top_down")
        elif len(state.top_down) != net.depth - 1:
            raise ValueError(f"state.top_down: expected {net.depth - 1} entries, got {len(state.top_down)}")
        check_state_shapes(tuple(state.pi), td_shapes, "state.pi")
        check_state_shapes(tuple(state.ip), ip_shapes, "state.ip")
        mats = [m for m in tuple(state.top_down) + tuple(state.pi) + tuple(state.ip) if m is not None]
        xp = namespace(net.weights[0], *mats)
        for m in mats:
            if m.dtype != net.dtype:
                raise TypeError(f"state: expected dtype {net.dtype} (as the network), got {m.dtype}")
            check_finite(xp, m, "state")

    # --- the face ---------------------------------------------------------------------------

    def init(self, net, seed=0) -> MicrocircuitState:
        """Top-down weights (``random``: drawn from ``seed``) and lateral weights
        (``self_predicting``: spec §1.5; ``random``: ``N(0, lateral_scale^2 / fan_in)``)."""
        self._check_net(net)
        gen = _rng(seed)
        s, N, xp, dt, dev = net.sizes, net.depth, net.xp, net.dtype, device_of(net.weights[0])
        if self.top_down == "random":
            td = tuple(from_numpy(gen.standard_normal((s[k], s[k + 1])) * self.feedback_scale / math.sqrt(s[k + 1]),
                                  xp, dt, dev) for k in range(1, N))
            eff_td = td
        else:
            td = (None,) * (N - 1)
            eff_td = _top_down(self, net, None)
        if self.lateral_init == "self_predicting" or self.lateral == "ideal":
            pi, ip = self_predicting(self, net, eff_td)
        else:
            pi = tuple(from_numpy(gen.standard_normal((s[k], s[k + 1])) * self.lateral_scale / math.sqrt(s[k + 1]),
                                  xp, dt, dev) for k in range(1, N))
            ip = tuple(from_numpy(gen.standard_normal((s[k + 1], s[k])) * self.lateral_scale / math.sqrt(s[k]),
                                  xp, dt, dev) for k in range(1, N))
        return MicrocircuitState(td, pi, ip)

    def _prepared_state(self, net, state, top_down=None):
        self.check_state(net, state)
        if self.lateral == "ideal":
            pi, ip = self_predicting(self, net, _top_down(self, net, state) if top_down is None else top_down)
            state = replace(state, pi=pi, ip=ip)
        return state

    def _solve(self, net, state, x, y, prepared: bool = False, max_iter: Optional[int] = None, **reuse):
        """The steady state, checked; ``prepared``: ``state`` came from :meth:`_prepared_state` (with
        ``lateral="ideal"`` its lateral weights are then the self-predicting ones, which the sweeps exploit)."""
        pot = steady_state(self, net, state, x, y, max_iter=max_iter,
                           self_predicting=prepared and self.lateral == "ideal", **reuse)
        # accepted residual: 1e-8 relative in float64, 1e3 ulps in float32 (whose floor is ~1e-6)
        accept = 1e-8 if x.dtype == net.xp.float64 else 1e3 * 1.1920928955078125e-07
        if not math.isfinite(pot.residual) or pot.residual > accept * max(1.0, _max_abs(net.xp, pot.uP[1:])):
            raise ValueError(f"steady state did not converge (residual {pot.residual:.3g} after "
                             f"{pot.iterations} iterations, target {'on' if y is not None else 'off'}): no stable "
                             "fixed point for these weights/conductances; reduce the weights or raise max_iter")
        return pot

    def free_state(self, net, state, x) -> Potentials:
        """The steady state without target (the network's prediction is ``uP[N]``)."""
        self._check_net(net)
        net.check_input(x)
        return self._solve(net, self._prepared_state(net, state), x, None, prepared=True)

    def predict(self, net, state, x):
        """The microcircuit's prediction: the output potential ``u^P_N`` of the free steady state.
        Equals ``net(x)`` in the self-predicting state (``lateral="ideal"``); with learned lateral
        weights it is what the circuit actually outputs (``refimpl.train`` evaluates with it)."""
        return self.free_state(net, state, x).uP[net.depth]

    def nudged_state(self, net, state, x, y) -> Potentials:
        """The steady state with the output nudged towards ``y``."""
        self._check_net(net)
        _, y = check_batch(net, x, y, "mse")
        return self._solve(net, self._prepared_state(net, state), x, y, prepared=True)

    def updates(self, net, state, x, y):
        """Bottom-up plasticity at the nudged steady state, in gradient convention and BP's scale:

            dW[k-1] = -E_k^T r_{k-1} / (B alpha_k lam_out),   E_k = rho_k(U^P_k) - rho_k(c_k V_B,k),
            db = 0,

        ``r_{k-1}`` the nudged presynaptic rates (``r_0 = x``); Sacramento et al. 2018, bottom-up rule
        (Urbanczik & Senn 2014) at the steady state of the SM. ``record["dW_paper"]`` is the same
        update at the paper's scale (module docstring). Returns the state used (for
        ``lateral="ideal"``: the self-predicting lateral weights of ``net``); raises ``ValueError``
        when the steady state is not reached (no stable fixed point)."""
        self._check_net(net)
        xp, y = check_batch(net, x, y, "mse")
        td = _top_down(self, net, state)  # once per step: the solves, the state and the record share it
        state = self._prepared_state(net, state, td)
        N, B = net.depth, x.shape[0]
        trace = net.forward(x)  # the start of both phases
        nudged = self._solve(net, state, x, y, prepared=True, top_down=td, trace=trace)
        rho = _rates(self, net)
        r = nudged.rates if nudged.rates is not None else [x] + [rho[k](nudged.uP[k]) for k in range(1, N)]
        alpha = self.alpha(N)
        dW_paper = []
        for k in range(1, N + 1):
            g = nudged.e[k].T @ r[k - 1]
            g /= -B  # -(E_k^T r_{k-1}) / B, in place on the product
            dW_paper.append(g)
        dW_paper = tuple(dW_paper)
        dW = tuple(dW_paper[k - 1] / (alpha[k - 1] * self.lam_out) for k in range(1, N + 1))
        db = tuple(xp.zeros_like(b) for b in net.biases)
        # The free phase is not needed for the update, only for the record and the loss. With the
        # ideal lateral weights its fixed point is the feed-forward pass (theorem
        # microcircuit.self_predicting_silence: v_A = 0, u_k = c_k v_B,k): one evaluation of the map
        # there (max_iter=0) gives its potentials and residual, checked like any solve. Learned
        # lateral weights: solved.
        free = self._solve(net, state, x, None, prepared=True, max_iter=0 if self.lateral == "ideal" else None,
                           top_down=td, trace=trace)
        loss = _losses.get("mse").value(free.uP[N], y)
        record = {"nudged": nudged, "free": free, "errors": nudged.e, "v_apical": nudged.vA,
                  "u_inter": nudged.uI, "u_pyr": nudged.uP, "dW_paper": dW_paper, "alpha": alpha,
                  "lam_out": self.lam_out, "loss": loss, "residual": nudged.residual,
                  "top_down": td}
        return Updates(dW, db, record), state

    def feedback_updates(self, net, state, x, y=None):
        """Gradient-convention lateral updates at the free steady state (``y`` unused: lateral
        plasticity is judged without target), ``(dPI, dIP)`` per hidden layer:
        ``dPI_k = V_A,k^T rho(U^I_k) / B`` (= gradient of ``<||v_A||^2>/2`` with rates fixed) and
        ``dIP_k = -(rho(U^I_k) - rho(Vhat^I_k))^T r_k / B``. Returns ``(dPI, dIP, potentials)``."""
        self._check_net(net)
        net.check_input(x)
        self.check_state(net, state)
        pot = self._solve(net, state, x, None)
        return lateral_updates(self, net, pot) + (pot,)

    def train_feedback(self, net, state, x, y=None):
        """``lateral="ideal"``: the self-predicting lateral weights of ``net``; ``"plastic"``:
        ``lateral_steps`` steps ``PI <- PI - eta_pi dPI``, ``IP <- IP - eta_ip dIP`` at the free steady state."""
        self._check_net(net)
        if self.lateral == "ideal":
            return self._prepared_state(net, state)
        self.check_state(net, state)
        if self.eta_pi == 0 and self.eta_ip == 0:
            return state  # nothing learns: the state is returned as is (no solves)
        for _ in range(self.lateral_steps):
            dPI, dIP, _ = self.feedback_updates(net, state, x)
            state = replace(state, pi=tuple(p - self.eta_pi * d for p, d in zip(state.pi, dPI)),
                            ip=tuple(p - self.eta_ip * d for p, d in zip(state.ip, dIP)))
        return state


def lateral_updates(rule, net, pot: Potentials) -> tuple:
    """``(dPI, dIP)`` in gradient convention at the potentials ``pot`` (see ``feedback_updates``)."""
    N = net.depth
    rho = _rates(rule, net)
    B = pot.uP[0].shape[0]
    dPI = tuple(pot.vA[k].T @ rho[k + 1](pot.uI[k]) / B for k in range(1, N))
    dIP = tuple(-((rho[k + 1](pot.uI[k]) - rho[k + 1](pot.vI_hat[k])).T @ rho[k](pot.uP[k])) / B
                for k in range(1, N))
    return dPI, dIP
