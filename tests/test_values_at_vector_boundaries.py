"""Edge cases of the hand-vectorised row loops (the max and the sum of exps).

The AVX2 and AVX-512 builds compute a row's max and its sum of exp(x - max)
with intrinsics: vectors of 8 or 16 values, several at a time, a padded tail,
chunks of 512 values (the AVX-512 float16 one-pass sums in blocks of 128),
float16 rows read as raw bits for the max.  These tests
put the awkward values where those loops split the row (lane, step and chunk
boundaries and the tail) and compare with independent float64 references, at
whatever SIMD level this process runs (CI forces each one with XENT_SIMD).
"""

import numpy as np
import pytest

import xent
from helpers import loss_tol
from references import ref_cross_entropy, ref_logsumexp

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


@pytest.mark.parametrize("dtype, offset", [
    (np.float16, 0.0), (np.float16, 3.3), (np.float16, -700.0), (np.float16, 4097.0),
    (np.float16, 65504.0), (np.float16, -65504.0),
    (np.float32, 0.0), (np.float32, 100.1), (np.float32, 65535.0), (np.float32, 65537.0),
    (np.float32, -70000.0), (np.float32, 1e6), (np.float32, 3e38), (np.float32, -3e38),
])
def test_sums_at_any_offset(rng, dtype, offset):
    """The AVX-512 sums of exps take x*log2(e) - hi with max*log2(e) = hi + lo,
    and 2^-lo on the row's sum: rows whose max is small or large, up to
    float16's largest (where the noise rounds away and the max ties across
    chunks) and, in float32, past 2^16 (where the sums take the stored exps'
    arithmetic instead) up to 3e38."""
    C = 1500
    x = (offset + rng.standard_normal((6, C)) * 2).astype(dtype)
    x[1, 700] = x[1].max()                      # ties of the max in two chunks
    x[1, 3] = x[1].max()
    t = np.array([3, 700, 0, C - 1, 511, 512])
    xf = x.astype(np.float64)
    np.testing.assert_allclose(xent.logsumexp(x), ref_logsumexp(xf), rtol=2e-6)
    rtol, atol = loss_tol(np.float32)
    np.testing.assert_allclose(xent.cross_entropy(x, t, reduction="none"),
                               ref_cross_entropy(xf, t, reduction="none")[0], rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("offset", [0.0, 37.5, -1000.0])
def test_confident_rows_keep_their_relative_accuracy(dtype, offset):
    """A row whose target is its max by 20: the loss is log1p(rest), about
    3000 e^-20, and must keep float32's relative accuracy (no absolute
    tolerance), whatever scale the sum of the other terms was taken at."""
    C = 3000
    x = np.full((3, C), offset - 20, dtype=dtype)
    x[:, 1::7] = np.asarray(offset - 21, dtype=dtype)
    x[0, 17] = x[1, 2047] = x[2, C - 1] = offset
    t = np.array([17, 2047, C - 1])
    got = xent.cross_entropy(x, t, reduction="none")
    ref = ref_cross_entropy(x.astype(np.float64), t, reduction="none")[0]
    assert np.all(ref < 1e-4)
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=0)


def _half_bits(r, dtype, i, bits):
    """r[i] = the float16 with these bits (its float32 value for float32 rows)."""
    if dtype == np.float16:
        r.view(np.uint16)[i] = bits
    else:
        r[i] = np.uint16(bits).view(np.float16)


def _chunked_rows(rng, C, dtype):
    """Rows that move the max of a one-pass sum (AVX-512: each chunk of 512
    values summed at the max of the chunks so far, the next chunk's max read
    along) in every way: rising from chunk to chunk, ties of an early max that
    a later chunk overtakes, leading chunks of -inf (with and without a NaN
    among them), a NaN with either sign in a later chunk, a +inf late, logits
    past 2^16 after small ones; and, for the float16 max read along as an int16
    max of the bits (with their min only while the max so far is <= 0), later
    chunks of negative entries only (-0 and a negative NaN among them) after a
    positive max, rows of negative entries only (the max rising or falling
    through the chunks, a NaN of either sign late), and a max of +0 tied by a
    -0 in a later chunk of negative entries."""
    base = (rng.standard_normal(C) * 2).astype(dtype)
    rows = [base, np.sort(base), np.sort(base)[::-1].copy()]
    r = base.copy()                         # ties of a max that is overtaken
    r[[2, 300]] = 9
    r[C - 1] = 11
    rows.append(r)
    r = base.copy()                         # the max tied in the first and last chunk
    r[[0, C - 1]] = base.max() + 3
    rows.append(r)
    for lead in (512, 1024):
        if lead < C:
            r = base.copy()
            r[:lead] = -np.inf              # leading chunk of -inf
            rows.append(r)
            r = r.copy()
            r[100] = np.nan                 # ... holding a NaN: the loss is NaN
            rows.append(r)
    negative = -np.abs(base) - np.asarray(0.25, dtype)
    r = negative.copy()                     # later chunks of negative entries only
    r[0] = 3
    _half_bits(r, dtype, C - 4, 0x8000)     # -0
    rows.append(r)
    r = r.copy()
    _half_bits(r, dtype, C - 2, 0xFE00)     # ... and a NaN with its sign bit set
    rows.append(r)
    rows += [negative, np.sort(negative), np.sort(negative)[::-1].copy()]
    for bits in (0x7E00, 0xFE00):           # ... and a NaN of either sign late
        r = negative.copy()
        _half_bits(r, dtype, C - 2, bits)
        rows.append(r)
    r = negative.copy()                     # max +0, tied by -0 later
    r[5] = 0
    _half_bits(r, dtype, C - 4, 0x8000)
    rows.append(r)
    for bits in (0x7E00, 0xFE00):           # NaN of either sign in the last chunk
        r = base.copy()
        _half_bits(r, dtype, C - 2, bits)
        rows.append(r)
    r = base.copy()
    r[C - 1] = np.inf                       # +inf in the last chunk
    rows.append(r)
    if dtype == np.float32:
        r = base.copy()
        r[C - 3] = 70000.0                  # past 2^16, after chunks of small logits
        rows.append(r)
        r = base - np.float32(70000)        # every logit below -2^16
        rows.append(r.astype(dtype))
    return np.stack(rows)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("C", [513, 519, 527, 1024, 1031, 1541, 2048, 2049, 3079])
def test_one_pass_sums_as_the_max_moves(rng, dtype, C):
    x = _chunked_rows(rng, C, dtype)
    t = (np.arange(len(x)) * 37) % C
    xf = x.astype(np.float64)
    ref, _ = ref_cross_entropy(xf, t, reduction="none")
    rtol, atol = loss_tol(np.float32)
    for got in (xent.cross_entropy(x, t, reduction="none"),
                xent.cross_entropy(x, t, reduction="none", return_grad=True)[0]):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        fin = np.isfinite(ref)
        np.testing.assert_array_equal(got[~fin], ref[~fin])
        np.testing.assert_allclose(got[fin], ref[fin], rtol=rtol, atol=atol)
    lse, want = xent.logsumexp(x), ref_logsumexp(xf)
    np.testing.assert_array_equal(np.isnan(lse), np.isnan(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(lse[fin], want[fin], rtol=2e-6, atol=2e-6)
    if dtype == np.float16:
        np.testing.assert_array_equal(xent.cross_entropy(x, t, reduction="none"),
                                      xent.cross_entropy(x.astype(np.float32), t,
                                                         reduction="none"))
