"""PyTorch parity of cross_entropy, nll_loss, kl_divergence and entropy.

Skipped as a whole when PyTorch is not installed.  Values are compared with
``torch.nn.functional`` on the same inputs (same dtype), gradients with autograd.
"""

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import xent  # noqa: E402
from helpers import finite_scale, loss_tol, random_prob_targets, target_shape  # noqa: E402

REDUCTIONS = ["none", "mean", "sum"]
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def _tol(dtype, scale):
    rtol, atol = loss_tol(dtype, scale)
    return 2 * rtol, 2 * atol  # both sides round


def _to_class_dim1(a, axis):
    """torch's class dimension is 1: move numpy's class axis there."""
    return np.moveaxis(a, axis, 1) if a.ndim > 1 else a


def _torch_ce(x, t, axis, weight, ignore_index, reduction, label_smoothing, probs):
    xt = torch.tensor(np.ascontiguousarray(_to_class_dim1(x, axis)), requires_grad=True)
    if probs:
        tt = torch.tensor(np.ascontiguousarray(_to_class_dim1(t, axis)))
    else:
        tt = torch.tensor(t.astype(np.int64))
    wt = None if weight is None else torch.tensor(weight, dtype=xt.dtype)
    loss = F.cross_entropy(
        xt, tt, weight=wt, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing
    )
    loss.sum().backward()
    grad = np.moveaxis(xt.grad.numpy(), 1, axis) if x.ndim > 1 else xt.grad.numpy()
    return loss.detach().numpy(), grad


PARITY_LAYOUTS = [((17, 9), -1), ((3, 5, 4, 2), 1), ((4, 3, 6), -1), ((9, 8), 0)]


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("kind", ["index", "index-ignore", "probs"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "shape,axis", PARITY_LAYOUTS, ids=[f"{'x'.join(map(str, s))}-ax{a}" for s, a in PARITY_LAYOUTS]
)
def test_cross_entropy_parity(shape, axis, dtype, kind, weighted, label_smoothing):
    for reduction in REDUCTIONS:
        _ce_parity_case(shape, axis, dtype, kind, weighted, label_smoothing, reduction)


def _ce_parity_case(shape, axis, dtype, kind, weighted, label_smoothing, reduction):
    rng = np.random.default_rng(zlib.crc32(repr((shape, axis, kind)).encode()))
    C = shape[axis]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    probs = kind == "probs"
    if probs:
        t = random_prob_targets(rng, shape, axis, zeros=False).astype(dtype)
    else:
        t = rng.integers(0, C, size=target_shape(shape, axis))
        if kind == "index-ignore":
            t[rng.random(t.shape) < 0.3] = -100
    w = rng.uniform(0.2, 2.0, C).astype(dtype) if weighted else None
    kw = dict(axis=axis, weight=w, reduction=reduction, label_smoothing=label_smoothing)
    loss, grad = xent.cross_entropy(x, t, return_grad=True, **kw)
    tl, tg = _torch_ce(x, t, axis, w, -100, reduction, label_smoothing, probs)
    rtol, atol = _tol(dtype, finite_scale(x))
    n_rows = x.size // C
    np.testing.assert_allclose(
        np.asarray(loss, dtype=np.float64), tl.astype(np.float64), rtol=rtol,
        atol=atol * (n_rows if reduction == "sum" else 1),
    )
    gmax = float(np.abs(tg).max()) or 1.0
    np.testing.assert_allclose(grad.astype(np.float64), tg.astype(np.float64), rtol=rtol, atol=atol * gmax)


@pytest.mark.parametrize("ignore_index", [-1, 2])
def test_cross_entropy_parity_custom_ignore_index(ignore_index):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 5))
    t = rng.integers(0, 5, size=20)
    t[::4] = ignore_index
    for red in REDUCTIONS:
        loss, grad = xent.cross_entropy(x, t, ignore_index=ignore_index, reduction=red, label_smoothing=0.2, return_grad=True)
        tl, tg = _torch_ce(x, t, -1, None, ignore_index, red, 0.2, False)
        np.testing.assert_allclose(loss, tl, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(grad, tg, rtol=1e-11, atol=1e-14)


def test_cross_entropy_parity_all_ignored_mean_is_nan():
    x = np.random.default_rng(2).standard_normal((4, 3))
    t = np.full(4, -100)
    tl, tg = _torch_ce(x, t, -1, None, -100, "mean", 0.0, False)
    loss, grad = xent.cross_entropy(x, t, return_grad=True)
    assert np.isnan(tl) and np.isnan(loss)
    np.testing.assert_array_equal(grad, tg)  # zeros


def test_cross_entropy_parity_neg_inf_non_target():
    x = np.array([[0.0, -np.inf, 1.0, 2.0], [3.0, 1.0, -np.inf, 0.0]])
    t = np.array([2, 0])
    for red in REDUCTIONS:
        loss, grad = xent.cross_entropy(x, t, reduction=red, return_grad=True)
        tl, tg = _torch_ce(x, t, -1, None, -100, red, 0.0, False)
        np.testing.assert_allclose(loss, tl, rtol=1e-13)
        np.testing.assert_allclose(grad, tg, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("ignore", [False, True], ids=["noignore", "ignore"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "shape,axis", PARITY_LAYOUTS, ids=[f"{'x'.join(map(str, s))}-ax{a}" for s, a in PARITY_LAYOUTS]
)
def test_nll_loss_parity(shape, axis, dtype, ignore, weighted):
    for reduction in REDUCTIONS:
        _nll_parity_case(shape, axis, dtype, ignore, weighted, reduction)


def _nll_parity_case(shape, axis, dtype, ignore, weighted, reduction):
    rng = np.random.default_rng(zlib.crc32(repr((shape, axis)).encode()))
    C = shape[axis]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    t = rng.integers(0, C, size=target_shape(shape, axis))
    if ignore:
        t[rng.random(t.shape) < 0.3] = -100
    w = rng.uniform(0.2, 2.0, C).astype(dtype) if weighted else None
    res = xent.nll_loss(x, t, axis=axis, weight=w, reduction=reduction)
    tl = F.nll_loss(
        torch.tensor(np.ascontiguousarray(_to_class_dim1(x, axis))),
        torch.tensor(t),
        weight=None if w is None else torch.tensor(w),
        reduction=reduction,
    ).numpy()
    rtol, atol = _tol(dtype, finite_scale(x))
    np.testing.assert_allclose(
        np.asarray(res, np.float64), tl.astype(np.float64), rtol=rtol,
        atol=atol * (t.size if reduction == "sum" else 1),
    )


def _torch_kl(p, q, axis, T, reduction):
    pt = torch.tensor(np.ascontiguousarray(p))
    qt = torch.tensor(np.ascontiguousarray(q), requires_grad=True)
    dim = axis % p.ndim
    per_elem = F.kl_div(
        F.log_softmax(qt / T, dim=dim), F.log_softmax(pt / T, dim=dim), log_target=True, reduction="none"
    )
    rows = per_elem.sum(dim=dim)
    loss = {"none": rows, "sum": rows.sum(), "mean": rows.mean()}[reduction]
    loss.sum().backward()
    return loss.detach().numpy(), qt.grad.numpy()


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "shape,axis", PARITY_LAYOUTS, ids=[f"{'x'.join(map(str, s))}-ax{a}" for s, a in PARITY_LAYOUTS]
)
def test_kl_divergence_parity(shape, axis, dtype, temperature):
    for reduction in REDUCTIONS:
        _kl_parity_case(shape, axis, dtype, temperature, reduction)


def _kl_parity_case(shape, axis, dtype, temperature, reduction):
    rng = np.random.default_rng(zlib.crc32(repr((shape, axis)).encode()))
    p = (rng.standard_normal(shape) * 3).astype(dtype)
    q = (rng.standard_normal(shape) * 3).astype(dtype)
    loss, grad = xent.kl_divergence(p, q, axis=axis, temperature=temperature, reduction=reduction, return_grad=True)
    tl, tg = _torch_kl(p, q, axis, temperature, reduction)
    rtol, atol = _tol(dtype, (finite_scale(p) + finite_scale(q)) / temperature)
    n_rows = p.size // shape[axis]
    np.testing.assert_allclose(
        np.asarray(loss, np.float64), tl.astype(np.float64), rtol=rtol,
        atol=atol * (n_rows if reduction == "sum" else 1),
    )
    gmax = float(np.abs(tg).max()) or 1.0
    np.testing.assert_allclose(grad.astype(np.float64), tg.astype(np.float64), rtol=rtol, atol=atol * gmax)


def test_kl_divergence_batchmean_equivalence():
    """'mean' over rows of 2-D logits is torch's kl_div(..., reduction='batchmean')."""
    rng = np.random.default_rng(3)
    p = rng.standard_normal((12, 7))
    q = rng.standard_normal((12, 7))
    tl = F.kl_div(
        F.log_softmax(torch.tensor(q), -1), F.log_softmax(torch.tensor(p), -1), log_target=True, reduction="batchmean"
    ).item()
    assert xent.kl_divergence(p, q) == pytest.approx(tl, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "shape,axis", PARITY_LAYOUTS, ids=[f"{'x'.join(map(str, s))}-ax{a}" for s, a in PARITY_LAYOUTS]
)
def test_entropy_parity(shape, axis, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((shape, axis)).encode()))
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    xt = torch.tensor(np.ascontiguousarray(np.moveaxis(x, axis, -1)))
    th = torch.distributions.Categorical(logits=xt).entropy().numpy()
    rtol, atol = _tol(dtype, finite_scale(x))
    np.testing.assert_allclose(xent.entropy(x, axis=axis).astype(np.float64), th.astype(np.float64), rtol=rtol, atol=atol)
