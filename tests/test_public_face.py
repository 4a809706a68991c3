"""DESIGN.md's "public face" is a contract: every name there works exactly as written.

The block is restated here line by line (with data to run it on); a change that breaks one of
these calls breaks other projects' code.
"""

import dataclasses

import numpy as np
import pytest

import refimpl as ri


def test_public_face_block():
    net = ri.Network.init([4, 8, 8, 3], activation="tanh", output_activation="linear",
                          init="xavier", seed=0, dtype="float64", xp=None)
    W1, W2, W3 = net.weights
    b1, b2, b3 = net.biases
    net = ri.Network(weights=(W1, W2, W3), biases=(b1, b2, b3), activations=("tanh", "tanh", "linear"))
    assert net.depth == 3
    gen = np.random.default_rng(0)
    x, y = gen.standard_normal((5, 4)), gen.standard_normal((5, 3))
    trace = net.forward(x)
    assert len(trace.a) == len(trace.h) == 4
    np.testing.assert_array_equal(trace.h[0], x)
    np.testing.assert_allclose(trace.a[1], x @ W1.T + b1)
    np.testing.assert_allclose(trace.h[1], np.tanh(trace.a[1]))
    rule = ri.rules.BP(loss="mse")
    state = rule.init(net, seed=0)
    upd, state = rule.updates(net, state, x, y)
    assert isinstance(upd.dW, tuple) and isinstance(upd.db, tuple) and len(upd.dW) == len(upd.db) == 3
    assert all(d.shape == W.shape for d, W in zip(upd.dW, net.weights))
    assert all(d.shape == b.shape for d, b in zip(upd.db, net.biases))
    assert isinstance(upd.record, dict) and "delta" in upd.record


@pytest.mark.parametrize("name", ["linear", "tanh", "sigmoid", "relu", "leaky_relu", "elu", "softplus"])
def test_activation_names(name):
    net = ri.Network.init([2, 3, 2], activation=name, seed=0)
    assert net.activations[0] == name


def test_loss_conventions():
    h = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]])
    y = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mse, ce = ri.losses.get("mse"), ri.losses.get("ce")
    assert np.isclose(float(mse.value(h, y)), np.mean(0.5 * np.sum((h - y) ** 2, axis=1)))
    lse = np.log(np.sum(np.exp(h), axis=1))
    assert np.isclose(float(ce.value(h, y)), np.mean(lse - np.sum(y * h, axis=1)))
    assert np.isclose(float(ce.value(h, np.array([1, 2]))), float(ce.value(h, y)))


def test_rule_state_faces():
    net = ri.Network.init([4, 8, 8, 3], seed=0)
    x = np.random.default_rng(1).standard_normal((5, 4))
    y = np.random.default_rng(2).standard_normal((5, 3))
    fa = ri.rules.FA(loss="mse")
    s = fa.init(net, seed=0)
    assert [B.shape for B in s.B[1:]] == [W.shape for W in net.weights[1:]]  # B[0] unused
    with pytest.raises(ValueError, match="B"):  # users' own feedback matrices are validated
        fa.updates(net, dataclasses.replace(s, B=(s.B[0], np.zeros((3, 3)), s.B[2])), x, y)
    dfa = ri.rules.DFA(loss="mse").init(net, seed=0)
    assert [B.shape for B in dfa.B] == [(3, 8), (3, 8), (3, 3)]  # (n_L, n_{i+1})
    tp = ri.rules.TP()
    assert [Q.shape for Q in tp.init(net, seed=0).Q] == [W.T.shape for W in net.weights]
    targets = tp.targets(net, tp.init(net, seed=0), x, y)
    assert len(targets) == net.depth + 1
    assert ri.rules.PEPITA(loss="ce").init(net, seed=0).F.shape == (4, 3)
    ri.rules.DTP(beta=0.1, loss="mse"), ri.rules.DRL(), ri.rules.LDRL(beta=0.1, loss="mse")
