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


# --- convolutional draws ---------------------------------------------------------------------------

def test_conv_networks_respect_ranges_and_describe_their_layers():
    from proofs.strategies import draw_conv_network, describe_network
    from proofs.theorem import RngDrawer

    gen = np.random.default_rng(5)
    pools, strides, pads, kernels = set(), set(), set(), set()
    for _ in range(150):
        net = draw_conv_network(RngDrawer(gen))
        kinds = [l.kind for l in net.layers]
        n_conv = kinds.count("conv2d")
        assert 1 <= n_conv <= 3 and 1 <= kinds.count("linear") <= 2
        assert kinds == ["conv2d"] * n_conv + ["linear"] * (len(kinds) - n_conv)
        C, H, W = net.input_shape
        assert 1 <= C <= 2 and 3 <= H <= 7 and 3 <= W <= 7
        for lay in net.layers[:n_conv]:
            kernels.add(lay.kernel_size[0])
            strides.add(lay.stride[0])
            pads.add(lay.padding[0])
            pools.add(None if lay.pool is None else lay.pool.kind)
        desc = describe_network(net)
        assert desc.startswith(f"input={C}x{H}x{W} layers=[conv2d(") and "linear(" in desc
    assert kernels == {1, 2, 3} and strides == {1, 2} and pads == {0, 1}
    assert pools == {None, "maxpool", "avgpool"}


def test_conv_batches_are_nchw():
    from proofs.strategies import draw_instance
    from proofs.theorem import RngDrawer

    gen = np.random.default_rng(2)
    for _ in range(20):
        inst = draw_instance(RngDrawer(gen), architectures=("conv",))
        assert tuple(inst.x.shape[1:]) == tuple(inst.net.input_shape)
        assert "conv2d(" in inst.describe()
        if inst.loss == "ce":
            assert inst.net.sizes[-1] >= 2


#: Theorems that must draw conv networks (issue 15), and those that are dense by construction.
CONV_THEOREMS = ("bp.matches_autograd", "bp.matches_finite_differences", "bp.conv_equals_toeplitz",
                 "feedback_alignment.matches_torch_custom_autograd", "feedback_alignment.fa_equals_bp_when_B_is_W",
                 "feedback_alignment.fa_equals_bp_conv", "feedback_alignment.fa_last_layer_is_bp",
                 "feedback_alignment.dfa_equals_bp_one_hidden_layer",
                 "feedback_alignment.frsf_equals_bp_with_magnitudes_of_W",
                 "feedback_alignment.usf_equals_bp_with_equal_magnitudes",
                 "pepita.zero_feedback_is_delta_rule", "pepita.relu_activity_is_jvp",
                 "pepita.smooth_activity_first_order", "pepita.hidden_update_is_afa", "pepita.sign_flip")
DENSE_THEOREMS = ("feedback_alignment.dfa_equals_bp_linear_product_feedback", "pepita.equals_bp_one_hidden_layer")


def test_theorems_draw_conv_networks():
    import proofs
    from proofs.theorem import RngDrawer

    for name in CONV_THEOREMS + DENSE_THEOREMS:
        thm = proofs.get(name)
        gen = np.random.default_rng(0)
        nets = [thm.draw(RngDrawer(gen), "numpy", "float64").net for _ in range(25)]
        n_conv = sum(not n.is_dense for n in nets)
        if name in DENSE_THEOREMS:
            assert n_conv == 0, name
        else:
            assert n_conv >= 5, (name, n_conv)
        if name == "feedback_alignment.fa_equals_bp_conv":
            assert n_conv == 25


@given(networks(depth=(2, 3), width=(2, 4), activations=("tanh",), output_activations=("linear",)))
def test_networks_strategy_is_public_and_respects_its_arguments(net):
    assert 2 <= net.depth <= 3 and all(2 <= n <= 4 for n in net.sizes)
    assert net.activations[:-1] == ("tanh",) * (net.depth - 1) and net.activations[-1] == "linear"


@given(instances(losses=("ce",), batch=(3, 5), depth=(1, 2)))
def test_instances_strategy_gives_a_batch_for_the_loss(inst):
    assert inst.loss == "ce" and 3 <= inst.x.shape[0] <= 5 and inst.net.sizes[-1] >= 2
