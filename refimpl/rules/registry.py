"""Rules by name: ``get("fa")``, ``get("gaitprop:gamma=0.001")``, BioTorch's mode strings.

Every rule class of ``refimpl.rules`` and its family modules is found automatically (a frozen
dataclass with ``init`` and ``updates``); its canonical name is the lower-cased class name with
non-alphanumerics removed (``GaitProp`` -> ``gaitprop``, ``DFA`` -> ``dfa``). Used by
``refimpl train``, ``refimpl conform`` and :mod:`refimpl.train`.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib

__all__ = ["get_rule", "parse_rule_spec", "available_rules", "rule_names", "ALIASES", "RULE_MODULES"]

#: Modules of ``refimpl.rules`` searched for rule classes (those not present yet are skipped).
RULE_MODULES = ("bp", "feedback_alignment", "sign_symmetry", "target_prop", "gaitprop", "pepita",
                "microcircuit", "corinfomax")

#: Extra names accepted by :func:`get_rule`: ``alias -> (canonical name, preset hyper-parameters)``.
#: The canonical name of a rule class is its lower-cased name with non-alphanumerics removed
#: (``GaitProp`` -> ``gaitprop``, ``DFA`` -> ``dfa``). Presets are overridden by the spec's own
#: ``key=value`` pairs. An alias whose class does not exist (yet) is simply not offered.
ALIASES = {"backprop": ("bp", {}), "backpropagation": ("bp", {}), "gait": ("gaitprop", {}),
           "usf": ("signsymmetry", {"mode": "usf"}), "brsf": ("signsymmetry", {"mode": "brsf"}),
           "frsf": ("signsymmetry", {"mode": "frsf"}), "sf": ("signsymmetry", {})}


# --- rules by name -----------------------------------------------------------------------------

def _canon(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def _is_rule_class(obj) -> bool:
    return (isinstance(obj, type) and dataclasses.is_dataclass(obj) and not obj.__name__.startswith("_")
            and callable(getattr(obj, "init", None)) and callable(getattr(obj, "updates", None))
            and obj.__module__.startswith("refimpl.rules"))


def available_rules() -> dict:
    """Every rule class found in ``refimpl.rules`` and its family modules, by canonical name.

    A family module that does not exist yet is skipped; one that exists but fails to import raises
    (a broken rule module must not vanish silently from comparisons).
    """
    mods = [importlib.import_module("refimpl.rules")]
    for m in RULE_MODULES:
        full = f"refimpl.rules.{m}"
        try:
            mods.append(importlib.import_module(full))
        except ModuleNotFoundError as exc:
            if exc.name != full:
                raise
    found = {}
    for mod in mods:
        for obj in vars(mod).values():
            if _is_rule_class(obj):
                found.setdefault(_canon(obj.__name__), obj)
    return dict(sorted(found.items()))


def rule_names(include_aliases: bool = True) -> list:
    """Every name :func:`get_rule` accepts now (canonical names, plus aliases whose class exists)."""
    rules = available_rules()
    names = list(rules)
    if include_aliases:
        names += [a for a, (k, _) in ALIASES.items() if k in rules and a not in names]
    return sorted(names)


def _resolve(name: str):
    """``name`` -> ``(rule class, preset hyper-parameters)``; ValueError naming the known rules."""
    rules = available_rules()
    key = _canon(name)
    preset = {}
    if key not in rules and key in ALIASES:
        key, preset = ALIASES[key]
    if key not in rules:
        raise ValueError(f"rule: unknown rule {name!r}; known rules: {', '.join(rule_names())}")
    return rules[key], dict(preset)


def _parse_value(text: str):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def parse_rule_spec(spec: str) -> tuple[str, dict]:
    """``"name"`` or ``"name:key=value,key=value"`` -> ``(name, {key: value})``.

    Values are Python literals (``0.001``, ``3``, ``True``, ``'x'``, ``(1, 2)``) or bare strings
    (``loss=ce``). Example: ``"gaitprop:gamma=0.001"``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"rule: expected 'name' or 'name:key=value,...', got {spec!r}")
    name, _, rest = spec.partition(":")
    hyper = {}
    if rest.strip():
        # split on commas that are not inside brackets (tuples as values)
        parts, depth, cur = [], 0, ""
        for ch in rest:
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
        for p in parts:
            if not p.strip():
                continue
            key, eq, val = p.partition("=")
            if not eq or not key.strip().isidentifier():
                raise ValueError(f"rule {spec!r}: expected hyper-parameters as key=value, got {p!r}")
            hyper[key.strip()] = _parse_value(val)
    return name.strip(), hyper


def get_rule(spec, **hyper):
    """A rule instance from a name (``"bp"``, ``"fa"``, ``"gaitprop:gamma=0.001"``), a rule class,
    or a rule instance (returned as is, or ``dataclasses.replace``-d with ``hyper``).

    Names match the lower-cased class name with non-alphanumerics removed (``"GAIT-prop"`` ->
    ``gaitprop``). Keyword ``hyper`` fills in parameters the spec does not set; a key the rule
    does not have raises ``TypeError`` naming the rule's parameters.
    """
    if _is_rule_class(type(spec)) or (hasattr(spec, "updates") and hasattr(spec, "init")
                                      and not isinstance(spec, (str, type))):
        return dataclasses.replace(spec, **hyper) if hyper else spec
    if isinstance(spec, type):
        cls, from_spec = spec, {}
    else:
        name, from_spec = parse_rule_spec(spec)
        cls, preset = _resolve(name)
        from_spec = {**preset, **from_spec}
    kwargs = {**hyper, **from_spec}
    if dataclasses.is_dataclass(cls):
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        bad = sorted(set(kwargs) - fields)
        if bad:
            raise TypeError(f"rule {cls.__name__}: unknown hyper-parameter(s) {bad}; its parameters are "
                            f"{sorted(fields)}")
    return cls(**kwargs)
