"""Results in the caller's array type (SPEC, "Conventions"), for every public function.

A PyTorch tensor in gives PyTorch tensors out, an ``array_api_strict`` array gives
``array_api_strict`` arrays; values, dtypes and shapes are those of the same call
on NumPy arrays (the NumPy path, which other files test against references); the
inputs are read without a copy and ``out=``/``grad_out=`` are written in place.
Dask arrays go to `xent.dask`.  Mixed namespaces, tensors that require grad,
device arrays and complex tensors raise.  Each peer is skipped when absent.
"""

import inspect
import pickle
import sys

import numpy as np
import pytest

import xent
from xent._runtime.namespaces import follow_caller_namespace

R = np.random.default_rng(20)
N, C, D = 6, 5, 4
X = R.standard_normal((N, C))
Q = R.standard_normal((N, C))
T = np.array([0, 2, 4, 1, 3, 2])
P = np.exp(Q) / np.exp(Q).sum(1, keepdims=True)  # class probabilities
Y = R.random((N, C))  # binary targets in [0, 1]
S = 1 / (1 + np.exp(-X))  # probabilities in (0, 1)
W = R.random(C) + 0.5  # class weights
H = R.standard_normal((N, D))  # hidden states
LW = R.standard_normal((C, D))  # a classifier layer
LB = R.standard_normal(C)

# One call of each public function: (name, NumPy positional args, keyword args).
# Every array argument is converted to the namespace under test.
CALLS = [
    ("logsumexp", (X,), {}),
    ("logsumexp", (X,), {"axis": None}),
    ("logsumexp", (X,), {"axis": 0, "keepdims": True}),
    ("log_softmax", (X,), {}),
    ("softmax", (X,), {}),
    ("softmax", (X,), {"axis": 0}),
    ("cross_entropy", (X, T), {}),
    ("cross_entropy", (X, P), {"weight": W, "label_smoothing": 0.1}),
    ("cross_entropy", (X, T), {"reduction": "none", "return_grad": True}),
    ("nll_loss", (X - X.max(1, keepdims=True), T), {"weight": W}),
    ("focal_loss", (X, T), {"alpha": W, "reduction": "sum"}),
    ("binary_cross_entropy", (S, Y), {}),
    ("binary_cross_entropy_with_logits", (X, Y), {"pos_weight": W, "return_grad": True}),
    ("kl_div", (np.log(P), S / S.sum(1, keepdims=True)), {"reduction": "batchmean"}),
    ("kl_divergence", (X, Q), {"temperature": 2.0, "return_grad": True}),
    ("entropy", (X,), {"base": 2.0}),
    ("evaluate", (X, T), {"k": (1, 2)}),
    ("evaluate", (H, T), {"linear_weight": LW, "k": 1}),
    ("linear_cross_entropy", (H, LW, T), {"linear_bias": LB}),
    ("linear_cross_entropy", (H, LW, T), {"linear_bias": LB, "return_grad": True}),
]
if "b" in inspect.signature(xent.logsumexp).parameters:  # the normalizers' full signatures
    B = R.standard_normal(C)  # scale factors of both signs
    CALLS += [
        ("logsumexp", (X,), {"b": B, "return_sign": True}),  # (lse, sign)
        ("logsumexp", (X,), {"axis": (0, 1), "b": np.abs(B)}),
        ("softmax", (np.array(X[0, 0]),), {"axis": None}),  # 0-d in, 0-d out
        ("log_softmax", (X,), {"dtype": np.float32}),
    ]
CALL_IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CALLS)]
PUBLIC_FUNCTIONS = sorted({name for name, _, _ in CALLS})


def test_every_public_function_has_a_call():
    functions = {n for n in xent.__all__ if inspect.isfunction(getattr(xent, n))}
    functions -= {"get_num_threads", "set_num_threads", "show_config", "get_include"}
    assert functions == set(PUBLIC_FUNCTIONS)


def _converted(args, kwargs, convert):
    def one(v):
        return convert(v) if isinstance(v, np.ndarray) else v

    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


def _assert_same_result(got, want, is_array, to_numpy):
    """`got` (from namespace arrays) has `want`'s structure (from NumPy arrays): each
    NumPy array or scalar is an array of the namespace with its dtype, shape, values."""
    if isinstance(want, tuple):
        assert type(got) is type(want)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            _assert_same_result(g, w, is_array, to_numpy)
    elif isinstance(want, (np.ndarray, np.generic)):
        assert is_array(got), type(got)
        g = to_numpy(got)
        assert g.dtype == want.dtype
        assert g.shape == np.shape(want)  # 0-d for the reductions
        np.testing.assert_array_equal(g, want)
    else:
        assert got == want  # None, Evaluation


# ---- NumPy ----------------------------------------------------------------------


def _leaves(result):
    if isinstance(result, tuple):
        return [leaf for r in result for leaf in _leaves(r)]
    return [result]


@pytest.mark.parametrize("name, args, kwargs", CALLS, ids=CALL_IDS)
def test_numpy_in_numpy_out(name, args, kwargs):
    got = getattr(xent, name)(*args, **kwargs)
    for r in _leaves(got):
        assert r is None or isinstance(r, (np.ndarray, np.generic, xent.Evaluation)), type(r)


def test_numpy_scalars_stay_numpy_scalars():
    assert type(xent.logsumexp(X[0])) is np.float64
    assert type(xent.cross_entropy(X.astype(np.float32), T)) is np.float32


def test_numpy_subclasses_stay_numpy(tmp_path):
    m = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float64, shape=X.shape)
    m[:] = X
    np.testing.assert_array_equal(xent.softmax(m), xent.softmax(X))
    assert type(xent.logsumexp(m, axis=None)) is np.float64


# ---- PyTorch --------------------------------------------------------------------


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _torch_is(torch):
    return lambda a: isinstance(a, torch.Tensor)


@pytest.mark.parametrize("name, args, kwargs", CALLS, ids=CALL_IDS)
def test_torch_in_torch_out(torch, name, args, kwargs):
    want = getattr(xent, name)(*args, **kwargs)
    targs, tkwargs = _converted(args, kwargs, torch.from_numpy)
    got = getattr(xent, name)(*targs, **tkwargs)
    _assert_same_result(got, want, _torch_is(torch), lambda t: t.numpy())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_float32_results_are_float32_tensors(torch, dtype):
    x = torch.from_numpy(X.astype(dtype))
    assert xent.logsumexp(x).dtype == getattr(torch, dtype)
    loss, grad = xent.cross_entropy(x, torch.from_numpy(T), return_grad=True)
    assert loss.dtype == grad.dtype == getattr(torch, dtype)
    assert loss.ndim == 0 and grad.shape == x.shape


def test_evaluator_update_reads_tensors(torch):
    want, got = xent.Evaluator(k=(1, 3)), xent.Evaluator(k=(1, 3))
    want.update(X, T)
    assert got.update(torch.from_numpy(X), torch.from_numpy(T)) is None
    assert got.result() == want.result()  # an Evaluation of Python numbers, as for NumPy


def test_evaluator_with_a_torch_head(torch):
    want = xent.Evaluator(linear_weight=LW, linear_bias=LB, k=1)
    got = xent.Evaluator(linear_weight=torch.from_numpy(LW), linear_bias=torch.from_numpy(LB), k=1)
    want.update(H, T)
    got.update(torch.from_numpy(H), torch.from_numpy(T))
    assert got.result() == want.result()
    with pytest.raises(TypeError, match="linear_weight requires grad"):
        xent.Evaluator(linear_weight=torch.from_numpy(LW).requires_grad_())


def _spy():
    """A function behind the namespace layer that records the NumPy arrays it gets."""
    seen = []

    def probe(x, y=None, *, out=None):
        seen.append((x, y, out))
        return x.sum(), out

    return follow_caller_namespace(probe), seen


def _address(a):
    return a.__array_interface__["data"][0]


def test_tensors_are_read_without_a_copy(torch):
    probe, seen = _spy()
    x = torch.from_numpy(X.copy())
    strided = x.t()  # any strides: read in place
    probe(x, strided)
    (a, b, _), = seen
    assert type(a) is np.ndarray and _address(a) == x.data_ptr() and a.shape == x.shape
    assert _address(b) == strided.data_ptr() and b.strides == (8, 8 * C)


def test_the_same_tensor_twice_is_one_array(torch):
    probe, seen = _spy()
    x = torch.from_numpy(X.copy())
    _, out = probe(x, out=x)
    assert seen[0][0] is seen[0][2]
    assert out is x


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_torch_out_is_written_in_place(torch, name):
    x = torch.from_numpy(X.copy())
    out = torch.empty(N, C, dtype=torch.float64)
    ptr = out.data_ptr()
    got = getattr(xent, name)(x, out=out)
    assert got is out and out.data_ptr() == ptr
    np.testing.assert_array_equal(out.numpy(), getattr(xent, name)(X))
    assert getattr(xent, name)(x, out=x) is x  # in place over the input
    np.testing.assert_array_equal(x.numpy(), getattr(xent, name)(X))


def test_torch_logsumexp_out_float32(torch):
    out = torch.empty(N, dtype=torch.float32)
    assert xent.logsumexp(torch.from_numpy(X), out=out) is out
    np.testing.assert_array_equal(out.numpy(), xent.logsumexp(X).astype(np.float32))


@pytest.mark.parametrize(
    "name, args, kwargs",
    [
        ("cross_entropy", (X, T), {}),
        ("binary_cross_entropy_with_logits", (X, Y), {}),
        ("kl_divergence", (X, Q), {}),
    ],
)
def test_torch_grad_out_is_written_in_place(torch, name, args, kwargs):
    loss_np, grad_np = getattr(xent, name)(*args, return_grad=True, **kwargs)
    targs, _ = _converted(args, {}, torch.from_numpy)
    grad_out = torch.full((N, C), np.nan, dtype=torch.float64)
    loss, grad = getattr(xent, name)(*targs, return_grad=True, grad_out=grad_out, **kwargs)
    assert grad is grad_out
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and loss.item() == loss_np
    np.testing.assert_array_equal(grad_out.numpy(), grad_np)


def test_a_call_that_raises_writes_nothing(torch):
    out = torch.full((N, C), 7.0, dtype=torch.float64)
    with pytest.raises(ValueError):
        xent.softmax(torch.from_numpy(X), axis=5, out=out)
    with pytest.raises(TypeError, match="mixed"):
        xent.softmax(X, out=out)
    grad_out = torch.full((N, C), 7.0, dtype=torch.float64)
    with pytest.raises(IndexError):
        xent.cross_entropy(torch.from_numpy(X), torch.tensor([0, 1, 2, 3, 4, 9]),
                           return_grad=True, grad_out=grad_out)
    assert bool((out == 7).all()) and bool((grad_out == 7).all())


def test_torch_bfloat16_is_read_in_place(torch):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x16 = torch.from_numpy(X).to(torch.bfloat16)
    want = xent.log_softmax(X.astype(ml_dtypes.bfloat16))
    got = xent.log_softmax(x16)
    assert got.dtype == torch.float32  # computed in float32 (SPEC)
    np.testing.assert_array_equal(got.numpy(), want)
    probe, seen = _spy()
    probe(x16)
    assert seen[0][0].dtype == ml_dtypes.bfloat16 and _address(seen[0][0]) == x16.data_ptr()
    out = torch.zeros(N, C, dtype=torch.bfloat16)
    assert xent.softmax(torch.from_numpy(X), out=out) is out
    np.testing.assert_array_equal(out.float().numpy(),
                                  xent.softmax(X).astype(ml_dtypes.bfloat16).astype(np.float32))


def test_torch_bfloat16_without_ml_dtypes(torch, monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes fails
    with pytest.raises(TypeError, match="x is bfloat16.*ml_dtypes"):
        xent.softmax(torch.zeros(2, 3, dtype=torch.bfloat16))


def test_torch_negative_views_are_read_as_their_values(torch):
    # DLPack does not carry torch's lazy negation bit; the layer resolves it
    x = torch.from_numpy(X.copy())._neg_view()
    np.testing.assert_array_equal(xent.softmax(x).numpy(), xent.softmax(-X))


def test_torch_dtype_objects_become_numpy_dtypes(torch):
    seen = []
    probe = follow_caller_namespace(lambda x, *, dtype=None: seen.append(dtype))
    probe(X, dtype=torch.float32)
    probe(torch.from_numpy(X), dtype=torch.float64)
    assert seen == [np.dtype(np.float32), np.dtype(np.float64)]
    if "dtype" in inspect.signature(xent.log_softmax).parameters:  # the normalizers' dtype=
        got = xent.log_softmax(torch.from_numpy(X), dtype=torch.float32)
        assert got.dtype == torch.float32
        np.testing.assert_array_equal(got.numpy(), xent.log_softmax(X, dtype=np.float32))


def test_torch_integers_promote_as_torch_does(torch):
    """Integer tensors compute in torch's default float dtype, and an integer `b` next
    to float32 logits keeps float32 (torch.result_type), as SciPy's array-API tests
    expect; NumPy integers keep NumPy's float64."""
    ints = torch.tensor([[1, 2, 3], [4, 5, 9]])
    for fn, ref in ((xent.logsumexp, torch.logsumexp), (xent.softmax, torch.softmax),
                    (xent.log_softmax, torch.log_softmax)):
        got = fn(ints, axis=-1)
        want = ref(ints.to(torch.get_default_dtype()), -1)
        assert got.dtype == torch.float32 == want.dtype
        torch.testing.assert_close(got, want)
        assert fn(ints, axis=-1, dtype=torch.float64).dtype == torch.float64
    x32 = torch.tensor([1.0, 2.0, 3.0])
    for b in (torch.tensor([1, 2, 3], dtype=torch.int32), torch.tensor([True, False, True])):
        got = xent.logsumexp(x32, b=b)
        assert got.dtype == torch.float32
        want = torch.logsumexp(x32 + torch.log(b.to(torch.float64)).float(), 0)
        torch.testing.assert_close(got, want)
    assert xent.logsumexp(ints.numpy()).dtype == np.float64
    assert xent.logsumexp(torch.tensor([1.0, 2.0], dtype=torch.float16)).dtype == torch.float32


def test_array_api_strict_integers_promote_to_its_default_float():
    xs = pytest.importorskip("array_api_strict")
    got = xent.logsumexp(xs.asarray([1, 2, 3]), b=xs.asarray([1, 1, 2], dtype=xs.int8))
    assert got.dtype == xs.float64
    np.testing.assert_allclose(float(got), np.log(np.exp(1) + np.exp(2) + 2 * np.exp(3)))


# ---- errors ---------------------------------------------------------------------


class _CudaArray:
    """An array that says, through DLPack, that it lives on a CUDA device."""

    def __dlpack__(self, **kwargs):
        raise AssertionError("a device array must not be read")

    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA, device 0


@pytest.mark.parametrize("name, args, kwargs", CALLS, ids=CALL_IDS)
def test_device_arrays_raise_value_error(name, args, kwargs):
    args = (_CudaArray(),) + args[1:]
    first = next(iter(inspect.signature(getattr(xent, name)).parameters))
    with pytest.raises(ValueError, match=rf"xent.{name}: {first} is on device cuda:0"):
        getattr(xent, name)(*args, **kwargs)


def test_torch_meta_tensors_raise_value_error(torch):
    with pytest.raises(ValueError, match="x is on device meta"):
        xent.logsumexp(torch.zeros(2, 3, device="meta"))


@pytest.mark.parametrize("name, args, kwargs", CALLS, ids=CALL_IDS)
def test_tensors_requiring_grad_raise_type_error(torch, name, args, kwargs):
    args, kwargs = _converted(args, kwargs, torch.from_numpy)
    args = (args[0].clone().requires_grad_(),) + args[1:]
    first = next(iter(inspect.signature(getattr(xent, name)).parameters))
    with pytest.raises(TypeError, match=rf"{first} requires grad.*xent\.torch"):
        getattr(xent, name)(*args, **kwargs)


def test_requires_grad_points_to_the_xent_torch_function(torch):
    x = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(TypeError, match=r"use xent\.torch\.cross_entropy"):
        xent.cross_entropy(x, torch.tensor([0, 1]))


def _several_arrays(calls):
    return [c for c in calls if sum(isinstance(v, np.ndarray) for v in (*c[1], *c[2].values())) > 1]


@pytest.mark.parametrize("name, args, kwargs", _several_arrays(CALLS))
def test_torch_with_numpy_arrays_raises(torch, name, args, kwargs):
    # SciPy's rule (array_namespace): NumPy arrays do not mix with another namespace
    args = (torch.from_numpy(args[0]),) + args[1:]
    with pytest.raises(TypeError, match=rf"xent.{name}: mixed array namespaces"):
        getattr(xent, name)(*args, **kwargs)


def test_torch_with_array_api_strict_raises(torch):
    xs = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match=r"logits \(torch\) and target \(array_api_strict\)"):
        xent.cross_entropy(torch.from_numpy(X), xs.asarray(T))


def test_plain_data_goes_with_any_namespace(torch):
    x = torch.from_numpy(X)
    want = xent.cross_entropy(X, T, weight=W, label_smoothing=0.1)
    got = xent.cross_entropy(x, T.tolist(), weight=tuple(W), label_smoothing=np.float64(0.1))
    assert isinstance(got, torch.Tensor) and got.item() == want


def test_complex_tensors_raise_type_error(torch):
    with pytest.raises(TypeError, match="complex"):
        xent.softmax(torch.zeros(2, 3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="complex"):
        xent.softmax(torch.zeros(2, 3, dtype=torch.complex64).conj())


def test_without_array_api_compat(torch, monkeypatch):
    monkeypatch.setitem(sys.modules, "array_api_compat", None)
    with pytest.raises(TypeError, match=r"xent\[array-api\]"):
        xent.softmax(torch.zeros(2, 3))
    assert isinstance(xent.softmax(np.zeros((2, 3))), np.ndarray)  # NumPy needs nothing


# ---- array_api_strict -----------------------------------------------------------


@pytest.mark.parametrize("name, args, kwargs", CALLS, ids=CALL_IDS)
def test_array_api_strict_in_array_api_strict_out(name, args, kwargs):
    xs = pytest.importorskip("array_api_strict")
    want = getattr(xent, name)(*args, **kwargs)
    sargs, skwargs = _converted(args, kwargs, xs.asarray)
    got = getattr(xent, name)(*sargs, **skwargs)
    is_strict = lambda a: type(a) is type(xs.asarray(0.0))  # noqa: E731
    _assert_same_result(got, want, is_strict, np.from_dlpack)


def test_array_api_strict_dtype_objects():
    xs = pytest.importorskip("array_api_strict")
    seen = []
    probe = follow_caller_namespace(lambda x, *, dtype=None: seen.append(dtype))
    probe(xs.asarray(X), dtype=xs.float32)
    assert seen == [np.dtype(np.float32)]


# ---- Dask -----------------------------------------------------------------------

DASK_CALLS = [
    ("logsumexp", (X,), {"axis": 0}),
    ("log_softmax", (X,), {}),
    ("cross_entropy", (X, T), {"weight": W}),
    ("evaluate", (X, T), {"k": (1, 2)}),
    ("linear_cross_entropy", (H, LW, T), {}),
]


@pytest.mark.parametrize("name, args, kwargs", DASK_CALLS, ids=[c[0] for c in DASK_CALLS])
def test_dask_arrays_go_to_xent_dask(name, args, kwargs):
    da = pytest.importorskip("dask.array")
    import dask

    want = getattr(xent, name)(*args, **kwargs)
    # the batch (first axis of the leading arguments) in blocks of 4 rows;
    # the classifier layer stays a NumPy array, as xent.dask takes it
    dargs = tuple(da.from_array(a, chunks=4) if i != 1 or name != "linear_cross_entropy" else a
                  for i, a in enumerate(args))
    lazy = getattr(xent, name)(*dargs, **kwargs)
    assert dask.is_dask_collection(lazy)
    got = lazy.compute()
    if isinstance(want, xent.Evaluation):
        assert got.count == want.count and got.accuracy == want.accuracy
        np.testing.assert_allclose(got.loss, want.loss, rtol=1e-14)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-14)


@pytest.mark.parametrize(
    "name, args, kwargs",
    [c for c in CALLS if c[0] not in {n for n, _, _ in DASK_CALLS}],
    ids=[f"{c[0]}" for c in CALLS if c[0] not in {n for n, _, _ in DASK_CALLS}],
)
def test_dask_arrays_without_a_counterpart_raise(name, args, kwargs):
    da = pytest.importorskip("dask.array")
    args = (da.from_array(args[0], chunks=4),) + args[1:]
    with pytest.raises(TypeError, match=rf"xent.{name} has no Dask counterpart"):
        getattr(xent, name)(*args, **kwargs)


def test_dask_with_an_argument_xent_dask_lacks():
    da = pytest.importorskip("dask.array")
    with pytest.raises(TypeError, match=r"goes to xent.dask.logsumexp.*out"):
        xent.logsumexp(da.from_array(X, chunks=4), out=np.empty(N))
    with pytest.raises(TypeError, match="no Dask counterpart"):
        xent.Evaluator().update(da.from_array(X, chunks=4), T)


def test_dask_with_torch_raises(torch):
    da = pytest.importorskip("dask.array")
    with pytest.raises(TypeError, match="mixed array namespaces"):
        xent.cross_entropy(da.from_array(X, chunks=4), torch.from_numpy(T))


# ---- the wrapper ----------------------------------------------------------------


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_wrapped_functions_keep_their_face(name):
    f = getattr(xent, name)
    assert f.__module__ == "xent" and f.__name__ == name
    assert f.__doc__ and inspect.signature(f) == inspect.signature(f.__wrapped__)
    assert pickle.loads(pickle.dumps(f)) is f


def test_calls_that_do_not_bind_get_pythons_message(torch):
    with pytest.raises(TypeError, match="unexpected keyword argument 'dim'"):
        xent.softmax(torch.zeros(2, 3), dim=1)


def test_a_compiled_fast_path_answers_or_passes():
    """``defaults_fast_path``: the required arguments alone, by position, go to the
    compiled callable with its extra arguments; its None (or any other call) goes to
    the function, through the namespace layer."""
    calls = []

    def compiled(x, axis, flag):
        calls.append((x, axis, flag))
        return "compiled" if isinstance(x, np.ndarray) and x.ndim == 2 else None

    def func(x, *, axis=-1):
        return ("function", axis)

    func.defaults_fast_path = (compiled, (-1, "flag"))
    public = follow_caller_namespace(func)
    assert public(X) == "compiled" and calls == [(X, -1, "flag")]
    assert public(X[0]) == ("function", -1)  # compiled said None
    assert public(X, axis=0) == ("function", 0) and len(calls) == 2  # not the bare call


FAST_PATH_DEFAULTS = {
    "cross_entropy": ("axis", "ignore_index", "reduction", "label_smoothing", "z_loss"),
    "logsumexp": ("axis",),
    "log_softmax": ("axis",),
    "softmax": ("axis",),
}


@pytest.mark.parametrize("name", sorted(FAST_PATH_DEFAULTS))
def test_compiled_fast_paths_get_the_signatures_defaults(name):
    core = getattr(xent, name).__wrapped__
    _, extra = core.defaults_fast_path
    parameters = inspect.signature(core).parameters
    defaults = tuple(parameters[p].default for p in FAST_PATH_DEFAULTS[name])
    assert extra[: len(defaults)] == defaults


@pytest.mark.parametrize("name", sorted(FAST_PATH_DEFAULTS))
def test_compiled_fast_paths_leave_tensors_to_the_namespace_layer(torch, name):
    args = (torch.from_numpy(X), torch.from_numpy(T))[: 2 if name == "cross_entropy" else 1]
    got = getattr(xent, name)(*args)
    assert isinstance(got, torch.Tensor)
