"""logsumexp, log_softmax and softmax over one axis (or the whole array).

Non-finite rule (SPEC, "Conventions"): a -inf logit is a class of probability 0;
k entries of +inf are the limit of k equal, arbitrarily large logits (softmax
1/k on them); NaN propagates to everything computed from its row; a row with no
finite or +inf entry (all -inf, or empty) has logsumexp -inf and NaN
softmax/log-softmax.  The kernels implement the rule; see include/xent/portable/rows.h.
"""

import numpy as np

from xent._runtime.dispatch import kernels as _kernels
from xent._runtime.threads import threads_for
from xent._api.validation import (
    as_logits,
    check_out,
    copy_rounded,
    float_kind,
    input_3d,
    kernel_out,
    normalize_axis,
    view_3d,
)


def run_normalizer(op, v, out3d, n_threads):
    """Normaliser `op` over axis 1 of the 3-D input `v` (any floating storage the
    kernels read, see float_kind) into `out3d` (the computation dtype)."""
    _kernels.normalize(op=op, x=v, xkind=float_kind(v), out=out3d, n_threads=n_threads)


def _flat_or_axis(a, axis):
    """(array to reduce, its class axis): axis=None means the flattened array."""
    if axis is None:
        return a.reshape(-1), 0
    if a.ndim == 0:
        raise np.exceptions.AxisError(
            f"axis={axis!r} is out of bounds for an array of dimension 0 (use axis=None)"
        )
    return a, normalize_axis(axis, a.ndim)


def logsumexp(x, axis=-1, *, keepdims=False, out=None):
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
    logits = as_logits(x, "x")
    a = logits.array
    flat, ax = _flat_or_axis(a, axis)
    if axis is None:
        reduced_shape = (1,) * a.ndim if keepdims else ()
    else:
        reduced_shape = a.shape[:ax] + ((1,) if keepdims else ()) + a.shape[ax + 1 :]
    if out is not None:
        check_out(out, reduced_shape)
    v = input_3d(flat, ax)
    outer, inner = v.shape[0], v.shape[2]

    result = None
    if out is not None and out.dtype == logits.compute:
        result = _lse_view(out, outer, inner)
    target = result if result is not None else np.empty((outer, inner), logits.compute)
    run_normalizer(_kernels.LOGSUMEXP, v, target, threads_for(v.size))

    if out is not None:
        if result is None:
            copy_rounded(out, target.reshape(reduced_shape))
        return out
    res = target.reshape(reduced_shape)
    return res[()] if res.ndim == 0 else res


def _lse_view(out, outer, inner):
    """out viewed as (outer, inner) without copying, or None."""
    try:
        v = np.reshape(out, (outer, inner), copy=False)
    except ValueError:
        return None
    if any(s % v.itemsize for s in v.strides):
        return None
    return v


def _normalize(op, x, axis, out):
    """Shared body of log_softmax and softmax."""
    logits = as_logits(x, "x")
    a = logits.array
    if out is not None:
        check_out(out, a.shape)
    if axis is None:
        flat, ax = a.reshape(-1), 0
        out_flat = None
        if out is not None:
            try:
                out_flat = np.reshape(out, -1, copy=False)
            except ValueError:
                out_flat = None
    else:
        flat, ax = _flat_or_axis(a, axis)
        out_flat = out
    v = input_3d(flat, ax)

    direct = None
    if out_flat is not None:
        direct = kernel_out(out_flat, logits.compute, ax, flat)
    if direct is not None:
        run_normalizer(op, v, direct, threads_for(v.size))
        return out
    result = np.empty(a.shape, logits.compute)
    target = view_3d(result.reshape(-1) if axis is None else result, ax)
    run_normalizer(op, v, target, threads_for(v.size))
    if out is None:
        return result
    copy_rounded(out, result)
    return out


def log_softmax(x, axis=-1, *, out=None):
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
    return _normalize(_kernels.LOG_SOFTMAX, x, axis, out)


def softmax(x, axis=-1, *, out=None):
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
    return _normalize(_kernels.SOFTMAX, x, axis, out)
