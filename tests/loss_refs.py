"""Independent float64 NumPy references for the multiclass losses, KL and entropy.

Nothing here calls xent.  The row normalizers come from conftest.py (which implements
the SPEC's non-finite rules on its own), and every loss is written from the SPEC's
formulas (PyTorch's, formula for formula):

* cross-entropy with class-index targets, label smoothing ``eps`` and weights ``w``::

      l_i = (1-eps)·w[t_i]·(-lp[i,t_i]) + (eps/C)·Σ_c w_c·(-lp[i,c])      (0 if ignored)
      "mean" = Σ l_i / Σ_{i not ignored} w[t_i]

* cross-entropy with probability targets::

      t' = (1-eps)·t + eps/C,   l_i = -Σ_c w_c·t'[i,c]·lp[i,c],   "mean" = Σ l_i / N

* z-loss (PaLM): ``z·lse_i²`` per non-ignored row; under "mean" divided by the number
  of non-ignored rows (not class-weighted);
* gradients are ∂loss/∂logits of the reduced loss ("none": of Σ l_i).

Terms ``0·log 0`` (a zero weight/target on a class of probability zero) are 0;
``0·NaN`` is NaN (NaN reaches everything computed from its row).
"""

import re

import numpy as np

from conftest import (
    as_f64,
    assert_close,
    bitwise_equal,
    ref_log_softmax,
    ref_logsumexp,
    ref_softmax,
)


def rows_2d(x, axis):
    """float64 (n, C) copy of ``x`` with the class axis last, and the moved shape."""
    a = np.moveaxis(as_f64(x), axis, -1)
    return a.reshape(-1, a.shape[-1]), a.shape


def _unrows(g2, moved_shape, axis):
    return np.moveaxis(g2.reshape(moved_shape), -1, axis)


def _reduce(per_row, reduction, denominator):
    with np.errstate(invalid="ignore", divide="ignore"):
        if reduction == "none":
            return per_row
        total = float(np.sum(per_row))
        if reduction == "sum":
            return total
        return total / denominator if denominator != 0 else np.nan


def _xlogy_terms(coef, lp):
    """coef·lp elementwise with 0·(-inf) = 0 (coef == 0 contributes nothing where
    lp is a number or infinite), but 0·NaN = NaN (a NaN row stays NaN, SPEC)."""
    with np.errstate(invalid="ignore"):
        return np.where((coef == 0) & ~np.isnan(lp), 0.0, coef * lp)


def ref_cross_entropy(
    x,
    target,
    axis=-1,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
):
    """(loss, grad) in float64; ``loss`` has the target's shape for "none"."""
    x = np.asarray(x)
    target = np.asarray(target)
    axis = axis % x.ndim
    xr, moved = rows_2d(x, axis)
    n, C = xr.shape
    w = np.ones(C) if weight is None else as_f64(weight)
    eps = float(label_smoothing)
    z = float(z_loss)
    lse = ref_logsumexp(xr)
    lp = ref_log_softmax(xr)
    p = ref_softmax(xr)
    probs = target.dtype.kind == "f"

    with np.errstate(invalid="ignore", over="ignore"):
        if probs:
            tr, _ = rows_2d(target, axis)
            keep = np.ones(n, bool)
            tp = (1.0 - eps) * tr + eps / C
            coef = w * tp  # (n, C)
            ce = -_xlogy_terms(coef, lp).sum(axis=1)
            g_ce = -coef + coef.sum(axis=1, keepdims=True) * p
            den_ce = float(n)
        else:
            tf = target.reshape(-1)
            keep = tf != ignore_index
            tc = np.where(keep, tf, 0).astype(np.int64)
            idx = np.arange(n)
            wt = np.where(keep, w[tc], 0.0)
            onehot = np.zeros((n, C))
            onehot[idx, tc] = 1.0
            ce = _xlogy_terms((1.0 - eps) * wt, -lp[idx, tc])
            g_ce = (1.0 - eps) * wt[:, None] * (p - onehot)
            if eps > 0:
                ce = ce + (eps / C) * (-_xlogy_terms(np.broadcast_to(w, (n, C)), lp).sum(axis=1))
                g_ce = g_ce + (eps / C) * (w.sum() * p - w)
            den_ce = float(wt[keep].sum())
        zl = z * lse**2 if z else np.zeros(n)
        g_z = 2.0 * z * lse[:, None] * p if z else np.zeros((n, C))
        den_z = float(keep.sum())

        ce = np.where(keep, ce, 0.0)
        zl = np.where(keep, zl, 0.0)
        g_ce = np.where(keep[:, None], g_ce, 0.0)
        g_z = np.where(keep[:, None], g_z, 0.0)

        if reduction == "none":
            loss = (ce + zl).reshape(moved[:-1])
            grad = g_ce + g_z
        elif reduction == "sum":
            loss = float(ce.sum() + zl.sum())
            grad = g_ce + g_z
        else:
            loss = _reduce(ce, "mean", den_ce)
            if z:
                loss = loss + _reduce(zl, "mean", den_z)
            grad = g_ce / den_ce if den_ce else np.where(keep[:, None], np.nan, 0.0)
            if z and den_z:
                grad = grad + g_z / den_z
    return loss, _unrows(grad, moved, axis)


def ref_nll_loss(log_probs, target, axis=-1, weight=None, ignore_index=-100, reduction="mean"):
    x = np.asarray(log_probs)
    target = np.asarray(target)
    axis = axis % x.ndim
    xr, moved = rows_2d(x, axis)
    n, C = xr.shape
    w = np.ones(C) if weight is None else as_f64(weight)
    tf = target.reshape(-1)
    keep = tf != ignore_index
    tc = np.where(keep, tf, 0).astype(np.int64)
    wt = np.where(keep, w[tc], 0.0)
    with np.errstate(invalid="ignore"):
        l = np.where(keep, -_xlogy_terms(wt, xr[np.arange(n), tc]), 0.0)
    if reduction == "none":
        return l.reshape(moved[:-1])
    return _reduce(l, reduction, float(wt[keep].sum()))


def ref_focal_loss(
    logits, target, axis=-1, gamma=2.0, alpha=None, ignore_index=-100, reduction="mean"
):
    x = np.asarray(logits)
    target = np.asarray(target)
    axis = axis % x.ndim
    xr, moved = rows_2d(x, axis)
    n, C = xr.shape
    if alpha is None:
        a = np.ones(C)
    else:
        a = np.broadcast_to(as_f64(alpha), (C,))
    tf = target.reshape(-1)
    keep = tf != ignore_index
    tc = np.where(keep, tf, 0).astype(np.int64)
    lp = ref_log_softmax(xr)[np.arange(n), tc]
    with np.errstate(invalid="ignore", over="ignore"):
        one_minus_p = -np.expm1(lp)
        mod = np.power(one_minus_p, gamma) if gamma != 0 else np.ones(n)
        l = np.where(keep, -a[tc] * mod * lp, 0.0)
    if reduction == "none":
        return l.reshape(moved[:-1])
    return _reduce(l, reduction, float(keep.sum()))


def ref_kl_divergence(p_logits, q_logits, axis=-1, temperature=1.0, reduction="mean"):
    """(loss, grad w.r.t. q_logits) of KL(softmax(p/T) ‖ softmax(q/T)) per row."""
    p = np.asarray(p_logits)
    q = np.asarray(q_logits)
    axis = axis % p.ndim
    T = float(temperature)
    pr, moved = rows_2d(p, axis)
    qr, _ = rows_2d(q, axis)
    n = pr.shape[0]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        P = ref_softmax(pr / T)
        lP = ref_log_softmax(pr / T)
        Q = ref_softmax(qr / T)
        lQ = ref_log_softmax(qr / T)
        kl = np.where(P == 0, 0.0, P * (lP - lQ)).sum(axis=1)
        g = (Q - P) / T
    if reduction == "none":
        return kl.reshape(moved[:-1]), _unrows(g, moved, axis)
    if reduction == "sum":
        return float(kl.sum()), _unrows(g, moved, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (float(kl.sum()) / n if n else np.nan), _unrows(g / n, moved, axis)


def ref_entropy(logits, axis=-1, base=None):
    x = np.asarray(logits)
    axis = axis % x.ndim
    xr, moved = rows_2d(x, axis)
    with np.errstate(invalid="ignore"):
        P = ref_softmax(xr)
        lP = ref_log_softmax(xr)
        h = -np.where(P == 0, 0.0, P * lP).sum(axis=1)
    if base is not None:
        h = h / np.log(float(base))
    return h.reshape(moved[:-1])


# ---------------------------------------------------------------------------
# tolerances and helpers
# ---------------------------------------------------------------------------

REDUCTIONS = ["none", "mean", "sum"]
SENTINEL = 1234.5  # what a grad_out holds before a call that must not write it


def loss_tol(comp_dtype, scale=1.0):
    """(rtol, atol) for a loss or gradient computed in ``comp_dtype`` vs float64."""
    comp_dtype = np.dtype(comp_dtype)
    scale = max(1.0, float(scale))
    if comp_dtype == np.float32:
        return 3e-5, 3e-6 * scale
    return 1e-11, 1e-12 * scale


def central_difference(f, x, h=1e-5):
    """Numerical gradient of the scalar function ``f`` at float64 ``x`` (central)."""
    x = np.array(x, dtype=np.float64)
    g = np.empty_like(x)
    flat = x.reshape(-1)
    gf = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = float(f(x))
        flat[i] = old - h
        fm = float(f(x))
        flat[i] = old
        gf[i] = (fp - fm) / (2 * h)
    return g


def with_layout(x, layout, readonly=False):
    """A copy of ``x`` with the requested memory layout (values unchanged).

    "C": C-contiguous; "F": Fortran order; "strided": every axis stepped by 2 and the
    first one reversed (negative stride), so neither C- nor F-contiguous (a 0-d
    array is just copied).
    """
    x = np.asarray(x)
    if layout == "C":
        y = np.array(x, order="C", copy=True)
    elif layout == "F":
        y = np.array(x, order="F", copy=True)
    elif layout == "strided" and x.ndim == 0:  # nothing to stride
        y = np.array(x, copy=True)
    elif layout == "strided":
        big = np.zeros(tuple(2 * s for s in x.shape), dtype=x.dtype)
        sl = (slice(None, None, -2),) + (slice(None, None, 2),) * (x.ndim - 1)
        y = big[sl]
        y[...] = x
    else:  # pragma: no cover
        raise ValueError(layout)
    if readonly:
        y.flags.writeable = False
    return y


def random_prob_targets(rng, shape, axis, zeros=True):
    """Random rows of a probability distribution along ``axis`` (some exact zeros)."""
    a = rng.random(shape) ** 2
    if zeros and a.size:
        a[rng.random(shape) < 0.15] = 0.0
    s = a.sum(axis=axis, keepdims=True)
    s[s == 0] = 1.0
    return a / s


def target_shape(shape, axis):
    axis = axis % len(shape)
    return tuple(s for i, s in enumerate(shape) if i != axis)


def ce_grad_scale(target, C, axis=-1, weight=None, ignore_index=-100, reduction="mean"):
    """An upper bound of the per-row coefficient K of the cross-entropy gradient.

    A gradient entry is K·(p_c - onehot_c) plus smoothing/z terms of the same size, so
    in float32 each entry carries an absolute rounding error of a few eps·K even where
    the exact value is (close to) 0; comparisons use max(max|grad|, K) as their scale.
    """
    target = np.asarray(target)
    wmax = 1.0 if weight is None else float(np.max(np.abs(as_f64(weight)))) if C else 1.0
    if reduction != "mean":
        return wmax
    if target.dtype.kind == "f":
        n = target.size // C if C else 0
        return wmax / n if n else wmax
    keep = target != ignore_index
    if not keep.any():
        return wmax
    w = np.ones(C) if weight is None else as_f64(weight)
    den = float(w[target[keep].astype(np.int64)].sum())
    return wmax / den if den else wmax


def make_case(rng, shape, axis, dtype, kind="index", ignore_frac=0.2, ignore_index=-100, scale=3.0):
    """Random logits of ``dtype`` and targets for them.

    kind "index": int64 class indices, about ``ignore_frac`` of them ``ignore_index``;
    kind "prob": rows of probabilities along ``axis`` (float32 for float16 logits).
    """
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    C = shape[axis]
    if kind == "index":
        t = rng.integers(0, C, size=target_shape(shape, axis)).astype(np.int64)
        if ignore_frac and t.size:
            t[rng.random(t.shape) < ignore_frac] = ignore_index
    else:
        t = random_prob_targets(rng, shape, axis).astype(dtype if dtype != np.float16 else np.float32)
    return x, t


def check_loss(res, expected, comp, scale, reduction, n_rows=1, err_msg=""):
    """Compare a loss: an array of ``comp`` for "none", else a ``comp`` scalar
    (whose absolute tolerance grows with the ``n_rows`` summed for "sum")."""
    comp = np.dtype(comp)
    rtol, atol = loss_tol(comp, scale)
    if reduction == "none":
        assert isinstance(res, np.ndarray), type(res)
        assert res.dtype == comp, (res.dtype, comp)
        assert_close(res, expected, rtol, atol, err_msg=err_msg)
    else:
        assert type(res) is comp.type, f"{type(res)} is not {comp.type} {err_msg}"
        if reduction == "sum":
            atol = atol * max(1, n_rows)
        assert_close(np.asarray(res), np.asarray(expected), rtol, atol, err_msg=err_msg)


def check_grad(g, expected, comp, scale, gscale=0.0, err_msg=""):
    """Compare a gradient; absolute errors scale with max(max|expected|, gscale)."""
    comp = np.dtype(comp)
    assert isinstance(g, np.ndarray)
    assert g.shape == expected.shape, (g.shape, expected.shape)
    e = np.asarray(expected)
    fin = np.isfinite(e)
    gmax = float(np.max(np.abs(e[fin]))) if fin.any() else 1.0
    gmax = max(gmax, gscale)
    rtol, atol = loss_tol(comp, scale)
    assert_close(g, expected, rtol, atol * max(gmax, 1e-300), err_msg=err_msg)


def sentinel(shape, dtype=np.float64):
    """A grad_out filled with SENTINEL."""
    return np.full(shape, SENTINEL, dtype=dtype)


def assert_untouched(g, *pairs):
    """After a call that raised: ``g`` (unless None) still all SENTINEL, and each
    ``(array, saved copy)`` pair bitwise unchanged."""
    if g is not None:
        assert bitwise_equal(g, np.full(g.shape, SENTINEL, dtype=g.dtype)), "grad_out was written"
    for a, saved in pairs:
        assert bitwise_equal(a, saved), "an input was modified by a call that raised"


def pos_pattern(index_tuple, flat):
    """Regex for a position in an error message: the index tuple as ``(i, j)`` or
    ``[i, j]``, or the flat index."""
    tup = ", ".join(str(i) for i in index_tuple)
    pats = [re.escape(f"({tup})"), re.escape(f"[{tup}]"), rf"\b{flat}\b"]
    if len(index_tuple) == 1:
        pats.append(re.escape(f"({index_tuple[0]},)"))
    return "|".join(pats)
