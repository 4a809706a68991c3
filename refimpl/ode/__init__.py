"""Neural ODEs: explicit Runge-Kutta solvers and three gradient methods (see :mod:`refimpl.ode.api`).

Modules, one concept each: ``tableaux`` (exact rational Butcher tableaux), ``partner`` (the
symplectic partner tableau), ``field`` (the Network as a vector field, hand-written vjp/jvp),
``solvers`` (fixed and adaptive RK, recorded grids), ``backprop`` (reverse mode through the steps,
the reference), ``adjoint`` (continuous adjoint), ``symplectic`` (symplectic adjoint), ``checkpoint`` (ACA), ``tangent``
(forward sensitivities), ``memory`` (live-tape accounting), ``api`` (``solve``, ``gradients``).
"""

from . import tableaux, partner, field, solvers, memory, backprop, adjoint, symplectic, checkpoint, tangent, result
from .api import solve, gradients, gradients_report, MODES
from .field import NetworkField
from .memory import MemoryReport
from .partner import Partner, symplectic_residual
from .result import Gradients
from .solvers import Trajectory
from .tableaux import Tableau

__all__ = ["solve", "gradients", "gradients_report", "MODES", "NetworkField", "MemoryReport", "Partner",
           "symplectic_residual", "Gradients", "Trajectory", "Tableau", "tableaux", "partner", "field",
           "solvers", "memory", "backprop", "adjoint", "symplectic", "checkpoint", "tangent", "result"]
