"""Multiclass losses with PyTorch semantics: cross_entropy, nll_loss, focal_loss.

Formulas and denominators are those of ``torch.nn.functional.cross_entropy`` /
``nll_loss`` (SPEC, "Multiclass losses"); z-loss is PaLM's auxiliary loss
(Chowdhery et al. 2022); focal loss is Lin et al. (2017).  Validation happens
entirely here, before any kernel runs; the kernels (``_cython/cross_entropy.pxi``)
compute each row's loss, logsumexp and gradient in one pass over the row.
"""

import math

import numpy as np

from xent._runtime.dispatch import kernels as _kernels
from xent._runtime.namespaces import signature_defaults
from xent._runtime.threads import threads_for
from xent._api.validation import (
    FLOAT64,
    as_float_storage,
    as_logits,
    bad_index_error,
    check_grad_out,
    check_ignore_index,
    check_index_targets,
    check_reduction,
    check_scalar,
    check_uint64_indices,
    class_weights,
    finish_grad,
    float_kind,
    grad_target,
    index_storage,
    input_3d,
    normalize_axis,
    rounded,
    xlogy_terms,
)


class _Targets:
    """Validated targets of a multiclass loss over logits `a` with class axis `ax`.

    For class indices, one pass in the kernel checks every index and counts the
    non-ignored ones and their summed class weight (`n_valid`, `weight_total`).
    """

    __slots__ = ("array", "array3d", "code", "prob", "row_shape", "n_valid", "weight_total",
                 "ignore_index")

    def __init__(self, target, a, ax, C, ignore_index, compute, allow_prob, weight64=None):
        row_shape = a.shape[:ax] + a.shape[ax + 1 :]
        t = np.asarray(target)
        self.row_shape = row_shape
        self.ignore_index = ignore_index
        if t.dtype.kind in "iu":
            check_index_targets(t, a.shape, ax)
            t, self.code = index_storage(t)
            if t.dtype.kind == "u" and t.dtype.itemsize == 8:
                check_uint64_indices(t, C, ignore_index)
            bad, n_valid, weight_total = _kernels.class_index_stats(
                t=t.reshape(-1), tcode=self.code, C=C, ignore_index=ignore_index,
                weight=weight64,
            )
            if bad >= 0:
                raise bad_index_error(t, bad, C, ignore_index)
            self.array = t
            self.prob = False
            self.n_valid = float(n_valid)
            self.weight_total = float(weight_total)
            self.array3d = input_3d(t.reshape(row_shape[:ax] + (1,) + row_shape[ax:]), ax)
            return
        if t.dtype.kind == "f" or t.dtype.name == "bfloat16":
            if not allow_prob:
                raise TypeError(
                    f"target: expected integer class indices, got dtype {t.dtype}"
                )
            if t.shape != a.shape:
                raise ValueError(
                    f"target has shape {t.shape}, but logits have shape {a.shape}; floating "
                    "targets are class probabilities and must match the logits' shape "
                    "(use an integer dtype for class indices)"
                )
            t = as_float_storage(t, compute)
            self.array = t
            self.code = float_kind(t)
            self.prob = True
            # "mean" over probability targets divides by the number of rows
            self.n_valid = self.weight_total = float(math.prod(row_shape))
            self.array3d = input_3d(t, ax)
            return
        raise TypeError(
            f"target: unsupported dtype {t.dtype} (expected integer class indices "
            "or floating class probabilities)"
        )

    @property
    def valid(self):
        """Boolean mask of the non-ignored class indices."""
        return self.array != self.ignore_index


def gradient_scales(reduction, targets):
    """The gradient's factors of the loss and z-loss terms: PyTorch's "mean"
    denominators (the weight of the non-ignored targets; the number of non-ignored
    rows for the z-loss), NaN over nothing; 1 for "sum" and "none"."""
    if reduction != "mean":
        return 1.0, 1.0
    return (1.0 / targets.weight_total if targets.weight_total != 0 else math.nan,
            1.0 / targets.n_valid if targets.n_valid != 0 else math.nan)


def _logits_and_axis(logits, axis, name="logits"):
    lg = as_logits(logits, name)
    if lg.array.ndim == 0:
        raise ValueError(f"{name}: expected at least one dimension (the class axis), got a scalar")
    return lg, normalize_axis(axis, lg.array.ndim)


def _row_losses(lg, ax, targets, *, weight=None, eps=0.0, z=0.0, scale_ce=1.0, scale_z=1.0,
                grad3d=None):
    """Run the cross-entropy kernel: float64 per-row (loss without z-loss, logsumexp).

    weight: None or the (C,) class weights of the computation dtype; eps, z: label
    smoothing and z-loss; scale_ce, scale_z: the gradient's factors of the two
    terms; grad3d: None or the 3-D array the gradient is written into."""
    x3 = input_3d(lg.array, ax)
    n_rows = x3.shape[0] * x3.shape[2]
    ce = np.empty(n_rows, FLOAT64)
    lse = np.empty(n_rows, FLOAT64)
    wsum = float(weight.sum(dtype=FLOAT64)) if weight is not None else float(x3.shape[1])
    _kernels.cross_entropy(
        x3, targets.array3d, xkind=float_kind(lg.array), tcode=targets.code, prob=targets.prob,
        ignore_index=targets.ignore_index, weight=weight, wsum=wsum, eps=eps, z=z,
        scale_ce=scale_ce, scale_z=scale_z, grad=grad3d, ce=ce, lse=lse,
        n_threads=threads_for(lg.array.size),
    )
    return ce, lse


def cross_entropy(
    logits,
    target,
    *,
    axis=-1,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    return_grad=False,
    grad_out=None,
):
    """Cross-entropy between logits and class indices or class probabilities.

    ``torch.nn.functional.cross_entropy(logits, target, dim=axis, ...)`` formula for
    formula, computed in one pass over each row (max, sum of exps, loss and, if
    asked, gradient), with no N×C temporary.

    Parameters
    ----------
    logits : array_like
        Unnormalised scores, class axis `axis`.  float32/float64 computed in their
        own precision, float16/bfloat16 in float32, integers in float64.
    target : array_like
        Either class indices (any integer dtype, the logits' shape without
        `axis`), or class probabilities (floating, the logits' shape).
    axis : int, optional
        The class axis (default: last).  E.g. ``axis=1`` for ``(N, C, H, W)``.
    weight : array_like, optional
        Per-class weights, shape ``(C,)``.
    ignore_index : int, optional
        Class-index targets equal to this contribute exactly 0 to the loss and
        gradient, whatever their logits hold (default -100).  Not used with
        probability targets.
    reduction : {"mean", "sum", "none"}, optional
        "mean" divides the summed loss by the summed weight of the non-ignored
        targets (by the number of rows for probability targets); over nothing it
        is NaN.  "sum" adds (0 over nothing).  "none" returns one loss per row.
    label_smoothing : float in [0, 1], optional
        Mixes the target with the uniform distribution: ``(1-ε)·target + ε/C``.
        With ``ε > 0`` every class weight enters every row (a NaN weight makes
        every row NaN); without, only the target's.
    z_loss : float >= 0, optional
        Adds ``z_loss · logsumexp(row)²`` for each non-ignored row (PaLM); under
        "mean" this term is divided by the number of non-ignored rows.  A finite
        real number (int, float, NumPy scalar): ``inf`` and NaN raise
        `ValueError`, strings and bools `TypeError`.
    return_grad : bool, optional
        Also return ``∂loss/∂logits`` for the chosen reduction (for "none", the
        gradient of the sum), computed in the same pass.
    grad_out : ndarray, optional
        Where to write the gradient (needs ``return_grad=True``): a writable
        NumPy array of the logits' shape, any floating dtype, ``ml_dtypes``'
        bfloat16 included (the gradient is rounded to it when it is not the
        computation dtype; beyond its range, ``±inf``).  No two of its elements
        may share memory (a self-overlapping view such as ``as_strided(...,
        strides=(8, 8))`` raises `ValueError`).  It may be the logits array
        itself, which is then overwritten by the gradient.

    Returns
    -------
    loss : numpy scalar or ndarray
        float32 for float32/16-bit logits, else float64.
    grad : ndarray
        Only with ``return_grad=True``; the logits' shape (float32 for 16-bit
        logits), or `grad_out`.

    Raises
    ------
    IndexError
        A class index outside ``[0, C)`` that is not `ignore_index` (the message
        names the first one and its position).  Nothing is written.
    ValueError
        Shape mismatches, unknown `reduction`, `label_smoothing` outside
        ``[0, 1]``, `z_loss` negative, infinite or NaN, bad `weight` shape,
        `axis` out of range, `ignore_index` outside int64's range, bad
        `grad_out` (shape, read-only, self-overlapping).
    TypeError
        Unsupported dtypes; a `z_loss` or `label_smoothing` that is not a real
        number; a `grad_out` that is not a floating NumPy array.

    Notes
    -----
    Non-finite logits follow the SPEC's rule: a ``-inf`` logit is a class of
    probability 0 (free on a non-target class, ``+inf`` loss on the target);
    a lone ``+inf`` at the target gives loss 0 (PyTorch gives NaN there); NaN
    makes its row's loss NaN.  Terms with a zero coefficient cost 0 even when
    their log-probability is ``-inf``.

    Examples
    --------
    >>> import numpy as np, xent
    >>> logits = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    >>> round(float(xent.cross_entropy(logits, np.array([0, 1]))), 4)
    0.3606
    >>> loss, grad = xent.cross_entropy(logits, np.array([0, 1]), return_grad=True)
    >>> bool(np.allclose(grad.sum(axis=1), 0))  # softmax minus one-hot, per row
    True
    """
    if weight is None and grad_out is None and not return_grad:
        # The common small call in one compiled call (same bits as below), or None;
        # by position, as the hot call it is (cross_entropy_small's docstring).
        loss = _cross_entropy_small(logits, target, axis, ignore_index, reduction,
                                    label_smoothing, z_loss, threads_for)
        if loss is not None:
            return loss
    lg, ax = _logits_and_axis(logits, axis)
    a = lg.array
    C = a.shape[ax]
    check_reduction(reduction)
    eps = check_scalar(label_smoothing, "label_smoothing", 0.0, 1.0)
    z = check_scalar(z_loss, "z_loss", 0.0)
    ignore_index = check_ignore_index(ignore_index)
    w = class_weights(weight, C, lg.compute)
    w64 = None if w is None else w.astype(FLOAT64)
    targets = _Targets(target, a, ax, C, ignore_index, lg.compute, allow_prob=True, weight64=w64)
    check_grad_out(grad_out, a.shape, return_grad)

    # Denominators of "mean" (PyTorch's): the weight of the non-ignored targets
    # for the cross-entropy, the number of non-ignored rows for the z-loss.
    n_valid, weight_total = targets.n_valid, targets.weight_total
    scale_ce, scale_z = gradient_scales(reduction, targets)

    grad3d = result = None
    if return_grad:
        readers = (targets.array3d, w)
        grad3d, result = grad_target(grad_out, a.shape, lg.compute, ax, readers, a)
    ce, lse = _row_losses(lg, ax, targets, weight=w, eps=eps, z=z, scale_ce=scale_ce,
                          scale_z=scale_z, grad3d=grad3d)

    loss = _reduce_ce(ce, lse, z, reduction, weight_total, n_valid, targets.row_shape, lg.compute)
    if return_grad:
        return loss, finish_grad(grad_out, result)
    return loss


# The kernel variant is chosen once, at import (_runtime/dispatch.py); bind its
# entry point.
_cross_entropy_small = _kernels.cross_entropy_small

# `cross_entropy(logits, target)` with every default: the public function calls the
# compiled path directly (xent._runtime.namespaces), saving this function's frame.
# It takes exact NumPy arrays only, so its result is NumPy's by the namespace rule.
cross_entropy.defaults_fast_path = (_cross_entropy_small, (
    *signature_defaults(cross_entropy, "axis", "ignore_index", "reduction",
                        "label_smoothing", "z_loss"),
    threads_for,
))


def _reduce_ce(ce, lse, z, reduction, weight_total, n_valid, row_shape, compute):
    """Loss from per-row float64 cross-entropies and logsumexps (0 on ignored rows).

    IEEE's inf and NaN are answers here (z·lse² beyond float64, inf - inf), and
    a float64 value beyond float32's range rounds to inf: no warnings."""
    with np.errstate(all="ignore"):
        z_rows = z * np.square(lse) if z != 0 else None  # z == 0: skip, even if lse = inf
        if reduction == "none":
            rows = ce if z_rows is None else ce + z_rows
            return _shaped(rounded(rows, compute), row_shape)
    total = _kernels.sum_rows(ce)  # the fixed order of the fast path too
    z_total = _kernels.sum_rows(z_rows) if z_rows is not None else 0.0
    if reduction == "sum":
        return rounded(total + z_total, compute)
    # 0/0 (nothing to average) is NaN, as in PyTorch
    mean = total / weight_total if weight_total != 0 else math.nan
    if z_rows is not None:
        mean += z_total / n_valid if n_valid != 0 else math.nan
    return rounded(mean, compute)


def _shaped(rows, row_shape):
    """Per-row values in the target's shape (a NumPy scalar for 0-d)."""
    out = rows.reshape(row_shape)
    return out[()] if out.ndim == 0 else out


def nll_loss(log_probs, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of class indices given log-probabilities.

    ``torch.nn.functional.nll_loss`` semantics: ``l_i = -w[t_i] · log_probs[i, t_i]``,
    0 for ignored rows; "mean" divides by the summed weight of the non-ignored
    targets (NaN over nothing), "sum" adds, "none" keeps one value per row.

    Parameters
    ----------
    log_probs : array_like
        Log-probabilities (e.g. from `log_softmax`), class axis `axis`.
    target : array_like of int
        Class indices, the shape of `log_probs` without `axis`.
    axis : int, optional
        The class axis (default: last).
    weight : array_like, optional
        Per-class weights, shape ``(C,)``.
    ignore_index : int, optional
        Targets equal to this contribute 0 (default -100).
    reduction : {"mean", "sum", "none"}, optional

    Returns
    -------
    numpy scalar or ndarray
        float32 for float32/16-bit input, else float64.

    Raises
    ------
    IndexError, ValueError, TypeError
        As for `cross_entropy`.

    Notes
    -----
    A zero weight on a log-probability of ``-inf`` costs 0 (``0·log 0 = 0``, as
    in `cross_entropy`; PyTorch gives NaN there); a NaN log-probability gives
    NaN whatever its weight.  Ignored rows are 0 whatever they hold.

    Examples
    --------
    >>> import numpy as np, xent
    >>> lp = np.log(np.array([[0.5, 0.5], [0.25, 0.75]]))
    >>> float(xent.nll_loss(lp, np.array([0, 1])))
    0.4904...
    """
    lg, ax = _logits_and_axis(log_probs, axis, "log_probs")
    a = lg.array
    C = a.shape[ax]
    check_reduction(reduction)
    ignore_index = check_ignore_index(ignore_index)
    targets = _Targets(target, a, ax, C, ignore_index, lg.compute, allow_prob=False)
    w = class_weights(weight, C, FLOAT64)
    t = np.asarray(target)
    valid = targets.valid
    picked = _pick(a, t, valid, ax).astype(FLOAT64)
    wt = w[np.where(valid, t, 0)] if (w is not None and C > 0) else np.ones(t.shape)
    # Ignored rows are exactly 0, whatever their log-probabilities hold; a zero
    # weight on a log-probability of -inf costs 0 (0·log 0), on a NaN it is NaN.
    rows = np.where(valid, xlogy_terms(wt, -picked), 0.0)
    return _reduce_rows(rows, reduction, np.sum(np.where(valid, wt, 0.0)), targets.row_shape,
                        lg.compute)


def _reduce_rows(rows, reduction, denominator, row_shape, compute):
    """nll_loss's and focal_loss's loss from float64 per-row losses (0 on ignored
    rows): "mean" divides the sum by `denominator` (0/0 = NaN, as PyTorch).  IEEE's
    inf and NaN are the answers: no warnings."""
    if reduction == "none":
        return _shaped(rounded(rows, compute), row_shape)
    with np.errstate(all="ignore"):
        total = np.sum(rows, dtype=np.float64)
        if reduction == "mean":
            total = np.float64(total) / np.float64(denominator)
    return rounded(total, compute)


def _pick(a, t, valid, ax):
    """a[..., t, ...] along axis ax (valid targets; ignored ones read class 0)."""
    if a.shape[ax] == 0:  # every target is ignored (checked); nothing to read
        return np.zeros(t.shape, a.dtype)
    idx = np.expand_dims(np.where(valid, t, 0), ax)
    return np.squeeze(np.take_along_axis(a, idx, axis=ax), axis=ax)


def focal_loss(logits, target, *, axis=-1, gamma=2.0, alpha=None, ignore_index=-100,
               reduction="mean"):
    """Multiclass focal loss from logits (Lin et al. 2017).

    ``l_i = -α_t · (1 - p_t)^γ · log p_t`` with ``p_t = softmax(logits)[i, t_i]``;
    0 for ignored rows.  ``-log p_t`` comes from the cross-entropy kernel (one pass
    over each row, exact for huge logits); ``1 - p_t`` is computed as
    ``-expm1(log p_t)`` so confident rows keep their precision.

    Parameters
    ----------
    logits : array_like
        Unnormalised scores, class axis `axis`.
    target : array_like of int
        Class indices, the logits' shape without `axis`.
    axis : int, optional
        The class axis (default: last).
    gamma : float >= 0, optional
        Focusing parameter (default 2).  ``gamma=0`` with ``alpha=None`` is the
        cross-entropy.  A finite real number: ``inf`` and NaN raise
        `ValueError`, strings and bools `TypeError`.
    alpha : float or array_like of shape (C,), optional
        Class balance factor (None means 1).  A scalar must be a finite real
        number (as `gamma`, any sign).
    ignore_index : int, optional
        Targets equal to this contribute 0 (default -100).
    reduction : {"mean", "sum", "none"}, optional
        "mean" divides by the number of non-ignored rows (NaN if there are none).

    Returns
    -------
    numpy scalar or ndarray
        float32 for float32/16-bit logits, else float64.

    Raises
    ------
    IndexError, ValueError, TypeError
        As for `cross_entropy`; also (ValueError) for a `gamma` that is negative,
        infinite or NaN, a scalar `alpha` that is not finite, or a bad `alpha`
        shape.

    Examples
    --------
    >>> import numpy as np, xent
    >>> logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    >>> float(xent.focal_loss(logits, np.array([0, 0]), gamma=0.0))  # = cross-entropy
    1.1269...
    """
    lg, ax = _logits_and_axis(logits, axis)
    a = lg.array
    C = a.shape[ax]
    check_reduction(reduction)
    g = check_scalar(gamma, "gamma", 0.0)
    ignore_index = check_ignore_index(ignore_index)
    targets = _Targets(target, a, ax, C, ignore_index, lg.compute, allow_prob=False)
    if alpha is None or np.ndim(alpha) == 0:
        a_scalar = 1.0 if alpha is None else check_scalar(alpha, "alpha")
        alpha_w = None
    else:
        alpha_w = class_weights(alpha, C, FLOAT64, name="alpha")

    ce, _ = _row_losses(lg, ax, targets)
    nll = ce.reshape(targets.row_shape)  # -log p_t, 0 on ignored rows
    valid = targets.valid
    with np.errstate(invalid="ignore", over="ignore"):
        one_minus_p = -np.expm1(-nll)
        modulating = np.power(one_minus_p, g)  # 0**0 == 1: gamma = 0 is plain CE
        t = np.asarray(target)
        if alpha_w is None:
            at = a_scalar
        elif C == 0:  # every row is ignored (checked): there is no alpha to read
            at = 0.0
        else:
            at = alpha_w[np.where(valid, t, 0)]
        # alpha_t = 0 costs 0 even where p_t = 0 (0·log 0), not on a NaN row
        rows = np.where(valid, xlogy_terms(at * modulating, nll), 0.0)
    return _reduce_rows(rows, reduction, np.count_nonzero(valid), targets.row_shape,
                        lg.compute)
