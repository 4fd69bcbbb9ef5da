"""The normalizers as drop-ins for scipy.special and torch: tuple / None / () axes,
``b=`` and ``return_sign=`` (logsumexp), ``dtype=``, 0-d inputs and 0-d results.

References are independent of xent: float64 NumPy formulas on moveaxis + reshape
copies (references.py), scipy.special (installed with the test dependencies) and
mpmath.  The cases follow the ground of SciPy's own tests
(scipy/special/tests/test_logsumexp.py).
"""

import itertools
import math

import numpy as np
import pytest

import xent
from helpers import (
    assert_close,
    assert_same_bits_for_thread_counts,
    computation_dtype,
    resolve_dtype,
    tolerances,
    traced_peak,
)
from references import as_f64, ref_log_softmax, ref_logsumexp, ref_softmax

special = pytest.importorskip("scipy.special")

inf = np.inf
nan = np.nan
FUNCS = ["logsumexp", "log_softmax", "softmax"]
KIND = {"logsumexp": "lse", "log_softmax": "log_softmax", "softmax": "softmax"}


def ref_over(func, x, axes, keepdims=False):
    """float64 reference over the class axes `axes` (a tuple, possibly empty):
    the classes moved last and merged on a copy, references.py's last-axis
    formulas, and the result moved back."""
    a = as_f64(x)
    axes = tuple(sorted(ax % a.ndim for ax in axes)) if a.ndim else ()
    rest = [i for i in range(a.ndim) if i not in axes]
    moved = np.transpose(a, rest + list(axes))
    row_shape = moved.shape[: len(rest)]
    rows = moved.reshape(row_shape + (math.prod(moved.shape[len(rest):]),))
    if func == "logsumexp":
        res = ref_logsumexp(rows, -1)
        if keepdims:
            res = np.reshape(res, tuple(1 if i in axes else n for i, n in enumerate(a.shape)))
        return np.asarray(res)
    res = (ref_log_softmax if func == "log_softmax" else ref_softmax)(rows, -1)
    res = res.reshape(moved.shape)
    return np.transpose(res, np.argsort(rest + list(axes)))


def check(func, res, x, axes, comp, keepdims=False, out_dtype=None):
    expected = ref_over(func, x, axes, keepdims)
    scale = max(1.0, float(np.max(np.abs(as_f64(x)[np.isfinite(as_f64(x))]), initial=1.0)))
    out_dt = np.dtype(out_dtype or comp)
    if out_dt.name == "bfloat16":  # 8 significant bits (helpers' rule is for kind "f")
        rtol, atol = tolerances(KIND[func], comp, np.float16, scale)
        rtol = max(rtol, 2.0**-7)
        atol = max(atol, 2.0**-7 * (1.0 if func == "softmax" else scale))
    else:
        rtol, atol = tolerances(KIND[func], comp, out_dt, scale)
    assert_close(res, expected, rtol, atol, err_msg=f"{func} axes={axes}")


def layouts(x):
    """x in several memory layouts: C order, Fortran order, a transposed view,
    a strided slice of a bigger array, read-only."""
    f = np.asfortranarray(x)
    t = np.transpose(np.ascontiguousarray(np.transpose(x)))
    big = np.zeros(tuple(2 * n for n in x.shape), x.dtype)
    s = big[tuple(slice(None, None, 2) for _ in x.shape)]
    s[...] = x
    ro = x.copy()
    ro.flags.writeable = False
    return {"C": x, "F": f, "transposed": t, "strided": s, "readonly": ro}


# ---------------------------------------------------------------------------
# axis: int, tuple, None, ()
# ---------------------------------------------------------------------------

SHAPE = (2, 3, 4, 5)
ALL_AXES = [
    axes for r in range(0, 5) for axes in itertools.combinations(range(4), r)
]


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("layout", ["C", "F", "transposed", "strided", "readonly"])
def test_tuple_axes_every_combination(func, layout):
    rng = np.random.default_rng(1)
    x = layouts(rng.normal(scale=3.0, size=SHAPE))[layout]
    for axes in ALL_AXES:
        for spelled in (axes, tuple(a - 4 for a in reversed(axes))):
            check(func, getattr(xent, func)(x, axis=spelled), x, axes, np.float64)
        if func == "logsumexp":
            res = xent.logsumexp(x, axis=axes, keepdims=True)
            check(func, res, x, axes, np.float64, keepdims=True)


@pytest.mark.parametrize("func", FUNCS)
def test_axis_none_is_every_axis(func):
    x = np.random.default_rng(2).normal(size=(3, 4, 2))
    res = getattr(xent, func)(x, axis=None)
    check(func, res, x, (0, 1, 2), np.float64)
    sp = getattr(special, func)(x, axis=None)
    assert_close(res, sp, 1e-13, 1e-14)
    assert_close(np.asarray(res), getattr(xent, func)(x, axis=(0, 1, 2)), 0, 0)


@pytest.mark.parametrize("func", FUNCS)
def test_empty_tuple_names_no_axis(func):
    # NumPy / SciPy: axis=() reduces nothing, each element is a row of one class
    # (+inf is one class of probability 1 by the +inf rule; SciPy gives NaN there).
    x = np.array([[1.0, -inf], [inf, nan]])
    res = getattr(xent, func)(x, axis=())
    expected = {
        "logsumexp": x,
        "log_softmax": [[0.0, nan], [0.0, nan]],
        "softmax": [[1.0, nan], [1.0, nan]],
    }[func]
    np.testing.assert_array_equal(res, expected)
    finite = np.array([[1.0, -2.0], [3.0, 0.5]])
    np.testing.assert_array_equal(getattr(xent, func)(finite, axis=()),
                                  getattr(special, func)(finite, axis=()))
    if func == "logsumexp":
        assert xent.logsumexp(x, axis=(), keepdims=True).shape == x.shape


@pytest.mark.parametrize("func", FUNCS)
def test_tuple_axes_match_scipy(func):
    x = np.random.default_rng(3).normal(scale=10, size=(3, 2, 4, 2))
    for axes in [(0, 1), (1, 3), (0, 2, 3), (-1, -2), (0, 3)]:
        res = getattr(xent, func)(x, axis=axes)
        assert_close(res, getattr(special, func)(x, axis=axes), 1e-12, 1e-12, err_msg=str(axes))


def test_mergeable_tuple_is_one_long_row():
    # The trailing axes of a C-contiguous array are one strided axis: the same
    # kernel call as the int axis of the merged shape, bit for bit.
    x = np.random.default_rng(4).normal(size=(6, 7, 8)).astype(np.float32)
    for func in FUNCS:
        f = getattr(xent, func)
        merged = f(x.reshape(6, 56), axis=1)
        np.testing.assert_array_equal(f(x, axis=(1, 2)), merged.reshape(f(x, axis=(1, 2)).shape))
        np.testing.assert_array_equal(
            np.asarray(f(x, axis=(0, 1))).reshape(-1), np.asarray(f(x.reshape(42, 8), axis=0)).reshape(-1)
        )


@pytest.mark.parametrize("bad", [4, -5, (0, 4), (1, -5)])
@pytest.mark.parametrize("func", FUNCS)
def test_axis_out_of_range(func, bad):
    x = np.zeros(SHAPE)
    with pytest.raises(np.exceptions.AxisError, match=r"axis=-?\d"):
        getattr(xent, func)(x, axis=bad)


@pytest.mark.parametrize("func", FUNCS)
def test_axis_repeated_or_not_an_integer(func):
    x = np.zeros(SHAPE)
    with pytest.raises(ValueError, match="twice"):
        getattr(xent, func)(x, axis=(1, -3))
    for bad in (1.0, (0, 1.5), "1", [0, 1]):
        with pytest.raises(TypeError, match="axis"):
            getattr(xent, func)(x, axis=bad)


# ---------------------------------------------------------------------------
# the non-finite rule on the tuple-axis paths
# ---------------------------------------------------------------------------


def special_rows():
    """A (6, 2, 3) array whose rows over axes (1, 2) hold the special cases."""
    rows = [
        [0.5, -1.0, 2.0, 0.0, -3.0, 1.0],
        [inf, 1.0, inf, -inf, 0.0, 2.0],  # two +inf: 1/2 each
        [-inf] * 6,  # no class: lse -inf, NaN softmax
        [1.0, nan, 0.0, 2.0, -inf, inf],  # NaN propagates
        [-inf, -inf, 3.0, -inf, -inf, -inf],  # one class left
        [1e300, -1e300, 0.0, 1e300, 5.0, -inf],  # huge logits
    ]
    return np.array(rows).reshape(6, 2, 3)


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("path", ["merged", "blocks"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_non_finite_rule_on_tuple_paths(func, path, dtype):
    dt = resolve_dtype(dtype)
    x = special_rows()
    if dt.itemsize <= 4:  # huge logits within the dtype's range
        big = 6e4 if dt.itemsize == 2 else 1e30
        x = np.where(np.abs(x) > big, np.sign(x) * big, x)
    x = x.astype(dt)
    if path == "merged":
        arr, axes = x, (1, 2)  # trailing axes of a C-contiguous array
    else:
        arr, axes = np.moveaxis(x, 0, 1), (0, 2)  # (2, 6, 3): classes over axes 0 and 2
    res = getattr(xent, func)(arr, axis=axes)
    check(func, res, arr, axes, computation_dtype(dt))


# ---------------------------------------------------------------------------
# the block path: bounded blocks, threads, in-place, out=
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize(
    "axes, block",
    [
        ((1, 3), 64),  # classes last, one row a block
        ((0, 2), 512),  # blocks of (k, C, inner): the trailing axis kept inner
        ((0, 2), 100),  # C * inner above the block: classes last instead
        ((1,), 1 << 18),  # int axis through the blocks (integer storage below)
    ],
)
def test_block_path_many_blocks_and_threads(func, axes, block, monkeypatch):
    from xent._api import class_axes

    monkeypatch.setattr(class_axes, "BLOCK_ELEMENTS", block)  # many blocks of rows
    x = np.random.default_rng(5).normal(scale=4, size=(7, 9, 5, 6)).astype(np.float32)
    if len(axes) == 1:
        x = np.round(x).astype(np.int16)  # storage the kernels do not read

    def call():
        return getattr(xent, func)(x, axis=axes)

    res = assert_same_bits_for_thread_counts(call, counts=(1, 2), what=func)
    check(func, res, x, axes, np.float64 if len(axes) == 1 else np.float32)
    if func == "logsumexp":
        b = np.linspace(-1, 2, 6)
        expected = scipy_lse(x, axis=axes, b=b, return_sign=True)
        got = xent.logsumexp(x, axis=axes, b=b, return_sign=True)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)


@pytest.mark.parametrize("func", ["log_softmax", "softmax"])
def test_block_path_in_place_and_out(func):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 3, 5))
    expected = ref_over(func, x, (0, 2))
    y = x.copy()
    assert getattr(xent, func)(y, axis=(0, 2), out=y) is y
    assert_close(y, expected, 1e-12, 1e-13)
    for out_dtype in (np.float16, np.float32, np.float64):
        out = np.full(x.shape, 7.0, out_dtype)
        assert getattr(xent, func)(x, axis=(0, 2), out=out) is out
        assert_close(out, expected, *tolerances(KIND[func], np.float64, out_dtype, 2.0))
    # out overlapping x in another layout: computed apart, then written
    big = np.concatenate([x.reshape(-1), np.zeros(5)])
    src = big[:60].reshape(x.shape)
    src_copy = src.copy()
    dst = big[5:65].reshape(x.shape)
    getattr(xent, func)(src, axis=(0, 2), out=dst)
    assert_close(dst, ref_over(func, src_copy, (0, 2)), 1e-12, 1e-13)


@pytest.mark.parametrize("func", ["log_softmax", "softmax"])
def test_merged_path_out_and_in_place(func):
    x = np.random.default_rng(20).normal(size=(3, 4, 5)).astype(np.float32)
    expected = ref_over(func, x, (1, 2))
    y = x.copy()
    assert getattr(xent, func)(y, axis=(1, 2), out=y) is y  # in place, one long row
    assert_close(y, expected, 2e-5, 1e-6)
    strided = np.zeros((3, 8, 5), np.float32)[:, ::2]  # class axes do not chain
    assert getattr(xent, func)(x, axis=(1, 2), out=strided) is strided
    assert_close(strided, expected, 2e-5, 1e-6)
    half = np.zeros(x.shape, np.float16)
    getattr(xent, func)(x, axis=(-2, -1), out=half)
    assert_close(half, expected, *tolerances(KIND[func], np.float32, np.float16, 3.0))


def test_logsumexp_block_path_out_keepdims():
    x = np.random.default_rng(7).normal(size=(4, 3, 5))
    out = np.full((1, 3, 1), 9.0, np.float32)
    assert xent.logsumexp(x, axis=(0, 2), keepdims=True, out=out) is out
    check("logsumexp", out, x, (0, 2), np.float64, keepdims=True, out_dtype=np.float32)


def test_integer_input_read_in_blocks():
    # Integer logits are converted block by block (float64, as NumPy would).
    x = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    for func in FUNCS:
        for axes in [-1, (0, 2), None]:
            res = getattr(xent, func)(x, axis=axes)
            assert np.asarray(res).dtype == np.float64
            ax = (axes,) if isinstance(axes, int) else (0, 1, 2) if axes is None else axes
            check(func, res, x, ax, np.float64)


# ---------------------------------------------------------------------------
# 0-d inputs and 0-d results
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, -1, None, (), (0,), (-1,)])
def test_zero_dim_input_is_one_class(axis):
    for value, lse, lsm, sm in [
        (2.5, 2.5, 0.0, 1.0),
        (inf, inf, 0.0, 1.0),  # the +inf rule with k = 1
        (-inf, -inf, nan, nan),  # no class has any probability
        (nan, nan, nan, nan),
    ]:
        for x in (value, np.float64(value), np.array(value)):
            r = xent.logsumexp(x, axis=axis)
            assert isinstance(r, np.float64)
            np.testing.assert_array_equal(r, lse)
            r = xent.log_softmax(x, axis=axis)
            assert isinstance(r, np.float64)
            np.testing.assert_array_equal(r, lsm)
            r = xent.softmax(x, axis=axis)
            assert isinstance(r, np.float64)
            np.testing.assert_array_equal(r, sm)
    r = xent.log_softmax(np.float32(3.0), axis=0)
    assert isinstance(r, np.float32) and r == 0


@pytest.mark.parametrize("func", FUNCS)
def test_zero_dim_input_bad_axis(func):
    with pytest.raises(np.exceptions.AxisError, match="axis=1"):
        getattr(xent, func)(np.array(1.0), axis=1)
    with pytest.raises(np.exceptions.AxisError, match="axis=-2"):
        getattr(xent, func)(1.0, axis=(-2,))


def test_zero_dim_results_are_scalars():
    assert repr(xent.softmax(1000, axis=None)) == repr(special.softmax(1000, axis=None))
    assert isinstance(xent.logsumexp(np.ones(3), axis=None), np.float64)
    assert isinstance(xent.logsumexp(np.ones((2, 3), np.float32), axis=(0, 1)), np.float32)
    assert isinstance(xent.logsumexp([1.0, 2.0], b=[1.0, 2.0]), np.float64)
    v, s = xent.logsumexp([1.0, 2.0], return_sign=True)
    assert isinstance(v, np.float64) and isinstance(s, np.float64) and s == 1
    v, s = xent.logsumexp([1.0, 2.0], b=[1, -2], return_sign=True)
    assert isinstance(v, np.float64) and isinstance(s, np.float64) and s == -1
    assert isinstance(xent.logsumexp(2.0, dtype=np.float32), np.float32)
    # with out=, out is returned (a 0-d array)
    out = np.zeros(())
    assert xent.logsumexp(np.ones(3), axis=None, out=out) is out
    assert out == pytest.approx(1 + math.log(3))
    out = np.zeros(())
    assert xent.softmax(5.0, out=out) is out and out == 1.0


# ---------------------------------------------------------------------------
# b= and return_sign= (SciPy's semantics)
# ---------------------------------------------------------------------------


def scipy_lse(a, **kw):
    with np.errstate(all="ignore"):
        return special.logsumexp(a, **kw)


@pytest.mark.parametrize("return_sign", [False, True])
def test_b_random_signs_and_zeros_match_scipy(return_sign):
    rng = np.random.default_rng(8)
    for shape, axis in [((5, 7), -1), ((5, 7), 0), ((3, 4, 5), (0, 2)), ((3, 4, 5), None),
                        ((2, 3, 4, 5), (1, 2)), ((6,), 0)]:
        for _ in range(5):
            a = rng.normal(scale=5, size=shape)
            b = rng.normal(size=shape)
            b[rng.random(shape) < 0.2] = 0.0
            res = xent.logsumexp(a, axis=axis, b=b, return_sign=return_sign)
            exp = scipy_lse(a, axis=axis, b=b, return_sign=return_sign)
            if return_sign:
                np.testing.assert_array_equal(res[1], exp[1])
                res, exp = res[0], exp[0]
            np.testing.assert_allclose(res, exp, rtol=1e-12, atol=1e-12)


def test_b_broadcasts_both_ways():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(4, 1, 2, 1))
    b = rng.uniform(0.5, 2, size=(3, 1, 5))
    for axis in [None, -1, (1, 3), 0]:
        res = xent.logsumexp(a, axis=axis, b=b)
        np.testing.assert_allclose(res, scipy_lse(a, axis=axis, b=b), rtol=1e-13)
    # b of one value per class
    x = rng.normal(size=(6, 4))
    w = np.array([1.0, 0.0, 2.0, 0.5])
    np.testing.assert_allclose(xent.logsumexp(x, b=w), scipy_lse(x, axis=-1, b=w), rtol=1e-13)
    np.testing.assert_allclose(xent.logsumexp(x, b=2.0), scipy_lse(x, axis=-1, b=2.0), rtol=1e-13)


def test_b_shapes_keepdims_sign_shape():
    # SciPy's test_logsumexp_sign_shape / test_logsumexp_shape
    a = np.ones((1, 2, 3, 4))
    b = np.ones_like(a)
    r, s = xent.logsumexp(a, axis=2, b=b, return_sign=True)
    assert r.shape == s.shape == (1, 2, 4)
    r, s = xent.logsumexp(a, axis=(1, 3), b=b, return_sign=True)
    assert r.shape == s.shape == (1, 3)
    r, s = xent.logsumexp(a, axis=(1, 3), b=b, return_sign=True, keepdims=True)
    assert r.shape == s.shape == (1, 1, 3, 1)
    np.testing.assert_allclose(r.reshape(-1), 1 + math.log(8), rtol=1e-15)


def test_b_sign_cases():
    # SciPy's test_logsumexp_sign, _sign_zero, _b_zero, gh-22903, gh-23548
    r, s = xent.logsumexp([1, 1, 1], b=[1, -1, -1], return_sign=True)
    assert r == pytest.approx(1.0, rel=1e-15) and s == -1
    r, s = xent.logsumexp([1, 1], b=[1, -1], return_sign=True)
    assert r == -inf and s == 0
    assert xent.logsumexp([1, 1], b=[1, -1]) == -inf
    assert xent.logsumexp([1, 10000], b=[1, 0]) == pytest.approx(1.0, rel=1e-15)
    a = np.array([3.06409428, 0.37251854, 3.87471931])
    b = np.array([1.88190708, 2.84174795, -0.85016884])
    assert xent.logsumexp(a, b=b) == pytest.approx(scipy_lse(a, b=b), rel=1e-14)
    assert xent.logsumexp(a, b=b) == xent.logsumexp(a, b=b, return_sign=True)[0]
    b[2] = -3.85016884
    assert np.isnan(xent.logsumexp(a, b=b))  # the log of a negative sum
    assert xent.logsumexp(a, b=b, return_sign=True)[1] == -1
    for a, b, sign in [([inf], None, 1.0), ([inf], [-1.0], -1.0)]:
        v, s = xent.logsumexp(a, b=b, return_sign=True)
        assert v == inf and s == sign


@pytest.mark.parametrize(
    "a, b, value, sign",
    [
        ([nan, 1.0], None, nan, nan),
        ([nan, 1.0], [0.0, 1.0], 1.0, 1.0),  # b == 0 leaves the entry out, NaN too
        ([inf, 1.0], [0.0, 2.0], 1.0 + math.log(2), 1.0),
        ([-inf, -inf], None, -inf, 0.0),
        ([-inf, -inf], [1.0, -1.0], -inf, 0.0),
        ([1.0, 2.0], [0.0, 0.0], -inf, 0.0),  # nothing left in
        ([inf, inf], [1.0, -1.0], nan, nan),  # inf - inf
        ([inf, inf, 0.0], [2.0, 1.0, -5.0], inf, 1.0),
        ([inf, 3.0], [-2.0, 1.0], inf, -1.0),
        ([0.0, -40.0], None, np.logaddexp(0.0, -40.0), 1.0),  # gh-18295
        ([1000.0, 1000.0], [1.2, 1.2], 1000 + math.log(2.4), 1.0),
    ],
)
def test_b_special_values(a, b, value, sign):
    v, s = xent.logsumexp(a, b=b, return_sign=True)
    np.testing.assert_array_equal(s, sign)
    if np.isfinite(value):
        assert v == pytest.approx(value, rel=1e-15, abs=1e-300)
    else:
        np.testing.assert_array_equal(v, value)
    no_sign = xent.logsumexp(a, b=b)
    np.testing.assert_array_equal(no_sign, nan if sign < 0 else v)


def test_empty_rows_sign_zero():
    # The sum over no classes is an exact 0: -inf with sign 0 (SciPy returns the
    # sign of -inf, -1, for a whole empty array).
    v, s = xent.logsumexp(np.zeros((2, 0)), return_sign=True)
    np.testing.assert_array_equal(v, [-inf, -inf])
    np.testing.assert_array_equal(s, [0.0, 0.0])
    v, s = xent.logsumexp(np.zeros((2, 0)), b=np.ones((2, 0)), return_sign=True)
    np.testing.assert_array_equal(v, [-inf, -inf])
    np.testing.assert_array_equal(s, [0.0, 0.0])
    assert xent.logsumexp([]) == -inf


def test_b_precision_against_mpmath():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    rng = np.random.default_rng(10)
    for _ in range(20):
        a = rng.normal(scale=30, size=8)
        b = rng.normal(size=8)
        total = sum(mpmath.mpf(float(bi)) * mpmath.exp(mpmath.mpf(float(ai))) for ai, bi in zip(a, b))
        v, s = xent.logsumexp(a, b=b, return_sign=True)
        assert s == (1 if total > 0 else -1)
        ref = float(mpmath.log(abs(total)))
        # cancellation amplifies the rounding of each term: bound by the terms' size
        terms = float(mpmath.log(sum(abs(mpmath.mpf(float(bi))) * mpmath.exp(mpmath.mpf(float(ai)))
                                     for ai, bi in zip(a, b))))
        assert abs(v - ref) <= 1e-14 * max(1.0, abs(ref)) + 4e-16 * math.exp(terms - ref)


def test_b_large_rows_and_scipy_tiny_values():
    # SciPy's test_logsumexp_b: many tiny terms summed with weights
    x = np.full(100000, 1e-40)
    b = np.linspace(1, 1000, 100000)
    logX = np.log(np.stack((x, x)))
    B = np.stack((b, b))
    np.testing.assert_allclose(np.exp(xent.logsumexp(logX, axis=None, b=B)), np.sum(B * np.stack((x, x))), rtol=1e-7)
    np.testing.assert_allclose(np.exp(xent.logsumexp(logX, axis=0, b=B)), (B * np.stack((x, x))).sum(0), rtol=1e-7)
    np.testing.assert_allclose(np.exp(xent.logsumexp(logX, axis=1, b=B)), (B * np.stack((x, x))).sum(1), rtol=1e-7)
    a = np.arange(200.0)
    bb = np.arange(200.0, 0.0, -1.0)
    np.testing.assert_allclose(xent.logsumexp(a, b=bb), np.log(np.sum(bb * np.exp(a))), rtol=1e-13)


@pytest.mark.parametrize("dtype_a", ["float32", "float64", "int32", "int64"])
@pytest.mark.parametrize("dtype_b", ["float32", "float64", "int32", "int64", "bool"])
def test_b_dtypes_promote_as_numpy(dtype_a, dtype_b):
    # SciPy's test_dtypes_ab: NumPy's promotion, integers alone -> float64
    a = np.array([2, 1], dtype=dtype_a)
    b = np.array([1, -1], dtype=dtype_b)
    if dtype_b == "bool":
        a, b = np.array([2, 1, 0], dtype=dtype_a), np.array([True, False, True])
        res = xent.logsumexp(a, b=b)
        assert res.dtype == np.result_type(dtype_a, np.float32 if dtype_a == "float32" else np.float64)
        assert res == pytest.approx(math.log(math.exp(2) + 1), rel=1e-6)
        return
    res = xent.logsumexp(a, b=b)
    expected_dtype = np.result_type(dtype_a, dtype_b)
    if expected_dtype.kind in "iu":
        expected_dtype = np.dtype(np.float64)
    assert res.dtype == expected_dtype
    assert res == pytest.approx(math.log(math.exp(2) - math.exp(1)), rel=1e-6)


def test_b_and_return_sign_with_out_and_dtype():
    rng = np.random.default_rng(11)
    a = rng.normal(size=(3, 5))
    b = rng.normal(size=(3, 5))
    ref_v, ref_s = scipy_lse(a, axis=1, b=b, return_sign=True)
    out = np.full(3, 5.0, np.float32)
    v, s = xent.logsumexp(a, axis=1, b=b, return_sign=True, out=out)
    assert v is out and s.dtype == np.float32
    np.testing.assert_allclose(out, ref_v, rtol=1e-6)
    np.testing.assert_array_equal(s, ref_s)
    v, s = xent.logsumexp(a, axis=1, b=b, return_sign=True, dtype=np.float32)
    assert v.dtype == s.dtype == np.float32
    np.testing.assert_allclose(v, scipy_lse(a.astype(np.float32), axis=1, b=b.astype(np.float32),
                                            return_sign=True)[0], rtol=1e-5)
    v, s = xent.logsumexp(a, axis=1, return_sign=True, dtype="float16")
    assert v.dtype == s.dtype == np.float16
    np.testing.assert_array_equal(s, 1.0)


def test_return_sign_without_b():
    x = np.array([[1.0, 2.0], [-inf, -inf], [nan, 0.0], [inf, 0.0]])
    v, s = xent.logsumexp(x, return_sign=True)
    np.testing.assert_array_equal(s, [1.0, 0.0, nan, 1.0])
    ev, es = scipy_lse(x, axis=-1, return_sign=True)
    np.testing.assert_array_equal(s, es)
    np.testing.assert_allclose(v, ev, rtol=1e-15)
    v, s = xent.logsumexp(x, axis=(0, 1), return_sign=True)
    assert np.isnan(v) and np.isnan(s)


@pytest.mark.parametrize("offset", [1e-3, 1e3, 1e6])
def test_translation_invariance(offset):
    # SciPy's test_log_softmax_translation, on tuple axes
    x = np.random.default_rng(12).normal(size=(3, 4, 5))
    for axes in [(0, 2), (1, 2), None]:
        a = xent.log_softmax(x, axis=axes)
        b = xent.log_softmax(x + offset, axis=axes)
        np.testing.assert_allclose(a, b, atol=1e-12 * max(1.0, offset))


def test_array_likes_and_int_arrays():
    assert xent.logsumexp([1000, 1000]) == pytest.approx(1000 + math.log(2), rel=1e-15)
    np.testing.assert_allclose(xent.softmax([1, 2, 3], axis=None), special.softmax([1, 2, 3]))
    np.testing.assert_allclose(xent.log_softmax([[1, 2], [3, 5]], axis=None),
                               special.log_softmax(np.array([[1, 2], [3, 5]])), rtol=1e-15)
    np.testing.assert_allclose(xent.logsumexp(np.arange(200), axis=None),
                               np.log(np.sum(np.exp(np.arange(200.0)))), rtol=1e-14)
    a = np.array([[1e10, 1e-10], [-1e10, -inf]])
    np.testing.assert_allclose(xent.logsumexp(a), [1e10, -1e10])
    np.testing.assert_allclose(xent.logsumexp(a, axis=(-1, -2)), 1e10)
    n = 1000
    assert xent.logsumexp(np.full(n, 10000), axis=None) == pytest.approx(10000 + math.log(n), rel=1e-15)


# ---------------------------------------------------------------------------
# dtype=
# ---------------------------------------------------------------------------

IN_DTYPES = ["float16", "bfloat16", "float32", "float64", "int32", "bool"]
OUT_DTYPES = ["float16", "bfloat16", "float32", "float64", "longdouble"]


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("in_dtype", IN_DTYPES)
@pytest.mark.parametrize("dtype", OUT_DTYPES)
@pytest.mark.parametrize("axis", [-1, 0, (0, 2), None])
def test_dtype_every_combination(func, in_dtype, dtype, axis):
    in_dt = resolve_dtype(in_dtype)
    dt = resolve_dtype(dtype)
    rng = np.random.default_rng(13)
    x = (rng.normal(scale=3, size=(3, 4, 5)) > 0) if in_dt.kind == "b" else \
        rng.normal(scale=3, size=(3, 4, 5)).astype(in_dt)
    res = getattr(xent, func)(x, axis=axis, dtype=dt)
    assert res.dtype == dt
    comp = np.float32 if dt.itemsize <= 4 else np.float64
    axes = (axis,) if isinstance(axis, int) else (0, 1, 2) if axis is None else axis
    # the input as the kernels read it: rounded to the computation dtype first
    x_comp = as_f64(x).astype(comp)
    check(func, res, x_comp, axes, comp, out_dtype=dt)


@pytest.mark.parametrize("func", FUNCS)
def test_dtype_spellings_and_errors(func):
    x = np.random.default_rng(14).normal(size=(2, 3))
    f = getattr(xent, func)
    assert f(x, dtype="float32").dtype == np.float32
    assert f(x, dtype=np.float64).dtype == np.float64
    assert f(x.astype(np.float32), dtype=float).dtype == np.float64
    for bad in ("int32", np.int64, "complex128", bool, "not a dtype"):
        with pytest.raises(TypeError, match="dtype"):
            f(x, dtype=bad)


@pytest.mark.parametrize("func", FUNCS)
def test_dtype_with_out_rounds_into_out(func):
    # dtype is the computation dtype; out receives the result rounded to its dtype
    x = np.random.default_rng(15).normal(scale=3, size=(4, 6))
    shape = (4,) if func == "logsumexp" else x.shape
    for dt, out_dt in [(np.float32, np.float64), (np.float64, np.float32), (np.float32, np.float16)]:
        out = np.zeros(shape, out_dt)
        res = getattr(xent, func)(x, dtype=dt, out=out)
        assert res is out
        check(func, out, x.astype(dt), (1,), dt, out_dtype=out_dt)


def test_kernel_reads_other_storage_into_out_dtype():
    # normalize with an out whose dtype differs from x's: the rows are converted
    # one by one (float64 x computed in float32, and float32 x in float64), on the
    # contiguous, strided-row and class-axis-not-last layouts.
    rng = np.random.default_rng(16)
    for x in [rng.normal(size=(8, 33)), rng.normal(size=(8, 33))[:, ::2], rng.normal(size=(5, 7, 6))]:
        for func in FUNCS:
            for axis in (-1, 1):
                for x_dtype, dt in [(np.float64, np.float32), (np.float32, np.float64)]:
                    xs = x.astype(x_dtype)
                    res = getattr(xent, func)(xs, axis=axis, dtype=dt)
                    assert res.dtype == dt
                    check(func, res, xs.astype(dt), (axis,), dt)


@pytest.mark.parametrize("func", ["log_softmax", "softmax", "logsumexp"])
def test_dtype_matches_torch(func):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(19).normal(scale=4, size=(3, 5, 4))
    for x_dtype, dt in [(np.float32, np.float64), (np.float64, np.float32), (np.float64, np.float64)]:
        xs = x.astype(x_dtype)
        t = torch.from_numpy(xs)
        for axis in (1, -1):
            if func == "logsumexp":  # torch.logsumexp has no dtype=: cast first
                expected = torch.logsumexp(t.to(getattr(torch, np.dtype(dt).name)), dim=axis)
            else:
                expected = getattr(torch, func)(t, dim=axis, dtype=getattr(torch, np.dtype(dt).name))
            res = getattr(xent, func)(xs, axis=axis, dtype=dt)
            assert res.dtype == dt
            rtol = 1e-6 if dt == np.float32 else 1e-13
            np.testing.assert_allclose(res, expected.numpy(), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("block", [1 << 18, 200, 5])  # whole outer rows, or runs of inner
@pytest.mark.parametrize("func", FUNCS)
def test_class_axis_not_last_in_converted_blocks(func, block, monkeypatch):
    # x stored as float32/float64 and computed in the other (dtype=), classes
    # not last: blocks converted to the computation dtype (class_axes.blocks_3d);
    # 16-bit storage keeps the kernels' row conversion (checked here too).
    from xent._api import class_axes

    monkeypatch.setattr(class_axes, "BLOCK_ELEMENTS", block)
    x = np.random.default_rng(21).normal(scale=3, size=(5, 7, 6, 4))
    for xs, dt in [(x, np.float32), (x.astype(np.float32), np.float64), (x.astype(np.float16), None),
                   (x.astype(np.float16), np.float64)]:
        comp = np.dtype(dt) if dt is not None else np.dtype(np.float32)
        res = assert_same_bits_for_thread_counts(
            lambda: getattr(xent, func)(xs, axis=1, dtype=dt), counts=(1, 2), what=func
        )
        assert res.dtype == comp
        check(func, res, xs.astype(comp), (1,), comp)
        shape = res.shape
        for out in (np.zeros(shape, comp), np.zeros(shape, np.float16)):
            assert getattr(xent, func)(xs, axis=1, dtype=dt, out=out) is out
            check(func, out, xs.astype(comp), (1,), comp, out_dtype=out.dtype)


def test_other_storage_than_out_takes_the_row_conversion_path():
    # The typed fast paths read x in the computation dtype; another storage
    # (float64 x into a float32 out, float32 into float64) takes the rows path,
    # which converts each row (_row_in).
    from xent._api.validation import float_kind
    from xent._runtime.dispatch import kernels

    for x_dtype, out_dtype in [(np.float64, np.float32), (np.float32, np.float64)]:
        for shape in [(64, 4096, 1), (8, 16, 32), (4096, 8, 1)]:
            x = np.zeros(shape, x_dtype)
            path = kernels.normalize_path(op=kernels.LOG_SOFTMAX, x=x, xkind=float_kind(x),
                                          out=np.empty(shape, out_dtype))
            assert path == "rows", (x_dtype, shape, path)


def test_float64_beyond_float32_range_with_dtype_float32():
    # x is read as it is and rounded to the computation dtype: 1e300 -> +inf
    x = np.array([[1e300, 0.0], [-1e300, 0.0]])
    np.testing.assert_array_equal(xent.softmax(x, dtype=np.float32), [[1, 0], [0, 1]])


# ---------------------------------------------------------------------------
# validation before writing
# ---------------------------------------------------------------------------


def test_validation_leaves_out_and_inputs_untouched():
    x = np.random.default_rng(17).normal(size=(3, 4))
    x_copy = x.copy()
    b = np.ones((3, 4))
    bad_calls = [
        (ValueError, dict(func="logsumexp", b=np.ones((2, 4)), out=np.full(3, 7.0))),
        (TypeError, dict(func="logsumexp", b=np.ones((3, 4), complex), out=np.full(3, 7.0))),
        (ValueError, dict(func="logsumexp", b=b, out=np.full(4, 7.0))),
        (ValueError, dict(func="logsumexp", b=b, axis=(0, 0), out=np.full(3, 7.0))),
        (np.exceptions.AxisError, dict(func="logsumexp", b=b, axis=2, out=np.full(3, 7.0))),
        (TypeError, dict(func="logsumexp", dtype="int8", out=np.full(3, 7.0))),
        (ValueError, dict(func="logsumexp", axis=(0, 1), out=np.full(3, 7.0))),
        (TypeError, dict(func="softmax", dtype="complex64", out=np.full((3, 4), 7.0))),
        (ValueError, dict(func="softmax", axis=(0, 1), out=np.full((4, 3), 7.0))),
        (TypeError, dict(func="log_softmax", axis=(0, 1), out=np.full((3, 4), 7, np.int64))),
    ]
    for error, kw in bad_calls:
        func = kw.pop("func")
        out = kw["out"]
        before = out.copy()
        with pytest.raises(error):
            getattr(xent, func)(x, **kw)
        np.testing.assert_array_equal(out, before)
        np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(b, 1.0)


def test_error_messages_name_argument_and_values():
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"b has shape \(2, 4\).*\(3, 4\)"):
        xent.logsumexp(x, b=np.ones((2, 4)))
    with pytest.raises(TypeError, match="b: unsupported dtype complex128"):
        xent.logsumexp(x, b=np.ones(4, complex))
    with pytest.raises(TypeError, match="x: unsupported dtype complex128"):
        xent.logsumexp(np.ones(4, complex), b=np.ones(4))
    with pytest.raises(TypeError, match="dtype: expected a floating dtype, got 'int8'"):
        xent.softmax(x, dtype="int8")


def test_no_writeback():
    # SciPy's test_no_writeback
    a = np.array([5.0, 4.0])
    b = np.array([3.0, 2.0])
    xent.logsumexp(a)
    xent.logsumexp(a, b=b, return_sign=True)
    xent.softmax(a, axis=(0,))
    np.testing.assert_array_equal(a, [5.0, 4.0])
    np.testing.assert_array_equal(b, [3.0, 2.0])


# ---------------------------------------------------------------------------
# bounded memory: no whole copy of x (or of a broadcast b)
# ---------------------------------------------------------------------------


def test_tuple_axes_b_and_dtype_read_x_in_place():
    x = np.random.default_rng(18).normal(size=(64, 8, 4096))  # 16 MiB
    out = np.empty_like(x)
    bound = x.nbytes // 2
    assert traced_peak(lambda: xent.log_softmax(x, axis=(0, 2), out=out)) < bound
    assert traced_peak(lambda: xent.logsumexp(x, axis=(0, 2))) < bound
    b = np.linspace(-1, 1, 4096)  # broadcast as a view, never copied whole
    assert traced_peak(lambda: xent.logsumexp(x, axis=(1, 2), b=b, return_sign=True)) < bound
    out32 = np.empty(x.shape, np.float32)
    # converted blocks of the class-axis-not-last path: a few MiB, not a whole copy (8 MiB)
    assert traced_peak(lambda: xent.softmax(x, axis=1, dtype=np.float32, out=out32)) < bound // 2
    check("softmax", out32, x.astype(np.float32), (1,), np.float32)


# ---------------------------------------------------------------------------
# properties: any shape, layout and set of axes
# ---------------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@st.composite
def arrays_and_axes(draw):
    """A float64 array of 0-4 dimensions in a random layout (a permuted,
    strided view), a random set of its axes spelled as a tuple (negative
    axes allowed), None or an int, and a scale-factor shape that broadcasts."""
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    perm = tuple(draw(st.permutations(range(ndim)))) if ndim else ()
    step = draw(st.sampled_from([1, 2]))
    base_shape = tuple(shape[perm[j]] * step for j in range(ndim))
    base = rng.normal(scale=5, size=base_shape)
    if draw(st.booleans()) and base.size:
        base[rng.random(base_shape) < 0.2] = draw(st.sampled_from([inf, -inf, nan]))
    x = np.transpose(base[tuple(slice(None, None, step) for _ in base_shape)], np.argsort(perm))
    assert x.shape == shape
    kind = draw(st.sampled_from(["tuple", "none", "int"]))
    if kind == "none" or ndim == 0:
        axis = None if kind == "none" or not ndim else 0
    elif kind == "int":
        axis = draw(st.integers(-ndim, ndim - 1))
    else:
        picked = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
        axis = tuple(a - ndim if draw(st.booleans()) else a for a in picked)
    b_shape = tuple(n if draw(st.booleans()) else 1 for n in shape)[draw(st.integers(0, ndim)):]
    return x, axis, b_shape


def spelled_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    return (axis,) if isinstance(axis, int) else axis


@hypothesis.settings(max_examples=80, deadline=None)
@hypothesis.given(arrays_and_axes())
def test_any_layout_and_axes_match_the_reference(case):
    x, axis, _ = case
    axes = spelled_axes(axis, x.ndim)
    for func in FUNCS:
        res = getattr(xent, func)(x, axis=axis)
        assert np.ndim(res) == np.ndim(ref_over(func, x, axes)) and (
            np.ndim(res) > 0 or isinstance(res, np.float64)
        )
        check(func, res, x, axes, np.float64)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(arrays_and_axes())
def test_any_scale_factors_match_scipy(case):
    x, axis, b_shape = case
    x = np.where(np.isfinite(x), x, 0.0)  # SciPy's infinities differ by design (see above)
    b = np.random.default_rng(0).normal(size=b_shape)
    b[np.abs(b) < 0.3] = 0.0
    if x.ndim == 0:
        axis = None
    if x.size == 0:
        return  # SciPy gives sign -1 for an empty array, xent 0 (see test_empty_rows_sign_zero)
    v, s = xent.logsumexp(x, axis=axis, b=b, return_sign=True)
    ev, es = scipy_lse(x, axis=axis, b=b, return_sign=True)
    np.testing.assert_array_equal(s, es)
    np.testing.assert_allclose(v, ev, rtol=1e-9, atol=1e-9)
