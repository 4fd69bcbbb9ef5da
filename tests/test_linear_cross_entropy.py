"""xent.linear_cross_entropy: the cross-entropy of ``z = input @ linear_weight.T +
linear_bias`` (capped as ``softcap·tanh(z/softcap)``) and its gradients with respect to
``input``, ``linear_weight`` and ``linear_bias``, never holding the N×C logits (SPEC.md,
"Losses from hidden states"; issue 19, "Exactness").

Values and gradients are compared with the float64 NumPy reference of references.py
(``ref_linear_cross_entropy``: einsum products, ``ref_cross_entropy``, the chain rule)
and with ``xent.cross_entropy`` of the materialised logits.  The rows are taken in
blocks of ``block_rows(C)`` rows; tests that must cross block boundaries with small
arrays shrink ``xent._api.linear.BLOCK_BYTES``.  PyTorch parity is in
test_torch_linear.py.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import xent
import xent._api.linear as linear_module
from helpers import (
    assert_close,
    assert_same_bits_for_thread_counts,
    bitwise_equal,
    sanitizer_loaded,
    traced_peak,
)
from references import BFLOAT16, as_f64, ref_linear_cross_entropy, ref_linear_logits

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
GRAD_NAMES = ("input", "linear_weight", "linear_bias")
# issue 19: float32 against a float64 reference within 1e-4 relative, float64 1e-10;
# float32 against xent.cross_entropy of the float32 logits ~1e-5.
REF_RTOL = {F32: 1e-4, F64: 1e-10}
CE_RTOL = 1e-5


# ---------------------------------------------------------------------------
# cases and comparisons
# ---------------------------------------------------------------------------


def make_problem(rng, lead=(37,), D=12, C=23, dtype=F64, bias=True, kind="index",
                 ignore_frac=0.2, ignore_index=-100):
    """Hidden states (lead + (D,)), a (C, D) weight, a bias (or None) and targets.
    With D = 12 the logits are ~N(0, 12): large enough that a softcap of 5 bends them."""
    x = rng.standard_normal(lead + (D,)).astype(dtype)
    W = rng.standard_normal((C, D)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype) if bias else None
    if kind == "index":
        t = rng.integers(0, C, size=lead)
        if ignore_frac:
            t[rng.random(lead) < ignore_frac] = ignore_index
    else:
        t = rng.random(lead + (C,)) ** 2
        t[rng.random(t.shape) < 0.15] = 0.0
        t /= np.maximum(t.sum(axis=-1, keepdims=True), 1e-300)
        t = t.astype(dtype)
    return x, W, b, t


def class_weights(C):
    return np.linspace(0.25, 2.0, C)


def scaled_close(actual, expected, rtol, what):
    """``actual`` within ``rtol`` of ``expected``, absolute errors measured against
    the largest finite |expected| (a gradient entry near 0 carries the rounding of
    its largest neighbours); NaN and inf positions must agree exactly."""
    e = np.asarray(expected, dtype=np.float64)
    fin = e[np.isfinite(e)]
    scale = max(1.0, float(np.max(np.abs(fin)))) if fin.size else 1.0
    assert_close(actual, e, rtol, rtol * scale, err_msg=what)


def _check_loss(loss, expected, comp, shape, reduction, rtol, what):
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.dtype == comp, (what, type(loss), comp)
        assert loss.shape == shape, (what, loss.shape, shape)
    else:
        assert type(loss) is comp.type, (what, type(loss), comp)
    scaled_close(np.asarray(loss), expected, rtol, what)


def check_against_reference(x, W, t, b=None, rtol=None, comp=None, **options):
    """Run with every gradient, and for the loss alone (another path through the
    core), and compare losses, gradients, dtypes and shapes with
    ``ref_linear_cross_entropy``; also check that no input was modified."""
    comp = np.dtype(comp if comp is not None else np.result_type(x, W, np.float32))
    rtol = REF_RTOL[comp] if rtol is None else rtol
    inputs = [a for a in (x, W, t, b) if a is not None]
    saved = [np.array(a, copy=True) for a in inputs]
    loss, grads = xent.linear_cross_entropy(x, W, t, linear_bias=b, return_grad=True, **options)
    loss_alone = xent.linear_cross_entropy(x, W, t, linear_bias=b, **options)
    for a, copy in zip(inputs, saved):
        assert bitwise_equal(a, copy), "an input was modified"
    e_loss, e_gx, e_gw, e_gb = ref_linear_cross_entropy(x, W, t, linear_bias=b, **options)
    reduction = options.get("reduction", "mean")
    _check_loss(loss, e_loss, comp, np.shape(x)[:-1], reduction, rtol, "loss (with grads)")
    _check_loss(loss_alone, e_loss, comp, np.shape(x)[:-1], reduction, rtol, "loss alone")
    assert isinstance(grads, xent.LinearGrads)
    for name, g, e in zip(GRAD_NAMES, grads, (e_gx, e_gw, e_gb)):
        assert isinstance(g, np.ndarray) and g.dtype == comp, (name, type(g), comp)
        assert g.shape == e.shape, (name, g.shape, e.shape)
        scaled_close(g, e, rtol, name)
    return loss, grads


# ---------------------------------------------------------------------------
# values and gradients against the float64 reference, every option
# ---------------------------------------------------------------------------

INDEX_OPTIONS = {
    "plain": {},
    "weights": {"weight": "class"},
    "ignore_index=3": {"ignore_index": 3},
    "smoothing": {"label_smoothing": 0.15},
    "z_loss": {"z_loss": 0.01},
    "softcap": {"softcap": 5.0},
    "all": {"weight": "class", "label_smoothing": 0.1, "z_loss": 0.02, "softcap": 4.0},
}


def _options(spec, C, reduction):
    opts = dict(spec, reduction=reduction)
    if opts.get("weight") == "class":
        opts["weight"] = class_weights(C)
    return opts


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("option", list(INDEX_OPTIONS))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_class_index_targets_match_reference(rng, dtype, reduction, option, bias):
    C = 23
    opts = _options(INDEX_OPTIONS[option], C, reduction)
    ignore_index = opts.get("ignore_index", -100)
    x, W, b, t = make_problem(rng, C=C, dtype=dtype, bias=bias, ignore_index=ignore_index)
    check_against_reference(x, W, t, b, **opts)


PROB_OPTIONS = {
    "plain": {},
    "weights": {"weight": "class"},
    "smoothing": {"label_smoothing": 0.2},
    "weights+smoothing+z_loss": {"weight": "class", "label_smoothing": 0.1, "z_loss": 0.01},
    "softcap": {"softcap": 5.0},
}


@pytest.mark.parametrize("option", list(PROB_OPTIONS))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_probability_targets_match_reference(rng, dtype, reduction, option):
    C = 19
    x, W, b, t = make_problem(rng, lead=(29,), C=C, dtype=dtype, kind="prob")
    check_against_reference(x, W, t, b, **_options(PROB_OPTIONS[option], C, reduction))


def test_z_loss_is_per_non_ignored_row_and_unweighted_under_mean(rng):
    """SPEC: z_loss·lse² per non-ignored row, divided by the number of non-ignored
    rows under "mean" (not by the class-weight sum), written out by hand here."""
    x, W, b, t = make_problem(rng, lead=(40,), C=11)
    w = class_weights(11)
    zc = 0.05
    plain = xent.linear_cross_entropy(x, W, t, linear_bias=b, weight=w)
    with_z = xent.linear_cross_entropy(x, W, t, linear_bias=b, weight=w, z_loss=zc)
    _, z = ref_linear_logits(x, W, b)
    m = z.max(axis=1)
    lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
    keep = t != -100
    expected_extra = zc * float(np.sum(lse[keep] ** 2)) / keep.sum()
    np.testing.assert_allclose(with_z - plain, expected_extra, rtol=1e-9)


# ---------------------------------------------------------------------------
# equal to xent.cross_entropy of the materialised logits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("option", ["plain", "weights", "smoothing", "z_loss", "softcap", "all"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_float32_equals_cross_entropy_of_the_logits(rng, reduction, option, kind):
    C = 31
    opts = _options(INDEX_OPTIONS[option], C, reduction)
    x, W, b, t = make_problem(rng, lead=(53,), D=16, C=C, dtype=F32, kind=kind)
    loss, grads = xent.linear_cross_entropy(x, W, t, linear_bias=b, return_grad=True, **opts)

    softcap = opts.pop("softcap", None)
    z = x @ W.T + b  # float32, NumPy's product
    if softcap is not None:
        z = (np.float32(softcap) * np.tanh(z / np.float32(softcap))).astype(F32)
    e_loss, g = xent.cross_entropy(z, t, return_grad=True, **opts)
    g = g.astype(F64)
    if softcap is not None:
        g *= 1.0 - (z.astype(F64) / softcap) ** 2
    assert type(loss) is type(e_loss) or reduction == "none"
    scaled_close(loss, e_loss, CE_RTOL, "loss")
    scaled_close(grads.input, g @ W.astype(F64), CE_RTOL, "input")
    scaled_close(grads.linear_weight, g.T @ x.astype(F64), CE_RTOL, "linear_weight")
    scaled_close(grads.linear_bias, g.sum(axis=0), CE_RTOL, "linear_bias")


# ---------------------------------------------------------------------------
# return_grad
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "return_grad, asked",
    [
        (True, GRAD_NAMES),
        (("input",), ("input",)),
        ("input", ("input",)),
        ("linear_weight", ("linear_weight",)),
        (("linear_weight", "linear_bias"), ("linear_weight", "linear_bias")),
        (["linear_bias", "input"], ("input", "linear_bias")),
        (("input", "linear_weight", "linear_bias"), GRAD_NAMES),
    ],
)
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_return_grad_computes_only_the_gradients_asked(rng, return_grad, asked, softcap):
    x, W, b, t = make_problem(rng, lead=(4, 9), C=13)
    e_loss, e_gx, e_gw, e_gb = ref_linear_cross_entropy(x, W, t, linear_bias=b, softcap=softcap)
    expected = dict(zip(GRAD_NAMES, (e_gx, e_gw, e_gb)))
    loss, grads = xent.linear_cross_entropy(x, W, t, linear_bias=b, softcap=softcap,
                                            return_grad=return_grad)
    assert isinstance(grads, xent.LinearGrads) and grads._fields == GRAD_NAMES
    scaled_close(loss, e_loss, 1e-10, "loss")
    for name in GRAD_NAMES:
        g = getattr(grads, name)
        if name in asked:
            scaled_close(g, expected[name], 1e-10, name)
        else:
            assert g is None, name


def test_return_grad_false_returns_the_loss_alone(rng):
    x, W, b, t = make_problem(rng)
    loss = xent.linear_cross_entropy(x, W, t, linear_bias=b)
    assert type(loss) is np.float64
    assert loss == xent.linear_cross_entropy(x, W, t, linear_bias=b, return_grad=False)
    scaled_close(loss, ref_linear_cross_entropy(x, W, t, linear_bias=b)[0], 1e-10, "loss")


def test_bias_gradient_without_a_bias_is_at_zero_bias(rng):
    x, W, _, t = make_problem(rng, bias=False)
    _, grads = xent.linear_cross_entropy(x, W, t, return_grad="linear_bias")
    scaled_close(grads.linear_bias, ref_linear_cross_entropy(x, W, t)[3], 1e-10, "linear_bias")


@pytest.mark.parametrize(
    "return_grad",
    ["bias", "weight", ("input", "bias"), ("grad",), ("linear_weight", 3), "Input"],
)
def test_unknown_gradient_names_raise(rng, return_grad):
    x, W, b, t = make_problem(rng)
    with pytest.raises(ValueError, match="return_grad"):
        xent.linear_cross_entropy(x, W, t, linear_bias=b, return_grad=return_grad)


# ---------------------------------------------------------------------------
# leading shapes, strides and dtypes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_leading_shape_b_t_d(rng, reduction):
    x, W, b, t = make_problem(rng, lead=(3, 7), D=10, C=17)
    loss, grads = check_against_reference(x, W, t, b, reduction=reduction, softcap=6.0)
    assert grads.input.shape == (3, 7, 10)
    if reduction == "none":
        assert loss.shape == (3, 7)


def test_probability_targets_with_leading_shape(rng):
    x, W, b, t = make_problem(rng, lead=(2, 3, 5), D=6, C=9, kind="prob")
    check_against_reference(x, W, t, b, reduction="none", label_smoothing=0.1)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_next_token_views(rng, dtype):
    """hidden[:, :-1] with target[:, 1:]: the rows of the view are not evenly spaced."""
    hidden, W, b, tokens = make_problem(rng, lead=(3, 11), D=8, C=15, dtype=dtype)
    x, t = hidden[:, :-1], tokens[:, 1:]
    assert not x.flags.c_contiguous
    loss, grads = check_against_reference(x, W, t, b, reduction="sum", z_loss=0.01)
    assert grads.input.shape == x.shape
    # and equal to the call on contiguous copies
    loss_c, grads_c = xent.linear_cross_entropy(np.ascontiguousarray(x), W, np.ascontiguousarray(t),
                                                linear_bias=b, reduction="sum", z_loss=0.01,
                                                return_grad=True)
    rtol = REF_RTOL[dtype] / 10
    scaled_close(loss, loss_c, rtol, "loss")
    for name, g, gc_ in zip(GRAD_NAMES, grads, grads_c):
        scaled_close(g, gc_, rtol, name)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_transposed_fortran_weight(rng, dtype):
    """W = M.T for a (D, C) matrix M: a Fortran-ordered (C, D) weight."""
    x, W, b, t = make_problem(rng, D=9, C=21, dtype=dtype)
    Wf = np.ascontiguousarray(W.T).T
    assert Wf.flags.f_contiguous and not Wf.flags.c_contiguous
    check_against_reference(x, Wf, t, b, weight=class_weights(21), softcap=5.0)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_every_other_row_and_strided_weight(rng, dtype):
    x, W, b, t = make_problem(rng, lead=(60,), D=9, C=21, dtype=dtype)
    xs = x[::2]
    ts = t[::2]
    Ws = np.repeat(W, 2, axis=1)[:, ::2]  # neither rows nor columns contiguous
    bs = np.repeat(b, 3)[::3]
    assert not xs.flags.c_contiguous and not Ws.flags.c_contiguous and not Ws.flags.f_contiguous
    check_against_reference(xs, Ws, ts, bs, reduction="none", label_smoothing=0.05)


ROW_STRIDE_CASES = {
    "input[::-1]": lambda x, W: (x[::-1], W),
    "linear_weight[::-1]": lambda x, W: (x, W[::-1]),
    "both[::-1]": lambda x, W: (x[::-1], W[::-1]),
    "input broadcast": lambda x, W: (np.broadcast_to(x[0], x.shape), W),
    "linear_weight broadcast": lambda x, W: (x, np.broadcast_to(W[0], W.shape)),
}


@pytest.mark.parametrize("case", list(ROW_STRIDE_CASES))
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_negative_and_zero_row_strides(rng, dtype, case):
    """Rows with a negative stride (x[::-1]) or a zero one (np.broadcast_to): BLAS
    takes neither as a leading dimension, so these must be read another way."""
    x, W, b, t = make_problem(rng, lead=(20,), D=7, C=11, dtype=dtype)
    x, W = ROW_STRIDE_CASES[case](x, W)
    check_against_reference(x, W, t, b, reduction="none")


@pytest.mark.parametrize("which", ["input", "linear_weight", "linear_bias"])
def test_misaligned_operands(rng, which):
    """float64 operands one byte off their alignment (e.g. from a packed record)."""
    x, W, b, t = make_problem(rng, lead=(9,), D=5, C=6)
    ops = {"input": x, "linear_weight": W, "linear_bias": b}
    a = ops[which]
    raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
    ops[which] = raw.view(a.dtype).reshape(a.shape)
    ops[which][...] = a
    assert not ops[which].flags.aligned
    check_against_reference(ops["input"], ops["linear_weight"], t, ops["linear_bias"],
                            softcap=4.0)


def test_negative_strides_and_readonly_inputs(rng):
    x, W, b, t = make_problem(rng, lead=(20,), D=7, C=11)
    x, W, b = x[::-1], W[::-1, ::-1], b[::-1]
    for a in (x, W, b, t):
        a.flags.writeable = False
    check_against_reference(x, W, t, b, softcap=4.0, reduction="sum")


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16"])
def test_half_precision_inputs_are_computed_in_float32(rng, dtype):
    if dtype == "bfloat16":
        if BFLOAT16 is None:
            pytest.skip("ml_dtypes not installed")
        dtype = BFLOAT16
    x, W, b, t = make_problem(rng, lead=(4, 8), D=10, C=17, dtype=F32)
    x, W, b = (a.astype(dtype) for a in (x, W, b))
    # the reference takes the half-precision values exactly (as_f64)
    loss, grads = check_against_reference(x, W, t, b, comp=F32, reduction="none", softcap=5.0)
    assert grads.input.shape == x.shape
    # mixed: half input, float32 weight
    check_against_reference(x, as_f64(W).astype(F32), t, b, comp=F32, reduction="mean")


def test_mixed_float32_and_float64_compute_in_float64(rng):
    x, W, b, t = make_problem(rng, dtype=F32)
    check_against_reference(x, W.astype(F64), t, b, comp=F64, reduction="mean")
    check_against_reference(x.astype(F64), W, t, None, comp=F64, reduction="none")


@pytest.mark.parametrize("tdtype", [np.int8, np.uint8, np.int32, np.uint16, np.int64, np.uint64])
def test_any_integer_target_dtype(rng, tdtype):
    x, W, b, t = make_problem(rng, C=23, ignore_frac=0)
    check_against_reference(x, W, t.astype(tdtype), b, reduction="sum")


def test_lists_are_accepted(rng):
    x, W, b, t = make_problem(rng, lead=(5,), D=3, C=4, ignore_frac=0)
    expected = ref_linear_cross_entropy(x, W, t, linear_bias=b)[0]
    loss = xent.linear_cross_entropy(x.tolist(), W.tolist(), t.tolist(), linear_bias=b.tolist())
    scaled_close(loss, expected, 1e-10, "loss")


# ---------------------------------------------------------------------------
# many blocks of rows
# ---------------------------------------------------------------------------


def _small_blocks(monkeypatch, C, itemsize, rows=16, n_buffers=1):
    """Shrink BLOCK_BYTES so that blocks hold `rows` rows of C classes."""
    monkeypatch.setattr(linear_module, "BLOCK_BYTES", rows * C * itemsize * n_buffers)
    assert linear_module.block_rows(C, itemsize) <= rows * n_buffers


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_many_blocks_match_the_unblocked_reference(rng, monkeypatch, dtype, softcap, kind):
    """Blocks of 16 rows over 150 rows (the last one partial): the loss sums every
    block and the weight and bias gradients accumulate across them."""
    C = 24
    x, W, b, t = make_problem(rng, lead=(150,), D=10, C=C, dtype=dtype, kind=kind)
    _small_blocks(monkeypatch, C, dtype.itemsize)
    opts = dict(weight=class_weights(C), label_smoothing=0.05, z_loss=0.01, softcap=softcap)
    for reduction in ("none", "mean", "sum"):
        check_against_reference(x, W, t, b, reduction=reduction, **opts)


def test_many_blocks_from_a_next_token_view(rng, monkeypatch):
    """Blocks of rows gathered from hidden[:, :-1], crossing the rows of the batch."""
    hidden, W, b, tokens = make_problem(rng, lead=(5, 41), D=8, C=20, dtype=F32)
    _small_blocks(monkeypatch, 20, 4)
    check_against_reference(hidden[:, :-1], W, tokens[:, 1:], b, reduction="mean", softcap=6.0)


def test_many_blocks_half_precision(rng, monkeypatch):
    x, W, b, t = make_problem(rng, lead=(3, 37), D=8, C=20, dtype=F32)
    x = x.astype(np.float16)
    _small_blocks(monkeypatch, 20, 4)
    check_against_reference(x, W, t, b, comp=F32, reduction="sum")


def test_blocking_does_not_change_the_result(rng, monkeypatch):
    """The same float64 call with one block and with ten agrees to rounding."""
    x, W, b, t = make_problem(rng, lead=(160,), D=10, C=16)
    whole = xent.linear_cross_entropy(x, W, t, linear_bias=b, return_grad=True, z_loss=0.01)
    _small_blocks(monkeypatch, 16, 8)
    blocked = xent.linear_cross_entropy(x, W, t, linear_bias=b, return_grad=True, z_loss=0.01)
    scaled_close(blocked[0], whole[0], 1e-13, "loss")
    for name, g, e in zip(GRAD_NAMES, blocked[1], whole[1]):
        scaled_close(g, e, 1e-13, name)


@pytest.mark.parametrize(
    "N, D, C",
    [(1, 5, 7), (3, 1, 9), (2, 4, 1), (20, 300, 2100), (17, 257, 1025), (3, 512, 2048)],
)
@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_shapes_at_the_edges_of_the_product_tiles(rng, dtype, layout, N, D, C):
    """One row, one feature, one class, and shapes past whole tiles of classes and
    features (products are cut into fixed tiles of classes and of features), with a
    row-major and a column-major weight."""
    x, W, b, t = make_problem(rng, lead=(N,), D=D, C=C, dtype=dtype)
    x *= 1 / np.sqrt(max(D, 1)) * 3  # logits ~N(0, 9) whatever D
    if layout == "F":
        W = np.asfortranarray(W)
    check_against_reference(x, W, t, b, reduction="sum", softcap=5.0, label_smoothing=0.1)


def _loss_alone_matches(x, W, t, b, rtol, **options):
    for reduction in ("none", "mean", "sum"):
        loss = xent.linear_cross_entropy(x, W, t, linear_bias=b, reduction=reduction, **options)
        expected = ref_linear_cross_entropy(x, W, t, linear_bias=b, reduction=reduction,
                                            **options)[0]
        scaled_close(np.asarray(loss), expected, rtol, f"loss alone, {reduction}")


@pytest.mark.parametrize("option", ["plain", "all", "ignore_index=3"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_loss_alone_over_many_rows_and_class_tiles(rng, dtype, option):
    """The loss alone of class indices is reduced from tiles of classes, about a
    thousand rows at a time: 1100 rows and 300 classes cross both."""
    N, D, C = 1100, 6, 300
    opts = _options(INDEX_OPTIONS[option], C, "mean")
    del opts["reduction"]
    x, W, b, t = make_problem(rng, lead=(N,), D=D, C=C, dtype=dtype,
                              ignore_index=opts.get("ignore_index", -100))
    t[:5] = C - 1 - np.arange(5)  # targets in the last, partial tile
    _loss_alone_matches(x, W, t, b, REF_RTOL[dtype], **opts)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_loss_alone_with_non_finite_rows_scattered(rng, dtype):
    """Rows with a non-finite logit (NaN or ±inf hidden states), kept and ignored,
    scattered over several steps of rows and tiles of classes; finite rows around
    them keep their values."""
    N, D, C = 1100, 6, 300
    x, W, b, t = make_problem(rng, lead=(N,), D=D, C=C, dtype=dtype, ignore_frac=0.1)
    up = np.arange(C) % 3 == 0  # the classes a +inf in x[:, 2] sends to +inf
    W[:, 2] = np.where(up, 1.0, -1.0)
    for row, value in ((3, np.nan), (515, np.inf), (1030, -np.inf), (1099, np.nan)):
        x[row, 2] = value
        t[row] = 0
    x[[40, 1050], 4] = np.nan
    t[[40, 1050]] = -100
    _loss_alone_matches(x, W, t, b, REF_RTOL[dtype], weight=class_weights(C), label_smoothing=0.1)
    loss = xent.linear_cross_entropy(x, W, t, linear_bias=b, reduction="none")
    assert np.isnan(loss[[3, 1099]]).all() and (loss[[40, 1050]] == 0).all()
    assert loss[515] == pytest.approx(np.log(up.sum()), rel=1e-6)


@pytest.mark.parametrize("which", ["+inf bias", "-inf bias", "nan bias", "-inf weight row"])
def test_loss_alone_with_a_non_finite_class(rng, which):
    """One class non-finite for every row, in the second tile of classes."""
    N, D, C = 30, 4, 1300
    x, W, b, t = make_problem(rng, lead=(N,), D=D, C=C, ignore_frac=0.2)
    x = np.abs(x) + 0.1
    k = 1200
    if which == "+inf bias":
        b[k] = np.inf
    elif which == "-inf bias":
        b[k] = -np.inf
    elif which == "nan bias":
        b[k] = np.nan
    else:
        W[k] = -np.inf
    t[:3] = k
    _loss_alone_matches(x, W, t, b, 1e-10)


def test_block_rows_contract():
    """Blocks are whole multiples of 16 rows, at least 16, within BLOCK_BYTES when
    16 rows fit, and never depend on anything but C and the itemsize."""
    for C in (1, 7, 1000, 32000, 128256, 10**7):
        for itemsize in (4, 8):
            r = linear_module.block_rows(C, itemsize)
            assert r >= 16 and r % 16 == 0
            if 16 * C * itemsize <= linear_module.BLOCK_BYTES:
                assert r * C * itemsize <= linear_module.BLOCK_BYTES


# ---------------------------------------------------------------------------
# non-finite values (SPEC: "Non-finite values follow one rule everywhere")
# ---------------------------------------------------------------------------


def _positive_problem(rng, n=6, D=5, C=7):
    """Positive hidden states, so that an infinite weight entry makes an infinite
    logit of its sign (never inf - inf)."""
    x = rng.random((n, D)) + 0.5
    W = rng.standard_normal((C, D))
    b = rng.standard_normal(C)
    t = rng.integers(0, C, n)
    return x, W, b, t


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_minus_inf_weight_row_is_a_class_of_probability_zero(rng, reduction):
    x, W, b, t = _positive_problem(rng)
    W[3] = -np.inf
    t[t == 3] = 0
    t[1] = 3  # the target is the impossible class: loss +inf for that row
    loss = xent.linear_cross_entropy(x, W, t, linear_bias=b, reduction=reduction)
    expected = ref_linear_cross_entropy(x, W, t, linear_bias=b, reduction=reduction)[0]
    if reduction == "none":
        assert loss[1] == np.inf
        assert np.isfinite(np.delete(loss, 1)).all()
    scaled_close(loss, expected, 1e-10, "loss")
    if reduction == "none":  # the other rows: the loss over the other classes alone
        keep = np.arange(7) != 3
        t2 = np.where(t > 3, t - 1, t)
        rows = np.arange(6) != 1
        sub = xent.linear_cross_entropy(x[rows], W[keep], t2[rows], linear_bias=b[keep],
                                        reduction="none")
        np.testing.assert_allclose(loss[rows], sub, rtol=1e-12)


def test_minus_inf_bias_is_a_class_of_probability_zero(rng):
    x, W, b, t = make_problem(rng, lead=(9,), C=8, ignore_frac=0)
    b[2] = -np.inf
    t[t == 2] = 1
    check_against_reference(x, W, t, b, reduction="none")


def test_plus_inf_logits_are_the_limit_of_equal_large_logits(rng):
    """A row with k classes at +inf (a +inf bias, or +inf weight entries on positive
    hidden states) has loss log k on those classes and +inf on the others."""
    x, W, b, t = _positive_problem(rng)
    b[[1, 4]] = np.inf
    t[:] = [1, 4, 0, 1, 2, 6]
    loss = xent.linear_cross_entropy(x, W, t, linear_bias=b, reduction="none")
    np.testing.assert_allclose(loss, [np.log(2), np.log(2), np.inf, np.log(2), np.inf, np.inf],
                               rtol=1e-12)
    x, W, b, t = _positive_problem(rng)
    W[5, 2] = np.inf
    t[:] = 5
    loss = xent.linear_cross_entropy(x, W, t, linear_bias=b, reduction="none")
    np.testing.assert_array_equal(loss, 0.0)  # one class at +inf: probability 1


def test_inf_in_hidden_state_row(rng):
    """+inf in one hidden entry: the row's logits are ±inf by the sign of that weight
    column; the loss is the limit (log k on the k classes at +inf)."""
    x, W, b, t = _positive_problem(rng)
    W[:, 2] = [1.0, -1.0, 2.0, -0.5, -3.0, 0.5, -1.0]  # classes 0, 2, 5 go to +inf
    x[3, 2] = np.inf
    t[3] = 2
    t[4] = 1
    loss = xent.linear_cross_entropy(x, W, t, linear_bias=b, reduction="none")
    assert loss[3] == pytest.approx(np.log(3), rel=1e-12)
    expected = ref_linear_cross_entropy(x, W, t, linear_bias=b, reduction="none")[0]
    scaled_close(loss, expected, 1e-10, "loss")
    x[3, 2] = -np.inf  # classes 1, 3, 4, 6 go to +inf; the target 2 has probability 0
    loss = xent.linear_cross_entropy(x, W, t, linear_bias=b, reduction="none")
    assert loss[3] == np.inf
    scaled_close(loss, ref_linear_cross_entropy(x, W, t, linear_bias=b, reduction="none")[0],
                 1e-10, "loss")


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_nan_hidden_state_makes_its_row_nan(rng, dtype):
    x, W, b, t = make_problem(rng, lead=(10,), D=6, C=9, dtype=dtype, ignore_frac=0)
    x[4, 3] = np.nan
    loss, grads = xent.linear_cross_entropy(x, W, t, linear_bias=b, reduction="none",
                                            return_grad=True)
    assert np.isnan(loss[4]) and np.isfinite(np.delete(loss, 4)).all()
    assert np.isnan(grads.input[4]).all()
    assert np.isfinite(np.delete(grads.input, 4, axis=0)).all()
    # every class's weight and bias gradient is computed from row 4
    assert np.isnan(grads.linear_bias).all()
    assert np.isnan(grads.linear_weight).any()
    # the reduced losses are NaN too
    assert np.isnan(xent.linear_cross_entropy(x, W, t, linear_bias=b, reduction="mean"))
    assert np.isnan(xent.linear_cross_entropy(x, W, t, linear_bias=b, reduction="sum"))


def test_nan_weight_or_bias_entry_makes_every_row_nan_but_ignored_ones(rng):
    x, W, b, t = make_problem(rng, lead=(8,), D=5, C=7, ignore_frac=0)
    t[[2, 5]] = -100
    Wn = W.copy()
    Wn[3, 1] = np.nan
    bn = b.copy()
    bn[6] = np.nan
    for W_, b_ in ((Wn, b), (W, bn)):
        loss = xent.linear_cross_entropy(x, W_, t, linear_bias=b_, reduction="none")
        assert (loss[[2, 5]] == 0).all()
        assert np.isnan(np.delete(loss, [2, 5])).all()


@pytest.mark.parametrize("what", ["nan", "inf", "-inf"])
def test_ignored_rows_contribute_nothing_whatever_they_hold(rng, what):
    """SPEC: ignored rows contribute exactly 0 to the loss and 0 to the gradient,
    whatever their logits hold, NaN included: here the ignored rows' hidden states
    are NaN/±inf, and every gradient (of the weight and the bias too) must equal
    the gradient of the call without those rows."""
    x, W, b, t = make_problem(rng, lead=(12,), D=6, C=9, ignore_frac=0)
    ignored = [3, 7]
    t[ignored] = -100
    x[ignored] = float(what)
    loss, grads = xent.linear_cross_entropy(x, W, t, linear_bias=b, reduction="none",
                                            return_grad=True)
    assert (loss[ignored] == 0).all()
    assert (grads.input[ignored] == 0).all()
    kept = np.setdiff1d(np.arange(12), ignored)
    e_loss, e_gx, e_gw, e_gb = ref_linear_cross_entropy(x[kept], W, t[kept], linear_bias=b,
                                                        reduction="none")
    scaled_close(loss[kept], e_loss, 1e-10, "loss")
    scaled_close(grads.input[kept], e_gx, 1e-10, "input")
    scaled_close(grads.linear_bias, e_gb, 1e-10, "linear_bias")
    scaled_close(grads.linear_weight, e_gw, 1e-10, "linear_weight")


def test_all_minus_inf_logits_row(rng):
    """A row whose logits are all -inf: logsumexp -inf, the loss NaN (SPEC)."""
    x, W, b, t = make_problem(rng, lead=(5,), D=4, C=6, ignore_frac=0)
    b2 = np.full(6, -np.inf)
    loss = xent.linear_cross_entropy(x, W, t, linear_bias=b2, reduction="none")
    expected = ref_linear_cross_entropy(x, W, t, linear_bias=b2, reduction="none")[0]
    scaled_close(loss, expected, 1e-12, "loss")
    assert np.isnan(loss).all()


def test_softcap_limits(rng):
    """With a softcap s, a +inf logit is s and a -inf logit is -s (a class of small
    but nonzero probability); the cap's derivative there is 0."""
    x, W, b, t = make_problem(rng, lead=(7,), D=5, C=6, ignore_frac=0)
    s = 3.0
    b[1], b[4] = np.inf, -np.inf
    t[:3] = 4
    loss, grads = check_against_reference(x, W, t, b, softcap=s, reduction="none")
    assert np.isfinite(loss).all()
    # the same as finite logits pinned at ±s
    z = s * np.tanh((x @ W.T + np.where(np.isfinite(b), b, 0.0)) / s)
    z[:, 1], z[:, 4] = s, -s
    np.testing.assert_allclose(loss, xent.cross_entropy(z, t, reduction="none"), rtol=1e-12)
    assert grads.linear_bias[1] == 0 and grads.linear_bias[4] == 0


@pytest.mark.parametrize("softcap", [1e-3, 0.5, 30.0, 1e6])
def test_softcap_sizes(rng, softcap):
    x, W, b, t = make_problem(rng, lead=(11,), D=6, C=9)
    check_against_reference(x, W, t, b, softcap=softcap, reduction="sum")


# ---------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_bitwise_identical_at_1_2_3_threads(rng, monkeypatch, dtype):
    """Several blocks of 32 rows, each big enough (32 × 1100 logits) for xent's kernels
    and the products to use threads.  C = 1100 and D = 260 are not multiples of any
    BLAS panel width (a BLAS that splits one product by thread count rounds the edges
    differently) and cross tiles of classes and of features."""
    C, rows = 1100, 32
    monkeypatch.setattr(linear_module, "BLOCK_BYTES", rows * C * dtype.itemsize)
    assert linear_module.block_rows(C, dtype.itemsize) == rows
    x, W, b, t = make_problem(rng, lead=(100,), D=260, C=C, dtype=dtype)
    x *= np.asarray(0.2, dtype)
    opts = dict(linear_bias=b, weight=class_weights(C), label_smoothing=0.1, z_loss=1e-3)

    def run():
        return (
            xent.linear_cross_entropy(x, W, t, reduction="none", **opts),
            xent.linear_cross_entropy(x, W, t, return_grad=True, softcap=5.0, **opts),
        )

    assert_same_bits_for_thread_counts(run, what="linear_cross_entropy")


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def _raises_untouched(exc, match, x, W, t, **kw):
    arrays = [a for a in (x, W, t, kw.get("linear_bias"), kw.get("weight"))
              if isinstance(a, np.ndarray)]
    saved = [a.copy() for a in arrays]
    with pytest.raises(exc, match=match):
        xent.linear_cross_entropy(x, W, t, **kw)
    for a, s in zip(arrays, saved):
        assert bitwise_equal(a, s), "an input was modified by a call that raised"


@pytest.fixture
def small(rng):
    return make_problem(rng, lead=(6,), D=4, C=5, ignore_frac=0)


def test_hidden_size_mismatch(small):
    x, W, b, t = small
    _raises_untouched(ValueError, r"\(6, 3\).*\(5, 4\)|\(5, 4\).*\(6, 3\)", x[:, :3], W, t,
                      linear_bias=b, return_grad=True)


@pytest.mark.parametrize("shape", [(20,), (5, 4, 1), ()])
def test_weight_not_2d(small, shape):
    x, W, b, t = small
    _raises_untouched(ValueError, "linear_weight", x, np.ones(shape), t)


@pytest.mark.parametrize("shape", [(4,), (6,), (1, 5), (5, 1)])
def test_bias_shape(small, shape):
    x, W, b, t = small
    _raises_untouched(ValueError, "linear_bias", x, W, t, linear_bias=np.ones(shape))


def test_scalar_input(small):
    _, W, b, t = small
    with pytest.raises(ValueError, match="input"):
        xent.linear_cross_entropy(np.float64(1.0), W, t)


@pytest.mark.parametrize("tshape", [(7,), (6, 1), (3, 2), ()])
def test_index_target_shape(small, tshape):
    x, W, b, t = small
    _raises_untouched(ValueError, "target", x, W, np.zeros(tshape, np.int64), linear_bias=b)


@pytest.mark.parametrize("tshape", [(6, 4), (6, 6), (5, 5), (6,)])
def test_probability_target_shape(small, tshape):
    x, W, b, t = small
    _raises_untouched(ValueError, "target", x, W, np.full(tshape, 0.2), linear_bias=b)


@pytest.mark.parametrize("bad", [5, 17, -1, -101])
def test_class_index_out_of_range(small, bad):
    x, W, b, t = small
    t = t.copy()
    t[4] = bad
    with pytest.raises(IndexError, match=str(bad)) as info:
        xent.linear_cross_entropy(x, W, t, linear_bias=b, return_grad=True)
    assert "4" in str(info.value)


def test_bad_index_raises_before_any_work(rng):
    """A bad class index in the last row of a problem whose logits would be 64 MiB:
    the error comes before a block of logits is allocated."""
    N, D, C = 2048, 4, 8192
    x = np.ones((N, D), F32)
    W = np.ones((C, D), F32)
    t = np.zeros(N, np.int64)
    t[-1] = C
    xent.linear_cross_entropy(x[:2], W[:16], t[:2])  # warm-up (lazy imports)

    def call():
        with pytest.raises(IndexError):
            xent.linear_cross_entropy(x, W, t, return_grad=True)

    peak = traced_peak(call)
    assert peak < 4 << 20, f"{peak / 2**20:.1f} MiB allocated before the error"


@pytest.mark.parametrize("which", ["input", "linear_weight", "linear_bias"])
def test_complex_operands_raise_type_error(small, which):
    x, W, b, t = small
    args = {"input": x, "linear_weight": W, "linear_bias": b}
    args[which] = args[which] + 0j
    _raises_untouched(TypeError, which, args["input"], args["linear_weight"], t,
                      linear_bias=args["linear_bias"])


@pytest.mark.parametrize("which", ["input", "linear_weight"])
def test_object_and_string_operands_raise_type_error(small, which):
    x, W, b, t = small
    for bad in (x.astype(object) if which == "input" else W.astype(object),
                np.full(x.shape if which == "input" else W.shape, "a")):
        args = {"input": x, "linear_weight": W}
        args[which] = bad
        with pytest.raises(TypeError, match=which):
            xent.linear_cross_entropy(args["input"], args["linear_weight"], t)


def test_complex_target_raises_type_error(small):
    x, W, b, t = small
    with pytest.raises(TypeError, match="target"):
        xent.linear_cross_entropy(x, W, t + 0j)


@pytest.mark.parametrize("softcap", [0, 0.0, -1.0, np.nan, np.inf, -np.inf])
def test_softcap_must_be_positive_and_finite(small, softcap):
    x, W, b, t = small
    _raises_untouched(ValueError, "softcap", x, W, t, linear_bias=b, softcap=softcap,
                      return_grad=True)


@pytest.mark.parametrize("softcap", ["3", 1j, [3.0]])
def test_softcap_must_be_a_number(small, softcap):
    x, W, b, t = small
    with pytest.raises(TypeError, match="softcap"):
        xent.linear_cross_entropy(x, W, t, softcap=softcap)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"reduction": "batchmean"}, ValueError, "reduction"),
        ({"label_smoothing": 1.5}, ValueError, "label_smoothing"),
        ({"label_smoothing": -0.1}, ValueError, "label_smoothing"),
        ({"z_loss": -1.0}, ValueError, "z_loss"),
        ({"weight": np.ones(4)}, ValueError, "weight"),
        ({"weight": np.ones((5, 1))}, ValueError, "weight"),
    ],
)
def test_other_arguments(small, kwargs, exc, match):
    x, W, b, t = small
    _raises_untouched(exc, match, x, W, t, linear_bias=b, return_grad=True, **kwargs)


# ---------------------------------------------------------------------------
# empty and degenerate shapes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("lead", [(0,), (3, 0), (0, 4)])
def test_zero_rows(dtype, lead):
    D, C = 4, 6
    x = np.zeros(lead + (D,), dtype)
    W = np.ones((C, D), dtype)
    b = np.ones(C, dtype)
    t = np.zeros(lead, np.int64)
    loss, grads = xent.linear_cross_entropy(x, W, t, linear_bias=b, return_grad=True)
    assert type(loss) is dtype.type and np.isnan(loss)
    s, grads_s = xent.linear_cross_entropy(x, W, t, linear_bias=b, reduction="sum",
                                           return_grad=True)
    assert type(s) is dtype.type and s == 0
    none = xent.linear_cross_entropy(x, W, t, linear_bias=b, reduction="none")
    assert none.shape == lead and none.dtype == dtype
    for g in (grads, grads_s):
        assert g.input.shape == x.shape and g.input.dtype == dtype
        assert g.linear_weight.shape == (C, D) and (g.linear_weight == 0).all()
        assert g.linear_bias.shape == (C,) and (g.linear_bias == 0).all()
    # probability targets
    loss = xent.linear_cross_entropy(x, W, np.zeros(lead + (C,), dtype), reduction="sum")
    assert loss == 0


def test_all_rows_ignored(rng):
    x, W, b, t = make_problem(rng, lead=(9,), C=5)
    t[:] = -100
    loss, grads = xent.linear_cross_entropy(x, W, t, linear_bias=b, return_grad=True, z_loss=0.1)
    assert np.isnan(loss)
    for g in grads:
        assert (g == 0).all()
    assert xent.linear_cross_entropy(x, W, t, linear_bias=b, reduction="sum") == 0


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_one_class(rng, dtype):
    x, W, b, t = make_problem(rng, lead=(13,), D=5, C=1, dtype=dtype)
    loss, _ = check_against_reference(x, W, t, b, reduction="none")
    assert (loss == 0).all()
    check_against_reference(x, W, t, b, reduction="mean", z_loss=0.1, softcap=2.0)


def test_zero_hidden_size_gives_the_bias_as_logits(rng):
    """D = 0: ``input @ linear_weight.T`` is an empty sum, 0 (as in NumPy and
    torch.nn.functional.linear), so the logits are the bias."""
    x, W, b, t = make_problem(rng, lead=(5,), D=0, C=4, ignore_frac=0)
    loss, grads = check_against_reference(x, W, t, b, reduction="none")
    np.testing.assert_allclose(loss, xent.cross_entropy(np.broadcast_to(b, (5, 4)), t,
                                                        reduction="none"), rtol=1e-12)
    assert grads.input.shape == (5, 0) and grads.linear_weight.shape == (4, 0)


def test_zero_class_weight_sum_mean_is_nan(rng):
    x, W, b, t = make_problem(rng, lead=(6,), C=4, ignore_frac=0)
    loss = xent.linear_cross_entropy(x, W, t, linear_bias=b, weight=np.zeros(4))
    assert np.isnan(loss)


# ---------------------------------------------------------------------------
# memory: logits that would be >= 1 GiB never exist
# ---------------------------------------------------------------------------

MiB = 1 << 20
BUDGET = 64 * MiB  # issue 19: "<= 64 MiB beyond inputs (and the gradients asked)"


@pytest.fixture(scope="module")
def one_gib_case():
    """N=8192, D=16, C=32768 float32: 1 GiB of logits (a small D keeps the products
    cheap; the cross-entropy of 2**28 logits is most of the time)."""
    rng = np.random.default_rng(7)
    N, D, C = 8192, 16, 32768
    x = rng.standard_normal((N, D), dtype=np.float32)
    W = rng.standard_normal((C, D), dtype=np.float32) * np.float32(0.2)
    t = rng.integers(0, C, N)
    t[::11] = -100
    assert N * C * 4 >= 1 << 30
    xent.linear_cross_entropy(x[:32], W[:64], t[:32] % 64, return_grad=True)  # warm-up
    return x, W, t


def test_guard_tracemalloc_sees_numpy_allocations():
    assert traced_peak(lambda: np.ones(8 * MiB, np.uint8).sum()) >= 8 * MiB


def test_memory_loss_only_with_gib_logits(one_gib_case):
    x, W, t = one_gib_case
    peak = traced_peak(lambda: xent.linear_cross_entropy(x, W, t))
    assert peak < BUDGET, f"loss only: traced peak {peak / MiB:.1f} MiB"


def test_memory_input_gradient_with_gib_logits(one_gib_case):
    x, W, t = one_gib_case
    peak = traced_peak(lambda: xent.linear_cross_entropy(x, W, t, return_grad=("input",)))
    assert peak < BUDGET + x.nbytes, f"input gradient: traced peak {peak / MiB:.1f} MiB"


_RSS_SCRIPT = """
import resource, sys
import numpy as np, xent
asked = {"loss": False, "input": ("input",)}[sys.argv[1]]
rng = np.random.default_rng(7)
N, D, C = 8192, 16, 32768
x = rng.standard_normal((N, D), dtype=np.float32)
W = rng.standard_normal((C, D), dtype=np.float32) * np.float32(0.2)
t = rng.integers(0, C, N)
xent.linear_cross_entropy(x[:600], W[:2100], t[:600] % 2100, return_grad=asked)  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
xent.linear_cross_entropy(x, W, t, return_grad=asked)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB (Linux)")
@pytest.mark.skipif(sanitizer_loaded() is not None,
                    reason="a sanitizer's shadow memory and quarantine count in the RSS")
@pytest.mark.parametrize("asked", ["loss", "input"])
def test_peak_rss_with_gib_logits(asked):
    """The process's peak RSS (which sees the C-level scratch that tracemalloc does
    not) grows by less than the budget (+ the 512 KiB input gradient) during a call
    whose logits would be 1 GiB; run in a process of its own so that the high-water
    mark starts at the inputs."""
    run = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, asked], capture_output=True,
                         text=True, env=os.environ.copy(), timeout=300)
    assert run.returncode == 0, run.stderr
    growth = int(run.stdout.split()[-1]) * 1024
    assert growth < BUDGET + (1 << 19), f"{asked}: peak RSS grew by {growth / MiB:.1f} MiB"


MEMORY_MODES = {"loss": False, "input grad": ("input",)}


@pytest.mark.parametrize("mode", list(MEMORY_MODES))
def test_memory_float16_hidden_states_wider_than_the_classes(mode):
    """SPEC: float16 inputs are converted tile by tile, scratch bounded whatever N and
    C.  D = 4096 > C = 256: a block of rows converted to float32 must not grow to the
    whole input (here 8192 rows, 128 MiB in float32), with or without gradients."""
    rng = np.random.default_rng(3)
    N, D, C = 8192, 4096, 256
    x = rng.standard_normal((N, D), dtype=np.float32).astype(np.float16)
    W = rng.standard_normal((C, D), dtype=np.float32) * np.float32(0.02)
    t = rng.integers(0, C, N)
    asked = MEMORY_MODES[mode]
    grad_bytes = N * D * 4 if asked else 0  # float32 gradient of a float16 input
    peak = traced_peak(lambda: xent.linear_cross_entropy(x, W, t, return_grad=asked))
    assert peak - grad_bytes < BUDGET, (
        f"float16 (8192, 4096) input, {mode}: traced peak {peak / MiB:.1f} MiB "
        f"beyond the {grad_bytes / MiB:.0f} MiB gradient")


@pytest.mark.parametrize("mode", list(MEMORY_MODES))
def test_memory_next_token_view_is_not_copied_whole(mode):
    """SPEC: hidden[:, :-1] is read without a whole copy (here 64 MiB of rows, C=64),
    with or without gradients."""
    rng = np.random.default_rng(4)
    hidden = rng.standard_normal((8, 1025, 2048), dtype=np.float32)
    W = rng.standard_normal((64, 2048), dtype=np.float32) * np.float32(0.02)
    tokens = rng.integers(0, 64, (8, 1025))
    view = hidden[:, :-1]
    asked = MEMORY_MODES[mode]
    grad_bytes = view.nbytes if asked else 0
    peak = traced_peak(lambda: xent.linear_cross_entropy(view, W, tokens[:, 1:],
                                                         return_grad=asked))
    assert peak - grad_bytes < view.nbytes // 2, (
        f"hidden[:, :-1] of {view.nbytes / MiB:.0f} MiB, {mode}: traced peak "
        f"{peak / MiB:.1f} MiB beyond the {grad_bytes / MiB:.0f} MiB gradient")
