"""The credit-assignment rules, one module per family; every rule has the face of DESIGN.md."""

from .base import Updates, EmptyState
from .bp import BP
from .registry import get_rule as get, available_rules
from .gaitprop import GaitProp, TPInverse
from .target_prop import TP, DTP, DRL, LDRL, TPState
from .feedback_alignment import FA, DFA, SignSymmetry
from .pepita import PEPITA, PEPITAState
from .microcircuit import Microcircuit, MicrocircuitState
from .corinfomax import CorInfoMax, CorInfoMaxState

__all__ = ["Updates", "EmptyState", "BP", "get", "available_rules", "GaitProp", "TPInverse", "TP", "DTP", "DRL", "LDRL", "TPState", "FA", "DFA", "SignSymmetry", "PEPITA", "PEPITAState",
           "Microcircuit", "MicrocircuitState", "CorInfoMax", "CorInfoMaxState"]
