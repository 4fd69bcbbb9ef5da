"""binary_cross_entropy_with_logits on float32 against a float64 reference,
aimed at the hand-vectorised AVX-512 and AVX2 loops (x86_64_v4/pointwise.h,
x86_64_v3/pointwise.h): sizes that are not multiples of 16 or 32, non-finite lanes
inside a vector, tiny losses.  Runs at every SIMD level (XENT_SIMD); at
baseline it checks the portable body."""
import numpy as np
import pytest

import xent
from helpers import assert_same_bits_for_thread_counts

F32_TINY = np.finfo(np.float32).tiny


def reference(x, y, w=None, pw=None):
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    w = 1.0 if w is None else w.astype(np.float64)
    pw = 1.0 if pw is None else pw.astype(np.float64)
    lg = np.log1p(np.exp(-np.abs(x)))
    return w * (pw * y * (np.maximum(-x, 0) + lg) + (1 - y) * (np.maximum(x, 0) + lg))


def check_close(loss, ref, rtol=5e-7):
    normal = np.abs(ref) >= F32_TINY
    rel = np.abs(loss[normal].astype(np.float64) - ref[normal]) / np.abs(ref[normal])
    assert rel.max(initial=0) <= rtol, rel.max()
    # below the normal range: absolute error of a float32 subnormal
    assert np.all(np.abs(loss[~normal] - ref[~normal]) <= 2 * 2.0**-149)


@pytest.mark.parametrize("n", [1, 7, 15, 16, 17, 31, 33, 1000, 1023, 1025, 20011])
@pytest.mark.parametrize("weighted", [False, True])
def test_random_sizes(n, weighted):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * rng.choice([1, 5, 40], n)).astype(np.float32)
    y = rng.choice([0.0, 1.0, 0.3, 0.75], n).astype(np.float32)
    kw = {}
    if weighted:
        kw = {"weight": rng.random(n).astype(np.float32) * 2,
              "pos_weight": rng.random(n).astype(np.float32) * 3}
    ref = reference(x, y, kw.get("weight"), kw.get("pos_weight"))
    loss = xent.binary_cross_entropy_with_logits(x, y, reduction="none", **kw)
    check_close(loss, ref)
    for reduction, r in [("sum", ref.sum()), ("mean", ref.mean())]:
        got = float(xent.binary_cross_entropy_with_logits(x, y, reduction=reduction, **kw))
        assert got == pytest.approx(r, rel=1e-6)


def test_tiny_losses_relative_error():
    # x >> 0 with y = 1 (and x << 0 with y = 0): loss = log1p(exp(-|x|)) ~ exp(-|x|)
    x = np.linspace(0, 87, 100_003).astype(np.float32)
    for xs, y in [(x, np.ones_like(x)), (-x, np.zeros_like(x))]:
        loss = xent.binary_cross_entropy_with_logits(xs, y, reduction="none")
        ref = reference(xs, y)
        rel = np.abs(loss - ref) / ref
        assert rel.max() <= 3e-7, rel.max()
        assert float(xent.binary_cross_entropy_with_logits(xs, y, reduction="sum")) == \
            pytest.approx(ref.sum(), rel=1e-6)


@pytest.mark.parametrize("pos", [0, 5, 15, 16, 30, 47])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_lane_inside_vector(pos, bad):
    n = 48
    rng = np.random.default_rng(pos)
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    x[pos] = bad
    for yv in (0.0, 1.0, 0.3):
        y = np.full(n, yv, np.float32)
        loss = xent.binary_cross_entropy_with_logits(x, y, reduction="none")
        others = np.arange(n) != pos
        check_close(loss[others], reference(x[others], y[others]))
        if np.isnan(bad):
            expect = np.nan
        elif (bad > 0 and yv == 1.0) or (bad < 0 and yv == 0.0):
            expect = 0.0  # SPEC: the limit at an infinite logit
        else:
            expect = np.inf
        np.testing.assert_equal(loss[pos], np.float32(expect))
        total = float(xent.binary_cross_entropy_with_logits(x, y, reduction="sum"))
        np.testing.assert_equal(np.isnan(total), np.isnan(expect))
        if np.isfinite(expect):
            assert total == pytest.approx(float(loss.astype(np.float64).sum()), rel=1e-6)


def test_targets_outside_unit_interval():
    x = np.linspace(-30, 30, 37).astype(np.float32)
    y = np.linspace(-2, 3, 37).astype(np.float32)
    loss = xent.binary_cross_entropy_with_logits(x, y, reduction="none")
    np.testing.assert_allclose(loss, reference(x, y), rtol=1e-5, atol=1e-5)


def test_independent_of_thread_count():
    rng = np.random.default_rng(7)
    n = 300_001
    x = (rng.standard_normal(n) * 5).astype(np.float32)
    y = rng.random(n).astype(np.float32)
    assert_same_bits_for_thread_counts(lambda: xent.binary_cross_entropy_with_logits(x, y))
