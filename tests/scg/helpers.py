"""Small hand-built graphs shared by the scg tests."""

import numpy as np

from refimpl import scg
from refimpl.backend import from_numpy
from refimpl.scg import ops


def chain_graph(xp=None, dtype="float64", seed=0):
    """x -> f1 -> w1 (categorical 3) -> f2 -> w2 (bernoulli 2) -> cost; upstream cost on (x, f1)."""
    import array_api_compat.numpy as anp

    ns = xp or anp
    g = scg.Graph()
    g.input("x", from_numpy(np.array([0.3, -0.7]), ns, dtype))
    g.mlp("f1", ["x"], [3, 3])
    g.categorical("w1", "f1")
    g.mlp("c0f", ["x", "f1"], [2, 1])
    g.cost("c0", ["c0f"])
    g.mlp("f2", ["w1", "x"], [2])
    g.bernoulli("w2", "f2")
    g.mlp("c1f", ["w1", "w2", "f2"], [3, 1])
    g.cost("c1", ["c1f"])
    return g, g.init_theta(seed, ns, dtype)


def gauss_graph(reparam, xp=None, dtype="float64", seed=0, coeffs=(0.2, -0.5, 0.3, 0.1)):
    import array_api_compat.numpy as anp

    ns = xp or anp
    g = scg.Graph()
    g.input("x", from_numpy(np.array([0.5]), ns, dtype))
    g.affine("f1", "x", 2)
    g.categorical("w1", "f1")
    g.affine("mu", "w1", 1)
    g.affine("ls", "w1", 1, init_std=0.3)
    z = g.gaussian("z", "mu", "ls", reparam=reparam)
    g.deterministic("pz", [z], ops.Polynomial(coeffs))
    g.cost("c", ["pz", "mu"])
    return g, g.init_theta(seed, ns, dtype)
