"""PyTorch's own test data run through xent: the OpInfo samples of the eight functions.

The samples come from the installed PyTorch at test time
(``torch.testing._internal.common_methods_invocations.op_db``; nothing of it is
copied here).  Each sample is translated into the xent call that a user coming
from PyTorch would write (``dim`` -> ``axis``, ``keepdim`` -> ``keepdims``, torch
dtypes -> NumPy dtypes, the class dimension of the losses -> ``axis``) and its
value is compared with PyTorch's own result; gradients too where xent computes
them (``return_grad=`` and ``xent.torch``'s autograd functions).

Every sample is a test of its own (its id names the function, variant, dtype,
index and shapes).  ``test_every_sample_is_accepted`` is the issue's "done when":
no sample may be refused.  ``python tests/test_torch_opinfo.py`` prints the
counts per function and dtype.

Skipped as a whole without PyTorch or without ``expecttest`` (which PyTorch's
test-internal module imports).
"""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")
_methods = pytest.importorskip("torch.testing._internal.common_methods_invocations")

import xent  # noqa: E402

try:
    import xent.torch as xent_torch
except ImportError:  # pragma: no cover - xent.torch needs only torch, present here
    xent_torch = None

# PyTorch's own note on kl_div's "mean" (a future change of its meaning), not ours
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")

DTYPES = (torch.float32, torch.float64)
NUMPY_DTYPE = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
# (rtol, atol) by the dtype of the result
TOLERANCE = {np.dtype(np.float32): (1e-5, 1e-6), np.dtype(np.float64): (1e-10, 1e-12)}


# ---------------------------------------------------------------------------
# translating a torch call into the xent call
# ---------------------------------------------------------------------------


def _np(v):
    """A tensor argument as a NumPy array (torch dtypes -> NumPy dtypes); others as they are."""
    if isinstance(v, torch.Tensor):
        return v.detach().numpy()
    if isinstance(v, torch.dtype):
        return np.dtype(str(v).removeprefix("torch."))
    return v


def _class_axis(x):
    """torch's class dimension of a loss input: dim 1, or 0 for one unbatched row."""
    return 1 if x.ndim >= 2 else 0


def _normalizer(name):
    """softmax(x, dim, dtype=) / log_softmax(...) -> xent.<name>(x, axis=, dtype=)."""

    def call(x, args, kwargs):
        (dim,) = args
        kw = {"axis": dim}
        if kwargs.get("dtype") is not None:
            kw["dtype"] = _np(kwargs["dtype"])
        return getattr(xent, name)(_np(x), **kw)

    return call


def _logsumexp(x, args, kwargs):
    """torch.logsumexp(x, dim, keepdim) -> xent.logsumexp(x, axis=dim, keepdims=keepdim)."""
    dim, keepdim = args
    return xent.logsumexp(_np(x), axis=tuple(dim) if isinstance(dim, (list, tuple)) else dim,
                          keepdims=keepdim)


def _loss_kwargs(kwargs, names):
    unknown = set(kwargs) - set(names)
    assert not unknown, f"no translation for {sorted(unknown)}"  # a new torch argument
    return {k: _np(v) for k, v in kwargs.items()}


def _cross_entropy(x, args, kwargs, return_grad=False):
    (target,) = args
    kw = _loss_kwargs(kwargs, ("weight", "reduction", "ignore_index", "label_smoothing"))
    return xent.cross_entropy(_np(x), _np(target), axis=_class_axis(x), return_grad=return_grad,
                              **kw)


def _nll_loss(x, args, kwargs):
    (target,) = args
    kw = _loss_kwargs(kwargs, ("weight", "reduction", "ignore_index"))
    return xent.nll_loss(_np(x), _np(target), axis=_class_axis(x), **kw)


def _kl_div(x, args, kwargs):
    (target,) = args
    kw = _loss_kwargs(kwargs, ("reduction", "log_target"))
    return xent.kl_div(_np(x), _np(target), **kw)


def _bce(x, args, kwargs):
    (target,) = args
    kw = _loss_kwargs(kwargs, ("weight", "reduction"))
    return xent.binary_cross_entropy(_np(x), _np(target), **kw)


def _bce_with_logits(x, args, kwargs, return_grad=False):
    (target,) = args
    kw = _loss_kwargs(kwargs, ("weight", "pos_weight", "reduction"))
    return xent.binary_cross_entropy_with_logits(_np(x), _np(target), return_grad=return_grad,
                                                 **kw)


# op name -> (the xent call, taking return_grad= when xent has the fused gradient;
#             the name of its autograd function in xent.torch, or None)
TRANSLATIONS = {
    "nn.functional.cross_entropy": (_cross_entropy, "cross_entropy"),
    "nn.functional.nll_loss": (_nll_loss, None),
    "nn.functional.kl_div": (_kl_div, None),
    "nn.functional.binary_cross_entropy": (_bce, None),
    "nn.functional.binary_cross_entropy_with_logits": (
        _bce_with_logits, "binary_cross_entropy_with_logits"),
    "log_softmax": (_normalizer("log_softmax"), None),
    "softmax": (_normalizer("softmax"), None),
    "logsumexp": (_logsumexp, None),
}
# ops with a fused gradient in xent (return_grad=) and an autograd function in xent.torch
WITH_GRAD = {name for name, (_, grad) in TRANSLATIONS.items() if grad}


# ---------------------------------------------------------------------------
# the samples, drawn once at collection with a fixed seed
# ---------------------------------------------------------------------------


def _shape_text(v):
    if isinstance(v, torch.Tensor):
        return "x".join(map(str, v.shape)) or "0d"
    if isinstance(v, torch.dtype):
        return str(v).removeprefix("torch.")
    return repr(v).replace(" ", "")


def _sample_id(op, dtype, index, sample):
    name = op.name.removeprefix("nn.functional.")
    variant = f".{op.variant_test_name}" if op.variant_test_name else ""
    parts = [_shape_text(sample.input)] + [_shape_text(a) for a in sample.args]
    parts += [f"{k}={_shape_text(v)}" for k, v in sample.kwargs.items()]
    return f"{name}{variant}-{str(dtype).removeprefix('torch.')}-{index}-{','.join(parts)}"


def _collect():
    samples = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for op in _methods.op_db:
            if op.name not in TRANSLATIONS:
                continue
            for dtype in DTYPES:
                for i, s in enumerate(op.sample_inputs("cpu", dtype, requires_grad=True)):
                    samples.append(pytest.param(op, dtype, s, id=_sample_id(op, dtype, i, s)))
    return samples


SAMPLES = _collect()


def _op_key(param):
    op, dtype, _ = param.values
    return op.name, op.variant_test_name, dtype


# ---------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------


def _torch_result(op, sample):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "reduction: 'mean' divides", UserWarning)
        return op(sample.input, *sample.args, **sample.kwargs)


def _assert_close(got, expected, what):
    expected = expected.detach().numpy()
    got_dtype = np.asarray(got).dtype
    assert got_dtype == expected.dtype, f"{what}: dtype {got_dtype}, PyTorch {expected.dtype}"
    assert np.shape(got) == expected.shape, (
        f"{what}: shape {np.shape(got)}, PyTorch {expected.shape}")
    rtol, atol = TOLERANCE[expected.dtype]
    np.testing.assert_allclose(np.asarray(got), expected, rtol=rtol, atol=atol, err_msg=what)


def _call_xent(op, sample, **extra):
    call = TRANSLATIONS[op.name][0]
    try:
        return call(sample.input, sample.args, sample.kwargs, **extra)
    except (TypeError, ValueError, IndexError, NotImplementedError) as exc:
        pytest.fail(f"xent refuses this PyTorch sample: {type(exc).__name__}: {exc}")


def _torch_grad(op, sample):
    """d sum(loss) / d input through PyTorch's own function and autograd."""
    x = sample.input.detach().clone().requires_grad_(True)
    loss = op(x, *sample.args, **sample.kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return grad


@pytest.mark.parametrize("op,dtype,sample", SAMPLES)
def test_sample_matches_pytorch(op, dtype, sample):
    got = _call_xent(op, sample)
    _assert_close(got, _torch_result(op, sample), "value")


def _detached(args):
    """Tuple or dict of call arguments with every tensor detached."""
    if isinstance(args, dict):
        return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    return tuple(v.detach() if isinstance(v, torch.Tensor) else v for v in args)


@pytest.mark.parametrize(
    "op,dtype,sample", [p for p in SAMPLES if p.values[0].name in WITH_GRAD])
def test_sample_gradient_matches_pytorch(op, dtype, sample):
    expected = _torch_grad(op, sample)
    loss, grad = _call_xent(op, sample, return_grad=True)
    _assert_close(loss, _torch_result(op, sample), "value with return_grad=True")
    _assert_close(grad, expected, "return_grad")

    if xent_torch is None:
        pytest.skip("xent.torch unavailable")
    # xent.torch differentiates with respect to the input only (it refuses a
    # target or weight that requires grad), so those are passed detached.
    x = sample.input.detach().clone().requires_grad_(True)
    fn = getattr(xent_torch, TRANSLATIONS[op.name][1])
    value = fn(x, *_detached(sample.args), **_detached(sample.kwargs))
    (grad_t,) = torch.autograd.grad(value.sum(), x)
    _assert_close(value.detach(), _torch_result(op, sample), "xent.torch value")
    _assert_close(grad_t, expected, "xent.torch gradient")


# ---------------------------------------------------------------------------
# the count: how many samples xent accepts, per function and dtype
# ---------------------------------------------------------------------------


def sample_counts():
    """{(op name, variant, dtype): [accepted, refused, mismatching]} over SAMPLES."""
    counts = {}
    for param in SAMPLES:
        op, dtype, sample = param.values
        row = counts.setdefault(_op_key(param), [0, 0, 0])
        try:
            got = TRANSLATIONS[op.name][0](sample.input, sample.args, sample.kwargs)
        except (TypeError, ValueError, IndexError, NotImplementedError):
            row[1] += 1
            continue
        row[0] += 1
        try:
            _assert_close(got, _torch_result(op, sample), "value")
        except AssertionError:
            row[2] += 1
    return counts


def _table(counts):
    lines = [f"{'function':52} {'dtype':8} accepted refused mismatching"]
    for (name, variant, dtype), (ok, refused, bad) in counts.items():
        label = name + (f" ({variant})" if variant else "")
        lines.append(f"{label:52} {str(dtype).removeprefix('torch.'):8} {ok:8} {refused:7} {bad:11}")
    totals = [sum(c[i] for c in counts.values()) for i in range(3)]
    lines.append(f"{'total':61} {totals[0]:8} {totals[1]:7} {totals[2]:11}")
    return "\n".join(lines)


def test_every_sample_is_accepted():
    """The issue's "done when": every OpInfo sample of the eight functions is accepted."""
    counts = sample_counts()
    assert {name for name, _, _ in counts} == set(TRANSLATIONS), "an op vanished from op_db"
    refused = sum(c[1] for c in counts.values())
    assert refused == 0, f"{refused} PyTorch samples refused by xent:\n{_table(counts)}"


if __name__ == "__main__":
    print(_table(sample_counts()))
