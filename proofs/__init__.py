"""The theorems of each family as checkable predicates, the torch oracle, Hypothesis strategies.

``proofs.THEOREMS`` is the tuple of every registered :class:`~proofs.theorem.Theorem`, named
``family.name`` after its module. A family module defines ``THEOREMS = (Theorem(...), ...)`` and is
listed in :data:`FAMILIES`.
"""

from __future__ import annotations

import importlib

from .theorem import Theorem, Evidence, compare, order_check
from .tolerances import TOLERANCES, tolerance

#: The family modules, in the order ``refimpl verify`` runs them.
FAMILIES = (
    "bp",
    "feedback_alignment",
    "gaitprop",
    "pepita",
    "scg",
    "target_prop",
    "microcircuit",
    "corinfomax",
    "ode",
)


def _collect():
    out = []
    for fam in FAMILIES:
        mod = importlib.import_module(f"{__name__}.{fam}")
        for thm in mod.THEOREMS:
            if thm.family != fam:
                raise ValueError(f"theorem {thm.name!r} is registered in module {fam!r}: names are family.name")
            out.append(thm)
    names = [t.name for t in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate theorem names: {sorted(dup)}")
    return tuple(out)


THEOREMS = _collect()


def get(name: str) -> Theorem:
    """The theorem called ``name`` (``family.name``)."""
    for t in THEOREMS:
        if t.name == name:
            return t
    raise KeyError(f"no theorem named {name!r}; known: {[t.name for t in THEOREMS]}")


__all__ = ["THEOREMS", "FAMILIES", "get", "Theorem", "Evidence", "compare", "order_check",
           "TOLERANCES", "tolerance"]
