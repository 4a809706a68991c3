"""Meta-tests: the strategies produce what they promise."""

import numpy as np
from hypothesis import given, strategies as st

from refimpl.backend import to_numpy
from proofs.strategies import draw_network, draw_batch, instances, networks, INVERTIBLE_ACTIVATIONS
from proofs.theorem import HypothesisDrawer


@given(st.data())
def test_any_network_respects_ranges(data):
    net = draw_network(HypothesisDrawer(data))
    assert 1 <= net.depth <= 5
    assert all(1 <= n <= 12 for n in net.sizes)
    for i, W in enumerate(net.weights):
        assert W.shape == (net.sizes[i + 1], net.sizes[i])


@given(st.data())
def test_orthogonal_networks_are_orthogonal(data):
    net = draw_network(HypothesisDrawer(data), kind="orthogonal")
    for W in net.weights:
        np.testing.assert_allclose(W.T @ W, np.eye(W.shape[1]), atol=1e-12)


@given(st.data())
def test_invertible_networks_have_bounded_condition(data):
    net = draw_network(HypothesisDrawer(data), kind="invertible", cond_max=4.0,
                       activations=INVERTIBLE_ACTIVATIONS)
    for W in net.weights:
        s = np.linalg.svd(W, compute_uv=False)
        assert s.max() / s.min() <= 4.0 + 1e-9
    assert all(n == net.sizes[0] for n in net.sizes)


@given(st.data())
def test_square_with_free_input(data):
    net = draw_network(HypothesisDrawer(data), kind="square", square_input=False, depth=(2, 4))
    assert len(set(net.sizes[1:])) == 1


@given(instances())
def test_batches_match_network(inst):
    B = inst.x.shape[0]
    assert 1 <= B <= 16 and inst.x.shape[1] == inst.net.sizes[0]
    y = to_numpy(inst.y)
    if inst.loss == "ce":
        if y.ndim == 1:
            assert np.issubdtype(y.dtype, np.integer) and y.max() < inst.net.sizes[-1]
        else:
            np.testing.assert_array_equal(y.sum(1), np.ones(B))
    else:
        assert y.shape == (B, inst.net.sizes[-1])


def test_ce_instances_have_two_classes_for_every_kind():
    # Regression: with kind square/orthogonal/invertible the output width was drawn from width=(1, .),
    # so a ce instance could have one class: constant loss, all gradients zero, nothing checkable.
    import numpy as np
    from proofs.strategies import draw_instance
    from proofs.theorem import RngDrawer

    gen = np.random.default_rng(0)
    for kind in ("square", "orthogonal", "invertible"):
        for _ in range(40):
            inst = draw_instance(RngDrawer(gen), losses=("ce",), kind=kind, width=(1, 3))
            assert inst.net.sizes[-1] >= 2


@given(networks(depth=(2, 3), width=(2, 4), activations=("tanh",), output_activations=("linear",)))
def test_networks_strategy_is_public_and_respects_its_arguments(net):
    assert 2 <= net.depth <= 3 and all(2 <= n <= 4 for n in net.sizes)
    assert net.activations[:-1] == ("tanh",) * (net.depth - 1) and net.activations[-1] == "linear"


@given(instances(losses=("ce",), batch=(3, 5), depth=(1, 2)))
def test_instances_strategy_gives_a_batch_for_the_loss(inst):
    assert inst.loss == "ce" and 3 <= inst.x.shape[0] <= 5 and inst.net.sizes[-1] >= 2
