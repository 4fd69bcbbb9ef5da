"""The few-class path: rows with C <= 32 classes are processed many rows at a time,
transposed so the arithmetic vectorises across rows (``_tile`` / ``_ce_tiles``).

It only engages with enough rows (>= 32) and unit class stride, so these tests use
hundreds of rows, every C up to the threshold and just above it, and put the
non-finite and ignored rows at tile boundaries (tiles are 256 rows).
"""

import numpy as np
import pytest

import xent
from helpers import assert_same_bits_for_thread_counts
from references import ref_cross_entropy, ref_log_softmax, ref_logsumexp, ref_softmax

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
    assert_same_bits_for_thread_counts(
        lambda: (xent.log_softmax(x), xent.cross_entropy(x, t, return_grad=True))
    )


# ---- rows read in place (xent/portable/tiles.h): 2 <= C <= 16, forward, no label smoothing -------
#
# These rows are computed 16 at a time (a "group"), one row per SIMD lane, by a
# function specialised for each C; a tile's last N % 16 rows go through a padded
# copy.  N_IN_PLACE = 2 full tiles + 3 full groups + 5 rows, so every C sees full
# groups, a ragged tile and a padded tail.  The forward call without options is
# the 2-D fast path (indices checked, losses summed per tile); with weights, or
# reduction="none", it is the general path through the same functions.

GROUP = 16
N_IN_PLACE = 2 * TILE + 3 * GROUP + 5
DIRECT_C = list(range(2, 17))


def _in_place_case(C, dtype, seed=0):
    rng = np.random.default_rng(1000 * C + seed)
    x = (rng.standard_normal((N_IN_PLACE, C)) * 4).astype(dtype)
    t = rng.integers(0, C, N_IN_PLACE)
    # inside groups of the first tile, not on any boundary
    t[[5, 21, 300]] = -100  # ignored rows, one of them all NaN
    x[21, :] = np.nan
    x[37, 0] = np.nan  # NaN in a counted row: NaN loss
    x[40, t[40]] = -np.inf  # -inf at the target: +inf loss
    x[41, (t[41] + 1) % C] = -np.inf  # -inf elsewhere: a finite loss
    x[42, :] = 50.0  # k = C entries equal to the max
    x[43, :] = -1e30 if dtype == np.float32 else -1e300  # huge, equal
    x[44, t[44]] += 40.0  # confident: the loss is a tiny log1p
    x[45, (t[45] + 1) % C] = np.inf  # lone +inf off the target: +inf loss
    x[46, :] = -np.inf  # no class has probability: NaN loss
    x[47, t[47]] = np.inf  # lone +inf at the target: loss 0
    x[48, [t[48], (t[48] + 1) % C]] = np.inf  # two +inf, one the target: loss log 2
    x[N_IN_PLACE - 2, t[N_IN_PLACE - 2]] = -np.inf  # in the padded tail
    x[N_IN_PLACE - 3, 0] = np.nan
    t[N_IN_PLACE - 1] = -100
    return x, t


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", DIRECT_C)
def test_in_place_rows_per_row_losses(C, dtype):
    x, t = _in_place_case(C, dtype)
    expected, _ = ref_cross_entropy(x, t, reduction="none")
    loss = xent.cross_entropy(x, t, reduction="none")
    assert loss.dtype == dtype
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(loss, expected, **_tols(dtype))
    assert np.isnan(loss[37]) and np.isnan(loss[46])
    assert loss[40] == np.inf and loss[45] == np.inf and loss[47] == 0
    np.testing.assert_allclose(loss[48], np.log(2), rtol=1e-6)
    assert loss[5] == 0 and loss[21] == 0 and loss[N_IN_PLACE - 1] == 0
    assert 0 < loss[44] < 1e-10 if dtype == np.float64 else 0 <= loss[44] < 1e-10


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", DIRECT_C)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_in_place_rows_reduced(C, dtype, reduction):
    """The fast path (no options) and the general path (weights of one) agree
    bit for bit, and with the float64 reference on the finite rows."""
    x, t = _in_place_case(C, dtype)
    finite = np.isfinite(x).all(axis=1) | (t == -100)
    x, t = x[finite], t[finite]
    expected, _ = ref_cross_entropy(x, t, reduction=reduction)
    fast = xent.cross_entropy(x, t, reduction=reduction)
    general = xent.cross_entropy(x, t, reduction=reduction, weight=np.ones(C, dtype))
    assert type(fast) is np.dtype(dtype).type
    np.testing.assert_array_equal(fast, general)
    np.testing.assert_allclose(fast, expected, **_tols(dtype))
    # one non-finite row makes the reduced loss non-finite, from anywhere in a tile
    x[N_IN_PLACE // 3, (t[N_IN_PLACE // 3] + 1) % C] = np.nan
    assert np.isnan(xent.cross_entropy(x, t, reduction=reduction))


@pytest.mark.parametrize("C", [2, 3, 10, 16])
@pytest.mark.parametrize("tdtype", [np.int64, np.int32, np.uint8, np.int16, np.uint64])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "reversed"])
def test_in_place_rows_index_storage(C, tdtype, layout):
    """Every index dtype and layout (vectorised int64 / int32 loads and the generic
    one), logit rows further apart than C or in reverse order (class stride 1),
    and weights."""
    x, t = _in_place_case(C, np.float32, seed=1)
    ignore = -100 if np.dtype(tdtype).kind == "i" else 255 if tdtype == np.uint8 else 2**40
    t = np.where(t == -100, ignore, t)
    tt = t.astype(tdtype)
    xx = x
    if layout == "strided":
        tt = np.repeat(tt, 2)[::2]
        wide = np.full((x.shape[0], C + 3), 7.0, np.float32)
        wide[:, 1:C + 1] = x
        xx = wide[:, 1:C + 1]
    elif layout == "reversed":
        tt = tt[::-1].copy()[::-1]
        xx = x[::-1].copy()[::-1]
    w = np.random.default_rng(C).uniform(0.0, 2.0, C).astype(np.float32)
    w[0] = 0  # a zero weight: rows of class 0 cost exactly 0, even at +inf loss
    for kw in (dict(), dict(weight=w)):
        exp_none, _ = ref_cross_entropy(x, t, reduction="none", ignore_index=ignore, **kw)
        got = xent.cross_entropy(xx, tt, reduction="none", ignore_index=ignore, **kw)
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(got, exp_none, rtol=2e-5, atol=1e-6)
        keep = np.isfinite(exp_none)
        exp_mean, _ = ref_cross_entropy(x[keep], t[keep], ignore_index=ignore, **kw)
        got_mean = xent.cross_entropy(np.ascontiguousarray(xx[keep]), tt[keep],
                                      ignore_index=ignore, **kw)
        np.testing.assert_allclose(got_mean, exp_mean, rtol=2e-5)


@pytest.mark.parametrize("C", [2, 7, 10, 16])
@pytest.mark.parametrize("where", [3, TILE + 17, N_IN_PLACE - 2])
@pytest.mark.parametrize("bad", [-1, "C", -101])
def test_in_place_rows_out_of_range_index(C, where, bad):
    """An index outside [0, C) in a full group, a later tile or the padded tail
    raises IndexError naming it, through the fast path and the general one."""
    x, t = _in_place_case(C, np.float32, seed=2)
    t[where] = C if bad == "C" else bad
    for kw in (dict(), dict(reduction="none"), dict(weight=np.ones(C, np.float32))):
        with pytest.raises(IndexError, match=str(t[where])):
            xent.cross_entropy(x, t, **kw)


@pytest.mark.parametrize("C", [3, 10])
def test_in_place_rows_z_loss_and_gradient_paths_agree(C):
    """z-loss (from the logsumexp of these rows) and the gradient calls (the
    transposed tiles) give the loss of the forward-only call."""
    x, t = _in_place_case(C, np.float32, seed=3)
    x[43] = 1.0  # not -1e30: its lse**2 would overflow float32
    finite = np.isfinite(x).all(axis=1) | (t == -100)
    x, t = x[finite], t[finite]
    for red in ("mean", "sum", "none"):
        exp_l, _ = ref_cross_entropy(x, t, reduction=red, z_loss=1e-3)
        got = xent.cross_entropy(x, t, reduction=red, z_loss=1e-3)
        np.testing.assert_allclose(got, exp_l, rtol=2e-5, atol=1e-6)
        with_grad, _ = xent.cross_entropy(x, t, reduction=red, return_grad=True)
        np.testing.assert_allclose(xent.cross_entropy(x, t, reduction=red), with_grad,
                                   rtol=2e-6, atol=1e-7)


def test_in_place_rows_threads_bitwise():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((100 * TILE + 9, 10)) * 3).astype(np.float32)
    t = rng.integers(0, 10, x.shape[0])
    t[::13] = -100
    assert_same_bits_for_thread_counts(
        lambda: (xent.cross_entropy(x, t), xent.cross_entropy(x, t, reduction="sum"),
                 xent.cross_entropy(x, t, reduction="none"))
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [3, 8, 10, 17])
def test_tiles_write_back_into_padded_and_reversed_rows(dtype, C):
    """A tile's results go back to its rows (by registers, eight rows at a time, in
    the AVX2 build): into rows with padding around them (row stride > C) and into
    rows in reverse order, every value lands where it belongs and nothing else is
    written, for full and ragged tiles and blocks of eight."""
    rng = np.random.default_rng(C)
    x = (rng.standard_normal((N_ROWS, C)) * 3).astype(dtype)
    t = rng.integers(0, C, N_ROWS)
    tol = _tols(dtype)
    fill = dtype(1234.5)
    want_ls = ref_log_softmax(x.astype(np.float64), -1)
    onehot = np.eye(C)[t]
    want_g = ref_softmax(x.astype(np.float64), -1) - onehot
    for name, call, want in [
        ("log_softmax", lambda o: xent.log_softmax(x, out=o), want_ls),
        ("softmax", lambda o: xent.softmax(x, out=o), np.exp(want_ls)),
        ("grad", lambda o: xent.cross_entropy(x, t, reduction="sum", return_grad=True,
                                              grad_out=o), want_g),
    ]:
        padded = np.full((N_ROWS, C + 5), fill, dtype)
        call(padded[:, 2:2 + C])
        np.testing.assert_allclose(padded[:, 2:2 + C], want, err_msg=name, **tol)
        assert (padded[:, :2] == fill).all() and (padded[:, 2 + C:] == fill).all(), name
        reversed_rows = np.full((N_ROWS, C), fill, dtype)
        call(reversed_rows[::-1])
        np.testing.assert_allclose(reversed_rows[::-1], want, err_msg=name, **tol)
