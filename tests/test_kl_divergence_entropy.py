"""Tests for xent.kl_divergence (with its gradient w.r.t. q_logits) and xent.entropy.

``kl_divergence(p, q, temperature=T)`` is KL(softmax(p/T) ‖ softmax(q/T)) per row;
"none" gives one value per row, "mean" averages over rows, "sum" sums them; the
gradient is ∂loss/∂q_logits = (softmax(q/T) - softmax(p/T))/T scaled by the reduction
(no T² factor).  ``entropy`` is the Shannon entropy of softmax(logits) per row.
Values are checked against the float64 references of references.py, hand-computed
numbers and finite differences; PyTorch parity is in test_torch_parity_losses.py.
"""

import math
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
    assert_untouched,
    bitwise_equal,
    central_difference,
    check_grad,
    check_loss,
    computation_dtype,
    finite_scale,
    loss_tol,
    target_shape,
    with_layout,
)
from references import ref_entropy, ref_kl_divergence

inf = np.inf
nan = np.nan
CASES = [
    ((10, 7), -1),
    ((10, 7), 0),
    ((3, 5, 4, 2), 1),
    ((4, 3, 6), -1),
    ((5, 1), -1),
]
CASE_IDS = [f"{'x'.join(map(str, s))}-ax{a}" for s, a in CASES]


def make_pq(rng, shape, dtype, scale=3.0):
    p = (rng.standard_normal(shape) * scale).astype(dtype)
    q = (rng.standard_normal(shape) * scale).astype(dtype)
    return p, q


# ===========================================================================
# kl_divergence
# ===========================================================================


def test_kl_hand_computed():
    p = np.array([[0.0, math.log(3.0)], [1.0, 1.0]])
    q = np.array([[0.0, 0.0], [0.0, math.log(4.0)]])
    # row 0: P = (1/4, 3/4), Q = (1/2, 1/2); row 1: P = (1/2, 1/2), Q = (1/5, 4/5)
    k0 = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    k1 = 0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.8)
    np.testing.assert_allclose(xent.kl_divergence(p, q, reduction="none"), [k0, k1], rtol=1e-14)
    assert xent.kl_divergence(p, q) == pytest.approx((k0 + k1) / 2, rel=1e-14)
    assert xent.kl_divergence(p, q, reduction="sum") == pytest.approx(k0 + k1, rel=1e-14)
    loss, g = xent.kl_divergence(p, q, reduction="sum", return_grad=True)
    np.testing.assert_allclose(g, [[0.25, -0.25], [-0.3, 0.3]], rtol=1e-13, atol=1e-15)
    loss, g = xent.kl_divergence(p, q, return_grad=True)  # mean over 2 rows
    np.testing.assert_allclose(g, [[0.125, -0.125], [-0.15, 0.15]], rtol=1e-13, atol=1e-15)
    # temperature 2: softmax(p/2) etc., gradient divided by T (no T² factor)
    p2 = np.array([[0.0, 2 * math.log(3.0)]])
    q2 = np.array([[0.0, 0.0]])
    loss, g = xent.kl_divergence(p2, q2, temperature=2.0, reduction="sum", return_grad=True)
    assert loss == pytest.approx(k0, rel=1e-14)
    np.testing.assert_allclose(g, [[0.125, -0.125]], rtol=1e-13)


@pytest.mark.parametrize("temperature", [1.0, 2.5, 0.5])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("shape,axis", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_kl_matrix(dtype, shape, axis, layout, temperature, num_threads):
    for reduction in REDUCTIONS:
        _kl_matrix_case(dtype, shape, axis, layout, temperature, reduction)


def _kl_matrix_case(dtype, shape, axis, layout, temperature, reduction):
    rng = np.random.default_rng(zlib.crc32(repr((shape, axis, np.dtype(dtype).name)).encode()))
    p0, q0 = make_pq(rng, shape, dtype)
    p = with_layout(p0, layout, readonly=True)
    q = with_layout(q0, layout, readonly=True)
    kw = dict(axis=axis, temperature=temperature, reduction=reduction)
    exp_l, exp_g = ref_kl_divergence(p0, q0, **kw)
    comp = computation_dtype(dtype)
    scale = (finite_scale(p0) + finite_scale(q0)) / temperature
    n_rows = int(np.prod(target_shape(shape, axis)))
    res = xent.kl_divergence(p, q, **kw)
    check_loss(res, exp_l, comp, scale, reduction, n_rows)
    if reduction == "none":
        assert res.shape == target_shape(shape, axis)
    res2, g = xent.kl_divergence(p, q, return_grad=True, **kw)
    check_loss(res2, exp_l, comp, scale, reduction, n_rows)
    assert g.dtype == comp and g.shape == shape
    check_grad(g, exp_g, comp, scale)
    assert bitwise_equal(p, p0) and bitwise_equal(q, q0)


def test_kl_defaults(rng):
    p, q = make_pq(rng, (6, 5), np.float64)
    exp, _ = ref_kl_divergence(p, q)
    res = xent.kl_divergence(p, q)
    assert type(res) is np.float64 and res == pytest.approx(exp, rel=1e-12)
    with pytest.raises(TypeError):
        xent.kl_divergence(p, q, -1)  # keyword-only


def test_kl_integer_and_list_inputs():
    p = [[1, 2, 3], [0, 0, 1]]
    q = [[3, 2, 1], [1, 0, 0]]
    exp, _ = ref_kl_divergence(np.array(p), np.array(q), reduction="none")
    res = xent.kl_divergence(np.array(p, dtype=np.int32), np.array(q, dtype=np.int64), reduction="none")
    assert res.dtype == np.float64
    np.testing.assert_allclose(res, exp, rtol=1e-13)
    np.testing.assert_allclose(xent.kl_divergence(p, q, reduction="none"), exp, rtol=1e-13)


def test_kl_one_dimensional():
    p = np.array([0.0, math.log(3.0)])
    q = np.array([0.0, 0.0])
    k0 = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    res = xent.kl_divergence(p, q, reduction="none")
    assert np.shape(res) == () and float(res) == pytest.approx(k0, rel=1e-14)
    assert float(xent.kl_divergence(p, q)) == pytest.approx(k0, rel=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kl_empty(dtype):
    e = np.zeros((0, 4), dtype=dtype)
    m = xent.kl_divergence(e, e)
    assert type(m) is np.dtype(dtype).type and np.isnan(m)
    s = xent.kl_divergence(e, e, reduction="sum")
    assert type(s) is np.dtype(dtype).type and s == 0
    n, g = xent.kl_divergence(e, e, reduction="none", return_grad=True)
    assert n.shape == (0,) and g.shape == (0, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kl_nonfinite(dtype):
    L = math.log(1 + math.e)
    p = np.array(
        [
            [-inf, 0.0, 1.0],  # P = 0 on class 0: contributes nothing, whatever Q is
            [0.0, 1.0, 2.0],  # Q = 0 where P > 0: +inf
            [-inf, 0.0, 1.0],  # P = Q = 0 on class 0: 0 (rel_entr(0, 0) = 0)
            [inf, 0.0, 1.0],  # P one-hot on class 0: -log Q_0
            [nan, 0.0, 1.0],  # NaN in p: NaN
            [0.0, 1.0, 2.0],  # NaN in q: NaN
        ],
        dtype=dtype,
    )
    q = np.array(
        [
            [5.0, 1.0, 0.0],
            [0.0, -inf, 2.0],
            [-inf, 1.0, 0.0],
            [1.0, 1.0, 1.0],
            [0.0, 0.0, 0.0],
            [0.0, nan, 0.0],
        ],
        dtype=dtype,
    )
    P = np.array([1.0, math.e]) / (1 + math.e)
    lP = np.array([0.0, 1.0]) - L
    lQ0 = np.array([1.0, 0.0]) - math.log(math.exp(5) + math.e + 1)
    lQ2 = np.array([1.0, 0.0]) - L
    expected = np.array(
        [(P * (lP - lQ0)).sum(), inf, (P * (lP - lQ2)).sum(), math.log(3.0), nan, nan]
    )
    rtol, atol = loss_tol(dtype, 5.0)
    assert_close(xent.kl_divergence(p, q, reduction="none"), expected, rtol, atol)
    res, g = xent.kl_divergence(p, q, reduction="none", return_grad=True)
    assert_close(res, expected, rtol, atol)
    # gradient (Q - P) on rows with a finite value
    Q0 = np.exp(np.array([5.0, 1.0, 0.0]) - math.log(math.exp(5) + math.e + 1))
    assert_close(g[0], Q0 - [0.0, P[0], P[1]], rtol, atol)
    assert_close(g[3], [1 / 3 - 1, 1 / 3, 1 / 3], rtol, atol)
    assert np.isnan(g[4]).all() and np.isnan(g[5]).all()


def test_kl_of_identical_rows_is_zero(rng):
    p = rng.standard_normal((50, 33)) * 5
    for dtype in (np.float32, np.float64):
        x = p.astype(dtype)
        res, g = xent.kl_divergence(x, x, reduction="none", return_grad=True)
        eps = float(np.finfo(dtype).eps)
        assert np.all(np.abs(res) <= 16 * eps * finite_scale(x))
        assert np.all(np.abs(g) <= 16 * eps * finite_scale(x))


# --- grad_out -----------------------------------------------------------------------------

KL_INPLACE = [((9, 17), -1, "C"), ((9, 17), 0, "C"), ((9, 17), -1, "strided"), ((3, 5, 4, 2), 1, "F"), ((2048, 130), -1, "C")]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "shape,axis,layout", KL_INPLACE, ids=[f"{'x'.join(map(str, s))}-ax{a}-{l}" for s, a, l in KL_INPLACE]
)
def test_kl_grad_out_in_place(shape, axis, layout, dtype, num_threads):
    rng = np.random.default_rng(zlib.crc32(repr((shape, axis)).encode()))
    p, q0 = make_pq(rng, shape, dtype)
    for red in REDUCTIONS:
        for T in (1.0, 3.0):
            a = with_layout(q0, layout)
            b = with_layout(q0, layout)
            gb = np.full(shape, SENTINEL, dtype=dtype)
            lb, rb = xent.kl_divergence(p, b, axis=axis, temperature=T, reduction=red, return_grad=True, grad_out=gb)
            assert rb is gb
            la, ra = xent.kl_divergence(p, a, axis=axis, temperature=T, reduction=red, return_grad=True, grad_out=a)
            assert ra is a
            assert bitwise_equal(a, gb), f"{red} T={T}: in-place gradient differs"
            assert bitwise_equal(np.asarray(la), np.asarray(lb)), f"{red} T={T}: in-place loss differs"
            assert bitwise_equal(b, q0)
            if dtype != np.float16 and T == 1.0:  # values at other T: test_kl_matrix
                _, exp_g = ref_kl_divergence(p, q0, axis=axis, temperature=T, reduction=red)
                check_grad(a, exp_g, dtype, (finite_scale(p) + finite_scale(q0)) / T)


@pytest.mark.parametrize("gdtype", [np.float32, np.float64])
def test_kl_grad_out_other_float_dtype(gdtype, rng):
    p, q = make_pq(rng, (8, 6), np.float32)
    _, exp_g = ref_kl_divergence(p, q)
    g = np.full(q.shape, SENTINEL, dtype=gdtype)
    _, r = xent.kl_divergence(p, q, return_grad=True, grad_out=g)
    assert r is g
    check_grad(g, exp_g, np.float32, finite_scale(p) + finite_scale(q))


# --- finite differences -------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.7])
@pytest.mark.parametrize("shape,axis", [((5, 4), -1), ((2, 4, 3), 1)])
def test_kl_finite_differences(shape, axis, temperature, reduction, rng):
    p, q = make_pq(rng, shape, np.float64, scale=2.0)
    kw = dict(axis=axis, temperature=temperature, reduction=reduction)

    def f(v):
        return np.sum(xent.kl_divergence(p, v, **kw), dtype=np.float64)

    _, g = xent.kl_divergence(p, q, return_grad=True, **kw)
    np.testing.assert_allclose(g, central_difference(f, q), rtol=1e-6, atol=1e-8)


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("qshape", [(6, 4), (5, 5), (6, 5, 1), (5, 6)])
def test_kl_shape_mismatch(qshape, rng):
    p = rng.standard_normal((6, 5))
    q = rng.standard_normal(qshape)
    ps, qs = p.copy(), q.copy()
    g = np.full(q.shape, SENTINEL)
    with pytest.raises(ValueError) as ei:
        xent.kl_divergence(p, q, return_grad=True, grad_out=g)
    msg = str(ei.value)
    assert str((6, 5)) in msg and str(qshape) in msg, msg
    assert_untouched(g, (p, ps), (q, qs))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(reduction="avg"),
        dict(reduction=None),
        dict(axis=2),
        dict(axis=-3),
        dict(temperature=0.0),
        dict(temperature=-1.0),
        dict(temperature=nan),
    ],
    ids=lambda k: repr(k),
)
def test_kl_bad_arguments(kwargs, rng):
    p = rng.standard_normal((6, 5))
    q = rng.standard_normal((6, 5))
    ps, qs = p.copy(), q.copy()
    g = np.full(q.shape, SENTINEL)
    with pytest.raises(ValueError):
        xent.kl_divergence(p, q, return_grad=True, grad_out=g, **kwargs)
    assert_untouched(g, (p, ps), (q, qs))
    with pytest.raises(ValueError):
        xent.kl_divergence(p, q, return_grad=True, grad_out=q, **kwargs)
    assert_untouched(None, (q, qs))


def test_kl_grad_out_errors(rng):
    p = rng.standard_normal((6, 5))
    q = rng.standard_normal((6, 5))
    qs = q.copy()
    for gshape in [(6,), (5, 6), (6, 5, 1)]:
        g = np.full(gshape, SENTINEL)
        with pytest.raises(ValueError):
            xent.kl_divergence(p, q, return_grad=True, grad_out=g)
        assert_untouched(g)
    g = np.full(q.shape, SENTINEL)
    with pytest.raises(ValueError):
        xent.kl_divergence(p, q, grad_out=g)  # grad_out without return_grad
    assert_untouched(g)
    with pytest.raises(ValueError):
        xent.kl_divergence(p, q, grad_out=q)
    assert_untouched(None, (q, qs))
    g.flags.writeable = False
    with pytest.raises(ValueError):
        xent.kl_divergence(p, q, return_grad=True, grad_out=g)
    assert_untouched(g)
    gi = np.full(q.shape, 7, dtype=np.int64)
    with pytest.raises((TypeError, ValueError)):
        xent.kl_divergence(p, q, return_grad=True, grad_out=gi)
    assert (gi == 7).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.ones((6, 5), dtype=np.complex128),
        lambda: np.ones((6, 5), dtype=object),
        lambda: np.full((6, 5), "a"),
    ],
    ids=["complex", "object", "str"],
)
def test_kl_unsupported_dtypes(make):
    good = np.zeros((6, 5))
    with pytest.raises(TypeError):
        xent.kl_divergence(make(), good)
    with pytest.raises(TypeError):
        xent.kl_divergence(good, make())


# ===========================================================================
# entropy
# ===========================================================================


def test_entropy_hand_computed():
    x = np.array([[0.0, math.log(3.0)], [0.0, 0.0], [5.0, 5.0]])
    h0 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    np.testing.assert_allclose(xent.entropy(x), [h0, math.log(2), math.log(2)], rtol=1e-14)
    np.testing.assert_allclose(xent.entropy(x, base=2), [h0 / math.log(2), 1.0, 1.0], rtol=1e-14)
    np.testing.assert_allclose(xent.entropy(x.T, axis=0, base=10), np.array([h0, math.log(2), math.log(2)]) / math.log(10), rtol=1e-14)


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("shape,axis", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_entropy_matrix(dtype, shape, axis, layout, num_threads):
    rng = np.random.default_rng(zlib.crc32(repr((shape, axis, np.dtype(dtype).name)).encode()))
    x0 = (rng.standard_normal(shape) * 3).astype(dtype)
    x = with_layout(x0, layout, readonly=True)
    comp = computation_dtype(dtype)
    rtol, atol = loss_tol(comp, finite_scale(x0))
    for base in (None, 2, math.e, 10.0):
        res = xent.entropy(x, axis=axis, base=base)
        expected = ref_entropy(x0, axis=axis, base=base)
        assert isinstance(res, np.ndarray) and res.dtype == comp
        assert res.shape == target_shape(shape, axis)
        assert_close(res, expected, rtol, atol, err_msg=f"base={base}")
    assert bitwise_equal(x, x0)


def test_entropy_defaults_and_inputs():
    x = np.array([[1, 2, 3], [0, 0, 0]])
    res = xent.entropy(x)
    assert res.dtype == np.float64
    np.testing.assert_allclose(res, ref_entropy(x), rtol=1e-13)
    np.testing.assert_allclose(xent.entropy(x.tolist()), ref_entropy(x), rtol=1e-13)
    r1 = xent.entropy(np.array([0.0, 0.0, 0.0, 0.0]))
    assert np.shape(r1) == () and float(r1) == pytest.approx(math.log(4), rel=1e-14)
    with pytest.raises(TypeError):
        xent.entropy(x, -1)  # axis is keyword-only


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_entropy_nonfinite(dtype):
    x = np.array(
        [
            [-inf, 0.0, 0.0],  # -inf: a class of probability 0
            [inf, 0.0, 1.0],  # one +inf: one-hot, 0
            [inf, inf, 1.0],  # two +inf: log 2
            [nan, 0.0, 1.0],
            [-inf, -inf, -inf],  # no class has any probability: NaN
            [-inf, 3.0, -inf],  # one-hot: 0
            [1e30, 0.0, -1e30],
        ],
        dtype=dtype,
    )
    expected = [math.log(2), 0.0, math.log(2), nan, nan, 0.0, 0.0]
    rtol, atol = loss_tol(dtype, 1.0)
    assert_close(xent.entropy(x), expected, rtol, atol)
    assert_close(xent.entropy(np.ascontiguousarray(x.T), axis=0), expected, rtol, atol)


def test_entropy_one_class_and_empty():
    assert (xent.entropy(np.array([[3.0], [-1.0]])) == 0).all()
    assert xent.entropy(np.zeros((0, 5))).shape == (0,)


def test_entropy_against_scipy(rng):
    stats = pytest.importorskip("scipy.stats")
    special = pytest.importorskip("scipy.special")
    x = rng.standard_normal((20, 9)) * 4
    P = special.softmax(x, axis=1)
    np.testing.assert_allclose(xent.entropy(x), stats.entropy(P, axis=1), rtol=1e-12)
    np.testing.assert_allclose(xent.entropy(x, base=2), stats.entropy(P, axis=1, base=2), rtol=1e-12)


@pytest.mark.parametrize("axis", [2, -3])
def test_entropy_axis_out_of_range(axis):
    with pytest.raises(ValueError):
        xent.entropy(np.zeros((3, 4)), axis=axis)


@pytest.mark.parametrize(
    "x",
    [np.ones((3, 4), dtype=np.complex128), np.ones((3, 4), dtype=object), np.full((3, 4), "a")],
    ids=["complex", "object", "str"],
)
def test_entropy_unsupported_dtypes(x):
    with pytest.raises(TypeError):
        xent.entropy(x)


# ===========================================================================
# threads
# ===========================================================================


def test_thread_count_determinism():
    rng = np.random.default_rng(8)
    p = (rng.standard_normal((4096, 512)) * 4).astype(np.float32)
    q = (rng.standard_normal((4096, 512)) * 4).astype(np.float32)
    calls = [
        lambda: xent.kl_divergence(p, q, return_grad=True),
        lambda: xent.kl_divergence(p, q, temperature=2.0, reduction="sum", return_grad=True),
        lambda: xent.kl_divergence(p, q, reduction="none"),
        lambda: xent.kl_divergence(np.ascontiguousarray(p[:, :64].T), np.ascontiguousarray(q[:, :64].T), axis=0),
        lambda: xent.entropy(p),
        lambda: xent.entropy(np.ascontiguousarray(p[:, :64].T), axis=0),
    ]
    for i, call in enumerate(calls):
        assert_same_bits_for_thread_counts(call, what=f"call {i}")


# ===========================================================================
# hypothesis properties
# ===========================================================================

PROPS = settings(max_examples=50, deadline=None)


@st.composite
def logits_pair(draw):
    n = draw(st.integers(1, 6))
    C = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 50.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    p = (rng.standard_normal((n, C)) * scale).astype(dtype)
    q = (rng.standard_normal((n, C)) * scale).astype(dtype)
    T = draw(st.sampled_from([0.5, 1.0, 4.0]))
    return p, q, T


@PROPS
@given(logits_pair())
def test_prop_kl_nonnegative(case):
    p, q, T = case
    res = xent.kl_divergence(p, q, temperature=T, reduction="none").astype(np.float64)
    eps = float(np.finfo(p.dtype).eps)
    tol = 16 * eps * (finite_scale(p) + finite_scale(q)) / T
    assert np.all(res >= -tol), res
    # and it matches the reference
    exp, _ = ref_kl_divergence(p, q, temperature=T, reduction="none")
    rtol, atol = loss_tol(p.dtype, (finite_scale(p) + finite_scale(q)) / T)
    np.testing.assert_allclose(res, exp, rtol=rtol, atol=atol)


@PROPS
@given(logits_pair())
def test_prop_kl_self_is_zero(case):
    p, _, T = case
    res, g = xent.kl_divergence(p, p, temperature=T, reduction="none", return_grad=True)
    eps = float(np.finfo(p.dtype).eps)
    tol = 16 * eps * finite_scale(p) / T
    assert np.all(np.abs(res.astype(np.float64)) <= tol), res
    assert np.all(np.abs(g.astype(np.float64)) <= tol / min(T, 1.0)), g


@PROPS
@given(logits_pair())
def test_prop_kl_mean_gradient_rows_sum_to_zero(case):
    p, q, T = case
    _, g = xent.kl_divergence(p, q, temperature=T, return_grad=True)
    g64 = g.astype(np.float64)
    C = p.shape[1]
    eps = float(np.finfo(p.dtype).eps)
    # row sum = (ΣQ - ΣP)/(T·n): each softmax sums to 1 up to a few eps times the scale
    n = p.shape[0]
    scale = (finite_scale(p) + finite_scale(q)) / T
    bound = 4 * (C + 2) * eps * (1 + scale) / (T * n) + C * eps * np.abs(g64).sum(axis=1)
    assert np.all(np.abs(g64.sum(axis=1)) <= bound), g64.sum(axis=1)


@PROPS
@given(
    st.integers(1, 300),
    st.floats(-1e4, 1e4, allow_nan=False),
    st.sampled_from([np.float32, np.float64]),
    st.sampled_from([None, 2.0, 10.0]),
)
def test_prop_entropy_of_uniform_logits(C, c, dtype, base):
    x = np.full((3, C), c, dtype=dtype)
    res = xent.entropy(x, base=base).astype(np.float64)
    expected = math.log(C) / (math.log(base) if base else 1.0)
    eps = float(np.finfo(dtype).eps)
    # absolute errors scale with the logits' magnitude, as for logsumexp
    np.testing.assert_allclose(res, expected, rtol=8 * eps, atol=8 * eps * (1 + math.log(C)) * max(1.0, abs(c)))


@PROPS
@given(logits_pair())
def test_prop_entropy_bounds(case):
    p, _, _ = case
    h = xent.entropy(p).astype(np.float64)
    C = p.shape[1]
    eps = float(np.finfo(p.dtype).eps)
    tol = 16 * eps * (finite_scale(p) + math.log(C) + 1)
    assert np.all(h >= -tol) and np.all(h <= math.log(C) + tol)
