"""Tests for kl_div (torch.nn.functional.kl_div semantics).

Values are compared with a float64 NumPy reference written here from PyTorch's
formula, with hand-computed values, and (when installed) with PyTorch itself.
"""

import math

import numpy as np
import pytest

import xent
from helpers import assert_close, assert_same_bits_for_thread_counts, resolve_dtype
from references import as_f64
from xent._api.kl_div import kl_div

inf = np.inf
nan = np.nan


def ref_kl_div(q, t, log_target=False):
    """Per-element float64 reference: PyTorch's formula, with the SPEC's 0 log 0 = 0.

    Where the target probability is exactly 0 the term is 0 (NaN if q is NaN).
    """
    q, t = as_f64(q), as_f64(t)
    with np.errstate(all="ignore"):
        if log_target:
            val = np.exp(t) * (t - q)
            zero = t == -inf
        else:
            val = t * np.log(t) - t * q  # xlogy(p, p) - p*q for p > 0
            zero = t == 0
        return np.where(zero, np.where(np.isnan(q), nan, 0.0), val)


def reduce(per, reduction, shape):
    with np.errstate(invalid="ignore", divide="ignore"):
        if reduction == "none":
            return per
        if reduction == "sum":
            return per.sum()
        if reduction == "mean":
            return per.sum() / per.size
        return per.sum() / shape[0] if len(shape) else per.sum()


def tol(dtype):
    return (1e-12, 1e-13) if np.dtype(dtype) == np.float64 else (2e-5, 2e-6)


def make_pair(rng, shape, dtype, log_target):
    p = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]) if shape else np.asarray(0.3)
    q = np.log(rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])) if shape else np.asarray(-0.5)
    t = np.log(p) if log_target else p
    return q.astype(dtype), t.astype(dtype)


def test_reference_hand_values():
    # KL([.5, .5, 0] || [.25, .25, .5]) = log 2
    p = np.array([0.5, 0.5, 0.0])
    q = np.log([0.25, 0.25, 0.5])
    assert ref_kl_div(q, p).sum() == pytest.approx(math.log(2), rel=1e-15)
    with np.errstate(divide="ignore"):
        assert ref_kl_div(q, np.log(p), log_target=True).sum() == pytest.approx(math.log(2), rel=1e-15)


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 7), (9,), ()], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kl_div_matrix(dtype, shape, reduction, log_target, rng):
    q, t = make_pair(rng, shape, dtype, log_target)
    saved = q.copy(), t.copy()
    res = kl_div(q, t, reduction=reduction, log_target=log_target)
    exp = reduce(ref_kl_div(q, t, log_target), reduction, shape)
    if reduction == "none":
        assert isinstance(res, np.ndarray) and res.dtype == dtype and res.shape == shape
    else:
        assert type(res) is np.dtype(dtype).type
    assert_close(res, exp, *tol(dtype))
    np.testing.assert_array_equal(q, saved[0])
    np.testing.assert_array_equal(t, saved[1])


@pytest.mark.parametrize("layout", ["F", "strided", "readonly", "transposed"])
def test_kl_div_layouts(layout, rng):
    q, t = make_pair(rng, (40, 30), np.float64, False)
    if layout == "F":
        qs, ts = np.asfortranarray(q), t
    elif layout == "strided":
        qs = np.zeros((80, 60))[::-2, ::2]
        qs[...] = q
        ts = np.repeat(t, 3, axis=1)[:, ::3]
    elif layout == "readonly":
        qs, ts = q.copy(), t.copy()
        qs.flags.writeable = ts.flags.writeable = False
    else:
        qs, ts = np.ascontiguousarray(q.T).T, t
    res = kl_div(qs, ts, reduction="none")
    assert_close(res, ref_kl_div(q, t), 1e-12, 1e-13)
    assert_close(kl_div(qs, ts, reduction="batchmean"), ref_kl_div(q, t).sum() / 40, 1e-12, 1e-13)


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16", np.int64])
def test_kl_div_dtypes(dtype, rng):
    dtype = resolve_dtype(dtype)
    if dtype.kind == "i":
        q = rng.integers(-4, 1, size=(5, 6)).astype(dtype)
        comp = np.dtype(np.float64)
    else:
        q = np.log(rng.random((5, 6)) + 0.1).astype(dtype)
        comp = np.dtype(np.float32)
    p = rng.random((5, 6))  # float64 target: converted to the computation dtype
    res = kl_div(q, p, reduction="sum")
    assert type(res) is comp.type
    p_c = p.astype(comp)
    assert_close(res, ref_kl_div(q, p_c).sum(), *tol(comp))
    none = kl_div(q, p, reduction="none")
    assert none.dtype == comp


def test_kl_div_zero_target_and_nonfinite():
    q = np.array([-inf, 0.0, nan, -inf, 1.0, 2.0, inf, -inf])
    p = np.array([0.0, 0.0, 0.0, 1.0, -1.0, nan, 0.0, 0.5])
    for dtype in (np.float32, np.float64):
        res = kl_div(q.astype(dtype), p.astype(dtype), reduction="none")
        # 0 log 0 = 0 and p*q -> 0 as p -> 0; NaN input propagates; -inf input with
        # p > 0 is +inf; negative or NaN p is NaN (log of a negative number)
        np.testing.assert_array_equal(res, [0.0, 0.0, nan, inf, nan, nan, 0.0, inf])
    t = np.array([-inf, -inf, -inf, 0.0, inf, 0.0, nan])
    q2 = np.array([-inf, 0.0, nan, -inf, 1.0, inf, 0.0])
    for dtype in (np.float32, np.float64):
        res = kl_div(q2.astype(dtype), t.astype(dtype), reduction="none", log_target=True)
        np.testing.assert_array_equal(res, [0.0, 0.0, nan, inf, inf, -inf, nan])


def test_kl_div_accuracy_extremes():
    # tiny and large probabilities, huge log-probabilities
    p = np.array([1e-300, 5e-324, 1e-30, 3.0, 1e300])
    q = np.array([-700.0, -745.0, -50.0, 0.5, 10.0])
    res = kl_div(q, p, reduction="none")
    assert_close(res, ref_kl_div(q, p), 1e-14, 0)
    t = np.array([-700.0, -80.0, -1e-10, 5.0, 700.0])
    res = kl_div(q, t, reduction="none", log_target=True)
    assert_close(res, ref_kl_div(q, t, True), 1e-13, 0)
    tf = t.astype(np.float32)
    tf[0] = -80.0  # exp(-80) is still a normal float32
    tf[-1] = 80.0
    assert_close(kl_div(q.astype(np.float32), tf, reduction="none", log_target=True),
                 ref_kl_div(q.astype(np.float32), tf, True), 2e-6, 0)


def test_kl_div_empty_and_0d():
    z = np.zeros((0, 3))
    assert np.isnan(kl_div(z, z, reduction="mean"))
    assert np.isnan(kl_div(z, z, reduction="batchmean"))
    assert kl_div(z, z, reduction="sum") == 0.0
    assert kl_div(z, z, reduction="none").shape == (0, 3)
    # batchmean of a 0-d input is the sum (as PyTorch)
    v = kl_div(np.float64(1.0), np.float64(0.5), reduction="batchmean")
    assert v == pytest.approx(0.5 * math.log(0.5) - 0.5, rel=1e-15)
    assert kl_div(np.float64(1.0), np.float64(0.5), reduction="none").shape == ()


def test_kl_div_threads_bitwise_identical(rng):
    q, t = make_pair(rng, (400, 500), np.float32, False)
    assert_same_bits_for_thread_counts(
        lambda: [kl_div(q, t, reduction=r, log_target=lt)
                 for r in ("sum", "batchmean", "none") for lt in (False, True)],
        (1, 2),
    )


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(target=np.zeros((3,))), ValueError, r"\(3,\).*\(2, 3\)"),  # torch would broadcast
        (dict(target=np.zeros((1, 3))), ValueError, r"\(1, 3\).*\(2, 3\)"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(reduction=None), ValueError, "reduction"),
        (dict(target=np.zeros((2, 3), complex)), TypeError, "target"),
        (dict(input=np.zeros((2, 3), complex)), TypeError, "input"),
        (dict(input=np.array([["a"] * 3] * 2)), TypeError, "input"),
    ],
)
def test_kl_div_errors(kwargs, exc, match):
    kwargs = dict(kwargs)
    q = kwargs.pop("input", np.full((2, 3), -1.0))
    t = kwargs.pop("target", np.full((2, 3), 0.5))
    saved = np.array(q, copy=True), np.array(t, copy=True)
    with pytest.raises(exc, match=match):
        kl_div(q, t, **kwargs)
    np.testing.assert_array_equal(q, saved[0])
    np.testing.assert_array_equal(t, saved[1])


def test_exported_from_package():
    assert xent.kl_div.__wrapped__ is kl_div  # (behind the namespace layer)
    assert "kl_div" in xent.__all__


# ---------------------------------------------------------------------------
# parity with PyTorch
# ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_parity(dtype, reduction, log_target, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    q, t = make_pair(rng, (8, 6), dtype, log_target)
    if not log_target:
        t[0, 0] = 0.0  # 0 log 0 = 0 in both (finite input)
    res = kl_div(q, t, reduction=reduction, log_target=log_target)
    tl = F.kl_div(torch.tensor(q), torch.tensor(t), reduction=reduction, log_target=log_target).numpy()
    rtol, atol = (1e-12, 1e-13) if dtype == np.float64 else (1e-5, 1e-6)
    np.testing.assert_allclose(res, tl, rtol=rtol, atol=atol)


def test_torch_parity_special_values():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    # agree: NaN input, -inf input with p > 0, negative p, 0 log 0 with finite input
    q = np.array([nan, -inf, 1.0, 0.3])
    p = np.array([0.0, 1.0, -1.0, 0.0])
    tl = F.kl_div(torch.tensor(q), torch.tensor(p), reduction="none").numpy()
    np.testing.assert_array_equal(kl_div(q, p, reduction="none"), tl)
    # documented difference: p = 0 with an infinite input (PyTorch: 0 * inf = NaN)
    tl = F.kl_div(torch.tensor([-inf]), torch.tensor([0.0]), reduction="none").numpy()
    assert np.isnan(tl).all()
    assert kl_div(np.array([-inf]), np.array([0.0]), reduction="sum") == 0.0
    # ... and log_target with t = -inf (PyTorch: exp(-inf) * -inf = NaN)
    tl = F.kl_div(torch.tensor([0.0]), torch.tensor([-inf]), reduction="none", log_target=True).numpy()
    assert np.isnan(tl).all()
    assert kl_div(np.array([0.0]), np.array([-inf]), reduction="sum", log_target=True) == 0.0
