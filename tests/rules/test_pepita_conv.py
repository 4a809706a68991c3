"""PEPITA on convolutional networks (issue 15): the updates equal a torch transcription of the
equations (two passes with F.conv2d and pooling, kernel updates from the pre-pooling units by
torch.nn.grad.conv2d_weight), NumPy / array_api_strict / torch tensors give the same numbers, and
the first-order theorems of proofs.pepita hold on conv instances (their controls fail)."""

import numpy as np
import pytest

import refimpl as ri
from refimpl.backend import to_numpy, from_numpy, resolve_namespace
from refimpl.rules.pepita import PEPITA, PEPITAState, dropout_masks

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _close(actual, expected, rtol=1e-12):
    """``max|a - e| <= rtol * max|e|`` (per array: the error model of a sum in another order)."""
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    assert np.max(np.abs(a - e)) <= rtol * np.max(np.abs(e)) + 1e-15, np.max(np.abs(a - e)) / np.max(np.abs(e))

BACKENDS = ["numpy", "array_api_strict", "torch"]
NETS = [((2, 8, 8), "c3k3s2p1+mp2 c2k2p1+ap2s1 l5 l4"), ((1, 6, 7), "c2k2s2p1 c2k1 l3")]


def _instance(shape, arch, act="relu", xp="numpy", B=3, seed=0):
    net = ri.Network.build(shape, arch, activation=act, seed=seed, bias_scale=0.3, xp=xp)
    g = np.random.default_rng(seed + 1)
    x = g.standard_normal((B,) + shape)
    y = np.eye(net.sizes[-1])[g.integers(0, net.sizes[-1], B)]
    Fh = g.uniform(-1, 1, (net.sizes[0], net.sizes[-1])) * 0.05
    ns = resolve_namespace(xp)
    return net, from_numpy(x, ns, "float64"), from_numpy(y, ns, "float64"), from_numpy(Fh, ns, "float64")


def _torch_pepita(net, x, y, Fh, masks, sign, last, pres, act):
    """Algorithm 1 with conv layers, transcribed in torch (refimpl.rules.pepita's docstring)."""
    Ws = [torch.tensor(to_numpy(W)) for W in net.weights]
    bs = [torch.tensor(to_numpy(b)) for b in net.biases]
    ms = [None if m is None else torch.tensor(to_numpy(m)) for m in masks]
    L = net.depth
    f = {"relu": torch.relu, "tanh": torch.tanh}[act]

    def passes(inp):
        hs, zs, a_s = [inp], [inp], [inp]
        h = inp
        for l, lay in enumerate(net.layers, start=1):
            if lay.kind == "conv2d":
                a = F.conv2d(h, Ws[l - 1], bs[l - 1], stride=lay.stride, padding=lay.padding)
            else:
                a = F.linear(h.flatten(1), Ws[l - 1], bs[l - 1])
            z = f(a) if l < L else a
            if l < L and ms[l - 1] is not None:
                z = z * ms[l - 1]
            h = z
            if getattr(lay, "pool", None) is not None:
                pool = F.max_pool2d if lay.pool.kind == "maxpool" else F.avg_pool2d
                h = pool(z, lay.pool.kernel_size, lay.pool.stride)
            hs.append(h)
            zs.append(z)
            a_s.append(a)
        return hs, zs

    xt, yt, Ft = (torch.tensor(to_numpy(a)) for a in (x, y, Fh))
    hs, zs = passes(xt)
    e = torch.softmax(hs[L], 1) - yt
    x_mod = xt + sign * (e @ Ft.T).reshape(xt.shape)
    hm, zm = passes(x_mod)
    pre = hm if pres == "modulated" else hs
    eL = (torch.softmax(hm[L], 1) - yt) if last == "modulated" else e
    B = xt.shape[0]
    dW, db = [], []
    for l, lay in enumerate(net.layers, start=1):
        d = (zs[l] - zm[l]) if l < L else eL
        p = pre[l - 1]
        if lay.kind == "conv2d":
            dW.append(torch.nn.grad.conv2d_weight(p, Ws[l - 1].shape, d, stride=lay.stride, padding=lay.padding) / B)
            db.append(d.sum((0, 2, 3)) / B)
        else:
            dW.append(d.T @ p.flatten(1) / B)
            db.append(d.sum(0) / B)
    return [w.numpy() for w in dW], [b.numpy() for b in db]


@pytest.mark.parametrize("shape, arch", NETS)
@pytest.mark.parametrize("sign, last, pres, keep", [(1, "modulated", "modulated", 1.0), (-1, "first", "forward", 0.7),
                                                    (1, "first", "modulated", 0.8)])
def test_conv_matches_torch_transcription(shape, arch, sign, last, pres, keep):
    net, x, y, Fh = _instance(shape, arch)
    rule = PEPITA(sign=sign, last_layer_error=last, presynaptic=pres, keep_prob=keep)
    state = PEPITAState(F=Fh, seed=4, step=0)
    upd, _ = rule.updates(net, state, x, y)
    masks = dropout_masks(net, x.shape[0], keep, 4, 0)
    if keep < 1:
        assert tuple(masks[0].shape) == (x.shape[0],) + net.layer(1).out_shape  # a_l's (pre-pooling) shape
    dW, db = _torch_pepita(net, x, y, Fh, masks, sign, last, pres, "relu")
    for i in range(net.depth):
        _close(to_numpy(upd.dW[i]), dW[i])
        _close(to_numpy(upd.db[i]), db[i])


@pytest.mark.parametrize("variant", ["pepita", "hebbian", "time_local"])
def test_conv_backends_give_the_same_updates(variant):
    shape, arch = NETS[0]
    ref = None
    for xp in BACKENDS:
        net, x, y, Fh = _instance(shape, arch, act="tanh", xp=xp)
        rule = PEPITA(variant=variant, keep_prob=0.8)
        upd, _ = rule.updates(net, PEPITAState(F=Fh, seed=1, step=0), x, y)
        got = [to_numpy(a) for a in list(upd.dW) + list(upd.db)]
        if ref is None:
            ref = got
        else:
            for a, b in zip(got, ref):
                # per array, relative to its largest entry (a backend's summation order moves a
                # cancelled entry by a few ulp of the array's scale, not of the entry)
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-13 * np.max(np.abs(b)) + 1e-15)


def _conv_instance_of(name, xp, seed=0):
    import proofs
    from proofs.theorem import RngDrawer

    thm = proofs.get(name)
    gen = np.random.default_rng(seed)
    for _ in range(50):
        inst = thm.draw(RngDrawer(gen), resolve_namespace(xp), "float64")
        if not inst.net.is_dense and any(getattr(l, "pool", None) is not None for l in inst.net.layers):
            return thm, inst
    raise AssertionError(f"{name}: no pooled conv instance in 50 draws")


@pytest.mark.parametrize("xp", BACKENDS)
@pytest.mark.parametrize("name", ["pepita.zero_feedback_is_delta_rule", "pepita.relu_activity_is_jvp",
                                  "pepita.smooth_activity_first_order", "pepita.hidden_update_is_afa",
                                  "pepita.sign_flip"])
def test_first_order_theorems_hold_on_pooled_conv_nets(name, xp):
    thm, inst = _conv_instance_of(name, xp)
    ev = thm.check(inst)
    assert ev.holds, (inst.describe(), ev)
    assert not thm.control(inst).holds, inst.describe()
