"""Arrays at addresses that are not a multiple of their item size.

NumPy allows them (``np.frombuffer(buf, offset=1)`` viewed as float32, fields of
packed structured arrays, buffers that dask hands over), and xent reads its
inputs and writes ``out=`` / ``grad_out=`` where they lie.  In C an access
through a ``float*`` to a float that is not 4-byte aligned is undefined
behaviour, whatever the CPU makes of it, so the kernels access the caller's
arrays through element types of alignment 1 (``xent/common.h``); the sanitizer job
(``.ci/sanitizers.sh``) runs this file under UBSan, where any misaligned access
is a failure.

Each case makes the same call on arrays at aligned addresses and on copies at an
odd address (same shape, dtype and strides, so the same kernel path) and
requires the same bits, for every public function and the paths they take: row
batches, rows one by one, strided rows, few-class tiles, blocks when the class
axis is not last, long rows in chunks, float16 rows read in place, with the
outputs misaligned too.  Rows with +inf, -inf and NaN take the special-value
paths, which read the rows again.  CI runs the suite at every SIMD level
(XENT_SIMD), each with its own hand-written loops.
"""

import numpy as np
import pytest

import xent
from helpers import bitwise_equal
from references import BFLOAT16


def misaligned(a, offset=1):
    """A C-contiguous copy of `a` at an address `offset` bytes past an aligned one."""
    a = np.ascontiguousarray(a)
    buf = np.zeros(a.nbytes + 64, np.uint8)
    start = (-buf.ctypes.data) % 64 + offset  # 64-byte aligned, then `offset` further
    m = buf[start : start + a.nbytes].view(a.dtype).reshape(a.shape)
    m[...] = a
    if a.dtype.itemsize > 1 and a.size:
        assert not m.flags.aligned
    return m


def pair(base, view=None):
    """(aligned, misaligned): `view` of an aligned copy of `base` and of a
    misaligned one, with the same strides."""
    view = view or (lambda b: b)
    al, mis = view(np.array(base, copy=True)), view(misaligned(base))
    assert al.strides == mis.strides
    return al, mis


def out_pair(shape, dtype):
    """Output buffers (aligned, misaligned), filled with the same garbage."""
    return pair(np.full(shape, 7.0, dtype))


def same(got, want):
    """Equal bits, element by element, through tuples and Evaluation results."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            same(g, w)
    elif isinstance(want, xent.Evaluation):
        assert bitwise_equal(got.loss, want.loss) and got.count == want.count
        assert got.accuracy == want.accuracy
    else:
        assert bitwise_equal(got, want), (got, want)


def logits(rng, shape, dtype, special=True):
    """Random logits; with `special`, rows with +inf, -inf and NaN among them."""
    x = rng.standard_normal(shape) * 3
    if special and x.ndim >= 2 and x.shape[0] >= 5 and x.shape[-1] >= 2:
        x[1, ..., 1] = np.inf
        x[2] = -np.inf
        x[3, ..., 0] = np.nan
        x[4, ..., 0] = -np.inf
    return x.astype(dtype)


# The layouts of the normalisers' and cross-entropy's kernel paths: (name, shape
# of the base array, view of it, class axis).
LAYOUTS = [
    ("row-batches", (40, 100), None, -1),
    ("long-rows", (6, 3000), None, -1),
    ("few-classes", (70, 5), None, -1),
    ("few-classes-17", (70, 17), None, -1),
    ("strided-rows", (20, 50), lambda b: b[:, ::2], -1),
    ("class-axis-not-last", (6, 7, 40), None, 1),
    ("axis-0", (30, 9), None, 0),
]
FLOATS = [np.float32, np.float64]


@pytest.mark.parametrize("func", [xent.logsumexp, xent.log_softmax, xent.softmax],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda c: c[0])
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("with_out", [False, True], ids=["new", "out"])
def test_normalizers(rng, func, layout, dtype, with_out):
    _, shape, view, axis = layout
    al, mis = pair(logits(rng, shape, dtype), view)
    kw, kw_mis = {}, {}
    if with_out:
        out_shape = np.delete(np.array(al.shape), axis) if func is xent.logsumexp else al.shape
        kw["out"], kw_mis["out"] = out_pair(tuple(out_shape), dtype)
    want = func(al, axis=axis, **kw)
    got = func(mis, axis=axis, **kw_mis)
    same(got, want)
    if with_out:
        assert got is kw_mis["out"]


@pytest.mark.parametrize("func", [xent.logsumexp, xent.log_softmax, xent.softmax],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_normalizers_long_rows_in_chunks(rng, func, dtype):
    """Rows of 2**18 classes or more are normalised in chunks across threads."""
    x = logits(rng, (2, 2**18 + 5), dtype, special=False)
    x[1, 7] = np.inf
    al, mis = pair(x)
    out_shape = (2,) if func is xent.logsumexp else x.shape
    o_al, o_mis = out_pair(out_shape, dtype)
    same(func(mis, out=o_mis), func(al, out=o_al))
    same(func(mis, axis=None), func(al, axis=None))


HALF = [np.float16] + ([BFLOAT16] if BFLOAT16 is not None else [])


@pytest.mark.parametrize("func", [xent.logsumexp, xent.log_softmax, xent.softmax],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", HALF, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("C", [5, 40, 700])
def test_normalizers_half_rows(rng, func, dtype, C):
    """16-bit rows: float16 rows are read in place (an odd address for 2-byte
    values), bfloat16 ones converted."""
    al, mis = pair(logits(rng, (37, C), dtype))
    out_shape = (37,) if func is xent.logsumexp else (37, C)
    o_al, o_mis = out_pair(out_shape, np.float32)
    same(func(mis, out=o_mis), func(al, out=o_al))
    same(func(mis), func(al))


def class_targets(rng, shape, C, dtype=np.int64):
    t = rng.integers(0, C, shape)
    t.reshape(-1)[::7] = -100
    return t.astype(dtype)


# Cross-entropy options: (name, keyword arguments given on the aligned side; arrays
# there are misaligned on the other).
CE_OPTIONS = [
    ("plain", {}),
    ("weight-smoothing-zloss", {"weight": True, "label_smoothing": 0.1, "z_loss": 1e-3}),
    ("grad", {"return_grad": True}),
    ("grad-out-weight", {"return_grad": True, "grad_out": True, "weight": True,
                         "label_smoothing": 0.05}),
]


def _ce_kwargs(rng, opts, x_al, C, dtype):
    """The two sides' keyword arguments for cross_entropy-like calls."""
    kw, kw_mis = {}, {}
    for key, value in opts.items():
        if key == "weight":
            kw["weight"], kw_mis["weight"] = pair(rng.uniform(0.5, 2.0, C).astype(dtype))
        elif key == "grad_out":
            kw["grad_out"], kw_mis["grad_out"] = out_pair(x_al.shape, dtype)
        else:
            kw[key] = kw_mis[key] = value
    return kw, kw_mis


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda c: c[0])
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("opts", CE_OPTIONS, ids=lambda c: c[0])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_cross_entropy_class_indices(rng, layout, dtype, opts, reduction):
    _, shape, view, axis = layout
    x_al, x_mis = pair(logits(rng, shape, dtype), view)
    C = x_al.shape[axis]
    t_shape = tuple(np.delete(np.array(x_al.shape), axis))
    t_al, t_mis = pair(class_targets(rng, t_shape, C))
    kw, kw_mis = _ce_kwargs(rng, opts[1], x_al, C, dtype)
    want = xent.cross_entropy(x_al, t_al, axis=axis, reduction=reduction, **kw)
    got = xent.cross_entropy(x_mis, t_mis, axis=axis, reduction=reduction, **kw_mis)
    same(got, want)


@pytest.mark.parametrize("tdtype", [np.int16, np.uint16, np.int32, np.uint32, np.int64,
                                    np.uint64, np.uint8], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(40, 100), (70, 5)], ids=["rows", "tiles"])
def test_cross_entropy_every_index_storage(rng, tdtype, shape):
    x_al, x_mis = pair(logits(rng, shape, np.float32))
    t = rng.integers(0, shape[1], shape[0]).astype(tdtype)
    t_al, t_mis = pair(t)
    for reduction in ("none", "sum"):
        same(xent.cross_entropy(x_mis, t_mis, reduction=reduction),
             xent.cross_entropy(x_al, t_al, reduction=reduction))
    # strided targets (every other one of a misaligned array)
    t2_al, t2_mis = pair(np.repeat(t, 2), lambda b: b[::2])
    same(xent.cross_entropy(x_mis, t2_mis, reduction="none"),
         xent.cross_entropy(x_al, t2_al, reduction="none"))


@pytest.mark.parametrize("C", [5, 40, 700])
def test_cross_entropy_half_rows(rng, C):
    """float16 rows read in place (row batches), with a misaligned gradient."""
    x_al, x_mis = pair(logits(rng, (37, C), np.float16))
    t_al, t_mis = pair(class_targets(rng, 37, C))
    g_al, g_mis = out_pair((37, C), np.float32)
    same(xent.cross_entropy(x_mis, t_mis, reduction="none"),
         xent.cross_entropy(x_al, t_al, reduction="none"))
    same(xent.cross_entropy(x_mis, t_mis, return_grad=True, grad_out=g_mis),
         xent.cross_entropy(x_al, t_al, return_grad=True, grad_out=g_al))


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("opts", CE_OPTIONS, ids=lambda c: c[0])
@pytest.mark.parametrize("axis", [-1, 1])
def test_cross_entropy_probability_targets(rng, dtype, opts, axis):
    shape = (6, 30, 4) if axis == 1 else (20, 30)
    x_al, x_mis = pair(logits(rng, shape, dtype), None)
    y = rng.random(shape)
    y /= y.sum(axis=axis, keepdims=True)
    y_al, y_mis = pair(y.astype(dtype))
    kw, kw_mis = _ce_kwargs(rng, opts[1], x_al, shape[axis], dtype)
    same(xent.cross_entropy(x_mis, y_mis, axis=axis, reduction="none", **kw_mis),
         xent.cross_entropy(x_al, y_al, axis=axis, reduction="none", **kw))


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(40, 100), (70, 5)], ids=["rows", "tiles"])
def test_nll_and_focal_loss(rng, dtype, shape):
    lp = xent.log_softmax(logits(rng, shape, dtype, special=False))
    lp_al, lp_mis = pair(lp)
    t_al, t_mis = pair(class_targets(rng, shape[0], shape[1]))
    w_al, w_mis = pair(rng.uniform(0.5, 2.0, shape[1]).astype(dtype))
    for reduction in ("none", "mean"):
        same(xent.nll_loss(lp_mis, t_mis, weight=w_mis, reduction=reduction),
             xent.nll_loss(lp_al, t_al, weight=w_al, reduction=reduction))
    x_al, x_mis = pair(logits(rng, shape, dtype))
    same(xent.focal_loss(x_mis, t_mis, alpha=w_mis, reduction="none"),
         xent.focal_loss(x_al, t_al, alpha=w_al, reduction="none"))
    same(xent.focal_loss(x_mis, t_mis, gamma=0.5, reduction="mean"),
         xent.focal_loss(x_al, t_al, gamma=0.5, reduction="mean"))


# Pointwise operands that are not aligned are copied by the Python layer
# (_pointwise.kernel_operand); a strided view becomes contiguous there, and the
# losses are then summed in pieces of other lengths, so a strided case compares
# the elements (reduction="none") only.
POINTWISE_SHAPES = [
    ("flat", (1000,), None, ("none", "sum")),
    ("strided", (30, 50), lambda b: b[:, ::2], ("none",)),
]


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", POINTWISE_SHAPES, ids=lambda c: c[0])
def test_binary_cross_entropy_with_logits(rng, dtype, case):
    _, shape, view, reductions = case
    x_al, x_mis = pair(logits(rng, shape, dtype), view)
    y_al, y_mis = pair(rng.random(shape).astype(dtype), view)
    w_al, w_mis = pair(rng.uniform(0.5, 2.0, shape).astype(dtype), view)
    pw_al, pw_mis = pair(rng.uniform(0.5, 2.0, shape[-1]).astype(dtype))
    g_al, g_mis = out_pair(x_al.shape, dtype)
    for reduction in reductions:
        same(xent.binary_cross_entropy_with_logits(x_mis, y_mis, weight=w_mis,
                                                   pos_weight=pw_mis[: x_al.shape[-1]],
                                                   reduction=reduction),
             xent.binary_cross_entropy_with_logits(x_al, y_al, weight=w_al,
                                                   pos_weight=pw_al[: x_al.shape[-1]],
                                                   reduction=reduction))
    kw = {"reduction": reductions[-1], "return_grad": True}
    same(xent.binary_cross_entropy_with_logits(x_mis, y_mis, grad_out=g_mis, **kw),
         xent.binary_cross_entropy_with_logits(x_al, y_al, grad_out=g_al, **kw))


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", POINTWISE_SHAPES, ids=lambda c: c[0])
def test_binary_cross_entropy_and_kl_div(rng, dtype, case):
    _, shape, view, reductions = case
    p_al, p_mis = pair(rng.random(shape).astype(dtype), view)
    y_al, y_mis = pair(rng.random(shape).astype(dtype), view)
    w_al, w_mis = pair(rng.uniform(0.5, 2.0, shape).astype(dtype), view)
    for reduction in reductions:
        same(xent.binary_cross_entropy(p_mis, y_mis, weight=w_mis, reduction=reduction),
             xent.binary_cross_entropy(p_al, y_al, weight=w_al, reduction=reduction))
    q_al, q_mis = pair(np.log(rng.random(shape)).astype(dtype), view)
    for log_target in (False, True):
        t_al, t_mis = (y_al, y_mis) if not log_target else (q_al[::-1], q_mis[::-1])
        for reduction in reductions:
            same(xent.kl_div(q_mis, t_mis, reduction=reduction, log_target=log_target),
                 xent.kl_div(q_al, t_al, reduction=reduction, log_target=log_target))


@pytest.mark.parametrize("dtype", FLOATS + [np.float16], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", LAYOUTS[:5], ids=lambda c: c[0])
def test_kl_divergence_and_entropy(rng, dtype, layout):
    _, shape, view, axis = layout
    p_al, p_mis = pair(logits(rng, shape, dtype), view)
    q_al, q_mis = pair(logits(rng, shape, dtype, special=False), view)
    compute = np.float32 if dtype == np.float16 else dtype
    g_al, g_mis = out_pair(q_al.shape, compute)
    for reduction in ("none", "mean"):
        same(xent.kl_divergence(p_mis, q_mis, axis=axis, temperature=2.0, reduction=reduction),
             xent.kl_divergence(p_al, q_al, axis=axis, temperature=2.0, reduction=reduction))
    same(xent.kl_divergence(p_mis, q_mis, axis=axis, return_grad=True, grad_out=g_mis),
         xent.kl_divergence(p_al, q_al, axis=axis, return_grad=True, grad_out=g_al))
    same(xent.entropy(p_mis, axis=axis), xent.entropy(p_al, axis=axis))


@pytest.mark.parametrize("dtype", FLOATS + [np.float16], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda c: c[0])
def test_evaluate_and_evaluator(rng, dtype, layout):
    _, shape, view, axis = layout
    x_al, x_mis = pair(logits(rng, shape, dtype), view)
    C = x_al.shape[axis]
    t_shape = tuple(np.delete(np.array(x_al.shape), axis))
    t_al, t_mis = pair(class_targets(rng, t_shape, C))
    same(xent.evaluate(x_mis, t_mis, axis=axis, k=(1, 3)),
         xent.evaluate(x_al, t_al, axis=axis, k=(1, 3)))
    ev_al, ev_mis = xent.Evaluator(axis=axis, k=2), xent.Evaluator(axis=axis, k=2)
    ev_al.update(x_al, t_al)
    ev_mis.update(x_mis, t_mis)
    same(ev_mis.result(), ev_al.result())


def test_misaligned_helper_really_is():
    """The arrays above are at odd addresses (the point of this file)."""
    m = misaligned(np.arange(10, dtype=np.float64))
    assert m.ctypes.data % 8 == 1 and not m.flags.aligned
    assert np.array_equal(m, np.arange(10.0))
