"""The few-class path: rows with C <= 32 classes are processed many rows at a time,
transposed so the arithmetic vectorises across rows (``_tile`` / ``_ce_tiles``).

It only engages with enough rows (>= 32) and unit class stride, so these tests use
hundreds of rows, every C up to the threshold and just above it, and put the
non-finite and ignored rows at tile boundaries (tiles are 256 rows).
"""

import numpy as np
import pytest

import xent
from conftest import ref_log_softmax, ref_logsumexp, ref_softmax
from loss_refs import ref_cross_entropy

TILE = 256
N_ROWS = 2 * TILE + 37  # two full tiles and a ragged one


def _logits(rng, C, dtype, special):
    x = (rng.standard_normal((N_ROWS, C)) * 3).astype(dtype)
    if special:
        x[TILE - 1, 0] = np.nan  # last row of the first tile
        x[TILE, :] = -np.inf  # first row of the second tile: no class has probability
        x[TILE + 5, C // 2] = np.inf  # a lone +inf
        x[N_ROWS - 1, :] = np.inf  # every entry +inf
        x[3, :] = 1e30 if dtype == np.float64 else 1e30  # huge, equal
        x[7, 0] = -np.inf  # a -inf class in a finite row
    return x


def _tols(dtype):
    return dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [1, 2, 3, 7, 10, 16, 17, 31, 32, 33])
@pytest.mark.parametrize("special", [False, True], ids=["finite", "special"])
def test_normalizers_few_classes(dtype, C, special):
    rng = np.random.default_rng(C)
    x = _logits(rng, C, dtype, special)
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(xent.logsumexp(x), ref_logsumexp(x, -1), **_tols(dtype))
        np.testing.assert_allclose(xent.log_softmax(x), ref_log_softmax(x, -1), **_tols(dtype))
        np.testing.assert_allclose(xent.softmax(x), ref_softmax(x, -1), **_tols(dtype))
    # in place and into a strided output give the same bits
    expected = xent.log_softmax(x)
    y = x.copy()
    assert xent.log_softmax(y, out=y) is y
    np.testing.assert_array_equal(y, expected)
    out = np.empty((C, N_ROWS), dtype).T
    xent.softmax(x, out=out)
    np.testing.assert_array_equal(out, xent.softmax(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [1, 2, 5, 10, 16, 32, 33])
@pytest.mark.parametrize("options", [
    dict(),
    dict(weighted=True),
    dict(label_smoothing=0.2),
    dict(weighted=True, label_smoothing=0.1, z_loss=1e-3),
], ids=["plain", "weight", "smooth", "all"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_few_classes(dtype, C, options, reduction):
    rng = np.random.default_rng(100 + C)
    x = _logits(rng, C, dtype, special=False)
    t = rng.integers(0, C, N_ROWS)
    t[::9] = -100
    t[TILE - 1] = -100
    x[TILE - 1, :] = np.nan  # ignored rows cost exactly 0, even all NaN
    x[7, t[7]] = -np.inf if t[7] >= 0 else x[7, t[7]]  # -inf target: +inf loss
    kw = dict(reduction=reduction, label_smoothing=options.get("label_smoothing", 0.0),
              z_loss=options.get("z_loss", 0.0))
    if options.get("weighted"):
        kw["weight"] = rng.uniform(0.2, 2.0, C).astype(dtype)
    exp_loss, exp_grad = ref_cross_entropy(x, t, **kw)
    loss, grad = xent.cross_entropy(x, t, return_grad=True, **kw)
    tol = _tols(dtype)
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(loss, exp_loss, rtol=max(tol["rtol"], 1e-5 if dtype == np.float32 else 0),
                                   atol=tol["atol"])
        # softmax - onehot cancels in the computation dtype: the absolute error scales
        # with the per-row factor (1/N under "mean"), not with the result
        scale = 1.0 / N_ROWS if reduction == "mean" else 1.0
        np.testing.assert_allclose(grad, exp_grad, rtol=tol["rtol"],
                                   atol=scale * (1e-6 if dtype == np.float32 else 1e-13))
    assert (grad[TILE - 1] == 0).all()
    # in place: the same bits
    y = x.copy()
    loss2, g2 = xent.cross_entropy(y, t, return_grad=True, grad_out=y, **kw)
    assert g2 is y
    np.testing.assert_array_equal(y, grad)
    np.testing.assert_array_equal(loss2, loss)


@pytest.mark.parametrize("C", [4, 16])
def test_cross_entropy_few_classes_special_rows(C):
    """A tile holding a +inf or all -inf row takes the row path for the whole tile."""
    rng = np.random.default_rng(C)
    x = (rng.standard_normal((N_ROWS, C)) * 2).astype(np.float32)
    t = rng.integers(0, C, N_ROWS)
    x[10, :] = -np.inf
    x[11, :] = -5.0
    x[11, t[11]] = np.inf  # lone +inf at the target: loss 0, gradient 0
    x[300, (t[300] + 1) % C] = np.inf  # +inf elsewhere: loss +inf
    loss, grad = xent.cross_entropy(x, t, reduction="none", return_grad=True)
    exp_loss, exp_grad = ref_cross_entropy(x, t, reduction="none")
    assert np.isnan(loss[10]) and loss[11] == 0 and loss[300] == np.inf
    assert (grad[11] == 0).all()
    keep = np.ones(N_ROWS, bool)
    keep[[10]] = False
    np.testing.assert_allclose(loss[keep], exp_loss[keep], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad[keep], exp_grad[keep], rtol=2e-5, atol=1e-6)


def test_few_classes_threads_bitwise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40000, 10)).astype(np.float32)
    t = rng.integers(0, 10, 40000)
    previous = xent.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            xent.set_num_threads(n)
            results.append((xent.log_softmax(x), xent.cross_entropy(x, t, return_grad=True)))
    finally:
        xent.set_num_threads(previous)
    for lsm, (loss, grad) in results[1:]:
        np.testing.assert_array_equal(lsm, results[0][0])
        assert loss == results[0][1][0]
        np.testing.assert_array_equal(grad, results[0][1][1])
