import numpy as np
import pytest

import refimpl as ri
from refimpl import optim


def _run_torch(opt_name, kwargs, params, grads_seq):
    torch = pytest.importorskip("torch")
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    tk = dict(kwargs)
    if opt_name == "adam":
        tk["betas"] = (tk.pop("beta1", 0.9), tk.pop("beta2", 0.999))
        opt = torch.optim.Adam(ps, **tk)
    else:
        opt = torch.optim.SGD(ps, **tk)
    for grads in grads_seq:
        for p, g in zip(ps, grads):
            p.grad = torch.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in ps]


@pytest.mark.parametrize("name,kwargs", [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.1, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.8, weight_decay=0.01, nesterov=True)),
    ("adam", dict(lr=0.01)),
    ("adam", dict(lr=0.003, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1)),
])
def test_matches_torch_optim(name, kwargs):
    g = np.random.default_rng(0)
    params = [g.standard_normal((3, 4)), g.standard_normal(3)]
    grads_seq = [[g.standard_normal((3, 4)), g.standard_normal(3)] for _ in range(6)]
    opt = optim.get(name, **kwargs)
    state = opt.init(params)
    ps = tuple(params)
    for grads in grads_seq:
        ps, state = opt.step(ps, grads, state)
    expected = _run_torch(name, kwargs, params, grads_seq)
    for a, e in zip(ps, expected):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-14)
    assert state.step == 6


def test_pure_no_mutation():
    p = np.ones((2, 2))
    p.flags.writeable = False
    g = np.ones((2, 2))
    g.flags.writeable = False
    for opt in (optim.SGD(lr=0.1, momentum=0.9), optim.Adam()):
        out, _ = opt.step((p,), (g,), opt.init((p,)))
        assert np.all(p == 1)


def test_apply_updates_descends():
    net = ri.Network.init([3, 5, 2], seed=0)
    g = np.random.default_rng(1)
    x, y = g.standard_normal((8, 3)), g.standard_normal((8, 2))
    rule = ri.rules.BP()
    upd, _ = rule.updates(net, None, x, y)
    new, st = optim.apply_updates(net, upd, optim.SGD(lr=0.05), None)
    assert float(ri.losses.get("mse").value(new(x), y)) < float(upd.record["loss"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="SGD lr"):
        optim.SGD(lr=-1)
    with pytest.raises(ValueError, match="Adam beta1"):
        optim.Adam(beta1=1.0)
    with pytest.raises(ValueError, match="unknown name 'rmsprop'"):
        optim.get("rmsprop")
    with pytest.raises(ValueError, match=r"grads\[0\]: expected shape \(2, 2\)"):
        optim.SGD().step((np.ones((2, 2)),), (np.ones(2),), optim.SGD().init([1]))
