"""Input coercion and checks shared by every public function.

All of this runs before any kernel, so a call that raises has written nothing.
Error messages name the argument and the offending value, dtype or shape.
"""

import math

import numpy as np

from xent._runtime.dispatch import kernels as _kernels
from xent._runtime.integers import as_integer

# What a logits-like array is computed as.  16-bit floats are read in place and
# converted inside the kernels (no upcast copy).
FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)


class Logits:
    """A validated floating input: the array the kernels read and how to read it.

    Attributes
    ----------
    array : ndarray
        float32/float64 (native byte order), or float16/bfloat16 as given.
    compute : numpy.dtype
        float32 or float64: the precision of the arithmetic and of array outputs.
    half : str or None
        None, "float16" or "bfloat16".
    """

    __slots__ = ("array", "compute", "half")

    def __init__(self, array, compute, half):
        self.array = array
        self.compute = compute
        self.half = half


def as_logits(x, name):
    """np.asarray plus the SPEC's dtype policy; raises TypeError for non-numeric data."""
    a = np.asarray(x)
    dt = a.dtype
    if dt == FLOAT32 or dt == FLOAT64:
        return Logits(a, dt, None)
    if dt.kind == "f" and dt.itemsize == 2:  # float16, any byte order
        if not dt.isnative:
            a = a.astype(dt.newbyteorder("="))
        return Logits(a, FLOAT32, "float16")
    if dt.name == "bfloat16":  # ml_dtypes.bfloat16
        return Logits(a, FLOAT32, "bfloat16")
    if dt.kind == "f":
        # Non-native float32/float64, or long double: computed in float64/float32.
        target = FLOAT32 if dt.itemsize == 4 else FLOAT64
        return Logits(rounded(a, target), target, None)
    if dt.kind in "iub":
        # Integer and bool logits become float64, as NumPy's ufuncs would make them.
        return Logits(a.astype(FLOAT64), FLOAT64, None)
    raise TypeError(
        f"{name}: unsupported dtype {dt} (expected a real floating, integer or bool array)"
    )


def normalize_axis(axis, ndim, name="axis"):
    """Return `axis` as an index in [0, ndim); ValueError (AxisError) if out of range."""
    ax = as_integer(axis, name, "an integer or None")
    if not -ndim <= ax < ndim:
        raise np.exceptions.AxisError(
            f"{name}={ax} is out of bounds for an array of dimension {ndim}"
        )
    return ax % ndim


def view_3d(a, axis):
    """View `a` as (outer, C, inner) around `axis` without copying, or None.

    None means the outer or inner dimensions cannot be merged for this stride
    pattern (or a stride is not a whole number of items); callers then copy.
    """
    shape = a.shape
    outer = math.prod(shape[:axis])
    inner = math.prod(shape[axis + 1 :])
    try:
        v = a.reshape((outer, shape[axis], inner), copy=False)
    except ValueError:
        return None
    if not a.flags.c_contiguous:  # (C-contiguous strides are whole items)
        size = v.itemsize
        s0, s1, s2 = v.strides
        if s0 % size or s1 % size or s2 % size:
            return None
    return v


def input_3d(a, axis):
    """Like view_3d, but copies (C order, same axes) when a view is impossible."""
    v = view_3d(a, axis)
    if v is None:
        v = view_3d(np.ascontiguousarray(a), axis)
    return v


def is_float_dtype(dt):
    """True for the dtypes `out=`/`grad_out=` may have: NumPy's floats and bfloat16."""
    return dt.kind == "f" or dt.name == "bfloat16"


def has_internal_overlap(a):
    """True when two distinct elements of `a` share a byte (a self-overlapping view).

    Exact.  Dimensions of length <= 1 are irrelevant.  A zero stride on a longer
    dimension overlaps (the usual case: ``as_strided``/``broadcast_to`` views).
    Otherwise, with the dimensions sorted by |stride|, no overlap is certain when
    each |stride| is at least the byte extent of all the smaller dimensions
    together (itemsize + sum |s_j| (n_j - 1)): then the offsets form a
    mixed-radix number system with distinct values at least an item apart.
    When that sufficient test fails (interleaved strides, rare), the element
    offsets are enumerated, sorted and checked for gaps of at least an item:
    O(size log size), paid only for such arrays.
    """
    if a.flags.c_contiguous or a.flags.f_contiguous:  # the usual case, in O(1)
        return False
    dims = [(abs(s), n) for s, n in zip(a.strides, a.shape) if n > 1]
    if a.size == 0 or not dims:
        return False
    if any(s == 0 for s, _ in dims):
        return True
    dims.sort()
    extent = a.itemsize
    for s, n in dims:
        if s < extent:
            break
        extent += s * (n - 1)
    else:
        return False
    offsets = np.zeros(1, dtype=np.int64)
    for s, n in dims:
        offsets = (offsets[:, None] + np.arange(n, dtype=np.int64) * s).reshape(-1)
    offsets.sort()
    return bool(np.any(np.diff(offsets) < a.itemsize))


def check_out(out, shape, name="out"):
    """Validate a caller's output array for a result of `shape`.

    Any floating dtype is accepted (float16/32/64, longdouble, ml_dtypes'
    bfloat16): the result is computed in the computation dtype and rounded to
    `out`'s dtype when they differ.
    """
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, but the result has shape {tuple(shape)}")
    if not is_float_dtype(out.dtype):
        raise TypeError(f"{name}: expected a floating dtype, got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name}: the array is read-only")
    if has_internal_overlap(out):
        raise ValueError(
            f"{name}: its elements overlap in memory (shape {out.shape}, strides "
            f"{out.strides}); each element of an output needs its own memory"
        )


def kernel_out(out, compute, axis, source):
    """The array a kernel writes for the caller's `out`, or None if it needs a temporary.

    The kernel may write `out` directly when it has the computation dtype in native
    byte order, can be viewed as 3-D around `axis`, and either shares no memory with
    `source` (the array the kernel reads) or is that very array (in place).
    """
    if out.dtype != compute:
        return None
    v = view_3d(out, axis)
    if v is None:
        return None
    if np.may_share_memory(out, source):
        same = (
            out.__array_interface__["data"][0] == source.__array_interface__["data"][0]
            and out.strides == source.strides
            and out.shape == source.shape
        )
        if not same:
            return None
    return v


# ---- losses -----------------------------------------------------------------

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction, allowed=REDUCTIONS):
    """ValueError unless `reduction` is one of `allowed`."""
    if not isinstance(reduction, str) or reduction not in allowed:
        choices = ", ".join(repr(r) for r in allowed)
        raise ValueError(f"reduction: expected one of {choices}, got {reduction!r}")


def check_same_shape(a, b, name_a, name_b):
    """ValueError naming both arguments and shapes unless a.shape == b.shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} has shape {b.shape}, but {name_a} has shape {a.shape}; they must match"
        )


def as_real_array(y, name):
    """np.asarray for a real-valued argument (targets, weights); TypeError otherwise."""
    a = np.asarray(y)
    if a.dtype.kind not in "fiub" and a.dtype.name != "bfloat16":
        raise TypeError(f"{name}: unsupported dtype {a.dtype} (expected real numbers)")
    return a


def _interval(low, high, low_open):
    """The interval check_scalar accepts, as printed in its errors: "[0, 1]", "(0, inf)"."""
    def fmt(v):
        return "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:g}"

    left = "(" if low_open or low == -math.inf else "["
    right = ")" if high == math.inf else "]"
    return f"{left}{fmt(low)}, {fmt(high)}{right}"


def check_scalar(value, name, low=-math.inf, high=math.inf, *, low_open=False):
    """`value` as a finite float in [low, high] (or (low, high] with `low_open`).

    A real number: Python int/float, a NumPy integer or floating scalar (or 0-d
    array), or any object with ``__float__``.  Strings (even numeric ones),
    bytes, bools and complex numbers raise TypeError naming `name`; NaN, +-inf
    and values outside the interval raise ValueError naming `name` and the
    interval.
    """
    numpy_obj = isinstance(value, (np.ndarray, np.generic))
    if (
        isinstance(value, (bool, np.bool_, str, bytes, bytearray))
        or (numpy_obj and (value.dtype.kind not in "iuf" or value.ndim != 0))
    ):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    try:
        v = float(value)
    except OverflowError:  # a Python int beyond float's range
        v = math.inf if value > 0 else -math.inf
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a real number, got {value!r}") from None
    ok = (low < v if low_open else low <= v) and v <= high and math.isfinite(v)
    if not ok:
        raise ValueError(
            f"{name}: expected a value in {_interval(low, high, low_open)}, got {value!r}"
        )
    return v


def rounded(values, dtype):
    """`values` (results in float64: an array or a scalar) in `dtype`, the
    computation or output dtype.  A value beyond `dtype`'s range becomes +-inf,
    which is the intended result: without NumPy's "overflow encountered in cast"
    warning (a library call leaks no warnings from its internals)."""
    with np.errstate(over="ignore"):
        if isinstance(values, np.ndarray):
            return values.astype(dtype)
        return np.dtype(dtype).type(values)


def copy_rounded(dst, src):
    """np.copyto(dst, src, casting="same_kind"): a result rounded to the caller's
    `out=`/`grad_out=` dtype, +-inf beyond its range, without a warning."""
    with np.errstate(over="ignore"):
        np.copyto(dst, src, casting="same_kind")


def xlogy_terms(coef, nll):
    """coef * nll elementwise for a loss term coefficient * (-log p): 0 where the
    coefficient is 0 (0 * log 0 = 0, SPEC), unless nll is NaN (NaN reaches
    everything computed from its row), with no floating-point warning."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where((coef == 0) & ~np.isnan(nll), 0.0, coef * nll)


def check_grad_out(grad_out, shape, return_grad):
    """Validate `grad_out` (only meaningful with return_grad=True)."""
    if grad_out is None:
        return
    if not return_grad:
        raise ValueError("grad_out: given, but return_grad is False")
    check_out(grad_out, shape, name="grad_out")


# ---- storage descriptions for the loss kernels ----------------------------------

# The storage codes the kernels read, by dtype name (XENT_KIND_* / XENT_INDEX_*,
# defined in C and exported by the kernel module).
_FLOAT_KINDS = _kernels.FLOAT_KINDS
_FLOAT_KIND_BY_DTYPE = {np.dtype(n): k for n, k in _FLOAT_KINDS.items() if n != "bfloat16"}
_INDEX_CODES = _kernels.INDEX_CODES


def float_kind(a):
    """Storage kind of a native float32/float64/float16/bfloat16 array."""
    kind = _FLOAT_KIND_BY_DTYPE.get(a.dtype)
    return kind if kind is not None else _FLOAT_KINDS[a.dtype.name]


def as_float_storage(a, compute):
    """`a` if the kernels can read its storage, else a native copy in `compute`."""
    if a.dtype.name in _FLOAT_KINDS and a.dtype.isnative:
        return a
    return rounded(a, compute)


def index_storage(t):
    """(native-order integer array, XENT_INDEX code) for class indices `t`."""
    if not t.dtype.isnative:
        t = t.astype(t.dtype.newbyteorder("="))
    code = _INDEX_CODE_BY_DTYPE.get(t.dtype)
    if code is None:  # platform integer types with other names (intc, longlong, ...)
        code = _INDEX_CODES[f"{'u' if t.dtype.kind == 'u' else ''}int{8 * t.dtype.itemsize}"]
    return t, code


_INDEX_CODE_BY_DTYPE = {np.dtype(name): code for name, code in _INDEX_CODES.items()}

_INT64_MAX = int(np.iinfo(np.int64).max)


def check_index_targets(t, logits_shape, ax, name="target"):
    """Class-index targets `t` (a NumPy or dask array) for logits of `logits_shape`
    with class axis `ax`: TypeError unless an integer dtype, ValueError unless the
    logits' shape without that axis (which is returned)."""
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class indices, got dtype {t.dtype}")
    row_shape = logits_shape[:ax] + logits_shape[ax + 1 :]
    if t.shape != row_shape:
        raise ValueError(
            f"{name} has shape {t.shape}, but class indices for logits of shape "
            f"{logits_shape} (class axis {ax}) must have shape {row_shape}"
        )
    return row_shape


def check_uint64_indices(t, C, ignore_index, name="target"):
    """IndexError for uint64 class indices above INT64_MAX (`t` native uint64).

    The kernels read class indices as int64, where such a value would wrap to a
    negative number (``2**64 - 100`` would read as ``-100``, the default
    ignore_index).  Every one of them is outside ``[0, C)`` and is not
    ignore_index (which lies in int64's range), so it is an error; the message
    names the first bad index of `t`, whatever its kind.  Costs one max over
    uint64 targets only.
    """
    if t.size == 0 or int(t.max()) <= _INT64_MAX:
        return
    bad = t >= C
    if ignore_index >= 0:
        bad &= t != ignore_index
    raise bad_index_error(t, int(np.argmax(bad.reshape(-1))), C, ignore_index, name)


def bad_index_error(target, flat, C, ignore_index, name="target"):
    """IndexError naming the index at flat position `flat` of `target` and its position."""
    pos = np.unravel_index(flat, target.shape)
    position = tuple(int(p) for p in pos)
    return IndexError(
        f"{name}: class index {target[pos]} at position {position} is outside [0, {C}) "
        f"and is not ignore_index={ignore_index}"
    )


def check_ignore_index(ignore_index):
    """ignore_index as a Python int in int64's range (the kernels compare class
    indices as int64): TypeError for a non-integer, ValueError outside."""
    value = as_integer(ignore_index, "ignore_index")
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise ValueError(
            f"ignore_index: expected an integer in int64's range [{-_INT64_MAX - 1}, "
            f"{_INT64_MAX}], got {value}"
        )
    return value


def class_weights(weight, C, compute, name="weight"):
    """None, or `weight` as a contiguous (C,) array of the computation dtype."""
    if weight is None:
        return None
    w = as_real_array(weight, name)
    if w.shape != (C,):
        raise ValueError(f"{name} has shape {w.shape}, expected ({C},): one value per class")
    with np.errstate(over="ignore"):  # beyond float32's range: +-inf, as intended
        return np.ascontiguousarray(w, dtype=compute)


def grad_target(grad_out, shape, compute, axis, readers, logits_source):
    """(3-D array the kernel writes the gradient into, array to return).

    Writes `grad_out` directly when it has the computation dtype, a 3-D view,
    and shares memory with none of `readers` except being exactly
    `logits_source` (in place); otherwise a fresh array (copied into grad_out
    afterwards by `finish_grad`).
    """
    if grad_out is not None:
        direct = kernel_out(grad_out, compute, axis, logits_source)
        if direct is not None and not any(
            r is not None and np.may_share_memory(grad_out, r) for r in readers
        ):
            return direct, grad_out
    result = np.empty(shape, compute)
    return view_3d(result, axis), result


def finish_grad(grad_out, result):
    """Copy a gradient computed in a temporary into the caller's grad_out."""
    if grad_out is None or result is grad_out:
        return result
    copy_rounded(grad_out, result)
    return grad_out
