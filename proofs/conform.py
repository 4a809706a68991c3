"""Conformance: check a third party's implementation of a rule against the reference.

The adapter contract (README "Checking your own implementation")::

    impl(weights, biases, activations, x, y, state, **hyper) -> (dW, db)

* ``weights``, ``biases``: lists of NumPy arrays in the instance's dtype (``dtype=``, float64 by
  default), ``weights[i]`` of shape ``(n_{i+1}, n_i)`` (torch.nn.Linear layout) for a dense layer,
  ``(C_out, C_in, kh, kw)`` (torch.nn.Conv2d layout) for a convolutional one; ``biases[i]`` of
  shape ``(n_{i+1},)`` (``(C_out,)``: one per channel);
* ``activations``: list of refimpl activation names (``"tanh"``, ``"leaky_relu(0.2)"``, ...;
  :mod:`proofs.conform_torch` maps them to torch modules, in one place);
* ``x``: ``(B, n_0)`` for a dense network, ``(B, C, H, W)`` (NCHW) for a convolutional one;
  ``y``: ``(B, n_L)`` targets (mse) or integer labels ``(B,)`` (ce);
* ``state``: the rule's state as a dict of NumPy arrays / lists of arrays (e.g. FA's ``{"B": [...]}``),
  *drawn* (not only initialised: :data:`STATE_DRAWS`), plus every random quantity the reference
  draws inside ``updates`` (:data:`HANDED_OVER`), so that an independent implementation can match
  the reference exactly; on a convolutional network (:data:`CONV_STATES`) FA's and the sign
  feedbacks' ``B``/``M`` are kernels in ``W``'s layout, DFA's ``B[i]`` is ``(n_L, C*H'*W')`` over
  layer ``i+1``'s *pre-pooling* units (torch flatten order), PEPITA's ``F`` is ``(n_0, n_L)`` with
  ``n_0 = C*H*W`` and its masks have the pre-pooling shape ``(B, C, H', W')``, the TP family's
  ``Q[i]`` is in ``W[i]``'s own layout (``ConvTranspose2d``'s) and ``c[i]`` is per input channel;
* ``**hyper``: every hyper-parameter of the reference rule *as resolved* (defaults included, drawn
  values where ``hyper`` gives a :class:`Range`); an implementation whose signature has no
  ``**kwargs`` receives the ones it names;
* ``layers`` (only if the signature names it): the network as a list of layer descriptions
  (:func:`layer_specs`), one dict per layer with ``type`` (``"linear"`` or ``"conv2d"``),
  ``activation``, ``spec`` (e.g. ``"conv2d(2->3,k3,s2,p1)+maxpool2"``), ``weight_shape``, ``bias``,
  ``in_shape`` (per-sample input shape), ``out_shape`` (per-sample shape of the pre-activation
  ``a``; for a conv layer before pooling) and ``h_shape`` (what the next layer reads: after
  pooling); a linear layer also has ``in_features``, ``out_features`` and ``flatten`` (True for
  the first linear layer after a conv layer: its input is flattened in torch order,
  ``h.reshape(B, -1)`` of ``(B, C, H, W)``, i.e. ``nn.Flatten()``); a conv layer has
  ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding`` (pairs), ``pool``
  (None or ``{"type": "max"|"avg", "kernel_size": (kh, kw), "stride": (sh, sw)}``, applied after
  the activation, no padding; max pooling routes the gradient to the first maximum of its window)
  and ``keep`` (None: every channel is passed on). :func:`proofs.conform_torch.to_sequential`
  turns them into an ``nn.Sequential``;
* returns per-layer ``dW``, ``db`` (NumPy arrays or torch tensors) in gradient convention: what
  autograd's ``.grad`` would hold for BP (``W <- W - lr * dW`` descends), batch-mean loss.

With ``targets=True`` the implementation returns the targets instead (a list of length ``L + 1``,
``None`` where it has none) and they are compared with ``rule.targets(...)``. With ``feedback=True``
(target-propagation rules: TP, DTP, DRL, LDRL) it returns the feedback updates ``(dQ, dc)`` (lists
of length ``L``, ``None`` where layer ``i+1``'s feedback is not trained), compared with
``rule.feedback_updates(...)``; the noise the reference draws is in ``state["noise"]``
(:data:`HANDED_OVER`).

Precision: the instance is drawn in float64, rounded to ``dtype`` and handed over in ``dtype``; the
reference runs in float64 on the *rounded* values, so the only difference is the implementation's
own arithmetic, judged with the tolerance table's row for ``dtype`` (:mod:`proofs.tolerances`;
float32: rtol 1e-4, atol 1e-5, the reason is written there) unless ``rtol``/``atol`` override it.

Architectures: ``check(..., architectures=("mlp",))`` (default; CLI ``--arch mlp``) draws dense
networks, ``("conv",)`` (``--arch conv``) convolutional ones (:func:`proofs.strategies.draw_conv_network`:
1-3 conv layers with optional 2x2 max/avg pooling, then 1-2 linear layers; images 3-7 pixels a
side, batch <= 6), ``("mlp", "conv")`` (``--arch any``) either. GaitProp and TPInverse get
invertible conv networks instead, with ``outputs`` following the draw (:data:`RULE_INVERTIBLE_CONV`;
their ``layers`` carry ``keep``). Rules without a convolutional
form are refused with one clear error (:data:`NO_CONV`); why every conv draw is valid for the
others is written at :data:`RULE_CONV_NETWORKS`. A counterexample records the architecture
(``input_shape`` and the layer descriptions), so :func:`replay` rebuilds the exact network.

Hypothesis drives the search over networks, batches, states and hyper-parameter ranges; on a
mismatch it shrinks to a minimal counterexample (structure and batch; once a failure is found, a
shrunk example must keep an error of at least ``min(first error, max(1e-3, 100 rtol))`` so that a
slip is not shrunk into something that looks like rounding), which :func:`check` returns with the
expected and received values of the layer where the mismatch enters and, when the difference has a
recognisable form, the slip's name (:func:`diagnose`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

import refimpl as ri
from refimpl.backend import to_numpy, from_numpy
from .strategies import (draw_network, draw_conv_network, draw_batch, ALL_ACTIVATIONS, INVERTIBLE_ACTIVATIONS,
                         ARCHITECTURES)
from .theorem import HypothesisDrawer, Evidence
from .tolerances import tolerance, TOLERANCES

__all__ = ["check", "replay", "replay_details", "format_counterexample", "load_impl", "resolve_rule", "resolved_hyper", "state_to_host", "handed_state",
           "layer_specs", "diagnose", "ConformResult", "Range", "RULE_NETWORKS", "RULE_CONV_NETWORKS", "NO_CONV",
           "CONV_STATES", "STATE_DRAWS", "HANDED_OVER", "check_architectures", "network_from_record",
           "ReferenceRejected", "ReplayRefused", "rule_name", "RULE_INVERTIBLE_CONV"]

#: Networks a rule is defined on (rule class name -> draw_network keyword arguments).
#: ``shared_hidden=True``: one activation drawn for all hidden layers (the microcircuit has one
#: transfer function phi). Without an entry a rule gets any network, and rules with structural
#: requirements (no biases, linear output) rejected every draw.
RULE_NETWORKS = {
    "GaitProp": dict(kind="invertible", activations=INVERTIBLE_ACTIVATIONS, depth=(1, 4)),
    "TPInverse": dict(kind="invertible", activations=INVERTIBLE_ACTIVATIONS, depth=(1, 4)),
    "Microcircuit": dict(depth=(2, 4), output_activations=("linear",), bias=False, shared_hidden=True),
    "CorInfoMax": dict(bias=False),
}

#: Rules conform does not check on convolutional networks (rule class name -> the reason; ``check``
#: with ``architectures`` containing "conv" raises one ValueError naming the rule and the reason).
NO_CONV = {
    "Microcircuit": "the dendritic microcircuit (Sacramento et al. 2018) is defined on dense layers only "
                    "(refimpl's Microcircuit refuses conv networks); use --arch mlp",
    "CorInfoMax": "CorInfoMax (Bozkurt et al. 2024) is defined on dense layers only (refimpl's CorInfoMax refuses "
                  "conv networks); use --arch mlp",
}

#: Rules whose convolutional form needs *invertible* convs (rule class name ->
#: :func:`proofs.gaitprop.draw_invertible_conv` keyword arguments). GAIT-prop and TPInverse send
#: targets down through the exact inverse of layers 2..L, so on ``--arch conv`` they get Dalm et al.
#: (2023)'s structure instead of :func:`proofs.strategies.draw_conv_network`'s: a free first conv
#: (optionally max/avg pooled), one or two invertible convs (square per-patch matrix ``P``,
#: ``C_out = C_in*kh*kw``, condition number <= 4 -- not orthogonal, where ``inv(P).T = P`` would hide
#: a transposed-path slip --, overlapping, tiling or gapped patches, ``keep`` auxiliary channels, no
#: pooling), then a square dense output whose first ``outputs`` units carry the loss. ``outputs``
#: follows the draw: it is set on the reference rule and handed to the implementation with the other
#: resolved hyper-parameters (setting it with ``hyper`` is refused on conv draws); ``y`` is
#: ``(B, outputs)`` (mse) or labels in ``0..outputs-1`` (ce). Activations: GAIT-prop any invertible one
#: (its nudges are small); TPInverse only those whose range is the whole real line (linear,
#: leaky-ReLU), because its full-size targets must stay in the range of every ``f_l``.
#: ``check(..., conv={...})`` passes further keyword arguments (e.g. ``{"weights": "orthogonal"}``,
#: ``{"overlap": True}``, ``{"tiled": True}``).
RULE_INVERTIBLE_CONV = {
    "GaitProp": dict(activations=INVERTIBLE_ACTIVATIONS, weights="invertible"),
    "TPInverse": dict(activations=("linear", "leaky_relu", "leaky_relu(0.2)"), weights="invertible"),
}

#: Convolutional draws per rule (rule class name -> :func:`proofs.strategies.draw_conv_network`
#: keyword arguments; no entry: every conv draw, max and average pooling included). Why no rule
#: below needs a restriction:
#:
#: * BP, FA, SignSymmetry (uSF, brSF, frSF): the only non-smooth conv operation is max pooling,
#:   whose backward routes each window's gradient to its forward argmax. conform's weights, biases
#:   and inputs are continuous, so a window holds two equal maxima only where they are the same
#:   computation (ReLU zeros, windows that read padding only), and there either routing gives the
#:   same gradient (a zero derivative behind both, or no input behind both). The theorem
#:   ``usf_equals_bp_with_equal_magnitudes`` draws no max pooling because it *sets* every
#:   ``|W_ij| = s`` (exact ties in the forward pass, broken differently by two summation orders);
#:   conform's forward weights are Gaussian and uSF's sign feedback enters the backward pass only.
#: * DFA: the hidden delta ``reshape(e_L @ B[i]) * f'(a)`` is formed at the pre-pooling units, so the
#:   pooling enters the forward pass only; ``dfa_equals_bp_one_hidden_layer`` excludes max pooling
#:   because it compares DFA with *BP* (whose feedback through max pooling depends on the argmax),
#:   which conform does not.
#: * PEPITA: the modulated pass has its own argmax; that is part of the rule (the kernel update reads
#:   the pre-pooling units of both passes), and its ties are the measure-zero ones above.
#: * TP, DTP, DRL, L-DRL: the feedback unpools through the argmax of the forward pass that produced
#:   its argument (the clean pass for targets, the noisy pass for g(f(x + eps))): the rule's
#:   definition (refimpl.rules.target_prop), tie-free as above.
#:
#: A float32 instance (``dtype="float32"``) adds one case: two entries of a max-pooling window
#: closer than float32's rounding may be ordered differently by a float32 implementation than by
#: the float64 reference (probability about the window count times 1e-7 per instance).
RULE_CONV_NETWORKS: dict = {}

#: How each rule's handed-over state looks on a convolutional network (state field -> layout).
CONV_STATES = {
    "FA / uSF / frSF / brSF": "B[i] (FA) and M[i] (frSF, brSF's magnitudes) are kernels of W[i]'s shape "
                              "(C_out, C_in, kh, kw); the input gradient is the transposed convolution with "
                              "B[i] in W[i]'s place (torch.nn.grad.conv2d_input)",
    "DFA": "B[i]: (n_L, C*H'*W') over layer i+1's pre-pooling units a_{i+1} (torch flatten order); hidden "
           "delta = reshape(e_L @ B[i], a_{i+1}.shape) * f'(a_{i+1}) (no pooling transpose: B reaches the "
           "units before the pooling)",
    "PEPITA": "F: (n_0, n_L) with n_0 = C*H*W (x_mod = x + sign * reshape(e @ F.T, x.shape)); masks[l]: "
              "(B, C, H', W'), the pre-pooling shape of layer l+1's units",
    "TP, DTP, DRL, LDRL": "Q[i]: W[i]'s own layout (C_out, C_in, kh, kw) for a conv layer (ConvTranspose2d's "
                          "weight: g(y) = conv_transpose(phi(P^T y), Q) cropped to the input size + c), W[i].T's "
                          "shape for a dense one; c[i]: (C_in,) per input channel for a conv layer, (C*H*W,) "
                          "for the dense layer after a conv (its feedback is reshaped to the image)",
}


#: How a state is drawn beyond ``rule.init`` (state class name -> description); every field an
#: implementation must use ranges over its values, so an implementation that ignores one fails.
STATE_DRAWS = {
    "TPState": "feedback biases c[i] ~ N(0, 0.5^2) (init sets them to 0); Q, R as drawn by init",
    "SignSymmetryState": "step ~ U{0..999} (brSF's magnitudes depend on it); frSF's M as drawn by init",
    "PEPITAState": "step ~ U{0..999} (the dropout masks depend on it); F as drawn by init",
    "CorInfoMaxState": "step ~ U{0..999} (the random sign of beta depends on it)",
}

#: What a rule draws inside ``updates`` and conform hands to the implementation in ``state``
#: (rule class name -> description).
HANDED_OVER = {
    "SignSymmetry": "brSF: state['M'] = the magnitudes M_t of this update (brsf_magnitudes(net, seed, step)); "
                    "the feedback is |M[i]| * sign(W[i]) (frSF: M is init's, fixed; uSF: None)",
    "PEPITA": "state['masks'] = the hidden layers' inverted-dropout masks (L-1 arrays (B, n_l) with entries "
              "0 or 1/keep_prob, None entries when keep_prob == 1; a conv layer's have the pre-pooling shape "
              "(B, C, H', W')), shared by both passes",
    "CorInfoMax": "state['signed_beta'] = beta with this batch's random sign (signed_beta(state))",
    "feedback (TP, DTP, DRL, LDRL)": "with feedback=True: state['noise'][i] = the noise of layer i+1's feedback "
                                     "loss (None where not trained; rows replicated `samples` times): standard "
                                     "normal eps for TP/DTP/DRL (the perturbation is sigma * eps), eps ~ N(0, "
                                     "sigma^2) for LDRL, whose second noise eta ~ N(0, sigma^2) is "
                                     "state['noise_eta'][i]",
}


class ReferenceRejected(ValueError):
    """The reference rule rejected a drawn instance (a structural requirement the draw missed):
    a problem of the check's set-up, never blamed on the implementation."""


class ReplayRefused(ValueError):
    """A counterexample is replayed under another rule or other hyper-parameters than it was found
    with (``allow_mismatch=True`` / ``--replay-anyway`` replays it regardless)."""


@dataclass(frozen=True)
class Range:
    """A hyper-parameter drawn per instance from ``[lo, hi]`` (CLI ``--hyper beta=0.01:1``).

    Integers if both ends are ints; reals log-uniform when ``0 < lo`` and ``hi >= 10 lo`` (``log``
    None: automatic), uniform otherwise.
    """

    lo: float
    hi: float
    log: Optional[bool] = None

    def __post_init__(self):
        for nm in ("lo", "hi"):
            v = getattr(self, nm)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"Range.{nm}: expected a finite number, got {v!r}")
        if self.hi < self.lo:
            raise ValueError(f"Range: expected lo <= hi, got {self.lo!r}:{self.hi!r}")

    @property
    def integer(self) -> bool:
        return isinstance(self.lo, int) and isinstance(self.hi, int)

    def draw(self, d):
        if self.integer:
            return d.integer(int(self.lo), int(self.hi))
        log = self.log if self.log is not None else (self.lo > 0 and self.hi >= 10 * self.lo)
        if log:
            return float(math.exp(d.real(math.log(self.lo), math.log(self.hi))))
        return float(d.real(float(self.lo), float(self.hi)))

    def __contains__(self, v) -> bool:
        return isinstance(v, (int, float)) and self.lo <= v <= self.hi

    def __str__(self):
        return f"{self.lo}:{self.hi}"


def resolve_rule(rule, hyper: Optional[dict] = None):
    """A rule instance from an instance, a name or spec (``"fa"``, ``"usf"``, ``"gaitprop:gamma=0.001"``;
    :func:`refimpl.rules.get`), with ``hyper`` applied (:class:`Range` entries set to their lower end)."""
    fixed = {k: (v.lo if isinstance(v, Range) else v) for k, v in dict(hyper or {}).items()}
    return ri.rules.get(rule, **fixed)


def rule_name(rule) -> str:
    """The canonical name of a rule instance (lower-cased class name, non-alphanumerics removed)."""
    return "".join(ch for ch in type(rule).__name__.lower() if ch.isalnum())


def resolved_hyper(rule) -> dict:
    """Every hyper-parameter of a rule instance (its dataclass init fields), defaults included."""
    return {f.name: getattr(rule, f.name) for f in dataclasses.fields(rule) if f.init}


def load_impl(spec) -> Callable:
    """``"package.module:function"`` (or a callable, returned as is)."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"impl: expected 'module:function' or a callable, got {spec!r}")
    mod, fn = spec.split(":", 1)
    obj = importlib.import_module(mod)
    for part in fn.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"impl: {spec!r} is not callable")
    return obj


def _host(v):
    if v is None or isinstance(v, (int, float, str, bool, np.integer, np.floating)):
        return v
    if isinstance(v, (tuple, list)):
        return [_host(a) for a in v]
    if isinstance(v, dict):
        return {k: _host(a) for k, a in v.items()}
    try:
        return to_numpy(v)
    except Exception:
        return v


def state_to_host(state) -> dict:
    """A rule state (frozen dataclass) as a dict of NumPy arrays / lists of arrays."""
    if state is None:
        return {}
    if dataclasses.is_dataclass(state):
        return {f.name: _host(getattr(state, f.name)) for f in dataclasses.fields(state)}
    if isinstance(state, dict):
        return _host(state)
    raise TypeError(f"state: expected a dataclass or dict, got {type(state).__name__}")


def handed_state(rule, net, state, x, feedback=None) -> dict:
    """The state as handed to an implementation: :func:`state_to_host` plus what the rule draws
    inside ``updates`` (:data:`HANDED_OVER`); ``feedback``: the reference's ``FeedbackUpdates``
    (its record holds the noise) when feedback updates are compared."""
    out = state_to_host(state)
    if feedback is not None:
        L = net.depth
        rec = feedback.record
        out["noise"] = [_host(rec[l]["eps"]) if l in rec else None for l in range(1, L + 1)]
        if any("eta" in r for r in rec.values()):
            out["noise_eta"] = [_host(rec[l]["eta"]) if l in rec else None for l in range(1, L + 1)]
    kind = type(rule).__name__
    if kind == "SignSymmetry" and rule.mode == "brsf":
        from refimpl.rules.feedback_alignment import brsf_magnitudes

        out["M"] = _host(brsf_magnitudes(net, state.seed, state.step, rule.feedback_init, rule.scale))
    elif kind == "PEPITA":
        out["masks"] = _host(rule.masks(net, state, int(x.shape[0])))
    elif kind == "CorInfoMax":
        out["signed_beta"] = float(rule.signed_beta(state))
    return out


def _pair(v) -> tuple:
    return tuple(int(n) for n in v)


def layer_specs(net) -> list:
    """The network as layer descriptions (passed as ``layers`` to an implementation that names it;
    stored in counterexamples): one dict per layer with ``type`` (``"linear"`` or ``"conv2d"``),
    ``activation``, ``spec`` (the layer's one-line description), ``weight_shape``, ``bias``,
    ``in_shape``, ``out_shape`` (of the pre-activation ``a``, before pooling) and ``h_shape`` (after
    pooling: what the next layer reads); linear layers add ``in_features``, ``out_features`` and
    ``flatten`` (True when the input is an image, flattened in torch order); conv layers add
    ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``pool`` (None or
    ``{"type": "max"|"avg", "kernel_size", "stride"}``) and ``keep`` (module docstring)."""
    specs = getattr(net, "layers", None) or (None,) * net.depth
    out = []
    for sp, W, a in zip(specs, net.weights, net.activations):
        kind = getattr(sp, "kind", "linear")
        d = {"type": kind, "activation": a, "weight_shape": tuple(int(n) for n in W.shape), "bias": True,
             "spec": sp.describe() if sp is not None else f"linear({W.shape[1]}->{W.shape[0]})"}
        if kind == "linear":
            in_shape = _pair(sp.in_shape) if sp is not None and sp.in_shape is not None else (int(W.shape[1]),)
            d.update(in_features=int(W.shape[1]), out_features=int(W.shape[0]), in_shape=in_shape,
                     out_shape=(int(W.shape[0]),), h_shape=(int(W.shape[0]),), flatten=len(in_shape) > 1)
        elif kind == "conv2d":
            pool = None
            if sp.pool is not None:
                pool = {"type": "max" if sp.pool.kind == "maxpool" else "avg",
                        "kernel_size": _pair(sp.pool.kernel_size), "stride": _pair(sp.pool.stride)}
            d.update(in_channels=int(sp.in_shape[0]), out_channels=int(sp.out_channels),
                     kernel_size=_pair(sp.kernel_size), stride=_pair(sp.stride), padding=_pair(sp.padding),
                     pool=pool, keep=sp.keep, in_shape=_pair(sp.in_shape), out_shape=_pair(sp.out_shape),
                     h_shape=_pair(sp.h_shape))
        out.append(d)
    return out


def _spec_from_description(i: int, d: dict):
    """The unbound refimpl layer spec of one :func:`layer_specs` entry (the inverse map)."""
    from refimpl.layers import Conv2d, Linear, MaxPool2d, AvgPool2d

    kind = d.get("type", "linear")
    if kind == "linear":
        return Linear()
    if kind == "conv2d":
        pool = d.get("pool")
        if pool is not None:
            cls = {"max": MaxPool2d, "avg": AvgPool2d}.get(pool.get("type"))
            if cls is None:
                raise ValueError(f"counterexample layers[{i}].pool: expected type 'max' or 'avg', got {pool!r}")
            pool = cls(tuple(pool["kernel_size"]), tuple(pool["stride"]))
        return Conv2d(stride=tuple(d["stride"]), padding=tuple(d["padding"]), pool=pool, keep=d.get("keep"))
    raise ValueError(f"counterexample layers[{i}]: unknown layer type {kind!r} (expected 'linear' or 'conv2d')")


def network_from_record(inst: dict, weights, biases, activations) -> "ri.Network":
    """The network of a stored instance: dense when it records no conv layer (files written
    before conv draws record none), else rebuilt from ``input_shape`` and ``layers``."""
    layers = inst.get("layers")
    if not layers or all(d.get("type", "linear") == "linear" and not d.get("flatten") for d in layers):
        return ri.Network(tuple(weights), tuple(biases), tuple(activations))
    if inst.get("input_shape") is None:
        raise ValueError("counterexample: a convolutional instance needs its input_shape")
    specs = tuple(_spec_from_description(i, d) for i, d in enumerate(layers))
    return ri.Network(tuple(weights), tuple(biases), tuple(activations), layers=specs,
                      input_shape=tuple(int(n) for n in inst["input_shape"]))


def _like(net, weights, biases) -> "ri.Network":
    """``net`` with other weights and biases (same layer specs and input shape)."""
    return ri.Network(tuple(weights), tuple(biases), net.activations, layers=getattr(net, "layers", None),
                      input_shape=getattr(net, "input_shape", None))


def _architecture(net) -> str:
    """``sizes=[...]`` for a dense network, ``input=CxHxW layers=[...]`` for a conv one."""
    from .strategies import describe_network
    return describe_network(net)


def _instance_record(net, x, y, rule, state, state_seed) -> dict:
    """The stored form of an instance (arrays as lists, the architecture as layer descriptions)."""
    return {"sizes": list(net.sizes), "activations": list(net.activations), "batch": int(x.shape[0]),
            "input_shape": [int(n) for n in net.input_shape], "layers": _jsonable(layer_specs(net)),
            "architecture": _architecture(net),
            "loss": getattr(rule, "loss", None), "state_seed": state_seed,
            "weights": [to_numpy(W).tolist() for W in net.weights],
            "biases": [to_numpy(b).tolist() for b in net.biases],
            "x": to_numpy(x).tolist(), "y": to_numpy(y).tolist(), "state": _jsonable(state_to_host(state))}


def check_architectures(rule, architectures) -> tuple:
    """``architectures`` validated (entries of :data:`proofs.strategies.ARCHITECTURES`, a string
    accepted for one) and checked against the rule (:data:`NO_CONV`): one ValueError naming the
    rule and the reason."""
    archs = (architectures,) if isinstance(architectures, str) else tuple(architectures or ())
    if not archs or any(a not in ARCHITECTURES for a in archs):
        raise ValueError(f"architectures: expected a non-empty subset of {ARCHITECTURES}, got {architectures!r}")
    kind = type(rule).__name__
    if "conv" in archs and kind in NO_CONV:
        raise ValueError(f"{kind} is not checked on convolutional networks: {NO_CONV[kind]}")
    return tuple(dict.fromkeys(archs))


# --- drawing and rounding states ---------------------------------------------------------------

def _map_arrays(v, fn):
    if v is None or isinstance(v, (bool, int, float, str, np.integer)):
        return v
    if isinstance(v, tuple):
        return tuple(_map_arrays(a, fn) for a in v)
    if isinstance(v, list):
        return [_map_arrays(a, fn) for a in v]
    if isinstance(v, dict):
        return {k: _map_arrays(a, fn) for k, a in v.items()}
    if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating):
        return fn(v)
    return v


def _round(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` rounded to ``dtype`` and back to float64 (the values the implementation receives)."""
    return np.asarray(a, dtype=np.float64).astype(dtype).astype(np.float64)


def _round_state(state, dtype: str):
    if dtype == "float64" or not dataclasses.is_dataclass(state):
        return state
    return dataclasses.replace(state, **{f.name: _map_arrays(getattr(state, f.name), lambda a: _round(a, dtype))
                                         for f in dataclasses.fields(state) if f.init})


def _draw_state(state, gen: np.random.Generator):
    """Move a freshly initialised state over its whole range (:data:`STATE_DRAWS`)."""
    kind = type(state).__name__
    if kind == "TPState":
        c = tuple(None if c is None else 0.5 * gen.standard_normal(tuple(c.shape)).astype(np.float64)
                  for c in state.c)
        return dataclasses.replace(state, c=c)
    if kind in ("SignSymmetryState", "PEPITAState", "CorInfoMaxState"):
        return dataclasses.replace(state, step=int(gen.integers(0, 1000)))
    return state


def _state_from_json(template, stored: dict):
    """A state of ``template``'s class with the stored fields (arrays rebuilt as float64)."""
    if not dataclasses.is_dataclass(template):
        return template

    def rebuild(t, v):
        """The stored value ``v`` in the structure of the template value ``t``."""
        if v is None:
            return None
        if isinstance(t, tuple):  # per-layer tuples (None entries kept)
            if len(t) != len(v):
                raise ValueError(f"stored state: expected {len(t)} entries, got {len(v)}")
            return tuple(rebuild(a, b) for a, b in zip(t, v))
        if isinstance(v, list):  # an array (the template's may be None: rebuild it as one array)
            return np.asarray(v, dtype=np.float64)
        return v

    kw = {f.name: rebuild(getattr(template, f.name), stored[f.name])
          for f in dataclasses.fields(template) if f.init and f.name in stored}
    return dataclasses.replace(template, **kw)


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (tuple, list)):
        return [_jsonable(a) for a in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(a) for k, a in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def _from_json_hyper(v):
    return tuple(_from_json_hyper(a) for a in v) if isinstance(v, list) else v


# --- judging -----------------------------------------------------------------------------------

def _show(a, limit: int = 16, precision: int = 6) -> str:
    """Small arrays in full, large ones summarised (``precision`` significant digits)."""
    if a is None:
        return "None"
    a = np.asarray(a if isinstance(a, (list, tuple, float, int)) else to_numpy(a), dtype=np.float64)
    fmt = {"float_kind": lambda v: f"{v:.{precision}g}"}
    if a.size <= limit:
        return np.array2string(a, separator=", ", formatter=fmt, max_line_width=110)
    flat = a.ravel()
    return (f"shape {a.shape}, max|.| {np.max(np.abs(flat)):.{precision}g}, mean {flat.mean():.{precision}g}, "
            f"first {np.array2string(flat[:6], separator=', ', formatter=fmt)} ...")


#: Scalar factors recognised by :func:`diagnose` (name -> factor; entries built per instance).
def _factor_names(batch: int, hyper: dict) -> list:
    out = [(-1.0, "flipped sign (received = -expected)"), (2.0, "factor 2 (a missing 1/2, e.g. of 0.5 ||.||^2)"),
           (0.5, "factor 1/2 (a spurious 1/2)"), (-2.0, "factor -2 (flipped sign and a missing 1/2)"),
           (-0.5, "factor -1/2 (flipped sign and a spurious 1/2)"), (0.0, "all zero (the update is missing)")]
    if batch > 1:
        out += [(float(batch), f"factor B = {batch} (sum over the batch where the reference takes the mean)"),
                (1.0 / batch, f"factor 1/B = 1/{batch} (mean over the batch where the reference sums, or a "
                              "double 1/B)")]
    for key in ("beta", "gamma", "eps", "lr", "tl_lr"):
        b = hyper.get(key)
        if isinstance(b, (int, float)) and not isinstance(b, bool) and b not in (0, 1, -1):
            out += [(float(b), f"factor {key} = {b:g} (an extra multiplication by {key})"),
                    (1.0 / b, f"factor 1/{key} = {1 / b:g} (a division by {key} too many, or {key} missing)")]
    return out


def diagnose(received, expected, *, batch: int = 1, hyper: Optional[dict] = None, derivative=None,
             rtol: float = 1e-6) -> Optional[str]:
    """The name of a slip when ``received`` differs from ``expected`` in a recognisable way.

    Recognised: a scalar factor (flipped sign, 2, 1/2, the batch size ``B``, 1/B, ``beta`` or
    1/beta of the rule's hyper-parameters, zero), a transposed matrix, for conv kernels
    ``(C_out, C_in, kh, kw)`` swapped channel axes (``ConvTranspose2d``'s layout) and a spatially
    flipped kernel (a true convolution where torch's cross-correlation is meant; "transposed" is
    meaningless for kernels and never tried on them), and, with ``derivative``
    (the activation derivative ``f'(a)`` of the layer for a batch of one: received and expected are
    then its delta), a missing or doubled activation derivative. ``rtol``: how closely the form must
    fit (relative to ``max|received|``).
    """
    a = np.asarray(to_numpy(received), dtype=np.float64)
    e = np.asarray(to_numpy(expected), dtype=np.float64)
    hyper = dict(hyper or {})
    if a.shape != e.shape:
        if a.ndim == 2 and a.shape == e.shape[::-1]:
            ok = np.allclose(a.T, e, rtol=1e-6, atol=1e-12 + 1e-6 * np.max(np.abs(e), initial=0))
            return f"transposed: received shape {a.shape}, expected {e.shape}" + \
                   (" (received.T agrees)" if ok else "")
        if a.ndim == 4 and e.ndim == 4 and a.shape == (e.shape[1], e.shape[0]) + e.shape[2:]:
            ok = np.allclose(a.transpose(1, 0, 2, 3), e, rtol=1e-6, atol=1e-12 + 1e-6 * np.max(np.abs(e), initial=0))
            return (f"kernel channels swapped: received shape {a.shape}, expected {e.shape} ((in, out, kh, kw), "
                    "ConvTranspose2d's layout, where Conv2d's (out, in, kh, kw) is expected)"
                    + (" (received.transpose(1, 0, 2, 3) agrees)" if ok else ""))
        return None
    scale = max(float(np.max(np.abs(a), initial=0)), float(np.max(np.abs(e), initial=0)))
    if scale == 0:
        return None
    tol = max(rtol, 1e-12) * scale

    def close(u, v):
        return float(np.max(np.abs(u - v), initial=0)) <= tol

    if a.ndim == 2 and a.shape[0] == a.shape[1] and a.shape[0] > 1 and close(a, e.T) and not close(a, e):
        return "transposed matrix (received = expected.T)"
    if a.ndim == 4 and a.shape[2] * a.shape[3] > 1:
        if close(a, e[:, :, ::-1, ::-1]) and not close(a, e):
            return ("spatially flipped kernel (received = expected[:, :, ::-1, ::-1]: a true convolution where "
                    "torch's cross-correlation is meant, or a flip too many)")
        if a.shape[0] == a.shape[1] and a.shape[0] > 1 and close(a, e.transpose(1, 0, 2, 3)) and not close(a, e):
            return "kernel channels swapped (received = expected.transpose(1, 0, 2, 3): ConvTranspose2d's layout)"
    if derivative is not None:
        d = np.asarray(to_numpy(derivative), dtype=np.float64)
        if d.shape == e.shape and not np.allclose(d, 1.0, rtol=0, atol=10 * rtol):
            nz = np.abs(d) > 1e-12
            if np.any(nz) and close(np.where(nz, a * d, e), e):
                return "missing activation derivative f'(a) (received * f'(a) = expected)"
            if close(a, e * d):
                return "activation derivative f'(a) applied twice (received = expected * f'(a))"
    ee = float(np.sum(e * e))
    if ee > 0:
        k = float(np.sum(a * e)) / ee
        if close(a, k * e) and abs(k - 1) > 10 * rtol:
            names = [name for f, name in _factor_names(batch, hyper) if abs(k - f) <= 1e-6 * max(1.0, abs(f))]
            if names:  # several explanations of one factor (B = 2 and a missing 1/2): all of them
                return " or ".join(names)
            if e.size > 1:  # one number always fits a factor: only informative for arrays
                return f"off by a constant factor {k:.6g}"
    return None


#: Rules whose updates carry rounding that their own algorithm amplifies beyond the tolerance
#: table's reach: GAIT-prop's ``1/gamma`` multipliers (``eps gamma^-(L-1)`` for fixed gamma; a correct
#: independent implementation differed by 1.7e-9 relative at depth 3 and gamma 1e-3, by 0.12 on a
#: depth-4 dense draw). For them a label may also differ by :func:`rounding_allowance`, and an
#: instance whose allowance exceeds :data:`ROUNDING_CAP` of a label's scale is not judged at all
#: (counted as ``unjudged``): a check that weak would certify anything.
ROUNDING_MODEL = ("GaitProp",)
#: The weakest relative check conform makes (an allowance above it: the instance is not judged).
ROUNDING_CAP = 1e-6


class _Unjudged(Exception):
    """The instance's rounding allowance exceeds :data:`ROUNDING_CAP`: not a reference check."""


def rounding_allowance(rule, net, record, dtype: str) -> dict:
    """Per label (``dW[i]``, ``db[i]``) the absolute difference two correct implementations can show
    from rounding alone: :func:`proofs.gaitprop.rounding_bound` (a first-order model of one
    implementation's rounding at float64's unit roundoff, normwise, so also a bound on the max-norm
    compared here; the theorem ``gaitprop.equals_bp_piecewise_linear`` measures errors <= 5 % of it)
    times ``1 + u_impl / u_64`` (the reference rounds in float64, the implementation in ``dtype``)."""
    from .gaitprop import rounding_bound

    bW, bb = rounding_bound(net, record, bool(getattr(rule, "adaptive", False)))
    factor = 1.0 + (2.0 ** -23 if dtype == "float32" else 2.0 ** -52) / 2.0 ** -52
    out = {f"dW[{i}]": factor * b for i, b in enumerate(bW)}
    out.update({f"db[{i}]": factor * b for i, b in enumerate(bb)})
    return out


def _judge(actual, expected, labels, rtol, atol, allowance=None):
    """Per-label relative errors ``max|a - e| / max(max|e|, atol/rtol)``; holds iff every pair has
    ``max|a - e| <= max(atol + rtol max|e|, allowance[label])`` (``allowance``: :func:`rounding_allowance`
    for :data:`ROUNDING_MODEL` rules, else none). Returns ``(holds, errors, failing, detail)``.

    The floor ``atol/rtol`` of the scale: a quantity that is zero in exact arithmetic comes out as
    ``1e-18`` in float64 and ``0`` in float32, a relative error of 1 (or 1e9) that means nothing;
    below ``atol/rtol`` a quantity is judged by ``atol``, and its error is reported on that scale."""
    errors, failing, detail = {}, [], {}
    for lab, a, e in zip(labels, actual, expected):
        if a is None and e is None:
            continue
        if a is None or e is None:
            errors[lab] = math.inf
            failing.append(lab)
            detail[lab] = f"{'received' if a is None else 'expected'} is None"
            continue
        an = np.asarray(to_numpy(a), dtype=np.float64)
        en = np.asarray(to_numpy(e), dtype=np.float64)
        if an.shape != en.shape:
            errors[lab] = math.inf
            failing.append(lab)
            detail[lab] = f"shape {an.shape}, expected {en.shape}"
            continue
        if not np.all(np.isfinite(an)):
            errors[lab] = math.inf
            failing.append(lab)
            detail[lab] = "non-finite values received"
            continue
        if not np.all(np.isfinite(en)):  # a NaN reference must never certify anything
            raise ReferenceRejected(f"{lab}: the reference produced non-finite values on the drawn instance")
        diff = float(np.max(np.abs(an - en))) if an.size else 0.0
        sc = float(np.max(np.abs(en))) if en.size else 0.0
        floor = atol / rtol if rtol > 0 else 0.0
        errors[lab] = diff / max(sc, floor) if max(sc, floor) > 0 else diff
        if diff > max(atol + rtol * sc, (allowance or {}).get(lab, 0.0)):
            failing.append(lab)
    return not failing, errors, failing, detail


@dataclass
class _Setup:
    rule_spec: str
    ref: Any
    impl: Callable
    hyper: dict          # fixed hyper-parameters (reference)
    ranges: dict         # drawn ones
    impl_hyper: Optional[dict]
    dtype: str
    rtol: float
    atol: float
    tol_source: str
    targets: bool
    seed: int
    feedback: bool = False
    rounding_model: bool = True  # ROUNDING_MODEL rules: the rounding allowance (off when rtol/atol are given)


def _impl_kwargs(impl, hyper: dict, net) -> dict:
    """Keyword arguments for ``impl``: all of ``hyper`` if it takes ``**kwargs``, else those it names;
    ``layers`` if it names it."""
    try:
        sig = inspect.signature(impl)
    except (TypeError, ValueError):
        return dict(hyper)
    params = sig.parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    out = dict(hyper) if var_kw else {k: v for k, v in hyper.items() if k in params}
    if "layers" in params:
        out["layers"] = layer_specs(net)
    return out


def _run_once(s: _Setup, rule, net, x, y, state, impl_hyper: dict):
    """Run both sides on one instance (``net``, ``x``, ``y``, ``state``: float64 values already rounded
    to ``s.dtype``). Returns ``(holds, errors, failing, detail, labels, received, expected)``."""
    L = net.depth
    dt = s.dtype
    try:
        fb = None
        if s.feedback:
            if not callable(getattr(rule, "feedback_updates", None)):
                raise TypeError(f"{type(rule).__name__} has no feedback_updates to compare")
            fb = rule.feedback_updates(net, state, x, y, key=(0,))
            if not hasattr(fb, "record") or not hasattr(fb, "dQ"):
                raise TypeError(f"feedback comparison needs feedback updates with their noise in a record "
                                f"(TP, DTP, DRL, LDRL); {type(rule).__name__} has none")
            ref = fb
        else:
            ref = rule.targets(net, state, x, y) if s.targets else rule.updates(net, state, x, y)[0]
        handed = handed_state(rule, net, state, x, feedback=fb)
        allowance = None
        if s.rounding_model and not (s.targets or s.feedback) and type(rule).__name__ in ROUNDING_MODEL:
            allowance = rounding_allowance(rule, net, ref.record, dt)
            floor = s.atol / s.rtol if s.rtol > 0 else 0.0
            for lab, e in zip([f"dW[{i}]" for i in range(L)] + [f"db[{i}]" for i in range(L)],
                              list(ref.dW) + list(ref.db)):
                scale = max(float(np.max(np.abs(to_numpy(e)))) if e is not None else 0.0, floor)
                if allowance[lab] > ROUNDING_CAP * scale:
                    raise _Unjudged(f"{lab}: rounding allowance {allowance[lab]:.2g} is {allowance[lab] / scale:.2g} "
                                    f"of its scale (cap {ROUNDING_CAP:g})")
    except (ValueError, TypeError) as exc:
        raise ReferenceRejected(f"the reference {type(rule).__name__} rejected the drawn instance ("
                                f"{_architecture(net)}, activations {list(net.activations)}): {exc}; restrict the "
                                "draw with network=... (proofs.conform.RULE_NETWORKS)") from exc
    cast = (lambda a: None if a is None else np.asarray(a).astype(dt)) if dt != "float64" else (lambda a: a)
    yh = to_numpy(y)
    args = ([cast(to_numpy(W)) for W in net.weights], [cast(to_numpy(b)) for b in net.biases],
            list(net.activations), cast(to_numpy(x)),
            yh if np.issubdtype(yh.dtype, np.integer) else cast(yh),
            _map_arrays(handed, cast) if dt != "float64" else handed)
    out = s.impl(*args, **_impl_kwargs(s.impl, impl_hyper, net))
    if s.feedback:
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValueError("impl must return (dQ, dc): two lists of per-layer arrays (None where untrained)")
        dQ, dc = out
        if len(dQ) != L or len(dc) != L:
            raise ValueError(f"impl returned {len(dQ)} dQ and {len(dc)} dc entries, expected {L} each")
        labels = [f"dQ[{i}]" for i in range(L)] + [f"dc[{i}]" for i in range(L)]
        act = list(dQ) + list(dc)
        exp = list(ref.dQ) + list(ref.dc)
    elif s.targets:
        if not isinstance(out, (tuple, list)) or len(out) != L + 1:
            raise ValueError(f"impl returned {len(out) if isinstance(out, (tuple, list)) else type(out).__name__} "
                             f"targets, expected a list of {L + 1} (layers 0..L)")
        labels = [f"target[{l}]" for l in range(L + 1)]
        # Every layer where the reference defines a target must be matched: an implementation's
        # None there is a mismatch, not a skipped layer (else returning no targets passes vacuously).
        act = [None if r is None else g for g, r in zip(out, ref)]
        exp = list(ref)
    else:
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValueError("impl must return (dW, db): two lists of per-layer arrays")
        dW, db = out
        if len(dW) != L or len(db) != L:
            raise ValueError(f"impl returned {len(dW)} dW and {len(db)} db arrays, expected {L} each")
        labels = [f"dW[{i}]" for i in range(L)] + [f"db[{i}]" for i in range(L)]
        act = list(dW) + list(db)
        exp = list(ref.dW) + list(ref.db)
    holds, errors, failing, detail = _judge(act, exp, labels, s.rtol, s.atol, allowance)
    return holds, errors, failing, detail, labels, act, exp


def _origin(failing, labels):
    """The layer where a mismatch enters: for updates the highest-index failing layer (errors flow
    down the backward pass), for targets likewise (targets are propagated from the output)."""
    def layer(lab):
        return int(lab[lab.index("[") + 1:lab.index("]")])
    order = sorted(failing, key=lambda lab: (layer(lab), lab.startswith("db")), reverse=True)
    return order[0] if order else None


def _diagnose_instance(s, rule, net, x, y, state, res, origin, hyper):
    """:func:`diagnose` at the layer where the mismatch enters; for updates also on the first
    sample alone (where the layer's delta is ``db`` and a missing activation derivative shows)."""
    holds, errors, failing, detail, labels, act, exp = res
    tol = max(10 * s.rtol, 1e-9)
    B = int(x.shape[0])
    i = labels.index(origin)
    if act[i] is None or exp[i] is None:
        return None
    if s.targets or s.feedback:
        return diagnose(act[i], exp[i], batch=B, hyper=hyper, rtol=tol)
    slip = diagnose(act[i], exp[i], batch=B, hyper=hyper, rtol=tol)
    if slip is None and origin.startswith("db"):  # the weight of the same layer
        j = labels.index("dW" + origin[2:])
        slip = diagnose(act[j], exp[j], batch=B, hyper=hyper, rtol=tol) if act[j] is not None else None
    if slip is not None and "constant factor" not in slip:
        return slip
    # one sample: db of the entering layer is that layer's delta
    x1, y1 = x[:1], y[:1]
    r1 = _run_once(s, rule, net, x1, y1, state, resolved_hyper(rule) if s.impl_hyper is None else s.impl_hyper)
    if r1[0]:
        return slip
    o1 = _origin(r1[2], r1[4])
    if not o1.startswith(("db", "dW")):
        return slip
    lab = "db" + o1[2:]
    k = r1[4].index(lab)
    l = int(lab[3:-1]) + 1
    deriv = to_numpy(net.activation(l).df(net.forward(x1).a[l]))[0]
    one = diagnose(r1[5][k], r1[6][k], batch=1, hyper=hyper, derivative=deriv, rtol=tol)
    return (f"{one} at layer {l} (seen on the first sample alone)" if one else slip)


def _plain_relative(a, e) -> Optional[float]:
    """``max|a - e| / max|e|`` without the atol/rtol floor (None if not comparable, inf if e = 0 != a)."""
    if a is None or e is None:
        return None
    an = np.asarray(to_numpy(a), dtype=np.float64)
    en = np.asarray(to_numpy(e), dtype=np.float64)
    if an.shape != en.shape or not an.size:
        return None
    diff, sc = float(np.max(np.abs(an - en))), float(np.max(np.abs(en)))
    return diff / sc if sc > 0 else (math.inf if diff > 0 else 0.0)


def _report(s: _Setup, rule, net, x, y, state, res, state_seed) -> dict:
    holds, errors, failing, detail, labels, act, exp = res
    worst = max(failing, key=lambda lab: errors[lab])
    origin = _origin(failing, labels)
    i = labels.index(origin)
    hyper = resolved_hyper(rule)
    B = int(x.shape[0])
    slip = None
    try:
        slip = _diagnose_instance(s, rule, net, x, y, state, res, origin, hyper)
    except Exception:  # diagnosis is a courtesy; never mask the counterexample
        slip = None
    handed = handed_state(rule, net, state, x,
                          feedback=rule.feedback_updates(net, state, x, y, key=(0,)) if s.feedback else None)
    host_state = state_to_host(state)
    return {
        "rule": s.rule_spec, "rule_class": type(rule).__name__, "hyper": _jsonable(hyper),
        "hyper_ranges": {k: str(v) for k, v in s.ranges.items()},
        "dtype": s.dtype,
        "tolerance": {"rtol": s.rtol, "atol": s.atol, "source": s.tol_source},
        "version": ri.__version__, "seed": s.seed, "targets": s.targets, "feedback": s.feedback,
        "where": origin, "worst": worst, "error": float(errors[worst]), "origin_error": float(errors[origin]),
        "origin_plain_relative_error": _plain_relative(act[i], exp[i]),
        "errors": {k: float(v) for k, v in errors.items()}, "failing": failing,
        "detail": detail.get(origin, ""), "slip": slip,
        "expected": _jsonable(to_numpy(exp[i])) if exp[i] is not None else None,
        "received": _jsonable(np.asarray(to_numpy(act[i]), dtype=np.float64)) if act[i] is not None else None,
        "instance": dict(_instance_record(net, x, y, rule, state, state_seed),
                         handed_over=sorted(k for k, v in handed.items()
                                            if k not in host_state or (host_state[k] is None and v is not None))),
    }


@dataclass
class ConformResult:
    """Outcome of :func:`check`: ``passed``, the number of instances run, and on a mismatch the shrunk
    counterexample (a JSON-able dict, see README) with ``message`` the underlying failure."""

    rule: str
    passed: bool
    examples: int
    counterexample: Optional[dict] = None
    message: str = ""
    dtype: str = "float64"
    tolerance: Optional[dict] = None
    #: the largest per-layer relative error over the instances that agreed (the margin to rtol)
    worst_error: float = 0.0
    #: per label (``dW[0]``, ``db[0]``, ...) the largest relative error over the agreeing instances
    layer_errors: dict = field(default_factory=dict)
    #: instances drawn but not judged: their rounding allowance exceeded ROUNDING_CAP (GAIT-prop)
    unjudged: int = 0

    def summary(self) -> str:
        tol = self.tolerance or {}
        tol_s = f"dtype {self.dtype}, rtol {tol.get('rtol', math.nan):.0e}, atol {tol.get('atol', math.nan):.0e}" \
            + (f" ({tol['source']})" if tol.get("source") else "")
        if self.passed:
            per = ", ".join(f"{k} {v:.2g}" for k, v in sorted(self.layer_errors.items(),
                                                               key=lambda kv: (kv[0][:2], _layer_index(kv[0]))))
            judged = self.examples - self.unjudged
            skipped = (f"\n  {self.unjudged} of {self.examples} instances not judged: rounding-dominated (the "
                       f"allowance exceeded {ROUNDING_CAP:g} of a layer's scale)") if self.unjudged else ""
            return (f"conform {self.rule}: PASS on {judged} random instances ({tol_s}; worst relative "
                    f"error {self.worst_error:.2g})" + (f"\n  worst per layer: {per}" if per else "") + skipped)
        return format_counterexample(self.counterexample or {}, header=f"conform {self.rule}: FAIL")


def _layer_index(label: str) -> int:
    return int(label[label.index("[") + 1:label.index("]")])


def _record_architecture(inst: dict) -> str:
    """``sizes=[...]`` (dense) or ``input=CxHxW layers=[conv2d(..)+maxpool2 | linear(..)]`` of a stored instance."""
    layers = inst.get("layers") or []
    if any(d.get("type", "linear") != "linear" for d in layers) and inst.get("input_shape"):
        return (f"input={'x'.join(str(n) for n in inst['input_shape'])} "
                f"layers=[{' | '.join(str(d.get('spec')) for d in layers)}]")
    return f"sizes={inst.get('sizes')}"


def format_counterexample(c: dict, header: str = "counterexample", what: str = "minimal counterexample") -> str:
    """The human-readable form of a counterexample dict (what the CLI prints)."""
    inst = c.get("instance", {})
    hyper = c.get("hyper", {})
    lines = [f"{header} ({c.get('rule_class', '?')}, refimpl {c.get('version', '?')}, dtype {c.get('dtype')}, "
             f"rtol {c.get('tolerance', {}).get('rtol', math.nan):.0e}, atol "
             f"{c.get('tolerance', {}).get('atol', math.nan):.0e})",
             f"  hyper-parameters: {', '.join(f'{k}={v!r}' for k, v in hyper.items())}"
             + (f"  [drawn from {c['hyper_ranges']}]" if c.get("hyper_ranges") else ""),
             f"  {what}: {_record_architecture(inst)} activations={inst.get('activations')} "
             f"batch={inst.get('batch')} loss={inst.get('loss')}"]
    if c.get("where") == "impl raised":
        lines.append(f"  the implementation raised: {c.get('detail')}")
        return "\n".join(lines)
    errs = c.get("errors", {})
    lines.append("  per-layer relative errors: " + ", ".join(
        f"{k} {v:.3g}{' *' if k in c.get('failing', []) else ''}" for k, v in errs.items()))
    plain = c.get("origin_plain_relative_error")
    own = "" if plain is None or abs(plain - c.get("origin_error", math.nan)) <= 1e-3 * abs(plain) else \
        f", {plain:.3g} of its own scale max|expected|"
    lines.append(f"  the mismatch enters at {c.get('where')} (relative error {c.get('origin_error', math.nan):.3g}{own}; "
                 f"worst {c.get('worst')} {c.get('error', math.nan):.3g})" + (f": {c['detail']}" if c.get("detail") else ""))
    rel = plain if plain is not None else c.get("origin_error", 0.0)
    digits = 6 if not rel or not math.isfinite(rel) or rel >= 1e-4 else min(17, int(math.ceil(-math.log10(rel))) + 3)
    lines.append(f"    expected: {_show(c.get('expected'), precision=digits)}")
    lines.append(f"    received: {_show(c.get('received'), precision=digits)}")
    if c.get("slip"):
        lines.append(f"  looks like: {c['slip']}")
    if inst.get("handed_over"):
        lines.append(f"  (random quantities handed over in state: {', '.join(inst['handed_over'])})")
    return "\n".join(lines)


def _prepare(rule, impl, hyper, impl_hyper, dtype, rtol, atol, targets, seed, feedback=False) -> _Setup:
    hyper = dict(hyper or {})
    ranges = {k: v for k, v in hyper.items() if isinstance(v, Range)}
    fixed = {k: v for k, v in hyper.items() if not isinstance(v, Range)}
    ref = resolve_rule(rule, hyper)  # validates the keys (ranges at their lower end, redrawn per instance)
    impl = load_impl(impl)
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype: expected 'float64' or 'float32', got {dtype!r}")
    if targets and feedback:
        raise ValueError("targets, feedback: compare one thing at a time")
    kind = "oracle_value" if targets else "oracle_grad"
    trtol, tatol = tolerance(kind, dtype)
    source = f"proofs/tolerances.py, {dtype} row ({kind})"
    for nm, v in (("rtol", rtol), ("atol", atol)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
            raise ValueError(f"{nm}: expected a finite number >= 0, got {v!r}")
    if rtol is not None or atol is not None:
        source = "user override (" + ", ".join(f"{n} {v:g}" for n, v in (("rtol", rtol), ("atol", atol))
                                               if v is not None) + f"); table {dtype} row: rtol {trtol:g}, atol {tatol:g}"
    model = rtol is None and atol is None
    if model and not (targets or feedback) and type(ref).__name__ in ROUNDING_MODEL:
        source += (f"; plus per layer the rounding GAIT-prop's 1/gamma multipliers amplify "
                   f"(proofs.conform.rounding_allowance), instances where it exceeds {ROUNDING_CAP:g} not judged")
    name = rule if isinstance(rule, str) else rule_name(rule)
    return _Setup(name, ref, impl, fixed, ranges, impl_hyper, dtype,
                  float(trtol if rtol is None else rtol), float(tatol if atol is None else atol), source,
                  bool(targets), int(seed), bool(feedback), model)


def check(rule, impl, *, instances: int = 100, hyper: Optional[dict] = None, impl_hyper: Optional[dict] = None,
          seed: int = 0, losses=("mse", "ce"), activations=ALL_ACTIVATIONS, targets: bool = False,
          network: Optional[dict] = None, dtype: str = "float64", rtol: Optional[float] = None,
          atol: Optional[float] = None, feedback: bool = False, architectures=("mlp",),
          conv: Optional[dict] = None) -> ConformResult:
    """Check ``impl`` against the reference ``rule`` on ``instances`` Hypothesis-drawn instances.

    ``hyper`` sets the reference rule's hyper-parameters (a :class:`Range` is drawn per instance);
    ``impl`` receives every hyper-parameter of the reference as resolved (``impl_hyper`` replaces
    that dict). ``dtype``: the precision the instance is handed over in (judged with that row of
    the tolerance table; ``rtol``/``atol`` override it). ``architectures``: ``("mlp",)`` (dense
    networks; ``network`` adds :func:`~proofs.strategies.draw_network` keyword arguments),
    ``("conv",)`` (convolutional ones; ``conv`` adds :func:`~proofs.strategies.draw_conv_network`
    keyword arguments, e.g. ``{"pools": (None,)}``; for GaitProp/TPInverse
    :func:`proofs.gaitprop.draw_invertible_conv` ones, :data:`RULE_INVERTIBLE_CONV`) or both; a rule without a convolutional form
    raises ValueError (:data:`NO_CONV`). Returns a :class:`ConformResult`; on a
    mismatch it holds the shrunk counterexample with all its arrays, which :func:`replay` runs again.

    For use inside a pytest suite: the ``refimpl_conform`` fixture (``refimpl.pytest_plugin``), or
    ``assert proofs.conform.check("fa", my_fa).passed``.
    """
    from hypothesis import given, settings, seed as hseed, HealthCheck, Phase, strategies as st

    if isinstance(instances, bool) or not isinstance(instances, (int, np.integer)) or instances < 1:
        raise ValueError(f"instances: expected an integer >= 1, got {instances!r}")
    s = _prepare(rule, impl, hyper, impl_hyper, dtype, rtol, atol, targets, seed, feedback)
    ref = s.ref
    archs = check_architectures(ref, architectures)
    inv_conv = RULE_INVERTIBLE_CONV.get(type(ref).__name__)
    if inv_conv is not None:  # invertible convs, outputs following the draw (RULE_INVERTIBLE_CONV)
        conv_kwargs = dict(inv_conv)
        conv_kwargs["activations"] = tuple(a for a in conv_kwargs["activations"] if a in tuple(activations))
        if not conv_kwargs["activations"] and "conv" in archs:
            raise ValueError(f"activations: {type(ref).__name__} on conv draws needs one of "
                             f"{inv_conv['activations']}, got {tuple(activations)!r}")
        if "conv" in archs and "outputs" in dict(hyper or {}):
            raise ValueError(f"hyper: outputs follows the conv draw for {type(ref).__name__} (the number of leading "
                             "output units the loss sees, drawn with the network); do not set it with --arch conv/any")
    else:
        conv_kwargs = dict(RULE_CONV_NETWORKS.get(type(ref).__name__, {}))
        conv_kwargs.setdefault("activations", activations)
    conv_kwargs.update(conv or {})
    net_kwargs = dict(RULE_NETWORKS.get(type(ref).__name__, {}))
    net_kwargs.setdefault("activations", activations)
    net_kwargs.update(network or {})
    rule_loss = getattr(ref, "loss", None)
    # a rule with a loss hyper-parameter is checked on that loss (--hyper loss=ce for the other);
    # a rule without one gets batches of either kind
    loss_choices = (rule_loss,) if isinstance(rule_loss, str) else tuple(losses)
    failures, rejected = [], []
    count = {"n": 0}
    unjudged = {"n": 0}
    visible = {"min": None}  # set at the first failure: shrinking keeps the error visible
    worst = {"err": 0.0}
    layer_worst = {}

    @settings(max_examples=int(instances), deadline=None, database=None, derandomize=False, print_blob=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    @hseed(s.seed)
    @given(st.data())
    def _search(data):
        d = HypothesisDrawer(data)
        loss = d.choice(loss_choices)
        drawn = {k: r.draw(d) for k, r in s.ranges.items()}
        arch = d.choice(archs) if len(archs) > 1 else archs[0]  # one architecture: the draws of before
        follows = {}  # hyper-parameters that follow the draw (outputs of an invertible conv net)
        if arch == "conv" and inv_conv is not None:
            from hypothesis import assume
            from .gaitprop import draw_invertible_conv

            inst = draw_invertible_conv(d, "numpy", "float64", losses=(loss,), **conv_kwargs)
            assume(inst.loss == loss)  # a 1-unit output cannot carry ce (the draw switches to mse)
            net, x, k_out = inst.net, inst.x, int(inst.params["outputs"])
            # mse: (B, outputs) targets; ce: labels in 0..outputs-1, as conform's other ce draws
            y = np.argmax(to_numpy(inst.y), axis=1).astype(np.int64) if loss == "ce" else inst.y
            follows = {"outputs": k_out}
        elif arch == "conv":
            ckw = dict(conv_kwargs)
            if loss == "ce" and ckw.get("output_width") is None:  # 1-class ce is constant (no gradient)
                ckw["output_width"] = (2, 6)
            net = draw_conv_network(d, "numpy", "float64", **ckw)
            # small batches: a conv instance already has B*H'*W' terms per kernel entry
            x, y = draw_batch(d, net, loss, labels=True, batch=(1, 6))
        else:
            kw = dict(net_kwargs)
            if kw.pop("shared_hidden", False):
                kw["activations"] = (d.choice(kw["activations"]),)
            if loss == "ce" and kw.get("kind", "any") == "any":
                kw.setdefault("output_width", (2, 12))
            elif loss == "ce" and kw.get("output_width") is None:  # square kinds: 1-class ce is constant
                lo, hi = kw.get("width", (1, 12))
                kw["width"] = (max(2, lo), max(2, hi))
            net = draw_network(d, "numpy", "float64", **kw)
            x, y = draw_batch(d, net, loss, labels=True)
        state_seed = d.integer(0, 2**16)
        upd = dict(drawn, **follows)
        try:
            r = dataclasses.replace(ref, **upd) if upd else ref
        except (ValueError, TypeError) as exc:
            rejected.append(ReferenceRejected(f"{type(ref).__name__} rejected the drawn hyper-parameters {upd}: {exc}"))
            raise rejected[-1] from exc
        if s.dtype != "float64":
            net = _like(net, [_round(W, s.dtype) for W in net.weights], [_round(b, s.dtype) for b in net.biases])
            x = _round(x, s.dtype)
            y = y if np.issubdtype(np.asarray(y).dtype, np.integer) else _round(y, s.dtype)
        try:
            state = r.init(net, seed=state_seed)
        except (ValueError, TypeError) as exc:
            rejected.append(ReferenceRejected(
                f"{type(r).__name__}.init rejected the drawn network ({_architecture(net)}, activations "
                f"{list(net.activations)}): {exc}; restrict the draw with network=... (proofs.conform.RULE_NETWORKS)"))
            raise rejected[-1] from exc
        state = _round_state(_draw_state(state, np.random.default_rng([state_seed, 0x5EED])), s.dtype)
        count["n"] += 1
        ih = resolved_hyper(r) if s.impl_hyper is None else dict(s.impl_hyper, **follows)
        try:
            res = _run_once(s, r, net, x, y, state, ih)
        except _Unjudged:
            unjudged["n"] += 1
            return
        except ReferenceRejected as exc:
            rejected.append(exc)
            raise
        except Exception as exc:
            failures.append({"rule": s.rule_spec, "rule_class": type(r).__name__, "hyper": _jsonable(resolved_hyper(r)),
                             "hyper_ranges": {k: str(v) for k, v in s.ranges.items()}, "dtype": s.dtype,
                             "tolerance": {"rtol": s.rtol, "atol": s.atol, "source": s.tol_source},
                             "version": ri.__version__, "seed": s.seed, "targets": s.targets,
                             "feedback": s.feedback, "where": "impl raised", "error": math.inf, "detail": f"{type(exc).__name__}: {exc}",
                             "instance": _instance_record(net, x, y, r, state, state_seed)})
            raise
        holds, errors = res[0], res[1]
        if holds:
            worst["err"] = max([worst["err"]] + [v for v in errors.values()])
            for k, v in errors.items():
                layer_worst[k] = max(layer_worst.get(k, 0.0), float(v))
        if not holds:
            err = max(errors[lab] for lab in res[2])
            if visible["min"] is None:
                visible["min"] = min(err, max(1e-3, 100 * s.rtol))
            if err >= visible["min"]:
                failures.append(_report(s, r, net, x, y, state, res, state_seed))
                raise AssertionError(f"mismatch at {failures[-1]['where']} (error {err:.3g})")

    try:
        _search()
    except Exception as exc:  # Hypothesis re-raises the minimal example's failure, run last
        if not failures:
            if rejected:  # the set-up's fault, not the implementation's: one clear error
                raise rejected[0] from None
            raise
        return ConformResult(s.rule_spec, False, count["n"], failures[-1], f"{type(exc).__name__}: {str(exc)[:300]}",
                             s.dtype, {"rtol": s.rtol, "atol": s.atol, "source": s.tol_source})
    if count["n"] and unjudged["n"] == count["n"]:
        raise ValueError(f"{type(ref).__name__}: none of the {count['n']} drawn instances could be judged: on every one the "
                         f"rounding the 1/gamma multipliers amplify exceeds {ROUNDING_CAP:g} of a layer's scale "
                         f"(hyper-parameters {resolved_hyper(ref)}); check with --hyper adaptive=True --hyper gamma=0.01, "
                         "or give --rtol/--atol yourself")
    return ConformResult(s.rule_spec, True, count["n"], dtype=s.dtype,
                         tolerance={"rtol": s.rtol, "atol": s.atol, "source": s.tol_source}, worst_error=worst["err"],
                         layer_errors=layer_worst, unjudged=unjudged["n"])


def _explicit_hyper(rule, hyper: dict) -> dict:
    """The hyper-parameters a replay request sets: a name's preset and spec (``"brsf"`` -> mode,
    ``"dtp:beta=0.5"`` -> beta), ``hyper``; for a rule instance all of them."""
    from refimpl.rules.registry import _resolve, parse_rule_spec

    if isinstance(rule, str):
        name, spec = parse_rule_spec(rule)
        preset = _resolve(name)[1]
        out = {**preset, **spec}
    elif isinstance(rule, type):
        out = {}
    else:
        out = resolved_hyper(rule)
    out.update(hyper)
    return out


def _check_replay_matches(c: dict, rule, hyper: dict):
    """Refuse (:class:`ReplayRefused`) unless ``rule``/``hyper`` agree with the counterexample's."""
    stored_cls = c.get("rule_class")
    probe = resolve_rule(rule, hyper)
    shown = rule if isinstance(rule, str) else rule_name(probe)
    if stored_cls is None:
        raise ReplayRefused("the counterexample records no rule (written by an older refimpl); replay it with "
                            "allow_mismatch=True (--replay-anyway) if you know it belongs to this rule")
    if type(probe).__name__ != stored_cls:
        raise ReplayRefused(f"the counterexample was found for rule {c.get('rule')!r} ({stored_cls}), not "
                            f"{shown!r} ({type(probe).__name__}); replay it under its own rule, or pass "
                            "allow_mismatch=True (--replay-anyway)")
    stored = {k: _from_json_hyper(v) for k, v in c.get("hyper", {}).items()}
    diff = {}
    for k, v in _explicit_hyper(rule, hyper).items():
        if k not in stored:
            continue
        if isinstance(v, Range):
            if stored[k] not in v:
                diff[k] = (str(v), stored[k])
        elif _from_json_hyper(_jsonable(v)) != stored[k]:
            diff[k] = (v, stored[k])
    if diff:
        raise ReplayRefused("the counterexample was found with other hyper-parameters: " + ", ".join(
            f"{k}={a!r} here, {b!r} in the file" for k, (a, b) in diff.items())
            + "; drop them (the file's are used) or pass allow_mismatch=True (--replay-anyway)")


def replay(rule, impl, counterexample: dict, **kwargs) -> Evidence:
    """Run one stored counterexample again; returns the :class:`~proofs.theorem.Evidence`
    (:func:`replay_details` for the full report). Keywords as :func:`replay_details`."""
    return replay_details(rule, impl, counterexample, **kwargs)[0]


def replay_details(rule, impl, counterexample: dict, *, hyper: Optional[dict] = None,
           impl_hyper: Optional[dict] = None, targets: Optional[bool] = None, feedback: Optional[bool] = None,
           allow_mismatch: bool = False,
           dtype: Optional[str] = None, rtol: Optional[float] = None, atol: Optional[float] = None):
    """Run one stored counterexample again; returns ``(Evidence, report)``, ``report`` the
    counterexample dict of this run (:func:`format_counterexample`) or None when it agrees.

    The rule's hyper-parameters, dtype and tolerance are the file's. ``rule`` and ``hyper`` must
    agree with the file's rule and hyper-parameters (else :class:`ReplayRefused`) unless
    ``allow_mismatch``, which replays the instance under ``rule`` with ``hyper`` instead.
    """
    c = counterexample
    if not isinstance(c, dict) or "instance" not in c:
        raise ValueError("counterexample: expected the dict conform wrote (with an 'instance' key)")
    hyper = dict(hyper or {})
    if allow_mismatch:
        r = resolve_rule(rule, hyper)
    else:
        _check_replay_matches(c, rule, hyper)
        r = ri.rules.get(type(resolve_rule(rule)), **{k: _from_json_hyper(v) for k, v in c["hyper"].items()})
    inst = c["instance"]
    if hasattr(r, "loss") and inst.get("loss") is not None and inst["loss"] != r.loss:
        r = dataclasses.replace(r, loss=inst["loss"])
    net = network_from_record(inst, [np.asarray(W, dtype=np.float64) for W in inst["weights"]],
                              [np.asarray(b, dtype=np.float64) for b in inst["biases"]], inst["activations"])
    x = np.asarray(inst["x"], dtype=np.float64)
    y = np.asarray(inst["y"])
    y = y.astype(np.int64) if inst.get("loss") == "ce" and y.ndim == 1 else y.astype(np.float64)
    template = r.init(net, seed=inst.get("state_seed", 0))
    try:
        state = _state_from_json(template, inst.get("state", {}))
        if allow_mismatch and hasattr(r, "check_state"):
            r.check_state(net, state)
    except Exception:
        if not allow_mismatch:
            raise
        state = template  # another rule's state: this rule's own, initialised from the stored seed
    tol = c.get("tolerance", {})
    s = _prepare(r, impl, {}, impl_hyper, dtype or c.get("dtype", "float64"),
                 rtol if rtol is not None else tol.get("rtol"), atol if atol is not None else tol.get("atol"),
                 c.get("targets", False) if targets is None else targets, c.get("seed", 0),
                 c.get("feedback", False) if feedback is None else feedback)
    if s.dtype != "float64":  # the values an implementation in s.dtype receives (a no-op on a stored float32 run)
        net = _like(net, [_round(W, s.dtype) for W in net.weights], [_round(b, s.dtype) for b in net.biases])
        x = _round(x, s.dtype)
        y = y if np.issubdtype(y.dtype, np.integer) else _round(y, s.dtype)
        state = _round_state(state, s.dtype)
    ih = resolved_hyper(r) if impl_hyper is None else dict(impl_hyper)
    try:
        res = _run_once(s, r, net, x, y, state, ih)
    except _Unjudged as exc:
        raise ValueError(f"counterexample: this instance cannot be judged at the stored tolerance ({exc}); "
                         "replay it with rtol/atol given") from None
    holds, errors, failing, detail, labels, act, exp = res
    worst = max(errors, key=errors.get) if errors else ""
    where = _origin(failing, labels) if failing else worst
    ev = Evidence(bool(holds), float(errors.get(worst, 0.0)), s.rtol,
                  f"worst at {worst}" + (f"; mismatch enters at {where}" if failing else "")
                  + (f"; {detail[where]}" if where in detail else ""))
    report = None if holds else _report(s, r, net, x, y, state, res, inst.get("state_seed", 0))
    return ev, report
