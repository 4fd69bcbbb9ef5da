"""Edge cases of the hand-vectorised row loops (the max and the sum of exps).

The AVX2 and AVX-512 builds compute a row's max and its sum of exp(x - max)
with intrinsics: vectors of 8 or 16 values, several at a time, a padded tail,
chunks of 512 values, float16 rows read as raw bits for the max.  These tests
put the awkward values where those loops split the row (lane, step and chunk
boundaries and the tail) and compare with independent float64 references, at
whatever SIMD level this process runs (CI forces each one with XENT_SIMD).
"""

import numpy as np
import pytest

import xent
from conftest import ref_logsumexp
from loss_refs import loss_tol, ref_cross_entropy

# Lengths around the widths of the loops: 8 / 16 lanes, 32-value steps, the
# 512-value chunks of the sum, and odd tails.
LENGTHS = [1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 511, 512, 513, 1000, 1055]


def _positions(C):
    """Positions where a special value is planted: the ends, lane and step edges."""
    return sorted({p for p in (0, 1, 7, 8, 15, 16, 31, 32, C // 2, C - 9, C - 2, C - 1)
                   if 0 <= p < C})


@pytest.mark.parametrize("C", LENGTHS)
def test_logsumexp_with_special_values_at_every_split(rng, C):
    base = (rng.standard_normal(C) * 3).astype(np.float32)
    rows = [base]
    for p in _positions(C):
        for value in (np.nan, -np.inf, np.inf):
            r = base.copy()
            r[p] = value
            rows.append(r)
        r = base.copy()
        r[p] = base.max() + 5  # the max at p
        rows.append(r)
        r = np.full(C, -3.0, np.float32)
        r[p] = -1.0  # a confident row: the max alone, everything else far below
        r[C - 1 - p] = -1.0  # a tie (k = 2) unless C - 1 - p == p
        rows.append(r)
    x = np.stack(rows)
    got = xent.logsumexp(x)
    want = ref_logsumexp(x.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = np.isfinite(want)
    np.testing.assert_array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)])
    np.testing.assert_allclose(got[fin], want[fin], rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("C", [33, 64, 100, 513])
def test_nan_payloads_propagate(rng, C):
    """NaNs with payloads (and a signalling NaN) reach the result: the exp takes
    2^n from the bits of an intermediate, which for a NaN are arbitrary."""
    payloads = [0x7FC00000, 0x7FC00123, 0x7FFFFFFF, 0xFFC00001, 0x7F800001, 0xFF80FFFF]
    x = np.tile((rng.standard_normal(C) * 2).astype(np.float32), (len(payloads), 1))
    bits = x.view(np.uint32)
    for i, b in enumerate(payloads):
        bits[i, (7 * i + 3) % C] = b
    assert np.isnan(xent.logsumexp(x)).all()
    assert np.isnan(xent.log_softmax(x)).all()
    t = np.zeros(len(payloads), np.int64)
    assert np.isnan(xent.cross_entropy(x, t, reduction="none")).all()
    assert np.isnan(xent.cross_entropy(x.astype(np.float16), t, reduction="none")).all()


def _check_half_rows(x16, t):
    """float16 cross-entropy: the bits of the float32 computation on the converted
    values, and close to a float64 reference (non-finite rules included)."""
    got = xent.cross_entropy(x16, t, reduction="none")
    want = xent.cross_entropy(x16.astype(np.float32), t, reduction="none")
    np.testing.assert_array_equal(got, want)
    ref, _ = ref_cross_entropy(x16.astype(np.float64), t, reduction="none")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    fin = np.isfinite(ref)
    np.testing.assert_array_equal(got[~fin], ref[~fin])
    rtol, atol = loss_tol(np.float32)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=rtol, atol=atol)


@pytest.mark.parametrize("C", [v for v in LENGTHS if v > 32])
def test_half_rows_max_from_raw_bits(rng, C):
    """The float16 max is taken on the raw bits (int16 max / min): rows that are
    all negative, whose max is +-0, that hold NaNs of either sign, +-inf, or
    subnormals, with the special entry at every split position."""
    rows, targets = [], []
    base = (rng.standard_normal(C) * 3).astype(np.float16)
    for p in _positions(C):
        neg = -np.abs(base) - np.float16(0.5)      # all negative: max = smallest magnitude
        neg[p] = np.float16(-0.25)
        rows.append(neg)
        zero = -np.abs(base)                        # max is -0 here, +0 elsewhere
        zero[p] = np.float16(-0.0)
        zero[(p + 5) % C] = np.float16(0.0)
        rows.append(zero)
        negzero = -np.abs(base) - np.float16(1)     # max is -0 alone
        negzero[p] = np.float16(-0.0)
        rows.append(negzero)
        sub = np.full(C, np.float16(-6e-8))         # subnormals only, one larger
        sub[p] = np.float16(6e-8)
        rows.append(sub)
        for nan_bits in (0x7E00, 0x7C01, 0xFE00, 0xFFFF):
            r = base.copy()
            r.view(np.uint16)[p] = nan_bits         # NaN of either sign: loss NaN
            rows.append(r)
            r = -np.abs(base) - np.float16(1)
            r.view(np.uint16)[p] = nan_bits         # ... in an all-negative row too
            rows.append(r)
        for inf in (np.inf, -np.inf):
            r = base.copy()
            r[p] = inf
            rows.append(r)
        tie = base.copy()                           # the max twice (k = 2)
        tie[p] = tie[C - 1 - p] = np.float16(base.max() + 1)
        rows.append(tie)
    x = np.stack(rows).astype(np.float16)
    t = np.arange(len(x)) * 13 % C
    _check_half_rows(x, t)


def test_half_rows_all_nan_and_all_infinite(rng):
    C = 70
    x = np.zeros((4, C), np.float16)
    x.view(np.uint16)[0] = 0x7E00   # every entry NaN
    x.view(np.uint16)[1] = 0xFE00
    x[2] = -np.inf                  # no class has probability
    x[3] = np.inf                   # every class at +inf: loss log C
    t = np.array([0, 1, 2, 3])
    _check_half_rows(x, t)


def test_half_rows_longer_than_the_known_chunks(rng):
    """The AVX2 float16 rows keep the max of their first 256 chunks of 512
    values on the stack (chunks without the row's max skip the bookkeeping of
    the entries equal to it); later chunks take the general loop.  The max (and
    ties of it) in a known chunk, past the known chunks, and in both."""
    C = 256 * 512 + 60 * 512 + 77
    base = (rng.standard_normal(C) * 2).astype(np.float16)
    top = np.float16(base.max() + 1)
    rows = []
    for where in ([5], [C - 3], [300 * 512 + 1], [7, C - 600], [255 * 512 + 511, 256 * 512]):
        r = base.copy()
        r[where] = top
        rows.append(r)
    x = np.stack(rows)
    t = np.array([5, 0, 1, C - 600, 256 * 512])
    _check_half_rows(x, t)
