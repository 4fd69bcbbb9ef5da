"""PyTorch parity of the losses on the input forms beyond the usual ``(N, C)`` batch.

The forms PyTorch's own samples (test_torch_opinfo.py) touch only once or not at
all: empty batches (zero rows, zero classes, zero trailing positions), a single
unbatched row (class indices as a 0-d target, probability targets, an ignored
target), 0-d binary inputs and Python scalars, and every broadcast form of
``weight`` and ``pos_weight``.  Values are compared with ``torch.nn.functional``
on the same float64 inputs, gradients with autograd (``return_grad=`` and
``xent.torch``).  Skipped without PyTorch.
"""

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import xent  # noqa: E402
import xent.torch as xent_torch  # noqa: E402

REDUCTIONS = ["none", "mean", "sum"]
# PyTorch's note on kl_div's "mean" (a future change of its meaning), not ours
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")


def _assert_same(got, expected):
    expected = expected.detach().numpy()
    got = np.asarray(got)
    assert got.dtype == expected.dtype and got.shape == expected.shape, (got, expected)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def _torch_grad(fn, x, *args, **kwargs):
    x = x.detach().clone().requires_grad_(True)
    value = fn(x, *args, **kwargs)
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


def _generator(*key):
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


# ---------------------------------------------------------------------------
# multiclass: empty batches and unbatched rows
# ---------------------------------------------------------------------------

EMPTY_SHAPES = [(0, 3), (0, 3, 2), (2, 3, 0), (4, 0)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_multiclass_losses_on_empty_batches(shape, reduction):
    """Zero rows: "mean" is NaN (0/0, as PyTorch), "sum" 0, "none" an empty array;
    zero classes with rows: every target must be ignored."""
    x = torch.zeros(shape, dtype=torch.float64)
    t = torch.full((shape[0],) + shape[2:], -100 if shape[1] == 0 else 0, dtype=torch.long)
    expected, grad = _torch_grad(F.cross_entropy, x, t, reduction=reduction)
    loss, xgrad = xent.cross_entropy(x.numpy(), t.numpy(), axis=1, reduction=reduction,
                                     return_grad=True)
    _assert_same(loss, expected)
    _assert_same(xgrad, grad)
    _assert_same(xent.nll_loss(x.numpy(), t.numpy(), axis=1, reduction=reduction),
                 F.nll_loss(x, t, reduction=reduction))
    if shape[1]:
        probs = torch.zeros(shape, dtype=torch.float64)
        _assert_same(xent.cross_entropy(x.numpy(), probs.numpy(), axis=1, reduction=reduction),
                     F.cross_entropy(x, probs, reduction=reduction))
    value, grad_t = _torch_grad(xent_torch.cross_entropy, x, t, reduction=reduction)
    _assert_same(value, expected)
    _assert_same(grad_t, grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target", ["index", "ignored", "probs"])
def test_cross_entropy_of_one_unbatched_row(target, reduction):
    """A (C,) input is one row, class axis 0; its class index is a 0-d target."""
    g = _generator("unbatched", target)
    x = torch.randn(5, generator=g, dtype=torch.float64) * 3
    w = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    if target == "probs":
        t = torch.softmax(torch.randn(5, generator=g, dtype=torch.float64), 0)
    else:
        t = torch.tensor(-100 if target == "ignored" else 3)
    kw = dict(weight=w, reduction=reduction, label_smoothing=0.1)
    expected, grad = _torch_grad(F.cross_entropy, x, t, **kw)
    loss, xgrad = xent.cross_entropy(x.numpy(), t.numpy(), axis=0, return_grad=True,
                                     **{**kw, "weight": w.numpy()})
    _assert_same(loss, expected)
    _assert_same(xgrad, grad)
    value, grad_t = _torch_grad(xent_torch.cross_entropy, x, t, **kw)
    _assert_same(value, expected)
    _assert_same(grad_t, grad)
    if target != "probs":
        _assert_same(xent.nll_loss(x.numpy(), t.numpy(), axis=0, weight=w.numpy(),
                                   reduction=reduction),
                     F.nll_loss(x, t, weight=w, reduction=reduction))


# ---------------------------------------------------------------------------
# binary and pointwise: 0-d, empty, broadcast weights
# ---------------------------------------------------------------------------

BINARY_SHAPES = [(), (0,), (3, 0), (7,), (3, 4, 5)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", BINARY_SHAPES, ids=lambda s: "x".join(map(str, s)) or "0d")
def test_pointwise_losses_on_0d_and_empty_inputs(shape, reduction):
    g = _generator("pointwise", shape)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    y = torch.rand(shape, generator=g, dtype=torch.float64)
    p = torch.sigmoid(x)
    expected, grad = _torch_grad(F.binary_cross_entropy_with_logits, x, y, reduction=reduction)
    loss, xgrad = xent.binary_cross_entropy_with_logits(x.numpy(), y.numpy(), reduction=reduction,
                                                        return_grad=True)
    _assert_same(loss, expected)
    _assert_same(xgrad, grad)
    value, grad_t = _torch_grad(xent_torch.binary_cross_entropy_with_logits, x, y,
                                reduction=reduction)
    _assert_same(value, expected)
    _assert_same(grad_t, grad)
    _assert_same(xent.binary_cross_entropy(p.numpy(), y.numpy(), reduction=reduction),
                 F.binary_cross_entropy(p, y, reduction=reduction))
    for red in (reduction, "batchmean"):
        for log_target in (False, True):
            target = torch.log(y) if log_target else y
            _assert_same(xent.kl_div(torch.log(p).numpy(), target.numpy(), reduction=red,
                                     log_target=log_target),
                         F.kl_div(torch.log(p), target, reduction=red, log_target=log_target))


def test_binary_losses_take_python_scalars():
    """0-d inputs may be Python floats (as ``np.asarray`` reads them)."""
    expected = F.binary_cross_entropy_with_logits(torch.tensor(0.3, dtype=torch.float64),
                                                  torch.tensor(0.6, dtype=torch.float64))
    _assert_same(xent.binary_cross_entropy_with_logits(0.3, 0.6), expected)
    expected = F.binary_cross_entropy(torch.tensor(0.3, dtype=torch.float64),
                                      torch.tensor(1.0, dtype=torch.float64))
    _assert_same(xent.binary_cross_entropy(0.3, 1.0), expected)


WEIGHT_SHAPES = [(), (1,), (5,), (4, 1), (4, 5), (3, 1, 1), (1, 4, 5), (3, 4, 5)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("wshape", WEIGHT_SHAPES, ids=lambda s: "x".join(map(str, s)) or "0d")
def test_binary_weight_and_pos_weight_broadcast_forms(wshape, reduction):
    """Every shape that broadcasts to the input's (3, 4, 5) is a weight, as in PyTorch."""
    g = _generator("weights", wshape)
    x = torch.randn(3, 4, 5, generator=g, dtype=torch.float64) * 2
    y = torch.rand(3, 4, 5, generator=g, dtype=torch.float64)
    w = torch.rand(wshape, generator=g, dtype=torch.float64) + 0.5
    pw = torch.rand(wshape, generator=g, dtype=torch.float64) * 3
    kw = dict(weight=w, pos_weight=pw, reduction=reduction)
    expected, grad = _torch_grad(F.binary_cross_entropy_with_logits, x, y, **kw)
    loss, xgrad = xent.binary_cross_entropy_with_logits(
        x.numpy(), y.numpy(), weight=w.numpy(), pos_weight=pw.numpy(), reduction=reduction,
        return_grad=True)
    _assert_same(loss, expected)
    _assert_same(xgrad, grad)
    value, grad_t = _torch_grad(xent_torch.binary_cross_entropy_with_logits, x, y, **kw)
    _assert_same(value, expected)
    _assert_same(grad_t, grad)
    p = torch.sigmoid(x)
    _assert_same(xent.binary_cross_entropy(p.numpy(), y.numpy(), weight=w.numpy(),
                                           reduction=reduction),
                 F.binary_cross_entropy(p, y, weight=w, reduction=reduction))


@pytest.mark.parametrize("wshape", [(1, 1, 1, 5), (2, 5), (4,)])
def test_binary_weights_that_do_not_broadcast_are_refused(wshape):
    """A weight PyTorch refuses (it would not broadcast to the input, or would
    grow it) raises ValueError, before anything is computed."""
    x = np.zeros((3, 4, 5))
    with pytest.raises(RuntimeError):
        F.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(x),
                                           weight=torch.ones(wshape, dtype=torch.float64))
    for arg in ("weight", "pos_weight"):
        with pytest.raises(ValueError, match=arg):
            xent.binary_cross_entropy_with_logits(x, x, **{arg: np.ones(wshape)})
    with pytest.raises(ValueError, match="weight"):
        xent.binary_cross_entropy(x, x, weight=np.ones(wshape))
