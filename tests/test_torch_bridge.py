"""xent.torch: autograd functions on CPU tensors, against torch.nn.functional.

Every value and gradient is compared with PyTorch's own function on the same
tensors (same dtype); "none" reductions are differentiated through a random
weighting of the rows, so the per-row scaling of the saved gradient is tested.
Skipped as a whole when PyTorch is not installed.
"""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import xent  # noqa: E402
import xent.torch as xt  # noqa: E402

REDUCTIONS = ["none", "mean", "sum"]
DTYPES = [torch.float32, torch.float64]


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-13)


def _value_and_grad(fn, x, upstream_seed=0):
    """fn(x) and d/dx of sum(fn(x) * r) for a fixed random r (so backward must scale)."""
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    g = torch.Generator().manual_seed(upstream_seed)
    r = torch.rand(out.shape, generator=g, dtype=out.dtype)
    (out * (r + 0.5)).sum().backward()
    return out.detach(), x.grad


def _assert_same(fn_xent, fn_torch, x, dtype):
    got, got_grad = _value_and_grad(fn_xent, x)
    ref, ref_grad = _value_and_grad(fn_torch, x)
    assert got.dtype == ref.dtype == dtype and got.shape == ref.shape
    torch.testing.assert_close(got, ref, **_tol(dtype), equal_nan=True)
    torch.testing.assert_close(got_grad, ref_grad, **_tol(dtype), equal_nan=True)


# ---- cross_entropy ---------------------------------------------------------------

CE_SHAPES = [(13, 7), (7,), (3, 5, 4, 2)]


def _ce_case(shape, dtype, kind, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype) * 3
    C = shape[1] if len(shape) > 1 else shape[0]
    row_shape = (shape[0],) + shape[2:] if len(shape) > 1 else ()
    if kind == "probs":
        scores = torch.randn(shape, generator=g, dtype=dtype)
        t = torch.softmax(scores, dim=1 if len(shape) > 1 else 0)
    else:
        t = torch.randint(0, C, row_shape, generator=g)
        if kind == "ignore" and t.dim():
            t[torch.rand(row_shape, generator=g) < 0.3] = -100
            t.view(-1)[0] = 1  # at least one kept row
    w = torch.rand(C, generator=g, dtype=dtype) + 0.2
    return x, t, w


@pytest.mark.parametrize("kind", ["index", "ignore", "probs"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cross_entropy_matches_torch(shape, dtype, kind):
    x, t, w = _ce_case(shape, dtype, kind, seed=len(shape) + 10 * len(kind))
    for reduction in REDUCTIONS:
        for weight in (None, w):
            for eps in (0.0, 0.1):
                kw = dict(weight=weight, reduction=reduction, label_smoothing=eps)
                _assert_same(
                    lambda a: xt.cross_entropy(a, t, **kw),
                    lambda a: F.cross_entropy(a, t, **kw), x, dtype,
                )


def test_cross_entropy_positional_arguments_and_custom_ignore_index():
    x, t, w = _ce_case((10, 4), torch.float64, "index", 3)
    t[::3] = 2
    args = (w, None, 2, None, "sum", 0.05)  # F.cross_entropy's positional order
    _assert_same(
        lambda a: xt.cross_entropy(a, t, *args),
        lambda a: F.cross_entropy(a, t, *args), x, torch.float64,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_z_loss(reduction):
    """z_loss adds z * logsumexp**2 per non-ignored row; 'mean' divides it by their count."""
    x, t, w = _ce_case((12, 6), torch.float64, "ignore", 4)
    z = 0.01
    kw = dict(weight=w, reduction=reduction, label_smoothing=0.1)

    def reference(a):
        ce = F.cross_entropy(a, t, **kw)
        keep = t != -100
        zl = torch.where(keep, z * torch.logsumexp(a, dim=1) ** 2, 0.0)
        if reduction == "none":
            return ce + zl
        return ce + (zl.sum() / keep.sum() if reduction == "mean" else zl.sum())

    _assert_same(lambda a: xt.cross_entropy(a, t, z_loss=z, **kw), reference, x, torch.float64)


def test_cross_entropy_non_contiguous_input():
    x = torch.randn(9, 16, dtype=torch.float64)[:, ::2]  # class stride 2
    xT = torch.randn(8, 9, dtype=torch.float64).T  # rows of stride 1 across
    t = torch.randint(0, 8, (9,))
    for a in (x, xT):
        assert not a.is_contiguous()
        for reduction in REDUCTIONS:
            _assert_same(
                lambda v: xt.cross_entropy(v, t, reduction=reduction),
                lambda v: F.cross_entropy(v, t, reduction=reduction), a, torch.float64,
            )


def test_cross_entropy_legacy_reduction_arguments():
    x, t, _ = _ce_case((6, 3), torch.float64, "index", 5)
    for size_average, reduce in [(False, None), (None, False), (True, True)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = F.cross_entropy(x, t, size_average=size_average, reduce=reduce)
        with pytest.warns(UserWarning, match="reduction"):
            got = xt.cross_entropy(x, t, size_average=size_average, reduce=reduce)
        torch.testing.assert_close(got, ref)


# ---- binary_cross_entropy_with_logits --------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(11, 5), (3, 4, 6)], ids=lambda s: "x".join(map(str, s)))
def test_bce_with_logits_matches_torch(shape, dtype):
    g = torch.Generator().manual_seed(len(shape))
    x = torch.randn(shape, generator=g, dtype=dtype) * 4
    y = torch.rand(shape, generator=g, dtype=dtype)
    y[..., 0] = (y[..., 0] > 0.5).to(dtype)  # hard labels in one column
    w = torch.rand(shape[-2:], generator=g, dtype=dtype) + 0.1  # broadcast weight
    pw = torch.rand(shape[-1], generator=g, dtype=dtype) * 3
    for reduction in REDUCTIONS:
        for weight, pos_weight in [(None, None), (w, None), (None, pw), (w, pw)]:
            kw = dict(weight=weight, pos_weight=pos_weight, reduction=reduction)
            _assert_same(
                lambda a: xt.binary_cross_entropy_with_logits(a, y, **kw),
                lambda a: F.binary_cross_entropy_with_logits(a, y, **kw), x, dtype,
            )


# ---- kl_divergence ---------------------------------------------------------------


def _torch_kl(p, q, dim, T, reduction):
    log_q, log_p = F.log_softmax(q / T, dim=dim), F.log_softmax(p / T, dim=dim)
    rows = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(dim=dim)
    return {"none": rows, "mean": rows.mean(), "sum": rows.sum()}[reduction]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,dim", [((10, 6), -1), ((2, 5, 7), -1), ((4, 6, 3), 1)])
def test_kl_divergence_matches_torch(shape, dim, dtype):
    g = torch.Generator().manual_seed(len(shape) + dim)
    p = torch.randn(shape, generator=g, dtype=dtype) * 2
    q = torch.randn(shape, generator=g, dtype=dtype) * 2
    for reduction in REDUCTIONS:
        for T in (1.0, 2.5):
            _assert_same(
                lambda a: xt.kl_divergence(p, a, dim=dim, temperature=T, reduction=reduction),
                lambda a: _torch_kl(p, a, dim, T, reduction), q, dtype,
            )


# ---- autograd mechanics ----------------------------------------------------------


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    x3 = torch.randn(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 3, -100, 1, 2])
    t3 = torch.randint(0, 4, (2, 3), generator=g)
    tp = torch.softmax(torch.randn(5, 4, generator=g, dtype=torch.float64), 1)
    w = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    y = torch.rand(5, 4, generator=g, dtype=torch.float64)
    p = torch.randn(5, 4, generator=g, dtype=torch.float64)
    for reduction in REDUCTIONS:
        r = dict(reduction=reduction)
        checks = [
            (lambda a: xt.cross_entropy(a, t, weight=w, label_smoothing=0.2, z_loss=0.05, **r), x),
            (lambda a: xt.cross_entropy(a, tp, **r), x),
            (lambda a: xt.cross_entropy(a, t3, **r), x3),
            (lambda a: xt.binary_cross_entropy_with_logits(a, y, pos_weight=w, **r), x),
            (lambda a: xt.kl_divergence(p, a, temperature=1.5, **r), x),
        ]
        for fn, inp in checks:
            assert torch.autograd.gradcheck(fn, (inp,), eps=1e-6, atol=1e-7)


def test_backward_is_not_differentiable():
    """create_graph=True raises: a gradient penalty must not get a silent zero term."""
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, 2, 0])
    y = torch.rand(4, 3, dtype=x.dtype)
    losses = [
        xt.cross_entropy(x, t),
        xt.binary_cross_entropy_with_logits(x, y),
        xt.kl_divergence(x.detach(), x, reduction="none"),
    ]
    for loss in losses:
        with pytest.raises(RuntimeError, match="not differentiable"):
            torch.autograd.grad(loss.sum(), x, create_graph=True)


def test_retained_graph_backward_twice():
    """The first backward hands its buffer to autograd; a second one recomputes it."""
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 5, (6,))
    for reduction in REDUCTIONS:
        x.grad = None
        loss = xt.cross_entropy(x, t, reduction=reduction, label_smoothing=0.1)
        upstream = torch.rand(loss.shape, dtype=torch.float64)
        loss.backward(upstream, retain_graph=True)
        first = x.grad.clone()
        loss.backward(upstream)
        torch.testing.assert_close(x.grad, 2 * first, rtol=1e-14, atol=0)


def test_zero_copy_and_gradient_only_when_needed(monkeypatch):
    """xent sees views of the tensors; the forward's gradient buffer becomes x.grad;
    no gradient is computed when none is needed."""
    calls = []
    real = xent.cross_entropy

    def spy(logits, target, **kw):
        calls.append((logits, target, kw.get("return_grad", False), kw.get("grad_out")))
        return real(logits, target, **kw)

    monkeypatch.setattr(xent, "cross_entropy", spy)
    x = torch.randn(8, 5, requires_grad=True)
    t = torch.randint(0, 5, (8,))
    xt.cross_entropy(x, t).backward()
    (logits, target, return_grad, grad_out), = calls
    assert np.shares_memory(logits, x.detach().numpy()) and np.shares_memory(target, t.numpy())
    assert return_grad and np.shares_memory(grad_out, x.grad.numpy())

    calls.clear()
    xt.cross_entropy(x.detach(), t)
    with torch.no_grad():
        xt.cross_entropy(x, t)
    assert [c[2] for c in calls] == [False, False]


def test_training_loop_reaches_the_same_loss():
    """200 SGD steps of softmax regression: xent's loss trains exactly like PyTorch's."""
    g = torch.Generator().manual_seed(0)
    n, d, C = 512, 20, 10
    true_w = torch.randn(d, C, generator=g, dtype=torch.float64)
    feats = torch.randn(n, d, generator=g, dtype=torch.float64)
    noise = torch.randn(n, C, generator=g, dtype=torch.float64)
    labels = torch.argmax(feats @ true_w + noise, dim=1)

    def train(loss_fn):
        lin = torch.nn.Linear(d, C, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.zeros(C, d))
            lin.bias.zero_()
        opt = torch.optim.SGD(lin.parameters(), lr=0.5)
        for _ in range(200):
            opt.zero_grad()
            loss = loss_fn(lin(feats), labels, label_smoothing=0.05)
            loss.backward()
            opt.step()
        return loss.item(), lin.weight.detach()

    loss_x, w_x = train(xt.cross_entropy)
    loss_t, w_t = train(F.cross_entropy)
    assert loss_x < 0.6 * np.log(C)  # it did learn
    assert loss_x == pytest.approx(loss_t, rel=1e-10)
    torch.testing.assert_close(w_x, w_t, rtol=1e-9, atol=1e-10)


# ---- errors ----------------------------------------------------------------------


def test_errors_name_the_argument():
    x = torch.randn(4, 3)
    t = torch.tensor([0, 1, 2, 0])
    meta = torch.empty(4, 3, device="meta")
    with pytest.raises(ValueError, match="input is on device meta"):
        xt.cross_entropy(meta, t)
    with pytest.raises(ValueError, match="q_logits is on device meta"):
        xt.kl_divergence(x, meta)
    with pytest.raises(TypeError, match="input has dtype torch.float16"):
        xt.cross_entropy(x.half(), t)
    with pytest.raises(TypeError, match="input has dtype torch.int64"):
        xt.binary_cross_entropy_with_logits(t.reshape(2, 2), t.reshape(2, 2).float())
    with pytest.raises(TypeError, match="target has dtype torch.bool"):
        xt.cross_entropy(x, t > 0)
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        xt.cross_entropy(x.numpy(), t)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        xt.cross_entropy(x, t, weight=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"target has shape \(3,\).*must have shape \(4,\)"):
        xt.cross_entropy(x, t[:3])
    with pytest.raises(ValueError, match="target has shape"):
        xt.binary_cross_entropy_with_logits(x, x[:2])
    with pytest.raises(ValueError, match="dim=2"):
        xt.kl_divergence(x, x, dim=2)
    with pytest.raises(TypeError, match="p_logits has dtype torch.float64"):
        xt.kl_divergence(x.double(), x)
    with pytest.raises(IndexError, match="target"):
        xt.cross_entropy(x, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="reduction"):
        xt.cross_entropy(x, t, reduction="batchmean")
    with pytest.raises(ValueError, match="label_smoothing"):
        xt.cross_entropy(x, t, label_smoothing=1.5)


def test_constants_that_require_grad_are_refused():
    x = torch.randn(4, 3, requires_grad=True)
    t = torch.tensor([0, 1, 2, 0])
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(NotImplementedError, match="weight requires grad"):
        xt.cross_entropy(x, t, weight=w)
    with pytest.raises(NotImplementedError, match="target requires grad"):
        xt.cross_entropy(x, torch.softmax(x, 1), label_smoothing=0.1)
    with pytest.raises(NotImplementedError, match="pos_weight requires grad"):
        xt.binary_cross_entropy_with_logits(x, torch.rand(4, 3), pos_weight=w)
    with pytest.raises(NotImplementedError, match="p_logits requires grad"):
        xt.kl_divergence(x, x.detach())
    with torch.no_grad():  # no graph, nothing to differentiate: fine
        xt.cross_entropy(x, t, weight=w)


def test_docstring_examples():
    import doctest

    result = doctest.testmod(xt, optionflags=doctest.ELLIPSIS, report=True)
    assert result.attempted > 0 and result.failed == 0
