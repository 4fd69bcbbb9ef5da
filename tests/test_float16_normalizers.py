"""float16 logits read in place by logsumexp, log_softmax and softmax.

On the SIMD builds (AVX2, AVX-512), a unit-stride float16 row is normalised in
place (xent_f16_row_parts and xent_f16_log_softmax_finish, include/xent/portable/
half_rows.h, over the hand-written loops of the build) instead of through a converted float32
copy.  The results must have exactly the bits of the float32
computation on the converted values, whatever the row length (every tail of
the vector loops), wherever the row's max and the special values sit, and agree
with an independent float64 reference.  The baseline build converts every row,
so there the same tests check the converting path.
"""

import numpy as np
import pytest

import xent

# Row lengths around the vector steps (8, 32 values) and sum chunks (512).
LENGTHS = [33, 40, 47, 64, 100, 511, 512, 513, 1000, 1031, 5000]


def _logits(rng, n, C, scale=4.0):
    return (rng.standard_normal((n, C)) * scale).astype(np.float16)


def _ref_logsumexp(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


def _assert_matches_float32(x16):
    """Every normaliser of x16 has the bits of the float32 path on x16's values."""
    x32 = x16.astype(np.float32)
    for fn in (xent.logsumexp, xent.log_softmax, xent.softmax):
        got = fn(x16, axis=-1)
        want = fn(x32, axis=-1)
        assert got.dtype == np.float32, fn.__name__
        np.testing.assert_array_equal(got, want, err_msg=fn.__name__)
    for fn in (xent.log_softmax, xent.softmax):
        out = np.full(x16.shape, 7.0, np.float32)
        res = fn(x16, axis=-1, out=out)
        assert res is out
        np.testing.assert_array_equal(out, fn(x32, axis=-1), err_msg=fn.__name__)


@pytest.mark.parametrize("C", LENGTHS)
def test_same_bits_as_float32_of_the_converted_rows(rng, C):
    x = _logits(rng, 9, C)
    x[1, C // 2] = x[1].max()  # the max twice
    _assert_matches_float32(x)


@pytest.mark.parametrize("C", [47, 1000])
def test_against_a_float64_reference(rng, C):
    x = _logits(rng, 30, C)
    ref_lse = _ref_logsumexp(x)
    np.testing.assert_allclose(xent.logsumexp(x, axis=-1), ref_lse, rtol=2e-6, atol=1e-6)
    ref_ls = x.astype(np.float64) - ref_lse[:, None]
    np.testing.assert_allclose(xent.log_softmax(x, axis=-1), ref_ls, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(xent.softmax(x, axis=-1), np.exp(ref_ls), rtol=2e-6, atol=1e-12)


def test_special_rows(rng):
    C = 300
    x = _logits(rng, 10, C)
    x[0, 3] = np.inf           # one +inf: all the probability there
    x[1, :] = -np.inf          # no class has probability
    x[2, 9] = np.nan           # NaN in a finite row
    x[3, [0, 5]] = np.inf      # two +inf share it
    x[4, :] = -np.inf          # -inf everywhere but one class
    x[4, 7] = 1.5
    x[5, :] = -20.0            # confident row
    x[5, 11] = 0.0
    x[6, 10:290] = -np.inf     # -inf in a finite row, across vector steps
    x[7, :] = np.nan           # NaN everywhere
    x[8, :] = 65504.0          # float16's largest value, shared
    x[8, 1] = -65504.0
    x[9, :] = np.float16(2.0 ** -24)  # subnormals
    x[9, 3] = np.float16(-(2.0 ** -20))
    _assert_matches_float32(x)
    lse = xent.logsumexp(x, axis=-1)
    assert lse[0] == np.inf and lse[1] == -np.inf and np.isnan(lse[2]) and np.isnan(lse[7])
    assert lse[4] == np.float32(1.5)
    ls = xent.log_softmax(x, axis=-1)
    assert ls[4, 7] == 0 and np.all(ls[4, np.arange(C) != 7] == -np.inf)
    assert np.all(ls[6, 10:290] == -np.inf)
    # the confident row keeps its tiny terms: log p(max) = -(C - 1) e^-20
    want = -np.log1p((C - 1) * np.exp(-20.0))
    assert abs(ls[5, 11] / want - 1) < 1e-6


def test_strided_rows_and_outputs_take_the_converting_path(rng):
    x = _logits(rng, 12, 2 * 90)[:, ::2]  # class stride 2 elements
    _assert_matches_float32(x)
    y = _logits(rng, 12, 90)
    out = np.zeros((90, 12), np.float32).T  # output rows strided
    xent.log_softmax(y, axis=-1, out=out)
    np.testing.assert_array_equal(out, xent.log_softmax(y.astype(np.float32), axis=-1))


def test_class_axis_not_last(rng):
    # Strided float16 rows are converted one by one, where float32 ones are
    # normalised in blocks of positions: the sums differ in order, so this
    # compares with the float64 reference rather than bits.
    x = (rng.standard_normal((3, 50, 7)) * 3).astype(np.float16)
    ref_lse = _ref_logsumexp(np.moveaxis(x, 1, -1))
    np.testing.assert_allclose(xent.logsumexp(x, axis=1), ref_lse, rtol=2e-6, atol=1e-6)
    ref_ls = x.astype(np.float64) - ref_lse[:, None, :]
    np.testing.assert_allclose(xent.log_softmax(x, axis=1), ref_ls, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(xent.softmax(x, axis=1), np.exp(ref_ls), rtol=2e-6, atol=1e-12)
