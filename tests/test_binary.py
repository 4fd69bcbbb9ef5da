"""Tests for binary_cross_entropy_with_logits and binary_cross_entropy.

Every value is compared with something independent of xent: float64 NumPy
references written here from PyTorch's formulas, hand-computed limits, central
finite differences, and (when installed) torch.nn.functional itself.  The only
xent-vs-xent comparisons are thread-count determinism.
"""

import math
import tracemalloc

import numpy as np
import pytest

import xent
from helpers import (
    assert_close,
    assert_same_bits_for_thread_counts,
    computation_dtype,
    resolve_dtype,
    with_layout,
)
from references import as_f64
from xent._api.binary import binary_cross_entropy, binary_cross_entropy_with_logits

inf = np.inf
nan = np.nan


# ---------------------------------------------------------------------------
# independent float64 references (PyTorch's formulas)
# ---------------------------------------------------------------------------


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def ref_bce_logits(x, y, w=None, pw=None):
    """(per-element loss, per-element d loss / d x) in float64.

    Loss: PyTorch's literal formula ``w*((1-y)*x - (1+(pw-1)*y)*log sigmoid(x))``
    for finite x; at infinite x the SPEC's limits, term by term.
    """
    x, y = as_f64(x), as_f64(y)
    w = np.ones_like(x) if w is None else np.broadcast_to(as_f64(w), x.shape)
    pw = np.ones_like(x) if pw is None else np.broadcast_to(as_f64(pw), x.shape)
    with np.errstate(all="ignore"):
        torch_formula = w * ((1 - y) * x - (1 + (pw - 1) * y) * log_sigmoid(x))
        # limits at x = +-inf: -log sigmoid(+inf) = 0, softplus(+inf) = inf
        cp, cn = w * pw * y, w * (1 - y)
        lim_pos = np.where(cn == 0, 0.0, cn * inf)  # x = +inf
        lim_neg = np.where(cp == 0, 0.0, cp * inf)  # x = -inf
        loss = np.where(x == inf, lim_pos, np.where(x == -inf, lim_neg, torch_formula))
        loss = np.where(np.isnan(x), nan, loss)
        sig = np.exp(log_sigmoid(x))
        grad = w * (sig * (1 - y + pw * y) - pw * y)
    return loss, grad


def ref_bce(p, y, w=None):
    p, y = as_f64(p), as_f64(y)
    with np.errstate(divide="ignore"):
        lp = np.maximum(np.log(p), -100.0)
        lq = np.maximum(np.log1p(-p), -100.0)
    loss = -(y * lp + (1 - y) * lq)
    if w is not None:
        loss = loss * np.broadcast_to(as_f64(w), p.shape)
    return loss


def reduce_ref(per_elem, grad, reduction):
    n = per_elem.size
    if reduction == "none":
        return per_elem, grad
    if reduction == "sum":
        return per_elem.sum(), grad
    with np.errstate(invalid="ignore", divide="ignore"):
        return per_elem.sum() / n, (grad / n if grad is not None else None)


def tol(dtype, scale=1.0):
    if np.dtype(dtype) == np.float64:
        return 1e-12, 1e-14 * scale
    return 2e-5, 2e-6 * scale


def test_reference_matches_hand_values():
    # the reference itself, against numbers computed by hand
    loss, grad = ref_bce_logits(
        np.array([0.0, 2.0, -1.0, inf, -inf, inf]), np.array([1.0, 0.0, 0.5, 1.0, 0.0, 0.0])
    )
    expected = [math.log(2), math.log1p(math.exp(2)), 0.5 * math.log1p(math.e) + 0.5 * math.log1p(1 / math.e), 0, 0, inf]
    assert_close(loss, expected, 1e-15, 1e-15)
    s = 1 / (1 + math.exp(-2))
    assert_close(grad[:3], [-0.5, s, 1 / (1 + math.e) - 0.5], 1e-15, 1e-15)
    assert_close(ref_bce(np.array([0.0, 1.0, 0.5]), np.array([1.0, 0.0, 1.0])), [100, 100, math.log(2)], 1e-15, 0)


# ---------------------------------------------------------------------------
# BCE with logits: the option matrix against the float64 reference
# ---------------------------------------------------------------------------

SHAPE = (6, 5)
WEIGHT_KINDS = ["none", "scalar", "rows", "cols", "full"]  # None, 0-d, (N, 1), (C,), (N, C)


def make_weight(kind, rng, shape, dtype=np.float64):
    if kind == "none":
        return None
    if kind == "scalar":
        return np.asarray(0.7, dtype=dtype)
    if kind == "rows":
        return (rng.random(shape[:-1] + (1,)) + 0.25).astype(dtype)
    if kind == "cols":
        return (rng.random(shape[-1:]) + 0.25).astype(dtype)
    return (rng.random(shape) + 0.25).astype(dtype)


def make_xy(rng, shape, dtype, soft=True):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    y = rng.random(shape) if soft else (rng.random(shape) < 0.5).astype(np.float64)
    return x, y.astype(dtype if np.dtype(dtype).kind == "f" else np.float64)


@pytest.mark.parametrize("return_grad", [False, True], ids=["loss", "grad"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pw_kind", ["none", "cols", "scalar"])
@pytest.mark.parametrize("w_kind", WEIGHT_KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_logits_matrix(dtype, w_kind, pw_kind, reduction, return_grad, rng):
    x, y = make_xy(rng, SHAPE, dtype)
    w = make_weight(w_kind, rng, SHAPE, dtype)
    pw = None if pw_kind == "none" else make_weight(pw_kind, rng, SHAPE, dtype) * 3
    saved = [a.copy() if a is not None else None for a in (x, y, w, pw)]
    res = binary_cross_entropy_with_logits(
        x, y, weight=w, pos_weight=pw, reduction=reduction, return_grad=return_grad
    )
    per, g = ref_bce_logits(x, y, w, pw)
    exp_loss, exp_grad = reduce_ref(per, g, reduction)
    rtol, atol = tol(dtype, 30)
    loss = res[0] if return_grad else res
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.dtype == dtype and loss.shape == SHAPE
    else:
        assert type(loss) is np.dtype(dtype).type
    assert_close(loss, exp_loss, rtol, atol)
    if return_grad:
        grad = res[1]
        assert grad.dtype == dtype and grad.shape == SHAPE
        assert_close(grad, exp_grad, rtol, atol)
    for a, b in zip((x, y, w, pw), saved):
        if a is not None:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("readonly", [False, True], ids=["rw", "ro"])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize(
    "shape,wshape,pwshape",
    [
        ((2, 3, 5), (2, 1, 5), (5,)),  # nothing coalesces
        ((4, 7), (7,), None),
        ((13,), (), (13,)),
        ((5000, 3), (5000, 1), (3,)),  # many tiny rows, task boundaries mid-row
        ((3, 10000), (3, 1), ()),  # rows longer than a piece and a task
        ((), None, None),  # 0-d
        ((4, 1), (1,), (1,)),
    ],
)
def test_bce_logits_layouts_and_broadcasts(shape, wshape, pwshape, layout, readonly, rng):
    x, y = make_xy(rng, shape, np.float64)
    w = None if wshape is None else np.asarray(rng.random(wshape) + 0.5)
    pw = None if pwshape is None else np.asarray(rng.random(pwshape) * 3)
    xs, ys = with_layout(x, layout), with_layout(y, layout)
    ws = None if w is None else with_layout(w, layout)
    if readonly:
        for a in (xs, ys, ws):
            if a is not None:
                a.flags.writeable = False
    loss, grad = binary_cross_entropy_with_logits(
        xs, ys, weight=ws, pos_weight=pw, reduction="none", return_grad=True
    )
    per, g = ref_bce_logits(x, y, w, pw)
    assert loss.shape == shape and grad.shape == shape
    assert_close(loss, per, 1e-12, 1e-13)
    assert_close(grad, g, 1e-12, 1e-13)
    total = binary_cross_entropy_with_logits(xs, ys, weight=ws, pos_weight=pw, reduction="sum")
    assert_close(total, per.sum(), 1e-12, 1e-12)


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16", np.int64, np.bool_, np.float32])
def test_bce_logits_dtypes(dtype, rng):
    dtype = resolve_dtype(dtype)
    if dtype.kind == "i":
        x = rng.integers(-5, 6, size=(7, 4)).astype(dtype)
    elif dtype.kind == "b":
        x = rng.random((7, 4)) < 0.5
    else:
        x = (rng.standard_normal((7, 4)) * 3).astype(dtype)
    y = rng.random((7, 4)).astype(np.float16)  # another float dtype: converted
    pw = np.array([1.0, 2.0, 0.5, 3.0])
    comp = computation_dtype(dtype)
    loss, grad = binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="mean", return_grad=True)
    assert type(loss) is comp.type and grad.dtype == comp
    per, g = ref_bce_logits(x, y, None, pw)
    rtol, atol = tol(comp, 10)
    assert_close(loss, per.mean(), rtol, atol)
    assert_close(grad, g / per.size, rtol, atol)


def test_bce_logits_infinite_limits():
    x = np.array([inf, -inf, inf, -inf, inf, -inf, inf])
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 1.0])
    w = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    pw = np.array([2.0] * 7)
    for dtype in (np.float32, np.float64):
        loss, grad = binary_cross_entropy_with_logits(
            x.astype(dtype), y.astype(dtype), weight=w.astype(dtype), pos_weight=pw.astype(dtype),
            reduction="none", return_grad=True,
        )
        np.testing.assert_array_equal(loss, [0, 0, inf, inf, inf, inf, 0])
        # d/dx at +inf is w*(1-y); at -inf it is -w*pw*y
        np.testing.assert_array_equal(grad, [0, 0, 1, -2, 0.5, -1, 0])
    # the limits hold as x grows: huge finite logits agree with the infinite ones
    big = binary_cross_entropy_with_logits(np.array([1e30, -1e30]), np.array([1.0, 0.0]), reduction="none")
    np.testing.assert_array_equal(big, [0.0, 0.0])
    assert binary_cross_entropy_with_logits(np.array([inf, -inf]), np.array([1.0, 0.0])) == 0.0
    assert binary_cross_entropy_with_logits(np.array([inf]), np.array([0.0]), reduction="sum") == inf


def test_bce_logits_nan_propagates():
    x = np.array([nan, 0.0, 0.0, 0.0, nan, 1.0])
    y = np.array([1.0, nan, 1.0, 1.0, 1.0, 1.0])
    w = np.array([1.0, 1.0, nan, 1.0, 0.0, 1.0])
    pw = np.array([1.0, 1.0, 1.0, nan, 0.0, 1.0])
    loss, grad = binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw, reduction="none", return_grad=True)
    assert np.isnan(loss[:5]).all() and np.isfinite(loss[5])  # NaN logit even with zero weights
    assert np.isnan(grad[[0, 1, 2, 3]]).all()
    assert np.isnan(binary_cross_entropy_with_logits(x, y))


def test_bce_logits_extreme_accuracy():
    # softplus(-x) for large x is exp(-x) to full relative precision (no cancellation)
    x = np.array([20.0, 40.0, 700.0, -700.0, 1e-8])
    y = np.ones(5)
    loss = binary_cross_entropy_with_logits(x, y, reduction="none")
    expected = [math.log1p(math.exp(-20)), math.log1p(math.exp(-40)), math.exp(-700), 700.0, math.log1p(math.exp(-1e-8))]
    assert_close(loss, expected, 4e-16, 0)
    lf = binary_cross_entropy_with_logits(x[:2].astype(np.float32), y[:2].astype(np.float32), reduction="none")
    assert_close(lf, expected[:2], 2e-7, 0)


def test_bce_logits_empty():
    x = np.zeros((0, 3))
    loss, grad = binary_cross_entropy_with_logits(x, x, return_grad=True)
    assert np.isnan(loss) and grad.shape == (0, 3)
    assert binary_cross_entropy_with_logits(x, x, reduction="sum") == 0.0
    assert binary_cross_entropy_with_logits(x, x, reduction="none").shape == (0, 3)


# ---------------------------------------------------------------------------
# gradients: finite differences, grad_out, in place
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_logits_grad_finite_differences(reduction, rng):
    x = rng.standard_normal((4, 6)) * 3
    y = rng.random((4, 6))
    w = rng.random((4, 1)) + 0.5
    pw = rng.random(6) * 3 + 0.1
    _, grad = binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw, reduction=reduction, return_grad=True)

    def f(xx):
        out = binary_cross_entropy_with_logits(xx, y, weight=w, pos_weight=pw, reduction=reduction)
        return float(np.sum(out))

    h = 1e-6
    num = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = (f(xp) - f(xm)) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_grad_out_in_place(dtype, layout, rng):
    x0, y = make_xy(rng, (40, 9), dtype)
    pw = (rng.random(9) * 2).astype(dtype)
    x = with_layout(x0, layout)
    loss, grad = binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="mean", return_grad=True, grad_out=x)
    assert grad is x
    per, g = ref_bce_logits(x0, y, None, pw)
    rtol, atol = tol(dtype, 10)
    assert_close(loss, per.mean(), rtol, atol)
    assert_close(x, g / per.size, rtol, atol)


@pytest.mark.parametrize("out_dtype", [np.float64, np.float32, np.float16])
def test_grad_out_separate_buffer(out_dtype, rng):
    x, y = make_xy(rng, (8, 7), np.float64)
    out = np.full((8, 7), -123.0, dtype=out_dtype)
    loss, grad = binary_cross_entropy_with_logits(x, y, reduction="sum", return_grad=True, grad_out=out)
    assert grad is out
    _, g = ref_bce_logits(x, y)
    rtol, atol = {np.float64: (1e-12, 1e-13), np.float32: (1e-6, 1e-7), np.float16: (1e-3, 1e-4)}[out_dtype]
    assert_close(out, g, rtol, atol)


def test_grad_out_aliasing_target(rng):
    # grad_out shares memory with an input other than the logits: computed into a
    # temporary, then copied, so the result is still the gradient of the original data
    x, y = make_xy(rng, (10, 4), np.float64)
    y_saved = y.copy()
    _, g = ref_bce_logits(x, y_saved)
    loss, grad = binary_cross_entropy_with_logits(x, y, reduction="sum", return_grad=True, grad_out=y)
    assert grad is y
    assert_close(y, g, 1e-12, 1e-13)
    # a reversed view of the logits (same memory, other strides)
    x2 = x.copy()
    _, g2 = ref_bce_logits(x2, y_saved)
    binary_cross_entropy_with_logits(x2, y_saved, reduction="sum", return_grad=True, grad_out=x2[::-1])
    assert_close(x2[::-1], g2, 1e-12, 1e-13)


def test_in_place_allocates_nothing_large(rng):
    x = rng.standard_normal((2000, 1000))
    y = (rng.random((2000, 1000)) < 0.5).astype(np.float64)
    binary_cross_entropy_with_logits(x[:2], y[:2], reduction="mean", return_grad=True, grad_out=x[:2].copy())
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        loss, grad = binary_cross_entropy_with_logits(x, y, reduction="mean", return_grad=True, grad_out=x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grad is x
    assert peak < 0.1 * x.nbytes, peak
    assert np.isfinite(loss)


# ---------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------


def test_threads_bitwise_identical(rng):
    shape = (300, 700)
    x, y = make_xy(rng, shape, np.float32)
    w = (rng.random((300, 1)) + 0.5).astype(np.float32)
    pw = (rng.random(700) * 2).astype(np.float32)
    p = rng.random(shape)
    yp = rng.random(shape)

    def all_reductions():
        r = []
        for red in ("mean", "sum", "none"):
            r.append(binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw, reduction=red, return_grad=True))
            r.append(binary_cross_entropy(p, yp, weight=w, reduction=red))
        return r

    first = assert_same_bits_for_thread_counts(all_reductions, (1, 2))
    assert_close(first[0][0], ref_bce_logits(x, y, w, pw)[0].mean(), 2e-6, 0)


# ---------------------------------------------------------------------------
# errors: raised before anything is written
# ---------------------------------------------------------------------------


BCE_LOGITS_ERRORS = [
    ("target shape", dict(target=np.zeros((3, 5))), ValueError, r"\(3, 5\).*\(3, 4\)"),
    ("weight shape", dict(weight=np.ones((2, 3, 4))), ValueError, r"weight.*\(2, 3, 4\).*\(3, 4\)"),
    ("weight cols", dict(weight=np.ones(3)), ValueError, r"weight.*\(3,\)"),
    ("pos_weight length", dict(pos_weight=np.ones(5)), ValueError, r"pos_weight.*\(5,\).*\(3, 4\)"),
    ("reduction", dict(reduction="batchmean"), ValueError, "reduction"),
    ("complex target", dict(target=np.zeros((3, 4), complex)), TypeError, "target"),
    ("complex weight", dict(weight=np.ones(4, complex)), TypeError, "weight"),
    ("string pos_weight", dict(pos_weight=np.array(["a"] * 4)), TypeError, "pos_weight"),
    ("grad_out shape", dict(return_grad=True, grad_out=np.zeros((4, 3))), ValueError, "grad_out"),
    ("grad_out int", dict(return_grad=True, grad_out=np.zeros((3, 4), int)), TypeError, "grad_out"),
    ("grad_out readonly", dict(return_grad=True, grad_out="readonly"), ValueError, "grad_out"),
    ("grad_out without grad", dict(grad_out="sentinel"), ValueError, "grad_out"),
    ("grad_out list", dict(return_grad=True, grad_out=[[0.0] * 4] * 3), TypeError, "grad_out"),
]


@pytest.mark.parametrize("name,kwargs,exc,match", BCE_LOGITS_ERRORS, ids=[c[0] for c in BCE_LOGITS_ERRORS])
def test_bce_logits_errors_leave_everything_untouched(name, kwargs, exc, match, rng):
    x, y = make_xy(rng, (3, 4), np.float64)
    kwargs = dict(kwargs)
    target = kwargs.pop("target", y)
    sentinel = np.full((3, 4), -7.0)
    if isinstance(kwargs.get("grad_out"), str):
        if kwargs["grad_out"] == "readonly":
            sentinel.flags.writeable = False
        kwargs["grad_out"] = sentinel
    saved = [np.array(a, copy=True) for a in (x, target, sentinel)]
    with pytest.raises(exc, match=match):
        binary_cross_entropy_with_logits(x, target, **kwargs)
    for a, b in zip((x, target, sentinel), saved):
        np.testing.assert_array_equal(a, b)


def test_bce_logits_bad_logits_dtype():
    with pytest.raises(TypeError, match="logits"):
        binary_cross_entropy_with_logits(np.zeros(3, complex), np.zeros(3))
    with pytest.raises(TypeError, match="logits"):
        binary_cross_entropy_with_logits(np.array(["a", "b"]), np.zeros(2))


def test_grad_out_in_place_sentinel_error(rng):
    # an error with grad_out=logits leaves the logits untouched
    x, y = make_xy(rng, (3, 4), np.float64)
    saved = x.copy()
    with pytest.raises(ValueError, match="pos_weight"):
        binary_cross_entropy_with_logits(x, y, pos_weight=np.ones(7), return_grad=True, grad_out=x)
    np.testing.assert_array_equal(x, saved)


# ---------------------------------------------------------------------------
# binary_cross_entropy on probabilities
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("w_kind", WEIGHT_KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_matrix(dtype, w_kind, reduction, rng):
    p = rng.random(SHAPE).astype(dtype)
    p[0, :3] = [0.0, 1.0, 1e-30]
    y = rng.random(SHAPE).astype(dtype)
    y[0, :2] = [1.0, 0.0]
    w = make_weight(w_kind, rng, SHAPE, dtype)
    saved = [p.copy(), y.copy()]
    res = binary_cross_entropy(p, y, weight=w, reduction=reduction)
    exp, _ = reduce_ref(ref_bce(p, y, w), None, reduction)
    rtol, atol = tol(dtype, 100)
    if reduction == "none":
        assert res.dtype == dtype and res.shape == SHAPE
    else:
        assert type(res) is np.dtype(dtype).type
    assert_close(res, exp, rtol, atol)
    np.testing.assert_array_equal(p, saved[0])
    np.testing.assert_array_equal(y, saved[1])


def test_bce_clamp_and_edges():
    p = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 0.5])
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 1.0])
    for dtype in (np.float32, np.float64):
        loss = binary_cross_entropy(p.astype(dtype), y.astype(dtype), reduction="none")
        assert_close(loss, [100, 100, 0, 0, 50, math.log(2)], 1e-7, 0)
    # accuracy of log1p(-p) for tiny p, and of log p for tiny p
    assert_close(binary_cross_entropy(np.array([1e-20]), np.array([0.0]), reduction="sum"), 1e-20, 1e-15, 0)
    assert_close(binary_cross_entropy(np.array([1e-20]), np.array([1.0]), reduction="sum"), 20 * math.log(10), 1e-15, 0)


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16", np.int64, np.bool_])
def test_bce_dtypes(dtype, rng):
    dtype = resolve_dtype(dtype)
    if dtype.kind in "ib":
        p = (rng.random((5, 3)) < 0.5).astype(dtype)
    else:
        p = rng.random((5, 3)).astype(dtype)
    y = (rng.random((5, 3)) < 0.5).astype(np.int8)
    comp = computation_dtype(dtype)
    res = binary_cross_entropy(p, y, weight=np.arange(3.0))
    assert type(res) is comp.type
    assert_close(res, ref_bce(p, y, np.arange(3.0)).mean(), *tol(comp, 100))


@pytest.mark.parametrize(
    "bad_p,bad_y,arg,value",
    [
        ((1, 2), None, "probs", 1.5),
        ((0, 0), None, "probs", -0.25),
        ((2, 1), None, "probs", nan),
        (None, (1, 0), "target", 2.0),
        (None, (2, 2), "target", nan),
        ((2, 0), (0, 1), "probs", 3.0),  # probs is checked first
    ],
)
def test_bce_out_of_range(bad_p, bad_y, arg, value, rng):
    p = rng.random((3, 4))
    y = rng.random((3, 4))
    if bad_p is not None:
        p[bad_p] = value
    if bad_y is not None:
        y[bad_y] = value if arg == "target" else -1.0
    saved = p.copy(), y.copy()
    pos = bad_p if arg == "probs" else bad_y
    with pytest.raises(ValueError, match=rf"{arg}.*{value}.*\({pos[0]}, {pos[1]}\)") as info:
        binary_cross_entropy(p, y, reduction="none")
    assert arg in str(info.value)
    np.testing.assert_array_equal(p, saved[0])
    np.testing.assert_array_equal(y, saved[1])


def test_bce_out_of_range_first_position_large(rng):
    # the first bad value in C order, across kernel tasks and pieces
    p = rng.random((100, 300))
    p[99, 0] = 7.0
    p[66, 200] = -3.0
    p.flags.writeable = False
    with pytest.raises(ValueError, match=r"probs.*-3\.0.*\(66, 200\)"):
        binary_cross_entropy(p, np.zeros((100, 300)))
    pf = np.asfortranarray(p)  # C order of the logical array, not of memory
    with pytest.raises(ValueError, match=r"\(66, 200\)"):
        binary_cross_entropy(pf, np.zeros((100, 300)))


def test_bce_errors():
    p = np.full((2, 3), 0.5)
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        binary_cross_entropy(p, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="weight"):
        binary_cross_entropy(p, p, weight=np.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        binary_cross_entropy(p, p, reduction="avg")
    with pytest.raises(TypeError, match="probs"):
        binary_cross_entropy(p.astype(complex), p)
    with pytest.raises(TypeError, match="target"):
        binary_cross_entropy(p, p.astype(object))
    assert np.isnan(binary_cross_entropy(np.zeros(0), np.zeros(0)))
    assert binary_cross_entropy(np.zeros(0), np.zeros(0), reduction="sum") == 0


def test_exported_from_package():
    # (xent's exports are the core functions behind the namespace layer)
    assert xent.binary_cross_entropy_with_logits.__wrapped__ is binary_cross_entropy_with_logits
    assert xent.binary_cross_entropy.__wrapped__ is binary_cross_entropy
    assert "binary_cross_entropy_with_logits" in xent.__all__
    assert "binary_cross_entropy" in xent.__all__


# ---------------------------------------------------------------------------
# parity with PyTorch (values and autograd gradients)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pw_kind", ["none", "cols"])
@pytest.mark.parametrize("w_kind", ["none", "rows", "full"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_parity_bce_logits(dtype, w_kind, pw_kind, reduction, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, y = make_xy(rng, (7, 5), dtype)
    y[0] = [0.0, 1.0, 1.0, 0.0, 1.0]
    w = make_weight(w_kind, rng, (7, 5), dtype)
    pw = None if pw_kind == "none" else (make_weight("cols", rng, (7, 5), dtype) * 3)
    loss, grad = binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw, reduction=reduction, return_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    tl = F.binary_cross_entropy_with_logits(
        xt, torch.tensor(y),
        weight=None if w is None else torch.tensor(w),
        pos_weight=None if pw is None else torch.tensor(pw),
        reduction=reduction,
    )
    tl.sum().backward()
    rtol, atol = (1e-12, 1e-13) if dtype == np.float64 else (1e-5, 1e-6)
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=rtol, atol=atol * 10)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("w_kind", ["none", "rows", "full"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_parity_bce(dtype, w_kind, reduction, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    p = rng.random((7, 5)).astype(dtype)
    p[0, :4] = [0.0, 1.0, 0.0, 1.0]
    y = rng.random((7, 5)).astype(dtype)
    y[0, :4] = [1.0, 0.0, 0.0, 1.0]
    w = make_weight(w_kind, rng, (7, 5), dtype)
    res = binary_cross_entropy(p, y, weight=w, reduction=reduction)
    tl = F.binary_cross_entropy(
        torch.tensor(p), torch.tensor(y), weight=None if w is None else torch.tensor(w), reduction=reduction
    )
    rtol, atol = (1e-12, 1e-12) if dtype == np.float64 else (1e-5, 1e-5)
    np.testing.assert_allclose(res, tl.numpy(), rtol=rtol, atol=atol)


def test_torch_parity_bce_rejects_what_torch_rejects():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for p, y in [(1.5, 1.0), (-0.1, 0.0), (nan, 1.0), (0.5, 1.5), (0.5, nan)]:
        with pytest.raises(RuntimeError):
            F.binary_cross_entropy(torch.tensor([p]), torch.tensor([y]))
        with pytest.raises(ValueError):
            binary_cross_entropy(np.array([p]), np.array([y]))


def test_torch_parity_infinite_logits_where_torch_is_defined():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    # Where PyTorch's formula (1-y)*x - (1+(pw-1)*y)*log_sigmoid(x) has no 0*inf and
    # no cancellation, the values agree.  Documented differences: x=+inf,y=1 and
    # x=-inf,y=0 and x=-inf,y=1 are NaN in PyTorch (0*inf) but 0, 0, inf here (the
    # limits); x=-50,y=0 is 0 in PyTorch (cancellation) but exp(-50) here.
    x = np.array([inf, 50.0, 1.0])
    y = np.array([0.0, 1.0, 0.5])
    tl = F.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(y), reduction="none").numpy()
    np.testing.assert_allclose(binary_cross_entropy_with_logits(x, y, reduction="none"), tl, rtol=1e-12)
    xd = np.array([inf, -inf, -inf])
    yd = np.array([1.0, 0.0, 1.0])
    tl = F.binary_cross_entropy_with_logits(torch.tensor(xd), torch.tensor(yd), reduction="none").numpy()
    assert np.isnan(tl).all()
    np.testing.assert_array_equal(binary_cross_entropy_with_logits(xd, yd, reduction="none"), [0.0, 0.0, inf])
    small = binary_cross_entropy_with_logits(np.array([-50.0]), np.array([0.0]), reduction="sum")
    assert_close(small, math.exp(-50), 1e-15, 0)
