"""One training loop for every rule, with per-epoch metrics.

    from refimpl import data as D
    from refimpl.train import train, get_rule
    data = D.digits(seed=0)
    net = ri.Network.init([64, 64, 64, 10], activation="tanh", seed=0)
    net, state, history = train(get_rule("fa", loss="ce"), net, data, optimizer=ri.optim.Adam(lr=1e-3),
                                epochs=20, batch_size=32, seed=0)

Per mini-batch (the training-loop contract every rule family relies on):

1. if the rule has ``train_feedback(net, state, x, y) -> state``, it is called first (the rule's own
   feedback-training schedule for the batch: its iterations, learning rate and noise are the rule's
   hyper-parameters);
2. ``upd, state = rule.updates(net, state, x, y)`` (gradient convention);
3. the optimiser steps the forward weights and biases with ``upd.dW`` / ``upd.db``:
   ``(W, b) <- opt.step((W, b), (dW, db))`` with the epoch's learning rate
   ``lr_e = opt.lr * schedule(e)``.

The batch loss (the rule's own loss, before the step), the updates and the new parameters are
checked: anything non-finite stops training with :class:`NonFiniteLossError` naming the rule, epoch
and batch, instead of training on NaN.

After every epoch the network is evaluated on the full train and test sets with the rule's loss
(``rule.loss``, ``"mse"`` for rules without one): loss, and accuracy (fraction of
``argmax h_L == label``) for classification. ``h_L`` is the feed-forward output ``net(x)``, or
``rule.predict(net, state, x)`` for a rule that defines ``predict`` (its read-out is not the
feed-forward pass, e.g. CorInfoMax's free phase). The per-layer angle (degrees) between the rule's
``dW`` and BP's ``dW`` (``refimpl.rules.BP`` with the same loss, same network, same batch; see
:func:`refimpl.metrics.layer_angles`) is averaged over the epoch's batches (NaN entries, from zero
updates, are skipped).

Determinism: ``seed`` is split by :func:`derived_seeds` into a batch-order seed (one
``backend.rng`` permutation per epoch) and the rule-state seed (``rule.init(net, seed=...)``);
nothing else is random, so one seed gives one history (up to the wall-time entries). The rule
never gets ``seed`` itself: a network drawn with ``Network.init(seed=s)`` and FA feedback drawn
with ``seed=s`` are the *same* matrices (same generator, same xavier draw), which silently turns
FA into BP at initialisation.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import math
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

from . import losses as _losses
from . import optim as _optim
from .backend import namespace, rng as _rng, from_numpy, device_of
from .data import Dataset, targets as _targets
from .layers import describe_layers
from .metrics import layer_angles

__all__ = ["train", "evaluate", "build_network", "build_rules", "check_rules_support", "TrainResult", "NonFiniteLossError", "get_rule", "parse_rule_spec",
           "available_rules", "rule_names", "derived_seeds", "rule_loss", "Constant", "StepDecay", "Cosine", "Exponential",
           "parse_schedule", "RULE_MODULES"]

from .rules.registry import (ALIASES, RULE_MODULES, available_rules, get_rule, parse_rule_spec,  # noqa: F401
                             rule_names, _canon, _is_rule_class, _resolve)


def rule_loss(rule) -> str:
    """The loss a rule trains with (its ``loss`` field; ``"mse"`` for rules without one)."""
    return _losses.get(getattr(rule, "loss", "mse")).name


def rule_hyper(rule) -> dict:
    """The rule's hyper-parameters as a JSON-friendly dict (non-scalars as their repr)."""
    out = {}
    if dataclasses.is_dataclass(rule):
        for f in dataclasses.fields(rule):
            v = getattr(rule, f.name)
            out[f.name] = v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
    return out


# --- learning-rate schedules (pure functions of the epoch index) -------------------------------

@dataclass(frozen=True)
class Constant:
    """Factor 1 for every epoch."""

    def __call__(self, epoch: int) -> float:
        return 1.0


@dataclass(frozen=True)
class StepDecay:
    """Factor ``gamma ** (number of milestones <= epoch)`` (``torch.optim.lr_scheduler.MultiStepLR``).

    ``epoch`` is the 0-based index of the epoch about to run, so ``milestones=(60, 90)`` trains
    epochs 61.. (1-based) with ``0.1 * lr`` as PEPITA's ``if epoch in [60, 90]`` does.
    """

    milestones: tuple = (60, 90)
    gamma: float = 0.1

    def __post_init__(self):
        ms = tuple(int(m) for m in self.milestones)
        if any(m < 0 for m in ms) or list(ms) != sorted(ms):
            raise ValueError(f"milestones: expected increasing epochs >= 0, got {self.milestones!r}")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise ValueError(f"gamma: expected a finite number >= 0, got {self.gamma!r}")
        object.__setattr__(self, "milestones", ms)

    def __call__(self, epoch: int) -> float:
        return float(self.gamma) ** sum(1 for m in self.milestones if epoch >= m)


@dataclass(frozen=True)
class Cosine:
    """``min + (1 - min) * (1 + cos(pi * epoch / epochs)) / 2`` (SGDR without restarts)."""

    epochs: int
    min_factor: float = 0.0

    def __post_init__(self):
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ValueError(f"epochs: expected an int >= 1, got {self.epochs!r}")
        if not 0 <= self.min_factor <= 1:
            raise ValueError(f"min_factor: expected a value in [0, 1], got {self.min_factor!r}")

    def __call__(self, epoch: int) -> float:
        t = min(max(epoch, 0), self.epochs) / self.epochs
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))


@dataclass(frozen=True)
class Exponential:
    """``gamma ** epoch`` (CorInfoMax's ``mu0 * d ** epoch``)."""

    gamma: float = 0.95

    def __post_init__(self):
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"gamma: expected a finite number > 0, got {self.gamma!r}")

    def __call__(self, epoch: int) -> float:
        return float(self.gamma) ** epoch


def parse_schedule(text: str | None, epochs: int):
    """``constant``, ``cosine``, ``step:60,90[:0.1]`` or ``exp:0.95`` -> a schedule."""
    if text is None or text == "constant":
        return Constant()
    kind, _, rest = text.partition(":")
    if kind == "cosine":
        return Cosine(epochs, float(rest) if rest else 0.0)
    if kind == "step":
        ms, _, g = rest.partition(":")
        if not ms:
            raise ValueError("schedule: 'step' needs milestones, e.g. step:60,90 or step:60,90:0.1")
        return StepDecay(tuple(int(m) for m in ms.split(",")), float(g) if g else 0.1)
    if kind in ("exp", "exponential"):
        return Exponential(float(rest) if rest else 0.95)
    raise ValueError(f"schedule: expected constant, cosine[:MIN], step:M1,M2[:GAMMA] or exp:GAMMA, got {text!r}")


# --- the loop ----------------------------------------------------------------------------------

class NonFiniteLossError(ValueError):
    """Training hit a NaN/inf (loss, update or parameter); ``epoch`` and ``batch`` say where."""

    def __init__(self, message: str, *, rule: str, epoch: int, batch: int | None):
        super().__init__(message)
        self.rule, self.epoch, self.batch = rule, epoch, batch


class TrainResult(NamedTuple):
    net: object
    state: object
    history: list


def _finite(x) -> bool:
    xp = namespace(x)
    return bool(xp.all(xp.isfinite(x)))


def evaluate(net, data: Dataset, loss: str, chunk: int = 8192, outputs: int | None = None,
             forward: Callable | None = None) -> dict:
    """Loss (batch mean over the whole split) and, for classification, accuracy, on train and test.

    ``forward(x) -> h_L`` is the read-out (default ``net(x)``; the loop passes
    ``lambda x: rule.predict(net, state, x)`` for rules with a ``predict`` method).

    ``outputs``: only the first ``outputs`` units of ``h_L`` are seen by the loss and the argmax
    (auxiliary output units above them, as in GAIT-prop's square networks); default all.
    Returns ``{"train_loss", "test_loss"[, "train_accuracy", "test_accuracy"]}`` as floats.
    """
    L = _losses.get(loss)
    k = net.sizes[-1] if outputs is None else int(outputs)
    forward = net if forward is None else forward
    out = {}
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        n = int(x.shape[0])
        tgt = _targets(data, L.name, split)
        total, correct = 0.0, 0
        xp = namespace(x)
        for s in range(0, n, chunk):
            e = min(s + chunk, n)  # array_api_strict rejects out-of-bounds slice stops
            h = forward(x[s:e, ...])[:, :k]
            total += float(L.value(h, tgt[s:e, ...])) * int(h.shape[0])
            if data.task == "classification":
                correct += int(xp.sum(xp.astype(xp.argmax(h, axis=1) == y[s:e], xp.int64)))
        out[f"{split}_loss"] = total / n
        if data.task == "classification":
            out[f"{split}_accuracy"] = correct / n
    return out


def _nanmean(rows):
    if not rows:
        return []
    cols = list(zip(*rows))
    res = []
    for c in cols:
        vals = [v for v in c if not math.isnan(v)]
        res.append(sum(vals) / len(vals) if vals else math.nan)
    return res


def derived_seeds(seed: int) -> tuple:
    """``(batch-order seed, rule-state seed)``: the two children of ``SeedSequence(seed)``.

    Both differ from ``seed`` itself on purpose: ``Network.init(seed=s)`` and a rule's
    ``init(net, seed=s)`` may draw with the same generator and distribution (e.g. xavier-uniform
    feedback matrices), which would make FA's ``B`` equal the initial ``W`` and FA equal BP at
    the start of training.
    """
    import numpy as np  # host-side seed arithmetic only

    children = np.random.SeedSequence(seed).spawn(2)
    return tuple(int(c.generate_state(1, dtype=np.uint32)[0]) for c in children)


def readout(rule, net, state):
    """The map ``x -> h_L`` the metrics use: ``rule.predict(net, state, x)`` if the rule defines
    ``predict`` (a rule whose read-out is not the feed-forward pass, e.g. CorInfoMax's free phase),
    else ``net(x)``."""
    if callable(getattr(rule, "predict", None)):
        return lambda x: rule.predict(net, state, x)
    return net


def _bp_reference(net, x, y, loss, k):
    """BP's gradient of ``loss`` on the first ``k`` output units (zero error on the others):
    ``refimpl.rules.bp.backward`` / ``weight_gradients`` with ``e = [dL/dh_L[:, :k], 0]``; for
    ``k = n_L`` this is exactly ``BP(loss).updates``."""
    from .rules.bp import backward, weight_gradients

    xp = namespace(x)
    trace = net.forward(x)
    h = trace.h[-1]
    e = loss.grad(h[:, :k], y)
    if k < h.shape[1]:
        e = xp.concat([e, xp.zeros((h.shape[0], h.shape[1] - k), dtype=h.dtype, device=device_of(h))], axis=1)
    return weight_gradients(net, trace, backward(net, trace, e))


def train(rule, net, data: Dataset, *, optimizer="adam", epochs: int, batch_size: int = 32, seed: int = 0,
          schedule: Callable[[int], float] | None = None, angles: bool = True, drop_last: bool = False,
          callback: Callable | None = None, state=None, name: str | None = None,
          outputs: int | None = None) -> TrainResult:
    """Train ``net`` on ``data`` with ``rule``; returns ``TrainResult(net, state, history)``.

    Arguments:
        rule: a rule instance (or a name/spec for :func:`get_rule`).
        net: the initial :class:`~refimpl.network.Network`; it must fit the data
            (``net.input_shape = data.input_shape``: ``(n_0,)``, or ``(C, H, W)`` for a convolutional
            network on image data; ``n_L = data.n_outputs``), same backend and dtype.
        data: a :class:`~refimpl.data.Dataset`. Classification targets are the integer labels for
            ``loss="ce"`` and one-hot rows for ``loss="mse"``.
        optimizer: an optimiser from :mod:`refimpl.optim` (``SGD``, ``Adam``) or its name (default
            hyper-parameters).
        epochs: number of passes over the training set (>= 1).
        batch_size: mini-batch size, 1..n_train; the last partial batch is used unless ``drop_last``.
        seed: seeds the batch order and the rule's state, ``rule.init(net, seed=rule_seed)``, through
            :func:`derived_seeds` (never ``seed`` itself, which usually seeded the network).
        schedule: ``epoch (0-based) -> factor``; epoch ``e`` trains with ``optimizer.lr * factor``
            (:class:`Constant` if None; see :class:`StepDecay`, :class:`Cosine`, :class:`Exponential`).
        angles: compute the per-layer angle to BP's update on every batch (one extra BP step).
        callback: called as ``callback(record, net, state)`` after every epoch.
        state: the rule's initial state (default ``rule.init(net, seed=derived_seeds(seed)[1])``).
        name: how errors name the rule (default: its class name).
        outputs: the number of leading output units that carry the task (default: the rule's
            ``outputs`` field if it has one, else all ``n_L``). With ``outputs < n_L`` the units
            above are auxiliary (GAIT-prop's square networks, spec gaitprop.md §5): a rule with an
            ``outputs`` field left at None gets ``outputs`` set; a rule without one must use
            ``mse``, and its targets for the auxiliary units are their own forward values (zero
            error there). Loss, accuracy and the BP reference see the first ``outputs`` units.

    Returns the final network, the final rule state, and the history: one dict per epoch with
    ``epoch`` (1-based), ``lr``, ``train_loss``, ``test_loss``, ``train_accuracy``,
    ``test_accuracy`` (classification only), ``batch_loss`` (mean pre-step batch loss),
    ``angles`` (per-layer degrees to BP, or None), ``seconds`` (wall time of the epoch's rule and
    optimiser steps, excluding evaluation and the BP comparison), ``wall_seconds`` (the whole
    epoch), ``steps`` (optimiser steps so far).

    Raises:
        ValueError: bad arguments; :class:`NonFiniteLossError` (a ValueError) when a batch loss,
            an update or a parameter becomes non-finite.
    """
    rule = get_rule(rule)
    label = name or type(rule).__name__
    if not isinstance(data, Dataset):
        raise TypeError(f"data: expected a refimpl.data.Dataset, got {type(data).__name__}")
    for nm, v, lo in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{nm}: expected an integer >= {lo}, got {v!r}")
    if batch_size > data.n_train:
        raise ValueError(f"batch_size: expected at most the {data.n_train} training samples of "
                         f"{data.name!r}, got {batch_size}")
    n_out = net.sizes[-1]
    k = outputs if outputs is not None else getattr(rule, "outputs", None)
    k = n_out if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_out:
        raise ValueError(f"outputs: expected an integer in [1, {n_out}] (the network's output width), got {k!r}")
    if tuple(net.input_shape) != tuple(data.input_shape) and (len(net.input_shape) > 1 or data.is_images):
        hint = ("; image data for a dense network: data.flat()" if data.is_images else
                "; flat data for a convolutional network: data.images((C, H, W)) or an image loader "
                "(digits(images=True), teacher_images)")
        raise ValueError(f"net: expected input shape {tuple(data.input_shape)} (the samples of {data.name!r}), got "
                         f"{tuple(net.input_shape)}{hint if len(net.input_shape) != len(data.input_shape) else ''}")
    if net.sizes[0] != data.n_inputs or k != data.n_outputs:
        extra = f" (in its first {k} output units)" if k < n_out else ""
        raise ValueError(f"net: expected input width {data.n_inputs} and output width {data.n_outputs}{extra} for "
                         f"{data.name!r}, got sizes {list(net.sizes)}")
    pad_aux = False
    if k < n_out:
        has_field = dataclasses.is_dataclass(rule) and "outputs" in {f.name for f in dataclasses.fields(rule)}
        if has_field and getattr(rule, "outputs") is None:
            rule = dataclasses.replace(rule, outputs=k)
        elif has_field and getattr(rule, "outputs") != k:
            raise ValueError(f"outputs: the rule has outputs={getattr(rule, 'outputs')}, the loop was given {k}")
        elif not has_field:
            if rule_loss(rule) != "mse":
                raise ValueError(f"outputs: rule {label!r} has no `outputs` parameter; auxiliary output units "
                                 f"({n_out - k} here) need loss 'mse' (targets = their forward values)")
            pad_aux = True
    xp = namespace(net.weights[0], data.x_train, names=("net", "data"))
    if net.dtype != data.dtype:
        raise TypeError(f"data: expected dtype {net.dtype} (as the network), got {data.dtype}; "
                        "convert with data.to(dtype=...)")
    if isinstance(optimizer, str):
        optimizer = _optim.get(optimizer)
    if not (hasattr(optimizer, "step") and hasattr(optimizer, "init") and hasattr(optimizer, "lr")):
        raise TypeError(f"optimizer: expected an optimiser from refimpl.optim or 'sgd'/'adam', got {optimizer!r}")
    schedule = Constant() if schedule is None else schedule
    if not callable(schedule):
        raise TypeError(f"schedule: expected a callable epoch -> factor, got {schedule!r}")

    loss_name = rule_loss(rule)
    loss = _losses.get(loss_name)
    y_all = _targets(data, loss_name, "train")
    batch_seed, rule_seed = derived_seeds(seed)
    if state is None:
        state = rule.init(net, seed=rule_seed)
    has_fb = callable(getattr(rule, "train_feedback", None))
    gen = _rng(batch_seed)
    n, L = data.n_train, net.depth
    dev = device_of(data.x_train)
    opt_state = None
    history = []
    steps = 0
    for epoch in range(1, epochs + 1):
        factor = float(schedule(epoch - 1))
        if not (math.isfinite(factor) and factor >= 0):
            raise ValueError(f"schedule: factor for epoch {epoch} must be finite and >= 0, got {factor!r}")
        opt = dataclasses.replace(optimizer, lr=optimizer.lr * factor)
        perm = gen.permutation(n)
        t_epoch = time.perf_counter()
        t_train = 0.0
        batch_losses, angle_rows = [], []
        stop = n - n % batch_size if drop_last else n
        for b, start in enumerate(range(0, stop, batch_size)):
            idx = from_numpy(perm[start:start + batch_size], xp, device=dev)
            xb = xp.take(data.x_train, idx, axis=0)
            yb = xp.take(y_all, idx, axis=0)
            if pad_aux:  # auxiliary output units target their own forward values (zero error)
                yb = xp.concat([yb, net(xb)[:, k:]], axis=1)
            t0 = time.perf_counter()
            if has_fb:
                state = rule.train_feedback(net, state, xb, yb)
            upd, new_state = rule.updates(net, state, xb, yb)
            where = f"rule {label!r}, epoch {epoch}, batch {b} (lr {opt.lr:g})"
            lval = upd.record.get("loss") if isinstance(upd.record, dict) else None
            lval = float(loss.value(net(xb)[:, :k], yb[..., :k] if pad_aux else yb) if lval is None else lval)
            if not math.isfinite(lval):
                raise NonFiniteLossError(f"non-finite training loss {lval} at {where}; the run diverged "
                                         "(lower the learning rate?)", rule=label, epoch=epoch, batch=b)
            grads = tuple(upd.dW) + tuple(upd.db)
            params = tuple(net.weights) + tuple(net.biases)
            if len(grads) != len(params):
                raise ValueError(f"rule {label!r}: updates must have {L} dW and {L} db, got "
                                 f"{len(upd.dW)} and {len(upd.db)}")
            for i, g in enumerate(grads):
                if not _finite(g):
                    kind = "dW" if i < L else "db"
                    raise NonFiniteLossError(f"non-finite update {kind}[{i % L}] at {where}", rule=label,
                                             epoch=epoch, batch=b)
            if opt_state is None:
                opt_state = opt.init(params)
            new_params, opt_state = opt.step(params, grads, opt_state)
            for i, p in enumerate(new_params):
                if not _finite(p):
                    kind = "weights" if i < L else "biases"
                    raise NonFiniteLossError(f"non-finite {kind}[{i % L}] after the optimiser step at {where}; "
                                             "the run diverged (lower the learning rate?)", rule=label,
                                             epoch=epoch, batch=b)
            t_train += time.perf_counter() - t0
            if angles:
                ref_dW, _ = _bp_reference(net, xb, yb[:, :k] if pad_aux else yb, loss, k)
                angle_rows.append(layer_angles(upd.dW, ref_dW))
            net = net.replace(weights=new_params[:L], biases=new_params[L:])
            state = new_state
            batch_losses.append(lval)
            steps += 1
        metrics = evaluate(net, data, loss_name, outputs=k, forward=readout(rule, net, state))
        for split in ("train_loss", "test_loss"):
            if not math.isfinite(metrics[split]):
                raise NonFiniteLossError(f"non-finite {split} {metrics[split]} after epoch {epoch} of rule {label!r}",
                                         rule=label, epoch=epoch, batch=None)
        record = {"epoch": epoch, "lr": opt.lr, **metrics,
                  "batch_loss": sum(batch_losses) / len(batch_losses),
                  "angles": _nanmean(angle_rows) if angles else None,
                  "seconds": t_train, "wall_seconds": time.perf_counter() - t_epoch, "steps": steps}
        history.append(record)
        if callback is not None:
            callback(record, net, state)
    return TrainResult(net, state, history)


# --- side-by-side comparison (``refimpl train`` and benchmarks/reproduce) ----------------------

def versions() -> dict:
    """Library versions for result records (ENGINEERING.md rule 15)."""
    import platform
    import sys

    out = {"python": platform.python_version()}
    for mod in ("numpy", "scipy", "array_api_compat", "torch", "cupy", "sklearn", "mnist1d"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    from . import __version__

    out["refimpl"] = __version__
    return out


#: What a rule needs from the network and the loss when the user leaves them at their defaults
#: (``refimpl train --rule NAME`` with nothing else must train): GAIT-prop and TP through exact
#: inverses invert layers 2..L (square, invertible activation; tanh's inverse leaves its domain on
#: the first nudged target), the microcircuit and CorInfoMax nudge with a squared error.
RULE_NEEDS = {
    "GaitProp": {"network": "square", "loss": "mse"},
    "TPInverse": {"network": "square", "loss": "mse"},
    "Microcircuit": {"loss": "mse"},
    "CorInfoMax": {"loss": "mse"},
}
#: The square network they get: every hidden and output layer ``width`` wide (the task on the first
#: ``n_outputs`` output units, the others auxiliary), leaky-ReLU 0.1, orthogonal init (README's
#: GAIT-prop digits experiment).
SQUARE_NETWORK = {"activation": "leaky_relu(0.1)", "output_activation": "leaky_relu(0.1)", "init": "orthogonal"}


def rule_network(rule, data: Dataset, hidden=(64, 64)) -> dict | None:
    """The network :func:`compare` gives ``rule`` when the user did not choose one: None (the
    shared default) or ``{"sizes", "outputs", "activation", "output_activation", "init"}``."""
    need = RULE_NEEDS.get(type(rule).__name__, {})
    if need.get("network") != "square":
        return None
    width = max([data.n_inputs if not hidden else int(hidden[0]), data.n_outputs])
    depth = max(2, len(hidden) + 1)
    return dict(SQUARE_NETWORK, sizes=[data.n_inputs] + [width] * depth, outputs=data.n_outputs)


def build_network(data: Dataset, *, layers=None, sizes=None, hidden=(64, 64), activation="tanh",
                  output_activation="linear", init="xavier", seed: int = 0):
    """The initial network for ``data`` (its backend, dtype and device).

    ``layers``: an architecture string (:func:`refimpl.layers.parse_architecture`, e.g.
    ``"c8k3p1+mp2 c16k3p1+mp2 l10"``) or layer specs, built by ``Network.build(data.input_shape,
    ...)``; the last layer must output ``data.n_outputs`` units. Without ``layers``, a dense
    ``Network.init([n_0, *hidden, n_out])`` (or ``sizes``) on the flattened inputs.
    """
    from .network import Network

    dt = "float64" if data.dtype == data.xp.float64 else "float32"
    common = dict(activation=activation, output_activation=output_activation, init=init, seed=seed, dtype=dt,
                  xp=data.xp, device=device_of(data.x_train))
    if layers is not None:
        net = Network.build(data.input_shape, layers, **common)
        if net.sizes[-1] != data.n_outputs:
            raise ValueError(f"layers: the last layer must have the {data.n_outputs} outputs of {data.name!r}, "
                             f"got {net.sizes[-1]}")
        return net
    if data.is_images:
        raise ValueError(f"data: {data.name!r} has image samples {tuple(data.input_shape)}; give a convolutional "
                         "architecture (layers=...) or flatten them for a dense network (data.flat())")
    if sizes is None:
        sizes = [data.n_inputs, *[int(h) for h in hidden], data.n_outputs]
    return Network.init(list(sizes), **common)


def build_rules(rules, loss: str, user_loss: str | None = "given") -> dict:
    """``{key: rule instance}`` from rule specs (``"bp"``, ``"gaitprop:gamma=0.001"``), instances, or a
    dict ``{key: spec or rule}``; ``loss`` is given to every rule that has a ``loss`` parameter and
    whose spec does not set it (with ``user_loss=None``, i.e. the user chose no loss, a rule that
    needs a squared error (:data:`RULE_NEEDS`) gets ``"mse"``). ValueError on a duplicate key or an unknown rule."""
    if isinstance(rules, dict):
        items = list(rules.items())
    else:
        items = []
        for r in rules:
            key = r if isinstance(r, str) else type(r).__name__.lower()
            items.append((key, r))
    keys = [k for k, _ in items]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"rules: each rule must appear once (use distinct hyper-parameters), got {dup} twice")
    built = {}
    for key, r in items:
        if isinstance(r, str):
            name, hyper = parse_rule_spec(r)
            cls, preset = _resolve(name)
            rule_loss_ = loss
            if user_loss is None and RULE_NEEDS.get(cls.__name__, {}).get("loss"):
                rule_loss_ = RULE_NEEDS[cls.__name__]["loss"]
            if "loss" not in {**preset, **hyper} and dataclasses.is_dataclass(cls) and \
                    "loss" in {f.name for f in dataclasses.fields(cls)}:
                r = get_rule(r, loss=rule_loss_)
            else:
                r = get_rule(r)
        built[key] = r
    return built


def check_rules_support(rules: dict, net, data: Dataset, seed: int = 0) -> None:
    """ValueError naming the first rule of ``{key: rule}`` that refuses ``net`` (e.g. a dense-only
    rule on a convolutional network): each rule is initialised and takes one update on two training
    samples, nothing is kept. Lets a command line fail fast, before any training."""
    k = min(2, data.n_train)
    x = data.x_train[:k, ...]
    for key, rule in rules.items():
        y = _targets(data, rule_loss(rule), "train")[:k, ...]
        try:
            rule.updates(net, rule.init(net, seed=derived_seeds(seed)[1]), x, y)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"rule {key!r} does not run on this network ({exc})") from None


def compare(rules, data: Dataset, *, sizes=None, hidden=(64, 64), activation="tanh",
            output_activation="linear", init="xavier", optimizer="adam", epochs: int = 20,
            batch_size: int = 32, seed: int = 0, schedule=None, loss: str | None = None,
            angles: bool = True, progress=None, net=None, keep_going: bool = True,
            outputs: int | None = None, layers=None, auto_network: bool = False) -> dict:
    """Train several rules side by side from the same initial weights; returns the metrics dict.

    ``rules``: rule specs (``"bp"``, ``"gaitprop:gamma=0.001"``), rule instances, or a dict
    ``{key: rule}``. The network is ``Network.init([n_in, *hidden, n_out], activation,
    output_activation, init, seed=seed)`` on the data's backend and dtype (or ``net``, given), and
    every rule starts from that very network. ``loss`` (default ``"ce"`` for classification,
    ``"mse"`` for regression) is given to every rule that has a ``loss`` parameter and whose spec
    does not set it. ``progress(key, record)`` is called after every epoch of every rule.
    ``sizes`` (full widths) overrides ``hidden``; ``outputs`` is passed to :func:`train` (task
    units of a wider output layer). ``layers`` (an architecture string such as
    ``"c8k3p1+mp2 c16k3p1+mp2 l10"``, or layer specs) builds a convolutional network on image data
    instead (:func:`build_network`). With ``loss=None`` a rule that needs a squared error
    (:data:`RULE_NEEDS`: the microcircuit, CorInfoMax, GAIT-prop) gets ``"mse"``; with
    ``auto_network`` (the user chose no network) a rule that inverts layers gets its own square
    network (:func:`rule_network`), recorded in its entry's ``"network"``. Before any training every
    rule is tried on a two-sample batch of its network: a rule that rejects its network, loss or
    data raises ``ValueError("rule KEY: ...")`` at once.

    The result follows ``metrics.json``'s schema: ``{"data", "seed", "rules": {key: {"epochs":
    [records], "initial": {...}, "rule": class name, "hyper": {...}, "seconds": total}}, "config",
    "network", "dataset", "versions"}``. With ``keep_going``, a rule that diverges or raises a
    ``ValueError``/``TypeError`` gets an ``"error"`` entry (its epochs so far are kept) and the others
    still run; otherwise the error propagates.
    """
    from .network import Network

    sizes_given = sizes if (net is None and layers is None) else list(net.sizes) if net is not None else "layers"
    user_loss = loss
    if loss is None:
        loss = "ce" if data.task == "classification" else "mse"
    # arguments shared by every rule are checked once, up front (train() checks them again)
    for nm, v in (("epochs", epochs), ("batch_size", batch_size), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if nm == "seed" else 1):
            raise ValueError(f"{nm}: expected an integer >= {0 if nm == 'seed' else 1}, got {v!r}")
    if batch_size > data.n_train:
        raise ValueError(f"batch_size: expected at most the {data.n_train} training samples of "
                         f"{data.name!r}, got {batch_size}")
    built = build_rules(rules, loss, user_loss)
    if net is None:
        net = build_network(data, layers=layers, sizes=sizes, hidden=hidden, activation=activation,
                            output_activation=output_activation, init=init, seed=seed)
    opt = _optim.get(optimizer) if isinstance(optimizer, str) else optimizer
    result = {"data": data.name, "seed": seed, "rules": {},
              "config": {"epochs": epochs, "batch_size": batch_size, "optimizer": repr(opt),
                         "schedule": repr(schedule if schedule is not None else Constant()), "loss": loss,
                         "angles": angles},
              "network": {"sizes": list(net.sizes), "activations": list(net.activations), "init": init,
                          "dtype": str(net.dtype), "input_shape": list(net.input_shape),
                          "layers": None if net.is_dense else describe_layers(net.layers)},
              "dataset": {"name": data.name, "task": data.task, "n_train": data.n_train, "n_test": data.n_test,
                          "n_inputs": data.n_inputs, "input_shape": list(data.input_shape),
                          "n_classes": data.n_classes},
              "versions": versions()}
    nets = {}
    for key, rule in built.items():  # each rule's network, and a two-sample try before any training
        own = rule_network(rule, data, hidden) if (auto_network and sizes_given is None) else None
        if own is not None:
            dt = "float64" if data.dtype == data.xp.float64 else "float32"
            rnet = Network.init(own["sizes"], activation=own["activation"], output_activation=own["output_activation"],
                                init=own["init"], seed=seed, dtype=dt, xp=data.xp, device=device_of(data.x_train))
            nets[key] = (rnet, own["outputs"], own)
        else:
            nets[key] = (net, outputs, None)
        _preflight(key, rule, nets[key][0], data, nets[key][1])
    for key, rule in built.items():
        net, outputs_k, own = nets[key]
        k = outputs_k if outputs_k is not None else getattr(rule, "outputs", None)
        entry = {"rule": type(rule).__name__, "hyper": rule_hyper(rule), "loss": rule_loss(rule),
                 "readout": "predict" if callable(getattr(rule, "predict", None)) else "forward", "epochs": []}
        if own is not None:
            entry["network"] = {"sizes": list(net.sizes), "activations": list(net.activations), "init": own["init"],
                                "outputs": k, "why": f"{type(rule).__name__} inverts layers 2..L: a square network"}
        try:
            fwd = readout(rule, net, rule.init(net, seed=derived_seeds(seed)[1])) if entry["readout"] == "predict" \
                else net
            entry["initial"] = evaluate(net, data, rule_loss(rule), outputs=k, forward=fwd)
        except (ValueError, TypeError):  # the rule rejects this network: train() reports it below
            entry["initial"] = {}
        result["rules"][key] = entry

        def cb(record, _net, _state, key=key, entry=entry):
            entry["epochs"].append(record)
            if progress is not None:
                progress(key, record)

        try:
            train(rule, net, data, optimizer=opt, epochs=epochs, batch_size=batch_size, seed=seed,
                  schedule=schedule, angles=angles, callback=cb, name=key, outputs=outputs_k)
        except (ValueError, TypeError) as exc:
            if not keep_going:
                raise
            entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["seconds"] = sum(r["seconds"] for r in entry["epochs"])
        _warn_if_chance(key, entry, data)
    return result


def chance_accuracy(data: Dataset) -> float | None:
    """Test accuracy of always answering the most frequent test class (None for regression)."""
    if data.task != "classification":
        return None
    from .backend import to_numpy
    import numpy as np

    y = np.asarray(to_numpy(data.y_test)).astype(int).ravel()
    return float(np.bincount(y).max() / y.size)


def _warn_if_chance(key, entry, data) -> None:
    """A run that ends within 10 points of chance accuracy is legal but says nothing: warn, and
    record it in the entry (``"near_chance"``)."""
    import warnings

    chance = chance_accuracy(data)
    if chance is None or not entry["epochs"] or "error" in entry:
        return
    acc = entry["epochs"][-1].get("test_accuracy")
    if acc is not None and math.isfinite(acc) and acc < chance + 0.1:
        entry["near_chance"] = {"test_accuracy": acc, "chance": chance}
        warnings.warn(f"rule {key}: final test accuracy {acc:.3f} is near chance ({chance:.3f}): the run "
                      "learned (almost) nothing; check the rule's hyper-parameters (learning rate, beta, gamma) "
                      "and the epochs", RuntimeWarning, stacklevel=3)


def _preflight(key, rule, net, data: Dataset, outputs) -> None:
    """One ``rule.init`` + ``rule.updates`` on two training samples: a rule that rejects this
    network, loss or data fails here, naming the rule, before any epoch is spent."""
    k = outputs if outputs is not None else getattr(rule, "outputs", None)
    k = net.sizes[-1] if k is None else k
    try:
        if net.sizes[0] != data.n_inputs or k != data.n_outputs:
            raise ValueError(f"net: expected input width {data.n_inputs} and output width {data.n_outputs} for "
                             f"{data.name!r}, got sizes {list(net.sizes)}")
        r = rule
        has_field = dataclasses.is_dataclass(rule) and "outputs" in {f.name for f in dataclasses.fields(rule)}
        if k < net.sizes[-1] and has_field and getattr(rule, "outputs") is None:
            r = dataclasses.replace(rule, outputs=k)
        x = data.x_train[:2]
        y = _targets(data, rule_loss(r), "train")[:2]
        if k < net.sizes[-1] and not has_field:
            return  # auxiliary targets are filled in by train()
        st = r.init(net, seed=0)
        if callable(getattr(r, "train_feedback", None)):
            st = r.train_feedback(net, st, x, y)
        r.updates(net, st, x, y)
    except (ValueError, TypeError) as exc:
        msg = " ".join(str(exc).split())
        hint = ""
        if RULE_NEEDS.get(type(rule).__name__, {}).get("network") == "square":
            hint = (" (leave --sizes/--hidden/--outputs unset for its default square network, or give square "
                    "layers 2..L, e.g. --sizes 64,64,64,64 --outputs 10 --activation 'leaky_relu(0.1)' "
                    "--output-activation 'leaky_relu(0.1)')")
        raise ValueError(f"rule {key}: {msg}{hint}") from None


def write_metrics(path, result: dict) -> None:
    """Write ``result`` as JSON (NaN/inf as null, so the file is strict JSON)."""
    import json

    def clean(o):
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, float) and not math.isfinite(o):
            return None
        return o

    with open(path, "w") as f:
        json.dump(clean(result), f, indent=1, allow_nan=False)
        f.write("\n")


def _fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_table(result: dict) -> str:
    """The final-epoch table printed by ``refimpl train`` (numbers as in metrics.json); a rule that
    failed, or ended near chance, gets its whole message on the lines below the table."""
    from .console import table

    rows, notes = [], []
    head = ["rule", "epochs", "train_loss", "test_loss", "train_acc", "test_acc", "angle_to_bp_deg (per layer)",
            "seconds"]
    for key, e in result["rules"].items():
        last = e["epochs"][-1] if e["epochs"] else {}
        ang = last.get("angles")
        ang_s = "/".join(_fmt(a, ".1f") for a in ang) if ang else "-"
        rows.append([key, str(last.get("epoch", 0)), _fmt(last.get("train_loss"), ".4f"),
                     _fmt(last.get("test_loss"), ".4f"), _fmt(last.get("train_accuracy"), ".4f"),
                     _fmt(last.get("test_accuracy"), ".4f"), ang_s, _fmt(e.get("seconds"), ".2f")])
        if "error" in e:
            notes.append(f"{key}: error: {e['error']}")
        if "near_chance" in e:
            nc = e["near_chance"]
            notes.append(f"{key}: test accuracy {nc['test_accuracy']:.3f} is near chance ({nc['chance']:.3f})")
        if "network" in e:
            notes.append(f"{key}: trained its own network {e['network']['sizes']} "
                         f"({'/'.join(e['network']['activations'])}, {e['network']['init']} init, task on the first "
                         f"{e['network']['outputs']} outputs): {e['network']['why']}")
    out = table(head, rows, align=["left"] + ["right"] * 5 + ["left", "right"])
    return out + ("\n" + "\n".join(notes) if notes else "")


def plot_curves(result: dict, path) -> None:
    """Learning curves as a PNG: loss (train dashed, test solid), accuracy, per-layer angle to BP.

    matplotlib (the ``plot`` extra) is imported here, with the non-interactive Agg backend.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("plotting needs matplotlib (pip install refimpl[plot])") from exc
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    classification = result.get("dataset", {}).get("task", "classification") == "classification"
    ncols = 3 if classification else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    omitted = False
    rule_handles, layers_seen = [], 0
    for i, (key, e) in enumerate(result["rules"].items()):
        if not e["epochs"]:
            continue
        c = colors[i % len(colors)]
        rule_handles.append(Line2D([], [], color=c, lw=2, label=key))
        ep = [0] + [r["epoch"] for r in e["epochs"]]
        init = e.get("initial", {})
        for split, ls in (("train", "--"), ("test", "-")):
            ys = [init.get(f"{split}_loss", math.nan)] + [r[f"{split}_loss"] for r in e["epochs"]]
            axes[0].plot(ep, ys, ls, color=c)
            if classification:
                ys = [init.get(f"{split}_accuracy", math.nan)] + [r[f"{split}_accuracy"] for r in e["epochs"]]
                axes[1].plot(ep, ys, ls, color=c)
        angs = [r.get("angles") for r in e["epochs"]]
        if angs and angs[0] is not None:
            for layer in range(len(angs[0])):
                ys = [a[layer] if a[layer] is not None else math.nan for a in angs]
                if all(y < 1e-3 for y in ys if not math.isnan(y)):
                    omitted = True  # identical to BP's update (e.g. every output layer of FA/DFA)
                    continue
                # one colour per rule, one marker per layer, always solid: the dashes of the other
                # panels mean train/test and nothing here
                axes[-1].plot(ep[1:], ys, "-", color=c, marker=markers[layer % len(markers)], ms=4, lw=1)
                layers_seen = max(layers_seen, layer + 1)
    axes[0].set_yscale("log")
    axes[0].set_title(f"loss ({result.get('config', {}).get('loss', '')}); train --, test —")
    if classification:
        axes[1].set_title("accuracy; train --, test —")
        axes[1].set_ylim(0, 1.01)
    axes[-1].set_title("angle to BP's update (deg)" + ("\n(layers equal to BP omitted)" if omitted else ""),
                       fontsize=10)
    axes[-1].set_ylim(bottom=0)
    if layers_seen:
        axes[-1].legend(handles=[Line2D([], [], color="0.3", marker=markers[l % len(markers)], ls="-", lw=1,
                                        label=f"W{l + 1}") for l in range(layers_seen)],
                        fontsize=7, loc="best", title="layer", title_fontsize=7)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    # the rules' legend sits below the panels, where it covers no curve however many rules there are
    ncol = min(len(rule_handles), 6) or 1
    rows = (len(rule_handles) + ncol - 1) // ncol
    if rule_handles:
        fig.legend(handles=rule_handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle(f"{result['data']}, seed {result['seed']}, network {result.get('network', {}).get('sizes')}")
    fig.tight_layout(rect=(0, 0.06 * rows, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


class Progress:
    """Progress over ``total`` epochs (:class:`refimpl.console.Progress`, ``rich``): a bar on a
    terminal, one plain line per epoch otherwise (:meth:`line`); ``progress(key, record)``."""

    def __init__(self, total: int, stream=None, quiet: bool = False, force: str | None = None):
        from .console import Progress as _P

        self._p = _P(total, "epochs", stream=stream, quiet=quiet, every=0, force=force, label="training")
        self.kind = self._p.kind

    @property
    def n(self):
        return self._p.n

    @staticmethod
    def line(key, record) -> str:
        acc = record.get("test_accuracy")
        ang = record.get("angles")
        parts = [f"{key:<12} epoch {record['epoch']:>3}", f"train_loss {record['train_loss']:.4f}",
                 f"test_loss {record['test_loss']:.4f}"]
        if acc is not None:
            parts.append(f"test_acc {acc:.4f}")
        if ang:
            parts.append("angle " + "/".join(_fmt(a, ".1f") for a in ang))
        parts.append(f"{record['seconds']:.2f}s")
        return "  ".join(parts)

    def __call__(self, key, record):
        if self._p.kind == "rich":
            acc = record.get("test_accuracy")
            self._p.advance(f"{key} epoch {record['epoch']} " + (f"test_acc {acc:.3f}" if acc is not None
                                                                 else f"test_loss {record['test_loss']:.3g}"))
        else:
            self._p.n += 1
            self._p.line(self.line(key, record))

    def close(self):
        self._p.close()
