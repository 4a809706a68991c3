"""Conformance: check a third party's implementation of a rule against the reference.

The adapter contract (README "Checking your own implementation")::

    impl(weights, biases, activations, x, y, state, **hyper) -> (dW, db)

* ``weights``, ``biases``: lists of float64 NumPy arrays, ``weights[i]`` of shape
  ``(n_{i+1}, n_i)`` (torch.nn.Linear layout), ``biases[i]`` of shape ``(n_{i+1},)``;
* ``activations``: list of refimpl activation names (``"tanh"``, ``"leaky_relu(0.2)"``, ...);
* ``x``: ``(B, n_0)``; ``y``: ``(B, n_L)`` targets (mse) or integer labels ``(B,)`` (ce);
* ``state``: the rule's state as a dict of NumPy arrays / lists of arrays (e.g. FA's ``{"B": [...]}``),
  the same feedback matrices the reference uses;
* returns per-layer ``dW``, ``db`` (NumPy arrays or torch tensors) in gradient convention: what
  autograd's ``.grad`` would hold for BP (``W <- W - lr * dW`` descends), batch-mean loss.

With ``targets=True`` the implementation returns the targets instead (a list of length ``L + 1``,
``None`` where it has none) and they are compared with ``rule.targets(...)``.

Hypothesis drives the search over networks and batches; on a mismatch it shrinks to a minimal
counterexample, which :func:`check` returns (and the CLI prints, writes as JSON, and offers a
command that replays it).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

import refimpl as ri
from refimpl.backend import to_numpy
from .strategies import draw_network, draw_batch, ALL_ACTIVATIONS, INVERTIBLE_ACTIVATIONS
from .theorem import HypothesisDrawer, compare

__all__ = ["check", "replay", "load_impl", "resolve_rule", "state_to_host", "ConformResult", "RULE_NETWORKS",
           "ReferenceRejected"]

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


class ReferenceRejected(ValueError):
    """The reference rule rejected a drawn instance (a structural requirement the draw missed):
    a problem of the check's set-up, never blamed on the implementation."""

def resolve_rule(rule, hyper: Optional[dict] = None):
    """A rule instance from an instance, a name or spec (``"fa"``, ``"usf"``, ``"gaitprop:gamma=0.001"``;
    :func:`refimpl.rules.get`), with ``hyper`` applied."""
    return ri.rules.get(rule, **dict(hyper or {}))


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
    if v is None or isinstance(v, (int, float, str, bool)):
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


@dataclass
class ConformResult:
    rule: str
    passed: bool
    examples: int
    counterexample: Optional[dict] = None
    message: str = ""

    def summary(self) -> str:
        if self.passed:
            return f"conform {self.rule}: PASS on {self.examples} random instances"
        c = self.counterexample or {}
        if c.get("where") == "impl raised":
            return (f"conform {self.rule}: FAIL — the implementation raised on sizes={c.get('sizes')} "
                    f"activations={c.get('activations')} batch={c.get('batch')} loss={c.get('loss')}: "
                    f"{c.get('detail')}")
        return (f"conform {self.rule}: FAIL — minimal counterexample: sizes={c.get('sizes')} "
                f"activations={c.get('activations')} batch={c.get('batch')} loss={c.get('loss')} "
                f"worst at {c.get('where')} (relative error {c.get('error', math.nan):.3g}, "
                f"tolerance {c.get('tolerance', math.nan):.0e})\n{self.message}")


def _compare_once(rule, impl, net, x, y, loss, state, hyper, targets: bool):
    """Run both sides on one instance; returns (Evidence, labels)."""
    L = net.depth
    host_state = state_to_host(state)
    args = ([to_numpy(W) for W in net.weights], [to_numpy(b) for b in net.biases], list(net.activations),
            to_numpy(x), to_numpy(y), host_state)
    try:
        ref = rule.targets(net, state, x, y) if targets else rule.updates(net, state, x, y)[0]
    except (ValueError, TypeError) as exc:
        raise ReferenceRejected(f"the reference {type(rule).__name__} rejected the drawn instance (sizes "
                                f"{list(net.sizes)}, activations {list(net.activations)}): {exc}; restrict the "
                                "draw with network=... (proofs.conform.RULE_NETWORKS)") from exc
    if targets:
        got = impl(*args, **hyper)
        if len(got) != L + 1:
            raise ValueError(f"impl returned {len(got)} targets, expected {L + 1} (layers 0..L)")
        labels = [f"target[{l}]" for l in range(L + 1)]
        # Every layer where the reference defines a target must be matched: an implementation's
        # None there is a mismatch (compare() fails on a one-sided None), not a skipped layer;
        # otherwise an implementation returning no targets at all would pass vacuously. Layers
        # without a reference target (None, e.g. the input) are not compared.
        act = [None if r is None else g for g, r in zip(got, ref)]
        exp = list(ref)
        return compare(act, exp, "oracle_value", "float64", labels=labels), labels
    upd = ref
    out = impl(*args, **hyper)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ValueError("impl must return (dW, db): two lists of per-layer arrays")
    dW, db = out
    if len(dW) != L or len(db) != L:
        raise ValueError(f"impl returned {len(dW)} dW and {len(db)} db arrays, expected {L} each")
    labels = [f"dW[{i}]" for i in range(L)] + [f"db[{i}]" for i in range(L)]
    return compare(list(dW) + list(db), list(upd.dW) + list(upd.db), "oracle_grad", "float64",
                   labels=labels), labels


def _instance_json(net, x, y, loss, state_seed, state):
    return {"sizes": list(net.sizes), "activations": list(net.activations), "batch": int(x.shape[0]),
            "loss": loss, "state_seed": state_seed,
            "weights": [to_numpy(W).tolist() for W in net.weights],
            "biases": [to_numpy(b).tolist() for b in net.biases],
            "x": to_numpy(x).tolist(), "y": to_numpy(y).tolist(),
            "state": {k: (v.tolist() if isinstance(v, np.ndarray) else
                          [a.tolist() if isinstance(a, np.ndarray) else a for a in v] if isinstance(v, list) else v)
                      for k, v in state_to_host(state).items()}}


def check(rule, impl, *, instances: int = 100, hyper: Optional[dict] = None, impl_hyper: Optional[dict] = None,
          seed: int = 0, losses=("mse", "ce"), activations=ALL_ACTIVATIONS, targets: bool = False,
          network: Optional[dict] = None) -> ConformResult:
    """Check ``impl`` against the reference ``rule`` on ``instances`` Hypothesis-drawn instances.

    ``hyper`` sets the reference rule's hyper-parameters and is passed to ``impl`` as keywords
    (``impl_hyper`` overrides what ``impl`` receives). Returns a :class:`ConformResult`; on a
    mismatch it holds the shrunk (minimal) counterexample with all its arrays, which
    :func:`replay` runs again.

    For use inside a pytest suite: ``assert proofs.conform.check("fa", my_fa).passed``.
    """
    from hypothesis import given, settings, seed as hseed, HealthCheck, Phase, strategies as st

    hyper = dict(hyper or {})
    ref = resolve_rule(rule, hyper)
    impl = load_impl(impl)
    ih = dict(hyper if impl_hyper is None else impl_hyper)
    net_kwargs = dict(RULE_NETWORKS.get(type(ref).__name__, {}))
    net_kwargs.setdefault("activations", activations)
    net_kwargs.update(network or {})
    rule_loss = getattr(ref, "loss", None)
    loss_choices = (rule_loss,) if isinstance(rule_loss, str) else tuple(losses)
    failures, rejected = [], []
    count = {"n": 0}

    @settings(max_examples=instances, deadline=None, database=None, derandomize=False, print_blob=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    @hseed(seed)
    @given(st.data())
    def _search(data):
        d = HypothesisDrawer(data)
        loss = d.choice(loss_choices)
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
        r = dataclasses.replace(ref, loss=loss) if hasattr(ref, "loss") and rule_loss is not None and \
            loss != rule_loss else ref
        try:
            state = r.init(net, seed=state_seed)
        except (ValueError, TypeError) as exc:
            rejected.append(ReferenceRejected(
                f"{type(r).__name__}.init rejected the drawn network (sizes {list(net.sizes)}, activations "
                f"{list(net.activations)}): {exc}; restrict the draw with network=... (proofs.conform.RULE_NETWORKS)"))
            raise rejected[-1] from exc
        count["n"] += 1
        try:
            ev, _ = _compare_once(r, impl, net, x, y, loss, state, ih, targets)
        except ReferenceRejected as exc:
            rejected.append(exc)
            raise
        except Exception as exc:
            failures.append({**_instance_json(net, x, y, loss, state_seed, state), "where": "impl raised",
                             "error": math.inf, "tolerance": 0.0, "detail": f"{type(exc).__name__}: {exc}"})
            raise
        if not ev.holds:
            failures.append({**_instance_json(net, x, y, loss, state_seed, state),
                             "where": ev.detail.replace("worst at ", ""), "error": float(ev.error),
                             "tolerance": float(ev.tolerance), "detail": ev.detail})
            raise AssertionError(f"mismatch: {ev.detail} (error {ev.error:.3g})")

    name = rule if isinstance(rule, str) else type(rule).__name__
    try:
        _search()
    except Exception as exc:  # Hypothesis re-raises the minimal example's failure, run last
        if not failures:
            if rejected:  # the set-up's fault, not the implementation's: one clear error
                raise rejected[0] from None
            raise
        return ConformResult(name, False, count["n"], failures[-1], f"{type(exc).__name__}: {str(exc)[:300]}")
    return ConformResult(name, True, count["n"])


def replay(rule, impl, counterexample: dict, *, hyper: Optional[dict] = None,
           impl_hyper: Optional[dict] = None, targets: bool = False):
    """Run one stored counterexample again; returns the :class:`~proofs.theorem.Evidence`."""
    c = counterexample
    hyper = dict(hyper or {})
    ref = resolve_rule(rule, hyper)
    if hasattr(ref, "loss") and c["loss"] != getattr(ref, "loss"):
        ref = dataclasses.replace(ref, loss=c["loss"])
    net = ri.Network(tuple(np.asarray(W, dtype=np.float64) for W in c["weights"]),
                     tuple(np.asarray(b, dtype=np.float64) for b in c["biases"]), tuple(c["activations"]))
    x = np.asarray(c["x"], dtype=np.float64)
    y = np.asarray(c["y"])
    y = y.astype(np.int64) if c["loss"] == "ce" and y.ndim == 1 else y.astype(np.float64)
    state = ref.init(net, seed=c["state_seed"])
    ev, _ = _compare_once(ref, load_impl(impl), net, x, y, c["loss"], state,
                          dict(hyper if impl_hyper is None else impl_hyper), targets)
    return ev
