"""Tests for xent.cross_entropy (loss and fused gradient).

Values are checked against the float64 NumPy references of references.py (written from
the SPEC's formulas, independent of xent), against hand-computed numbers, and against
central finite differences.  PyTorch parity lives in test_torch_parity_losses.py.
The only xent-vs-xent comparisons are thread-count determinism, in-place vs
out-of-place, and return_grad=True vs False.
"""

import math
import re
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xent
from helpers import (
    REDUCTIONS,
    SENTINEL,
    assert_close,
    assert_same_bits_for_thread_counts,
    bitwise_equal,
    ce_grad_scale,
    central_difference,
    check_grad,
    check_loss,
    computation_dtype,
    finite_scale,
    loss_tol,
    make_case,
    random_prob_targets,
    target_shape,
    with_layout,
)
from helpers import assert_untouched as _assert_untouched
from helpers import pos_pattern as _pos_pattern
from helpers import sentinel as _sentinel
from references import ref_cross_entropy

inf = np.inf
nan = np.nan


# ---------------------------------------------------------------------------
# the reference itself, against hand-computed values
# ---------------------------------------------------------------------------


def test_reference_hand_computed():
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [5.0, -1.0, 2.0]])
    t = np.array([2, 0, -100])
    lse0 = math.log(math.e + math.e**2 + math.e**3)
    l0 = lse0 - 3.0
    l1 = math.log(3.0)
    loss, grad = ref_cross_entropy(x, t, reduction="none")
    np.testing.assert_allclose(loss, [l0, l1, 0.0], rtol=1e-15)
    p0 = np.exp(x[0] - lse0)
    np.testing.assert_allclose(grad[0], p0 - [0, 0, 1], rtol=1e-14)
    np.testing.assert_allclose(grad[1], np.array([1, 1, 1]) / 3 - [1, 0, 0], rtol=1e-14)
    assert (grad[2] == 0).all()
    assert ref_cross_entropy(x, t)[0] == pytest.approx((l0 + l1) / 2, rel=1e-15)
    # weights, smoothing, z-loss, written out term by term
    w = np.array([0.5, 2.0, 3.0])
    eps, z = 0.3, 0.01
    lp0 = x[0] - lse0
    lp1 = x[1] - l1
    r0 = (1 - eps) * 3.0 * (-lp0[2]) + eps / 3 * -(w * lp0).sum() + z * lse0**2
    r1 = (1 - eps) * 0.5 * (-lp1[0]) + eps / 3 * -(w * lp1).sum() + z * l1**2
    loss, _ = ref_cross_entropy(x, t, weight=w, label_smoothing=eps, z_loss=z, reduction="none")
    np.testing.assert_allclose(loss, [r0, r1, 0.0], rtol=1e-14)
    mean, _ = ref_cross_entropy(x, t, weight=w, label_smoothing=eps, z_loss=z)
    ce0, ce1 = r0 - z * lse0**2, r1 - z * l1**2
    assert mean == pytest.approx((ce0 + ce1) / 3.5 + z * (lse0**2 + l1**2) / 2, rel=1e-14)
    # probability targets
    tp = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    loss, _ = ref_cross_entropy(x, tp, reduction="none")
    lsm = x - np.array([lse0, l1, math.log(math.exp(5) + math.exp(-1) + math.exp(2))])[:, None]
    np.testing.assert_allclose(loss, -(tp * lsm).sum(1), rtol=1e-14)


# ---------------------------------------------------------------------------
# the main matrix: dtype x layout x axis x target kind x reduction
# ---------------------------------------------------------------------------

MATRIX_CASES = [
    ((9, 7), -1),
    ((9, 7), 0),
    ((3, 5, 4, 2), 1),  # (N, C, H, W), segmentation-like
    ((4, 3, 6), -1),  # (batch, time, classes)
    ((6, 1), -1),  # one class
]


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize(
    "shape,axis", MATRIX_CASES, ids=[f"{'x'.join(map(str, s))}-ax{a}" for s, a in MATRIX_CASES]
)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_matrix(dtype, shape, axis, layout, kind, num_threads):
    for reduction in REDUCTIONS:
        _matrix_case(dtype, shape, axis, layout, kind, reduction)


def _matrix_case(dtype, shape, axis, layout, kind, reduction):
    rng = np.random.default_rng(zlib.crc32(repr((shape, axis, kind, np.dtype(dtype).name)).encode()))
    x0, t0 = make_case(rng, shape, axis, dtype, kind)
    C = shape[axis]
    w = rng.uniform(0.5, 2.0, size=C)
    kw = dict(axis=axis, weight=w, reduction=reduction, label_smoothing=0.1, z_loss=1e-3)
    x = with_layout(x0, layout, readonly=True)
    t = with_layout(t0, layout, readonly=True)
    comp = computation_dtype(dtype)

    exp_loss, exp_grad = ref_cross_entropy(x0, t0, **kw)
    scale = finite_scale(x0)
    n_rows = int(np.prod(target_shape(shape, axis)))

    loss = xent.cross_entropy(x, t, **kw)
    check_loss(loss, exp_loss, comp, scale, reduction, n_rows)
    if reduction == "none":
        assert loss.shape == target_shape(shape, axis)

    loss2, grad = xent.cross_entropy(x, t, return_grad=True, **kw)
    check_loss(loss2, exp_loss, comp, scale, reduction, n_rows)
    assert grad.dtype == comp and grad.shape == shape
    check_grad(grad, exp_grad, comp, scale, ce_grad_scale(t0, C, axis, w, reduction=reduction))
    assert bitwise_equal(x, x0) and bitwise_equal(t, t0), "inputs were modified"


# ---------------------------------------------------------------------------
# every option combination, against the reference
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("z_loss", [0.0, 0.01])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize(
    "kind,ignore", [("index", False), ("index", True), ("probs", False)], ids=["idx", "idx-ign", "probs"]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_options(dtype, kind, ignore, weighted, label_smoothing, z_loss, reduction):
    rng = np.random.default_rng(5)
    shape, axis = (13, 6), -1
    x, t = make_case(rng, shape, axis, dtype, kind, ignore_frac=0.3 if ignore else 0.0)
    w = rng.uniform(0.1, 3.0, size=6).astype(dtype) if weighted else None
    kw = dict(
        weight=w, reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss
    )
    exp_loss, exp_grad = ref_cross_entropy(x, t, **kw)
    loss, grad = xent.cross_entropy(x, t, return_grad=True, **kw)
    scale = finite_scale(x)
    check_loss(loss, exp_loss, dtype, scale, reduction, 13)
    check_grad(grad, exp_grad, dtype, scale, ce_grad_scale(t, 6, -1, w, reduction=reduction))
    loss_only = xent.cross_entropy(x, t, **kw)
    check_loss(loss_only, exp_loss, dtype, scale, reduction, 13)


def test_defaults_are_mean_no_weight_no_smoothing(rng):
    x, t = make_case(rng, (10, 5), -1, np.float64, "index")
    exp, _ = ref_cross_entropy(x, t)
    res = xent.cross_entropy(x, t)
    assert type(res) is np.float64
    assert res == pytest.approx(exp, rel=1e-12)


def test_keyword_only_arguments(rng):
    x, t = make_case(rng, (4, 3), -1, np.float64, "index")
    with pytest.raises(TypeError):
        xent.cross_entropy(x, t, -1)


def test_weighted_mean_divides_by_target_weight_sum():
    x = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, -1.0], [3.0, 3.0, 0.0]])
    t = np.array([0, 2, 1])
    w = np.array([1.0, 2.0, 4.0])
    lp = x - np.log(np.exp(x).sum(1, keepdims=True))
    li = -w[t] * lp[[0, 1, 2], t]
    assert xent.cross_entropy(x, t, weight=w) == pytest.approx(li.sum() / (1 + 4 + 2), rel=1e-13)
    assert xent.cross_entropy(x, t, weight=w, reduction="sum") == pytest.approx(li.sum(), rel=1e-13)


def test_probability_targets_mean_divides_by_rows_not_weights():
    x = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, -1.0]])
    tp = np.array([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]])
    w = np.array([3.0, 0.5, 2.0])
    lp = x - np.log(np.exp(x).sum(1, keepdims=True))
    li = -(w * tp * lp).sum(1)
    assert xent.cross_entropy(x, tp, weight=w) == pytest.approx(li.sum() / 2, rel=1e-13)
    # ignore_index does not apply to probability targets
    assert xent.cross_entropy(x, tp, weight=w, ignore_index=0) == pytest.approx(li.sum() / 2, rel=1e-13)


def test_z_loss_mean_is_not_class_weighted():
    x = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, -1.0], [4.0, 0.0, 0.0]])
    t = np.array([0, -100, 1])
    w = np.array([1.0, 5.0, 3.0])
    z = 0.25
    lse = np.log(np.exp(x).sum(1))
    lp = x - lse[:, None]
    ce = -w[0] * lp[0, 0] - w[1] * lp[2, 1]
    expected = ce / (w[0] + w[1]) + z * (lse[0] ** 2 + lse[2] ** 2) / 2
    assert xent.cross_entropy(x, t, weight=w, z_loss=z) == pytest.approx(expected, rel=1e-13)
    none = xent.cross_entropy(x, t, weight=w, z_loss=z, reduction="none")
    np.testing.assert_allclose(
        none, [-w[0] * lp[0, 0] + z * lse[0] ** 2, 0.0, -w[1] * lp[2, 1] + z * lse[2] ** 2], rtol=1e-13
    )
    # z-loss gradient: 2·z·lse·softmax per row, divided by the non-ignored row count
    _, g = xent.cross_entropy(x, t, z_loss=z, label_smoothing=0.0, return_grad=True, reduction="sum")
    p = np.exp(lp)
    onehot = np.zeros_like(x)
    onehot[0, 0] = onehot[2, 1] = 1
    exp_g = (p - onehot) + 2 * z * lse[:, None] * p
    exp_g[1] = 0
    np.testing.assert_allclose(g, exp_g, rtol=1e-12, atol=1e-14)


def test_z_loss_with_probability_targets():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4))
    tp = random_prob_targets(rng, (5, 4), -1)
    lse = np.log(np.exp(x).sum(1))
    lp = x - lse[:, None]
    z = 0.1
    expected = (-(tp * lp).sum(1) + z * lse**2).mean()
    assert xent.cross_entropy(x, tp, z_loss=z) == pytest.approx(expected, rel=1e-13)


def test_label_smoothing_one_is_uniform_target():
    x = np.array([[0.0, 1.0, 2.0, -3.0], [1.0, 0.5, 0.0, -1.0]])
    t = np.array([3, 1])
    lp = x - np.log(np.exp(x).sum(1, keepdims=True))
    expected = -lp.mean(axis=1)  # (1/C) Σ_c -lp
    np.testing.assert_allclose(
        xent.cross_entropy(x, t, label_smoothing=1.0, reduction="none"), expected, rtol=1e-13
    )


# ---------------------------------------------------------------------------
# targets: integer dtypes, ignore_index, layouts, lists
# ---------------------------------------------------------------------------

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("tdtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_target_integer_dtypes(tdtype, rng):
    x = rng.standard_normal((11, 6)).astype(np.float32)
    t = rng.integers(0, 6, size=11)
    expected, exp_grad = ref_cross_entropy(x, t, reduction="none")
    loss, grad = xent.cross_entropy(x, t.astype(tdtype), reduction="none", return_grad=True)
    check_loss(loss, expected, np.float32, finite_scale(x), "none")
    check_grad(grad, exp_grad, np.float32, finite_scale(x))


@pytest.mark.parametrize(
    "tdtype,ignore_index",
    [(np.int64, -1), (np.int64, 3), (np.int8, -100), (np.uint8, 255), (np.int32, 1000), (np.uint16, 65535)],
)
def test_ignore_index_values(tdtype, ignore_index, rng):
    x = rng.standard_normal((12, 5))
    t = rng.integers(0, 5, size=12)
    t_ig = t.copy()
    t_ig[[1, 4, 9]] = ignore_index
    t_ig = t_ig.astype(tdtype)  # with ignore_index=3, class 3 is ignored wherever it occurs
    for red in REDUCTIONS:
        exp, exp_g = ref_cross_entropy(x, t_ig.astype(np.int64), ignore_index=ignore_index, reduction=red)
        loss, g = xent.cross_entropy(x, t_ig, ignore_index=ignore_index, reduction=red, return_grad=True)
        check_loss(loss, exp, np.float64, finite_scale(x), red, 12)
        check_grad(g, exp_g, np.float64, finite_scale(x))
        ign = t_ig.astype(np.int64) == ignore_index
        assert (g[ign] == 0).all()
        if red == "none":
            assert (loss[ign] == 0).all()


def test_uint8_targets_default_ignore_index_ignores_nothing(rng):
    x = rng.standard_normal((8, 4))
    t = rng.integers(0, 4, size=8).astype(np.uint8)
    exp, _ = ref_cross_entropy(x, t.astype(np.int64))
    assert xent.cross_entropy(x, t) == pytest.approx(exp, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ignored_rows_with_nan_logits_contribute_nothing(dtype, reduction, rng):
    x = rng.standard_normal((7, 5)).astype(dtype)
    t = rng.integers(0, 5, size=7)
    t[[2, 5]] = -100
    x_bad = x.copy()
    x_bad[2] = nan
    x_bad[5, 1] = inf
    x_bad[5, 3] = -inf
    kw = dict(weight=np.linspace(0.5, 2.0, 5), label_smoothing=0.2, z_loss=0.01, reduction=reduction)
    exp, exp_g = ref_cross_entropy(x, t, **kw)
    loss, g = xent.cross_entropy(x_bad, t, return_grad=True, **kw)
    check_loss(loss, exp, dtype, finite_scale(x), reduction, 7)
    check_grad(g, exp_g, dtype, finite_scale(x))
    assert (g[[2, 5]] == 0).all()
    if reduction == "none":
        assert loss[2] == 0 and loss[5] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_ignored_and_empty(dtype):
    x = np.array([[1.0, 2.0, 3.0], [nan, 0.0, 1.0]], dtype=dtype)
    t = np.array([-100, -100])
    m = xent.cross_entropy(x, t)
    assert type(m) is np.dtype(dtype).type and np.isnan(m)
    s = xent.cross_entropy(x, t, reduction="sum")
    assert type(s) is np.dtype(dtype).type and s == 0
    n = xent.cross_entropy(x, t, reduction="none")
    assert n.tolist() == [0.0, 0.0]
    m2, g = xent.cross_entropy(x, t, return_grad=True, z_loss=0.1, label_smoothing=0.1)
    assert np.isnan(m2)
    assert g.shape == x.shape and (g == 0).all(), "ignored rows must have a zero gradient"
    # zero rows
    e = np.zeros((0, 3), dtype=dtype)
    te = np.zeros((0,), dtype=np.int64)
    me = xent.cross_entropy(e, te)
    assert type(me) is np.dtype(dtype).type and np.isnan(me)
    se = xent.cross_entropy(e, te, reduction="sum")
    assert type(se) is np.dtype(dtype).type and se == 0
    ne = xent.cross_entropy(e, te, reduction="none")
    assert ne.shape == (0,) and ne.dtype == dtype
    _, ge = xent.cross_entropy(e, te, return_grad=True)
    assert ge.shape == (0, 3) and ge.dtype == dtype
    # zero rows, probability targets
    mp = xent.cross_entropy(e, np.zeros((0, 3), dtype=dtype))
    assert np.isnan(mp)
    assert xent.cross_entropy(e, np.zeros((0, 3), dtype=dtype), reduction="sum") == 0


def test_zero_weight_sum_mean_is_nan():
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    t = np.array([0, 0])
    w = np.array([0.0, 1.0, 1.0])
    assert np.isnan(xent.cross_entropy(x, t, weight=w))
    assert xent.cross_entropy(x, t, weight=w, reduction="sum") == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_dtypes(dtype, rng):
    x = rng.standard_normal((9, 4)).astype(dtype)
    t = rng.integers(0, 4, size=9)
    w = np.array([0.5, 1.5, 2.0, 0.25])
    exp, exp_g = ref_cross_entropy(x, t, weight=w)
    for wd in (np.float16, np.float32, np.float64):
        loss, g = xent.cross_entropy(x, t, weight=w.astype(wd), return_grad=True)
        check_loss(loss, exp, dtype, finite_scale(x), "mean")
        check_grad(g, exp_g, dtype, finite_scale(x))
    # a list works as any array-like
    loss = xent.cross_entropy(x, t, weight=list(w))
    check_loss(loss, exp, dtype, finite_scale(x), "mean")


def test_list_and_array_like_inputs():
    x = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [2, 0]
    exp, _ = ref_cross_entropy(np.array(x), np.array(t), reduction="none")
    res = xent.cross_entropy(x, t, reduction="none")
    assert res.dtype == np.float64
    np.testing.assert_allclose(res, exp, rtol=1e-13)


def test_integer_logits_are_float64():
    x = np.array([[1, 2, 0], [0, -1, 3]], dtype=np.int32)
    t = np.array([2, 0])
    exp, exp_g = ref_cross_entropy(x, t)
    loss, g = xent.cross_entropy(x, t, return_grad=True)
    assert type(loss) is np.float64 and g.dtype == np.float64
    assert loss == pytest.approx(exp, rel=1e-13)
    np.testing.assert_allclose(g, exp_g, rtol=1e-12, atol=1e-15)


def test_one_dimensional_logits():
    x = np.array([1.0, 2.0, 0.5, -1.0])
    lse = np.log(np.exp(x).sum())
    for t in (2, np.int64(2), np.array(2, dtype=np.uint8)):
        res = xent.cross_entropy(x, t, reduction="none")
        assert np.shape(res) == ()
        assert float(res) == pytest.approx(lse - 0.5, rel=1e-13)
        m, g = xent.cross_entropy(x, t, return_grad=True)
        assert float(m) == pytest.approx(lse - 0.5, rel=1e-13)
        np.testing.assert_allclose(g, np.exp(x - lse) - [0, 0, 1, 0], rtol=1e-12, atol=1e-15)
    tp = np.array([0.1, 0.2, 0.3, 0.4])
    assert float(xent.cross_entropy(x, tp)) == pytest.approx(-(tp * (x - lse)).sum(), rel=1e-13)


def test_memmapped_readonly_inputs(tmp_path, rng):
    x = rng.standard_normal((30, 7)).astype(np.float32)
    t = rng.integers(0, 7, size=30)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "t.npy", t)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    tm = np.load(tmp_path / "t.npy", mmap_mode="r")
    exp, exp_g = ref_cross_entropy(x, t, label_smoothing=0.1)
    loss, g = xent.cross_entropy(xm, tm, label_smoothing=0.1, return_grad=True)
    check_loss(loss, exp, np.float32, finite_scale(x), "mean")
    check_grad(g, exp_g, np.float32, finite_scale(x))
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), x)


def test_bfloat16_logits(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = (rng.standard_normal((10, 6)) * 3).astype(ml_dtypes.bfloat16)
    t = rng.integers(0, 6, size=10)
    exp, exp_g = ref_cross_entropy(x, t, weight=np.arange(1.0, 7.0))
    loss, g = xent.cross_entropy(x, t, weight=np.arange(1.0, 7.0), return_grad=True)
    check_loss(loss, exp, np.float32, finite_scale(x), "mean")
    assert g.dtype == np.float32
    check_grad(g, exp_g, np.float32, finite_scale(x))


# ---------------------------------------------------------------------------
# non-finite logits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_nonfinite_rules(dtype):
    x = np.array(
        [
            [0.0, -inf, 1.0, 2.0],  # -inf on a non-target class: costs nothing
            [0.0, -inf, 1.0, 2.0],  # -inf on the target: +inf
            [inf, 0.0, 1.0, -inf],  # +inf at the target alone: 0
            [inf, inf, 1.0, -inf],  # two +inf, one of them the target: log 2
            [inf, 0.0, 1.0, 2.0],  # +inf elsewhere: +inf
            [nan, 0.0, 1.0, 2.0],  # NaN: NaN
            [1.0, 2.0, 3.0, 4.0],
        ],
        dtype=dtype,
    )
    t = np.array([2, 1, 0, 1, 3, 2, 3])
    L0 = math.log(1 + math.e + math.e**2)
    L7 = math.log(sum(math.exp(k) for k in (1, 2, 3, 4)))
    expected = np.array([L0 - 1.0, inf, 0.0, math.log(2), inf, nan, L7 - 4.0])
    comp = computation_dtype(dtype)
    rtol, atol = loss_tol(comp, 4.0)
    res = xent.cross_entropy(x, t, reduction="none")
    assert res.dtype == comp
    assert_close(res, expected, rtol, atol)
    res_g, g = xent.cross_entropy(x, t, reduction="none", return_grad=True)
    assert_close(res_g, expected, rtol, atol)
    # rows with a finite limit have the limit's gradient, softmax - onehot
    S0 = 1 + math.e + math.e**2
    assert_close(g[0], [1 / S0, 0.0, math.e / S0 - 1, math.e**2 / S0], rtol, atol)
    assert_close(g[2], [0.0, 0.0, 0.0, 0.0], rtol, atol)
    assert_close(g[3], [0.5, -0.5, 0.0, 0.0], rtol, atol)
    assert np.isnan(g[5]).all()
    # a non-finite row makes "mean"/"sum" non-finite, an ignored one does not
    assert np.isnan(xent.cross_entropy(x, t))
    assert xent.cross_entropy(x[[0, 1, 2]], t[[0, 1, 2]]) == inf
    assert xent.cross_entropy(x[[0, 2, 3]], t[[0, 2, 3]], reduction="sum") == pytest.approx(
        L0 - 1.0 + math.log(2), rel=rtol
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_class_axis_first(dtype):
    x = np.array([[0.0, -inf, 1.0, 2.0], [inf, 0.0, 1.0, -inf], [nan, 0.0, 1.0, 2.0]], dtype=dtype)
    t = np.array([2, 0, 1])
    expected = np.array([math.log(1 + math.e + math.e**2) - 1.0, 0.0, nan])
    rtol, atol = loss_tol(dtype, 4.0)
    assert_close(xent.cross_entropy(np.ascontiguousarray(x.T), t, axis=0, reduction="none"), expected, rtol, atol)


def test_probability_target_zero_on_neg_inf_class():
    """A zero target on a class of probability zero is 0·log 0 = 0, not NaN."""
    x = np.array([[0.0, -inf, 1.0], [-inf, 2.0, 2.0]])
    tp = np.array([[0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
    lse0 = math.log(1 + math.e)
    expected = [-(0.5 * (0 - lse0) + 0.5 * (1 - lse0)), math.log(2)]
    res, g = xent.cross_entropy(x, tp, reduction="none", return_grad=True)
    np.testing.assert_allclose(res, expected, rtol=1e-13)
    assert np.isfinite(g).all()
    assert g[0, 1] == 0 and g[1, 0] == 0


def test_huge_logits():
    x = np.array([[1e30, 0.0, -1e30], [3e38, 3e38, 0.0]], dtype=np.float32)
    t = np.array([0, 1])
    res, g = xent.cross_entropy(x, t, reduction="none", return_grad=True)
    np.testing.assert_allclose(res, [0.0, math.log(2)], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g, [[0, 0, 0], [0.5, -0.5, 0]], atol=1e-7)


# ---------------------------------------------------------------------------
# grad_out: separate buffers, in place, other dtypes
# ---------------------------------------------------------------------------

INPLACE_CASES = [
    ((9, 17), -1, "C"),
    ((9, 17), 0, "C"),
    ((9, 17), -1, "F"),
    ((9, 17), -1, "strided"),
    ((3, 5, 4, 2), 1, "C"),
    ((3, 5, 4, 2), 1, "strided"),
    ((2048, 130), -1, "C"),
]


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "shape,axis,layout", INPLACE_CASES, ids=[f"{'x'.join(map(str, s))}-ax{a}-{l}" for s, a, l in INPLACE_CASES]
)
def test_grad_out_in_place(shape, axis, layout, dtype, kind, num_threads):
    rng = np.random.default_rng(zlib.crc32(repr((shape, axis, kind)).encode()))
    x0, t = make_case(rng, shape, axis, dtype, kind)
    C = shape[axis]
    kw = dict(axis=axis, weight=rng.uniform(0.5, 2, C), label_smoothing=0.05, z_loss=1e-4)
    for red in REDUCTIONS:
        a = with_layout(x0, layout)
        b = with_layout(x0, layout)
        gb = np.full(shape, SENTINEL, dtype=dtype)
        lb, rb = xent.cross_entropy(b, t, reduction=red, return_grad=True, grad_out=gb, **kw)
        assert rb is gb
        la, ra = xent.cross_entropy(a, t, reduction=red, return_grad=True, grad_out=a, **kw)
        assert ra is a
        assert bitwise_equal(a, gb), f"{red}: in-place gradient differs from the out-of-place one"
        assert bitwise_equal(np.asarray(la), np.asarray(lb)), f"{red}: in-place loss differs"
        assert bitwise_equal(b, x0), "logits modified when grad_out is another buffer"
        exp_l, exp_g = ref_cross_entropy(x0, t, reduction=red, **kw)
        comp = computation_dtype(dtype)
        check_loss(la, exp_l, comp, finite_scale(x0), red, t.size if kind == "index" else t.size // C)
        rtol, atol = loss_tol(comp, finite_scale(x0))
        if dtype == np.float16:
            rtol, atol = max(rtol, 1e-3), max(atol * float(np.max(np.abs(exp_g))), 1e-7)
            assert_close(a, exp_g, rtol, atol)
        else:
            check_grad(a, exp_g, comp, finite_scale(x0), ce_grad_scale(t, C, axis, kw["weight"], reduction=red))
        if layout == "strided":
            base = a.base
            mask = np.ones(base.shape, bool)
            mask[(slice(None, None, -2),) + (slice(None, None, 2),) * (base.ndim - 1)] = False
            assert (base[mask] == 0).all(), "in-place call wrote outside its view"


@pytest.mark.parametrize("gdtype", [np.float32, np.float64])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_grad_out_any_float_dtype(dtype, gdtype, rng):
    x, t = make_case(rng, (8, 6), -1, dtype, "index")
    exp_l, exp_g = ref_cross_entropy(x, t, label_smoothing=0.1)
    g = np.full(x.shape, SENTINEL, dtype=gdtype)
    loss, r = xent.cross_entropy(x, t, label_smoothing=0.1, return_grad=True, grad_out=g)
    assert r is g and g.dtype == gdtype
    comp = computation_dtype(dtype)
    check_loss(loss, exp_l, comp, finite_scale(x), "mean")
    worst = np.dtype(comp) if np.dtype(gdtype).itemsize >= np.dtype(comp).itemsize else np.dtype(gdtype)
    check_grad(g, exp_g, worst, finite_scale(x))


def test_grad_out_non_contiguous(rng):
    x, t = make_case(rng, (10, 7), -1, np.float64, "index")
    exp_l, exp_g = ref_cross_entropy(x, t, reduction="sum")
    g = with_layout(np.full(x.shape, SENTINEL), "strided")
    loss, r = xent.cross_entropy(x, t, reduction="sum", return_grad=True, grad_out=g)
    assert r is g
    check_grad(g, exp_g, np.float64, finite_scale(x))
    base = g.base
    mask = np.ones(base.shape, bool)
    mask[::-2, ::2] = False
    assert (base[mask] == 0).all()
    gf = np.asfortranarray(np.full(x.shape, SENTINEL))
    xent.cross_entropy(x, t, reduction="sum", return_grad=True, grad_out=gf)
    check_grad(gf, exp_g, np.float64, finite_scale(x))


# ---------------------------------------------------------------------------
# validation: errors, and nothing written when a call raises
# ---------------------------------------------------------------------------


def _setup_err(rng, dtype=np.float64, shape=(6, 5)):
    x = rng.standard_normal(shape).astype(dtype)
    t = rng.integers(0, shape[-1], size=shape[:-1])
    return x, t


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize(
    "bad_value,tdtype", [(7, np.int64), (-1, np.int64), (17, np.int8), (2**63 + 5, np.uint64), (-101, np.int32)]
)
def test_target_out_of_range(bad_value, tdtype, in_place, rng):
    x, t = _setup_err(rng, shape=(6, 5))
    t = t.astype(tdtype)
    if tdtype != np.uint64:
        t[1] = -100  # an ignored row before the bad one
    t[3] = bad_value
    t[4] = bad_value  # only the first one must be named
    xs, ts = x.copy(), t.copy()
    g = x if in_place else _sentinel(x.shape)
    with pytest.raises(IndexError) as ei:
        xent.cross_entropy(x, t, return_grad=True, grad_out=g)
    msg = str(ei.value)
    assert str(bad_value) in msg, msg
    assert re.search(_pos_pattern((3,), 3), msg), f"no position in {msg!r}"
    _assert_untouched(None if in_place else g, (x, xs), (t, ts))
    with pytest.raises(IndexError):
        xent.cross_entropy(x, t, reduction="none")
    _assert_untouched(None, (x, xs), (t, ts))


def test_target_out_of_range_multidim_position(rng):
    x = rng.standard_normal((2, 4, 3, 5))  # (N, C, H, W), class axis 1
    t = rng.integers(0, 4, size=(2, 3, 5))
    t[1, 2, 0] = 9
    xs, ts = x.copy(), t.copy()
    g = _sentinel(x.shape)
    with pytest.raises(IndexError) as ei:
        xent.cross_entropy(x, t, axis=1, return_grad=True, grad_out=g)
    msg = str(ei.value)
    assert "9" in msg
    assert re.search(_pos_pattern((1, 2, 0), 1 * 15 + 2 * 5 + 0), msg), f"no position in {msg!r}"
    _assert_untouched(g, (x, xs), (t, ts))


def test_ignore_index_out_of_range_is_fine_but_other_negatives_are_not(rng):
    x, t = _setup_err(rng)
    t[0] = -7
    with pytest.raises(IndexError):
        xent.cross_entropy(x, t)
    assert np.isfinite(xent.cross_entropy(x, t, ignore_index=-7))


def _check_shape_msg(msg, *shapes):
    for s in shapes:
        assert str(tuple(s)) in msg, f"{tuple(s)} not in {msg!r}"


@pytest.mark.parametrize(
    "tshape", [(7,), (6, 1), (5,), (6, 5, 1), (), (1, 6)]
)
def test_index_target_shape_mismatch(tshape, rng):
    x, _ = _setup_err(rng)
    t = np.zeros(tshape, dtype=np.int64)
    xs = x.copy()
    g = _sentinel(x.shape)
    with pytest.raises(ValueError) as ei:
        xent.cross_entropy(x, t, return_grad=True, grad_out=g)
    _check_shape_msg(str(ei.value), tshape)
    assert str(x.shape) in str(ei.value) or str((6,)) in str(ei.value)
    _assert_untouched(g, (x, xs))


def test_index_target_shape_mismatch_axis(rng):
    x = rng.standard_normal((3, 4, 5))
    t = np.zeros((3, 4), dtype=np.int64)  # right for axis=-1, wrong for axis=1
    with pytest.raises(ValueError) as ei:
        xent.cross_entropy(x, t, axis=1)
    _check_shape_msg(str(ei.value), (3, 4))


@pytest.mark.parametrize("tshape", [(6, 4), (6, 6), (5, 5), (6, 5, 1)])
def test_probability_target_shape_mismatch(tshape, rng):
    x, _ = _setup_err(rng)
    t = np.full(tshape, 0.2)
    xs = x.copy()
    g = _sentinel(x.shape)
    with pytest.raises((ValueError, TypeError)):
        xent.cross_entropy(x, t, return_grad=True, grad_out=g)
    _assert_untouched(g, (x, xs))


def test_integer_targets_with_logits_shape(rng):
    x, _ = _setup_err(rng)
    xs = x.copy()
    g = _sentinel(x.shape)
    with pytest.raises((TypeError, ValueError)):
        xent.cross_entropy(x, np.zeros(x.shape, dtype=np.int64), return_grad=True, grad_out=g)
    _assert_untouched(g, (x, xs))


def test_float_targets_with_index_shape(rng):
    x, t = _setup_err(rng)
    xs = x.copy()
    g = _sentinel(x.shape)
    with pytest.raises((TypeError, ValueError)):
        xent.cross_entropy(x, t.astype(np.float64), return_grad=True, grad_out=g)
    _assert_untouched(g, (x, xs))


@pytest.mark.parametrize(
    "bad",
    [np.zeros((6,), dtype=np.complex128), np.zeros((6,), dtype=object), np.full((6,), "a")],
    ids=["complex", "object", "str"],
)
def test_unsupported_target_dtypes(bad, rng):
    x, _ = _setup_err(rng)
    with pytest.raises((TypeError, ValueError)):
        xent.cross_entropy(x, bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.ones((6, 5), dtype=np.complex128),
        lambda: np.ones((6, 5), dtype=np.complex64),
        lambda: np.ones((6, 5), dtype=object),
        lambda: np.full((6, 5), "a"),
    ],
    ids=["complex128", "complex64", "object", "str"],
)
def test_unsupported_logits_dtypes(make, rng):
    x = make()
    t = rng.integers(0, 5, size=6)
    with pytest.raises(TypeError):
        xent.cross_entropy(x, t)


@pytest.mark.parametrize("reduction", ["avg", "Mean", "batchmean", "", None, 1])
def test_unknown_reduction(reduction, rng):
    x, t = _setup_err(rng)
    xs = x.copy()
    g = _sentinel(x.shape)
    with pytest.raises(ValueError):
        xent.cross_entropy(x, t, reduction=reduction, return_grad=True, grad_out=g)
    _assert_untouched(g, (x, xs))


@pytest.mark.parametrize("ls", [-0.1, 1.5, nan, inf])
def test_label_smoothing_out_of_range(ls, rng):
    x, t = _setup_err(rng)
    xs = x.copy()
    g = _sentinel(x.shape)
    with pytest.raises(ValueError):
        xent.cross_entropy(x, t, label_smoothing=ls, return_grad=True, grad_out=g)
    _assert_untouched(g, (x, xs))
    with pytest.raises(ValueError):
        xent.cross_entropy(x, np.full(x.shape, 0.2), label_smoothing=ls)


@pytest.mark.parametrize("wshape", [(4,), (6,), (1, 5), (5, 1), (), (0,)])
def test_bad_weight_shape(wshape, rng):
    x, t = _setup_err(rng)
    xs = x.copy()
    g = _sentinel(x.shape)
    with pytest.raises(ValueError):
        xent.cross_entropy(x, t, weight=np.ones(wshape), return_grad=True, grad_out=g)
    _assert_untouched(g, (x, xs))


@pytest.mark.parametrize("axis", [2, -3, 10])
def test_axis_out_of_range(axis, rng):
    x, t = _setup_err(rng)
    xs = x.copy()
    g = _sentinel(x.shape)
    with pytest.raises(ValueError):
        xent.cross_entropy(x, t, axis=axis, return_grad=True, grad_out=g)
    _assert_untouched(g, (x, xs))


@pytest.mark.parametrize("gshape", [(6,), (5, 6), (6, 5, 1), (30,)])
def test_grad_out_wrong_shape(gshape, rng):
    x, t = _setup_err(rng)
    xs = x.copy()
    g = _sentinel(gshape)
    with pytest.raises(ValueError):
        xent.cross_entropy(x, t, return_grad=True, grad_out=g)
    _assert_untouched(g, (x, xs))


def test_grad_out_without_return_grad(rng):
    x, t = _setup_err(rng)
    xs = x.copy()
    g = _sentinel(x.shape)
    with pytest.raises(ValueError):
        xent.cross_entropy(x, t, grad_out=g)
    _assert_untouched(g, (x, xs))
    with pytest.raises(ValueError):
        xent.cross_entropy(x, t, grad_out=x)
    _assert_untouched(None, (x, xs))


def test_grad_out_read_only(rng):
    x, t = _setup_err(rng)
    g = _sentinel(x.shape)
    g.flags.writeable = False
    with pytest.raises(ValueError):
        xent.cross_entropy(x, t, return_grad=True, grad_out=g)
    _assert_untouched(g)
    xr = x.copy()
    xr.flags.writeable = False
    with pytest.raises(ValueError):
        xent.cross_entropy(xr, t, return_grad=True, grad_out=xr)
    assert bitwise_equal(xr, x)


def test_grad_out_integer_dtype(rng):
    x, t = _setup_err(rng)
    g = np.full(x.shape, 7, dtype=np.int64)
    with pytest.raises((TypeError, ValueError)):
        xent.cross_entropy(x, t, return_grad=True, grad_out=g)
    assert (g == 7).all()


def test_error_in_place_leaves_logits_untouched(rng):
    """A bad argument found after the target check must not have begun writing grad_out=x."""
    x, t = _setup_err(rng)
    xs = x.copy()
    for kwargs in (
        dict(reduction="bogus"),
        dict(label_smoothing=2.0),
        dict(weight=np.ones(3)),
        dict(axis=3),
    ):
        with pytest.raises(ValueError):
            xent.cross_entropy(x, t, return_grad=True, grad_out=x, **kwargs)
        assert bitwise_equal(x, xs), kwargs


# ---------------------------------------------------------------------------
# finite differences
# ---------------------------------------------------------------------------


def _fd_check(f, analytic, x, rtol=1e-6, atol=1e-8):
    num = central_difference(f, x)
    np.testing.assert_allclose(analytic, num, rtol=rtol, atol=atol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_finite_differences_index_targets(reduction, rng):
    x = rng.standard_normal((6, 5)) * 2
    t = np.array([0, 4, -100, 2, 2, -100])
    kw = dict(weight=np.array([0.5, 1.0, 2.0, 1.5, 0.25]), label_smoothing=0.15, z_loss=0.05, reduction=reduction)

    def f(v):
        out = xent.cross_entropy(v, t, **kw)
        return np.sum(out, dtype=np.float64)

    _, g = xent.cross_entropy(x, t, return_grad=True, **kw)
    _fd_check(f, g, x)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_finite_differences_index_targets_axis1(reduction, rng):
    x = rng.standard_normal((2, 4, 3))
    t = np.array([[0, 3, -100], [1, 1, 2]])
    kw = dict(axis=1, weight=np.array([1.0, 2.0, 0.5, 3.0]), label_smoothing=0.1, z_loss=0.02, reduction=reduction)

    def f(v):
        return np.sum(xent.cross_entropy(v, t, **kw), dtype=np.float64)

    _, g = xent.cross_entropy(x, t, return_grad=True, **kw)
    _fd_check(f, g, x)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_finite_differences_probability_targets(reduction, rng):
    x = rng.standard_normal((5, 4)) * 2
    tp = random_prob_targets(rng, (5, 4), -1)
    kw = dict(weight=np.array([0.5, 1.0, 2.0, 1.5]), label_smoothing=0.1, z_loss=0.03, reduction=reduction)

    def f(v):
        return np.sum(xent.cross_entropy(v, tp, **kw), dtype=np.float64)

    _, g = xent.cross_entropy(x, tp, return_grad=True, **kw)
    _fd_check(f, g, x)


# ---------------------------------------------------------------------------
# large inputs and threads
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((3000, 257), -1), ((16, 64, 40), 1)], ids=["rows", "NCH-ax1"])
def test_large_matches_reference(shape, axis, dtype, kind, num_threads):
    rng = np.random.default_rng(17)
    x, t = make_case(rng, shape, axis, dtype, kind, scale=4.0)
    kw = dict(axis=axis, weight=rng.uniform(0.5, 2, shape[axis]), label_smoothing=0.1, z_loss=1e-4)
    n_rows = x.size // shape[axis]
    for red in REDUCTIONS:
        exp_l, exp_g = ref_cross_entropy(x, t, reduction=red, **kw)
        loss, g = xent.cross_entropy(x, t, reduction=red, return_grad=True, **kw)
        check_loss(loss, exp_l, dtype, finite_scale(x), red, n_rows)
        gs = ce_grad_scale(t, shape[axis], axis, kw["weight"], reduction=red)
        check_grad(g, exp_g, dtype, finite_scale(x), gs)


def _det_inputs():
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((4096, 512)) * 4).astype(np.float32)
    t = rng.integers(0, 512, size=4096)
    t[::7] = -100
    x[5, 3] = nan  # a non-ignored row
    x[7, :] = nan  # an ignored row
    tp = random_prob_targets(rng, (1024, 512), -1).astype(np.float32)
    return x, t, tp


def test_thread_count_determinism():
    x, t, tp = _det_inputs()
    x_fin = x.copy()
    x_fin[5, 3] = 0.0
    w = np.linspace(0.5, 2.0, 512)
    t64 = np.where(t < 0, t, t % 64)
    calls = [
        lambda: xent.cross_entropy(x_fin, t, return_grad=True),
        lambda: xent.cross_entropy(x_fin, t, weight=w, label_smoothing=0.1, z_loss=1e-4, return_grad=True),
        lambda: xent.cross_entropy(x, t, reduction="none", return_grad=True),
        lambda: xent.cross_entropy(x_fin, t, reduction="sum"),
        lambda: xent.cross_entropy(x_fin[:1024], tp, weight=w, label_smoothing=0.1, return_grad=True),
        lambda: xent.cross_entropy(np.ascontiguousarray(x_fin[:, :64].T), t64, axis=0, return_grad=True),
    ]
    for i, call in enumerate(calls):
        assert_same_bits_for_thread_counts(call, what=f"call {i}")


# ---------------------------------------------------------------------------
# hypothesis properties
# ---------------------------------------------------------------------------

PROPS = settings(max_examples=50, deadline=None)


@st.composite
def ce_case(draw):
    n = draw(st.integers(1, 6))
    C = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 50.0]))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, C)) * scale).astype(dtype)
    return x, rng


@PROPS
@given(ce_case())
def test_prop_gibbs_inequality(case):
    """Cross-entropy with probability targets is at least the entropy of the target."""
    x, rng = case
    tp = random_prob_targets(rng, x.shape, -1).astype(x.dtype)
    ce = xent.cross_entropy(x, tp, reduction="none").astype(np.float64)
    t64 = tp.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(t64 > 0, t64 * np.log(t64), 0.0).sum(axis=1)
    eps = float(np.finfo(x.dtype).eps)
    tol = 8 * eps * (finite_scale(x) + math.log(x.shape[1]) + 1)
    assert np.all(ce >= h - tol), (ce, h)


@PROPS
@given(ce_case(), st.booleans(), st.sampled_from([0.0, 0.1, 0.5]), st.booleans())
def test_prop_mean_gradient_rows_sum_to_zero(case, weighted, eps_ls, probs):
    x, rng = case
    n, C = x.shape
    if probs:
        t = random_prob_targets(rng, x.shape, -1).astype(x.dtype)
    else:
        t = rng.integers(0, C, size=n)
        t[rng.random(n) < 0.3] = -100
    w = rng.uniform(0.1, 2.0, size=C) if weighted else None
    loss, g = xent.cross_entropy(x, t, weight=w, label_smoothing=eps_ls, return_grad=True)
    if not probs and (t == -100).all():
        assert np.isnan(loss) and (g == 0).all()
        return
    g64 = g.astype(np.float64)
    eps = float(np.finfo(x.dtype).eps)
    # row sum = K_i·(Σ_c p_ic - 1) with K_i the row's coefficient; Σ p is 1 up to a few
    # eps times the logits' scale, and summing the row adds C·eps·Σ|g|
    wv = np.ones(C) if w is None else w
    if probs:
        tpr = (1 - eps_ls) * t.astype(np.float64) + eps_ls / C
        K = (wv * tpr).sum(axis=1) / n
    else:
        keep = t != -100
        tc = np.where(keep, t, 0)
        den = wv[tc][keep].sum()
        K = np.where(keep, (1 - eps_ls) * wv[tc] + eps_ls * wv.sum() / C, 0.0) / den
    bound = 4 * (C + 2) * eps * (1 + finite_scale(x)) * K + C * eps * np.abs(g64).sum(axis=1)
    assert np.all(np.abs(g64.sum(axis=1)) <= bound), (g64.sum(axis=1), bound)


@PROPS
@given(ce_case())
def test_prop_loss_is_lse_minus_target_logit(case):
    x, rng = case
    n, C = x.shape
    t = rng.integers(0, C, size=n)
    res = xent.cross_entropy(x, t, reduction="none").astype(np.float64)
    x64 = x.astype(np.float64)
    m = x64.max(axis=1)
    lse = m + np.log(np.exp(x64 - m[:, None]).sum(axis=1))
    rtol, atol = loss_tol(x.dtype, finite_scale(x))
    np.testing.assert_allclose(res, lse - x64[np.arange(n), t], rtol=rtol, atol=atol)
    assert np.all(res >= 0)


# ---------------------------------------------------------------------------
# more input kinds and calling patterns
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tdtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probability_targets_of_another_float_dtype(dtype, tdtype, rng):
    x = (rng.standard_normal((12, 7)) * 3).astype(dtype)
    tp = random_prob_targets(rng, x.shape, -1).astype(tdtype)
    exp_l, exp_g = ref_cross_entropy(x, tp, label_smoothing=0.1, reduction="none")
    loss, g = xent.cross_entropy(x, tp, label_smoothing=0.1, reduction="none", return_grad=True)
    check_loss(loss, exp_l, dtype, finite_scale(x), "none")
    assert g.dtype == dtype
    check_grad(g, exp_g, dtype, finite_scale(x))


@pytest.mark.parametrize("dtype", [">f4", ">f8"])
def test_non_native_byte_order(dtype, rng):
    x = (rng.standard_normal((9, 6)) * 3).astype(dtype)
    t = rng.integers(0, 6, size=9).astype(">i8")
    exp_l, exp_g = ref_cross_entropy(x, t, label_smoothing=0.1)
    loss, g = xent.cross_entropy(x, t, label_smoothing=0.1, return_grad=True)
    comp = np.dtype(np.float32 if np.dtype(dtype).itemsize == 4 else np.float64)
    check_loss(loss, exp_l, comp, finite_scale(x), "mean")
    check_grad(g, exp_g, comp, finite_scale(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_rows(dtype):
    """An LLM-sized vocabulary: accumulation over a long row keeps float32 accuracy."""
    rng = np.random.default_rng(21)
    x = (rng.standard_normal((3, 131_072)) * 3).astype(dtype)
    t = np.array([5, 131_071, 70_000])
    exp_l, exp_g = ref_cross_entropy(x, t, label_smoothing=0.1, z_loss=1e-4, reduction="none")
    loss, g = xent.cross_entropy(x, t, label_smoothing=0.1, z_loss=1e-4, reduction="none", return_grad=True)
    check_loss(loss, exp_l, dtype, finite_scale(x), "none")
    check_grad(g, exp_g, dtype, finite_scale(x))
    xt = np.ascontiguousarray(x.T)  # and with the class axis first
    loss0 = xent.cross_entropy(xt, t, axis=0, label_smoothing=0.1, z_loss=1e-4, reduction="none")
    check_loss(loss0, exp_l, dtype, finite_scale(x), "none")


def test_grad_out_overlapping_logits_reversed(rng):
    """grad_out a reversed view of the logits' buffer: the same result as with a copy."""
    x0 = rng.standard_normal((8, 5)) * 2
    t = rng.integers(0, 5, size=8)
    exp_l, exp_g = ref_cross_entropy(x0, t, label_smoothing=0.1, reduction="sum")
    for flip in ((slice(None, None, -1), slice(None)), (slice(None), slice(None, None, -1))):
        x = x0.copy()
        g = x[flip]
        loss, r = xent.cross_entropy(x, t, label_smoothing=0.1, reduction="sum", return_grad=True, grad_out=g)
        assert r is g
        assert loss == pytest.approx(exp_l, rel=1e-12)
        np.testing.assert_allclose(g, exp_g, rtol=1e-11, atol=1e-14)


def test_concurrent_calls_from_python_threads(restore_threads):
    from concurrent.futures import ThreadPoolExecutor

    xent.set_num_threads(2)
    rng = np.random.default_rng(9)
    xs = [(rng.standard_normal((2000, 64)) * 3).astype(np.float32) for _ in range(6)]
    ts = [rng.integers(0, 64, size=2000) for _ in range(6)]
    serial = [xent.cross_entropy(x, t, label_smoothing=0.1, return_grad=True) for x, t in zip(xs, ts)]
    with ThreadPoolExecutor(4) as ex:
        futures = [
            ex.submit(xent.cross_entropy, x, t, label_smoothing=0.1, return_grad=True) for x, t in zip(xs, ts)
        ]
        parallel = [f.result() for f in futures]
    for (l1, g1), (l2, g2) in zip(serial, parallel):
        assert bitwise_equal(np.asarray(l1), np.asarray(l2)) and bitwise_equal(g1, g2)


def test_weight_unsupported_dtype(rng):
    x, t = _setup_err(rng)
    with pytest.raises((TypeError, ValueError)):
        xent.cross_entropy(x, t, weight=np.ones(5, dtype=np.complex128))
    with pytest.raises((TypeError, ValueError)):
        xent.cross_entropy(x, t, weight=np.array(["a"] * 5))
