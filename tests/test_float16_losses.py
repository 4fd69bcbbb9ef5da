"""float16 logits read in place by the loss-only cross-entropy rows.

On the SIMD builds (AVX2, AVX-512), a unit-stride float16 row with a class
index and no label smoothing is read in place (xent_f16_row_parts, in the row
batches of _ce_row_batch) instead of through a float32 copy; other builds and
every other case convert the row.  Both must give exactly the bits of the
float32 computation on the converted values, and agree with an independent
float64 reference.
"""

import numpy as np
import pytest

import xent
from helpers import loss_tol
from references import ref_cross_entropy

# C > 32: rows of the computation dtype take the same row path as the float16
# rows (few-class inputs use tiles), so the bits can be compared.
ROW_CLASSES = [33, 47, 64, 511, 512, 513, 1000, 1031]


def _logits(rng, n, C, scale=4.0):
    return (rng.standard_normal((n, C)) * scale).astype(np.float16)


@pytest.mark.parametrize("C", ROW_CLASSES)
def test_same_bits_as_float32_of_the_converted_rows(rng, C):
    x = _logits(rng, 37, C)
    t = rng.integers(0, C, 37)
    t[5] = -100  # an ignored row
    got = xent.cross_entropy(x, t, reduction="none")
    want = xent.cross_entropy(x.astype(np.float32), t, reduction="none")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    ref, _ = ref_cross_entropy(x.astype(np.float64), t, reduction="none")
    rtol, atol = loss_tol(np.float32)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)


@pytest.mark.parametrize("C", [40, 600])
def test_weights_and_mean_match_float32(rng, C):
    x = _logits(rng, 50, C)
    t = rng.integers(0, C, 50)
    w = rng.uniform(0.0, 2.0, C).astype(np.float32)
    w[t[0]] = 0.0  # a zero-weight target
    for reduction in ("none", "sum", "mean"):
        got = xent.cross_entropy(x, t, weight=w, reduction=reduction)
        want = xent.cross_entropy(x.astype(np.float32), t, weight=w, reduction=reduction)
        np.testing.assert_array_equal(got, want)
        ref, _ = ref_cross_entropy(x.astype(np.float64), t, weight=w.astype(np.float64),
                                reduction=reduction)
        rtol, atol = loss_tol(np.float32, scale=np.abs(ref).max())
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)


def test_non_finite_and_confident_rows(rng):
    C = 100
    x = _logits(rng, 8, C)
    t = np.arange(8) * 7 % C
    x[0, 3] = np.inf            # +inf elsewhere: loss +inf
    x[1, t[1]] = np.inf         # lone +inf at the target: loss 0
    x[2, :] = -np.inf           # no class has probability: NaN
    x[3, 9] = np.nan            # NaN anywhere: NaN
    x[4, :] = -np.inf           # -inf off the target only
    x[4, t[4]] = 0.0
    x[5, :] = -20.0             # confident row: a tiny loss, kept to full precision
    x[5, t[5]] = 0.0
    x[6, 10:20] = -np.inf       # some -inf classes in a finite row
    got = xent.cross_entropy(x, t, reduction="none")
    want = xent.cross_entropy(x.astype(np.float32), t, reduction="none")
    np.testing.assert_array_equal(got, want)
    ref, _ = ref_cross_entropy(x.astype(np.float64), t, reduction="none")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert got[0] == np.inf and got[1] == 0 and got[4] == 0
    fin = np.isfinite(ref)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=3e-6, atol=0)
    assert got[5] > 0 and abs(got[5] / ref[5] - 1) < 1e-6


def test_strided_and_gradient_rows_take_the_converting_path(rng):
    x = _logits(rng, 20, 2 * 70)[:, ::2]  # class stride 2 elements
    t = rng.integers(0, 70, 20)
    got = xent.cross_entropy(x, t, reduction="none")
    want = xent.cross_entropy(np.ascontiguousarray(x, dtype=np.float32), t, reduction="none")
    np.testing.assert_array_equal(got, want)
    loss, grad = xent.cross_entropy(x, t, return_grad=True)
    want_loss, want_grad = xent.cross_entropy(x.astype(np.float32), t, return_grad=True)
    assert loss == want_loss
    np.testing.assert_allclose(grad, want_grad, rtol=1e-3, atol=1e-6)
