"""Tests for xent.nll_loss and xent.focal_loss.

Values are checked against the float64 NumPy references of references.py and against
hand-computed numbers.  PyTorch parity of nll_loss lives in test_torch_parity_losses.py
(PyTorch has no multiclass focal loss, so focal_loss is checked against NumPy only).
"""

import math
import re
import zlib

import numpy as np
import pytest

import xent
from helpers import (
    REDUCTIONS,
    assert_close,
    assert_same_bits_for_thread_counts,
    bitwise_equal,
    check_loss,
    computation_dtype,
    finite_scale,
    loss_tol,
    make_case,
    pos_pattern,
    target_shape,
    with_layout,
)
from references import ref_cross_entropy, ref_focal_loss, ref_nll_loss

inf = np.inf
nan = np.nan
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
CASES = [
    ((11, 7), -1),
    ((11, 7), 0),
    ((3, 5, 4, 2), 1),
    ((4, 3, 6), -1),
    ((5, 1), -1),
]
CASE_IDS = [f"{'x'.join(map(str, s))}-ax{a}" for s, a in CASES]


# ===========================================================================
# nll_loss
# ===========================================================================


def test_nll_hand_computed():
    lp = np.array([[-0.5, -1.0, -2.0], [-3.0, -0.1, -0.2], [nan, 1.0, 2.0]])
    t = np.array([2, 0, -100])
    w = np.array([2.0, 1.0, 0.5])
    np.testing.assert_allclose(xent.nll_loss(lp, t, reduction="none"), [2.0, 3.0, 0.0], rtol=1e-15)
    assert xent.nll_loss(lp, t) == pytest.approx(2.5, rel=1e-15)
    assert xent.nll_loss(lp, t, reduction="sum") == pytest.approx(5.0, rel=1e-15)
    # weighted: -w[t]·lp / Σ w[t]
    assert xent.nll_loss(lp, t, weight=w) == pytest.approx((0.5 * 2.0 + 2.0 * 3.0) / 2.5, rel=1e-15)
    np.testing.assert_allclose(
        xent.nll_loss(lp, t, weight=w, reduction="none"), [1.0, 6.0, 0.0], rtol=1e-15
    )


def test_nll_log_probs_need_not_be_normalized():
    """As torch.nn.functional.nll_loss: just -w[t]·input[t], whatever the row holds."""
    x = np.array([[3.0, 5.0, 7.0], [-1.0, 10.0, 0.0]])
    t = np.array([1, 2])
    np.testing.assert_allclose(xent.nll_loss(x, t, reduction="none"), [-5.0, 0.0])


@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("layout", ["C", "strided"])
@pytest.mark.parametrize("shape,axis", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_nll_matrix(dtype, shape, axis, layout, weighted, num_threads):
    rng = np.random.default_rng(zlib.crc32(repr((shape, axis, np.dtype(dtype).name)).encode()))
    x0, t0 = make_case(rng, shape, axis, dtype)
    w = rng.uniform(0.2, 2.0, shape[axis]) if weighted else None
    x = with_layout(x0, layout, readonly=True)
    t = with_layout(t0, layout, readonly=True)
    comp = computation_dtype(dtype)
    for reduction in REDUCTIONS:
        expected = ref_nll_loss(x0, t0, axis=axis, weight=w, reduction=reduction)
        res = xent.nll_loss(x, t, axis=axis, weight=w, reduction=reduction)
        check_loss(res, expected, comp, finite_scale(x0), reduction, t0.size, err_msg=reduction)
        if reduction == "none":
            assert res.shape == target_shape(shape, axis)
    assert bitwise_equal(x, x0) and bitwise_equal(t, t0)


def test_nll_defaults(rng):
    x, t = make_case(rng, (9, 4), -1, np.float64)
    res = xent.nll_loss(x, t)
    assert type(res) is np.float64
    assert res == pytest.approx(ref_nll_loss(x, t), rel=1e-13)
    with pytest.raises(TypeError):
        xent.nll_loss(x, t, -1)  # keyword-only


@pytest.mark.parametrize("tdtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_nll_target_dtypes(tdtype, rng):
    x, t = make_case(rng, (10, 6), -1, np.float32, ignore_frac=0)
    expected = ref_nll_loss(x, t, reduction="none")
    res = xent.nll_loss(x, t.astype(tdtype), reduction="none")
    check_loss(res, expected, np.float32, finite_scale(x), "none")


@pytest.mark.parametrize("tdtype,ignore_index", [(np.int64, 2), (np.uint8, 255), (np.int16, -1)])
def test_nll_ignore_index(tdtype, ignore_index, rng):
    x, t = make_case(rng, (10, 5), -1, np.float64, ignore_frac=0)
    t[[0, 3]] = ignore_index
    t = t.astype(tdtype)
    x[0] = nan
    for red in REDUCTIONS:
        expected = ref_nll_loss(x, t.astype(np.int64), ignore_index=ignore_index, reduction=red)
        res = xent.nll_loss(x, t, ignore_index=ignore_index, reduction=red)
        check_loss(res, expected, np.float64, finite_scale(x), red, 10)
        assert not np.isnan(res).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nll_empty_all_ignored_zero_weight(dtype):
    x = np.array([[-1.0, -2.0], [nan, nan]], dtype=dtype)
    t = np.array([-100, -100])
    for args in ((x, t), (np.zeros((0, 2), dtype=dtype), np.zeros(0, dtype=np.int64))):
        m = xent.nll_loss(*args)
        assert type(m) is np.dtype(dtype).type and np.isnan(m)
        s = xent.nll_loss(*args, reduction="sum")
        assert type(s) is np.dtype(dtype).type and s == 0
        n = xent.nll_loss(*args, reduction="none")
        assert n.shape == args[1].shape and (n == 0).all()
    assert np.isnan(xent.nll_loss(x[:1], np.array([1]), weight=np.array([1.0, 0.0])))


def test_nll_nonfinite_target_entries():
    x = np.array([[-inf, -1.0], [nan, -1.0], [-1.0, -inf]])
    t = np.array([0, 0, 0])
    res = xent.nll_loss(x, t, reduction="none")
    assert res[0] == inf and np.isnan(res[1]) and res[2] == 1.0


def test_nll_one_dimensional():
    lp = np.array([-0.5, -1.5, -2.5])
    res = xent.nll_loss(lp, 1, reduction="none")
    assert np.shape(res) == () and float(res) == 1.5
    assert float(xent.nll_loss(lp, np.uint8(2))) == 2.5


# ===========================================================================
# focal_loss
# ===========================================================================


def test_focal_hand_computed():
    x = np.array([[0.0, math.log(3.0)], [2.0, 2.0], [1.0, nan]])
    t = np.array([1, 0, -100])
    # row 0: p_t = 3/4; row 1: p_t = 1/2
    r0 = -(0.25**2) * math.log(0.75)
    r1 = -(0.5**2) * math.log(0.5)
    np.testing.assert_allclose(xent.focal_loss(x, t, reduction="none"), [r0, r1, 0.0], rtol=1e-13)
    assert xent.focal_loss(x, t) == pytest.approx((r0 + r1) / 2, rel=1e-13)
    assert xent.focal_loss(x, t, reduction="sum") == pytest.approx(r0 + r1, rel=1e-13)
    # gamma = 1, scalar alpha
    np.testing.assert_allclose(
        xent.focal_loss(x, t, gamma=1.0, alpha=0.25, reduction="none"),
        [-0.25 * 0.25 * math.log(0.75), -0.25 * 0.5 * math.log(0.5), 0.0],
        rtol=1e-13,
    )
    # alpha per class; "mean" divides by the number of non-ignored rows, not Σ α_t
    a = np.array([0.1, 0.9])
    assert xent.focal_loss(x, t, alpha=a) == pytest.approx((0.9 * r0 + 0.1 * r1) / 2, rel=1e-13)


@pytest.mark.parametrize("alpha", [None, 0.25, "array"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.7])
@pytest.mark.parametrize("shape,axis", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_focal_matrix(dtype, shape, axis, gamma, alpha):
    rng = np.random.default_rng(zlib.crc32(repr((shape, axis, np.dtype(dtype).name)).encode()))
    x, t = make_case(rng, shape, axis, dtype)
    if isinstance(alpha, str):
        alpha = rng.uniform(0.1, 1.0, shape[axis])
    for reduction in REDUCTIONS:
        kw = dict(axis=axis, gamma=gamma, alpha=alpha, reduction=reduction)
        expected = ref_focal_loss(x, t, **kw)
        res = xent.focal_loss(x, t, **kw)
        check_loss(res, expected, computation_dtype(dtype), finite_scale(x), reduction, t.size, err_msg=reduction)
        if reduction == "none":
            assert res.shape == t.shape


@pytest.mark.parametrize("layout", ["F", "strided"])
def test_focal_layouts_and_readonly(layout, num_threads, rng):
    x0, t0 = make_case(rng, (40, 9), -1, np.float32)
    x = with_layout(x0, layout, readonly=True)
    t = with_layout(t0, layout, readonly=True)
    for axis, xx, tt, xr in ((-1, x, t, x0), (0, x.T, t, x0.T)):
        expected = ref_focal_loss(xr, tt, axis=axis, gamma=1.5, alpha=0.5, reduction="none")
        res = xent.focal_loss(xx, tt, axis=axis, gamma=1.5, alpha=0.5, reduction="none")
        check_loss(res, expected, np.float32, finite_scale(x0), "none")
    assert bitwise_equal(x, x0)


def test_focal_defaults(rng):
    x, t = make_case(rng, (9, 4), -1, np.float64)
    res = xent.focal_loss(x, t)
    assert type(res) is np.float64
    assert res == pytest.approx(ref_focal_loss(x, t, gamma=2.0), rel=1e-12)
    with pytest.raises(TypeError):
        xent.focal_loss(x, t, -1)  # keyword-only


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((13, 6), -1), ((2, 5, 3, 3), 1)])
def test_focal_gamma0_equals_cross_entropy(shape, axis, dtype, reduction, rng):
    x, t = make_case(rng, shape, axis, dtype)
    f = xent.focal_loss(x, t, axis=axis, gamma=0.0, reduction=reduction)
    c = xent.cross_entropy(x, t, axis=axis, reduction=reduction)
    rtol, atol = loss_tol(dtype, finite_scale(x))
    assert type(f) is type(c)
    np.testing.assert_allclose(np.asarray(f), np.asarray(c), rtol=rtol, atol=atol * (t.size if reduction == "sum" else 1))
    # and both equal the cross-entropy reference
    exp, _ = ref_cross_entropy(x, t, axis=axis, reduction=reduction)
    check_loss(f, exp, dtype, finite_scale(x), reduction, t.size)


@pytest.mark.parametrize("tdtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_focal_target_dtypes(tdtype, rng):
    x, t = make_case(rng, (10, 6), -1, np.float64, ignore_frac=0)
    expected = ref_focal_loss(x, t, reduction="none")
    res = xent.focal_loss(x, t.astype(tdtype), reduction="none")
    check_loss(res, expected, np.float64, finite_scale(x), "none")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_focal_ignored_rows_and_empty(dtype, rng):
    x, t = make_case(rng, (8, 5), -1, dtype, ignore_frac=0)
    t[[1, 6]] = -100
    x[1] = nan
    x[6, 2] = inf
    a = np.linspace(0.2, 1.0, 5)
    for red in REDUCTIONS:
        expected = ref_focal_loss(x, t, alpha=a, gamma=2.0, reduction=red)
        res = xent.focal_loss(x, t, alpha=a, reduction=red)
        check_loss(res, expected, dtype, 1.0 + finite_scale(x[[0, 2, 3, 4, 5, 7]]), red, 8)
        assert np.isfinite(res).all()
    tt = np.full(8, -100)
    m = xent.focal_loss(x, tt)
    assert type(m) is np.dtype(dtype).type and np.isnan(m)
    assert xent.focal_loss(x, tt, reduction="sum") == 0
    e = np.zeros((0, 5), dtype=dtype)
    assert np.isnan(xent.focal_loss(e, np.zeros(0, dtype=np.int64)))
    assert xent.focal_loss(e, np.zeros(0, dtype=np.int64), reduction="sum") == 0
    assert xent.focal_loss(e, np.zeros(0, dtype=np.int64), reduction="none").shape == (0,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_focal_nonfinite(dtype):
    x = np.array(
        [
            [inf, 0.0, 1.0],  # +inf at the target alone: p_t = 1, loss 0
            [0.0, -inf, 1.0],  # -inf on the target: +inf
            [0.0, -inf, 1.0],  # -inf elsewhere: finite
            [nan, 0.0, 1.0],  # NaN: NaN
            [inf, inf, 0.0],  # p_t = 1/2
        ],
        dtype=dtype,
    )
    t = np.array([0, 1, 2, 1, 1])
    p2 = math.e / (1 + math.e)
    expected = [0.0, inf, -((1 - p2) ** 2) * math.log(p2), nan, -(0.5**2) * math.log(0.5)]
    rtol, atol = loss_tol(dtype, 2.0)
    assert_close(xent.focal_loss(x, t, reduction="none"), expected, rtol, atol)


def test_focal_confident_rows_relative_accuracy():
    """Easy examples (p_t close to 1) are where focal loss matters: keep relative accuracy."""
    x = np.array([[20.0, 0.0, 0.0], [12.0, 0.0, -3.0]])
    t = np.array([0, 0])
    res = xent.focal_loss(x, t, gamma=2.0, reduction="none")
    for i in range(2):
        r = np.exp(x[i, 1:] - x[i, 0]).sum()  # Σ_{c≠t} e^(x_c - x_t)
        q = r / (1.0 + r)  # 1 - p_t without cancellation
        expected = q**2 * math.log1p(r)  # -log p_t = log(1 + r)
        assert res[i] == pytest.approx(expected, rel=1e-6)
        assert res[i] > 0


# ===========================================================================
# errors (both functions)
# ===========================================================================

FUNCS = ["nll_loss", "focal_loss"]


def _call(func, *args, **kwargs):
    return getattr(xent, func)(*args, **kwargs)


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize(
    "bad_value,tdtype", [(7, np.int64), (-1, np.int64), (19, np.uint8), (2**63 + 3, np.uint64), (-99, np.int16)]
)
def test_target_out_of_range(func, bad_value, tdtype, rng):
    x = rng.standard_normal((6, 5))
    t = rng.integers(0, 5, size=6).astype(tdtype)
    t[2] = bad_value
    t[5] = bad_value
    xs, ts = x.copy(), t.copy()
    with pytest.raises(IndexError) as ei:
        _call(func, x, t)
    msg = str(ei.value)
    assert str(bad_value) in msg, msg
    assert re.search(pos_pattern((2,), 2), msg), f"no position in {msg!r}"
    assert bitwise_equal(x, xs) and bitwise_equal(t, ts)


@pytest.mark.parametrize("func", FUNCS)
def test_target_out_of_range_multidim(func, rng):
    x = rng.standard_normal((2, 4, 3, 5))
    t = rng.integers(0, 4, size=(2, 3, 5))
    t[1, 0, 3] = 8
    with pytest.raises(IndexError) as ei:
        _call(func, x, t, axis=1)
    msg = str(ei.value)
    assert "8" in msg
    assert re.search(pos_pattern((1, 0, 3), 15 + 3), msg), f"no position in {msg!r}"


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("tshape", [(7,), (5,), (6, 1), (6, 5)])
def test_target_shape_mismatch(func, tshape, rng):
    x = rng.standard_normal((6, 5))
    t = np.zeros(tshape, dtype=np.int64)
    with pytest.raises(ValueError) as ei:
        _call(func, x, t)
    assert str(tshape) in str(ei.value), str(ei.value)


@pytest.mark.parametrize("func", FUNCS)
def test_float_targets_rejected(func, rng):
    x = rng.standard_normal((6, 5))
    with pytest.raises((TypeError, ValueError)):
        _call(func, x, np.zeros(6))
    with pytest.raises((TypeError, ValueError)):
        _call(func, x, np.full((6, 5), 0.2))


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("reduction", ["avg", "batchmean", None])
def test_unknown_reduction(func, reduction, rng):
    x = rng.standard_normal((6, 5))
    with pytest.raises(ValueError):
        _call(func, x, np.zeros(6, dtype=np.int64), reduction=reduction)


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("axis", [2, -3])
def test_axis_out_of_range(func, axis, rng):
    x = rng.standard_normal((6, 5))
    with pytest.raises(ValueError):
        _call(func, x, np.zeros(6, dtype=np.int64), axis=axis)


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize(
    "make",
    [
        lambda: np.ones((6, 5), dtype=np.complex128),
        lambda: np.ones((6, 5), dtype=object),
        lambda: np.full((6, 5), "a"),
    ],
    ids=["complex", "object", "str"],
)
def test_unsupported_input_dtypes(func, make):
    with pytest.raises(TypeError):
        _call(func, make(), np.zeros(6, dtype=np.int64))


@pytest.mark.parametrize("wshape", [(4,), (6,), (1, 5), ()])
def test_nll_bad_weight_shape(wshape, rng):
    x = rng.standard_normal((6, 5))
    with pytest.raises(ValueError):
        xent.nll_loss(x, np.zeros(6, dtype=np.int64), weight=np.ones(wshape))


@pytest.mark.parametrize("ashape", [(4,), (6,), (1, 5)])
def test_focal_bad_alpha_shape(ashape, rng):
    x = rng.standard_normal((6, 5))
    with pytest.raises(ValueError):
        xent.focal_loss(x, np.zeros(6, dtype=np.int64), alpha=np.ones(ashape))


# ===========================================================================
# threads
# ===========================================================================


def test_thread_count_determinism():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((4096, 512)) * 4).astype(np.float32)
    t = rng.integers(0, 512, size=4096)
    t[::5] = -100
    w = np.linspace(0.5, 2.0, 512)
    calls = [
        lambda: xent.nll_loss(x, t),
        lambda: xent.nll_loss(x, t, weight=w, reduction="sum"),
        lambda: xent.nll_loss(x, t, reduction="none"),
        lambda: xent.focal_loss(x, t),
        lambda: xent.focal_loss(x, t, gamma=1.5, alpha=w, reduction="none"),
        lambda: xent.focal_loss(np.ascontiguousarray(x[:, :40].T), np.where(t < 0, t, t % 40), axis=0),
    ]
    for i, call in enumerate(calls):
        assert_same_bits_for_thread_counts(call, what=f"call {i}")
