"""Contiguous rows give the bits of the same rows read through a strided view.

With the class axis last, contiguous rows (float32, float64, or float16 read
in place) go through row batches: the max and sum of exps of up to 16 rows
first, then their logs and writes (_ce_row_batch for cross-entropy with class
indices, with or without a gradient; _row_batch for logsumexp, log_softmax and
softmax).  Each row must keep exactly the bits of the row-by-row path (which a
strided view of the same values takes), wherever the batch boundaries, ignored
rows and rows with a non-finite max fall, for any thread count; and agree with
an independent float64 reference.
"""

import numpy as np
import pytest

import xent
from helpers import assert_same_bits_for_thread_counts, bitwise_equal
from references import ref_cross_entropy

# Row lengths around the vector steps (8 and 32 values) and the sum chunks (512).
CLASSES = [1, 2, 7, 8, 9, 33, 40, 47, 64, 100, 250, 511, 512, 513, 1000]
# Batch sizes around the batch of 16 rows; few-class float32/float64 inputs of
# 32 rows or more go to the tile path instead, so those use fewer rows.
ROWS = [1, 15, 16, 17, 31]


def _strided_copy(x):
    """The same values in a view whose class stride is not the item size, which
    the row-by-row path reads (through a converted copy of each row)."""
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
    wide[..., ::2] = x
    return wide[..., ::2]


def _targets(rng, n, C):
    t = rng.integers(0, C, n)
    t[::5] = -100  # ignored rows, inside and across batch boundaries
    return t


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", CLASSES)
@pytest.mark.parametrize("n", ROWS)
def test_same_bits_as_row_by_row(rng, dtype, C, n):
    x = (rng.standard_normal((n, C)) * 4).astype(dtype)
    x[-1, C // 2] = x[-1].max()  # the max twice (k = 2) when C > 1
    t = _targets(rng, n, C)
    got = xent.cross_entropy(x, t, reduction="none")
    want = xent.cross_entropy(_strided_copy(x), t, reduction="none")
    assert bitwise_equal(got, want)


@pytest.mark.parametrize("C", [33, 100, 1000])
def test_many_rows_same_bits_as_row_by_row_with_weights(rng, C):
    x = (rng.standard_normal((203, C)) * 4).astype(np.float32)
    t = _targets(rng, 203, C)
    w = rng.uniform(0.5, 2.0, C).astype(np.float32)
    for reduction in ("none", "mean", "sum"):
        # z_loss reads the rows' logsumexps
        for z_loss in (0.0, 1e-3):
            got = xent.cross_entropy(x, t, weight=w, reduction=reduction, z_loss=z_loss)
            want = xent.cross_entropy(
                _strided_copy(x), t, weight=w, reduction=reduction, z_loss=z_loss
            )
            assert bitwise_equal(got, want), (reduction, z_loss)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_rows_inside_a_batch(rng, dtype):
    C = 40
    x = (rng.standard_normal((40, C)) * 4).astype(dtype)
    x[3, 7] = np.inf  # +inf max: the row-by-row special rules
    x[17, :] = -np.inf  # no probability anywhere
    x[18, 2] = np.nan  # NaN with a finite max: a NaN sum
    x[20, 5] = np.nan
    x[20, 6] = np.inf  # NaN with an infinite max
    x[33, :] = -np.inf
    x[33, 9] = 1.5  # a single finite class: loss 0 if targeted
    t = rng.integers(0, C, 40)
    t[33] = 9
    t[16] = -100
    got = xent.cross_entropy(x, t, reduction="none")
    want = xent.cross_entropy(_strided_copy(x), t, reduction="none")
    assert bitwise_equal(got, want)
    ref, _ = ref_cross_entropy(x, t, reduction="none")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(got[finite], ref[finite], rtol=2e-6, atol=1e-6)
    assert got[33] == 0 and got[16] == 0


@pytest.mark.parametrize("C", [33, 47, 100, 513])
def test_float16_batches_same_bits_as_float32(rng, C):
    x = (rng.standard_normal((45, C)) * 4).astype(np.float16)
    x[9, :] = -np.inf  # a row the in-place reading hands back to the general path
    t = _targets(rng, 45, C)
    got = xent.cross_entropy(x, t, reduction="none")
    assert got.dtype == np.float32
    want = xent.cross_entropy(x.astype(np.float32), t, reduction="none")
    assert bitwise_equal(got, want)
    assert bitwise_equal(got, xent.cross_entropy(_strided_copy(x), t, reduction="none"))


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("C", [9, 40, 100, 1000])
def test_against_a_float64_reference(rng, dtype, rtol, C):
    x = (rng.standard_normal((50, C)) * 5).astype(dtype)
    x[4] = 0
    x[4, 1] = 30  # a confident row: the loss of its target is tiny
    x[6, C // 3] = x[6].max()  # the max twice
    t = _targets(rng, 50, C)
    t[4] = 1
    t[6] = C // 3
    got = xent.cross_entropy(x, t, reduction="none")
    ref, _ = ref_cross_entropy(x, t, reduction="none")
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=0)


def test_thread_counts_give_the_same_bits(rng):
    x = (rng.standard_normal((1003, 100)) * 4).astype(np.float32)
    t = _targets(rng, 1003, 100)
    assert_same_bits_for_thread_counts(lambda: xent.cross_entropy(x, t, reduction="none"))


# ---- cross-entropy with its gradient ---------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [2, 9, 33, 100, 250, 513])
@pytest.mark.parametrize("n", [1, 16, 17, 31])
@pytest.mark.parametrize(
    "options",
    [{}, {"label_smoothing": 0.1}, {"z_loss": 1e-3, "reduction": "sum"}, {"weight": True}],
    ids=["plain", "smoothing", "zloss-sum", "weights"],
)
def test_gradient_same_bits_as_row_by_row(rng, dtype, C, n, options):
    x = (rng.standard_normal((n, C)) * 4).astype(dtype)
    x[-1, C // 2] = x[-1].max()
    t = _targets(rng, n, C)
    options = dict(options)
    if options.get("weight"):
        options["weight"] = rng.uniform(0.5, 2.0, C).astype(dtype)
    loss, grad = xent.cross_entropy(x, t, return_grad=True, **options)
    want_loss, want_grad = xent.cross_entropy(_strided_copy(x), t, return_grad=True, **options)
    assert bitwise_equal(loss, want_loss)
    assert bitwise_equal(grad, want_grad)
    # the gradient written over the logits themselves
    y = x.copy()
    loss_in_place, g = xent.cross_entropy(y, t, return_grad=True, grad_out=y, **options)
    assert g is y
    assert bitwise_equal(loss_in_place, want_loss)
    assert bitwise_equal(y, want_grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_against_a_float64_reference(rng, dtype):
    x = (rng.standard_normal((40, 60)) * 4).astype(dtype)
    x[3, 7] = np.inf  # a +inf max: the special rules, row by row
    t = _targets(rng, 40, 60)
    loss, grad = xent.cross_entropy(x, t, reduction="sum", return_grad=True)
    want_loss, want_grad = xent.cross_entropy(
        _strided_copy(x), t, reduction="sum", return_grad=True
    )
    assert bitwise_equal(loss, want_loss) and bitwise_equal(grad, want_grad)
    x[3, 7] = 0
    loss, grad = xent.cross_entropy(x, t, reduction="sum", return_grad=True)
    ref_loss, ref_grad = ref_cross_entropy(x, t, reduction="sum")
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
    np.testing.assert_allclose(grad, ref_grad, rtol=rtol * 10, atol=rtol * 1e-3)
    assert (grad[t == -100] == 0).all()


@pytest.mark.parametrize("C", [33, 100, 513])
def test_float16_gradient_batches_same_bits_as_float32(rng, C):
    x = (rng.standard_normal((40, C)) * 4).astype(np.float16)
    x[9, :] = -np.inf
    t = _targets(rng, 40, C)
    loss, grad = xent.cross_entropy(x, t, reduction="none", return_grad=True)
    want_loss, want_grad = xent.cross_entropy(
        x.astype(np.float32), t, reduction="none", return_grad=True
    )
    assert grad.dtype == np.float32
    assert bitwise_equal(loss, want_loss)
    assert bitwise_equal(grad, want_grad)


# ---- normalisers: the same batches (_row_batch) ---------------------------

NORMALISERS = [xent.logsumexp, xent.log_softmax, xent.softmax]


@pytest.mark.parametrize("fn", NORMALISERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", CLASSES)
@pytest.mark.parametrize("n", ROWS)
def test_normalisers_same_bits_as_row_by_row(rng, fn, dtype, C, n):
    x = (rng.standard_normal((n, C)) * 4).astype(dtype)
    x[-1, C // 2] = x[-1].max()
    got = fn(x, axis=-1)
    assert bitwise_equal(got, fn(_strided_copy(x), axis=-1))


@pytest.mark.parametrize("fn", [xent.log_softmax, xent.softmax], ids=lambda f: f.__name__)
@pytest.mark.parametrize("C", [9, 47, 100])
def test_in_place_and_out_same_bits(rng, fn, C):
    x = (rng.standard_normal((37, C)) * 4).astype(np.float32)
    x[7, 3] = np.inf
    want = fn(_strided_copy(x), axis=-1)
    out = np.full_like(x, 7.0)
    assert fn(x, axis=-1, out=out) is out
    assert bitwise_equal(out, want)
    y = x.copy()
    assert fn(y, axis=-1, out=y) is y
    assert bitwise_equal(y, want)


@pytest.mark.parametrize("fn", NORMALISERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalisers_non_finite_rows_inside_a_batch(rng, fn, dtype):
    x = (rng.standard_normal((37, 50)) * 4).astype(dtype)
    x[2, 3] = np.inf
    x[2, 9] = np.inf  # two +inf
    x[16, :] = -np.inf  # no probability anywhere
    x[17, 4] = np.nan  # NaN with a finite max
    x[30, 1] = np.nan
    x[30, 2] = np.inf  # NaN with an infinite max
    got = fn(x, axis=-1)
    assert bitwise_equal(got, fn(_strided_copy(x), axis=-1))
    finite = np.isfinite(x).all(axis=-1)
    xf = x[finite].astype(np.float64)
    m = xf.max(axis=-1, keepdims=True)
    lse = m + np.log(np.exp(xf - m).sum(axis=-1, keepdims=True))
    ref = {"logsumexp": lse[:, 0], "log_softmax": xf - lse, "softmax": np.exp(xf - lse)}
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got[finite], ref[fn.__name__], rtol=rtol, atol=1e-6 * rtol)
    if fn is xent.logsumexp:
        assert got[2] == np.inf and got[16] == -np.inf
        assert np.isnan(got[17]) and np.isnan(got[30])
    else:
        assert np.isnan(got[16]).all() and np.isnan(got[17]).all() and np.isnan(got[30]).all()


@pytest.mark.parametrize("fn", NORMALISERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("C", [33, 100, 513])
def test_normalisers_float16_batches_same_bits_as_float32(rng, fn, C):
    x = (rng.standard_normal((40, C)) * 4).astype(np.float16)
    x[5, :] = -np.inf
    x[21, 0] = np.inf
    got = fn(x, axis=-1)
    assert got.dtype == np.float32
    assert bitwise_equal(got, fn(x.astype(np.float32), axis=-1))
    assert bitwise_equal(got, fn(_strided_copy(x), axis=-1))
