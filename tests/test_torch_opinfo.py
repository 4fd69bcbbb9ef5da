"""PyTorch's own test data run through xent: the OpInfo samples of the eight functions.

The samples come from the installed PyTorch at test time
(``torch.testing._internal.common_methods_invocations.op_db``; nothing of it is
copied here).  Each sample is translated into the xent call that a user coming
from PyTorch would write (``dim`` -> ``axis``, ``keepdim`` -> ``keepdims``, torch
dtypes -> NumPy dtypes, the class dimension of the losses -> ``axis``) and its
value is compared with PyTorch's own result; gradients too where xent computes
them (``return_grad=`` and ``xent.torch``'s autograd functions).

The ModuleInfo inputs of torch.nn's five loss modules (CrossEntropyLoss,
NLLLoss, KLDivLoss, BCELoss, BCEWithLogitsLoss; ``common_modules.module_db``)
run the same way: more shapes (unbatched rows, probability targets of several
dimensions, label smoothing, scalar weights) for the losses.

Every sample is a test of its own (its id names the function, variant, dtype,
index and shapes), with NumPy arrays.  ``test_every_sample_is_accepted`` is the
issue's "done when": no sample may be refused or mismatch, with NumPy arrays and
with the tensors themselves (which must give tensors back, SPEC "Conventions").
``python tests/test_torch_opinfo.py`` prints the counts per function and dtype.

Skipped as a whole without PyTorch or without ``expecttest`` (which PyTorch's
test-internal module imports).
"""

import functools
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
# (rtol, atol) by the dtype of the result
TOLERANCE = {np.dtype(np.float32): (1e-5, 1e-6), np.dtype(np.float64): (1e-10, 1e-12)}


# ---------------------------------------------------------------------------
# translating a torch call into the xent call
# ---------------------------------------------------------------------------


def _as_numpy(v):
    """A tensor argument as a NumPy array (torch dtypes -> NumPy dtypes); others as they are."""
    if isinstance(v, torch.Tensor):
        return v.detach().numpy()
    if isinstance(v, torch.dtype):
        return np.dtype(str(v).removeprefix("torch."))
    return v


def _as_torch(v):
    """A tensor argument as PyTorch's user would pass it (xent refuses tensors that
    require grad: gradients through autograd are xent.torch's job)."""
    return v.detach() if isinstance(v, torch.Tensor) else v


# How the arguments reach xent: NumPy arrays, or the tensors themselves (results
# then come back as tensors, SPEC "Conventions").
ARRAY_TYPES = {"numpy": _as_numpy, "torch": _as_torch}


def _class_axis(x):
    """torch's class dimension of a loss input: dim 1, or 0 for one unbatched row."""
    return 1 if x.ndim >= 2 else 0


def _normalizer(name):
    """softmax(x, dim, dtype=) / log_softmax(...) -> xent.<name>(x, axis=, dtype=)."""

    def call(x, args, kwargs):
        (dim,) = args
        kw = {"axis": dim}
        if kwargs.get("dtype") is not None:
            kw["dtype"] = kwargs["dtype"]
        return getattr(xent, name)(x, **kw)

    return call


def _logsumexp(x, args, kwargs):
    """torch.logsumexp(x, dim, keepdim) -> xent.logsumexp(x, axis=dim, keepdims=keepdim)."""
    dim, keepdim = args
    return xent.logsumexp(x, axis=tuple(dim) if isinstance(dim, (list, tuple)) else dim,
                          keepdims=keepdim)


def _loss_kwargs(kwargs, names):
    unknown = set(kwargs) - set(names)
    assert not unknown, f"no translation for {sorted(unknown)}"  # a new torch argument
    return kwargs


def _cross_entropy(x, args, kwargs, return_grad=False):
    (target,) = args
    kw = _loss_kwargs(kwargs, ("weight", "reduction", "ignore_index", "label_smoothing"))
    return xent.cross_entropy(x, target, axis=_class_axis(x), return_grad=return_grad,
                              **kw)


def _nll_loss(x, args, kwargs):
    (target,) = args
    kw = _loss_kwargs(kwargs, ("weight", "reduction", "ignore_index"))
    return xent.nll_loss(x, target, axis=_class_axis(x), **kw)


def _kl_div(x, args, kwargs):
    (target,) = args
    kw = _loss_kwargs(kwargs, ("reduction", "log_target"))
    return xent.kl_div(x, target, **kw)


def _bce(x, args, kwargs):
    (target,) = args
    kw = _loss_kwargs(kwargs, ("weight", "reduction"))
    return xent.binary_cross_entropy(x, target, **kw)


def _bce_with_logits(x, args, kwargs, return_grad=False):
    (target,) = args
    kw = _loss_kwargs(kwargs, ("weight", "pos_weight", "reduction"))
    return xent.binary_cross_entropy_with_logits(x, target, return_grad=return_grad,
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


class Case:
    """One PyTorch sample: ``reference(input, *args, **kwargs)`` is PyTorch's result
    and ``TRANSLATIONS[op_name]`` the same call on xent."""

    def __init__(self, label, op_name, dtype, input, args, kwargs, reference):  # noqa: A002
        self.label, self.op_name, self.dtype = label, op_name, dtype
        self.input, self.args, self.kwargs, self.reference = input, tuple(args), kwargs, reference

    def __repr__(self):
        return f"Case({self.label})"


def _shape_text(v):
    if isinstance(v, torch.Tensor):
        return "x".join(map(str, v.shape)) or "0d"
    if isinstance(v, torch.dtype):
        return str(v).removeprefix("torch.")
    return repr(v).replace(" ", "")


def _case_id(label, dtype, index, case):
    parts = [_shape_text(case.input)] + [_shape_text(a) for a in case.args]
    parts += [f"{k}={_shape_text(v)}" for k, v in case.kwargs.items()]
    return f"{label}-{str(dtype).removeprefix('torch.')}-{index}-{','.join(parts)}"


def _opinfo_cases():
    """OpInfo ``sample_inputs`` of the eight functions."""
    for op in _methods.op_db:
        if op.name not in TRANSLATIONS:
            continue
        label = op.name + (f" ({op.variant_test_name})" if op.variant_test_name else "")
        for dtype in DTYPES:
            for s in op.sample_inputs("cpu", dtype, requires_grad=True):
                yield Case(label, op.name, dtype, s.input, s.args, s.kwargs, op)


# the loss modules whose ModuleInfo inputs are the functions' too
LOSS_MODULES = {
    "CrossEntropyLoss": "nn.functional.cross_entropy",
    "NLLLoss": "nn.functional.nll_loss",
    "KLDivLoss": "nn.functional.kl_div",
    "BCELoss": "nn.functional.binary_cross_entropy",
    "BCEWithLogitsLoss": "nn.functional.binary_cross_entropy_with_logits",
}


def _module_call(module_cls, input, target, **kwargs):  # noqa: A002
    return module_cls(**kwargs)(input, target)


def _module_cases():
    """ModuleInfo inputs of torch.nn's five loss modules (``torch.testing._internal.
    common_modules``): the constructor's keywords are the function's, the
    forward call's (input, target) its arguments."""
    try:
        from torch.testing._internal import common_modules as modules
    except ImportError:  # an older torch without module_db: the OpInfo samples only
        return
    for info in modules.module_db:
        name = info.module_cls.__name__
        if name not in LOSS_MODULES:
            continue
        for dtype in DTYPES:
            for m in info.module_inputs_func(info, device="cpu", dtype=dtype,
                                             requires_grad=True, training=True):
                forward = m.forward_input
                if (forward is None or m.constructor_input.args or forward.kwargs
                        or len(forward.args) != 2):
                    continue  # no call of the function's form
                yield Case(f"nn.{name} (module)", LOSS_MODULES[name], dtype,
                           forward.args[0], forward.args[1:],
                           dict(m.constructor_input.kwargs),
                           functools.partial(_module_call, info.module_cls))


def _collect():
    cases = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        counter = {}
        for case in [*_opinfo_cases(), *_module_cases()]:
            key = (case.label, case.dtype)
            index = counter[key] = counter.get(key, -1) + 1
            name = case.label.removeprefix("nn.functional.").replace(" ", "")
            cases.append(pytest.param(case, id=_case_id(name, case.dtype, index, case)))
    return cases


SAMPLES = _collect()


# ---------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------


def _torch_result(case):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "reduction: 'mean' divides", UserWarning)
        return case.reference(case.input, *case.args, **case.kwargs)


def _assert_close(got, expected, what, array_type="numpy"):
    if array_type == "torch":
        assert isinstance(got, torch.Tensor), f"{what}: {type(got).__name__}, not a tensor"
        got = got.numpy()
    expected = expected.detach().numpy()
    got_dtype = np.asarray(got).dtype
    assert got_dtype == expected.dtype, f"{what}: dtype {got_dtype}, PyTorch {expected.dtype}"
    assert np.shape(got) == expected.shape, (
        f"{what}: shape {np.shape(got)}, PyTorch {expected.shape}")
    rtol, atol = TOLERANCE[expected.dtype]
    np.testing.assert_allclose(np.asarray(got), expected, rtol=rtol, atol=atol, err_msg=what)


def _xent_result(case, array_type="numpy", **extra):
    """xent's result on the case's arguments, passed as `array_type` arrays."""
    convert = ARRAY_TYPES[array_type]
    call = TRANSLATIONS[case.op_name][0]
    return call(convert(case.input), tuple(map(convert, case.args)),
                {k: convert(v) for k, v in case.kwargs.items()}, **extra)


def _call_xent(case, array_type="numpy", **extra):
    try:
        return _xent_result(case, array_type, **extra)
    except (TypeError, ValueError, IndexError, NotImplementedError) as exc:
        pytest.fail(f"xent refuses this PyTorch sample: {type(exc).__name__}: {exc}")


def _torch_grad(case):
    """d sum(loss) / d input through PyTorch's own function and autograd."""
    x = case.input.detach().clone().requires_grad_(True)
    loss = case.reference(x, *case.args, **case.kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return grad


@pytest.mark.parametrize("case", SAMPLES)
def test_sample_matches_pytorch(case):
    got = _call_xent(case)
    _assert_close(got, _torch_result(case), "value")


def _detached(args):
    """Tuple or dict of call arguments with every tensor detached."""
    if isinstance(args, dict):
        return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    return tuple(v.detach() if isinstance(v, torch.Tensor) else v for v in args)


@pytest.mark.parametrize("case", [p for p in SAMPLES if p.values[0].op_name in WITH_GRAD])
def test_sample_gradient_matches_pytorch(case):
    expected = _torch_grad(case)
    for array_type in ARRAY_TYPES:
        loss, grad = _call_xent(case, array_type, return_grad=True)
        _assert_close(loss, _torch_result(case), f"value with return_grad=True ({array_type})",
                      array_type)
        _assert_close(grad, expected, f"return_grad ({array_type})", array_type)

    if xent_torch is None:
        pytest.skip("xent.torch unavailable")
    # xent.torch differentiates with respect to the input only (it refuses a
    # target or weight that requires grad), so those are passed detached.
    x = case.input.detach().clone().requires_grad_(True)
    fn = getattr(xent_torch, TRANSLATIONS[case.op_name][1])
    value = fn(x, *_detached(case.args), **_detached(case.kwargs))
    (grad_t,) = torch.autograd.grad(value.sum(), x)
    _assert_close(value.detach(), _torch_result(case), "xent.torch value")
    _assert_close(grad_t, expected, "xent.torch gradient")


# ---------------------------------------------------------------------------
# the count: how many samples xent accepts, per function and dtype
# ---------------------------------------------------------------------------


def sample_counts(array_type="numpy"):
    """({(label, dtype): [accepted, refused, mismatching]}, [(sample id, problem)])
    over SAMPLES, the arguments passed as `array_type` arrays."""
    counts, problems = {}, []
    for param in SAMPLES:
        (case,) = param.values
        row = counts.setdefault((case.label, case.dtype), [0, 0, 0])
        try:
            got = _xent_result(case, array_type)
        except (TypeError, ValueError, IndexError, NotImplementedError) as exc:
            row[1] += 1
            problems.append((param.id, f"refused: {type(exc).__name__}: {exc}"))
            continue
        row[0] += 1
        try:
            _assert_close(got, _torch_result(case), "value", array_type)
        except AssertionError as exc:
            row[2] += 1
            problems.append((param.id, f"mismatch: {str(exc).strip().splitlines()[0]}"))
    return counts, problems


def _table(counts):
    lines = [f"{'function':52} {'dtype':8} accepted refused mismatching"]
    for (label, dtype), (ok, refused, bad) in counts.items():
        lines.append(f"{label:52} {str(dtype).removeprefix('torch.'):8} {ok:8} {refused:7} {bad:11}")
    totals = [sum(c[i] for c in counts.values()) for i in range(3)]
    lines.append(f"{'total':61} {totals[0]:8} {totals[1]:7} {totals[2]:11}")
    return "\n".join(lines)


@pytest.mark.parametrize("array_type", list(ARRAY_TYPES))
def test_every_sample_is_accepted(array_type):
    """The issue's "done when": every OpInfo sample of the eight functions is accepted
    (and every ModuleInfo input of the five loss modules) and matches PyTorch, with
    NumPy arrays and with the tensors themselves (then giving tensors back)."""
    counts, problems = sample_counts(array_type)
    labels = {label for label, _ in counts}
    assert {op for op in TRANSLATIONS if not any(lb.startswith(op) for lb in labels)} == set(), (
        "an op vanished from op_db")
    listing = "\n".join(f"  {sample}: {problem}" for sample, problem in problems[:40])
    assert not problems, (
        f"{len(problems)} PyTorch samples refused or mismatching:\n{_table(counts)}\n{listing}")


if __name__ == "__main__":
    for kind in ARRAY_TYPES:
        print(f"arguments as {kind} arrays")
        print(_table(sample_counts(kind)[0]))
