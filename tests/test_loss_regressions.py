"""Hardening of the multiclass losses and evaluation (issue 17): wrong answers and
errors found by a stress test, each pinned here.

References are float64 NumPy formulas written in this file (and PyTorch where it
is installed, skipped cleanly where it is not); none of them calls xent.
"""

import math
import re
import warnings

import numpy as np
import pytest

import xent

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - depends on the environment
    torch = F = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch not installed")


def _log_softmax(x):
    """float64 log-softmax of finite rows (the reference of this file)."""
    x = np.asarray(x, np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _no_warnings(f, *args, **kwargs):
    """f(*args, **kwargs) with every warning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return f(*args, **kwargs)


# ---------------------------------------------------------------------------
# 1. uint64 class indices above INT64_MAX are out of range, not ignore_index
# ---------------------------------------------------------------------------

BIG = 2**64 - 100  # reads as -100 (the default ignore_index) when wrapped to int64
X3 = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [3.0, 2.0, 1.0]])


def _index_calls():
    """Every public function that takes class indices, as f(logits, target)."""
    return {
        "cross_entropy_none": lambda x, t: xent.cross_entropy(x, t, reduction="none"),
        "cross_entropy_mean": lambda x, t: xent.cross_entropy(x, t),
        "cross_entropy_sum": lambda x, t: xent.cross_entropy(x, t, reduction="sum"),
        "cross_entropy_grad": lambda x, t: xent.cross_entropy(x, t, return_grad=True),
        "cross_entropy_weight": lambda x, t: xent.cross_entropy(x, t, weight=np.ones(3)),
        "nll_loss": lambda x, t: xent.nll_loss(x, t),
        "focal_loss": lambda x, t: xent.focal_loss(x, t),
        "evaluate": lambda x, t: xent.evaluate(x, t),
        "Evaluator.update": lambda x, t: xent.Evaluator().update(x, t),
    }


@pytest.mark.parametrize("name", sorted(_index_calls()))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uint64_index_above_int64_max_is_an_index_error(name, dtype):
    f = _index_calls()[name]
    t = np.array([0, 1, BIG], np.uint64)
    with pytest.raises(IndexError, match=rf"target: class index {BIG} at position \(2,\)"):
        f(X3.astype(dtype), t)


@pytest.mark.parametrize("name", sorted(_index_calls()))
def test_uint64_first_bad_index_is_named(name):
    # An ordinary out-of-range index before the huge one is the first bad one.
    f = _index_calls()[name]
    t = np.array([0, 7, BIG], np.uint64)
    with pytest.raises(IndexError, match=r"class index 7 at position \(1,\)"):
        f(X3, t)
    # ... and a huge one first, in a 2-D target of a 3-D logits array.
    t2 = np.array([[0, 1, 2], [2**63, 5, 0]], np.uint64)
    x2 = np.zeros((2, 3, 3))
    with pytest.raises(IndexError, match=rf"class index {2**63} at position \(1, 0\)"):
        f(x2, t2)


def test_uint64_index_above_int64_max_dask():
    da = pytest.importorskip("dask.array")
    import xent.dask

    x = da.from_array(np.zeros((6, 3)), chunks=2)
    t = da.from_array(np.array([0, 1, 2, 0, 1, BIG], np.uint64), chunks=2)
    for f in (xent.dask.cross_entropy, xent.dask.evaluate):
        with pytest.raises(IndexError, match=rf"class index {BIG} at position \(5,\)"):
            f(x, t).compute()


def test_uint64_big_value_with_nonnegative_ignore_index():
    t = np.array([0, 2, 2**64 - 1], np.uint64)
    with pytest.raises(IndexError, match=rf"class index {2**64 - 1} at position \(2,\)"):
        xent.cross_entropy(X3, t, ignore_index=2)
    # Enough few-class rows for the tiles of the one-call path.
    t40 = np.arange(40, dtype=np.uint64) % 5
    t40[37] = 2**63 + 3
    for reduction in ("mean", "sum", "none"):
        with pytest.raises(IndexError, match=rf"class index {2**63 + 3} at position \(37,\)"):
            xent.cross_entropy(np.zeros((40, 5), np.float32), t40, ignore_index=0,
                               reduction=reduction)
    # uint64 indices in range are read as they are (ignore_index included).
    t = np.array([0, 2, 1], np.uint64)
    lp = _log_softmax(X3)
    expected = -(lp[0, 0] + lp[2, 1]) / 2
    assert math.isclose(float(xent.cross_entropy(X3, t, ignore_index=2)), expected,
                        rel_tol=1e-14)


def test_uint64_error_writes_nothing():
    g = np.full(X3.shape, 7.0)
    ev = xent.Evaluator()
    ev.update(X3, np.array([0, 1, 2]))
    before = ev.result()
    with pytest.raises(IndexError):
        xent.cross_entropy(X3, np.array([0, 1, BIG], np.uint64), return_grad=True, grad_out=g)
    with pytest.raises(IndexError):
        ev.update(X3, np.array([0, 1, BIG], np.uint64))
    assert np.all(g == 7.0)
    assert ev.result() == before


# ---------------------------------------------------------------------------
# 2. a NaN class weight enters a row only through its target or label smoothing
# ---------------------------------------------------------------------------


def _ref_ce_index(x, t, w, eps=0.0, ignore_index=-100):
    """float64 per-row loss and gradient of Σ l_i for finite rows (SPEC formula):
    l = (1-eps) w_t (-lp_t) + (eps/C) Σ_c w_c (-lp_c); a weight enters a row only
    where its coefficient is not 0 (no smoothing: only the target's)."""
    x = np.asarray(x, np.float64)
    n, C = x.shape
    lp = _log_softmax(x)
    p = np.exp(lp)
    loss = np.zeros(n)
    grad = np.zeros((n, C))
    for i in range(n):
        if t[i] == ignore_index:
            continue
        coef = np.zeros(C)
        coef[t[i]] = (1 - eps) * w[t[i]]
        if eps > 0:
            coef = coef + eps / C * w
        loss[i] = -sum(coef[c] * lp[i, c] for c in range(C) if coef[c] != 0)
        grad[i] = p[i] * coef.sum() - coef
    return loss, grad


def _nan_weight_case(n, C, rng):
    """Rows whose targets avoid class 1, whose weight is NaN."""
    x = rng.normal(size=(n, C)) * 2
    t = rng.integers(0, C - 1, n)
    t[t == 1] = C - 1
    w = rng.uniform(0.5, 2.0, C)
    w[1] = np.nan
    return x, t, w


def test_nan_weight_of_another_class_issue_example():
    x = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
    t = np.array([0, 1])
    w = np.array([1.0, np.nan, 1.0])
    loss, grad = xent.cross_entropy(x, t, weight=w, reduction="none", return_grad=True)
    # torch: [-0.910, 0.245, 0.665], softmax minus one-hot
    np.testing.assert_allclose(grad[0], np.exp(_log_softmax(x[0])) - [1, 0, 0], rtol=1e-14)
    np.testing.assert_allclose(loss[0], -_log_softmax(x)[0, 0], rtol=1e-14)
    # Row 1's target weight is NaN: its loss and gradient are NaN (as torch's).
    assert np.isnan(loss[1]) and np.all(np.isnan(grad[1]))


# (shape, axis): rows of many classes (row batches), few classes in tiles of
# rows, strided rows (row by row) and the class axis not last (blocks).
LAYOUTS = [((64, 200), -1, "contiguous"), ((300, 5), -1, "contiguous"),
           ((64, 200), -1, "strided"), ((4, 6, 40), 1, "contiguous"), ((3, 7), -1, "contiguous")]


@pytest.mark.parametrize("shape, axis, layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_nan_weight_of_another_class_stays_out(shape, axis, layout, dtype, reduction):
    rng = np.random.default_rng(1)
    C = shape[axis]
    x2, t1, w = _nan_weight_case(math.prod(shape) // C, C, rng)
    ax = axis % len(shape)
    row_shape = shape[:ax] + shape[ax + 1:]
    if layout == "strided":
        x = np.repeat(x2, 2, axis=1)[:, ::2]
    else:  # x2's rows are the positions of the class axis, in C order
        x = np.moveaxis(x2.reshape(row_shape + (C,)), -1, axis)
    t = t1.reshape(row_shape)
    x = x.astype(dtype)
    loss, grad = xent.cross_entropy(x, t, axis=axis, weight=w, reduction=reduction,
                                    return_grad=True)
    ref_rows, ref_grad = _ref_ce_index(np.moveaxis(x, axis, -1).reshape(-1, C).astype(np.float64),
                                       t.reshape(-1), w)
    scale = 1.0
    if reduction == "mean":
        scale = 1 / math.fsum(w[t.reshape(-1)])
    ref_grad = np.moveaxis((scale * ref_grad).reshape(np.moveaxis(x, axis, -1).shape), -1, axis)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, ref_grad, rtol=tol, atol=tol * np.abs(ref_grad).max())
    expected = ref_rows.reshape(t.shape) if reduction == "none" else scale * math.fsum(ref_rows)
    np.testing.assert_allclose(loss, expected, rtol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_weight_of_another_class_infinite_rows(dtype):
    # Rows with +inf / -inf logits take the term-by-term path.
    x = np.array([[np.inf, 1.0, 2.0], [0.0, 1.0, -np.inf], [np.inf, np.inf, 0.0]], dtype)
    t = np.array([0, 0, 0])
    w = np.array([2.0, np.nan, 1.0])
    loss, grad = xent.cross_entropy(x, t, weight=w, reduction="none", return_grad=True)
    np.testing.assert_allclose(grad[0], [0.0, 0.0, 0.0])
    p1 = np.exp(_log_softmax([[0.0, 1.0]]))[0]
    np.testing.assert_allclose(grad[1], [2 * (p1[0] - 1), 2 * p1[1], 0.0], rtol=1e-6)
    np.testing.assert_allclose(grad[2], [-1.0, 1.0, 0.0])
    np.testing.assert_allclose(loss, [0.0, -2 * math.log(p1[0]), 2 * math.log(2)], rtol=1e-6)


@pytest.mark.parametrize("eps", [0.1, 1.0])
def test_nan_weight_with_label_smoothing_is_nan(eps):
    # With label smoothing every class's weight enters every row: NaN stays.
    x = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
    w = np.array([1.0, np.nan, 1.0])
    loss, grad = xent.cross_entropy(x, np.array([0, 2]), weight=w, reduction="none",
                                    label_smoothing=eps, return_grad=True)
    assert np.all(np.isnan(loss)) and np.all(np.isnan(grad))


@needs_torch
@pytest.mark.parametrize("n, C, layout", [(64, 200, "contiguous"), (300, 5, "contiguous"),
                                          (64, 200, "strided"), (3, 7, "contiguous")])
def test_nan_weight_of_another_class_matches_torch(n, C, layout):
    x, t, w = _nan_weight_case(n, C, np.random.default_rng(2))
    if layout == "strided":
        x = np.repeat(x, 2, axis=1)[:, ::2]
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    ref = F.cross_entropy(xt, torch.tensor(t), weight=torch.tensor(w), reduction="sum")
    ref.backward()
    loss, grad = xent.cross_entropy(x, t, weight=w, reduction="sum", return_grad=True)
    np.testing.assert_allclose(loss, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-10, atol=1e-15)


# ---------------------------------------------------------------------------
# 3. NaN reaches everything computed from its row, a zero weight included
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape, axis, layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("return_grad", [False, True])
@pytest.mark.parametrize("weights", ["zero on target", "all zero"])
def test_nan_row_with_zero_target_weight_is_nan(shape, axis, layout, dtype, return_grad, weights):
    rng = np.random.default_rng(3)
    C = shape[axis]
    n = math.prod(shape) // C
    x2 = rng.normal(size=(n, C))
    t1 = rng.integers(1, C, n)
    t1[::3] = 0  # weight 0
    t1[1::5] = -100  # ignored, with a NaN in some of them
    x2[::2, -1] = np.nan
    w = rng.uniform(0.5, 2.0, C) if weights == "zero on target" else np.zeros(C)
    w[0] = 0.0
    ax = axis % len(shape)
    row_shape = shape[:ax] + shape[ax + 1:]
    x = np.repeat(x2, 2, axis=1)[:, ::2] if layout == "strided" else \
        np.moveaxis(x2.reshape(row_shape + (C,)), -1, axis)
    t = t1.reshape(row_shape)
    kw = dict(axis=axis, weight=w, reduction="none")
    if return_grad:
        loss, grad = xent.cross_entropy(x.astype(dtype), t, return_grad=True, **kw)
    else:
        loss = xent.cross_entropy(x.astype(dtype), t, **kw)
    nan_row = np.isnan(x2).any(axis=1)
    ignored = t1 == -100
    flat = loss.reshape(-1)
    assert np.all(np.isnan(flat[nan_row & ~ignored]))
    assert np.all(flat[ignored] == 0)
    assert np.all(np.isfinite(flat[~nan_row]))
    zero_w = (~ignored) & (w[np.where(ignored, 0, t1)] == 0) & ~nan_row
    assert np.all(flat[zero_w] == 0)
    if return_grad:
        g = np.moveaxis(grad, axis, -1).reshape(n, C)
        assert np.all(np.isnan(g[nan_row & ~ignored]))
        assert np.all(g[ignored] == 0)
        assert np.all(np.isfinite(g[~nan_row]))
    # "sum" and "mean" are NaN too (the mean's denominator may also be 0).
    assert np.isnan(xent.cross_entropy(x.astype(dtype), t, axis=axis, weight=w, reduction="sum"))
    assert np.isnan(xent.cross_entropy(x.astype(dtype), t, axis=axis, weight=w))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_row_with_zero_weight_nonfinite_rows(dtype):
    # A NaN beside +inf, an all -inf row (NaN log-softmax, SPEC): NaN whatever the weight.
    x = np.array([[np.nan, np.inf, 0.0], [-np.inf, -np.inf, -np.inf], [np.inf, 0.0, np.nan],
                  [np.nan, np.nan, np.nan]], dtype)
    t = np.array([0, 0, 2, -100])
    w = np.array([0.0, 1.0, 0.0])
    loss, grad = xent.cross_entropy(x, t, weight=w, reduction="none", return_grad=True)
    assert np.all(np.isnan(loss[:3])) and np.all(np.isnan(grad[:3]))
    assert loss[3] == 0 and np.all(grad[3] == 0)  # ignored: 0 whatever it holds
    # A zero weight on a class of probability 0 still costs nothing (0 · log 0 = 0).
    x2 = np.array([[-np.inf, 1.0, 2.0], [np.inf, 0.0, 1.0]], dtype)
    loss2 = xent.cross_entropy(x2, np.array([0, 1]), weight=w, reduction="none")
    np.testing.assert_array_equal(loss2, [0.0, np.inf])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_row_with_zero_probability_targets_is_nan(dtype):
    x = np.array([[np.nan, 1.0, 2.0], [np.nan, np.inf, 0.0], [np.nan, 0.0, 0.0],
                  [1.0, 2.0, 3.0]], dtype)
    y = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype)
    for w in (None, np.zeros(3), np.array([1.0, 0.0, 1.0])):
        loss, grad = xent.cross_entropy(x, y, weight=w, reduction="none", return_grad=True)
        assert np.all(np.isnan(loss[:3])) and np.all(np.isnan(grad[:3])), w
        assert np.all(np.isfinite(loss[3])) and np.all(np.isfinite(grad[3]))


@needs_torch
def test_nan_row_with_zero_target_weight_matches_torch():
    x = np.array([[np.nan, 1.0, 2.0], [1.0, 0.0, 0.0], [-np.inf, -np.inf, -np.inf]])
    t = np.array([0, 1, 0])
    for w in (np.array([0.0, 1.0, 1.0]), np.zeros(3)):
        ref = F.cross_entropy(torch.tensor(x), torch.tensor(t), weight=torch.tensor(w),
                              reduction="none").numpy()
        got = xent.cross_entropy(x, t, weight=w, reduction="none")
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-14)


# ---------------------------------------------------------------------------
# 4. probability targets with infinite mass: the limits, not NaN
# ---------------------------------------------------------------------------


def _ref_prob_rows(x, y, w, eps):
    """float64 loss and gradient of Σ l_i for finite probability targets y, with the
    SPEC's rule for infinite logits and 0·log 0 = 0."""
    x = np.asarray(x, np.float64)
    C = x.shape[-1]
    k = (x == np.inf).sum(axis=-1, keepdims=True)
    with np.errstate(all="ignore"):
        m = np.where(k > 0, 0.0, x.max(axis=-1, keepdims=True))
        e = np.where(k > 0, (x == np.inf).astype(float), np.exp(x - m))
        p = e / e.sum(axis=-1, keepdims=True)
        lp = np.where(k > 0, np.where(x == np.inf, -np.log(np.maximum(k, 1)), -np.inf),
                      x - m - np.log(e.sum(axis=-1, keepdims=True)))
        a = (np.ones(C) if w is None else w) * ((1 - eps) * y + eps / C)
        loss = -np.where(a == 0, 0.0, a * lp).sum(axis=-1)
        # Σ_c a_c (p_j - [j == c]) = p_j Σ_{c != j} a_c - (1 - p_j) a_j: no huge
        # a_j cancels against itself where p_j is exactly 1
        others = (a[..., None, :] * (1 - np.eye(C))).sum(axis=-1)
        grad = p * others - (1 - p) * a
    return loss, grad


def _ref_prob_limit(x, y, w=None, eps=0.0):
    """The limit of _ref_prob_rows as the infinite entries of y grow, each at its
    own rate: evaluated with them at M·r (M = 1e150, rates r in ratios up to 1e12).  A
    value that grows with M has the limit ±inf when every rate ratio gives that
    sign, no limit (NaN) when they disagree; else it is the value itself."""
    y = np.asarray(y, np.float64)
    big = np.isinf(y)
    results = []
    for rates in ([1.0, 1.0, 1.0], [1.0, 1e6, 1e-6], [1e6, 1.0, 1e3], [1e-6, 1e-3, 1.0]):
        r = np.resize(np.array(rates), y.shape)
        results.append(_ref_prob_rows(x, np.where(big, np.sign(y) * 1e150 * r, y), w, eps))

    def limit(values):
        v = np.stack(values)
        grows = np.abs(v) > 1e100
        out = v[0].copy()
        g = grows.any(axis=0)
        same = np.all(np.sign(v) == np.sign(v[0]), axis=0)
        out[g] = np.where(same[g], np.copysign(np.inf, v[0][g]), np.nan)
        return out

    return limit([r[0] for r in results]), limit([r[1] for r in results])


PROB_LIMIT_CASES = {
    # (logits, targets): infinite mass on the largest logit (the issue), elsewhere,
    # negative, on a class of probability 1 or 0, beside +inf logits, two masses.
    "on the max": ([[0.0, 1.0, 2.0]], [[0.0, 0.0, np.inf]]),
    "not on the max": ([[0.0, 1.0, 2.0]], [[0.0, np.inf, 0.0]]),
    "with finite mass": ([[0.0, 1.0, 2.0]], [[0.3, 0.0, np.inf]]),
    "negative": ([[0.0, 1.0, 2.0]], [[-np.inf, 0.0, 0.0]]),
    "probability one": ([[-np.inf, 2.0, -np.inf]], [[0.0, np.inf, 0.0]]),
    "probability one, finite mass on a dead class": ([[-np.inf, 2.0, -np.inf]],
                                                     [[1.0, np.inf, 0.0]]),
    "on a dead class": ([[-np.inf, 2.0, 1.0]], [[np.inf, 0.0, 0.0]]),
    "one class": ([[3.0]], [[np.inf]]),
    "two masses": ([[0.0, 1.0, 2.0]], [[np.inf, np.inf, 0.0]]),
    "masses of both signs": ([[0.0, 1.0, 2.0]], [[np.inf, -np.inf, 0.0]]),
    "+inf logits": ([[np.inf, 0.0, np.inf]], [[np.inf, 0.0, 0.0]]),
    "lone +inf logit": ([[np.inf, 0.0, 0.0]], [[np.inf, 1.0, 0.0]]),
}


@pytest.mark.parametrize("case", sorted(PROB_LIMIT_CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"weight": "w"},
                                     {"label_smoothing": 1.0}])
def test_prob_targets_infinite_mass_limits(case, dtype, options):
    x, y = (np.array(v) for v in PROB_LIMIT_CASES[case])
    C = x.shape[1]
    w = np.linspace(0.5, 2.0, C) if "weight" in options else None
    eps = options.get("label_smoothing", 0.0)
    # a row of finite values beside, to see that the limit stays in its row
    x = np.concatenate([x, np.linspace(-1, 1, C)[None]]).astype(dtype)
    y = np.concatenate([y, np.full((1, C), 1.0 / C)]).astype(dtype)
    loss, grad = xent.cross_entropy(x, y, weight=w, label_smoothing=eps, reduction="none",
                                    return_grad=True)
    ref_loss, ref_grad = _ref_prob_limit(x, y, w, eps)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, ref_loss, rtol=tol, atol=tol)
    np.testing.assert_allclose(grad, ref_grad, rtol=tol, atol=tol)


def test_prob_targets_infinite_mass_examples():
    # The issue's example and hand-derived limits (p = softmax(x)).
    x = np.array([[0.0, 1.0, 2.0]])
    loss, grad = xent.cross_entropy(x, np.array([[0.0, 0.0, np.inf]]), reduction="none",
                                    return_grad=True)
    assert loss[0] == np.inf
    np.testing.assert_array_equal(grad, [[np.inf, np.inf, -np.inf]])
    # a class whose probability rounds to 0 still has a positive one (p = e^-1000)
    loss, grad = xent.cross_entropy(np.array([[0.0, -1000.0]]), np.array([[np.inf, 0.0]]),
                                    reduction="none", return_grad=True)
    assert loss[0] == np.inf
    np.testing.assert_array_equal(grad, [[-np.inf, np.inf]])
    # zero weight, and "mean"/"sum" of a row of infinite loss
    got = xent.cross_entropy(x, np.array([[0.0, 0.0, np.inf]]), weight=np.array([1.0, 1.0, 0.0]),
                             reduction="none", return_grad=True)
    np.testing.assert_array_equal(got[0], [0.0])
    np.testing.assert_array_equal(got[1], [[0.0, 0.0, 0.0]])
    for reduction in ("mean", "sum"):
        assert xent.cross_entropy(x, np.array([[0.0, 0.0, np.inf]]), reduction=reduction) == np.inf
    # a NaN beside the infinite mass is NaN everywhere in its row
    loss, grad = xent.cross_entropy(x, np.array([[np.nan, 0.0, np.inf]]), reduction="none",
                                    return_grad=True)
    assert np.isnan(loss[0]) and np.all(np.isnan(grad))


def test_prob_targets_infinite_mass_with_z_loss():
    x = np.array([[0.0, 1.0, 2.0], [-np.inf, 1.0, -np.inf]])
    y = np.array([[0.0, 0.0, np.inf], [0.0, np.inf, 0.0]])
    loss, grad = xent.cross_entropy(x, y, z_loss=0.5, reduction="none", return_grad=True)
    lse = math.log(np.exp(x[0]).sum())
    np.testing.assert_array_equal(loss, [np.inf, 0.5])  # row 1: p = 1, lse = 1
    np.testing.assert_array_equal(grad[0], [np.inf, np.inf, -np.inf])
    np.testing.assert_allclose(grad[1], [0.0, 1.0, 0.0])  # 2·z·lse·p
    assert np.isfinite(lse)


@needs_torch
def test_prob_targets_infinite_mass_loss_matches_torch():
    # Where torch's loss is a number (it is NaN on some limits), it is ours.
    for name, (x, y) in sorted(PROB_LIMIT_CASES.items()):
        ref = F.cross_entropy(torch.tensor(x), torch.tensor(y), reduction="none").numpy()
        got = xent.cross_entropy(np.array(x), np.array(y), reduction="none")
        if not np.isnan(ref[0]):
            np.testing.assert_array_equal(got, ref, err_msg=name)


# ---------------------------------------------------------------------------
# 5. the weighted "mean" divides by an accurately summed weight
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["int64", "int32 strided, ignored rows"])
def test_weighted_mean_denominator_is_accurate(layout):
    rng = np.random.default_rng(5)
    n, C = 10**6, 4
    x = rng.normal(size=(n, C))
    t = rng.integers(0, C, n)
    w = np.array([0.1, 1 / 3, 2.7, 1e-3])
    if layout != "int64":
        t[::7] = -100
        t = np.repeat(t.astype(np.int32), 2)[::2]
    valid = t != -100
    tv = np.where(valid, t, 0)
    rows = np.where(valid, -w[tv] * _log_softmax(x)[np.arange(n), tv], 0.0)
    expected = math.fsum(rows) / math.fsum(w[t[valid]])
    got = xent.cross_entropy(x, t, weight=w)
    # A running sum of the 10**6 weights is off by ~2e-12 relative.
    assert abs(float(got) - expected) <= 4e-15 * expected
    _, grad = xent.cross_entropy(x, t, weight=w, return_grad=True)
    scale = 1 / math.fsum(w[t[valid]])
    r = np.flatnonzero(valid)[:5]
    p = np.exp(_log_softmax(x[r]))
    expected_grad = scale * w[t[r], None] * (p - np.eye(C)[t[r]])
    np.testing.assert_allclose(grad[r], expected_grad, rtol=1e-13)


# ---------------------------------------------------------------------------
# 6. ignore_index outside int64: a ValueError naming it, at construction too
# ---------------------------------------------------------------------------

IGNORE_CALLS = {
    "cross_entropy": lambda x, t, i: xent.cross_entropy(x, t, ignore_index=i),
    "cross_entropy_none": lambda x, t, i: xent.cross_entropy(x, t, ignore_index=i,
                                                             reduction="none"),
    "nll_loss": lambda x, t, i: xent.nll_loss(x, t, ignore_index=i),
    "focal_loss": lambda x, t, i: xent.focal_loss(x, t, ignore_index=i),
    "evaluate": lambda x, t, i: xent.evaluate(x, t, ignore_index=i),
    "Evaluator": lambda x, t, i: xent.Evaluator(ignore_index=i),
}


@pytest.mark.parametrize("name", sorted(IGNORE_CALLS))
@pytest.mark.parametrize("value", [2**70, -2**63 - 1, 2**63, np.uint64(2**63)])
def test_ignore_index_outside_int64_is_a_value_error(name, value):
    with pytest.raises(ValueError, match=rf"ignore_index: .*int64.*got {int(value)}$"):
        IGNORE_CALLS[name](X3, np.array([0, 1, 2]), value)


@pytest.mark.parametrize("name", sorted(IGNORE_CALLS))
def test_ignore_index_int64_bounds_are_accepted(name):
    for value in (-2**63, 2**63 - 1):
        IGNORE_CALLS[name](X3, np.array([0, 1, 2]), value)


def test_ignore_index_outside_int64_dask():
    da = pytest.importorskip("dask.array")
    import xent.dask

    x = da.from_array(X3, chunks=(2, 3))
    t = da.from_array(np.array([0, 1, 2]), chunks=2)
    with pytest.raises(ValueError, match=r"ignore_index: .*got 1180591620717411303424"):
        xent.dask.cross_entropy(x, t, ignore_index=2**70)


# ---------------------------------------------------------------------------
# 7. no classes, every row ignored: a legal call of every loss
# ---------------------------------------------------------------------------

ZERO_CLASS_CALLS = {
    "focal_loss alpha": lambda x, t, r: xent.focal_loss(x, t, alpha=np.zeros(0), reduction=r),
    "focal_loss": lambda x, t, r: xent.focal_loss(x, t, reduction=r),
    "nll_loss weight": lambda x, t, r: xent.nll_loss(x, t, weight=np.zeros(0), reduction=r),
    "cross_entropy weight": lambda x, t, r: xent.cross_entropy(x, t, weight=np.zeros(0),
                                                               reduction=r),
    "cross_entropy": lambda x, t, r: xent.cross_entropy(x, t, reduction=r),
}


@pytest.mark.parametrize("name", sorted(ZERO_CLASS_CALLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_classes_every_row_ignored(name, dtype):
    f = ZERO_CLASS_CALLS[name]
    x, t = np.zeros((3, 0), dtype), np.full(3, -100)
    mean = f(x, t, "mean")
    assert np.isnan(mean) and type(mean) is np.dtype(dtype).type  # 0/0, as torch
    assert f(x, t, "sum") == 0
    none = f(x, t, "none")
    assert none.dtype == dtype
    np.testing.assert_array_equal(none, np.zeros(3))
    with pytest.raises(IndexError, match=r"class index 0 at position \(1,\)"):
        f(x, np.array([-100, 0, -100]), "mean")


# ---------------------------------------------------------------------------
# 8. no warnings leak from the internals: inf and NaN are answers there
# ---------------------------------------------------------------------------

HUGE32 = np.full((2, 3), 1e30, np.float32)
SPREAD32 = np.array([[3e38, -3e38, 0.0], [1.0, 2.0, 3.0]], np.float32)
HUGE64 = np.array([[1e300, -1e300, 0.0], [1.0, 2.0, 3.0]])
T2 = np.array([1, 0])

WARNING_CASES = {
    # z·lse² = 1e56 in float64, beyond float32: inf
    "z_loss float32 mean": (lambda: xent.cross_entropy(HUGE32, T2, z_loss=1e-4), np.inf),
    "z_loss float32 sum": (lambda: xent.cross_entropy(HUGE32, T2, z_loss=1e-4, reduction="sum"),
                           np.inf),
    "z_loss float32 none": (lambda: xent.cross_entropy(HUGE32, T2, z_loss=1e-4, reduction="none"),
                            [np.inf, np.inf]),
    "z_loss float32 grad": (lambda: xent.cross_entropy(HUGE32, T2, z_loss=1e-4,
                                                       return_grad=True)[0], np.inf),
    "z_loss float64 over": (lambda: xent.cross_entropy(HUGE64, T2, z_loss=1.0, reduction="none"),
                            [np.inf, -_log_softmax([[1.0, 2.0, 3.0]])[0, 0]
                             + math.log(np.exp([1.0, 2.0, 3.0]).sum()) ** 2]),
    # -log p = 6e38 in float64, beyond float32
    "spread float32 none": (lambda: xent.cross_entropy(SPREAD32, T2, reduction="none"),
                            [np.inf, -_log_softmax([[1.0, 2.0, 3.0]])[0, 0]]),
    "spread float32 weighted": (lambda: xent.cross_entropy(SPREAD32, T2, weight=[1.0, 1.0, 1.0],
                                                           reduction="sum"), np.inf),
    "focal float32 none": (lambda: xent.focal_loss(SPREAD32, T2, gamma=0.0, reduction="none"),
                           [np.inf, -_log_softmax([[1.0, 2.0, 3.0]])[0, 0]]),
    "focal float32 sum": (lambda: xent.focal_loss(SPREAD32, T2, gamma=0.0, reduction="sum"),
                          np.inf),
    # a zero weight on a log-probability of -inf costs 0 (0·log 0 = 0, SPEC)
    "nll zero weight -inf": (lambda: xent.nll_loss(np.array([[-np.inf, 0.0]]), np.array([0]),
                                                   weight=np.array([0.0, 1.0]), reduction="none"),
                             [0.0]),
    "nll zero weight -inf sum": (lambda: xent.nll_loss(np.array([[-np.inf, 0.0], [0.0, -1.0]]),
                                                       np.array([0, 1]),
                                                       weight=np.array([0.0, 1.0]),
                                                       reduction="sum"), 1.0),
    "nll zero weight -inf mean": (lambda: xent.nll_loss(np.array([[-np.inf, 0.0]]), np.array([0]),
                                                        weight=np.array([0.0, 1.0])), np.nan),
    "nll huge weights": (lambda: xent.nll_loss(np.array([[-1e300, 0.0]]), np.array([0]),
                                               weight=np.array([1e300, 1.0]), reduction="sum"),
                         np.inf),
    "focal zero alpha -inf": (lambda: xent.focal_loss(np.array([[-np.inf, 0.0]]), np.array([0]),
                                                      alpha=np.array([0.0, 1.0]),
                                                      reduction="none"), [0.0]),
    # rounding to a caller's narrower out=/grad_out=, and float64 weights in float32
    "log_softmax out float16": (lambda: xent.log_softmax(SPREAD32, out=np.empty((2, 3),
                                                                               np.float16))[0],
                                [0.0, -np.inf, -np.inf]),
    "logsumexp out float16": (lambda: xent.logsumexp(HUGE32, out=np.empty(2, np.float16)),
                              [np.inf, np.inf]),
    "grad_out float16": (lambda: xent.cross_entropy(HUGE32 * 0, T2, z_loss=1e30, reduction="sum",
                                                    return_grad=True,
                                                    grad_out=np.empty((2, 3), np.float16))[1][0],
                         [np.inf, np.inf, np.inf]),
    "bce float64 weight in float32": (lambda: xent.binary_cross_entropy(
        np.full(3, 0.5, np.float32), np.ones(3, np.float32), weight=np.full(3, 1e300),
        reduction="sum"), np.inf),
    "bce_with_logits pos_weight": (lambda: xent.binary_cross_entropy_with_logits(
        np.zeros(3, np.float32), np.ones(3, np.float32), pos_weight=np.full(3, 1e300)), np.inf),
    "kl_div float32": (lambda: xent.kl_div(np.full(3, -3e38, np.float32),
                                           np.full(3, 1e30, np.float32), reduction="sum"),
                       np.inf),
    "evaluate huge": (lambda: xent.evaluate(np.array([[1e308, -1e308]] * 3),
                                            np.array([1, 1, 1])).loss, np.inf),
}


@pytest.mark.parametrize("name", sorted(WARNING_CASES))
def test_no_warning_leaks(name):
    f, expected = WARNING_CASES[name]
    got = _no_warnings(f)
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=1e-6)


# ---------------------------------------------------------------------------
# 9. what the docstrings say is what the calls do
# ---------------------------------------------------------------------------


def test_docstrings_state_grad_out_and_scalar_rules():
    ce = " ".join(xent.cross_entropy.__doc__.split())
    assert "bfloat16" in ce and "share memory" in ce
    assert "``inf`` and NaN raise `ValueError`" in ce
    focal = " ".join(xent.focal_loss.__doc__.split())
    assert "``inf`` and NaN raise `ValueError`" in focal
    x = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
    t = np.array([0, 1])
    for value in (np.inf, -np.inf, np.nan):
        with pytest.raises(ValueError, match=r"z_loss: expected a value in \[0, inf\)"):
            xent.cross_entropy(x, t, z_loss=value)
        with pytest.raises(ValueError, match=r"gamma: expected a value in \[0, inf\)"):
            xent.focal_loss(x, t, gamma=value)
    for value in ("2", True):
        with pytest.raises(TypeError, match="z_loss: expected a real number"):
            xent.cross_entropy(x, t, z_loss=value)
        with pytest.raises(TypeError, match="gamma: expected a real number"):
            xent.focal_loss(x, t, gamma=value)
    overlapping = np.lib.stride_tricks.as_strided(np.zeros(4), (2, 3), (8, 8))
    with pytest.raises(ValueError, match="grad_out: its elements overlap"):
        xent.cross_entropy(x, t, return_grad=True, grad_out=overlapping)


def test_grad_out_bfloat16_is_accepted():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
    t = np.array([0, 1])
    g = np.zeros(x.shape, ml_dtypes.bfloat16)
    _, got = xent.cross_entropy(x, t, reduction="sum", return_grad=True, grad_out=g)
    assert got is g
    expected = np.exp(_log_softmax(x)) - np.eye(3)[t]
    np.testing.assert_allclose(g.astype(np.float64), expected, rtol=1e-2, atol=1e-3)


# ---------------------------------------------------------------------------
# Findings of the fuzz test (tests/test_fuzz.py) beyond the issue's list


def test_probability_targets_over_no_class_are_the_empty_sum():
    # C = 0: the row's loss is an empty sum (0), its logsumexp -inf, so z_loss's
    # term is +inf; torch gives 0 for the loss too.
    loss, grad = xent.cross_entropy(np.zeros((3, 0)), np.zeros((3, 0)), reduction="none",
                                    return_grad=True)
    assert loss.tolist() == [0.0, 0.0, 0.0] and grad.shape == (3, 0)
    assert xent.cross_entropy(np.zeros((2, 0), np.float32), np.zeros((2, 0)),
                              label_smoothing=0.5) == 0.0
    assert xent.cross_entropy(np.zeros(0), np.zeros(0), reduction="sum", z_loss=2.5) == math.inf
    # a row with classes, all of probability 0, is still NaN (SPEC: NaN log-softmax)
    assert np.isnan(xent.cross_entropy(np.full((1, 2), -np.inf), np.zeros((1, 2)),
                                       reduction="none")).all()
    if torch is not None:
        ref = F.cross_entropy(torch.zeros(3, 0, dtype=torch.float64),
                              torch.zeros(3, 0, dtype=torch.float64), reduction="none")
        assert ref.tolist() == [0.0, 0.0, 0.0]


def test_entropy_over_no_class_is_zero():
    # the empty sum, as kl_divergence and cross_entropy with probability targets give
    assert xent.entropy(np.zeros((2, 0))).tolist() == [0.0, 0.0]
    assert xent.entropy(np.zeros((2, 0), np.float32), base=2).tolist() == [0.0, 0.0]
    assert xent.kl_divergence(np.zeros((2, 0)), np.zeros((2, 0)), reduction="none").tolist() \
        == [0.0, 0.0]
    assert np.isnan(xent.entropy(np.full((1, 3), -np.inf))).all()


def _kl_ref_mpmath(p, q, dtype):
    """KL(softmax(p) || softmax(q)) with mpmath (50 digits), exact for subnormal P;
    a P that rounds to 0 in `dtype` (as softmax gives it) costs 0."""
    import mpmath
    with mpmath.workdps(50):
        lp = [mpmath.mpf(float(v)) for v in p]
        lq = [mpmath.mpf(float(v)) if np.isfinite(v) else None for v in q]
        zp = mpmath.log(sum(mpmath.exp(v) for v in lp))
        zq = mpmath.log(sum(mpmath.exp(v) for v in lq if v is not None))
        total = mpmath.mpf(0)
        for a, b in zip(lp, lq):
            if dtype(float(mpmath.exp(a - zp))) == 0:
                continue
            if b is None:
                return math.inf
            total += mpmath.exp(a - zp) * ((a - zp) - (b - zq))
        return float(total)


@pytest.mark.parametrize("dtype, p, q", [
    (np.float64, [0.0, -714.0], [0.0, -np.inf]),   # subnormal P against Q = 0: +inf
    (np.float64, [0.0, -800.0], [0.0, -np.inf]),   # P rounds to 0 (as softmax's): 0
    (np.float32, [0.0, -105.0], [0.0, -np.inf]),
    (np.float64, [0.0, -714.0], [0.0, -1e308]),    # subnormal P times a huge log ratio
    (np.float32, [0.0, -100.0], [0.0, -3e38]),
    (np.float32, [0.0, -100.0], [0.0, -np.inf]),
    (np.float64, [1.0, 2.0, -3.0], [0.5, -1.0, 2.0]),  # an ordinary row, unchanged
])
def test_kl_divergence_keeps_teacher_probabilities_below_the_normal_range(dtype, p, q):
    got = xent.kl_divergence(np.array(p, dtype), np.array(q, dtype))
    want = _kl_ref_mpmath(p, q, dtype)
    if math.isinf(want):
        assert got == want
    else:
        assert got == pytest.approx(want, rel=1e-6 if dtype == np.float32 else 1e-12)
