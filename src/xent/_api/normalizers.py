"""logsumexp, log_softmax and softmax over a class axis, several, or the whole array.

Non-finite rule (SPEC, "Conventions"): a -inf logit is a class of probability 0;
k entries of +inf are the limit of k equal, arbitrarily large logits (softmax
1/k on them); NaN propagates to everything computed from its row; a row with no
finite or +inf entry (all -inf, or empty) has logsumexp -inf and NaN
softmax/log-softmax.  The kernels implement the rule; see include/xent/portable/rows.h.

How a call reads x: classes on one strided axis (an int axis, or a tuple whose
axes merge into one, see class_axes.merged_view) go to the kernels as a 3-D
view, converted row by row when x's storage is not the computation dtype (in
bounded converted blocks when the classes are not last, _converted_blocks);
other tuples, and storage the kernels do not read (integers, bool, long double,
byte-swapped), go through bounded blocks of rows (class_axes.RowBlocks); b=
goes to scaled_logsumexp.
"""

import numpy as np

from xent._api.class_axes import (
    RowBlocks,
    blocks_3d,
    class_axes,
    merged_view,
    reduced_shape,
    with_class_axis,
)
from xent._api.normalizer_dtypes import read_inputs
from xent._api.scaled_logsumexp import scaled_logsumexp
from xent._api.validation import check_out, copy_rounded, float_kind, rounded
from xent._runtime.dispatch import kernels as _kernels
from xent._runtime.namespaces import signature_defaults
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
    a's storage; a block that is already contiguous is read in place), computed
    by the kernels straight into `target` where its block is a contiguous view
    of the computation dtype, else into a scratch block written back."""
    blocks = RowBlocks(a.shape, axes)
    outer_shape, (source, dest) = blocks.views(a, target)
    lse = op == _kernels.LOGSUMEXP
    for selector, k in blocks.selectors(outer_shape):
        v = blocks.gather(source, selector, k, None if readable else compute)
        shape = (k, blocks.inner) if lse else v.shape
        block_out = dest[selector]
        if block_out.dtype == compute and block_out.flags.c_contiguous:
            run_normalizer(op, v, block_out.reshape(shape), threads_for(v.size))
        else:
            res = np.empty(shape, compute)
            run_normalizer(op, v, res, threads_for(v.size))
            blocks.scatter(dest, selector, res)


def _other_precision(v, compute):
    """True for float32 storage computed in float64 or the reverse (a dtype=
    argument): such a view with the classes not last is read in converted
    blocks.  16-bit storage keeps the kernels' own row conversion (its results
    are pinned bit for bit by tests/golden)."""
    return v.dtype.itemsize > 2 and v.dtype != compute


def _converted_blocks(op, v, target, compute):
    """op over axis 1 of the 3-D view `v` into `target` ((outer, C, inner), or
    (outer, inner) for logsumexp; any float dtype): bounded blocks converted to
    `compute`, computed by the kernels, written back.  For x stored in another
    dtype than the computation dtype with the classes not last: the kernels'
    class-axis-not-last path on converted blocks, instead of converting one
    strided row at a time."""
    lse = op == _kernels.LOGSUMEXP
    outer, C, inner = v.shape
    for o, i in blocks_3d(outer, C, inner):
        block = np.ascontiguousarray(v[o, :, i], dtype=compute)
        dest = target[o, i] if lse else target[o, :, i]
        res = np.empty(dest.shape, compute)
        run_normalizer(op, block, res, threads_for(block.size))
        with np.errstate(over="ignore"):
            dest[...] = res


def logsumexp(x, axis=-1, *, b=None, keepdims=False, return_sign=False, dtype=None, out=None):
    """Log of the sum of exponentials over one or more axes, computed stably.

    ``log(sum(b * exp(x), axis))`` without overflow: the row maximum is
    subtracted before exponentiating, in one fused pass per row.  A drop-in
    for ``scipy.special.logsumexp`` (whose `axis` defaults to None) and
    ``torch.logsumexp`` (``dim`` -> `axis`, ``keepdim`` -> `keepdims`).

    Parameters
    ----------
    x : array_like
        Logits.  float32 and float64 are computed in their own precision;
        float16/bfloat16 are read as they are and computed in float32; integer and
        bool inputs are computed in float64.  Complex input raises TypeError.
    axis : int, tuple of ints or None, optional
        The class axis (default: the last), several axes whose elements are the
        classes together, or None for the whole array.  ``()`` names no axis:
        each element is a class of its own (NumPy's and SciPy's meaning;
        PyTorch's reductions read ``dim=()`` as every dimension).  A 0-d `x`
        takes 0, -1, None or ``()`` and is one class.
    b : array_like, optional
        SciPy's scale factors: ``log(sum(b * exp(x)))``.  Any shape that
        broadcasts against `x` (the result may then be larger than x's
        reduction, as in SciPy); entries may be zero or negative.  An entry with
        ``b == 0`` is left out of the sum whatever `x` holds there.  The
        computation dtype is NumPy's promotion of x's with b's (integer b with
        float32 x: float64, as NumPy and SciPy), unless `dtype` is given.
    keepdims : bool, optional
        Keep the reduced axes with length 1.
    return_sign : bool, optional
        Return ``(log|sum|, sign)``, sign in {-1, 0, 1} (NaN where the value is
        NaN), an array of the result's shape and dtype (`out`'s dtype when given).
        Without it a negative sum (possible only with `b`) gives NaN.
    dtype : dtype, optional
        The computation and result dtype (as PyTorch's ``dtype=``): float32 or
        float64 (a dtype or its name).  `x` is read as it is and converted row by
        row, never as a whole copy (float64 beyond float32's range becomes
        ``+-inf``).  float16 and bfloat16 compute in float32 and round the
        result; long double computes in float64.  Other dtypes raise TypeError.
    out : ndarray, optional
        Array with the result's shape to write into: any floating dtype
        (float16/32/64, longdouble, ``ml_dtypes.bfloat16``); a dtype other than
        the computation dtype receives the result rounded to it.  Its elements
        must not overlap in memory.  With `return_sign`, `out` receives the
        values; the signs come in a new array.

    Returns
    -------
    numpy scalar or ndarray, or a pair of them
        float32 for float32/16-bit inputs, else float64 (or `dtype`).  A NumPy
        scalar when the result is 0-d and `out` is not given; `out` when given.
        With `return_sign`, ``(value, sign)``.

    Raises
    ------
    TypeError
        Complex, object or string `x` or `b`; a non-float `dtype`; non-float or
        non-array `out`; an `axis` that is not an int, tuple of ints or None.
    ValueError
        `axis` out of range (``numpy.exceptions.AxisError``) or repeated; `b`
        not broadcastable against `x` (both shapes named); `out` of the wrong
        shape, read-only, or self-overlapping.  Nothing is written then.

    Notes
    -----
    An empty axis gives ``-inf`` (the log of an empty sum).  Rows with ``+inf``
    give ``+inf``; rows whose entries are all ``-inf`` give ``-inf``; NaN gives NaN.

    With `b` (SciPy's semantics): the terms at the row maximum are summed apart
    so that tiny remaining terms keep their precision (``log|w| + log1p(rest /
    w)``); an exact zero sum gives ``-inf`` with sign 0.  ``+inf`` entries give
    ``+inf`` with the sign of the sum of their `b`, NaN if those cancel
    (SciPy also gives NaN when their `b` differ in sign without cancelling).
    The sign of a row with no classes is 0 (SciPy returns -1, the sign of
    ``-inf``, for an empty array).  Rows are read in bounded blocks with NumPy:
    `b` is broadcast as a view, never copied whole.

    Tuple axes that merge into one strided axis (e.g. the trailing axes of a
    C-contiguous array) are one long row read in place; other tuples are read
    in place in bounded blocks of rows, never as a transposed copy.

    Examples
    --------
    >>> import numpy as np, xent
    >>> xent.logsumexp(np.array([[0.0, 0.0], [1000.0, 1000.0]])).round(4).tolist()
    [0.6931, 1000.6931]
    >>> float(xent.logsumexp(np.zeros(4, dtype=np.float32), axis=None))
    1.3862943649291992

    Several axes at once, with the reduced axes kept:

    >>> xent.logsumexp(np.zeros((2, 3, 4)), axis=(0, 2), keepdims=True).shape
    (1, 3, 1)

    Scale factors and the sign of the sum, as in SciPy:

    >>> xent.logsumexp([1.0, 2.0], b=[1.0, -1.0], return_sign=True)
    (np.float64(1.5413248546129181), np.float64(-1.0))
    >>> xent.logsumexp([1.0, 2.0], b=[1.0, -1.0])
    np.float64(nan)
    >>> xent.logsumexp(np.log([2.0, 3.0, 5.0]), b=[1, 0, 1])  # b == 0 leaves 3 out
    np.float64(1.9459101490553132)

    A computation dtype other than the input's (no copy of x is made):

    >>> xent.logsumexp(np.arange(3.0), dtype=np.float32)
    np.float32(2.407606)
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
    a = inputs.array
    if not axes:  # a 0-d x or axis=(): a trailing class axis of length 1
        a, axes = with_class_axis(a, axes)
    compute = inputs.compute
    v = merged_view(a, axes) if inputs.readable else None
    if v is None:
        target = np.empty(reduced_shape(a.shape, axes, False), compute)
        _rows_in_blocks(_kernels.LOGSUMEXP, a, axes, compute, inputs.readable, target)
        return target.reshape(shape)
    outer, inner = v.shape[0], v.shape[2]
    if inner > 1 and _other_precision(v, compute):
        target = np.empty((outer, inner), compute)
        _converted_blocks(_kernels.LOGSUMEXP, v, target, compute)
        return target.reshape(shape)
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
        if value.dtype is not result and value.dtype != result:
            value = rounded(value, result)
        res = _scalar_or_array(value)
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
    a3, class_axes3, out3 = a, axes, out
    if not axes:  # a 0-d x or axis=(): a trailing class axis of length 1
        a3, class_axes3 = with_class_axis(a, axes)
        out3 = None if out is None else with_class_axis(out, axes)[0]
    compute = inputs.compute
    v = merged_view(a3, class_axes3) if inputs.readable else None
    if v is not None and v.shape[2] > 1 and _other_precision(v, compute):
        direct = None
        if out3 is not None and _writes_in_place(out3, a3):
            direct = merged_view(out3, class_axes3)
        if direct is not None:
            _converted_blocks(op, v, direct, compute)
            return out
        result = np.empty(a.shape, compute)
        _converted_blocks(op, v, result.reshape(v.shape), compute)
    elif v is not None:
        # One strided class axis: the kernels read x in place.
        if out3 is not None and out3.dtype == compute and _writes_in_place(out3, a3):
            direct = merged_view(out3, class_axes3)
            if direct is not None:
                run_normalizer(op, v, direct, threads_for(v.size))
                return out
        result = np.empty(a.shape, compute)  # C order: v's shape is a view of it
        run_normalizer(op, v, result.reshape(v.shape), threads_for(v.size))
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
    if dtype is not None and result.dtype != inputs.result:
        result = rounded(result, inputs.result)  # a 16-bit or long double dtype=
    return _scalar_or_array(result)


def log_softmax(x, axis=-1, *, dtype=None, out=None):
    """Logarithm of softmax over one or more axes: ``x - logsumexp(x, axis, keepdims=True)``.

    Computed per row as ``(x - max) - log(sum(exp(x - max)))`` in one fused pass,
    which stays exact for huge logits (``[1e30, 0]`` gives ``[0, -1e30]``).
    A drop-in for ``scipy.special.log_softmax`` (whose `axis` defaults to None)
    and ``torch.log_softmax`` (``dim`` -> `axis`).

    Parameters
    ----------
    x : array_like
        Logits (see `logsumexp` for the dtype rules).
    axis : int, tuple of ints or None, optional
        The class axis (default: the last; any axis works without transposing),
        several axes whose elements are the classes together, or None (the whole
        array).  ``()`` and a 0-d `x` (axis 0, -1, None or ``()``) make every
        element a class of its own: 0, or NaN for ``-inf`` and NaN.
    dtype : dtype, optional
        The computation and result dtype (as PyTorch's ``dtype=``), see
        `logsumexp`: x is converted row by row, never as a whole copy.
    out : ndarray, optional
        Array of ``x``'s shape to write into (any floating dtype; the result is
        computed in the computation dtype and rounded to out's); may be ``x``
        itself.

    Returns
    -------
    ndarray or numpy scalar
        Same shape as `x`; float32 for float32/16-bit inputs, else float64, or
        `dtype` (or `out`).  A NumPy scalar for a 0-d `x` without `out`.

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

    Classes over two axes, and a float64 result from float32 logits:

    >>> xent.log_softmax(np.zeros((2, 1, 2)), axis=(0, 2)).round(4).tolist()
    [[[-1.3863, -1.3863]], [[-1.3863, -1.3863]]]
    >>> xent.log_softmax(np.zeros(2, np.float32), dtype=np.float64)
    array([-0.69314718, -0.69314718])
    """
    return _normalize(_kernels.LOG_SOFTMAX, x, axis, dtype, out)


def softmax(x, axis=-1, *, dtype=None, out=None):
    """Softmax over one or more axes: ``exp(x - logsumexp(x, axis, keepdims=True))``.

    A drop-in for ``scipy.special.softmax`` (whose `axis` defaults to None) and
    ``torch.softmax`` (``dim`` -> `axis`).

    Parameters
    ----------
    x : array_like
        Logits (see `logsumexp` for the dtype rules).
    axis : int, tuple of ints or None, optional
        The class axis (default: the last), several axes whose elements are the
        classes together, or None (the whole array).  ``()`` and a 0-d `x`
        (axis 0, -1, None or ``()``) make every element a class of its own:
        1, or NaN for ``-inf`` and NaN.
    dtype : dtype, optional
        The computation and result dtype (as PyTorch's ``dtype=``), see
        `logsumexp`: x is converted row by row, never as a whole copy.
    out : ndarray, optional
        Array of ``x``'s shape to write into (any floating dtype; the result is
        computed in the computation dtype and rounded to out's); may be ``x``
        itself.

    Returns
    -------
    ndarray or numpy scalar
        Same shape as `x`, each row summing to 1; float32 for float32/16-bit
        inputs, else float64, or `dtype` (or `out`).  A NumPy scalar for a 0-d
        `x` without `out`.

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
    >>> xent.softmax(1000, axis=None)  # a 0-d input is one class
    np.float64(1.0)
    >>> xent.softmax(np.zeros((2, 2)), axis=(0, 1), dtype="float32")
    array([[0.25, 0.25],
           [0.25, 0.25]], dtype=float32)
    """
    return _normalize(_kernels.SOFTMAX, x, axis, dtype, out)


# The call with every default (``logsumexp(x)``, ``softmax(x)``): the public function
# calls the compiled path directly (xent._runtime.namespaces), saving this module's
# Python for the commonest small call.  It takes exact NumPy arrays only, so its
# result is NumPy's by the namespace rule, and it runs the kernels' job and path
# with the general path's strides: the same bits.
for _function, _op in ((logsumexp, _kernels.LOGSUMEXP), (log_softmax, _kernels.LOG_SOFTMAX),
                       (softmax, _kernels.SOFTMAX)):
    _function.defaults_fast_path = (
        _kernels.normalize_small, (*signature_defaults(_function, "axis"), _op, threads_for)
    )
del _function, _op

# The arguments whose values set the computation dtype when dtype=None: arrays of
# another namespace promote as that namespace does (xent._runtime.namespaces).
logsumexp.dtype_from = ("x", "b")
log_softmax.dtype_from = softmax.dtype_from = ("x",)
