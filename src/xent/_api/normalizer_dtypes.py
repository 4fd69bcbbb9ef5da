"""Which dtype a normaliser computes in and returns (its `dtype=` argument).

x is never converted as a whole: the kernels read float32, float64, float16 and
bfloat16 storage (native byte order) row by row into the computation dtype;
other inputs (integers, bool, long double, byte-swapped floats) are converted
block of rows by block of rows (see class_axes.RowBlocks).
"""

import numpy as np

from xent._api.validation import FLOAT32, FLOAT64, is_float_dtype
from xent._runtime.dispatch import kernels as _kernels

_READABLE = frozenset(_kernels.FLOAT_KINDS)


class Inputs:
    """x as given, how the normaliser computes, and what it returns.

    Attributes
    ----------
    array : ndarray
        ``np.asarray(x)``, not converted.
    compute : numpy.dtype
        float32 or float64: the precision of the arithmetic.
    result : numpy.dtype
        The dtype of a result allocated by the call (`compute`, or the 16-bit /
        long double `dtype=` the caller asked for, rounded from `compute`).
    readable : bool
        True when the kernels read `array`'s storage in place.
    """

    __slots__ = ("array", "compute", "result", "readable")

    def __init__(self, array, compute, result, readable):
        self.array = array
        self.compute = compute
        self.result = result
        self.readable = readable


def default_compute(dt):
    """The SPEC's computation dtype for input dtype `dt` (no `dtype=`): float32 for
    float32/float16/bfloat16, float64 for float64, long double, integers and bool;
    None for dtypes that are not real numbers."""
    if dt == FLOAT32 or dt == FLOAT64:
        return dt
    if is_float_dtype(dt):
        return FLOAT32 if dt.itemsize <= 4 else FLOAT64
    if dt.kind in "iub":
        return FLOAT64
    return None


def requested(dtype):
    """(compute, result) dtypes for a `dtype=` argument (a NumPy float dtype or a
    name such as "float32"): float32/float64 compute in themselves; float16 and
    bfloat16 compute in float32 and round; long double computes in float64 and
    widens.  TypeError naming `dtype` for anything else."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected a floating dtype, got {dtype!r}") from None
    if not is_float_dtype(dt):
        raise TypeError(f"dtype: expected a floating dtype, got {dtype!r}")
    dt = dt.newbyteorder("=")
    return default_compute(dt), dt


#: (computation dtype, readable by the kernels) by input dtype, filled on first
#: use: a dict lookup per call instead of dtype.name (a string built each time).
_POLICY = {}


def read_inputs(x, dtype, name="x"):
    """Inputs for `x` and the caller's `dtype=` (None: the SPEC's default)."""
    a = np.asarray(x)
    dt = a.dtype
    policy = _POLICY.get(dt)
    if policy is None:
        compute = default_compute(dt)
        if compute is None:
            raise TypeError(
                f"{name}: unsupported dtype {dt} (expected a real floating, integer or "
                "bool array)"
            )
        policy = _POLICY[dt] = (compute, dt.isnative and dt.name in _READABLE)
    compute, readable = policy
    if dtype is None:
        return Inputs(a, compute, compute, readable)
    compute, result = requested(dtype)
    return Inputs(a, compute, result, readable)
