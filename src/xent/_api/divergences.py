"""Row-wise divergences between logit arrays: kl_divergence (distillation) and entropy.

Both read each row once into cache (``_cython/cross_entropy.pxi``) and allocate
nothing of the inputs' size.  ``kl_div`` (PyTorch's pointwise form) lives in kl_div.py.
"""

import math

import numpy as np

from xent._runtime.dispatch import kernels as _kernels
from xent._runtime.threads import threads_for
from xent._api.validation import (
    FLOAT64,
    as_logits,
    check_grad_out,
    check_reduction,
    check_same_shape,
    check_scalar,
    finish_grad,
    float_kind,
    grad_target,
    input_3d,
    normalize_axis,
    rounded,
)


def _row_result(rows, row_shape, compute):
    out = rounded(rows, compute).reshape(row_shape)
    return out[()] if out.ndim == 0 else out


def kl_divergence(p_logits, q_logits, *, axis=-1, temperature=1.0, reduction="mean",
                  return_grad=False, grad_out=None):
    """KL(softmax(p/T) ‖ softmax(q/T)) per row, from two logit arrays.

    The distillation loss: teacher logits `p_logits`, student logits `q_logits`,
    temperature ``T``.  Both rows are read once; no N×C temporary is made.

    Parameters
    ----------
    p_logits, q_logits : array_like
        Teacher and student logits of the same shape, class axis `axis`.
    axis : int, optional
        The class axis (default: last).
    temperature : float in (0, inf), optional
        A real number, not a string (default 1).  Both logit arrays are divided
        by it before the softmax.  The result is *not* multiplied by ``T²``
        (Hinton et al. do that to keep gradient scales comparable; multiply
        yourself if you want it).
    reduction : {"mean", "sum", "none"}, optional
        "none": one value per row; "mean": averaged over rows (NaN for no rows);
        "sum": summed.
    return_grad : bool, optional
        Also return the gradient with respect to `q_logits`,
        ``(softmax(q/T) - softmax(p/T)) / T`` per row, scaled for the reduction.
    grad_out : ndarray, optional
        Where to write that gradient (`q_logits`' shape, any floating dtype,
        bfloat16 included; rounded to it when it is not the computation dtype);
        may be `q_logits` itself (in place).  Its elements must not overlap in
        memory.

    Returns
    -------
    loss : numpy scalar or ndarray
        In the computation dtype (float64 if either input is float64, else float32).
    grad : ndarray
        Only with ``return_grad=True``.

    Raises
    ------
    ValueError
        Different shapes, `temperature` not in ``(0, inf)``, unknown
        `reduction`, `axis` out of range, `grad_out` of the wrong shape,
        read-only, self-overlapping or given without ``return_grad=True``.
    TypeError
        Unsupported dtypes; a `temperature` that is not a real number (e.g. a
        string); a `grad_out` that is not a floating NumPy array.

    Notes
    -----
    Classes where the teacher's probability is 0 (``-inf`` logits) cost nothing;
    a class the teacher gives probability and the student gives none makes the
    row's KL ``+inf``.

    Examples
    --------
    >>> import numpy as np, xent
    >>> p = np.array([[1.0, 2.0, 3.0]])
    >>> float(xent.kl_divergence(p, p))
    0.0
    >>> round(float(xent.kl_divergence(p, np.zeros((1, 3)), temperature=2.0)), 4)
    0.0784
    """
    lp = as_logits(p_logits, "p_logits")
    lq = as_logits(q_logits, "q_logits")
    check_same_shape(lp.array, lq.array, "p_logits", "q_logits")
    if lq.array.ndim == 0:
        raise ValueError("q_logits: expected at least one dimension (the class axis), got a scalar")
    ax = normalize_axis(axis, lq.array.ndim)
    T = check_scalar(temperature, "temperature", 0.0, low_open=True)
    check_reduction(reduction)
    compute = np.result_type(lp.compute, lq.compute)
    shape = lq.array.shape
    check_grad_out(grad_out, shape, return_grad)
    row_shape = shape[:ax] + shape[ax + 1 :]
    n_rows = math.prod(row_shape)

    scale = 1.0 / n_rows if (reduction == "mean" and n_rows) else 1.0
    grad3d = result = None
    if return_grad:
        grad3d, result = grad_target(grad_out, shape, compute, ax, (lp.array,), lq.array)
    p3 = input_3d(lp.array, ax)
    q3 = input_3d(lq.array, ax)
    kl = np.empty(n_rows, FLOAT64)
    _kernels.kl_divergence(
        p=p3, pkind=float_kind(lp.array), q=q3, qkind=float_kind(lq.array),
        double_precision=compute == FLOAT64, T=T, scale=scale, grad=grad3d, kl=kl,
        n_threads=threads_for(2 * lq.array.size),
    )
    if reduction == "none":
        loss = _row_result(kl, row_shape, compute)
    else:
        with np.errstate(all="ignore"):  # inf, NaN, 0/0: the answers
            total = np.sum(kl)
            if reduction == "mean":
                total = np.float64(total) / np.float64(n_rows)
        loss = rounded(total, compute)
    if return_grad:
        return loss, finish_grad(grad_out, result)
    return loss


def entropy(logits, *, axis=-1, base=None):
    """Shannon entropy of ``softmax(logits)`` along an axis.

    ``H = -Σ p log p``, computed per row as ``log s - Σ e·(x - max) / s`` with
    ``e = exp(x - max)`` and ``s = Σ e``, in one pass; ``0·log 0 = 0``.

    Parameters
    ----------
    logits : array_like
        Unnormalised scores, class axis `axis`.
    axis : int, optional
        The class axis (default: last).
    base : float in (0, 1) or (1, inf), optional
        Logarithm base (default: e, giving nats; 2 gives bits).  A real number,
        not a string.

    Returns
    -------
    numpy scalar or ndarray
        One value per row (the logits' shape without `axis`); float32 for
        float32/16-bit logits, else float64.

    Raises
    ------
    ValueError
        `axis` out of range, `base` not in ``(0, 1)`` or ``(1, inf)``.
    TypeError
        Unsupported dtypes; a `base` that is not a real number.

    Notes
    -----
    A row with k ``+inf`` logits has entropy ``log k``; rows with NaN, or with
    every logit ``-inf``, are NaN.  An empty class axis gives 0 (the empty sum,
    as `kl_divergence` and `cross_entropy` with probability targets give).

    Examples
    --------
    >>> import numpy as np, xent
    >>> float(xent.entropy(np.zeros(4), base=2))
    2.0
    """
    lg = as_logits(logits, "logits")
    a = lg.array
    if a.ndim == 0:
        raise ValueError("logits: expected at least one dimension (the class axis), got a scalar")
    ax = normalize_axis(axis, a.ndim)
    log_base = None
    if base is not None:
        try:
            b = check_scalar(base, "base", 0.0, low_open=True)
        except ValueError:
            b = 1.0  # one message for every value out of range
        if b == 1:
            raise ValueError(f"base: expected a value in (0, 1) or (1, inf), got {base!r}")
        log_base = math.log(b)
    row_shape = a.shape[:ax] + a.shape[ax + 1 :]
    x3 = input_3d(a, ax)
    h = np.empty(math.prod(row_shape), FLOAT64)
    _kernels.entropy(
        x=x3, xkind=float_kind(a), double_precision=lg.compute == FLOAT64, h=h,
        n_threads=threads_for(a.size),
    )
    if log_base is not None:
        h /= log_base
    return _row_result(h, row_shape, lg.compute)
