r"""GAIT-prop's theorems: GAIT-prop = BP for orthogonal weights, and TP through exact inverses is Gauss-Newton.

Notation of :mod:`refimpl.rules.gaitprop` (batch rows, ``W_l: (n_l, n_{l-1})``). Every check runs
refimpl's rule against torch autograd's BP gradients (:func:`proofs.oracle.bp_gradients`) or, for
TP, against the oracle's Gauss-Newton targets (:func:`proofs.oracle.gauss_newton_targets`).

* ``gaitprop.limit_equals_bp_orthogonal`` -- the gamma -> 0 recursion
  ``E_{l-1} = (D_l * E_l) @ inv(W_l).T`` (:func:`refimpl.rules.gaitprop.gamma_limit`) gives BP's
  gradients exactly when ``W_2..W_L`` are orthogonal (the algebraic core of P1's theorem;
  ``inv(W).T = W``). Exact identity, float64 ``rtol = 1e-10 * depth``. Control: ``W_L -> s W_L``
  with ``s in [1.5, 2.5]`` (not orthogonal: ``inv(W).T = W / s^2``).
* ``gaitprop.equals_bp_piecewise_linear`` -- for identity / leaky-ReLU activations GAIT-prop at a
  *finite* gamma (fixed or adaptive) has no truncation term as long as no nudge crosses the kink:
  it equals BP up to rounding. The tolerance is the first-order rounding model of the target pass
  evaluated on the instance (:func:`rounding_bound`); the draw picks gamma so that no nudge crosses
  the kink (the theorem's condition), and the check verifies it. Control: non-orthogonal weights.
* ``gaitprop.converges_to_bp_smooth`` -- for smooth activations (tanh, sigmoid, softplus, identity)
  with adaptive gamma the error is first order: slope 1 on the grid gamma = 2e-3 .. 2.5e-4 and a
  Richardson limit that vanishes to rounding, at every depth 2..6 (the grid does not depend on
  depth: adaptive gamma removes fixed gamma's ``eps * gamma^-(L-1)`` round-off wall). Control:
  non-orthogonal weights (the limit is then the recursion with ``inv(W).T != W``, not BP).
* ``gaitprop.deviation_first_order_in_nonorthogonality`` -- with ``W_l(eps) = Q_l + eps G_l``
  (``l >= 2``) the gamma -> 0 recursion deviates from BP at first order in ``eps`` (slope 1,
  limit 0 at ``eps = 0``, and resolvably nonzero), i.e. linearly in ``||W^T W - I||`` (spec §3.3).
  Control: ``W_l(eps) = Q_l C(eps A_l)`` with the Cayley transform of a skew matrix, a perturbation
  that keeps ``W_l`` orthogonal: no deviation to grow.
* ``gaitprop.tp_equals_gauss_newton_linear`` -- for linear networks with invertible (not orthogonal)
  ``W_l``, TP's targets through exact inverses are exactly the Gauss-Newton targets
  ``h_l - J_l^{-1} e_L`` (``J_l = dh_L/dh_l``); hence TP is not BP (BP uses ``J_l^T``). Control: a
  leaky-ReLU output layer with labels across the kink (not linear): TP's exact inverse then differs
  from GN's linearisation.
* ``gaitprop.error_vs_gamma`` (measurement) -- the spec's §3.2 table: relative error of GAIT-prop
  against BP over gamma = 1e-1 .. 1e-6 for identity, leaky-ReLU(0.1), tanh; fixed and adaptive;
  depth 4 and 6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import refimpl as ri
from refimpl.backend import to_numpy, from_numpy, rng as host_rng, resolve_namespace, resolve_dtype
from refimpl.layers import Conv2d, Linear, MaxPool2d, AvgPool2d, conv_toeplitz, describe_layers
from refimpl.network import haar_orthogonal
from refimpl.rules import gaitprop as G
from . import oracle
from .strategies import NetInstance, network_from_matrices
from .theorem import Theorem, Evidence, compare, order_check, flat
from .tolerances import tolerance

__all__ = ["THEOREMS", "rounding_bound", "kink_crossings", "bp_reference", "gn_targets", "draw_invertible_conv"]

PIECEWISE = ("linear", "leaky_relu", "leaky_relu(0.1)", "leaky_relu(0.2)")
SMOOTH = ("linear", "tanh", "sigmoid", "softplus")
INVERTIBLE = ("linear", "tanh", "sigmoid", "leaky_relu", "leaky_relu(0.1)", "elu", "softplus")
DEPTH = (2, 6)
WIDTH = (1, 10)
EPS64 = 2.0 ** -52


# --- instances ---------------------------------------------------------------------------------

def _draw(d, xp, dtype, activations, *, weights="orthogonal", losses=("mse", "ce"), batch=(1, 6),
          output_activations=None, depth=DEPTH, width=WIDTH, ce_aux=True, nonlinear=None):
    """A network whose layers 2..L are square (``weights``: ``orthogonal`` Haar, or ``invertible``
    with condition number <= 4); layer 1 is Gaussian ``(n, n_0)`` (neither square nor orthogonal:
    the theorems do not need it). Loss on the first ``outputs`` units (auxiliary units above).
    ``nonlinear``: if layers 2..L all came out linear, the output activation is redrawn from it.
    Params: ``outputs`` and control scales ``s_l in [1.5, 2.5]``."""
    L = d.integer(*depth)
    n = d.integer(*width)
    n0 = d.integer(*width)
    acts = [d.choice(activations) for _ in range(L - 1)]
    acts.append(d.choice(output_activations or activations))
    if nonlinear and all(a == "linear" for a in acts[1:]):  # some inverted layer must be non-linear
        acts[-1] = d.choice(nonlinear)
    loss = d.choice(losses if n >= 2 else ("mse",))
    k = n if (loss == "ce" and not ce_aux) else d.integer(2 if loss == "ce" else 1, n)
    B = d.integer(*batch)
    gen = host_rng(d.seed())
    Ws = [gen.standard_normal((n, n0)) / math.sqrt(n0)]
    for _ in range(1, L):
        if weights == "orthogonal":
            Ws.append(haar_orthogonal(gen, n, n))
        else:
            U, V = haar_orthogonal(gen, n, n), haar_orthogonal(gen, n, n)
            Ws.append(U @ np.diag(np.exp(gen.uniform(-0.5, 0.5, n) * math.log(4.0))) @ V.T)
    bs = [0.1 * gen.standard_normal(n) for _ in range(L)]
    net = network_from_matrices(Ws, bs, acts, xp, dtype)
    x = from_numpy(gen.standard_normal((B, n0)), net.xp, net.dtype)
    if loss == "mse":
        y = from_numpy(gen.standard_normal((B, k)), net.xp, net.dtype)
    else:
        y = from_numpy(np.eye(k)[gen.integers(0, k, B)], net.xp, net.dtype)
    scales = [float(s) for s in gen.uniform(1.5, 2.5, L)]
    return NetInstance(net, x, y, loss, params={"outputs": k, "scales": scales,
                                                "layers": describe_layers(net.layers)})


# --- convolutional instances (issue 16) --------------------------------------------------------

def _square_matrix(gen, n, weights):
    """``(n, n)``: Haar orthogonal, or ``U diag(s) V^T`` with condition number <= 4 (``invertible``)."""
    if weights == "orthogonal":
        return haar_orthogonal(gen, n, n)
    U, V = haar_orthogonal(gen, n, n), haar_orthogonal(gen, n, n)
    return U @ np.diag(np.exp(gen.uniform(-0.5, 0.5, n) * math.log(4.0))) @ V.T


def _draw_conv(d, xp, dtype, activations, *, weights="orthogonal", losses=("mse", "ce"), batch=(1, 4),
               output_activations=None, tiled=False, nonlinear=None, ce_aux=True, overlap=False):
    """A convolutional network for the invertible-conv theorems (Dalm et al. 2023's structure):

    * layer 1: any conv (Gaussian kernel, ``C_1 <= 3`` channels, kernel 1..3, stride 1..2, padding
      0..1; unless ``tiled``, sometimes followed by 2x2 max or average pooling) -- never inverted;
    * layers 2..L-1 (one or two): invertible convs, per-patch matrix ``P`` square
      (``C_out = C_in*k*k``) and orthogonal (``weights="orthogonal"``) or of condition number <= 4,
      passing on ``keep <= 3`` of their channels (auxiliary channels, C2 ``filters``; not when
      ``tiled``); geometry: ``tiled`` -- stride = kernel, no padding, kernel divides the input (the
      conv is a bijection, C2's inverse exact); otherwise any stride 1..2 and padding 0..1,
      overlapping patches included (C2's reconstruction correction); ``overlap``: the first one
      certainly has overlapping patches (stride 1, kernel >= 2, at least two positions per axis);
    * layer L: a square dense output (``n_L = n_{L-1}``, orthogonal / invertible), the loss on its first
      ``outputs`` units.
    """
    C0 = d.integer(1, 2)
    H = d.choice((2, 4)) if tiled else d.integer(3, 5)
    n_conv = d.integer(1, 2)
    L = n_conv + 2
    acts = [d.choice(activations) for _ in range(L - 1)]
    acts.append(d.choice(output_activations or activations))
    if nonlinear and all(a == "linear" for a in acts[1:]):
        acts[-1] = d.choice(nonlinear)
    gen = host_rng(d.seed())
    specs, Ws = [], []
    # layer 1
    C1 = d.integer(1, 3)
    if tiled:
        k1 = d.choice(tuple(k for k in (1, 2) if H % k == 0))
        s1, p1, pool = k1, 0, None
    else:
        k1, s1, p1 = d.integer(1, 3), d.integer(1, 2), d.integer(0, 1)
        p1 = min(p1, k1 - 1)  # padding < kernel: every patch sees some input pixel
        if k1 > H + 2 * p1:
            k1 = H + 2 * p1
        pool = None
        Ho = (H + 2 * p1 - k1) // s1 + 1
        if Ho % 2 == 0 and d.integer(0, 3) == 0:
            pool = d.choice((MaxPool2d(2), AvgPool2d(2)))
    specs.append(Conv2d(stride=s1, padding=p1, pool=pool))
    Ws.append(gen.standard_normal((C1, C0, k1, k1)) / math.sqrt(C0 * k1 * k1))
    shape = specs[0].bind((C0, H, H), Ws[0], "draw").h_shape
    for j in range(n_conv):
        C, Hc = shape[0], shape[1]
        if overlap and j == 0:  # stride 1, kernel k >= 2, H' = Hc + 2p - k + 1 >= 2: some pixel in 2 patches
            s, p = 1, d.integer(0, 1)
            if Hc + 2 * p - 1 < 2:
                p = 1
            k = min(d.integer(2, 3), Hc + 2 * p - 1)
        elif tiled:
            k = d.choice(tuple(k for k in (1, 2) if Hc % k == 0))
            s, p = k, 0
        else:
            k, s, p = d.integer(1, 3), d.integer(1, 2), d.integer(0, 1)
            p = min(p, k - 1)  # padding < kernel: no patch sees only padding (else the layer is constant)
            if k > Hc + 2 * p:
                k = Hc + 2 * p
        Co = C * k * k
        keep = None if tiled else d.integer(1, min(Co, 3))
        spec = Conv2d(stride=s, padding=p, keep=keep)
        W = _square_matrix(gen, Co, weights).reshape(Co, C, k, k)
        specs.append(spec)
        Ws.append(W)
        shape = spec.bind(shape, W, "draw").h_shape
    n = int(math.prod(shape))
    specs.append(Linear())
    Ws.append(_square_matrix(gen, n, weights))
    bs = [0.1 * gen.standard_normal(W.shape[0]) for W in Ws]
    ns, dt = resolve_namespace(xp), resolve_dtype(resolve_namespace(xp), dtype)
    net = ri.Network(tuple(from_numpy(W, ns, dt) for W in Ws), tuple(from_numpy(b, ns, dt) for b in bs),
                     tuple(acts), layers=tuple(specs), input_shape=(C0, H, H))
    loss = d.choice(losses if n >= 2 else ("mse",))
    k_out = n if (loss == "ce" and not ce_aux) else d.integer(2 if loss == "ce" else 1, min(n, 6))
    B = d.integer(*batch)
    x = from_numpy(gen.standard_normal((B, C0, H, H)), net.xp, net.dtype)
    if loss == "mse":
        y = from_numpy(gen.standard_normal((B, k_out)), net.xp, net.dtype)
    else:
        y = from_numpy(np.eye(k_out)[gen.integers(0, k_out, B)], net.xp, net.dtype)
    scales = [float(s) for s in gen.uniform(1.5, 2.5, L)]
    return NetInstance(net, x, y, loss, params={"outputs": k_out, "scales": scales,
                                                "layers": describe_layers(net.layers)})


def draw_invertible_conv(d, xp="numpy", dtype="float64", activations=INVERTIBLE, **kwargs) -> NetInstance:
    """:func:`_draw_conv`'s invertible conv networks (Dalm et al. 2023's structure), public for
    ``proofs.conform`` (GAIT-prop and TPInverse on ``--arch conv``); ``params["outputs"]`` is the
    number of leading output units the loss sees."""
    return _draw_conv(d, xp, dtype, activations, **kwargs)


def _rebuild(net, Ws, bs=None):
    """``net`` with host weights ``Ws`` (and biases), same layers, activations, backend and dtype."""
    bs = [to_numpy(b) for b in net.biases] if bs is None else bs
    xp, dt = net.xp, net.dtype
    return ri.Network(tuple(from_numpy(W, xp, dt) for W in Ws), tuple(from_numpy(b, xp, dt) for b in bs),
                      net.activations, layers=net.layers, input_shape=net.input_shape)


def torch_conv_forward(net, Ws, bs, x):
    """torch's forward pass of any refimpl network (``F.conv2d``, ``F.max_pool2d`` / ``F.avg_pool2d``,
    the first ``keep`` channels, ``flatten``, ``F.linear``), written from the layer specs only."""
    import torch
    F = torch.nn.functional
    h = x
    for l, (lay, W, b) in enumerate(zip(net.layers, Ws, bs), start=1):
        f = oracle.torch_activation(net.activations[l - 1])
        if isinstance(lay, Conv2d):
            h = f(F.conv2d(h, W, b, stride=lay.stride, padding=lay.padding))
            if lay.keep is not None:
                h = h[:, :lay.keep]
            if isinstance(lay.pool, MaxPool2d):
                h = F.max_pool2d(h, lay.pool.kernel_size, lay.pool.stride)
            elif isinstance(lay.pool, AvgPool2d):
                h = F.avg_pool2d(h, lay.pool.kernel_size, lay.pool.stride)
        else:
            h = f(F.linear(h.reshape(h.shape[0], -1), W, b))
    return h


def _conv_bp_reference(net, x, y, loss, outputs):
    import torch
    Ws, bs = oracle.torch_params(net)
    xt = torch.tensor(oracle.to_host(x), dtype=torch.float64)
    out = torch_conv_forward(net, Ws, bs, xt)[:, :outputs]
    yt = torch.tensor(oracle.to_host(y), dtype=torch.float64)
    oracle.torch_loss(loss, out, yt).backward()
    return [W.grad.numpy().copy() for W in Ws], [b.grad.numpy().copy() for b in bs]


def _scaled(net, scales):
    """``W_L -> s W_L`` with ``s = scales[-1] in [1.5, 2.5]``: the output layer is no longer orthogonal
    (``inv(W_L).T = W_L / s^2``: every error below it is off by ``1/s^2 - 1``, at least 56 %), while
    invertibility, conditioning and the range of the activations below are kept (scaling every
    layer compounds to ``s^(L-1)`` and saturates tanh/sigmoid exactly in float64).

    A network with inverted conv layers gets ``P_l -> s P_l`` on its *last inverted conv* instead
    (the output stays orthogonal), so that the control fails because of a conv layer: a conv
    inverse that wrongly used ``P`` in place of ``inv(P).T`` (equal for orthogonal ``P``) would
    leave the control holding."""
    convs = _inverted_convs(net)
    i = (convs[-1] if convs else net.depth) - 1
    Ws = net.weights[:i] + (scales[-1] * net.weights[i],) + net.weights[i + 1:]
    return net.replace(weights=Ws)


def _inverted_convs(net):
    """The layers ``l >= 2`` that are convolutions (inverted by the target pass)."""
    return [l for l in range(2, net.depth + 1) if isinstance(net.layer(l), Conv2d)]


def bp_reference(net, x, y, loss, outputs):
    """torch autograd's BP gradients of the batch-mean loss on the first ``outputs`` units (host).

    The auxiliary output units do not enter the loss: the oracle differentiates the network with
    the output layer cut to its first ``outputs`` rows, and the auxiliary rows get zero gradient.
    """
    k = outputs
    n_L = net.sizes[-1]
    if not net.is_dense:  # torch's conv2d / pooling / channel selection (torch_conv_forward)
        return _conv_bp_reference(net, x, y, loss, k)
    if k == n_L:
        dW, db, _ = oracle.bp_gradients(net, x, y, loss)
        return dW, db
    # layers=None: the bound output spec says n_L outputs; the cut network (dense: GAIT-prop's
    # networks are) re-derives its Linear specs from the weights
    cut = net.replace(weights=net.weights[:-1] + (net.weights[-1][:k, :],),
                      biases=net.biases[:-1] + (net.biases[-1][:k],), layers=None)
    dW, db, _ = oracle.bp_gradients(cut, x, y, loss)
    dW[-1] = np.concatenate([dW[-1], np.zeros((n_L - k, dW[-1].shape[1]))], axis=0)
    db[-1] = np.concatenate([db[-1], np.zeros(n_L - k)])
    return dW, db


def _labels(L):
    return [f"dW[{i}]" for i in range(L)] + [f"db[{i}]" for i in range(L)]


# --- gaitprop.limit_equals_bp_orthogonal ---------------------------------------------------------

def _draw_limit(d, xp, dtype):
    if d.boolean():  # invertible conv layers, overlapping patches and auxiliary channels included
        return _draw_conv(d, xp, dtype, INVERTIBLE)
    return _draw(d, xp, dtype, INVERTIBLE)


def _limit_vs_bp(inst, net):
    k = inst.params["outputs"]
    upd = G.gamma_limit(net, inst.x, inst.y, loss=inst.loss, outputs=k)
    dW, db = bp_reference(net, inst.x, inst.y, inst.loss, k)
    return compare(list(upd.dW) + list(upd.db), dW + db, "exact_identity", net.dtype, depth=net.depth,
                   labels=_labels(net.depth))


def _check_limit(inst):
    return _limit_vs_bp(inst, inst.net)


def _control_limit(inst):
    return _limit_vs_bp(inst, _scaled(inst.net, inst.params["scales"]))


# --- gaitprop.equals_bp_piecewise_linear ----------------------------------------------------------

def kink_crossings(net, record) -> int:
    """Number of entries where a nudged activity ``u_l`` (argument of ``f_l^{-1}``, ``l = 2..L``) lies on
    the other side of a leaky-ReLU's kink than ``h_l`` (then the first-order expansion is not exact)."""
    count = 0
    for l in range(2, net.depth + 1):
        if net.activation(l).name.startswith("leaky_relu"):
            u, h = to_numpy(record["nudged"][l]), to_numpy(record["trace"].z[l])   # z: every channel
            count += int(np.sum((u > 0) != (h > 0)))
    return count


def coverage(layer) -> np.ndarray:
    """Host ``(C_in, H, W)`` count of the patches of any conv layer covering each input pixel (ones for a
    dense layer's flattened input): the geometry only, by the definition (not the code under test)."""
    if not isinstance(layer, Conv2d):
        return np.ones(layer.in_features)
    C, H, Wd = layer.in_shape
    _, Ho, Wo = layer.out_shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    N = np.zeros((C, H, Wd))
    for y in range(Ho):
        for x in range(Wo):
            r0, c0 = sh * y - ph, sw * x - pw
            N[:, max(r0, 0):max(min(r0 + kh, H), 0), max(c0, 0):max(min(c0 + kw, Wd), 0)] += 1
    return N


def rounding_bound(net, record, adaptive: bool):
    r"""First-order rounding model of GAIT-prop's target pass: bounds on ``||dW_l - dW_l^{exact}||_F``
    and ``||db_l - db_l^{exact}||`` (host floats, tuples of length L), for piecewise-linear
    activations (no truncation error).

    Model (unit roundoff ``u = eps/2``, every bound per sample row and normwise): computing
    ``tau_{l-1}`` from ``tau_l`` rounds the nudge ``u_l = (1-k) h_l + k tau_l`` (error
    ``<= 3u (|h_l| + |tau_l|)``), is amplified by ``f_l^{-1}`` by at most ``1 / min D_l``, rounds
    ``f^{-1}(u_l) - b_l`` (``<= 2u (|f^{-1}(u_l)| + |b_l|)``) and solves with ``W_l`` (backward stable:
    ``<= n u cond(W_l) |tau_{l-1}|``), so

        ||delta tau_{l-1}|| <= u [ ||W_l^{-1}|| (3 (||h_l|| + ||tau_l||) / min D_l + 2 ||f^{-1}(u_l)|| + 2 ||b_l||)
                                   + n cond(W_l) ||tau_{l-1}|| ].

    The local error ``E_{l-1} = m_{l-1} (h_{l-1} - tau_{l-1})`` then carries ``m_{l-1} ||delta tau_{l-1}||``,
    and an error already in ``E_j`` reaches ``E_{j-1}`` multiplied by ``max D_j ||W_j^{-1}||`` (the
    exact target map is linear with that norm once the ``gamma`` and ``1/gamma`` cancel). The
    adaptive gamma's normalisation ``gamma_l ~ 1/||tau_l - h_l||`` perturbs the scale by the same
    relative amount: factor 2 (adaptive only). The result is multiplied by ``SAFETY = 2`` for the
    terms the model does not resolve (the subtraction ``h - tau``, the product ``k * tau``). Depth enters through the sum over layers
    and, for fixed gamma, through ``m_l = gamma^{-(L-l)}``: this is the spec's
    ``eps * gamma^{-(L-1)}`` (fixed) and ``~ L eps / gamma`` (adaptive).

    **Conv layers** (:mod:`refimpl.rules.invertible_conv`): ``W_l`` is the per-patch matrix ``P_l``
    (``n = C_out``), the solve has one right-hand side per position (``||c||`` over all of them,
    ``<= ||P^{-1}|| ||f^{-1}(u) - b||``), and col2im adds at most ``N = max`` multiplicity patches into
    a pixel: it maps a patch-error of norm ``e`` to at most ``sqrt(N) e`` and rounds its sums by
    ``<= N u sqrt(N) ||c||``; the correction ``- (N - 1) x`` rounds by ``<= 2 N u ||x||``, on a result
    near ``x`` that was built as ``N x + ...`` (the cancellation of C2's correction). The carried
    factor is ``max D_l sqrt(N) ||P^{-1}||``. For the updates, ``||weight_grad(delta, h)|| <=
    ||delta|| sqrt(N_in) ||h||`` (each input pixel sits in ``N_in`` patches) and ``||bias_grad|| <=
    sqrt(positions) ||delta||`` per sample. The channel selection (``keep``) and pooling transposes
    do not increase norms.
    """
    from refimpl.rules.invertible_conv import patch_matrix

    SAFETY = 2.0
    norm_factor = 2.0 if adaptive else 1.0
    u = EPS64 / 2
    L = net.depth
    trace = record["trace"]
    B = to_numpy(trace.h[0]).shape[0]
    h = [to_numpy(a) for a in trace.h]
    z = [to_numpy(a) for a in trace.z]
    taus = [None if t is None else to_numpy(t) for t in record["targets"]]
    mults = [None if m is None else (np.full((B, 1), m) if np.isscalar(m) else to_numpy(m))
             for m in record["multipliers"]]
    bs = [to_numpy(b) for b in net.biases]
    D = [None] + [to_numpy(net.activation(l).df(trace.a[l])).reshape(B, -1) for l in range(1, L + 1)]
    rown = lambda v: np.linalg.norm(v.reshape(v.shape[0], -1), axis=1)
    beta = [np.zeros(B) for _ in range(L + 1)]  # bound on ||E_l[b] - exact|| (per-sample units)
    for l in range(L, 1, -1):
        lay = net.layer(l)
        conv = isinstance(lay, Conv2d)
        P = to_numpy(patch_matrix(np, to_numpy(net.weights[l - 1])) if conv else net.weights[l - 1])
        s = np.linalg.svd(P, compute_uv=False)
        winv, cond = 1.0 / s.min(), s.max() / s.min()
        ainv = to_numpy(net.activation(l).inv(record["nudged"][l]))
        tau_z = z[l] if getattr(lay, "keep", None) is None else np.concatenate([taus[l], z[l][:, lay.keep:]], axis=1)
        if conv:
            Nmax = float(coverage(lay).max())
            spread = math.sqrt(Nmax)
            positions = lay.out_shape[1] * lay.out_shape[2]
            bnorm = np.linalg.norm(bs[l - 1]) * math.sqrt(positions)
            cnorm = winv * (rown(ainv) + bnorm)                                    # ||P^-1 rows(f^-1(u) - b)||
            dtau = u * (spread * winv * (3 * (rown(z[l]) + rown(tau_z)) / D[l].min(axis=1) + 2 * rown(ainv)
                                         + 2 * bnorm)
                        + spread * P.shape[0] * cond * cnorm + Nmax * spread * cnorm + 2 * Nmax * rown(h[l - 1]))
        else:
            spread = 1.0
            dtau = u * (winv * (3 * (rown(z[l]) + rown(tau_z)) / D[l].min(axis=1) + 2 * rown(ainv)
                                + 2 * np.linalg.norm(bs[l - 1])) + P.shape[0] * cond * rown(taus[l - 1]))
        carried = beta[l] * D[l].max(axis=1) * winv * spread
        beta[l - 1] = norm_factor * (mults[l - 1][:, 0] * dtau) + carried
    bW, bb = [], []
    for l in range(1, L + 1):
        lay = net.layer(l)
        eD = SAFETY * beta[l] * D[l].max(axis=1) / B  # bound on the row of Delta_l
        n_in = math.sqrt(float(coverage(lay).max()))
        positions = math.sqrt(lay.out_shape[1] * lay.out_shape[2]) if isinstance(lay, Conv2d) else 1.0
        bW.append(float(np.sum(eD * n_in * rown(h[l - 1]))))
        bb.append(float(np.sum(eD * positions)))
    return tuple(bW), tuple(bb)


def _gait_pl(inst, net, gamma, adaptive):
    rule = G.GaitProp(gamma=gamma, adaptive=adaptive, loss=inst.loss, outputs=inst.params["outputs"])
    upd, _ = rule.updates(net, rule.init(net), inst.x, inst.y)
    return upd


FIXED_MAX_DEPTH = 4


def _draw_pl(d, xp, dtype):
    if d.boolean():  # invertible conv layers (overlaps, auxiliary channels, a pooled first layer)
        inst = _draw_conv(d, xp, dtype, PIECEWISE)
    else:
        inst = _draw(d, xp, dtype, PIECEWISE)
    # Fixed gamma only up to depth 4: its rounding grows as eps * gamma^-(L-1) (1e-2: ~1e-10 relative
    # at L = 4, but ~1e-6..1e-1 at L = 6 once gamma is shrunk), which would blunt the control.
    adaptive = d.variant("adaptive", (False, True)) or inst.net.depth > FIXED_MAX_DEPTH
    gamma = 1e-6 if adaptive else 1e-2
    # The theorem's condition: no nudge crosses a kink. A crossing needs |a| < O(gamma) at some
    # unit, so shrinking gamma removes it (constructive, no rejection): at most a few steps.
    for _ in range(30):
        upd = _gait_pl(inst, inst.net, gamma, adaptive)
        if kink_crossings(inst.net, upd.record) == 0:
            break
        gamma /= 4
    return NetInstance(inst.net, inst.x, inst.y, inst.loss,
                       params=dict(inst.params, gamma=gamma, adaptive=adaptive))


def _pl_vs_bp(inst, net):
    p = inst.params
    upd = _gait_pl(inst, net, p["gamma"], p["adaptive"])
    crossings = kink_crossings(net, upd.record)
    dW, db = bp_reference(net, inst.x, inst.y, inst.loss, p["outputs"])
    bW, bb = rounding_bound(net, upd.record, p["adaptive"])
    rtol, atol = tolerance("exact_identity", net.dtype, net.depth)  # rounding on the oracle's side
    worst, worst_tol, worst_ratio, ok = 0.0, 0.0, 0.0, True
    for lab, mine, ref, bound in zip(_labels(net.depth), list(upd.dW) + list(upd.db), dW + db, bW + bb):
        diff = float(np.linalg.norm(to_numpy(mine) - ref))
        scale = float(np.linalg.norm(ref))
        tol = bound + rtol * scale + atol
        ok &= diff <= tol
        rel, rel_tol = diff / max(scale, 1e-300), tol / max(scale, 1e-300)
        if rel >= worst:
            worst, worst_tol, worst_lab = rel, rel_tol, lab
        worst_ratio = max(worst_ratio, diff / tol)
    detail = (f"{'adaptive' if p['adaptive'] else 'fixed'} gamma {p['gamma']:.3g}; kink crossings {crossings}; "
              f"worst relative error {worst:.2e} at {worst_lab} (rounding bound {worst_tol:.2e}); "
              f"max error/bound {worst_ratio:.3f}")
    if crossings:
        return Evidence(False, worst, worst_tol, "condition violated: a nudge crosses a kink; " + detail)
    return Evidence(bool(ok), worst, worst_tol, detail)


def _check_pl(inst):
    return _pl_vs_bp(inst, inst.net)


def _control_pl(inst):
    return _pl_vs_bp(inst, _scaled(inst.net, inst.params["scales"]))


# --- gaitprop.converges_to_bp_smooth --------------------------------------------------------------

#: Adaptive-gamma grid. Truncation: relative error ~ c1 gamma with c1 ~ 1 (measured 0.8-1.5 at depth
#: 4-6), Richardson remainder ~ c4 gamma_max^4 ~ 1e-11. Rounding ~ 4 L eps / gamma ~ 3e-12 at 2.5e-4,
#: amplified ~36x by the 4-point extrapolation weights (sum |w_i| s_max / s_i): ~1e-10, inside the
#: exact-identity limit tolerance 1e-10 * depth (+1e-12 * depth) for depth >= 2 with margin >= 2x;
#: limit_factor 1 is kept (no loosening).
SMOOTH_STEPS = (2e-3, 1e-3, 5e-4, 2.5e-4)


def _draw_smooth(d, xp, dtype):
    # Layers 2..L all linear would make the pass exact (no first-order term to measure): that case
    # is gaitprop.equals_bp_piecewise_linear's; here at least one inverted layer is non-linear.
    if d.boolean():
        return _draw_conv(d, xp, dtype, SMOOTH, nonlinear=("tanh", "sigmoid", "softplus"))
    return _draw(d, xp, dtype, SMOOTH, nonlinear=("tanh", "sigmoid", "softplus"))


def _nudge_norms(inst, adaptive: bool):
    """Per sample and layer l = 2..L: ``||gamma_l (tau_l - h_l)||`` of the pass (the nudge before
    its D^2 weighting), against ``gamma sqrt(n_l)`` (C2's definition of the adaptive gamma). Conv
    layers: the norm over every unit of the sample, ``n_l`` the units of ``z_l`` including
    auxiliary channels (``keep``), whose target is their forward value (a zero difference)."""
    net, k, gamma = inst.net, inst.params["outputs"], 1e-3
    rule = G.GaitProp(gamma=gamma, adaptive=adaptive, loss=inst.loss, outputs=k)
    upd, _ = rule.updates(net, rule.init(net), inst.x, inst.y)
    rec = upd.record
    actual, expected = [], []
    for l in range(2, net.depth + 1):
        diff = to_numpy(rec["targets"][l]) - to_numpy(rec["trace"].h[l])
        norms = np.linalg.norm(diff.reshape(diff.shape[0], -1), axis=1)
        n_l = int(np.prod(tuple(rec["trace"].z[l].shape[1:])))  # every unit of z_l (auxiliary channels too)
        keep = norms > 0  # a sample with zero error keeps gamma (nothing to normalise)
        g = to_numpy(rec["gammas"][l]).astype(np.float64).reshape(-1) if adaptive else np.full(norms.shape, gamma)
        actual.append((g * norms)[keep])
        expected.append(np.full(int(keep.sum()), gamma * math.sqrt(n_l)))
    return compare(actual, expected, "exact_identity", net.dtype,
                   labels=[f"||gamma_{l} (tau_{l} - h_{l})||" for l in range(2, net.depth + 1)])


def _smooth_order(inst, net):
    k = inst.params["outputs"]
    dW, db = bp_reference(net, inst.x, inst.y, inst.loss, k)
    ref = flat(dW + db)

    def diff(gamma):
        rule = G.GaitProp(gamma=gamma, adaptive=True, loss=inst.loss, outputs=k)
        upd, _ = rule.updates(net, rule.init(net), inst.x, inst.y)
        return flat(list(upd.dW) + list(upd.db)) - ref

    return order_check(diff, SMOOTH_STEPS, 1, scale=float(np.linalg.norm(ref)), dtype=net.dtype,
                       depth=net.depth)


def _check_smooth(inst):
    return _smooth_order(inst, inst.net)


def _control_smooth(inst):
    return _smooth_order(inst, _scaled(inst.net, inst.params["scales"]))


# --- gaitprop.deviation_first_order_in_nonorthogonality -------------------------------------------

#: eps grid: diff(eps) = c1 eps + ... ; remainder c4 eps_max^4 ~ 1e-12, rounding ~ 1e-15 (no gamma).
NONORTH_STEPS = (1e-3, 5e-4, 2.5e-4, 1.25e-4)
#: The deviation at the largest eps must be resolvable: >= 100 x the limit tolerance (else nothing grows).
RESOLVABLE = 100.0


def _draw_nonorth(d, xp, dtype):
    inst = _draw_conv(d, xp, dtype, SMOOTH) if d.boolean() else _draw(d, xp, dtype, SMOOTH)
    return NetInstance(inst.net, inst.x, inst.y, inst.loss,
                       params=dict(inst.params, direction_seed=d.seed()))


def _cayley(A):
    n = A.shape[0]
    I = np.eye(n)
    return np.linalg.solve(I - A / 2, I + A / 2)


def _nonorth_order(inst, orthogonal_direction: bool):
    net, k = inst.net, inst.params["outputs"]
    L = net.depth
    gen = host_rng(inst.params["direction_seed"])
    Q = [to_numpy(W) for W in net.weights]
    dirs = [gen.standard_normal(W.shape) for W in Q]

    # conv networks: only the inverted conv layers are perturbed (their per-patch matrices P =
    # W.reshape(C_out, -1)), so the deviation must come from the conv inverse itself
    moved = [l - 1 for l in _inverted_convs(net)] or list(range(1, L))

    def net_at(eps):
        Ws = list(Q)
        for i in moved:
            Qi = Q[i].reshape(Q[i].shape[0], -1)
            Di = dirs[i].reshape(Qi.shape)
            n = Qi.shape[0]
            if orthogonal_direction:
                A = (Di - Di.T) / math.sqrt(2 * n)
                Ws[i] = (Qi @ _cayley(eps * A)).reshape(Q[i].shape)
            else:
                Ws[i] = (Qi + eps * Di / math.sqrt(n)).reshape(Q[i].shape)
        return _rebuild(net, Ws)

    def diff(eps):
        m = net_at(eps)
        upd = G.gamma_limit(m, inst.x, inst.y, loss=inst.loss, outputs=k)
        dW, db = bp_reference(m, inst.x, inst.y, inst.loss, k)
        return flat(list(upd.dW) + list(upd.db)) - flat(dW + db)

    dW0, db0 = bp_reference(net, inst.x, inst.y, inst.loss, k)
    scale = float(np.linalg.norm(flat(dW0 + db0)))
    ev = order_check(diff, NONORTH_STEPS, 1, scale=scale, dtype=net.dtype, depth=L)
    m = net_at(NONORTH_STEPS[0])
    Ps = [to_numpy(W).reshape(W.shape[0], -1) for W in m.weights[1:]]
    dev = max(np.linalg.norm(P.T @ P - np.eye(P.shape[1]), 2) for P in Ps)
    err0 = float(np.linalg.norm(diff(NONORTH_STEPS[0]))) / scale
    resolvable = err0 >= RESOLVABLE * ev.tolerance
    detail = (f"{ev.detail}; at eps {NONORTH_STEPS[0]:g}: max_l ||W^T W - I||_2 = {dev:.2e}, "
              f"rel. deviation {err0:.2e}, ratio {err0 / max(dev, 1e-300):.2f}; resolvable above rounding "
              f"(>= {RESOLVABLE:g} x limit tol): {resolvable}")
    return Evidence(bool(ev.holds and resolvable), ev.error, ev.tolerance, detail, ev.order, 1)


def _check_nonorth(inst):
    return _nonorth_order(inst, orthogonal_direction=False)


def _control_nonorth(inst):
    return _nonorth_order(inst, orthogonal_direction=True)


# --- gaitprop.tp_equals_gauss_newton_linear --------------------------------------------------------

def gn_targets(net, x, y, loss, outputs):
    """Gauss-Newton targets ``h_l - J_l^+ e_L`` for ``l = 1..L`` (host arrays; index 0 None), from
    :func:`proofs.oracle.gauss_newton_targets` (``beta = 1``, per-sample errors). Auxiliary output units
    (mse only) are folded in by giving them their forward value as label (zero error)."""
    if outputs < net.sizes[-1]:
        if loss != "mse":
            raise ValueError("gn_targets: auxiliary outputs are supported for mse only")
        h = to_numpy(net.forward(x).h[-1])
        y = from_numpy(np.concatenate([to_numpy(y), h[:, outputs:]], axis=1), net.xp, net.dtype)
    if not net.is_dense:  # conv layers: the same map as a dense network of unrolled (Toeplitz) matrices
        dense, xd = unrolled(net), from_numpy(to_numpy(x).reshape(x.shape[0], -1), net.xp, net.dtype)
        B = x.shape[0]
        return (None,) + tuple(oracle.gauss_newton_targets(dense, xd, y, loss, l, beta=1.0).reshape(
            (B,) + tuple(net.shapes[l])) for l in range(1, net.depth + 1))
    return (None,) + tuple(oracle.gauss_newton_targets(net, x, y, loss, l, beta=1.0)
                           for l in range(1, net.depth + 1))


def unrolled(net):
    """The dense network computing the same map as a conv network without pooling or auxiliary
    channels: each conv layer is its unrolled matrix (:func:`refimpl.layers.conv_toeplitz`, built
    from the definition, torch flatten order) with the bias repeated over positions."""
    Ws, bs = [], []
    for lay, W, b in zip(net.layers, net.weights, net.biases):
        if isinstance(lay, Conv2d):
            if lay.pool is not None or lay.keep is not None:
                raise ValueError("unrolled: pooling and auxiliary channels have no unrolled dense form here")
            Ws.append(conv_toeplitz(lay, W))
            bs.append(np.repeat(to_numpy(b), lay.out_shape[1] * lay.out_shape[2]))
        else:
            Ws.append(to_numpy(W))
            bs.append(to_numpy(b))
    return network_from_matrices(Ws, bs, net.activations, net.xp, net.dtype)


def _draw_tp(d, xp, dtype):
    # gn_targets folds auxiliary output units in for mse only: no auxiliary units under ce.
    if d.boolean():  # tiling invertible convs (stride = kernel): C2's inverse is the exact inverse
        return _draw_conv(d, xp, dtype, ("linear",), weights="invertible", tiled=True, ce_aux=False)
    return _draw(d, xp, dtype, ("linear",), weights="invertible", ce_aux=False)


def _tp_vs_gn(net, x, y, loss, k):
    rule = G.TPInverse(loss=loss, outputs=k)
    upd, _ = rule.updates(net, rule.init(net), x, y)
    gn = gn_targets(net, x, y, loss, k)
    L = net.depth
    ev = compare([to_numpy(t) for t in upd.record["targets"][1:]], list(gn[1:]), "exact_identity", net.dtype, depth=L,
                 labels=[f"tau[{l}]" for l in range(1, L + 1)])
    dW, db = bp_reference(net, x, y, loss, k)
    angles = ri.metrics.layer_angles(tuple(to_numpy(w).ravel() for w in upd.dW), tuple(w.ravel() for w in dW))
    return Evidence(ev.holds, ev.error, ev.tolerance,
                    f"{ev.detail}; angle(TP, BP) per layer: {', '.join(f'{a:.1f}' for a in angles)} deg")


def _check_tp(inst):
    return _tp_vs_gn(inst.net, inst.x, inst.y, inst.loss, inst.params["outputs"])


def _control_tp(inst):
    # Break linearity: leaky-ReLU(0.1) output layer, mse labels on the other side of the kink for
    # every unit (y = -(h + 1) where h > 0, 1 - h where h <= 0), so the exact inverse f^{-1}(y) and
    # GN's linearisation (y - h) / f'(a) differ by >= 9 in every entry of the output's pre-image.
    net = inst.net.replace(activations=inst.net.activations[:-1] + ("leaky_relu(0.1)",))
    h = to_numpy(net.forward(inst.x).h[-1])
    y = np.where(h > 0, -(h + 1.0), 1.0 - h)
    return _tp_vs_gn(net, inst.x, from_numpy(y, net.xp, net.dtype), "mse", net.sizes[-1])


# --- gaitprop.conv_inverse_counts_overlaps ----------------------------------------------------------

def _draw_conv_inverse(d, xp, dtype):
    """A conv instance (invertible or orthogonal ``P``) whose first inverted conv has overlapping
    patches (max multiplicity >= 2), so the correction term matters."""
    inst = _draw_conv(d, xp, dtype, INVERTIBLE, weights=d.choice(("orthogonal", "invertible")), overlap=True)
    return NetInstance(inst.net, inst.x, inst.y, inst.loss, params=dict(inst.params, direction_seed=d.seed()))


def _conv_inverse_vs_counted(inst, stale: bool):
    from refimpl.rules.invertible_conv import conv_inverse, multiplicity
    net = inst.net
    trace = net.forward(inst.x)
    gen = host_rng(inst.params["direction_seed"])
    mine, expect, gaps, avg = [], [], [], []
    for l in range(2, net.depth):
        lay = net.layer(l)
        x = trace.h[l - 1]
        xh = to_numpy(x)
        dn = 0.5 * gen.standard_normal(xh.shape)
        t = net.activation(l).f(net.pre_activation(l, x + from_numpy(dn, net.xp, net.dtype)))   # reachable target
        fwd = x if not stale else from_numpy(np.roll(xh, 1, axis=0) + gen.standard_normal(xh.shape), net.xp, net.dtype)
        N = to_numpy(multiplicity(net.xp, lay, net.dtype))
        mine.append(conv_inverse(net, l, t, fwd))
        expect.append(xh + N * dn)                                                          # x + N d
        gaps.append(float(np.linalg.norm((N - 1) * dn) / np.linalg.norm(dn)))
    ev = compare(mine, expect, "exact_identity", net.dtype, depth=net.depth,
                 labels=[f"g_{l}^-1" for l in range(2, net.depth)])
    if not max(gaps) > 0:  # the condition of the draw (overlap) failed: nothing for the correction to do
        return Evidence(False, ev.error, ev.tolerance, "condition violated: no overlapping patches; " + ev.detail)
    return Evidence(ev.holds, ev.error, ev.tolerance,
                    f"{ev.detail}; distance of C2's inverse from the true pre-image x + d, ||(N - 1) d|| / ||d|| "
                    f"per conv layer: {', '.join(f'{g:.2f}' for g in gaps)}")


def _check_conv_inverse(inst):
    return _conv_inverse_vs_counted(inst, stale=False)


def _control_conv_inverse(inst):
    return _conv_inverse_vs_counted(inst, stale=True)


# --- gaitprop.error_vs_gamma (measurement) --------------------------------------------------------

TABLE_GAMMAS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


@dataclass(frozen=True)
class _TableSeed:
    seed: int

    def describe(self) -> str:
        return f"error table, seed {self.seed}"


def _draw_table(d, xp, dtype):
    return _TableSeed(d.seed())


def error_table(seed: int, n: int = 20, depths=(4, 6), xp=None, dtype="float64"):
    """Max-over-layers relative error ``max|dW - dW_BP| / max|dW_BP|`` of GAIT-prop (single sample,
    orthogonal ``W_l``, first layer ``n x n``) for each activation, mode, depth and gamma (spec §3.2)."""
    rows = []
    for act in ("linear", "leaky_relu(0.1)", "tanh"):
        for L in depths:
            gen = host_rng(np.random.SeedSequence([seed, L, len(act)]))
            Ws = [haar_orthogonal(gen, n, n) for _ in range(L)]
            bs = [0.1 * gen.standard_normal(n) for _ in range(L)]
            net = network_from_matrices(Ws, bs, [act] * L, xp, dtype)
            x = from_numpy(gen.standard_normal((1, n)), net.xp, net.dtype)
            y = from_numpy(gen.standard_normal((1, n)) * (0.5 if act == "tanh" else 1.0), net.xp, net.dtype)
            dW, _, _ = oracle.bp_gradients(net, x, y, "mse")
            for adaptive in (False, True):
                errs = []
                for g in TABLE_GAMMAS:
                    try:
                        upd, _ = G.GaitProp(gamma=g, adaptive=adaptive).updates(net, None, x, y)
                        errs.append(max(float(np.max(np.abs(to_numpy(a) - e)) / np.max(np.abs(e)))
                                        for a, e in zip(upd.dW, dW)))
                    except ValueError:  # a target left tanh's range
                        errs.append(math.nan)
                rows.append((act, L, adaptive, errs))
    return rows


def _measure_table(inst):
    rows = error_table(inst.seed)
    lines = [f"{a:<15} L={L} {'adaptive' if ad else 'fixed   '}: " + " ".join(f"{e:.1e}" for e in errs)
             for a, L, ad, errs in rows]
    head = "relative error vs BP at gamma = " + ", ".join(f"{g:g}" for g in TABLE_GAMMAS)
    worst = max(errs[-1] for a, L, ad, errs in rows if ad)
    return Evidence(True, worst, math.nan, head + "\n" + "\n".join(lines))


# --- registry ---------------------------------------------------------------------------------------

_SOURCE = ("Ahmad, van Gerven & Ambrogioni, GAIT-prop, NeurIPS 2020 (arXiv 2006.06438), abstract; "
           "derivation in /work/shared/spec/gaitprop.md §2.4, §3.1")

THEOREMS = (
    Theorem(
        name="gaitprop.limit_equals_bp_orthogonal",
        architectures=("mlp", "conv"),
        table=("GAIT-prop's γ→0 recursion `E_{l-1} = (D_l ⊙ E_l) W_l^{-T}` gives BP's gradients when `W_2..W_L` are orthogonal (any first layer, mse and ce, auxiliary outputs, depth ≤ 6)",
               "exact, float64 rtol 1e-10·depth",
               "`W_L → s W_L`, s ∈ [1.5, 2.5]"),
        statement="gamma -> 0 GAIT-prop recursion E_{l-1} = (D_l * E_l) @ inv(W_l).T gives dW_l = Delta_l^T h_{l-1} "
                  "equal to autograd's BP gradients when W_2..W_L are orthogonal (inv(W).T = W), any first layer, "
                  "mse and ce, auxiliary output units; on conv networks (half the draws) with orthogonal per-patch "
                  "matrices P_l = W_l.reshape(C_out, -1), overlapping patches (C2's correction) and auxiliary channels "
                  "included",
        source=_SOURCE,
        conditions="W_l orthogonal for l = 2..L; float64",
        draw=_draw_limit, check=_check_limit, control=_control_limit,
        control_breaks="W_L -> s W_L, s in [1.5, 2.5] (invertible, not orthogonal); conv networks: the last inverted "
                       "conv's per-patch matrix P -> s P instead",
        dtypes=("float64",),
    ),
    Theorem(
        name="gaitprop.equals_bp_piecewise_linear",
        architectures=("mlp", "conv"), variants=2,
        table=("identity / leaky-ReLU, orthogonal `W_2..W_L`: GAIT-prop at a *finite* γ (fixed 1e-2 for L ≤ 4, adaptive 1e-6) equals BP when no nudge crosses a kink",
               "rounding model of the target pass, evaluated per instance (`proofs.gaitprop.rounding_bound`; measured errors ≤ 5 % of it)",
               "`W_L → s W_L`"),
        statement="identity / leaky-ReLU networks with orthogonal W_2..W_L: GAIT-prop at finite gamma (fixed 1e-2 or "
                  "adaptive 1e-6, shrunk until no nudge crosses a kink) equals BP to within the rounding model of the "
                  "target pass (no truncation term); half the draws are conv networks (orthogonal per-patch matrices, "
                  "overlapping patches, auxiliary channels; the model then counts col2im's sums and C2's correction)",
        source=_SOURCE + "; spec §3.1 'special cases', §3.2",
        conditions="piecewise-linear activations, no nudge crosses a kink, W_l orthogonal for l >= 2",
        draw=_draw_pl, check=_check_pl, control=_control_pl,
        control_breaks="W_L -> s W_L, s in [1.5, 2.5] (not orthogonal; conv networks: the last inverted conv's "
                       "P -> s P)",
        dtypes=("float64",),
    ),
    Theorem(
        name="gaitprop.converges_to_bp_smooth",
        architectures=("mlp", "conv"),
        table=("tanh / sigmoid / softplus, orthogonal `W_2..W_L`, adaptive γ: GAIT-prop − BP = O(γ) at every depth 2..6",
               "order 1 + Richardson limit on γ = 2e-3 … 2.5e-4",
               "`W_L → s W_L` (the limit is not BP)"),
        statement="smooth activations (tanh, sigmoid, softplus, identity), orthogonal W_2..W_L, adaptive gamma: "
                  "GAIT-prop - BP = O(gamma) (slope 1 on gamma = 2e-3..2.5e-4, Richardson limit 0 to rounding) at "
                  "every depth 2..6; half the draws are conv networks (orthogonal per-patch matrices, overlapping "
                  "patches, auxiliary channels)",
        source=_SOURCE + "; adaptive gamma: Dalm et al., TMLR 2023 (arXiv 2102.11598), code C2 compute_adaptive_gamma",
        conditions="C^2 invertible activations; W_l orthogonal for l >= 2; adaptive gamma",
        draw=_draw_smooth, check=_check_smooth, control=_control_smooth,
        control_breaks="W_L -> s W_L, s in [1.5, 2.5] (conv networks: the last inverted conv's P -> s P): the "
                       "gamma -> 0 limit is no longer BP",
        dtypes=("float64",),
    ),
    Theorem(
        name="gaitprop.adaptive_nudge_norm",
        architectures=("mlp", "conv"),
        table=("adaptive γ (Dalm et al.'s C2): every per-sample nudge before its `D_l²` weighting has norm `γ√n_l`, "
               "`‖γ_l[b] (τ_l[b] − h_l[b])‖ = γ√n_l` (l = 2..L, samples with a non-zero error; conv: `n_l` counts every unit of `z_l`, auxiliary channels included)",
               "exact",
               "fixed γ (norm `γ‖τ_l − h_l‖`)"),
        statement="adaptive gamma: every per-sample nudge before its D^2 weighting has norm gamma sqrt(n_l), "
                  "||gamma_l[b] (tau_l[b] - h_l[b])|| = gamma sqrt(n_l) for l = 2..L (samples with a non-zero error)",
        source="Dalm et al., TMLR 2023 (arXiv 2102.11598), code C2 compute_adaptive_gamma; spec gaitprop.md",
        conditions="adaptive=True (gamma_l = gamma sqrt(n_l) / ||tau_l - h_l|| per sample)",
        draw=_draw_smooth, check=lambda i: _nudge_norms(i, True), control=lambda i: _nudge_norms(i, False),
        control_breaks="fixed gamma: the nudge norm is gamma ||tau_l - h_l||, not gamma sqrt(n_l)",
        dtypes=("float64", "float32"),
    ),
    Theorem(
        name="gaitprop.deviation_first_order_in_nonorthogonality",
        architectures=("mlp", "conv"),
        table=("`W_l = Q_l + εG_l`: the γ→0 update leaves BP at first order in ε, i.e. ∝ ‖WᵀW − I‖",
               "order 1 + limit 0 + deviation resolvable above rounding",
               "perturbation along the orthogonal group (Cayley): nothing grows"),
        statement="W_l(eps) = Q_l + eps G_l (l >= 2): the gamma -> 0 GAIT-prop update minus BP's is c_1 eps + O(eps^2) "
                  "with c_1 != 0 (slope 1, limit 0, resolvable), i.e. grows linearly with ||W^T W - I||; conv networks "
                  "(half the draws): the inverted convs' per-patch matrices P_l = Q_l + eps G_l",
        source="spec §3.3 (W^{-1} - W^T = -W^T (W^T W - I) + O(||W^T W - I||^2))",
        conditions="perturbation off the orthogonal group; smooth activations",
        draw=_draw_nonorth, check=_check_nonorth, control=_control_nonorth,
        control_breaks="perturbation along the orthogonal group, W_l(eps) = Q_l cayley(eps A_l), A_l skew: "
                       "nothing grows",
        dtypes=("float64",),
    ),
    Theorem(
        name="gaitprop.tp_equals_gauss_newton_linear",
        architectures=("mlp", "conv"),
        table=("TP through exact inverses, linear invertible nets: targets = Gauss-Newton targets `h_l − J_l^{-1} e_L` (so TP is not BP, which uses `J_lᵀ`)",
               "exact, against `oracle.gauss_newton_targets`",
               "leaky-ReLU output, labels across the kink"),
        statement="linear networks, invertible W_2..W_L: TP through exact inverses gives the Gauss-Newton targets "
                  "tau_l = h_l - J_l^{-1} e_L (J_l = dh_L/dh_l), so TP is not BP (which uses J_l^T); half the draws are "
                  "conv networks whose inverted convs tile their input (stride = kernel, no padding: a bijection, "
                  "inverted per patch; GN targets from the unrolled Toeplitz network)",
        source="Ahmad et al. 2020 (TP baseline, code C1 get_tp_updates); GN targets as in Meulemans et al. 2020",
        conditions="linear activations; square invertible W_l for l >= 2",
        draw=_draw_tp, check=_check_tp, control=_control_tp,
        control_breaks="leaky-ReLU(0.1) output layer with every label across the kink (not linear)",
        dtypes=("float64",),
    ),
    Theorem(
        name="gaitprop.conv_inverse_counts_overlaps",
        architectures=("conv",),
        table=("invertible conv, overlapping patches: the paper code's inverse returns `x + N·d` for a reachable target `f(conv(x + d) + b)` (`N` patches per pixel); the pre-image only where `N = 1`",
               'exact, float64 rtol 1e-10',
               "a stale forward input (another batch's `h_{l-1}`)"),
        statement="invertible conv (square per-patch matrix P, any stride/padding, overlapping patches): C2's "
                  "inverse col2im(P^-1 rows(f^-1(t) - b)) - (N - 1) x with the layer's forward input x returns, for "
                  "a reachable target t = f(conv(x + d) + b), exactly x + N * d (N: patches covering each pixel) -- "
                  "the true pre-image x + d only where N = 1; the detail reports ||(N - 1) d|| / ||d||",
        source="Dalm et al., TMLR 2023 (arXiv 2102.11598), code artcogsys/GAIT_prop_scaling InvConv.inverse "
               "(reconstruction_correction); derivation in refimpl/rules/invertible_conv.py",
        conditions="x is the forward input of the same batch (C2 stores it in self.x); P invertible",
        draw=_draw_conv_inverse, check=_check_conv_inverse, control=_control_conv_inverse,
        control_breaks="a stale forward input (another batch's h_{l-1}): the correction no longer cancels",
        dtypes=("float64",),
    ),
    Theorem(
        name="gaitprop.error_vs_gamma",
        table=("measurement: relative error vs BP for γ = 1e-1 … 1e-6, fixed and adaptive, depth 4 and 6 (spec table)",
               "measurement",
               "—"),
        statement="relative error of GAIT-prop vs BP over gamma = 1e-1..1e-6 (identity, leaky-ReLU 0.1, tanh; fixed "
                  "and adaptive; depth 4 and 6; n = 20, one sample): the spec's §3.2 table",
        source="spec §3.2 [measured]",
        conditions="orthogonal W_l",
        draw=_draw_table, check=_measure_table, kind="measurement",
        dtypes=("float64",), backends=("numpy",),
    ),
)
