"""refimpl: numerically verified reference implementations of credit-assignment rules.

    import refimpl as ri
    net = ri.Network.init([4, 8, 8, 3], activation="tanh", seed=0)
    rule = ri.rules.BP(loss="mse")
    state = rule.init(net, seed=0)
    upd, state = rule.updates(net, state, x, y)

See README.md for the tour and DESIGN.md for the conventions.
"""

from . import activations, backend, layers, losses, metrics, optim, rules, ode, scg
from .network import Network, Trace

__version__ = "0.1.0"

__all__ = ["Network", "Trace", "activations", "backend", "layers", "losses", "metrics", "optim", "rules", "ode", "scg", "__version__"]
