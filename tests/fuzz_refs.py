"""float64 references for the fuzz test (tests/test_fuzz.py), from SPEC.md's formulas.

Nothing here imports xent.  The row normalizers come from references.py, which implements
the SPEC's non-finite rules on its own (``-inf`` is a class of probability 0, k ``+inf``
entries share the probability, NaN poisons its row, an all ``-inf`` row has ``lse = -inf``
and NaN softmax).  Every loss is the SPEC's formula (PyTorch's, formula for formula) on
float64 copies of the inputs, with the SPEC's two conventions made explicit:

* ``0·log 0 = 0``: a term whose coefficient is exactly 0 contributes 0 even where its
  log-probability (or softplus) is infinite -- but NaN still propagates (:func:`zmul`);
* NaN propagates to everything computed from its row: a row holding NaN has NaN
  log-probabilities everywhere, so its loss and gradient are NaN whatever the weights.

Each reference returns a :class:`Ref`: the expected value, an absolute tolerance of the
same shape (the size of the rounding errors a computation in ``comp`` dtype makes,
from the magnitudes of the terms), and a ``free`` mask of entries the SPEC leaves
undefined (compared as "anything").  Scalars are 0-d.
"""

import math

import numpy as np

from references import as_f64, ref_log_softmax, ref_logsumexp, ref_softmax

# Rounding-error budget: errors are allowed up to TOL_K ulps of the computation
# dtype times the size of the terms that made the value.
TOL_K = 32.0


class Ref:
    """Expected value (float64 array, 0-d for scalars), tolerance and "free" mask."""

    __slots__ = ("value", "tol", "free")

    def __init__(self, value, tol, free=None):
        self.value = np.asarray(value, dtype=np.float64)
        self.tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), self.value.shape)
        self.free = None if free is None else np.broadcast_to(free, self.value.shape)


def eps_of(comp):
    return float(np.finfo(np.dtype(comp)).eps)


def rows(x, axis):
    """float64 (n, C) copy with the class axis last, and the moved shape."""
    a = np.moveaxis(as_f64(x), axis, -1)
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1]), a.shape


def unrows(r, moved, axis):
    return np.moveaxis(np.asarray(r).reshape(moved), -1, axis)


def fin(a):
    """|a| with non-finite entries as 0 (for tolerance magnitudes)."""
    a = np.abs(np.asarray(a, dtype=np.float64))
    return np.where(np.isfinite(a), a, 0.0)


def zmul(coef, v):
    """coef·v where an exact-zero coefficient gives 0 unless v is NaN."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where((coef == 0) & ~np.isnan(v), 0.0, coef * v)


def _scale_rows(X):
    """Per row: max(1, max |finite x|), the size of a row's absolute rounding errors."""
    f = fin(X)
    return np.maximum(1.0, f.max(axis=1) if f.shape[1] else np.zeros(f.shape[0]))


def _reduce(per_row, tol_rows, reduction, denominator=None):
    """(value, tol) of "none" (unchanged), "sum" or "mean" (divided by denominator)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if reduction == "none":
            return per_row, tol_rows
        total = math.fsum(per_row) if np.isfinite(per_row).all() else float(np.sum(per_row))
        tol = float(np.sum(tol_rows))
        if reduction == "sum":
            return np.float64(total), tol
        den = float(denominator)
        if den == 0 or math.isnan(den):
            return np.float64(np.nan), 0.0
        return np.float64(total / den), tol / abs(den)


# ---------------------------------------------------------------------------
# normalizers
# ---------------------------------------------------------------------------


def normalizer(op, x, axis, keepdims, comp):
    """Ref of logsumexp / log_softmax / softmax of ``x`` over ``axis`` (int or None)."""
    e = eps_of(comp)
    a = as_f64(x)
    S = max(1.0, float(fin(a).max())) if a.size else 1.0
    C = a.size if axis is None else (a.shape[axis] if a.ndim else 1)
    lc = math.log(C + 1.0) + 1.0
    if op == "logsumexp":
        v = ref_logsumexp(a, axis=axis, keepdims=keepdims)
        return Ref(v, TOL_K * e * (S + lc))
    if op == "log_softmax":
        v = ref_log_softmax(a, axis=axis)
        return Ref(v, TOL_K * e * (S + lc))
    v = ref_softmax(a, axis=axis)
    # p = exp(lp): an absolute error d in lp is a relative error d in p
    with np.errstate(invalid="ignore"):
        return Ref(v, TOL_K * e * (S + lc) * fin(v) + 4 * float(np.finfo(comp).smallest_normal))


# ---------------------------------------------------------------------------
# multiclass losses
# ---------------------------------------------------------------------------


def cross_entropy(x, axis, target, keep, weight, eps_ls, z, reduction, comp, prob,
                  logit_err=None):
    """(loss Ref, grad Ref) of cross_entropy.

    ``target``: int64 class indices with ``keep`` the non-ignored mask (index targets,
    target's shape), or probabilities (logits' shape).  ``weight``: float64 (C,) or None.
    ``logit_err``: None, or per row (rows in order) a bound on the absolute error of
    the logits themselves (logits that the call computes, as linear_cross_entropy does).
    """
    e = eps_of(comp)
    X, moved = rows(x, axis)
    n, C = X.shape
    S = _scale_rows(X)
    lc = math.log(C + 1.0) + 1.0
    w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
    aw = fin(w)
    lse = ref_logsumexp(X)
    lp = ref_log_softmax(X)
    p = ref_softmax(X)
    row_err = S + lc  # absolute error of one log-probability, in ulps
    if logit_err is not None:  # an error d in every logit moves a log-probability by 2d
        row_err = row_err + 2.0 * np.asarray(logit_err, np.float64).reshape(n) / e
    free_g = np.zeros((n, C), bool)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if prob:
            T, _ = rows(target, axis)
            keep_r = np.ones(n, bool)
            # exact zeros (a zero weight, or 1 - eps = 0) keep an infinite
            # probability out: the limit of 0·y as y grows is 0
            tp = zmul(1.0 - eps_ls, T) + eps_ls / C if C else T
            coef = zmul(w, tp)
            terms = -zmul(coef, lp)
            # an infinite coefficient: the term is its infinity where -lp > 0,
            # and 0 where p = 1 exactly (the row's only class of any probability,
            # decided on the logits, not on a rounded lp)
            live = np.where(np.isposinf(X).any(axis=1, keepdims=True), np.isposinf(X), X > -np.inf)
            only = live & (live.sum(axis=1, keepdims=True) == 1)
            inf_terms = np.where(np.isnan(lp), np.nan, np.where(only, 0.0, coef))
            terms = np.where(np.isinf(coef), inf_terms, terms)
            ce = terms.sum(axis=1)
            ce_mag = (fin(coef) * (fin(lp) + row_err[:, None])).sum(axis=1)
            csum = coef.sum(axis=1, keepdims=True)
            g_ce = zmul(csum, p) - coef
            g_mag = np.broadcast_to((fin(coef).sum(axis=1) * 2)[:, None], (n, C))
            # infinite target mass: the gradient is inf - inf (undefined)
            free_g |= ~np.isfinite(T).all(axis=1)[:, None] & ~np.isnan(T).any(axis=1)[:, None]
            den_ce = float(n)
        else:
            keep_r = keep.reshape(-1)
            tc = np.where(keep_r, target.reshape(-1), 0).astype(np.int64)
            idx = np.arange(n)
            wt = np.where(keep_r, w[tc], 0.0) if C else np.zeros(n)
            lpt = lp[idx, tc] if C else np.zeros(n)
            onehot = np.zeros((n, C))
            if C:
                onehot[idx, tc] = 1.0
            ce = zmul((1.0 - eps_ls) * wt, -lpt)
            ce_mag = (1.0 - eps_ls) * fin(wt) * (fin(lpt) + row_err)
            g_ce = zmul(((1.0 - eps_ls) * wt)[:, None], p - onehot)
            g_mag = np.broadcast_to(((1.0 - eps_ls) * fin(wt) * 2)[:, None], (n, C))
            if eps_ls > 0 and C:
                ce = ce + (eps_ls / C) * (-zmul(np.broadcast_to(w, (n, C)), lp)).sum(axis=1)
                ce_mag = ce_mag + (eps_ls / C) * (aw * (fin(lp) + row_err[:, None])).sum(axis=1)
                g_ce = g_ce + (eps_ls / C) * (zmul(w.sum(), p) - w)
                g_mag = g_mag + (eps_ls / C) * 2 * aw.sum()
            den_ce = float(wt[keep_r].sum())
        if z:
            zl = z * lse**2
            zl_mag = z * fin(lse) * 2 * (fin(lse) + row_err)
            g_z = 2.0 * z * lse[:, None] * p
            gz_mag = (2.0 * z * (fin(lse) + row_err))[:, None] * np.ones((1, C))
            # an infinite lse times a zero probability: no limit the SPEC names
            free_g |= (~np.isfinite(lse) & ~np.isnan(lse))[:, None]
        else:
            zl = zl_mag = np.zeros(n)
            g_z = gz_mag = np.zeros((n, C))
        den_z = float(keep_r.sum())

        ce = np.where(keep_r, ce, 0.0)
        zl = np.where(keep_r, zl, 0.0)
        g_ce = np.where(keep_r[:, None], g_ce, 0.0)
        g_z = np.where(keep_r[:, None], g_z, 0.0)
        ce_tol = TOL_K * e * np.where(keep_r, ce_mag, 0.0)
        z_tol = TOL_K * e * np.where(keep_r, zl_mag, 0.0)
        gce_tol = TOL_K * e * np.where(keep_r[:, None], g_mag * row_err[:, None], 0.0)
        gz_tol = TOL_K * e * np.where(keep_r[:, None], gz_mag * row_err[:, None], 0.0)
        free_g &= keep_r[:, None]

        if reduction == "none":
            loss = Ref((ce + zl).reshape(moved[:-1]), (ce_tol + z_tol).reshape(moved[:-1]))
            g, gt = g_ce + g_z, gce_tol + gz_tol
        elif reduction == "sum":
            v, t = _reduce(ce + zl, ce_tol + z_tol, "sum")
            loss = Ref(v, t)
            g, gt = g_ce + g_z, gce_tol + gz_tol
        else:
            v, t = _reduce(ce, ce_tol, "mean", den_ce)
            if z:
                v2, t2 = _reduce(zl, z_tol, "mean", den_z)
                v, t = v + v2, t + t2
            loss = Ref(v, t)
            s_ce = 1.0 / den_ce if den_ce != 0 else np.nan
            s_z = 1.0 / den_z if den_z != 0 else np.nan
            g = g_ce * s_ce + (g_z * s_z if z else 0.0)
            g = np.where(keep_r[:, None], g, 0.0)
            gt = gce_tol * fin(s_ce) + (gz_tol * fin(s_z) if z else 0.0)
    grad = Ref(unrows(g, moved, axis), unrows(gt, moved, axis), unrows(free_g, moved, axis))
    return loss, grad


def nll_loss(x, axis, target, keep, weight, reduction, comp):
    e = eps_of(comp)
    X, _ = rows(x, axis)
    n, C = X.shape
    w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
    keep_r = keep.reshape(-1)
    tc = np.where(keep_r, target.reshape(-1), 0).astype(np.int64)
    wt = np.where(keep_r, w[tc], 0.0) if C else np.zeros(n)
    xt = X[np.arange(n), tc] if C else np.zeros(n)
    with np.errstate(invalid="ignore", over="ignore"):
        rows_l = np.where(keep_r, -zmul(wt, xt), 0.0)
        # 0 · (+inf) is no log-probability's term: left free
        free = keep_r & (wt == 0) & (xt == np.inf)
        tol = TOL_K * e * fin(wt) * fin(xt)
    if reduction == "none":
        return Ref(rows_l.reshape(target.shape), tol.reshape(target.shape),
                   free.reshape(target.shape))
    if free.any():
        return Ref(np.nan, 0.0, np.ones((), bool))
    v, t = _reduce(rows_l, tol, reduction, float(wt[keep_r].sum()))
    return Ref(v, t)


def focal_loss(x, axis, target, keep, gamma, alpha, reduction, comp):
    """``alpha``: None, a float, or a float64 (C,) array."""
    e = eps_of(comp)
    X, _ = rows(x, axis)
    n, C = X.shape
    S = _scale_rows(X)
    lc = math.log(C + 1.0) + 1.0
    keep_r = keep.reshape(-1)
    tc = np.where(keep_r, target.reshape(-1), 0).astype(np.int64)
    if alpha is None:
        at = np.ones(n)
    elif np.ndim(alpha) == 0:
        at = np.full(n, float(alpha))
    else:
        at = np.asarray(alpha, np.float64)[tc] if C else np.ones(n)
    lp = ref_log_softmax(X)
    lpt = lp[np.arange(n), tc] if C else np.full(n, np.nan)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        one_minus_p = -np.expm1(lpt)
        mod = np.power(one_minus_p, gamma) if gamma != 0 else np.ones(n)
        mod = np.where(np.isnan(lpt), np.nan, mod)
        l = np.where(keep_r, -zmul(at * mod, lpt), 0.0)
        # d/d lp of (1-p)^g·lp is bounded by 1 + g: errors of lp of S + log C ulps
        tol = TOL_K * e * fin(at) * (1.0 + gamma) * (fin(lpt) + S + lc)
        tol = np.where(keep_r, tol, 0.0)
    if reduction == "none":
        return Ref(l.reshape(target.shape), tol.reshape(target.shape))
    v, t = _reduce(l, tol, reduction, float(keep_r.sum()))
    return Ref(v, t)


# ---------------------------------------------------------------------------
# binary losses (pointwise)
# ---------------------------------------------------------------------------


def _softplus(v):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.maximum(v, 0.0) + np.log1p(np.exp(-np.abs(v)))


def bce_with_logits(x, y, w, pw, reduction, comp):
    """(loss Ref, grad Ref); ``w``/``pw`` already broadcast float64 arrays (or 1.0)."""
    e = eps_of(comp)
    x = as_f64(x)
    y = as_f64(y)
    with np.errstate(invalid="ignore", over="ignore"):
        cpos = w * pw * y
        cneg = w * (1.0 - y)
        sp_neg = _softplus(-x)
        sp_pos = _softplus(x)
        l = zmul(cpos, sp_neg) + zmul(cneg, sp_pos)
        l = np.where(np.isnan(x), np.nan, l)
        # magnitudes without cancellation: 1 - y has the rounding error of y
        ay, apw, aw = fin(y), fin(pw), fin(w)
        mag = aw * (apw * ay * (fin(sp_neg) + 1) + (1 + ay) * (fin(sp_pos) + 1) + apw * ay * fin(x))
        tol = TOL_K * e * mag
        # sigmoid without cancellation: exp(-softplus(-x)) (0 at -inf, 1 at +inf, NaN at NaN)
        sig = np.exp(-sp_neg)
        g = w * (sig * (1.0 - y + pw * y) - pw * y)
        # (exp(-softplus(-x)) has a relative error of |x| ulps of float64)
        gtol = TOL_K * e * aw * (fin(sig) * (1 + ay + apw * ay) * (1 + fin(x) * 2.3e-16 / e)
                                 + apw * ay)
    numel = x.size
    if reduction == "none":
        return Ref(l, tol), Ref(g, gtol)
    v, t = _reduce(l.reshape(-1), tol.reshape(-1), reduction, numel)
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            g = g / numel if numel else g
            gtol = gtol / numel if numel else gtol
    return Ref(v, t), Ref(g, gtol)


def bce(p, y, w, reduction, comp):
    e = eps_of(comp)
    p = as_f64(p)
    y = as_f64(y)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lp = np.maximum(np.log(p), -100.0)
        l1p = np.maximum(np.log1p(-p), -100.0)
        l = -w * (zmul(y, lp) + zmul(1.0 - y, l1p))
        tol = TOL_K * e * fin(w) * (fin(lp) + fin(l1p) + 1.0)
        # near p = 1 (or 0) a float32 ulp of p is a large change of log(1 - p)
        near = np.minimum(fin(p), fin(1.0 - p))
        tol = tol + TOL_K * fin(w) * np.where(near > 0, np.finfo(comp).eps / np.maximum(near, 1e-300), 0.0)
    if reduction == "none":
        return Ref(l, tol)
    v, t = _reduce(l.reshape(-1), tol.reshape(-1), reduction, p.size)
    return Ref(v, t)


def kl_div(inp, target, reduction, log_target, comp):
    e = eps_of(comp)
    q = as_f64(inp)
    t = as_f64(target)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if log_target:
            # t = -inf is a target probability of exactly 0: the term is 0 whatever
            # the input (0·log 0 = 0, and the limit of p·input), unless it is NaN
            pt = np.exp(t)
            l = np.where((pt == 0) & ~np.isnan(q), 0.0, pt * (t - q))
            mag = fin(pt) * (fin(t) + fin(q) + 1)
        else:
            xlogy = np.where(t == 0, 0.0, t * np.log(t))
            l = xlogy - zmul(t, q)
            mag = fin(t) * (fin(np.log(np.abs(t) + 1e-300)) + fin(q) + 1)
        l = np.where(np.isnan(q) | np.isnan(t), np.nan, l)
    tol = TOL_K * e * mag
    if reduction == "none":
        return Ref(l, tol)
    if reduction == "batchmean":
        if q.ndim == 0:
            v, tt = _reduce(l.reshape(-1), tol.reshape(-1), "sum")
        else:
            v, tt = _reduce(l.reshape(-1), tol.reshape(-1), "mean", q.shape[0])
        return Ref(v, tt)
    v, tt = _reduce(l.reshape(-1), tol.reshape(-1), reduction, q.size)
    return Ref(v, tt)


# ---------------------------------------------------------------------------
# divergences between logit rows
# ---------------------------------------------------------------------------


def kl_divergence(p_logits, q_logits, axis, T, reduction, comp):
    e = eps_of(comp)
    Pr, moved = rows(p_logits, axis)
    Qr, _ = rows(q_logits, axis)
    n, C = Pr.shape
    lc = math.log(C + 1.0) + 1.0
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        a, b = Pr / T, Qr / T
        S = np.maximum(_scale_rows(a), _scale_rows(b))
        P, lP = ref_softmax(a), ref_log_softmax(a)
        Q, lQ = ref_softmax(b), ref_log_softmax(b)
        # a teacher probability is what softmax gives in the computation dtype:
        # one that rounds to 0 there costs 0 (subnormals count)
        kl = np.where(P.astype(comp) == 0, 0.0, P * (lP - lQ)).sum(axis=1)
        kl_tol = TOL_K * e * (S + lc) * (1 + fin(kl))
        g = (Q - P) / T
        g_tol = np.broadcast_to((TOL_K * e * (S + lc) / T)[:, None], (n, C))
    if reduction == "none":
        return (Ref(kl.reshape(moved[:-1]), kl_tol.reshape(moved[:-1])),
                Ref(unrows(g, moved, axis), unrows(g_tol, moved, axis)))
    v, t = _reduce(kl, kl_tol, reduction, n)
    if reduction == "mean" and n:
        g, g_tol = g / n, g_tol / n
    return Ref(v, t), Ref(unrows(g, moved, axis), unrows(g_tol, moved, axis))


def entropy(x, axis, base, comp):
    e = eps_of(comp)
    X, moved = rows(x, axis)
    C = X.shape[1]
    S = _scale_rows(X)
    lc = math.log(C + 1.0) + 1.0
    with np.errstate(invalid="ignore"):
        P = ref_softmax(X)
        lP = ref_log_softmax(X)
        h = -np.where(P == 0, 0.0, P * lP).sum(axis=1)
    tol = TOL_K * e * (S + lc)
    if base is not None:
        lb = abs(math.log(float(base)))
        h = h / math.log(float(base))
        tol = tol / lb
    return Ref(h.reshape(moved[:-1]), tol.reshape(moved[:-1]))


# ---------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------


def evaluate(x, axis, target, keep, ks, comp, logit_err=None):
    """dict(loss, perplexity, accuracy {k: value}, count, loss_tol).

    ``logit_err``: None, or per row a bound on the absolute error of logits the call
    computes itself (from hidden states): the loss's tolerance grows by it, and a
    class whose finite logit is within twice of the target's may rank either way,
    so the result also holds ``accuracy_range`` ``{k: (lowest, highest)}``.
    """
    e = eps_of(comp)
    X, _ = rows(x, axis)
    n, C = X.shape
    keep_r = keep.reshape(-1)
    err = None if logit_err is None else np.asarray(logit_err, np.float64).reshape(n)[keep_r]
    tc = np.where(keep_r, target.reshape(-1), 0).astype(np.int64)
    count = int(keep_r.sum())
    if count == 0:
        return {"loss": math.nan, "perplexity": math.nan,
                "accuracy": {k: math.nan for k in ks}, "count": 0, "loss_tol": 0.0}
    Xk, tk = X[keep_r], tc[keep_r]
    idx = np.arange(count)
    lp = ref_log_softmax(Xk)
    nll = -lp[idx, tk]
    S = _scale_rows(Xk)
    xt = Xk[idx, tk]
    cls = np.arange(C)[None, :]
    with np.errstate(invalid="ignore"):
        above = (Xk > xt[:, None]) | ((Xk == xt[:, None]) & (cls < tk[:, None]))
    rank = above.sum(axis=1)
    rank = np.where(np.isnan(xt), C + 10**9, rank)  # never correct
    with np.errstate(invalid="ignore", over="ignore"):
        total = float(np.sum(nll))
        loss = total / count
    tol = TOL_K * e * float(np.sum(fin(nll) + S + math.log(C + 1.0) + 1.0)) / count
    if err is not None:
        tol += TOL_K * float(np.sum(2.0 * err)) / count
    try:
        ppl = math.exp(loss)
    except OverflowError:
        ppl = math.inf
    acc = {k: int(np.count_nonzero(rank < k)) / count for k in ks}
    out = {"loss": loss, "perplexity": ppl, "accuracy": acc, "count": count, "loss_tol": tol}
    if err is not None:
        with np.errstate(invalid="ignore"):
            near = (np.isfinite(Xk) & np.isfinite(xt)[:, None]
                    & (np.abs(Xk - xt[:, None]) <= 4.0 * err[:, None]))
        near[idx, tk] = False
        sure = (above & ~near).sum(axis=1)
        maybe = (above | near).sum(axis=1)
        never = np.isnan(xt)
        out["accuracy_range"] = {
            k: (int(np.count_nonzero((maybe < k) & ~never)) / count,
                int(np.count_nonzero((sure < k) & ~never)) / count) for k in ks}
    return out


# ---------------------------------------------------------------------------
# from hidden states: the classifier layer z = x @ W.T + b
# ---------------------------------------------------------------------------


def linear_logits(x, W, b, softcap, comp):
    """(z, err): the float64 logits ``softcap·tanh((x @ W.T + b)/softcap)`` of the
    (n, D) hidden states ``x``, and per row a bound on the absolute error of the same
    logits computed in ``comp`` (a product over D terms, the bias, the cap).

    Each logit is the float64 sum of its D products, so ±inf and NaN follow IEEE
    arithmetic term by term (``inf·0`` and ``inf - inf`` are NaN), as any BLAS gives
    them: that is the rule for logits computed from non-finite hidden states or
    weights.  Inputs are small (n·C·D up to ~1e6).
    """
    e = eps_of(comp)
    n, D = x.shape
    C = W.shape[0]
    with np.errstate(invalid="ignore", over="ignore"):
        terms = x[:, None, :] * W[None, :, :]
        z = terms.sum(axis=2)
        mag = fin(terms).sum(axis=2)
        if b is not None:
            z = z + b[None, :]
            mag = mag + fin(b)[None, :]
        # gamma_D bound of a dot product in comp, plus the bias's addition
        err_zc = (D + 2) * e * mag
        if softcap is not None:
            s = float(softcap)
            z = s * np.tanh(z / s)
            err_zc = err_zc + 4 * e * s  # tanh's own rounding (1-Lipschitz)
    err = err_zc.max(axis=1) if C else np.zeros(n)
    return z, err


def linear_grads(g, x, W, z, softcap, err, comp, ignored=None):
    """Refs of the gradients ``(input, linear_weight, linear_bias)`` from ``g``, the
    gradient Ref of the loss with respect to the capped logits ``z`` ((n, C) rows),
    through the cap's chain rule and the three products ``G @ W``, ``G.T @ x``,
    ``G.sum(0)``.

    Non-finite rule: a NaN in G (a NaN loss row that is not ignored) makes every
    value it enters NaN, whatever it is multiplied by.  A value one of whose products
    has a non-finite factor from the matrices (an inf or NaN weight for the input's
    gradient, an inf or NaN hidden state for the weight's), or an entry of G the
    cross-entropy leaves free or infinite, is left free: ``0·inf`` there is NaN for
    IEEE (and BLAS, and PyTorch), 0 for the limit, and a float32 probability that
    rounds to 0 turns an inf into a NaN, so float64 cannot decide it.  Except for the
    rows in ``ignored`` (bool, (n,)): they contribute exactly 0 to the weight's
    gradient whatever their hidden states hold (SPEC: ignored rows, 0 to the gradient).
    """
    e = eps_of(comp)
    n, C = g.value.shape
    D = x.shape[1]
    G, Gt = g.value, g.tol
    free = g.free if g.free is not None else np.zeros((n, C), bool)
    with np.errstate(invalid="ignore", over="ignore"):
        if softcap is not None:
            s = float(softcap)
            q = z / s
            dcap = 1.0 - q * q
            # error of 1 - q²: 2|q| times q's (err / s), plus rounding
            dcap_err = 2.0 * fin(q) * (err[:, None] / s) + 8 * e
            Gt = Gt * fin(dcap) + fin(G) * dcap_err
            # a zero gradient stays 0 through the cap: an ignored row's gradient
            # is 0 whatever its logits hold, NaN included (SPEC)
            G = np.where(G == 0, 0.0, G * dcap)
    gnan = np.isnan(G) & ~free
    gbad = (~np.isfinite(G) | free) & ~gnan
    Gv = np.where(np.isfinite(G) & ~free, G, 0.0)
    Gtv = np.where(np.isfinite(Gt), Gt, 0.0)
    Wv = np.where(np.isfinite(W), W, 0.0)
    Xv = np.where(np.isfinite(x), x, 0.0)
    x_bad = ~np.isfinite(x)
    if ignored is not None:
        x_bad &= ~np.asarray(ignored, bool).reshape(n, 1)
    aG, aW, aX = np.abs(Gv), np.abs(Wv), np.abs(Xv)

    def product(value, tol, nan, bad):
        value = np.where(nan, np.nan, np.where(bad, 0.0, value))
        return Ref(value, tol, bad & ~nan)

    # dX = G @ W: C terms per value
    dx = product(Gv @ Wv, Gtv @ aW + 2 * (C + 2) * e * (aG @ aW),
                 np.broadcast_to(gnan.any(axis=1)[:, None], (n, D)),
                 gbad.any(axis=1)[:, None] | (~np.isfinite(W)).any(axis=0)[None, :])
    # dW = G.T @ x: n terms per value
    dw = product(Gv.T @ Xv, Gtv.T @ aX + 2 * (n + 2) * e * (aG.T @ aX),
                 np.broadcast_to(gnan.any(axis=0)[:, None], (C, D)),
                 gbad.any(axis=0)[:, None] | x_bad.any(axis=0)[None, :])
    db = product(Gv.sum(axis=0), Gtv.sum(axis=0) + 2 * (n + 2) * e * aG.sum(axis=0),
                 gnan.any(axis=0), gbad.any(axis=0))
    return dx, dw, db
