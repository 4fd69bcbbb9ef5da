"""Independent float64 NumPy references for the xent test suite: the row normalizers,
the multiclass losses, KL and entropy, and the cross-entropy from hidden states.  (Tolerances, layouts and the other checks are
in helpers.py; the fuzz test's references, which carry their own rounding-error
budgets, are in fuzz_refs.py and build on these.)

Nothing here imports xent.  The references are written with plain float64 NumPy and
implement the non-finite rules of SPEC.md ("Conventions shared by every function") on their own,
so that a test compares xent against something that is *not* xent:

* a ``-inf`` logit is a class of probability 0;
* a row with ``k`` ``+inf`` entries has softmax ``1/k`` on them and 0 elsewhere,
  log-softmax ``-log k`` on them and ``-inf`` elsewhere, and logsumexp ``+inf``;
* a NaN anywhere in a row makes everything computed from that row NaN;
* a row whose entries are all ``-inf`` has logsumexp ``-inf`` and NaN
  softmax/log-softmax;
* an empty class axis has logsumexp ``-inf`` (and empty softmax/log-softmax).

Finite rows use the max-shift with ``log1p`` of the sum of the non-maximal terms,
so that the reference stays accurate when ``logsumexp`` is close to the maximum.

Every loss is written from the SPEC's formulas (PyTorch's, formula for formula):

* cross-entropy with class-index targets, label smoothing ``eps`` and weights ``w``::

      l_i = (1-eps)·w[t_i]·(-lp[i,t_i]) + (eps/C)·Σ_c w_c·(-lp[i,c])      (0 if ignored)
      "mean" = Σ l_i / Σ_{i not ignored} w[t_i]

* cross-entropy with probability targets::

      t' = (1-eps)·t + eps/C,   l_i = -Σ_c w_c·t'[i,c]·lp[i,c],   "mean" = Σ l_i / N

* z-loss (PaLM): ``z·lse_i²`` per non-ignored row; under "mean" divided by the number
  of non-ignored rows (not class-weighted);
* gradients are ∂loss/∂logits of the reduced loss ("none": of Σ l_i).
* from hidden states (``linear_cross_entropy``): the cross-entropy of
  ``z = x @ W.T + b``, capped as ``s·tanh(z/s)`` with a softcap ``s``; the gradients of
  ``x``, ``W``, ``b`` are the chain rule through the cap and the product, and ignored
  rows take no part in them (whatever their hidden states hold).

Terms ``0·log 0`` (a zero weight/target on a class of probability zero) are 0;
``0·NaN`` is NaN (NaN reaches everything computed from its row).
"""

import numpy as np

try:  # optional dtype; tests that need it skip when it is missing
    import ml_dtypes  # noqa: F401

    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    BFLOAT16 = None


# ---------------------------------------------------------------------------
# row normalizers
# ---------------------------------------------------------------------------


def as_f64(x):
    """float64 copy of ``x`` (bfloat16 through float32, which NumPy can convert)."""
    x = np.asarray(x)
    if BFLOAT16 is not None and x.dtype == BFLOAT16:
        return x.astype(np.float32).astype(np.float64)
    return x.astype(np.float64)


def _rows_last(x, axis):
    """float64 copy of ``x`` with the class axis moved last (axis=None: flattened)."""
    a = as_f64(x)
    if axis is None:
        return a.reshape(1, -1)
    return np.moveaxis(a, axis, -1)


def _core_lastaxis(a):
    """Return (lse, log_softmax, softmax) over the last axis of float64 ``a``."""
    shape = a.shape
    C = shape[-1]
    n = int(np.prod(shape[:-1], dtype=np.int64))
    rows = a.reshape(n, C)
    lse = np.empty(n)
    lsm = np.empty((n, C))
    sm = np.empty((n, C))
    if C == 0:
        lse[:] = -np.inf
        return lse.reshape(shape[:-1]), lsm.reshape(shape), sm.reshape(shape)
    with np.errstate(all="ignore"):
        nan_row = np.isnan(rows).any(axis=1)
        pos = rows == np.inf
        k = pos.sum(axis=1)
        all_neg = (rows == -np.inf).all(axis=1)
        inf_row = ~nan_row & (k > 0)
        dead_row = ~nan_row & ~inf_row & all_neg
        reg = ~nan_row & ~inf_row & ~dead_row

        # NaN anywhere in the row: everything NaN
        lse[nan_row] = np.nan
        lsm[nan_row] = np.nan
        sm[nan_row] = np.nan

        # k entries of +inf: the limit of k equal, arbitrarily large logits
        kk = k[inf_row][:, None].astype(np.float64)
        p = pos[inf_row]
        lse[inf_row] = np.inf
        lsm[inf_row] = np.where(p, -np.log(kk), -np.inf)
        sm[inf_row] = np.where(p, 1.0 / kk, 0.0)

        # every class has probability zero
        lse[dead_row] = -np.inf
        lsm[dead_row] = np.nan
        sm[dead_row] = np.nan

        # finite maximum: shift by it, log1p of the non-maximal terms
        r = rows[reg]
        idx = np.arange(r.shape[0])
        j = np.argmax(r, axis=1)
        m = r[idx, j]
        z = np.exp(r - m[:, None])  # exp(-inf) == 0 for the -inf classes
        z[idx, j] = 0.0
        rest = z.sum(axis=1)  # pairwise summation
        log_s = np.log1p(rest)
        lse[reg] = m + log_s
        lsm[reg] = (r - m[:, None]) - log_s[:, None]
        z[idx, j] = 1.0
        sm[reg] = z / (1.0 + rest)[:, None]
    return lse.reshape(shape[:-1]), lsm.reshape(shape), sm.reshape(shape)


def ref_logsumexp(x, axis=-1, keepdims=False):
    """float64 reference for ``xent.logsumexp`` (independent of xent)."""
    xa = np.asarray(x)
    a = _rows_last(xa, axis)
    lse, _, _ = _core_lastaxis(a)
    if axis is None:
        if keepdims:
            return lse.reshape((1,) * xa.ndim)
        return np.float64(lse.reshape(()))
    if keepdims:
        return np.expand_dims(lse, axis)
    return lse


def _ref_normalized(x, axis, part):
    """Part 1 (log-softmax) or 2 (softmax) of :func:`_core_lastaxis` in ``x``'s shape."""
    xa = np.asarray(x)
    result = _core_lastaxis(_rows_last(xa, axis))[part]
    if axis is None:
        return result.reshape(xa.shape)
    return np.moveaxis(result, -1, axis)


def ref_log_softmax(x, axis=-1):
    """float64 reference for ``xent.log_softmax`` (independent of xent)."""
    return _ref_normalized(x, axis, 1)


def ref_softmax(x, axis=-1):
    """float64 reference for ``xent.softmax`` (independent of xent)."""
    return _ref_normalized(x, axis, 2)


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------


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


def _class_rows(x, target, axis):
    """A multiclass loss's inputs: float64 rows (n, C), their shape before the
    reshape, the class axis in [0, ndim) and the targets as an array."""
    x = np.asarray(x)
    axis = axis % x.ndim
    xr, moved = rows_2d(x, axis)
    return xr, moved, axis, np.asarray(target)


def _kept_classes(target, ignore_index):
    """Which rows' class indices are not ``ignore_index``, and each row's class (0
    for the ignored rows, so that it can index)."""
    tf = target.reshape(-1)
    keep = tf != ignore_index
    return keep, np.where(keep, tf, 0).astype(np.int64)


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
    xr, moved, axis, target = _class_rows(x, target, axis)
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
            keep, tc = _kept_classes(target, ignore_index)
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
    xr, moved, axis, target = _class_rows(log_probs, target, axis)
    n, C = xr.shape
    w = np.ones(C) if weight is None else as_f64(weight)
    keep, tc = _kept_classes(target, ignore_index)
    wt = np.where(keep, w[tc], 0.0)
    with np.errstate(invalid="ignore"):
        l = np.where(keep, -_xlogy_terms(wt, xr[np.arange(n), tc]), 0.0)
    if reduction == "none":
        return l.reshape(moved[:-1])
    return _reduce(l, reduction, float(wt[keep].sum()))


def ref_focal_loss(
    logits, target, axis=-1, gamma=2.0, alpha=None, ignore_index=-100, reduction="mean"
):
    xr, moved, axis, target = _class_rows(logits, target, axis)
    n, C = xr.shape
    if alpha is None:
        a = np.ones(C)
    else:
        a = np.broadcast_to(as_f64(alpha), (C,))
    keep, tc = _kept_classes(target, ignore_index)
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
# the cross-entropy from hidden states
# ---------------------------------------------------------------------------


def ref_linear_logits(x, linear_weight, linear_bias=None, softcap=None):
    """float64 ``(n, C)`` logits of the rows of ``x`` (its leading axes flattened)
    before and after the cap: ``(u, z)`` with ``u = x @ W.T + b``, ``z = s·tanh(u/s)``
    (``z is u`` without a softcap).  The products are elementwise IEEE products summed
    by einsum (no BLAS), so ``±inf``/NaN in ``x`` or ``W`` reach exactly the logits
    they multiply into."""
    xa = as_f64(x)
    xr = xa.reshape(int(np.prod(xa.shape[:-1])), xa.shape[-1])  # (-1, D) fails for D = 0
    W = as_f64(linear_weight)
    with np.errstate(all="ignore"):
        u = np.einsum("nd,cd->nc", xr, W, optimize=False)
        if linear_bias is not None:
            u = u + as_f64(linear_bias)
        if softcap is None:
            return u, u
        return u, float(softcap) * np.tanh(u / float(softcap))


def ref_linear_cross_entropy(x, linear_weight, target, linear_bias=None, softcap=None,
                             **ce_options):
    """float64 ``(loss, grad_input, grad_weight, grad_bias)`` of
    ``cross_entropy(s·tanh((x @ W.T + b)/s), target, ...)`` (no cap without
    ``softcap``); ``ce_options`` are :func:`ref_cross_entropy`'s (``weight``,
    ``ignore_index``, ``reduction``, ``label_smoothing``, ``z_loss``).  ``loss`` has
    ``x.shape[:-1]`` for "none".  ``grad_bias`` is the gradient at the given bias (at
    a zero bias when there is none)."""
    xa = as_f64(x)
    lead, D = xa.shape[:-1], xa.shape[-1]
    xr = xa.reshape(int(np.prod(lead)), D)
    W = as_f64(linear_weight)
    C = W.shape[0]
    u, z = ref_linear_logits(xr, W, linear_bias, softcap)
    t = np.asarray(target)
    prob = t.dtype.kind == "f"
    t = t.reshape(-1, C) if prob else t.reshape(-1)
    loss, g = ref_cross_entropy(z, t, **ce_options)
    if ce_options.get("reduction", "mean") == "none":
        loss = np.asarray(loss).reshape(lead)
    with np.errstate(all="ignore"):
        if softcap is not None:
            # d s·tanh(u/s)/du = 1 - tanh(u/s)²: 0 at u = ±inf (the cap's flat ends)
            g = g * (1.0 - np.tanh(u / float(softcap)) ** 2)
        keep = np.ones(len(t), bool) if prob else t != ce_options.get("ignore_index", -100)
        gk, xk = g[keep], xr[keep]
        g_input = np.zeros_like(xr)
        g_input[keep] = np.einsum("nc,cd->nd", gk, W, optimize=False)
        g_weight = np.einsum("nc,nd->cd", gk, xk, optimize=False)
        g_bias = gk.sum(axis=0)
    return loss, g_input.reshape(xa.shape), g_weight, g_bias
