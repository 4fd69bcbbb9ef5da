"""Tests for xent.logsumexp, xent.log_softmax and xent.softmax.

Every value is checked against something independent of xent: the float64 NumPy
references in references.py, hard-coded values, mpmath at 50 digits, or SciPy.  The only
xent-vs-xent comparisons are thread-count determinism and in-place vs out-of-place.
"""

import math
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import xent
from helpers import (
    assert_close,
    assert_same_bits_for_thread_counts,
    bitwise_equal,
    computation_dtype,
    finite_scale,
    tolerances,
)
from references import ref_log_softmax, ref_logsumexp, ref_softmax

inf = np.inf
nan = np.nan

FUNCS = ["logsumexp", "log_softmax", "softmax"]
ROW_FUNCS = ["log_softmax", "softmax"]  # same shape as the input
KIND = {"logsumexp": "lse", "log_softmax": "log_softmax", "softmax": "softmax"}


def ref(func, x, axis=-1, keepdims=False):
    if func == "logsumexp":
        return ref_logsumexp(x, axis, keepdims)
    if func == "log_softmax":
        return ref_log_softmax(x, axis)
    return ref_softmax(x, axis)


def call(func, x, axis=-1, **kwargs):
    return getattr(xent, func)(x, axis=axis, **kwargs)


def result_shape(func, shape, axis, keepdims=False):
    if func != "logsumexp":
        return tuple(shape)
    if axis is None:
        return (1,) * len(shape) if keepdims else ()
    ax = axis % len(shape)
    if keepdims:
        return tuple(1 if i == ax else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i != ax)


def make_logits(rng, shape, dtype, scale=4.0):
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind == "u":
        return rng.integers(0, 40, size=shape).astype(dtype)
    if dtype.kind == "i":
        return rng.integers(-30, 30, size=shape).astype(dtype)
    return (rng.standard_normal(shape) * scale).astype(dtype)


def with_layout(x, layout, readonly=False):
    """A copy of ``x`` with the requested memory layout (values unchanged)."""
    if layout == "C":
        y = np.array(x, order="C", copy=True)
    elif layout == "F":
        y = np.array(x, order="F", copy=True)
        if x.ndim > 1 and x.size > 1 and min(x.shape) > 1:
            assert not y.flags.c_contiguous
    elif layout == "strided":
        # every axis stepped by 2, the first one reversed (negative stride)
        big = np.zeros(tuple(2 * s for s in x.shape), dtype=x.dtype)
        sl = (slice(None, None, -2),) + (slice(None, None, 2),) * (x.ndim - 1)
        y = big[sl]
        y[...] = x
        assert not y.flags.c_contiguous and not y.flags.f_contiguous
    else:  # pragma: no cover
        raise ValueError(layout)
    if readonly:
        y.flags.writeable = False
    return y


def check_result(func, res, x, axis, comp, out_dtype, keepdims=False):
    expected = ref(func, x, axis, keepdims)
    assert np.shape(res) == np.shape(expected)
    rtol, atol = tolerances(KIND[func], comp, out_dtype, finite_scale(x))
    assert_close(res, expected, rtol, atol, err_msg=f"{func} axis={axis}")


# ---------------------------------------------------------------------------
# the references themselves (so that a wrong reference cannot hide a bug)
# ---------------------------------------------------------------------------

E = math.e
S0 = 1 + E + E**2
L0 = math.log(S0)
L7 = math.log(E + E**2 + E**3 + E**4)
NONFINITE_ROWS = np.array(
    [
        [0.0, -inf, 1.0, 2.0],
        [inf, 0.0, 1.0, -inf],
        [inf, inf, -inf, 2.0],
        [nan, 0.0, 1.0, 2.0],
        [1.0, nan, inf, -inf],
        [-inf, -inf, -inf, -inf],
        [inf, inf, inf, inf],
        [1.0, 2.0, 3.0, 4.0],
        [-inf, -inf, 5.0, -inf],
        [0.0, 0.0, 0.0, nan],
    ]
)
NONFINITE_LSE = np.array([L0, inf, inf, nan, nan, -inf, inf, L7, 5.0, nan])
NONFINITE_LSM = np.array(
    [
        [-L0, -inf, 1 - L0, 2 - L0],
        [0.0, -inf, -inf, -inf],
        [-math.log(2), -math.log(2), -inf, -inf],
        [nan] * 4,
        [nan] * 4,
        [nan] * 4,
        [-math.log(4)] * 4,
        [1 - L7, 2 - L7, 3 - L7, 4 - L7],
        [-inf, -inf, 0.0, -inf],
        [nan] * 4,
    ]
)
NONFINITE_SM = np.array(
    [
        [1 / S0, 0.0, E / S0, E**2 / S0],
        [1.0, 0.0, 0.0, 0.0],
        [0.5, 0.5, 0.0, 0.0],
        [nan] * 4,
        [nan] * 4,
        [nan] * 4,
        [0.25] * 4,
        [math.exp(k - L7) for k in (1, 2, 3, 4)],
        [0.0, 0.0, 1.0, 0.0],
        [nan] * 4,
    ]
)


def test_references_match_hand_computed_values():
    assert_close(ref_logsumexp(NONFINITE_ROWS), NONFINITE_LSE, 1e-15, 0)
    assert_close(ref_log_softmax(NONFINITE_ROWS), NONFINITE_LSM, 1e-15, 1e-15)
    assert_close(ref_softmax(NONFINITE_ROWS), NONFINITE_SM, 1e-15, 0)
    # axis handling of the references
    assert_close(ref_logsumexp(NONFINITE_ROWS.T, axis=0), NONFINITE_LSE, 1e-15, 0)
    assert_close(ref_softmax(NONFINITE_ROWS.T, axis=0), NONFINITE_SM.T, 1e-15, 0)
    x = np.arange(6.0).reshape(2, 3)
    assert ref_logsumexp(x, axis=None) == pytest.approx(
        math.log(sum(math.exp(v) for v in range(6))), rel=1e-15
    )
    assert ref_logsumexp(x, axis=None, keepdims=True).shape == (1, 1)
    assert ref_logsumexp(x, axis=0, keepdims=True).shape == (1, 3)
    assert ref_logsumexp(np.zeros((3, 0))).tolist() == [-inf] * 3
    assert ref_log_softmax(np.array([[1e30, 0.0]])).tolist() == [[0.0, -1e30]]


# ---------------------------------------------------------------------------
# the main matrix: dtype x axis x layout x read-only x out= x threads
# ---------------------------------------------------------------------------

MATRIX_DTYPES = [np.float16, np.float32, np.float64, np.int64, np.bool_]
MATRIX_CASES = [
    ((7, 13), 0),
    ((7, 13), -1),
    ((7, 13), None),
    ((3, 5, 6), 1),
    ((2, 3, 4, 5), -3),  # NCHW-like, class axis 1 given as a negative int
    ((4, 5, 3), 0),
]


@pytest.mark.parametrize("out_kind", ["no_out", "out_same", "out_other"])
@pytest.mark.parametrize("readonly", [False, True], ids=["rw", "ro"])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize(
    "shape,axis", MATRIX_CASES, ids=[f"{'x'.join(map(str, s))}-ax{a}" for s, a in MATRIX_CASES]
)
@pytest.mark.parametrize("dtype", MATRIX_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("func", FUNCS)
def test_matrix(func, dtype, shape, axis, layout, readonly, out_kind, num_threads):
    rng = np.random.default_rng(zlib.crc32(repr((func, np.dtype(dtype).name, shape)).encode()))
    x0 = make_logits(rng, shape, dtype)
    x = with_layout(x0, layout, readonly)
    saved = x.copy()
    comp = computation_dtype(dtype)
    rshape = result_shape(func, shape, axis)

    kwargs = {}
    out = None
    if out_kind != "no_out":
        if out_kind == "out_same":
            out_dtype = comp
        else:  # float64 out for float32 computation, float32 out for float64
            out_dtype = np.dtype(np.float64 if comp == np.float32 else np.float32)
        out = np.full(rshape, 7777.0, dtype=out_dtype)
        kwargs["out"] = out

    res = call(func, x, axis, **kwargs)

    if out is not None:
        assert res is out
        res_dtype = out.dtype
    else:
        if func == "logsumexp" and axis is None:
            assert isinstance(res, np.generic) and not isinstance(res, np.ndarray)
            assert type(res) is comp.type
        else:
            assert isinstance(res, np.ndarray)
        assert res.dtype == comp
        res_dtype = comp
    assert np.shape(res) == rshape
    check_result(func, res, x0, axis, comp, res_dtype)
    assert bitwise_equal(x, saved), "input was modified"
    assert x.flags.writeable == (not readonly)


def test_default_axis_is_last(rng):
    x = make_logits(rng, (4, 6, 5), np.float64)
    for func in FUNCS:
        res = getattr(xent, func)(x)
        check_result(func, res, x, -1, np.float64, np.float64)
        # axis given positionally
        res0 = getattr(xent, func)(x, 0)
        check_result(func, res0, x, 0, np.float64, np.float64)


@pytest.mark.parametrize("func", FUNCS)
def test_numpy_integer_axis(func, rng):
    x = make_logits(rng, (4, 6, 5), np.float64)
    res = call(func, x, np.int64(1))
    check_result(func, res, x, 1, np.float64, np.float64)


@pytest.mark.parametrize("func", FUNCS)
def test_keyword_only_arguments(func):
    x = np.zeros((2, 3))
    out = np.empty(3 if func == "logsumexp" else (2, 3))
    with pytest.raises(TypeError):
        getattr(xent, func)(x, 0, False, out) if func == "logsumexp" else getattr(xent, func)(
            x, 0, out
        )


# ---------------------------------------------------------------------------
# logsumexp: keepdims and scalar results
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_out", [False, True])
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, None])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logsumexp_keepdims(dtype, axis, with_out, rng):
    x = make_logits(rng, (3, 4, 5), dtype)
    rshape = result_shape("logsumexp", x.shape, axis, keepdims=True)
    if axis is None:
        assert rshape == (1, 1, 1)
    kwargs = {}
    if with_out:
        kwargs["out"] = np.full(rshape, 7777.0, dtype=dtype)
    res = xent.logsumexp(x, axis=axis, keepdims=True, **kwargs)
    assert isinstance(res, np.ndarray)
    assert res.shape == rshape
    assert res.dtype == dtype
    if with_out:
        assert res is kwargs["out"]
    rtol, atol = tolerances("lse", dtype, dtype, finite_scale(x))
    assert_close(res, ref_logsumexp(x, axis, keepdims=True), rtol, atol)


@pytest.mark.parametrize(
    "dtype,expected",
    [
        (np.float16, np.float32),
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.int32, np.float64),
        (np.int64, np.float64),
        (np.uint8, np.float64),
        (np.bool_, np.float64),
    ],
    ids=lambda d: np.dtype(d).name,
)
def test_logsumexp_axis_none_is_numpy_scalar(dtype, expected, rng):
    x = make_logits(rng, (5, 7), dtype)
    res = xent.logsumexp(x, axis=None)
    assert type(res) is np.dtype(expected).type
    rtol, atol = tolerances("lse", expected, expected, finite_scale(x))
    assert_close(res, ref_logsumexp(x, None), rtol, atol)


@pytest.mark.parametrize("out_dtype", [np.float32, np.float64])
def test_logsumexp_axis_none_with_0d_out(out_dtype, rng):
    x = make_logits(rng, (5, 7), np.float64)
    out = np.full((), 7777.0, dtype=out_dtype)
    res = xent.logsumexp(x, axis=None, out=out)
    assert res is out
    rtol, atol = tolerances("lse", np.float64, out_dtype, finite_scale(x))
    assert_close(out, ref_logsumexp(x, None), rtol, atol)


# ---------------------------------------------------------------------------
# other input kinds: more integer dtypes, bfloat16, byte order, lists, __array__
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype",
    [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.bool_],
    ids=lambda d: np.dtype(d).name,
)
@pytest.mark.parametrize("func", FUNCS)
def test_integer_and_bool_inputs_give_float64(func, dtype, rng):
    x = make_logits(rng, (6, 9), dtype)
    for axis in (0, -1, None):
        res = call(func, x, axis)
        assert np.asarray(res).dtype == np.float64
        check_result(func, res, x, axis, np.float64, np.float64)


def test_large_integer_logits():
    x = np.array([[2**62, 2**62 - 2**12, 0], [-(2**63), 2**63 - 1, 5]], dtype=np.int64)
    res = xent.log_softmax(x)
    assert res.dtype == np.float64
    assert_close(res, ref_log_softmax(x), 1e-12, 1e-12 * 2.0**63)


@pytest.mark.parametrize("out_dtype", [None, np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("func", FUNCS)
def test_bfloat16_input(func, layout, out_dtype, rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x0 = (rng.standard_normal((9, 33)) * 4).astype(ml_dtypes.bfloat16)
    x0[2, 5] = np.inf
    x0[4, 7] = np.nan
    x0[6, :] = -np.inf
    x = with_layout(x0, layout, readonly=True)
    for axis in (0, -1, None):
        kwargs = {}
        if out_dtype is not None:
            kwargs["out"] = np.full(result_shape(func, x.shape, axis), SENTINEL, dtype=out_dtype)
        res = call(func, x, axis, **kwargs)
        if out_dtype is None:
            assert np.asarray(res).dtype == np.float32
        else:
            assert res is kwargs["out"]
        check_result(func, res, x0, axis, np.float32, np.asarray(res).dtype)


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("dtype", [">f4", ">f8", "<f4", "<f8"])
def test_non_native_byte_order(func, dtype, rng):
    x = make_logits(rng, (5, 11), np.float64).astype(dtype)
    comp = computation_dtype(np.dtype(dtype).newbyteorder("="))
    for axis in (0, -1):
        res = call(func, x, axis)
        assert res.dtype.kind == "f" and res.dtype.itemsize == comp.itemsize
        check_result(func, res, x, axis, comp, comp)


@pytest.mark.parametrize("func", FUNCS)
def test_list_inputs(func):
    xi = [[1, 2, 3], [4, 6, 5]]
    xf = [[1.0, -2.5, 3.0], [0.25, 6.0, 5.0]]
    xb = [[True, False, True]]
    for x in (xi, xf, xb, [1.0, 2.0, 3.0]):
        res = call(func, x)
        if np.ndim(res):
            assert isinstance(res, np.ndarray)
        assert np.asarray(res).dtype == np.float64
        check_result(func, res, np.asarray(x), -1, np.float64, np.float64)


class _ArrayLike:
    """Stand-in for a CPU tensor: only exposes ``__array__``."""

    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)


@pytest.mark.parametrize("func", FUNCS)
def test_array_protocol_inputs(func, rng):
    x = make_logits(rng, (4, 7), np.float32)
    res = call(func, _ArrayLike(x), 0)
    assert np.asarray(res).dtype == np.float32
    check_result(func, res, x, 0, np.float32, np.float32)


def _unaligned(shape, dtype=np.float64):
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    buf = np.zeros(n * dtype.itemsize + 1, dtype=np.uint8)
    a = np.ndarray(shape, dtype, buffer=buf, offset=1)
    assert not a.flags.aligned
    return a


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unusual_strides(func, dtype, rng):
    """Zero strides (broadcast, read-only), reversed class axis, unaligned data."""
    cases = [
        np.broadcast_to((rng.standard_normal(9) * 3).astype(dtype), (6, 9)),  # rows repeated
        np.broadcast_to((rng.standard_normal((6, 1)) * 3).astype(dtype), (6, 9)),  # constant rows
        (rng.standard_normal((6, 9)) * 3).astype(dtype)[:, ::-1],  # reversed class axis
        (rng.standard_normal((6, 9)) * 3).astype(dtype)[::-1, ::-3],
    ]
    u = _unaligned((6, 9), dtype)
    u[...] = rng.standard_normal((6, 9)) * 3
    cases.append(u)
    for x in cases:
        for axis in (0, 1, None):
            res = call(func, x, axis)
            check_result(func, res, x, axis, dtype, dtype)
    # unaligned out=
    out = _unaligned(result_shape(func, (6, 9), 1), dtype)
    assert call(func, cases[2], 1, out=out) is out
    check_result(func, out, cases[2], 1, dtype, dtype)


@pytest.mark.parametrize("func", ROW_FUNCS)
@pytest.mark.parametrize("axis", [0, 1])
def test_out_overlapping_input_reversed(func, axis, rng):
    """out= a reversed view of the input buffer: as NumPy ufuncs, same as with a copy."""
    x0 = rng.standard_normal((5, 8)) * 3
    expected = ref(func, x0, axis)
    for flip in ((slice(None, None, -1), slice(None)), (slice(None), slice(None, None, -1))):
        x = x0.copy()
        out = x[flip]
        res = call(func, x, axis, out=out)
        assert res is out
        check_result(func, out, x0, axis, np.float64, np.float64)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-13 * finite_scale(x0))


# ---------------------------------------------------------------------------
# read-only inputs: flags and memory maps
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
def test_memmapped_readonly_npy(func, dtype, tmp_path, rng):
    x = make_logits(rng, (37, 21), dtype)
    path = tmp_path / "x.npy"
    np.save(path, x)
    m = np.load(path, mmap_mode="r")
    assert not m.flags.writeable
    comp = computation_dtype(dtype)
    for axis in (0, -1, None):
        res = call(func, m, axis)
        check_result(func, res, x, axis, comp, comp)
        # and a strided read-only view of the map
        res2 = call(func, m[::3, 1::2], axis)
        check_result(func, res2, x[::3, 1::2], axis, comp, comp)
    np.testing.assert_array_equal(np.load(path), x)


@pytest.mark.parametrize("func", FUNCS)
def test_np_memmap_readonly(func, tmp_path, rng):
    x = make_logits(rng, (16, 10), np.float32)
    path = tmp_path / "x.bin"
    x.tofile(path)
    m = np.memmap(path, dtype=np.float32, mode="r", shape=x.shape)
    res = call(func, m, 1)
    check_result(func, res, x, 1, np.float32, np.float32)


# ---------------------------------------------------------------------------
# non-finite values
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_nonfinite_rules_rows(dtype, num_threads):
    x = NONFINITE_ROWS.astype(dtype)
    comp = computation_dtype(dtype)
    lse = xent.logsumexp(x)
    lsm = xent.log_softmax(x)
    sm = xent.softmax(x)
    rtol, atol = (2e-6, 2e-6) if comp == np.float32 else (1e-14, 1e-14)
    assert_close(lse, NONFINITE_LSE, rtol, atol)
    assert_close(lsm, NONFINITE_LSM, rtol, atol)
    assert_close(sm, NONFINITE_SM, rtol, atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_rules_class_axis_first(dtype):
    x = np.ascontiguousarray(NONFINITE_ROWS.T).astype(dtype)
    rtol, atol = (2e-6, 2e-6) if dtype == np.float32 else (1e-14, 1e-14)
    assert_close(xent.logsumexp(x, axis=0), NONFINITE_LSE, rtol, atol)
    assert_close(xent.log_softmax(x, axis=0), NONFINITE_LSM.T, rtol, atol)
    assert_close(xent.softmax(x, axis=0), NONFINITE_SM.T, rtol, atol)
    # Fortran-ordered, i.e. the transpose of C-ordered rows
    xf = NONFINITE_ROWS.astype(dtype).T
    assert_close(xent.softmax(xf, axis=0), NONFINITE_SM.T, rtol, atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_rules_middle_axis(dtype):
    # (2, C=4, 5): row r of the table sits at [r // 5, :, r % 5]
    x = np.moveaxis(NONFINITE_ROWS.reshape(2, 5, 4), 2, 1).astype(dtype)
    rtol, atol = (2e-6, 2e-6) if dtype == np.float32 else (1e-14, 1e-14)
    assert_close(xent.logsumexp(x, axis=1), NONFINITE_LSE.reshape(2, 5), rtol, atol)
    assert_close(
        xent.log_softmax(x, axis=1), np.moveaxis(NONFINITE_LSM.reshape(2, 5, 4), 2, 1), rtol, atol
    )
    assert_close(
        xent.softmax(x, axis=1), np.moveaxis(NONFINITE_SM.reshape(2, 5, 4), 2, 1), rtol, atol
    )


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize(
    "special,expected_lse",
    [([nan], nan), ([inf], inf), ([inf, inf], inf), ([-inf], None), ([nan, inf], nan)],
    ids=["nan", "inf", "2inf", "neginf", "nan+inf"],
)
def test_nonfinite_axis_none(func, special, expected_lse, rng):
    x = make_logits(rng, (5, 8), np.float64)
    flat = x.reshape(-1)
    positions = [3, 39][: len(special)]
    for p, v in zip(positions, special):
        flat[p] = v
    res = call(func, x, None)
    expected = ref(func, x, None)
    if expected_lse is not None and func == "logsumexp":
        assert np.isnan(res) if np.isnan(expected_lse) else res == expected_lse
    assert_close(res, expected, 1e-12, 1e-12)


SIMD_WIDTHS = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1000, 1027]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", [inf, -inf, nan, "2inf"], ids=["inf", "-inf", "nan", "2inf"])
@pytest.mark.parametrize("C", SIMD_WIDTHS)
def test_nonfinite_at_every_position_class(C, special, dtype, rng):
    """A special value in the first, a middle, or the last (SIMD tail) slot of a row."""
    positions = sorted({0, C // 2, C - 1})
    rows = []
    for p in positions:
        r = rng.standard_normal(C) * 3
        if special == "2inf":
            r[p] = inf
            r[(p + 1) % C] = inf
        else:
            r[p] = special
        rows.append(r)
    # clean rows between the special ones: they must not be affected
    rows = [rng.standard_normal(C) * 3] + [v for r in rows for v in (r, rng.standard_normal(C))]
    x = np.array(rows).astype(dtype)
    for func in FUNCS:
        for axis, xx in ((-1, x), (0, np.ascontiguousarray(x.T))):
            res = call(func, xx, axis)
            check_result(func, res, xx, axis, dtype, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", SIMD_WIDTHS)
def test_finite_rows_every_width(C, dtype, rng):
    x = (rng.standard_normal((5, C)) * 5).astype(dtype)
    for func in FUNCS:
        for axis, xx in ((-1, x), (0, np.ascontiguousarray(x.T))):
            res = call(func, xx, axis)
            check_result(func, res, xx, axis, dtype, dtype)


# ---------------------------------------------------------------------------
# huge logits: no overflow
# ---------------------------------------------------------------------------


def test_huge_logits_1e30():
    x = np.array([[1e30, 0.0], [-1e30, 0.0], [1e30, 1e30], [-1e30, -1e30], [1e30, -1e30]])
    lse = xent.logsumexp(x)
    assert lse[0] == 1e30
    assert lse[1] == pytest.approx(0.0, abs=1e-15)
    assert lse[2] == pytest.approx(1e30, rel=1e-15)
    assert lse[3] == pytest.approx(-1e30, rel=1e-15)
    assert lse[4] == pytest.approx(1e30, rel=1e-15)
    lsm = xent.log_softmax(x)
    np.testing.assert_array_equal(lsm[0], [0.0, -1e30])
    np.testing.assert_array_equal(lsm[1], [-1e30, 0.0])
    np.testing.assert_allclose(lsm[2:4], -math.log(2), rtol=1e-14)
    assert lsm[4, 0] == 0.0 and lsm[4, 1] == pytest.approx(-2e30, rel=1e-15)
    sm = xent.softmax(x)
    np.testing.assert_allclose(sm[[0, 1, 4]], [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], rtol=1e-15, atol=0)
    np.testing.assert_allclose(sm[2:4], 0.5, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [-1, 0])
def test_huge_logits_near_max_float(dtype, axis):
    big = float(np.finfo(dtype).max) * 0.99  # ~3.37e38 for float32, ~1.78e308 for float64
    x = np.array(
        [
            [big, big, big],
            [-big, -big, -big],
            [big, -big, 0.0],
            [big, 0.0, 0.0],
            [-big, 0.0, 1.0],
        ],
        dtype=dtype,
    )
    big = float(x[0, 0])
    if axis == 0:
        x = np.ascontiguousarray(x.T)
    lse = np.asarray(xent.logsumexp(x, axis=axis), dtype=np.float64)
    lsm = xent.log_softmax(x, axis=axis)
    sm = xent.softmax(x, axis=axis)
    if axis == 0:
        lsm, sm = lsm.T, sm.T
    lsm = lsm.astype(np.float64)
    sm = sm.astype(np.float64)
    rt = 1e-6 if dtype == np.float32 else 1e-14
    assert np.isfinite(lse).all(), lse
    np.testing.assert_allclose(lse, [big, -big, big, big, 1 + math.log1p(1 / math.e)], rtol=rt)
    np.testing.assert_allclose(lsm[0], -math.log(3), rtol=rt)
    np.testing.assert_allclose(lsm[1], -math.log(3), rtol=rt)
    assert lsm[2, 0] == 0.0 and lsm[2, 2] == -big
    assert lsm[2, 1] == -inf  # -2*big is not representable: rounds to -inf
    np.testing.assert_array_equal(lsm[3], [0.0, -big, -big])
    np.testing.assert_allclose(sm[0], 1 / 3, rtol=rt)
    np.testing.assert_allclose(sm[1], 1 / 3, rtol=rt)
    np.testing.assert_array_equal(sm[2], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(sm[3], [1.0, 0.0, 0.0])
    assert sm[4, 0] == 0.0
    np.testing.assert_allclose(sm[4, 1:], [1 / (1 + math.e), math.e / (1 + math.e)], rtol=rt)


def test_huge_float16_logits():
    x = np.array([[65504.0, 65504.0], [-65504.0, 65504.0]], dtype=np.float16)
    lse = xent.logsumexp(x)
    assert lse.dtype == np.float32
    np.testing.assert_allclose(lse, [65504.0 + math.log(2), 65504.0], rtol=2.5e-7)
    lsm = xent.log_softmax(x)
    np.testing.assert_allclose(lsm[0], -math.log(2), rtol=1e-6)
    np.testing.assert_array_equal(lsm[1], [-131008.0, 0.0])
    np.testing.assert_allclose(xent.softmax(x), [[0.5, 0.5], [0.0, 1.0]], rtol=1e-6)


# ---------------------------------------------------------------------------
# empty axes, zero rows, one class, 0-d
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize(
    "shape,axis",
    [((3, 0), -1), ((0, 5), 0), ((2, 0, 4), 1), ((0, 5), -1), ((5, 0), 0), ((0, 0), 1)],
)
def test_empty_inputs(shape, axis, dtype, num_threads):
    x = np.zeros(shape, dtype=dtype)
    comp = computation_dtype(dtype)
    lse = xent.logsumexp(x, axis=axis)
    rshape = result_shape("logsumexp", shape, axis)
    assert lse.shape == rshape and lse.dtype == comp
    # an empty class axis gives -inf; zero rows give an empty result
    assert (lse == -inf).all()
    lsek = xent.logsumexp(x, axis=axis, keepdims=True)
    assert lsek.shape == result_shape("logsumexp", shape, axis, keepdims=True)
    assert (lsek == -inf).all()
    for func in ROW_FUNCS:
        res = call(func, x, axis)
        assert res.shape == shape and res.dtype == comp
    # out= on empty results
    out = np.full(rshape, 7777.0)
    assert xent.logsumexp(x, axis=axis, out=out) is out
    assert (out == -inf).all()
    out2 = np.empty(shape)
    assert xent.softmax(x, axis=axis, out=out2) is out2


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4)])
def test_empty_axis_none(shape):
    x = np.zeros(shape)
    res = xent.logsumexp(x, axis=None)
    assert isinstance(res, np.float64) and res == -inf
    assert xent.logsumexp(x, axis=None, keepdims=True).shape == (1,) * len(shape)
    for func in ROW_FUNCS:
        assert call(func, x, None).shape == shape


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
@pytest.mark.parametrize("shape,axis", [((6, 1), -1), ((1, 6), 0), ((4, 1, 3), 1), ((1,), 0)])
def test_one_class(shape, axis, dtype, rng):
    x = make_logits(rng, shape, dtype)
    comp = computation_dtype(dtype)
    lse = xent.logsumexp(x, axis=axis)
    eps = float(np.finfo(comp).eps)
    assert_close(lse, np.squeeze(x.astype(np.float64), axis=axis), 4 * eps, 4 * eps)
    np.testing.assert_allclose(xent.log_softmax(x, axis=axis), 0.0, atol=4 * np.finfo(comp).eps)
    np.testing.assert_allclose(xent.softmax(x, axis=axis), 1.0, rtol=4 * np.finfo(comp).eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_class_nonfinite(dtype):
    x = np.array([[inf], [-inf], [nan], [2.0]], dtype=dtype)
    assert_close(xent.logsumexp(x), [inf, -inf, nan, 2.0], 1e-6, 0)
    assert_close(xent.log_softmax(x), [[0.0], [nan], [nan], [0.0]], 0, 1e-6)
    assert_close(xent.softmax(x), [[1.0], [nan], [nan], [1.0]], 1e-6, 0)


def test_zero_dim_input():
    x = np.array(2.5)
    res = xent.logsumexp(x, axis=None)
    assert isinstance(res, np.float64) and res == pytest.approx(2.5, rel=1e-15)
    lsm = xent.log_softmax(x, axis=None)
    assert np.shape(lsm) == () and float(lsm) == pytest.approx(0.0, abs=1e-15)
    sm = xent.softmax(x, axis=None)
    assert np.shape(sm) == () and float(sm) == pytest.approx(1.0, rel=1e-15)
    assert xent.logsumexp(2.5, axis=None) == pytest.approx(2.5, rel=1e-15)
    # A 0-d input is one class for axis in {0, -1, None} (SPEC); other axes raise.
    for func in FUNCS:
        assert np.shape(call(func, x, -1)) == np.shape(call(func, x, 0)) == ()
        with pytest.raises(ValueError):
            call(func, x, 1)


# ---------------------------------------------------------------------------
# validation: errors, and nothing written when a call raises
# ---------------------------------------------------------------------------

SENTINEL = 1234.5


def _sentinel(shape, dtype=np.float64):
    return np.full(shape, SENTINEL if np.dtype(dtype).kind in "fc" else 7, dtype=dtype)


def _assert_untouched(out, x, x_saved):
    if out is not None and isinstance(out, np.ndarray):
        fill = _sentinel(out.shape, out.dtype)
        assert bitwise_equal(out, fill), "out= was written by a call that raised"
    assert bitwise_equal(x, x_saved), "input was modified by a call that raised"


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("axis", [2, -3, 5, 100])
def test_axis_out_of_range(func, axis):
    x = np.arange(20.0).reshape(4, 5)
    saved = x.copy()
    out = _sentinel((4,) if func == "logsumexp" else (4, 5))
    with pytest.raises(ValueError):
        call(func, x, axis)
    with pytest.raises(ValueError):
        call(func, x, axis, out=out)
    _assert_untouched(out, x, saved)


@pytest.mark.parametrize("func", FUNCS)
def test_axis_not_an_integer(func):
    x = np.arange(20.0).reshape(4, 5)
    with pytest.raises((TypeError, ValueError)):
        call(func, x, 1.0)
    with pytest.raises((TypeError, ValueError)):
        call(func, x, "1")


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize(
    "x",
    [
        np.ones((3, 4), dtype=np.complex128),
        np.ones((3, 4), dtype=np.complex64),
        np.ones((3, 4), dtype=object),
        np.full((3, 4), "a"),
        np.full((3, 4), b"a"),
    ],
    ids=["complex128", "complex64", "object", "str", "bytes"],
)
def test_unsupported_input_dtypes(func, x):
    saved = x.copy()
    out = _sentinel((3,) if func == "logsumexp" else (3, 4))
    with pytest.raises(TypeError):
        call(func, x, -1)
    with pytest.raises(TypeError):
        call(func, x, -1, out=out)
    assert (out == SENTINEL).all()
    np.testing.assert_array_equal(x, saved)


def test_unsupported_input_lists():
    with pytest.raises(TypeError):
        xent.softmax([[1 + 2j, 3.0]])
    with pytest.raises(TypeError):
        xent.logsumexp([["a", "b"]])


def _check_shape_message(excinfo, *shapes):
    msg = str(excinfo.value).replace(" ", "")
    for s in shapes:
        assert str(tuple(s)).replace(" ", "") in msg, (str(excinfo.value), s)


@pytest.mark.parametrize(
    "func,axis,keepdims,out_shape",
    [
        ("logsumexp", -1, False, (5,)),
        ("logsumexp", 0, False, (4,)),
        ("logsumexp", -1, False, (4, 1)),
        ("logsumexp", -1, True, (4,)),
        ("logsumexp", None, False, (1,)),
        ("logsumexp", None, True, ()),
        ("log_softmax", -1, None, (5, 4)),
        ("log_softmax", 0, None, (20,)),
        ("log_softmax", None, None, (20,)),
        ("softmax", -1, None, (1, 5)),
        ("softmax", 1, None, (4, 5, 1)),
    ],
)
def test_out_wrong_shape(func, axis, keepdims, out_shape):
    x = np.arange(20.0).reshape(4, 5) / 7
    saved = x.copy()
    out = _sentinel(out_shape)
    kwargs = {"out": out}
    if keepdims is not None:
        kwargs["keepdims"] = keepdims
    with pytest.raises(ValueError) as excinfo:
        call(func, x, axis, **kwargs)
    expected_shape = result_shape(func, x.shape, axis, bool(keepdims))
    _check_shape_message(excinfo, expected_shape, out_shape)
    _assert_untouched(out, x, saved)


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize(
    "out_dtype", [np.int64, np.int32, np.uint8, np.bool_, np.complex128], ids=lambda d: np.dtype(d).name
)
def test_out_non_float_dtype(func, out_dtype):
    x = np.arange(20.0).reshape(4, 5) / 7
    saved = x.copy()
    out = _sentinel((4,) if func == "logsumexp" else (4, 5), out_dtype)
    with pytest.raises(TypeError):
        call(func, x, -1, out=out)
    _assert_untouched(out, x, saved)


@pytest.mark.parametrize("func", FUNCS)
def test_out_read_only(func):
    x = np.arange(20.0).reshape(4, 5) / 7
    saved = x.copy()
    out = _sentinel((4,) if func == "logsumexp" else (4, 5))
    out.flags.writeable = False
    with pytest.raises(ValueError):
        call(func, x, -1, out=out)
    _assert_untouched(out, x, saved)


@pytest.mark.parametrize("func", FUNCS)
def test_out_not_an_ndarray(func):
    x = np.arange(20.0).reshape(4, 5) / 7
    saved = x.copy()
    shape = (4,) if func == "logsumexp" else (4, 5)
    for bad in (np.zeros(shape).tolist(), tuple(np.zeros(shape).tolist()), 0.0):
        with pytest.raises(TypeError):
            call(func, x, -1, out=bad)
    if func == "logsumexp":
        with pytest.raises(TypeError):
            xent.logsumexp(x, axis=None, out=np.float64(0.0))
    assert bitwise_equal(x, saved)


@pytest.mark.parametrize("func", FUNCS)
def test_bad_input_with_valid_out_leaves_out_untouched(func):
    """Errors found in x or axis must not leave a half-written out=."""
    x = np.arange(20.0).reshape(4, 5)
    saved = x.copy()
    out = _sentinel((4,) if func == "logsumexp" else (4, 5))
    with pytest.raises(ValueError):
        call(func, x, 7, out=out)
    with pytest.raises(TypeError):
        call(func, x.astype(np.complex128), -1, out=out)
    _assert_untouched(out, x, saved)


def test_wrong_out_leaves_inplace_input_untouched():
    """A wrong out= is detected before anything is computed, also when out aliases x."""
    x = np.arange(20.0).reshape(4, 5) / 7
    saved = x.copy()
    with pytest.raises(ValueError):
        xent.log_softmax(x, axis=5, out=x)
    assert bitwise_equal(x, saved)
    xi = np.arange(20).reshape(4, 5)
    savedi = xi.copy()
    with pytest.raises(TypeError):
        xent.softmax(xi, out=xi)
    assert bitwise_equal(xi, savedi)


# ---------------------------------------------------------------------------
# out= of other float dtypes and layouts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("in_dtype", [np.float16, np.float32, np.float64, np.int64])
@pytest.mark.parametrize("out_dtype", [np.float16, np.float32, np.float64])
def test_out_any_float_dtype(func, in_dtype, out_dtype, rng):
    x = make_logits(rng, (6, 10), in_dtype, scale=2.0)
    comp = computation_dtype(in_dtype)
    out = _sentinel(result_shape(func, x.shape, -1), out_dtype)
    res = call(func, x, -1, out=out)
    assert res is out and out.dtype == out_dtype
    check_result(func, out, x, -1, comp, out_dtype)


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("out_layout", ["F", "strided"])
@pytest.mark.parametrize("axis", [0, -1])
def test_out_non_contiguous(func, out_layout, axis, rng):
    x = make_logits(rng, (8, 12, 6) if func == "logsumexp" else (8, 12), np.float64)
    rshape = result_shape(func, x.shape, axis)
    out = with_layout(np.full(rshape, SENTINEL), out_layout)
    res = call(func, x, axis, out=out)
    assert res is out
    check_result(func, out, x, axis, np.float64, np.float64)
    if out_layout == "strided":
        # the gaps between the strided elements are not written
        base = out.base
        assert base is not None
        mask = np.ones(base.shape, bool)
        mask[(slice(None, None, -2),) + (slice(None, None, 2),) * (base.ndim - 1)] = False
        assert (base[mask] == 0).all()


# ---------------------------------------------------------------------------
# in place: out= is the input itself
# ---------------------------------------------------------------------------

INPLACE_CASES = [
    ((9, 17), -1, "C"),
    ((9, 17), 0, "C"),
    ((4, 7, 5), 1, "C"),
    ((9, 17), -1, "F"),
    ((9, 17), 0, "F"),
    ((9, 17), -1, "strided"),
    ((9, 17), 0, "strided"),
    ((6, 5), None, "C"),
    ((6, 5), None, "strided"),
    ((4096, 256), -1, "C"),
    ((64, 100, 64), 1, "C"),
]


@pytest.mark.parametrize("func", ROW_FUNCS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(
    "shape,axis,layout", INPLACE_CASES, ids=[f"{s}-{a}-{l}" for s, a, l in INPLACE_CASES]
)
def test_in_place(func, dtype, shape, axis, layout, num_threads):
    rng = np.random.default_rng(7)
    x0 = make_logits(rng, shape, dtype)
    if x0.size > 10_000:  # some non-finite rows in the big ones
        x0.reshape(-1)[[5, 700, 701, 9000]] = [nan, inf, inf, -inf]
    a = with_layout(x0, layout)  # in place
    b = with_layout(x0, layout)  # same layout, separate output
    out_b = np.empty(shape, dtype=dtype)
    rb = call(func, b, axis, out=out_b)
    assert rb is out_b
    ra = call(func, a, axis, out=a)
    assert ra is a
    assert bitwise_equal(a, out_b), "in-place result differs from the out-of-place one"
    check_result(func, a, x0, axis, computation_dtype(dtype), dtype)
    if layout == "strided":
        base = a.base
        mask = np.ones(base.shape, bool)
        mask[(slice(None, None, -2),) + (slice(None, None, 2),) * (base.ndim - 1)] = False
        assert (base[mask] == 0).all(), "in-place call wrote outside its view"


# ---------------------------------------------------------------------------
# large inputs: the multithreaded path, against the reference
# ---------------------------------------------------------------------------

LARGE_CASES = [
    ((4096, 256), -1, "C"),
    ((4096, 256), 0, "C"),
    ((64, 100, 64), 1, "C"),
    ((2048, 300), -1, "strided"),
    ((4, 100_000), -1, "C"),
    ((512, 512), None, "C"),
]


def _large_logits(shape, dtype, seed=3):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    flat = x.reshape(-1)
    n = flat.size
    flat[[n // 7, n // 3, n // 3 + 1, n // 2, n - 1]] = [nan, inf, inf, -inf, nan]
    return x


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape,axis,layout", LARGE_CASES, ids=[f"{s}-{a}-{l}" for s, a, l in LARGE_CASES]
)
def test_large_matches_reference(func, dtype, shape, axis, layout, num_threads):
    x0 = _large_logits(shape, dtype)
    if axis is None:  # a NaN would make the whole result NaN
        x0[np.isnan(x0)] = 0.0
        x0[x0 == inf] = 50.0
    x = with_layout(x0, layout)
    res = call(func, x, axis)
    check_result(func, res, x0, axis, dtype, dtype)


LONG_ROW_CASES = [
    ((2, 131_072), -1),  # LLM-sized vocabulary, class axis last
    ((131_072, 3), 0),  # class axis first
    ((2, 131_072, 3), 1),  # class axis in the middle, e.g. (batch, vocab, time)
    ((1024, 1024), None),  # 2**20 elements as one row
]


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape,axis", LONG_ROW_CASES, ids=[f"{s}-{a}" for s, a in LONG_ROW_CASES]
)
def test_long_rows_accuracy(func, dtype, shape, axis):
    """Accumulating a long row must not lose accuracy (float32 too: rtol 2e-5)."""
    rng = np.random.default_rng(21)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    res = call(func, x, axis)
    check_result(func, res, x, axis, dtype, dtype)
    if func == "softmax":  # rows sum to 1 (each p has a relative error of a few eps)
        rows = _rows_last_2d(np.asarray(res, dtype=np.float64), axis)
        sums = np.array([math.fsum(r) for r in rows])  # exact sums: only xent's error counts
        np.testing.assert_allclose(sums, 1.0, rtol=0, atol=2e-5 if dtype == np.float32 else 1e-12)


def _rows_last_2d(a, axis):
    if axis is None:
        return a.reshape(1, -1)
    a = np.moveaxis(a, axis, -1)
    return a.reshape(-1, a.shape[-1])


DETERMINISM_CASES = [
    ((4096, 256), -1),
    ((4096, 256), 0),
    ((64, 100, 64), 1),
    ((4, 262_144), -1),
    ((100_000, 3), -1),
    ((512, 512), None),
]


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(
    "shape,axis", DETERMINISM_CASES, ids=[f"{s}-{a}" for s, a in DETERMINISM_CASES]
)
def test_thread_count_determinism(func, dtype, shape, axis):
    x = _large_logits(shape, dtype, seed=11)
    if axis is None:
        x[np.isnan(x)] = 0.0
        x[x == inf] = 50.0
    assert_same_bits_for_thread_counts(lambda: call(func, x, axis), (1, 2, 3, 4), func)


# ---------------------------------------------------------------------------
# accuracy against mpmath
# ---------------------------------------------------------------------------


def _mp_rows():
    rng = np.random.default_rng(99)
    return [
        [1000.0, 0.0, -1000.0, 1e-5, 700.5],
        [-745.1, -700.0, -800.0, -710.3],
        [1e-300, 2e-300, 0.0, -1e-300],
        [709.0, 709.0, 709.0],
        [0.0, -40.0],
        [0.5, 0.5 + 1e-15, 0.5 - 1e-15, 0.5],
        [-0.1, -0.2, -0.3, -7.0, -19.0, -33.0],
        [1e6, 1e6 - 1.0, 1e6 - 30.0, 1e6 - 0.5],
        list(np.linspace(-50.0, 50.0, 257)),
        list(rng.standard_normal(1000) * 30),
        list(rng.standard_normal(33) * 0.01),
        list(-np.abs(rng.standard_normal(64) * 300)),
    ]


def _mp_exact(row, mpmath):
    mp = mpmath.mp
    with mpmath.workdps(50):
        vals = [mp.mpf(float(v)) for v in row]
        lse = mp.log(mp.fsum(mp.exp(v) for v in vals))
        lsm = [v - lse for v in vals]
        sm = [mp.exp(v) for v in lsm]
        return float(lse), [float(v) for v in lsm], [float(v) for v in sm]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("i", range(12))
def test_accuracy_against_mpmath(i, dtype):
    mpmath = pytest.importorskip("mpmath")
    row = np.array(_mp_rows()[i], dtype=dtype)
    lse_e, lsm_e, sm_e = _mp_exact(row, mpmath)  # exact for the rounded inputs
    lsm_e = np.array(lsm_e)
    sm_e = np.array(sm_e)
    eps = float(np.finfo(dtype).eps)
    rel = 1e-14 if dtype == np.float64 else 2e-6
    scale = finite_scale(row)

    lse = float(xent.logsumexp(row))
    assert abs(lse - lse_e) <= rel * max(abs(lse_e), 1.0), (lse, lse_e)
    # the same row in a batch, and along axis 0
    batch = np.stack([row, row[::-1]])
    np.testing.assert_allclose(
        xent.logsumexp(batch), lse_e, rtol=rel, atol=rel
    )
    np.testing.assert_allclose(
        xent.logsumexp(np.ascontiguousarray(batch.T), axis=0), lse_e, rtol=rel, atol=rel
    )

    lsm = xent.log_softmax(row).astype(np.float64)
    np.testing.assert_allclose(lsm, lsm_e, rtol=rel, atol=4 * eps * scale)
    sm = xent.softmax(row).astype(np.float64)
    np.testing.assert_allclose(
        sm, sm_e, rtol=rel + 4 * eps * scale, atol=float(np.finfo(dtype).smallest_normal)
    )


# ---------------------------------------------------------------------------
# SciPy as a peer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("axis", [0, 1, 2, -1, None])
def test_against_scipy(axis, dtype, rng):
    special = pytest.importorskip("scipy.special")
    x = (rng.standard_normal((5, 7, 9)) * 6).astype(dtype)
    x64 = x.astype(np.float64)
    scale = finite_scale(x)
    rtol, atol = tolerances("lse", dtype, dtype, scale)
    srtol, satol = tolerances("softmax", dtype, dtype, scale)
    for keepdims in (False, True):
        np.testing.assert_allclose(
            xent.logsumexp(x, axis=axis, keepdims=keepdims),
            special.logsumexp(x64, axis=axis, keepdims=keepdims),
            rtol=rtol,
            atol=atol,
        )
    np.testing.assert_allclose(
        xent.log_softmax(x, axis=axis), special.log_softmax(x64, axis=axis), rtol=rtol, atol=atol
    )
    np.testing.assert_allclose(
        xent.softmax(x, axis=axis), special.softmax(x64, axis=axis), rtol=srtol, atol=satol
    )


def test_against_scipy_with_neg_inf():
    special = pytest.importorskip("scipy.special")
    x = np.array([[0.0, -inf, 3.0, 1.0], [-inf, 2.0, -inf, -inf]])
    np.testing.assert_allclose(xent.logsumexp(x), special.logsumexp(x, axis=-1), rtol=1e-14)
    np.testing.assert_allclose(xent.softmax(x), special.softmax(x, axis=-1), rtol=1e-14)


# ---------------------------------------------------------------------------
# hypothesis properties
# ---------------------------------------------------------------------------


@st.composite
def finite_logits(draw, max_abs=1e4):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    width = 32 if dtype == np.float32 else 64
    elements = st.floats(
        -max_abs, max_abs, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=width
    )
    x = draw(arrays(dtype, shape, elements=elements))
    return x, axis


PROPS = settings(max_examples=60, deadline=None)


@PROPS
@given(finite_logits())
def test_prop_softmax_rows_sum_to_one(case):
    x, axis = case
    sm = xent.softmax(x, axis=axis)
    C = x.shape[axis]
    eps = float(np.finfo(x.dtype).eps)
    assert np.all(sm >= 0) and np.all(sm <= 1 + 2 * eps)
    np.testing.assert_allclose(sm.astype(np.float64).sum(axis=axis), 1.0, atol=4 * (C + 2) * eps)


@PROPS
@given(finite_logits(), st.floats(-100, 100, allow_nan=False))
def test_prop_shift_invariance(case, c):
    x, axis = case
    y = (x + x.dtype.type(c)).astype(x.dtype)
    eps = float(np.finfo(x.dtype).eps)
    scale = finite_scale(x) + abs(c) + 1.0
    np.testing.assert_allclose(
        xent.log_softmax(y, axis=axis).astype(np.float64),
        xent.log_softmax(x, axis=axis).astype(np.float64),
        rtol=0,
        atol=16 * eps * scale,
    )


@PROPS
@given(finite_logits())
def test_prop_log_softmax_is_x_minus_logsumexp(case):
    x, axis = case
    eps = float(np.finfo(x.dtype).eps)
    lse = xent.logsumexp(x, axis=axis, keepdims=True).astype(np.float64)
    expected = x.astype(np.float64) - lse
    np.testing.assert_allclose(
        xent.log_softmax(x, axis=axis).astype(np.float64),
        expected,
        rtol=0,
        atol=16 * eps * (finite_scale(x) + math.log(x.shape[axis]) + 1.0),
    )


@PROPS
@given(finite_logits())
def test_prop_softmax_is_exp_log_softmax(case):
    x, axis = case
    eps = float(np.finfo(x.dtype).eps)
    lsm = xent.log_softmax(x, axis=axis).astype(np.float64)
    np.testing.assert_allclose(
        xent.softmax(x, axis=axis).astype(np.float64),
        np.exp(lsm),
        rtol=16 * eps * (finite_scale(x) + 1.0),
        atol=float(np.finfo(x.dtype).smallest_normal),
    )


@st.composite
def logits_with_specials(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=10))
    axis = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1)))
    width = 32 if dtype == np.float32 else 64
    elements = st.one_of(
        st.sampled_from([inf, -inf, nan]),
        st.floats(-50, 50, allow_nan=False, allow_infinity=False, width=width),
    )
    x = draw(arrays(dtype, shape, elements=elements))
    return x, axis


@PROPS
@given(logits_with_specials())
def test_prop_matches_reference_with_nonfinite(case):
    x, axis = case
    scale = finite_scale(x)
    for func in FUNCS:
        res = call(func, x, axis)
        rtol, atol = tolerances(KIND[func], x.dtype, x.dtype, scale)
        assert_close(res, ref(func, x, axis), rtol, atol, err_msg=f"{func} axis={axis}")
