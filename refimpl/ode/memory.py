"""Memory accounting of the gradient methods: live tapes, checkpoints, stage states, f and vjp counts.

A *tape* is what one evaluation of the vector field must keep for its vector-Jacobian product (the
per-layer pre-activations and inputs, :class:`refimpl.ode.field.Tape`). The memory model of the
symplectic adjoint paper (Matsubara et al. 2021, Table 1) is stated in live tapes:

* backprop through the solver: ``N s_eff`` tapes alive at the peak (every stage of every step);
* symplectic adjoint: 1 tape (one vjp at a time), plus ``N + 1`` checkpoints and ``s_eff`` stage states;
* continuous adjoint: 1 tape, no checkpoints.

``s_eff`` is the number of stages that carry the solution (:attr:`Tableau.effective_stages`).
Counting is done by the methods' own bookkeeping, not by process memory, so it is deterministic and
backend-independent; ``peak_held`` cross-checks the live-tape count with weak references to the
:class:`Tape` objects (what the interpreter actually still holds, whatever ``close`` was called). A :class:`Ledger` is created per call (no module state).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

__all__ = ["MemoryReport", "Ledger"]


@dataclass(frozen=True)
class MemoryReport:
    """Counts of one gradient computation.

    ``peak_tapes``: most tapes alive at once; ``peak_tape_bytes``: their bytes at that peak (largest);
    ``checkpoints``: states stored across the whole backward pass; ``stage_states``: states held
    for one step's recomputation; ``f_evals``: forward evaluations of the field (with or without a
    tape); ``vjp_evals``: vector-Jacobian products; ``peak_held``: most :class:`Tape` objects actually
    alive at once (tracked by weak references, i.e. by the interpreter freeing them, independently of
    the ``close`` calls that ``peak_tapes`` counts; -1 when not tracked).
    """

    method: str
    peak_tapes: int
    peak_tape_bytes: int
    checkpoints: int
    stage_states: int
    f_evals: int
    vjp_evals: int
    peak_held: int = -1


def nbytes(x) -> int:
    """Bytes of an array (shape times item size) on any backend."""
    n = math.prod(int(d) for d in x.shape)
    dt = x.dtype
    size = getattr(dt, "itemsize", None)
    if size is None:
        size = 8 if "64" in str(dt) else 4
    return n * int(size)


class Ledger:
    """Mutable counter for one gradient call.

    ``release=False`` keeps every closed tape counted as alive (what happens when the graph of every
    evaluation is retained): the negative control of the memory theorem.
    """

    def __init__(self, method: str, release: bool = True):
        self.method = method
        self.release = release
        self.alive = 0
        self.alive_bytes = 0
        self.peak = 0
        self.peak_bytes = 0
        self.checkpoints = 0
        self.stage_states = 0
        self.f_evals = 0
        self.vjp_evals = 0
        self.held = 0
        self.peak_held = 0

    def _freed(self) -> None:
        self.held -= 1

    def f(self, n: int = 1) -> None:
        self.f_evals += n

    def open(self, tape) -> None:
        """A tape was created (counts one f evaluation)."""
        self.f_evals += 1
        self.alive += 1
        self.alive_bytes += tape.nbytes
        if self.alive > self.peak:
            self.peak = self.alive
        self.peak_bytes = max(self.peak_bytes, self.alive_bytes)
        self.held += 1
        self.peak_held = max(self.peak_held, self.held)
        weakref.finalize(tape, self._freed)

    def close(self, tape) -> None:
        """A tape was consumed by its vjp and freed."""
        self.vjp_evals += 1
        if self.release:
            self.alive -= 1
            self.alive_bytes -= tape.nbytes

    def report(self) -> MemoryReport:
        return MemoryReport(self.method, self.peak, self.peak_bytes, self.checkpoints, self.stage_states,
                            self.f_evals, self.vjp_evals, self.peak_held)
