r"""Invertible convolutions: the conv layers GAIT-prop and TP-through-inverses send targets down through.

Dalm, Ahmad, Ambrogioni & van Gerven, TMLR 2023 (arXiv 2102.11598 [P2]; code
``artcogsys/GAIT_prop_scaling`` [C2], ``network/inv_layer.py`` ``InvConv``) make a convolution
invertible by making its *per-patch matrix* square. A :class:`refimpl.layers.Conv2d` computes, at
every output position ``p`` (im2col row), ``a_p = P c_p + b`` with the patch ``c_p`` of the padded
input (``C_in*kh*kw`` numbers in ``(c, i, j)`` order) and

    P = W.reshape(C_out, C_in*kh*kw)                                    (the per-patch matrix)

The layer is *invertible* when ``P`` is square (``C_out = C_in*kh*kw``) and well conditioned; with
no pooling. Its inverse acts per patch (``c_p = P^{-1} (a_p - b)``, one linear solve with every
position as a right-hand side) and puts the patches back in place (col2im, the scatter of
:meth:`Conv2d.transpose`):

    g^{-1}(t) = col2im( solve(P, rows(f^{-1}(t) - b)) ) - (N - 1) * x           (C2's InvConv.inverse)

``rows`` is the ``(B*H'*W', C_out)`` matrix of the positions, ``N`` the *multiplicity* map (how many
patches cover each input pixel; C2 computes it once as ``inverse(forward(ones))``, here it is
``col2im`` of ones, exact integers) and ``x`` the layer's forward input of the same batch
(C2 stores it in ``self.x``). What this computes:

* **Non-overlapping patches that tile the input** (stride = kernel, no padding, kernel divides the
  input): ``N = 1`` everywhere, the conv is a block-diagonal dense map (one block ``P`` per
  position, after permuting units) and ``g^{-1}`` is its exact inverse; the correction term is 0.
* **Overlapping patches** (stride < kernel): with ``a = conv(x) + b`` (the forward point),
  ``col2im(P^{-1} rows(a - b)) = N * x`` exactly (each patch reconstructs its own pixels), so
  ``g^{-1}(t) = x + col2im(P^{-1} rows(f^{-1}(t) - a))``: the forward input plus the *sum over the
  patches covering a pixel* of their per-patch corrections. It is exact at the forward point
  (``g^{-1}(f(a)) = x``) and affine in ``f^{-1}(t)``, but it is not an inverse: for a reachable
  target ``t = f(conv(x + d) + b)`` it returns ``x + N * d`` (every pixel's correction counted once
  per covering patch), whatever ``P``; the least-squares pre-image would be ``x + d``. Measured
  by :func:`reconstruction_gap` (``proofs.gaitprop.conv_inverse_gap``). For a target off the range
  of the conv (every GAIT-prop nudge: the output has ``kh*kw/(s_h*s_w)`` times more units than the
  input) no pre-image exists at all. What the correction does give is the right *linearisation*
  for GAIT-prop: ``dg^{-1} = col2im(P^{-1} rows(.)) = transpose(inv(P).T, .)``, the transposed
  convolution with ``inv(P).T`` in ``W``'s place -- BP's transposed convolution exactly when ``P``
  is orthogonal, with or without overlap.
* **Pixels no patch covers** (stride > kernel, or a remainder at the border): ``N = 0``, and
  ``g^{-1}`` returns their forward value (the conv cannot see them; they get zero error).

C2 writes the inverse with an explicit ``tf.linalg.inv`` refreshed after every step; here every
patch is a linear solve with ``P`` (same result to rounding, no inverse kept as state).

The orthogonality regulariser (P2/C2 ``get_ortho_loss``) acts on ``P``: ``||P P^T - I||_F^2``
(C2 reshapes its ``[kh, kw, C_in, C_out]`` kernel to a square matrix whose rows are in ``(i, j, c)``
order; a row permutation of refimpl's ``(c, i, j)`` order, so the penalty is the same number).
"""

from __future__ import annotations

import math
from typing import Optional

from ..backend import namespace, device_of
from ..layers import Conv2d

__all__ = ["patch_matrix", "is_square_conv", "check_conv_invertible", "check_conv_structure", "conv_cond",
           "multiplicity", "col2im",
           "conv_inverse", "conv_inverse_transpose", "reconstruction_gap"]


def patch_matrix(xp, W):
    """``P = W.reshape(C_out, C_in*kh*kw)``: the matrix applied to every patch (columns in ``(c, i, j)`` order)."""
    return xp.reshape(W, (W.shape[0], -1))


def is_square_conv(layer) -> bool:
    """True for a bound :class:`Conv2d` whose per-patch matrix is square (``C_out == C_in*kh*kw``)."""
    return isinstance(layer, Conv2d) and layer.out_channels == layer.in_shape[0] * math.prod(layer.kernel_size)


def check_conv_invertible(net, l: int, *, activations: bool, max_cond: float, rule: str) -> float:
    """``ValueError`` naming ``weights[l-1]`` unless conv layer ``l`` is invertible; returns ``cond_2(P_l)``.

    Conditions: no pooling (max/avg pooling loses information); ``P_l`` square (``C_out = C_in*kh*kw``);
    ``f_l`` invertible (when ``activations``); ``cond_2(P_l) <= max_cond`` (:func:`check_conv_structure`,
    then :func:`conv_cond`).
    """
    check_conv_structure(net, l, activations=activations, rule=rule)
    return conv_cond(net, l, max_cond=max_cond, rule=rule)


def check_conv_structure(net, l: int, *, activations: bool, rule: str) -> None:
    """The structural conditions of :func:`check_conv_invertible` (no pooling, square ``P_l``, invertible ``f_l``)."""
    lay = net.layer(l)
    where = f"weights[{l - 1}] ({lay.describe()})"
    if lay.pool is not None:
        raise ValueError(f"{where}: {rule} inverts layer {l}, but its pooling {lay.pool.describe()} is not "
                         "invertible; invertible conv layers (2..L) must not pool (down-sample with the stride "
                         "instead, as Dalm et al. 2023)")
    C, kh, kw = lay.in_shape[0], lay.kernel_size[0], lay.kernel_size[1]
    if not is_square_conv(lay):
        raise ValueError(
            f"{where}: {rule} inverts conv layer {l} patch by patch, so its per-patch matrix "
            f"W.reshape(C_out, C_in*kh*kw) must be square: expected out_channels = C_in*kh*kw = {C}*{kh}*{kw} = "
            f"{C * kh * kw}, got {lay.out_channels} (pass fewer channels on with keep=, the auxiliary channels of "
            "Dalm et al. 2023)")
    act = net.activation(l)
    if activations and not act.invertible:
        raise ValueError(
            f"activations[{l - 1}]: {rule} inverts f_{l}, but {act.name!r} is not invertible; use an "
            "invertible activation (linear, tanh, sigmoid, leaky_relu, elu, softplus) on layers 2..L")


def conv_cond(net, l: int, *, max_cond: float, rule: str) -> float:
    """``cond_2(P_l)`` from the singular values of the per-patch matrix; ``ValueError`` above ``max_cond``."""
    lay = net.layer(l)
    xp = net.xp
    where = f"weights[{l - 1}] ({lay.describe()})"
    C, kh, kw = lay.in_shape[0], lay.kernel_size[0], lay.kernel_size[1]
    s = xp.linalg.svdvals(patch_matrix(xp, net.weights[l - 1]))
    s_max, s_min = float(xp.max(s)), float(xp.min(s))
    cond = math.inf if s_min == 0.0 else s_max / s_min
    if not cond <= max_cond:
        raise ValueError(
            f"{where}: {rule} needs an invertible per-patch matrix P_{l} = W.reshape({lay.out_channels}, "
            f"{C * kh * kw}), but its condition number is {cond:.3g} (smallest singular value {s_min:.3g}) > "
            f"max_cond = {max_cond:.3g}; the per-patch inverse would be dominated by rounding")
    return cond


def _identity_kernel(xp, layer, dtype, device):
    """The kernel whose per-patch matrix is the identity (square layers only): ``transpose`` with it is col2im."""
    Co = layer.out_channels
    return xp.reshape(xp.eye(Co, dtype=dtype, device=device), (Co, layer.in_shape[0]) + tuple(layer.kernel_size))


def _rows(xp, v):
    """``(B, C, H', W') -> (B*H'*W', C)``: one row per output position."""
    B, C, Ho, Wo = v.shape
    return xp.reshape(xp.permute_dims(v, (0, 2, 3, 1)), (B * Ho * Wo, C))


def _unrows(xp, r, B, Ho, Wo):
    """Inverse of :func:`_rows`."""
    return xp.permute_dims(xp.reshape(r, (B, Ho, Wo, r.shape[1])), (0, 3, 1, 2))


def col2im(xp, layer, cols, batch: int):
    """Put per-position patches ``cols: (B*H'*W', C_in*kh*kw)`` back in place, summing where patches
    overlap and cropping the padding: the adjoint of :meth:`Conv2d.cols` (square layers:
    ``transpose`` with the identity per-patch matrix)."""
    _, Ho, Wo = layer.out_shape
    eye = _identity_kernel(xp, layer, cols.dtype, device_of(cols))
    return layer.transpose(xp, eye, _unrows(xp, cols, batch, Ho, Wo))


def multiplicity(xp, layer, dtype, device=None):
    """``N``: ``(1, C_in, H, W)``, the number of patches covering each input pixel (``col2im`` of ones;
    C2's ``reconstruction_correction = inverse(forward(ones))``, here exact and independent of ``W``)."""
    Co, Ho, Wo = layer.out_shape
    ones = xp.ones((Ho * Wo, Co), dtype=dtype, device=device)
    return col2im(xp, layer, ones, 1)


def _solve(xp, P, R, factors=None):
    """``P^{-1} R`` for square ``P`` (``factors``: an object with ``solve(R)``, e.g. an LU of ``P``)."""
    return xp.linalg.solve(P, R) if factors is None else factors.solve(R)


def conv_inverse(net, l: int, t, forward_input, name: Optional[str] = None, factors=None):
    r"""C2's inverse of invertible conv layer ``l`` (module docstring):

        g_l^{-1}(t) = col2im( solve(P_l, rows(f_l^{-1}(t) - b_l)^T)^T ) - (N_l - 1) * x

    ``t``: a target for ``z_l = f_l(a_l)`` (every channel, ``(B, C_out, H', W')``); ``forward_input``:
    ``x = h_{l-1}`` of the same batch (the reconstruction correction needs it). Exact inverse for
    tiling non-overlapping patches (``N = 1``); for overlapping ones see the module docstring.
    """
    xp = namespace(t)
    lay = net.layer(l)
    act = net.activation(l)
    B = t.shape[0]
    _, Ho, Wo = lay.out_shape
    a = act.inverse(t, name=name or f"target of z[{l}] (input of f_{l}^-1)")      # f^{-1}(t)
    r = _rows(xp, lay.add_bias(xp, a, -net.biases[l - 1]))                        # rows(f^{-1}(t) - b)
    c = _solve(xp, patch_matrix(xp, net.weights[l - 1]), r.T, factors).T         # per-patch P^{-1}(.)
    N = multiplicity(xp, lay, t.dtype, device_of(t))
    return col2im(xp, lay, c, B) - (N - 1) * forward_input                        # C2's correction


def conv_inverse_transpose(net, l: int, delta, factors=None):
    r"""``col2im(solve(P_l, rows(delta)^T)^T) = transpose_l(inv(P_l).T, delta)``: the transposed
    convolution with ``inv(P_l).T`` in ``W_l``'s place, the derivative of :func:`conv_inverse` (the
    gamma -> 0 recursion of GAIT-prop; BP's transpose when ``P_l`` is orthogonal)."""
    xp = namespace(delta)
    lay = net.layer(l)
    c = _solve(xp, patch_matrix(xp, net.weights[l - 1]), _rows(xp, delta).T, factors).T
    return col2im(xp, lay, c, delta.shape[0])


def reconstruction_gap(net, l: int, x, d):
    r"""How far C2's conv inverse is from a true inverse, on a *reachable* target (host float64 numbers).

    With ``t = f_l(conv(x + d) + b_l)`` the exact pre-image is ``x + d``. Returns a dict:
    ``c2``: ``||g^{-1}(t) - (x + d)|| / ||d||`` (C2's inverse with forward input ``x``);
    ``c2_predicted``: ``||(N - 1) d|| / ||d||`` (the module docstring's ``x + N d``, derived);
    ``average``: the same error of ``col2im(...) / N`` (the averaging left inverse; 0 up to rounding
    where ``N >= 1``); ``max_multiplicity``.
    """
    from ..backend import to_numpy
    import numpy as np

    xp = namespace(x)
    lay = net.layer(l)
    act = net.activation(l)
    t = act.f(net.pre_activation(l, x + d))
    mine = conv_inverse(net, l, t, x)
    N = multiplicity(xp, lay, x.dtype, device_of(x))
    a = act.inverse(t)
    c = xp.linalg.solve(patch_matrix(xp, net.weights[l - 1]), _rows(xp, lay.add_bias(xp, a, -net.biases[l - 1])).T).T
    avg = col2im(xp, lay, c, x.shape[0]) / xp.where(N > 0, N, xp.ones_like(N))
    target, dn, Nn = to_numpy(x + d), to_numpy(d), to_numpy(N)
    nd = float(np.linalg.norm(dn))
    covered = np.broadcast_to(Nn > 0, dn.shape)
    return {"c2": float(np.linalg.norm(to_numpy(mine) - target)) / nd,
            "c2_predicted": float(np.linalg.norm((Nn - 1) * dn)) / nd,
            "average": float(np.linalg.norm((to_numpy(avg) - target)[covered])) / nd,
            "max_multiplicity": float(Nn.max())}
