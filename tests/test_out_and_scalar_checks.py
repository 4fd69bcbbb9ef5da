"""Checks of `out=`/`grad_out=` buffers and of scalar options (issue 17, "Errors").

* An output whose elements share memory (a self-overlapping ``as_strided`` view)
  is refused with a ValueError naming the argument, before anything is written;
  an interleaved view whose elements are distinct is accepted and filled right.
* ``ml_dtypes.bfloat16`` outputs are accepted like float16 ones: the result is
  computed in the computation dtype and rounded to bfloat16.
* Scalar options are real numbers: numeric strings, bytes, bools, complex numbers
  and arrays with dimensions raise TypeError; NaN, infinities and values outside
  the interval raise ValueError naming the interval that is really accepted.

References are float64 NumPy/SciPy formulas, never xent.
"""

import fractions
import itertools

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided
from scipy import special

import xent
from xent._api.validation import has_internal_overlap

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)


# ---------------------------------------------------------------------------
# internal-overlap detection, against brute force
# ---------------------------------------------------------------------------


def brute_overlap(a):
    """True when two distinct elements of `a` share a byte: every pair of byte ranges."""
    starts = []
    for idx in itertools.product(*(range(n) for n in a.shape)):
        starts.append(sum(i * s for i, s in zip(idx, a.strides)))
    starts.sort()
    return any(b - a_ < a.itemsize for a_, b in zip(starts, starts[1:]))


def test_overlap_detection_matches_brute_force_on_random_views():
    rng = np.random.default_rng(17)
    buf = np.zeros(4096, np.uint8)
    seen = {True: 0, False: 0}
    for _ in range(3000):
        itemsize = int(rng.choice([1, 2, 4, 8]))
        ndim = int(rng.integers(1, 4))
        shape = tuple(int(n) for n in rng.integers(0, 5, ndim))
        strides = tuple(int(s) * int(rng.choice([1, itemsize])) for s in rng.integers(-12, 13, ndim))
        # start in the middle so that negative strides stay inside the buffer
        base = buf[2048:].view(np.dtype(f"u{itemsize}"))
        a = as_strided(base, shape, strides)
        expected = brute_overlap(a) if a.size else False
        assert has_internal_overlap(a) == expected, (shape, strides, itemsize)
        seen[expected] += 1
    assert min(seen.values()) > 300  # both answers were exercised


@pytest.mark.parametrize(
    "shape, strides, overlap",
    [
        ((4, 3), (4, 4), True),  # the example: rows overlap
        ((3,), (0,), True),  # a zero stride
        ((1, 3), (0, 8), False),  # zero stride on a length-1 axis is harmless
        ((2, 3), (24, 8), False),  # C order, float64 items
        ((2, 3), (8, 16), False),  # interleaved: offsets 0,16,32 and 8,24,40
        ((3, 2), (16, 24), False),  # interleaved, failing the sorted-stride test
        ((3, 3), (16, 32), True),  # element (2, 0) is element (0, 1)
        ((2, 2), (8, 4), True),  # items 4 bytes apart, 8 bytes wide
    ],
)
def test_overlap_detection_examples(shape, strides, overlap):
    a = as_strided(np.zeros(64), shape, strides)
    assert has_internal_overlap(a) == overlap
    assert brute_overlap(a) == overlap


def test_transposed_reversed_and_sliced_views_do_not_overlap():
    a = np.zeros((5, 6, 7))
    for v in (a, a.T, a[::-1, ::2], a[:, ::-3, 1:], np.moveaxis(a, 0, 2)[::2]):
        assert not has_internal_overlap(v)


# ---------------------------------------------------------------------------
# self-overlapping out= / grad_out= are refused, nothing written
# ---------------------------------------------------------------------------

X = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -2.0], [3.0, 1.0, 0.0], [-1.0, 2.0, 0.25]])
T = np.array([0, 1, 2, 1])
Y = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0], [0.25, 0.0, 1.0], [1.0, 1.0, 0.0]])


def _calls(out):
    """(argument name, call) for every public function taking an output buffer."""
    return [
        ("out", lambda: xent.softmax(X, out=out)),
        ("out", lambda: xent.log_softmax(X, out=out)),
        ("out", lambda: xent.log_softmax(X, axis=0, out=out)),
        ("out", lambda: xent.softmax(X, axis=None, out=out)),
        ("grad_out", lambda: xent.cross_entropy(X, T, return_grad=True, grad_out=out)),
        ("grad_out", lambda: xent.cross_entropy(X, Y, return_grad=True, grad_out=out)),
        (
            "grad_out",
            lambda: xent.binary_cross_entropy_with_logits(X, Y, return_grad=True, grad_out=out),
        ),
        ("grad_out", lambda: xent.kl_divergence(Y, X, return_grad=True, grad_out=out)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, BF16])
@pytest.mark.parametrize("strides_items", [(1, 1), (0, 1), (1, 0), (2, 1)])
def test_self_overlapping_output_is_refused_before_writing(dtype, strides_items):
    dtype = np.dtype(dtype)
    buf = np.arange(16, dtype=np.float64).astype(dtype)
    before = buf.copy()
    strides = tuple(k * dtype.itemsize for k in strides_items)
    out = as_strided(buf, (4, 3), strides)
    assert out.flags.writeable
    x_before = X.copy()
    for name, call in _calls(out):
        with pytest.raises(ValueError, match=rf"^{name}: its elements overlap in memory"):
            call()
        np.testing.assert_array_equal(buf.view(np.uint8), before.view(np.uint8))
        np.testing.assert_array_equal(X, x_before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_self_overlapping_logsumexp_out_is_refused(dtype):
    buf = np.full(8, 7.0, dtype)
    for strides in [(0,), (dtype(0).itemsize // 2,)]:
        out = as_strided(buf, (4,), strides)
        with pytest.raises(ValueError, match="^out: its elements overlap"):
            xent.logsumexp(X, out=out)
        assert np.all(buf == 7.0)


def test_interleaved_output_without_overlap_is_accepted():
    # Element (i, j) at byte 8*i + 32*j: rows interleave, no two elements meet.
    buf = np.full(12, np.nan)
    out = as_strided(buf, (4, 3), (8, 32))
    assert not has_internal_overlap(out)
    res = xent.softmax(X, out=out)
    assert res is out
    np.testing.assert_allclose(out, special.softmax(X, axis=-1), rtol=1e-14)
    buf[:] = np.nan
    _, g = xent.cross_entropy(X, T, reduction="sum", return_grad=True, grad_out=out)
    expected = special.softmax(X, axis=-1)
    expected[np.arange(4), T] -= 1.0
    assert g is out
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------
# bfloat16 out= / grad_out=
# ---------------------------------------------------------------------------


def _assert_bf16_close(res, expected):
    """Within one bfloat16 rounding of the float64 reference (rounded in float32 first)."""
    assert res.dtype == BF16
    got = res.astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=2.0**-8, atol=1e-30)


@pytest.mark.parametrize("in_dtype", [np.float32, np.float64, BF16])
def test_bfloat16_out_for_normalizers(in_dtype):
    x = X.astype(in_dtype)
    x64 = x.astype(np.float64)
    out = np.full(X.shape, np.nan, BF16)
    assert xent.softmax(x, out=out) is out
    _assert_bf16_close(out, special.softmax(x64, axis=-1))
    assert xent.log_softmax(x, axis=0, out=out) is out
    _assert_bf16_close(out, special.log_softmax(x64, axis=0))
    lse = np.full(4, np.nan, BF16)
    assert xent.logsumexp(x, out=lse) is lse
    _assert_bf16_close(lse, special.logsumexp(x64, axis=-1))


def test_bfloat16_out_is_correctly_rounded_from_float64():
    # 1 + 2**-8 + 2**-30 is just above a bfloat16 tie: a float64 result must round
    # up once (a detour through float32 would round to the tie and then down).
    v = 1.0 + 2.0**-8 + 2.0**-30
    x = np.array([[v, -np.inf]])
    out = np.empty((1,), BF16)
    xent.logsumexp(x, out=out)
    assert float(out[0]) == 1.0 + 2.0**-7


def test_bfloat16_grad_out_for_losses():
    g = np.full(X.shape, np.nan, BF16)
    _, res = xent.cross_entropy(X, T, reduction="sum", return_grad=True, grad_out=g)
    expected = special.softmax(X, axis=-1)
    expected[np.arange(4), T] -= 1.0
    assert res is g
    _assert_bf16_close(g, expected)

    _, res = xent.binary_cross_entropy_with_logits(X, Y, reduction="sum", return_grad=True,
                                                   grad_out=g)
    assert res is g
    _assert_bf16_close(g, special.expit(X) - Y)

    _, res = xent.kl_divergence(Y, X, reduction="sum", return_grad=True, grad_out=g)
    assert res is g
    _assert_bf16_close(g, special.softmax(X, axis=-1) - special.softmax(Y, axis=-1))


def test_non_float_out_is_still_refused():
    for bad in (np.empty((4, 3), np.int32), np.empty((4, 3), np.complex128)):
        with pytest.raises(TypeError, match="out: expected a floating dtype"):
            xent.softmax(X, out=bad)
        with pytest.raises(TypeError, match="grad_out: expected a floating dtype"):
            xent.cross_entropy(X, T, return_grad=True, grad_out=bad)


# ---------------------------------------------------------------------------
# scalar options
# ---------------------------------------------------------------------------

SCALAR_CALLS = {
    "temperature": lambda v: xent.kl_divergence(Y, X, temperature=v),
    "base": lambda v: xent.entropy(X, base=v),
    "label_smoothing": lambda v: xent.cross_entropy(X, T, label_smoothing=v),
    "z_loss": lambda v: xent.cross_entropy(X, T, z_loss=v),
    "gamma": lambda v: xent.focal_loss(X, T, gamma=v),
    "alpha": lambda v: xent.focal_loss(X, T, alpha=v),
}


NOT_REAL = ["2", "0.5", b"1", np.str_("1"), np.array("1"), True, 1 + 0j, np.complex128(1)]
# Also arrays with dimensions and None, except where they mean something: `alpha`
# takes a per-class array, and None is the default of `alpha` and `base`.
NOT_SCALAR = [np.array([0.5]), [1.0], None]


@pytest.mark.parametrize(
    "name, value",
    [(n, v) for n in sorted(SCALAR_CALLS) for v in NOT_REAL]
    + [(n, v) for n in sorted(SCALAR_CALLS) if n != "alpha" for v in NOT_SCALAR
       if not (v is None and n == "base")],
)
def test_scalar_options_must_be_real_numbers(name, value):
    with pytest.raises(TypeError, match=rf"^{name}: expected a real number, got"):
        SCALAR_CALLS[name](value)


@pytest.mark.parametrize(
    "name, bad, interval",
    [
        ("temperature", 0, r"\(0, inf\)"),
        ("temperature", -1.5, r"\(0, inf\)"),
        ("temperature", np.inf, r"\(0, inf\)"),
        ("temperature", np.nan, r"\(0, inf\)"),
        ("base", 0.0, r"\(0, 1\) or \(1, inf\)"),
        ("base", -1, r"\(0, 1\) or \(1, inf\)"),
        ("base", 1, r"\(0, 1\) or \(1, inf\)"),
        ("base", np.inf, r"\(0, 1\) or \(1, inf\)"),
        ("label_smoothing", 1.5, r"\[0, 1\]"),
        ("label_smoothing", -0.1, r"\[0, 1\]"),
        ("z_loss", -1e-3, r"\[0, inf\)"),
        ("z_loss", np.inf, r"\[0, inf\)"),
        ("z_loss", 10**400, r"\[0, inf\)"),
        ("gamma", -1, r"\[0, inf\)"),
        ("alpha", np.nan, r"\(-inf, inf\)"),
        ("alpha", -(10**400), r"\(-inf, inf\)"),
    ],
)
def test_scalar_out_of_range_names_the_real_interval(name, bad, interval):
    with pytest.raises(ValueError, match=rf"^{name}: expected a value in {interval}, got "):
        SCALAR_CALLS[name](bad)


def test_scalar_interval_ends_that_are_allowed():
    p = special.softmax(Y, axis=-1)
    q = special.softmax(X, axis=-1)
    kl = np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))
    np.testing.assert_allclose(xent.kl_divergence(Y, X, temperature=1), kl, rtol=1e-13)
    nll = -special.log_softmax(X, axis=-1)[np.arange(4), T]
    np.testing.assert_allclose(xent.cross_entropy(X, T, label_smoothing=0), nll.mean(), rtol=1e-14)
    smooth = -special.log_softmax(X, axis=-1).mean(axis=-1)
    np.testing.assert_allclose(xent.cross_entropy(X, T, label_smoothing=1), smooth.mean(),
                               rtol=1e-14)
    np.testing.assert_allclose(xent.focal_loss(X, T, gamma=0), nll.mean(), rtol=1e-14)
    np.testing.assert_allclose(xent.entropy(X, base=0.5),
                               -np.sum(q * np.log(q), axis=-1) / np.log(0.5), rtol=1e-13)


@pytest.mark.parametrize(
    "value", [2, 2.0, np.float32(2), np.int8(2), np.uint64(2), np.array(2.0), fractions.Fraction(2)]
)
def test_scalar_options_accept_real_number_types(value):
    p = special.softmax(Y / 2, axis=-1)
    q = special.softmax(X / 2, axis=-1)
    kl = np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))
    np.testing.assert_allclose(xent.kl_divergence(Y, X, temperature=value), kl, rtol=1e-13)


def test_dask_cross_entropy_checks_scalars_the_same_way():
    xd = pytest.importorskip("xent.dask")
    da = pytest.importorskip("dask.array")
    x = da.from_array(X, chunks=2)
    t = da.from_array(T, chunks=2)
    with pytest.raises(TypeError, match="^label_smoothing: expected a real number"):
        xd.cross_entropy(x, t, label_smoothing="0.1")
    with pytest.raises(ValueError, match=r"^z_loss: expected a value in \[0, inf\)"):
        xd.cross_entropy(x, t, z_loss=-1)
