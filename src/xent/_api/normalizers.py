"""logsumexp, log_softmax and softmax over one axis (or the whole array).

Non-finite rule (SPEC, "Conventions"): a -inf logit is a class of probability 0;
k entries of +inf are the limit of k equal, arbitrarily large logits (softmax
1/k on them); NaN propagates to everything computed from its row; a row with no
finite or +inf entry (all -inf, or empty) has logsumexp -inf and NaN
softmax/log-softmax.  The kernels implement the rule; see include/xent/portable/rows.h.
"""

import numpy as np

from xent._api.class_axes import (
    RowBlocks,
    class_axes,
    merged_view,
    reduced_shape,
    with_class_axis,
)
from xent._api.normalizer_dtypes import read_inputs
from xent._api.scaled_logsumexp import scaled_logsumexp
from xent._api.validation import check_out, copy_rounded, float_kind, rounded
from xent._runtime.dispatch import kernels as _kernels
from xent._runtime.threads import threads_for


def run_normalizer(op, v, out3d, n_threads):
    """Normaliser `op` over axis 1 of the 3-D input `v` (any floating storage the
    kernels read, see float_kind) into `out3d` (the computation dtype)."""
    _kernels.normalize(op=op, x=v, xkind=float_kind(v), out=out3d, n_threads=n_threads)


def _same_array(a, b):
    """True when a and b are the same elements (same start, shape and strides)."""
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.strides == b.strides
        and a.shape == b.shape
    )


def _writes_in_place(out, source):
    """True when `out` may be written while `source` is read row by row: it
    shares no memory with it, or is that very array."""
    return not np.may_share_memory(out, source) or _same_array(out, source)


def _scalar_or_array(res):
    """A NumPy scalar for a 0-d result (as NumPy's reductions return)."""
    return res[()] if res.ndim == 0 else res


def _rows_in_blocks(op, a, axes, compute, readable, target):
    """op over class axes `axes` of `a` into `target` (a's shape for log-softmax
    and softmax, the row shape for logsumexp; any float dtype): bounded blocks
    of rows gathered from `a` (converted to `compute` unless the kernels read
    a's storage), computed by the kernels, written back."""
    blocks = RowBlocks(a.shape, axes)
    flat, (source, dest) = blocks.views(a, target)
    C = blocks.C
    for selector, n in blocks.selectors(flat):
        rows = blocks.gather(source, selector, n, None if readable else compute)
        v = rows.reshape(n, C, 1)
        res = np.empty((n, 1) if op == _kernels.LOGSUMEXP else (n, C, 1), compute)
        run_normalizer(op, v, res, threads_for(v.size))
        blocks.scatter(dest, selector, res.reshape(n, -1) if op != _kernels.LOGSUMEXP
                       else res.reshape(n))


def logsumexp(x, axis=-1, *, b=None, keepdims=False, return_sign=False, dtype=None, out=None):
    """Log of the sum of exponentials along an axis, computed stably.

    ``log(sum(exp(x), axis))`` without overflow: the row maximum is subtracted
    before exponentiating, in one fused pass per row.

    Parameters
    ----------
    x : array_like
        Logits.  float32 and float64 are computed in their own precision;
        float16/bfloat16 are read as they are and computed in float32; integer and
        bool inputs are converted to float64.
    axis : int or None, optional
        Axis to reduce (default: the last).  ``None`` reduces the whole array.
    keepdims : bool, optional
        Keep the reduced axis (axes, for ``axis=None``) with length 1.
    out : ndarray, optional
        Array with the result's shape to write into: any floating dtype
        (float16/32/64, longdouble, ``ml_dtypes.bfloat16``); a dtype other than
        the computation dtype receives the result rounded to it.  Its elements
        must not overlap in memory.

    Returns
    -------
    numpy scalar or ndarray
        float32 for float32/16-bit inputs, else float64.  A NumPy scalar when the
        result is 0-d and `out` is not given; `out` when given.

    Raises
    ------
    TypeError
        Complex, object or string input; non-float or non-array `out`.
    ValueError
        `axis` out of range; `out` of the wrong shape, read-only, or
        self-overlapping (e.g. an ``as_strided`` view whose rows share memory).

    Notes
    -----
    An empty axis gives ``-inf`` (the log of an empty sum).  Rows with ``+inf``
    give ``+inf``; rows whose entries are all ``-inf`` give ``-inf``; NaN gives NaN.

    Examples
    --------
    >>> import numpy as np, xent
    >>> xent.logsumexp(np.array([[0.0, 0.0], [1000.0, 1000.0]])).round(4).tolist()
    [0.6931, 1000.6931]
    >>> float(xent.logsumexp(np.zeros(4, dtype=np.float32), axis=None))
    1.3862943649291992
    """
    inputs = read_inputs(x, dtype)
    a = inputs.array
    if b is not None:
        def check_result(shape):
            if out is not None:
                check_out(out, shape)

        value, sign, compute = scaled_logsumexp(
            a, b, axis, keepdims, return_sign, inputs.compute, dtype, check_result
        )
        if not return_sign:
            value[sign < 0] = np.nan  # the log of a negative sum (as SciPy)
        result = inputs.result if dtype is not None else compute
        return _finish_logsumexp(value, sign if return_sign else None, result, out)
    axes = class_axes(axis, a.ndim)
    shape = reduced_shape(a.shape, axes, keepdims)
    if out is not None:
        check_out(out, shape)
    value = _plain_logsumexp(inputs, axes, shape, out)
    sign = None
    if return_sign:
        # Without b every term is positive: the sum is 0 only when no class has
        # any weight (all -inf, or no classes), and NaN stays NaN.
        with np.errstate(invalid="ignore"):
            sign = np.where(value == -np.inf, 0, 1).astype(value.dtype)
            sign[np.isnan(value)] = np.nan
    return _finish_logsumexp(value, sign, inputs.result, out)


def _plain_logsumexp(inputs, axes, shape, out):
    """logsumexp without b over class axes `axes`, as an array of the reduced
    `shape`: `out` itself when the kernel wrote it, else the computation dtype."""
    a, axes = with_class_axis(inputs.array, axes)
    compute = inputs.compute
    v = merged_view(a, axes) if inputs.readable else None
    if v is None:
        target = np.empty(reduced_shape(a.shape, axes, False), compute)
        _rows_in_blocks(_kernels.LOGSUMEXP, a, axes, compute, inputs.readable, target)
        return target.reshape(shape)
    outer, inner = v.shape[0], v.shape[2]
    direct = None
    if out is not None and out.dtype == compute:
        direct = _lse_view(out, outer, inner)
    target = direct if direct is not None else np.empty((outer, inner), compute)
    run_normalizer(_kernels.LOGSUMEXP, v, target, threads_for(v.size))
    return out if direct is not None else target.reshape(shape)


def _finish_logsumexp(value, sign, result, out):
    """The caller's result: `value` written into `out` (returned) or rounded to
    `result` (a NumPy scalar when 0-d); with `sign`, the pair (value, sign),
    sign in out's dtype or `result`."""
    if out is not None:
        if value is not out:
            copy_rounded(out, value)
        res = out
    else:
        res = _scalar_or_array(rounded(value, result) if value.dtype != result else value)
    if sign is None:
        return res
    sign_dtype = out.dtype if out is not None else result
    return res, _scalar_or_array(sign.astype(sign_dtype, copy=False))


def _lse_view(out, outer, inner):
    """out viewed as (outer, inner) without copying, or None."""
    try:
        v = np.reshape(out, (outer, inner), copy=False)
    except ValueError:
        return None
    if any(s % v.itemsize for s in v.strides):
        return None
    return v


def _normalize(op, x, axis, dtype, out):
    """Shared body of log_softmax and softmax."""
    inputs = read_inputs(x, dtype)
    a = inputs.array
    axes = class_axes(axis, a.ndim)
    if out is not None:
        check_out(out, a.shape)
    a3, class_axes3 = with_class_axis(a, axes)
    out3 = None if out is None else with_class_axis(out, axes)[0]
    compute = inputs.compute
    v = merged_view(a3, class_axes3) if inputs.readable else None
    if v is not None:
        # One strided class axis: the kernels read x in place.
        if out3 is not None and out3.dtype == compute and _writes_in_place(out3, a3):
            direct = merged_view(out3, class_axes3)
            if direct is not None:
                run_normalizer(op, v, direct, threads_for(v.size))
                return out
        result = np.empty(a.shape, compute)
        target = merged_view(with_class_axis(result, axes)[0], class_axes3)
        run_normalizer(op, v, target, threads_for(v.size))
    else:
        # Classes spread over axes that do not merge (or storage the kernels do
        # not read): bounded blocks of rows, written straight into the result.
        if out3 is not None and _writes_in_place(out3, a3):
            _rows_in_blocks(op, a3, class_axes3, compute, inputs.readable, out3)
            return out
        result = np.empty(a.shape, inputs.result if out is None else compute)
        target = with_class_axis(result, axes)[0]
        _rows_in_blocks(op, a3, class_axes3, compute, inputs.readable, target)
    if out is not None:
        copy_rounded(out, result)
        return out
    if result.dtype != inputs.result:
        result = rounded(result, inputs.result)
    return _scalar_or_array(result)


def log_softmax(x, axis=-1, *, dtype=None, out=None):
    """Logarithm of softmax along an axis: ``x - logsumexp(x, axis, keepdims=True)``.

    Computed per row as ``(x - max) - log(sum(exp(x - max)))`` in one fused pass,
    which stays exact for huge logits (``[1e30, 0]`` gives ``[0, -1e30]``).

    Parameters
    ----------
    x : array_like
        Logits (see `logsumexp` for the dtype rules).
    axis : int or None, optional
        The class axis (default: the last); any axis works without transposing.
        ``None`` normalises over the whole array.
    out : ndarray, optional
        Array of ``x``'s shape to write into (dtype rules as for `logsumexp`);
        may be ``x`` itself.

    Returns
    -------
    ndarray
        Same shape as `x`; float32 for float32/16-bit inputs, else float64
        (or `out`).

    Raises
    ------
    TypeError, ValueError
        As for `logsumexp`.

    Notes
    -----
    A class with logit ``-inf`` gets ``-inf``.  In a row with k ``+inf`` logits
    those get ``-log(k)`` and the others ``-inf``.  Rows with NaN, or with every
    entry ``-inf``, are NaN.

    Examples
    --------
    >>> import numpy as np, xent
    >>> xent.log_softmax(np.array([1e30, 0.0]))
    array([ 0.e+00, -1.e+30])
    >>> xent.log_softmax(np.log(np.array([[1.0, 3.0]], dtype=np.float32))).round(4)
    array([[-1.3863, -0.2877]], dtype=float32)
    """
    return _normalize(_kernels.LOG_SOFTMAX, x, axis, dtype, out)


def softmax(x, axis=-1, *, dtype=None, out=None):
    """Softmax along an axis: ``exp(x - logsumexp(x, axis, keepdims=True))``.

    Parameters
    ----------
    x : array_like
        Logits (see `logsumexp` for the dtype rules).
    axis : int or None, optional
        The class axis (default: the last).  ``None`` normalises the whole array.
    out : ndarray, optional
        Array of ``x``'s shape to write into (dtype rules as for `logsumexp`);
        may be ``x`` itself.

    Returns
    -------
    ndarray
        Same shape as `x`, each row summing to 1; float32 for float32/16-bit
        inputs, else float64 (or `out`).

    Raises
    ------
    TypeError, ValueError
        As for `logsumexp`.

    Notes
    -----
    In a row with k ``+inf`` logits those get ``1/k`` and the others 0.  Rows with
    NaN, or with every entry ``-inf``, are NaN.

    Examples
    --------
    >>> import numpy as np, xent
    >>> xent.softmax(np.array([[0.0, np.log(3.0)], [np.inf, np.inf]]))
    array([[0.25, 0.75],
           [0.5 , 0.5 ]])
    """
    return _normalize(_kernels.SOFTMAX, x, axis, dtype, out)
