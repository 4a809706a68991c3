r"""Feedback alignment (FA), direct feedback alignment (DFA) and sign symmetry (uSF, brSF, frSF).

All five rules share BP's forward pass, its output delta and its weight update; only the matrices
that carry the error to the hidden layers differ. In refimpl's batch-row form (DESIGN.md, shapes
of ``torch.nn.Linear``), with ``e = dL/dh_L`` of the batch-mean loss (:mod:`refimpl.losses`):

    delta_L = e * f_L'(a_L)                                       output delta (all rules)
    BP   delta_l = (delta_{l+1} @ W_{l+1})   * f_l'(a_l)
    FA   delta_l = (delta_{l+1} @ B[l])      * f_l'(a_l)          B[l]   shape of W_{l+1} = W[l]
    DFA  delta_l = (delta_L     @ B[l-1])    * f_l'(a_l)          B[l-1] shape (n_L, n_l)
    uSF  B[l] = s_{l+1} * sign(W[l])                              recomputed from the current W
    brSF B[l] = |M[l]| (*) sign(W[l]),  M redrawn every call of ``updates`` (every mini-batch)
    frSF B[l] = |M[l]| (*) sign(W[l]),  M drawn once by ``init``
    dW_l = delta_l^T @ h_{l-1},   db_l = sum_b delta_l[b]                       (all rules)

``l = 1..L-1`` for the hidden deltas; per-layer tuples are indexed from 0 (``B[i]`` belongs to
layer ``i+1``, as ``net.weights[i]``). The updates are in gradient convention (what BioTorch's
custom autograd functions write into ``.grad``; ``W <- W - lr * dW`` descends) and carry the
batch mean through ``e`` (spec pepita_fa.md §0 puts the 1/B into ``dW``; the products are equal).

Convolutional layers (:mod:`refimpl.layers`): the same lines with the layer operations,
``delta @ B[l]`` becoming ``transpose_{l+1}(B[l], delta_{l+1})`` (the transposed convolution with the
kernel ``B[l]`` of ``W[l]``'s shape ``(out, in, kh, kw)``: BioTorch's conv FA,
``biotorch/autograd/fa/conv.py``, ``grad_input = conv2d_input(input.shape, weight_backward,
grad_output, stride, padding)``), followed by the transpose of the layer's pooling; sign symmetry
takes signs and magnitudes entry-wise on kernels; fans of kernels are torch's (``in*kh*kw``,
``out*kh*kw``). DFA's ``B[i]`` has shape ``(n_L, C*H*W)`` of layer ``i+1``'s pre-activation
``a_{i+1}`` (before pooling; torch flatten order), and the hidden delta is
``reshape(e_L @ B[i], a_{i+1}.shape) * f'(a_{i+1})`` (BioTorch ``layers/dfa/conv.py`` projects the
output error the same way onto the conv output).

Sources:

* FA: Lillicrap, Cownden, Tweed & Akerman, "Random synaptic feedback weights support error
  backpropagation for deep learning", Nat. Commun. 7:13276 (2016); spec §2 table, row FA.
* DFA: Nøkland, "Direct feedback alignment provides learning in deep neural networks",
  NeurIPS 2016, eq. for ``delta a_k = (B_k e) (*) f'(a_k)`` with ``e = dJ/da_y`` the error at the
  output *pre-activation*; spec §0 (``Δ_l = D_l (*) (E @ B_l.T)``) and §2 table, row DFA.
* Sign symmetry: Liao, Leibo & Poggio, "How important is weight symmetry in backpropagation?",
  AAAI 2016 (arXiv 1510.05067); uSF's scale from Xiao, Chen, Liao & Poggio, arXiv 1811.03567;
  spec §2 table rows uSF/brSF/frSF.
* BioTorch (Sanfiz & Akrout, arXiv 2108.13446; ``jsalbert/biotorch``,
  ``biotorch/layers/fa_constructor/linear.py``, ``biotorch/layers/dfa/linear.py``,
  ``biotorch/layers/metrics.py``): mode strings ``"fa" | "dfa" | "usf" | "brsf" | "frsf"``,
  the initialisations of ``layer_config["options"]["init"]``: ``"xavier"`` (default) and the
  PyTorch default (here ``"kaiming"``), our ``feedback_init`` (it sets only ``B``: the network is
  given), and the metrics ``compute_alignment`` / ``compute_weight_ratio`` (:func:`feedback_angles`,
  :func:`weight_ratios`).

Storage conventions (a user holding the same ``W`` and ``B`` reproduces the updates exactly with
a torch custom ``autograd.Function`` whose backward returns ``grad_output @ B`` for the input and
``grad_output^T @ input`` for the weight; tests/rules/test_feedback_alignment.py does this):

* FA and sign symmetry store ``B[i]`` in the shape of ``W[i]`` = BioTorch's ``weight_backward``
  (spec §2: our ``B[i]`` is the transpose of the paper's ``B_{i+1}``). ``B[0]`` exists, is drawn
  and reported by the metrics, but never enters an update (nothing propagates below layer 1),
  exactly like BioTorch's first layer.
* DFA stores ``B[i]`` with shape ``(n_L, n_{i+1})`` = BioTorch's ``weight_dfa`` of layer ``i+2``
  (BioTorch's layer ``l`` owns the matrix that produces the gradient of its *input*, ``h_{l-1}``).
  ``B[L-1]`` has shape ``(n_L, n_L)``; it is the identity and is never used: the output layer
  always gets the true output delta ``delta_L = e_L = e_L @ I`` (DESIGN.md's hidden delta
  ``(e @ B[i]) * f'(a_{i+1})`` is for ``i < L-1``; the output layer's ``f_L'`` is already inside
  ``e_L`` and is not applied again). The error that DFA broadcasts is the *output delta*
  ``e_L = delta_L = dL/da_L`` (Nøkland's ``e``; for the usual linear output with mse or softmax-ce
  it is ``dL/dh_L``, BioTorch's ``loss_gradient`` of the network output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np  # host-side random draws only (backend.rng); array math goes through xp

from .. import losses as _losses
from .. import metrics as _metrics
from ..backend import namespace, rng as _rng, from_numpy, device_of, check_finite
from .base import Updates, check_batch, check_state_shapes
from .bp import backward, weight_gradients

__all__ = ["FA", "DFA", "SignSymmetry", "FAState", "DFAState", "SignSymmetryState", "MODES", "INITS",
           "fan_in_fan_out", "draw_feedback", "usf_scale", "feedback_seed", "brsf_seed", "product_feedback", "feedback_angles",
           "weight_ratios", "update_angles", "alignment"]

#: BioTorch's mode strings (``BioModule(module, mode=...)``) that this module implements.
MODES = ("fa", "dfa", "usf", "brsf", "frsf")
#: Feedback initialisations: BioTorch's two (``"xavier"``; any other value means the PyTorch
#: default, ``kaiming_uniform_(a=sqrt(5))``, called ``"kaiming"`` here) and ``"uniform"``
#: (``U(-scale, scale)``, e.g. Lillicrap et al.'s ``B ~ U[-0.5, 0.5]``).
INITS = ("xavier", "kaiming", "uniform")
SIGN_MODES = ("usf", "brsf", "frsf")


# --- initialisation ----------------------------------------------------------------------------

def fan_in_fan_out(shape) -> tuple:
    """``(fan_in, fan_out) = (shape[1], shape[0])`` of a stored ``(rows, cols)`` matrix, and
    ``(in*kh*kw, out*kh*kw)`` of a conv kernel ``(out, in, kh, kw)``, as
    ``torch.nn.init._calculate_fan_in_and_fan_out`` computes them (BioTorch applies it to
    ``weight_backward`` and ``weight_dfa`` in their stored shapes)."""
    receptive = int(math.prod(shape[2:])) if len(shape) > 2 else 1
    return int(shape[1]) * receptive, int(shape[0]) * receptive


def _check_init(init: str, scale: Optional[float]) -> None:
    if init not in INITS:
        raise ValueError(f"feedback_init: expected one of {INITS}, got {init!r}")
    if init == "uniform":
        if isinstance(scale, bool) or not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale: feedback_init='uniform' needs a finite scale > 0 (U(-scale, scale)), "
                             f"got {scale!r}")
    elif scale is not None:
        raise ValueError(f"scale: only used with feedback_init='uniform', got scale={scale!r} with "
                         f"feedback_init={init!r}")


def _bound(shape, init: str, scale: Optional[float]) -> float:
    fan_in, fan_out = fan_in_fan_out(shape)
    if init == "xavier":
        return math.sqrt(6.0 / (fan_in + fan_out))
    if init == "kaiming":
        return 1.0 / math.sqrt(fan_in)
    return float(scale)


def draw_feedback(gen: np.random.Generator, shape, init: str = "xavier", scale: Optional[float] = None) -> np.ndarray:
    """One host float64 matrix of ``shape`` drawn by ``init``:

    * ``"xavier"``: ``U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))`` (``xavier_uniform_``);
    * ``"kaiming"``: ``U(-a, a)``, ``a = 1 / sqrt(fan_in)`` (``kaiming_uniform_(a=sqrt(5))``,
      PyTorch's default for ``nn.Linear``: gain ``sqrt(2 / (1 + 5))`` times ``sqrt(3 / fan_in)``);
    * ``"uniform"``: ``U(-scale, scale)``.

    Fans as :func:`fan_in_fan_out`.
    """
    _check_init(init, scale)
    a = _bound(shape, init, scale)
    return gen.uniform(-a, a, size=tuple(shape))


def usf_scale(shape, init: str = "xavier", scale: Optional[float] = None) -> float:
    """uSF's scale ``s`` for a weight of ``shape``: the standard deviation of the initialisation
    ``init`` (BioTorch's ``scaling_factor``, after Xiao et al. 2018), i.e. ``bound / sqrt(3)`` of
    :func:`draw_feedback`'s uniform law: ``sqrt(2 / (fan_in + fan_out))`` for ``"xavier"``,
    ``1 / sqrt(3 fan_in)`` for ``"kaiming"``, ``scale / sqrt(3)`` for ``"uniform"``."""
    _check_init(init, scale)
    fan_in, fan_out = fan_in_fan_out(shape)
    if init == "xavier":  # BioTorch: math.sqrt(2.0 / float(fan_in + fan_out))
        return math.sqrt(2.0 / (fan_in + fan_out))
    if init == "kaiming":  # BioTorch: 1 / math.sqrt(3 * fan_in)
        return 1.0 / math.sqrt(3.0 * fan_in)
    return float(scale) / math.sqrt(3.0)


#: One stream per purpose (``feedback_seed``): rule.init(net, seed=s) never reuses the stream of
#: ``Network.init(seed=s)`` nor that of another rule.
_STREAMS = {"fa": 1, "dfa": 2, "frsf": 3, "brsf": 4}


def feedback_seed(seed: int, stream: str, step: int = 0) -> np.random.SeedSequence:
    """The host seed of the feedback draws: ``SeedSequence(seed, spawn_key=(k, step))`` with ``k``
    1, 2, 3, 4 for ``"fa"``, ``"dfa"``, ``"frsf"``, ``"brsf"``.

    Why not ``backend.rng(seed)``: ``Network.init(seed=s)`` draws its xavier weights from exactly
    that generator, so FA's xavier ``B`` drawn with the same ``s`` would *be* ``W`` and FA would
    silently be BP. A spawn key gives an independent stream per purpose and per brSF step (a plain
    ``SeedSequence([seed, 0])`` equals ``SeedSequence(seed)``: trailing zeros do not change it).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed: expected a non-negative int, got {seed!r}")
    return np.random.SeedSequence(int(seed), spawn_key=(_STREAMS[stream], int(step)))


def _to_net(a: np.ndarray, net):
    return from_numpy(a, net.xp, net.dtype, device_of(net.weights[0]))


def _check_feedback(net, mats, expected_shapes, name: str) -> None:
    """Shapes, namespace, dtype and finiteness of user-settable feedback matrices."""
    if mats is None or isinstance(mats, (str, bytes)) or not hasattr(mats, "__len__"):
        raise TypeError(f"{name}: expected a tuple of {len(expected_shapes)} arrays, got {type(mats).__name__}")
    check_state_shapes(tuple(mats), expected_shapes, name)
    labels = tuple(f"{name}[{i}]" for i in range(len(mats)))
    xp = namespace(net.weights[0], *mats, names=("the network's weights",) + labels)
    for lab, m in zip(labels, mats):
        if m.dtype != net.dtype:
            raise TypeError(f"{lab}: expected dtype {net.dtype} (as the network), got {m.dtype}; "
                            "dtypes are never mixed silently, cast explicitly")
        check_finite(xp, m, lab)


def _state_check(state, cls, rule: str):
    if not isinstance(state, cls):
        raise TypeError(f"state: expected a {cls.__name__} (from {rule}.init(net, seed)), got {type(state).__name__}")




def _feedback_updates(net, xp, x, y, loss, B, extra=None):
    """BP's pass with ``B`` in place of the forward weights in the backward recursion."""
    trace = net.forward(x)
    e = loss.grad(trace.h[-1], y)
    deltas = backward(net, trace, e, feedback=B)
    dW, db = weight_gradients(net, trace, deltas)
    record = {"trace": trace, "loss": loss.value(trace.h[-1], y), "output_grad": e, "delta": deltas, "B": tuple(B)}
    if extra:
        record.update(extra)
    return Updates(dW, db, record)


# --- FA ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FAState:
    """FA's fixed feedback: ``B[i]`` has the shape of ``W[i]`` (BioTorch's ``weight_backward``);
    ``B[0]`` is unused by the updates. Set your own with ``dataclasses.replace(state, B=...)``."""

    B: tuple


@dataclass(frozen=True)
class FA:
    r"""Feedback alignment (Lillicrap et al. 2016; BioTorch mode ``"fa"``).

    ``delta_l = (delta_{l+1} @ B[l]) * f_l'(a_l)``, ``l = L-1..1``, with fixed random ``B[l]`` in
    the shape of ``W[l]`` (= ``W_{l+1}``) in place of BP's ``W_{l+1}``; output delta
    ``delta_L = e * f_L'(a_L)``, ``dW_l = delta_l^T h_{l-1}``, ``db_l = sum_b delta_l`` as BP
    (spec pepita_fa.md §0 and §2; BioTorch ``autograd/fa/linear.py``: grad_input =
    grad_output @ weight_backward). With ``B = net.weights`` the updates are BP's exactly
    (theorem ``feedback_alignment.fa_equals_bp_when_B_is_W``); the last layer's update is BP's
    for any ``B`` (``feedback_alignment.fa_last_layer_is_bp``).

    Hyper-parameters: ``loss`` (``"mse"`` or ``"ce"``); ``feedback_init`` of ``B``
    (:data:`INITS`; BioTorch's default ``"xavier"``); ``scale`` for ``feedback_init="uniform"``
    (Lillicrap et al.'s linear experiment: ``scale=0.5``).

    ``record``: ``trace``, ``loss``, ``output_grad`` (``dL/dh_L``), ``delta`` (tuple indexed by
    layer, ``delta[l]`` the FA delta of layer ``l``, ``delta[0] = None``), ``B`` (the feedback used).
    """

    loss: str = "mse"
    feedback_init: str = "xavier"
    scale: Optional[float] = None

    def __post_init__(self):
        _losses.get(self.loss)
        _check_init(self.feedback_init, self.scale)

    def init(self, net, seed=0) -> FAState:
        """``B[i]`` drawn by ``feedback_init`` in the shape of ``W[i]``, layers in order, from
        ``backend.rng(feedback_seed(seed, "fa"))`` on the host (the same numbers on every backend;
        never the stream of ``Network.init(seed=seed)``)."""
        gen = _rng(feedback_seed(seed, "fa"))
        return FAState(tuple(_to_net(draw_feedback(gen, tuple(W.shape), self.feedback_init, self.scale), net)
                             for W in net.weights))

    def feedback(self, net, state) -> tuple:
        """The matrices the next :meth:`updates` call uses (``state.B``, validated)."""
        _state_check(state, FAState, "FA")
        _check_feedback(net, state.B, [tuple(W.shape) for W in net.weights], "B")
        return tuple(state.B)

    def updates(self, net, state, x, y):
        """``(Updates, state)``; the state is unchanged (B is fixed)."""
        loss = _losses.get(self.loss)
        xp, y = check_batch(net, x, y, loss)
        B = self.feedback(net, state)
        return _feedback_updates(net, xp, x, y, loss, B), state


# --- DFA ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DFAState:
    """DFA's fixed feedback: ``B[i]`` has shape ``(n_L, n_{i+1})`` (BioTorch's ``weight_dfa`` of
    layer ``i+2``); ``B[L-1]`` is the ``(n_L, n_L)`` identity and is unused (the output layer gets
    the true output delta)."""

    B: tuple


def _dfa_shapes(net) -> list:
    """``(n_L, n_l)`` with ``n_l`` the number of units of ``a_l`` (``C*H*W`` of a conv layer's
    output *before* its pooling: DFA's delta is ``dL/da_l``); ``(n_L, n_L)`` for the output."""
    n_L = net.sizes[-1]
    return [(n_L, int(math.prod(lay.out_shape))) for lay in net.layers]


@dataclass(frozen=True)
class DFA:
    r"""Direct feedback alignment (Nøkland 2016; BioTorch mode ``"dfa"``).

    The output delta ``e_L = delta_L = e * f_L'(a_L)`` (``e = dL/dh_L``; Nøkland's error
    ``dJ/da_y`` at the output pre-activation) is sent to every hidden layer directly:

        delta_l = (e_L @ B[l-1]) * f_l'(a_l),   l = 1..L-1,     B[l-1]: (n_L, n_l)
        delta_L = e_L  (B[L-1] = I is not used),   dW_l = delta_l^T h_{l-1},   db_l = sum_b delta_l

    (spec pepita_fa.md §0: ``Δ_l = D_l ⊙ (E @ B_l.T)`` with ``B_l = B[l-1].T``; BioTorch
    ``layers/dfa/linear.py``: grad_input := loss_gradient @ weight_dfa, then the activation
    derivative by autograd). BP exactly for one hidden layer with ``B[0] = W_2``
    (``feedback_alignment.dfa_equals_bp_one_hidden_layer``) and for linear hidden layers with the
    product feedback of :func:`product_feedback`
    (``feedback_alignment.dfa_equals_bp_linear_product_feedback``).

    Hyper-parameters: ``loss``, ``feedback_init`` (:data:`INITS`, fans of the stored
    ``(n_L, n_l)`` shape as BioTorch's ``xavier_uniform_(weight_dfa)``), ``scale``.

    ``record``: ``trace``, ``loss``, ``output_grad`` (``dL/dh_L``), ``output_delta`` (``e_L``),
    ``delta`` (tuple indexed by layer, ``delta[0] = None``), ``B``.
    """

    loss: str = "mse"
    feedback_init: str = "xavier"
    scale: Optional[float] = None

    def __post_init__(self):
        _losses.get(self.loss)
        _check_init(self.feedback_init, self.scale)

    def init(self, net, seed=0) -> DFAState:
        """``B[i]``, ``i < L-1``, drawn by ``feedback_init`` in shape ``(n_L, n_{i+1})``, layers in
        order, from ``backend.rng(feedback_seed(seed, "dfa"))``; ``B[L-1] = I``."""
        gen = _rng(feedback_seed(seed, "dfa"))
        shapes = _dfa_shapes(net)
        xp = net.xp
        B = [_to_net(draw_feedback(gen, s, self.feedback_init, self.scale), net) for s in shapes[:-1]]
        B.append(xp.eye(shapes[-1][0], dtype=net.dtype, device=device_of(net.weights[0])))
        return DFAState(tuple(B))

    def feedback(self, net, state) -> tuple:
        """The matrices the next :meth:`updates` call uses (``state.B``, validated)."""
        _state_check(state, DFAState, "DFA")
        _check_feedback(net, state.B, _dfa_shapes(net), "B")
        return tuple(state.B)

    def updates(self, net, state, x, y):
        """``(Updates, state)``; the state is unchanged (B is fixed)."""
        loss = _losses.get(self.loss)
        xp, y = check_batch(net, x, y, loss)
        B = self.feedback(net, state)
        L = net.depth
        trace = net.forward(x)
        e = loss.grad(trace.h[-1], y)
        e_L = e * net.activation(L).df(trace.a[L])
        deltas = [None] * (L + 1)
        deltas[L] = e_L
        for l in range(1, L):
            # (e_L @ B[l-1]) in a_l's own shape (torch flatten order for a conv layer), times f_l'(a_l)
            deltas[l] = xp.reshape(e_L @ B[l - 1], trace.a[l].shape) * net.activation(l).df(trace.a[l])
        deltas = tuple(deltas)
        dW, db = weight_gradients(net, trace, deltas)
        record = {"trace": trace, "loss": loss.value(trace.h[-1], y), "output_grad": e, "output_delta": e_L,
                  "delta": deltas, "B": B}
        return Updates(dW, db, record), state


def product_feedback(net) -> tuple:
    """DFA feedback equal to BP's for linear hidden layers: ``B[i] = W_L @ W_{L-1} @ ... @ W_{i+2}``
    (shape ``(n_L, n_{i+1})``), ``B[L-1] = I``.

    Spec pepita_fa.md §3a-2: ``B_l := (W_L W_{L-1} ... W_{l+1})^T`` in column form. Then
    ``e_L @ B[l-1] = delta_L @ W_L @ ... @ W_{l+1}``, which is BP's ``delta_l / f_l'(a_l)`` exactly
    when ``f_{l+1}, ..., f_{L-1}`` are linear (layer ``l``'s own activation and the output
    activation are arbitrary).
    """
    net.require_dense("product_feedback (a product of dense weight matrices)")
    L = net.depth
    xp = net.xp
    n_L = net.sizes[-1]
    out = [None] * L
    P = xp.eye(n_L, dtype=net.dtype, device=device_of(net.weights[0]))
    out[L - 1] = P
    for i in range(L - 2, -1, -1):
        P = P @ net.weights[i + 1]
        out[i] = P
    return tuple(out)


# --- sign symmetry -----------------------------------------------------------------------------

def brsf_seed(seed: int, step: int) -> np.random.SeedSequence:
    """The seed of brSF's magnitudes for update number ``step``:
    ``feedback_seed(seed, "brsf", step)`` (an independent stream per step)."""
    return feedback_seed(seed, "brsf", step)


@dataclass(frozen=True)
class SignSymmetryState:
    """Sign-symmetry state.

    * ``M``: frSF's fixed magnitudes (shape of each ``W[i]``, drawn once by ``init``; ``|M|`` is
      used) or ``None`` (uSF, brSF);
    * ``seed``, ``step``: brSF draws its magnitudes for the update number ``step`` from
      ``backend.rng(brsf_seed(seed, step))`` (:func:`feedback_seed`, an independent stream per
      step); every :meth:`SignSymmetry.updates` call
      returns the state with ``step + 1`` (for every mode, so the count is the number of updates).
    """

    M: Optional[tuple] = None
    seed: int = 0
    step: int = 0


@dataclass(frozen=True)
class SignSymmetry:
    r"""Sign-concordant feedback (Liao, Leibo & Poggio 2016; BioTorch modes ``"usf"``, ``"brsf"``,
    ``"frsf"``): FA's backward pass with a feedback matrix that has the sign of the *current*
    forward weight,

        usf:   B[i] = s_i * sign(W[i]),       s_i = std of ``feedback_init`` for W[i]'s shape
               (:func:`usf_scale`: sqrt(2/(fan_in+fan_out)) for xavier, 1/sqrt(3 fan_in) for kaiming)
        brsf:  B[i] = |M_t[i]| (*) sign(W[i]), M_t drawn by ``feedback_init`` for every update t
        frsf:  B[i] = |M[i]| (*) sign(W[i]),   M drawn by ``feedback_init`` once, in ``init``
        delta_l = (delta_{l+1} @ B[l]) * f_l'(a_l)        (then as FA / BP)

    (spec pepita_fa.md §2, rows uSF/brSF/frSF; BioTorch ``layers/fa_constructor/linear.py``:
    ``scaling_factor * sign(weight)``, ``abs(xavier_uniform_(wb)) * sign(weight)`` drawn in every
    forward pass, ``abs(weight_backward) * sign(weight)`` with ``weight_backward`` drawn at
    construction). ``sign(0) = 0``. Theorems: ``feedback_alignment.frsf_equals_bp_with_magnitudes_of_W``
    (M = |W| gives B = W), ``feedback_alignment.usf_equals_bp_with_equal_magnitudes``
    (``|W_ij| = s_i`` gives B = W).

    ``record``: as :class:`FA`, plus ``step`` (the update number whose brSF draw was used).
    """

    mode: str = "usf"
    loss: str = "mse"
    feedback_init: str = "xavier"
    scale: Optional[float] = None

    def __post_init__(self):
        if self.mode not in SIGN_MODES:
            raise ValueError(f"mode: expected one of {SIGN_MODES} (BioTorch's sign-symmetry modes), got {self.mode!r}")
        _losses.get(self.loss)
        _check_init(self.feedback_init, self.scale)

    def init(self, net, seed=0) -> SignSymmetryState:
        """frSF: ``M[i] = |draw|`` by ``feedback_init`` from ``backend.rng(feedback_seed(seed,
        "frsf"))``; brSF keeps ``seed`` for its per-update draws; uSF draws nothing."""
        feedback_seed(seed, "frsf")  # validates seed
        M = None
        if self.mode == "frsf":
            gen = _rng(feedback_seed(seed, "frsf"))
            M = tuple(_to_net(np.abs(draw_feedback(gen, tuple(W.shape), self.feedback_init, self.scale)), net)
                      for W in net.weights)
        return SignSymmetryState(M=M, seed=int(seed), step=0)

    def feedback(self, net, state) -> tuple:
        """The matrices ``B[i]`` (shape of ``W[i]``) that the next :meth:`updates` call uses."""
        _state_check(state, SignSymmetryState, "SignSymmetry")
        for name in ("seed", "step"):
            v = getattr(state, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"state.{name}: expected a non-negative int, got {v!r}")
        xp = net.xp
        shapes = [tuple(W.shape) for W in net.weights]
        if self.mode == "usf":
            return tuple(usf_scale(s, self.feedback_init, self.scale) * xp.sign(W)
                         for s, W in zip(shapes, net.weights))
        if self.mode == "brsf":
            gen = _rng(brsf_seed(state.seed, state.step))
            M = [_to_net(draw_feedback(gen, s, self.feedback_init, self.scale), net) for s in shapes]
        else:
            _check_feedback(net, state.M, shapes, "M")
            M = state.M
        return tuple(xp.abs(m) * xp.sign(W) for m, W in zip(M, net.weights))

    def updates(self, net, state, x, y):
        """``(Updates, state)`` with ``state.step`` incremented."""
        loss = _losses.get(self.loss)
        xp, y = check_batch(net, x, y, loss)
        B = self.feedback(net, state)
        upd = _feedback_updates(net, xp, x, y, loss, B, extra={"step": int(state.step)})
        return upd, replace(state, step=int(state.step) + 1)


# --- metrics -----------------------------------------------------------------------------------

def feedback_angles(B, reference) -> tuple:
    """Per-layer angle in degrees between ``vec(B[i])`` and ``vec(reference[i])`` (BioTorch's
    ``compute_alignment``: arccos of the normalised dot product, clipped to [-1, 1];
    :func:`refimpl.metrics.angle`, ``nan`` for a zero matrix)."""
    return _metrics.layer_angles(tuple(B), tuple(reference))


def weight_ratios(B, reference) -> tuple:
    """Per-layer ``||B[i]||_F / ||reference[i]||_F`` (BioTorch's ``compute_weight_ratio``)."""
    if len(B) != len(reference):
        raise ValueError(f"B, reference: expected the same number of layers, got {len(B)} and {len(reference)}")
    return tuple(_metrics.norm_ratio(b, w) for b, w in zip(B, reference))


def _reference(rule, net) -> tuple:
    return product_feedback(net) if isinstance(rule, DFA) else tuple(net.weights)


def update_angles(rule, net, state, x, y) -> tuple:
    """Per-layer angle in degrees between ``rule``'s ``dW`` and BP's (same loss, same batch)."""
    from .bp import BP

    upd, _ = rule.updates(net, state, x, y)
    ref, _ = BP(loss=rule.loss).updates(net, None, x, y)
    return _metrics.layer_angles(upd.dW, ref.dW)


def alignment(rule, net, state, x=None, y=None) -> dict:
    """The alignment metrics users expect, per layer (tuples of length L):

    * ``feedback_angle``: angle (degrees) between the feedback the next update uses
      (``rule.feedback(net, state)``) and the forward matrix it stands in for: ``W[i]`` for FA
      and sign symmetry (BioTorch's ``compute_alignment``); for DFA the product
      ``W_L ... W_{i+2}`` of :func:`product_feedback` (BP's feedback when the hidden layers are
      linear; the last entry compares ``I`` with ``I``).
    * ``norm_ratio``: ``||B[i]|| / ||reference[i]||`` (BioTorch's ``compute_weight_ratio``).
    * ``update_angle`` (only with a batch ``x, y``): angle between the rule's ``dW[i]`` and BP's.

    Entry 0 of FA / sign symmetry (and the last of DFA) concerns a matrix that never enters an
    update; it is reported as BioTorch reports every layer. BioTorch's frSF reports the angle of
    the stored ``|M|`` with ``W``; here it is that of the effective ``|M| (*) sign(W)``.
    """
    B = rule.feedback(net, state)
    ref = _reference(rule, net)
    out = {"feedback_angle": feedback_angles(B, ref), "norm_ratio": weight_ratios(B, ref)}
    if x is not None or y is not None:
        if x is None or y is None:
            raise ValueError("x, y: give both (a batch) for update_angle, or neither")
        out["update_angle"] = update_angles(rule, net, state, x, y)
    return out
