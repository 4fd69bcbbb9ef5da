"""xent.linear_cross_entropy with ``return_grad=("input",)`` and class-index targets:
the online-softmax path (``_Job.online_input``, linear.pxi's
``linear_online_input_grad``): per row tile a running max, sum of exps and accumulator
of ``exp(z - m)·W``, two products and no whole row of logits (issue 19, "loss +
gradient of input only").

Each test asserts that the call went that way (a counter on ``_Job.online_input``),
shrinks the row tiles so that several row tiles (and, with C = 100, four class tiles)
are used, and compares with the float64 reference of references.py; non-finite rows,
which the path hands to the whole-row path, are compared with that path's results and
the reference's non-finite positions.
"""

import numpy as np
import pytest

import xent
import xent._api.linear as linear_module
import xent._api.multiclass  # noqa: F401  (the module the reference's options mirror)
from helpers import assert_same_bits_for_thread_counts, bitwise_equal
from references import ref_linear_cross_entropy
from test_linear_cross_entropy import (
    F32,
    F64,
    INDEX_OPTIONS,
    REF_RTOL,
    _options,
    class_weights,
    make_problem,
    scaled_close,
)


@pytest.fixture
def online(monkeypatch):
    """Small row tiles (16 rows) and a count of the calls that take the online path."""
    monkeypatch.setattr(linear_module, "_ONLINE_ROWS_MIN", 16)
    monkeypatch.setattr(linear_module, "_ONLINE_ROWS_MAX", 16)
    calls = []
    original = linear_module._Job.online_input

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(linear_module._Job, "online_input", counted)
    return calls


def _input_grad(x, W, t, b=None, **options):
    loss, grads = xent.linear_cross_entropy(x, W, t, linear_bias=b, return_grad=("input",),
                                            **options)
    assert grads.linear_weight is None and grads.linear_bias is None
    return loss, grads.input


def _whole_rows(monkeypatch, x, W, t, b=None, **options):
    with monkeypatch.context() as m:
        m.setattr(linear_module, "ONLINE_INPUT_GRAD", False)
        return _input_grad(x, W, t, b, **options)


def _check(x, W, t, b, comp, **options):
    loss, gx = _input_grad(x, W, t, b, **options)
    e_loss, e_gx, _, _ = ref_linear_cross_entropy(x, W, t, linear_bias=b, **options)
    rtol = REF_RTOL[comp]
    assert gx.dtype == comp and gx.shape == np.shape(x)
    scaled_close(loss, e_loss, rtol, "loss")
    scaled_close(gx, e_gx, rtol, "input gradient")
    return loss, gx


# ---------------------------------------------------------------------------
# which calls go the online way
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "asked, prob, softcap, eps, path",
    [
        (("input",), False, None, 0.0, "online"),
        (("input",), False, 3.0, 0.0, "online"),
        (("input",), False, None, 0.1, "online"),
        (("input",), False, 3.0, 0.1, "whole_rows"),  # the cap's chain rule varies along the row
        (("input",), True, None, 0.0, "whole_rows"),
        (("input", "linear_bias"), False, None, 0.0, "whole_rows"),
        (("input", "linear_weight", "linear_bias"), False, None, 0.0, "whole_rows"),
        ((), False, None, 0.0, "class_tiles"),
        ((), True, None, 0.0, "whole_rows"),
    ],
)
def test_input_grad_path(asked, prob, softcap, eps, path):
    assert linear_module.input_grad_path(asked, prob, softcap, eps) == path


def test_the_online_path_is_taken_and_can_be_switched_off(rng, online, monkeypatch):
    x, W, b, t = make_problem(rng, lead=(40,), D=8, C=30)
    _input_grad(x, W, t, b)
    assert len(online) == 1
    _input_grad(x, W, t, b, softcap=3.0, label_smoothing=0.1)  # whole rows
    xent.linear_cross_entropy(x, W, t, linear_bias=b, return_grad=True)
    assert len(online) == 1
    _whole_rows(monkeypatch, x, W, t, b)
    assert len(online) == 1


def test_row_tile_heights():
    tile = linear_module.online_row_tile
    assert tile(2048, 32000, 1024, 4) == 1024
    assert tile(1024, 128256, 2048, 4) == 512
    assert tile(100, 10, 10, 4) == linear_module._ONLINE_ROWS_MIN
    for n in (1, 17, 600, 5000, 10**6):
        for C, D, itemsize in ((32000, 1024, 4), (128256, 2048, 8), (10, 100000, 8)):
            h = tile(n, C, D, itemsize)
            assert h % 16 == 0 and h >= 16
            # two threads' scratch within the budget
            per_row = (int(linear_module._kernels.linear_class_tile(C)) + D) * itemsize
            assert h == 16 or 2 * h * per_row <= (linear_module.BLOCK_BYTES
                                                  - linear_module._ONLINE_COPY_BYTES)


# ---------------------------------------------------------------------------
# values against the float64 reference
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("option", list(INDEX_OPTIONS))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_every_option_matches_reference(rng, online, dtype, reduction, option, bias):
    """75 rows (five tiles of 16, the last partial), 100 classes (four class tiles)."""
    opts = _options(INDEX_OPTIONS[option], 100, reduction)
    x, W, b, t = make_problem(rng, lead=(75,), D=12, C=100, dtype=dtype, bias=bias,
                              ignore_index=opts.get("ignore_index", -100))
    if option == "all":  # a softcap with smoothing goes the whole-row way: drop one
        opts.pop("label_smoothing")
    _check(x, W, t, b, dtype, **opts)
    assert len(online) == 1


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_weights_smoothing_z_loss_together(rng, online, reduction):
    x, W, b, t = make_problem(rng, lead=(50,), D=10, C=100, dtype=F32)
    _check(x, W, t, b, F32, weight=class_weights(100), label_smoothing=0.2, z_loss=0.01,
           reduction=reduction)
    assert len(online) == 1


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_all_rows_ignored(rng, online, reduction):
    x, W, b, t = make_problem(rng, lead=(40,), D=6, C=30, ignore_frac=0)
    t[:] = -100
    loss, gx = _input_grad(x, W, t, b, reduction=reduction, z_loss=0.1)
    if reduction == "mean":
        assert np.isnan(loss)  # 0/0
    else:
        assert (np.asarray(loss) == 0).all()
    assert (gx == 0).all()
    assert len(online) == 1


def test_leading_shape_and_next_token_view(rng, online, monkeypatch):
    """hidden[:, :-1] is not one strided matrix: gathered in blocks of whole row tiles
    (blocks shrunk here so that there are several)."""
    monkeypatch.setattr(linear_module, "_ONLINE_COPY_BYTES", 16 * 12 * 8 * 2)
    rng_x = rng.standard_normal((4, 21, 12))
    W = rng.standard_normal((50, 12))
    t = rng.integers(0, 50, (4, 21))
    _check(rng_x[:, :-1], W, t[:, 1:], None, F64)
    _check(rng_x[:, :-1].astype(F32), W.astype(F32), t[:, 1:], None, F32, z_loss=1e-3)
    assert len(online) == 2


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_fortran_weight_and_mixed_dtypes(rng, online, dtype):
    x, W, b, t = make_problem(rng, lead=(40,), D=9, C=70, dtype=dtype)
    _check(x, np.asfortranarray(W), t, b, dtype, label_smoothing=0.1)
    _check(x.astype(F32), W.astype(F64), t, b, F64)  # computed in float64
    assert len(online) == 2


def test_row_factors_of_the_backward_of_reduction_none(rng, online):
    """grad_row_scale (xent.torch's backward of "none"): each row's gradient times its
    factor; an ignored row stays 0."""
    x, W, b, t = make_problem(rng, lead=(45,), D=7, C=40)
    f = rng.standard_normal(45)
    for softcap in (None, 2.0):
        _, (gx, _, _) = linear_module._linear_cross_entropy(
            x, W, t, linear_bias=b, reduction="none", softcap=softcap, z_loss=0.01,
            return_grad=("input",), grad_row_scale=f)
        _, e_gx, _, _ = ref_linear_cross_entropy(x, W, t, linear_bias=b, reduction="none",
                                                 softcap=softcap, z_loss=0.01)
        scaled_close(gx, e_gx * f[:, None], 1e-10, "input gradient")
    assert len(online) == 2


# ---------------------------------------------------------------------------
# non-finite rows: handed to the whole-row path
# ---------------------------------------------------------------------------


def _same_as_whole_rows(monkeypatch, x, W, t, b=None, **options):
    loss, gx = _input_grad(x, W, t, b, **options)
    e_loss, e_gx = _whole_rows(monkeypatch, x, W, t, b, **options)
    scaled_close(loss, e_loss, 1e-10, "loss")
    scaled_close(gx, e_gx, 1e-10, "input gradient")
    return loss, gx


@pytest.mark.parametrize("where", ["nan input", "+inf input", "-inf input", "+inf bias",
                                   "-inf bias", "nan bias", "nan weight", "-inf weight row",
                                   "inf weight"])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1, "z_loss": 0.01},
                                     {"softcap": 3.0}], ids=["plain", "smoothing", "softcap"])
def test_non_finite_operands(rng, online, monkeypatch, where, options):
    x, W, b, t = make_problem(rng, lead=(40,), D=6, C=50)
    t[[5, 33]] = -100
    t[20] = 7
    what, operand = where.split(" ", 1)
    v = float(what)
    if operand == "input":
        x[[3, 20, 33], 2] = v  # two rows tiles, and an ignored row
    elif operand == "bias":
        b[[7, 41]] = v
    elif operand == "weight row":
        W[7] = v
    else:
        W[41, 3] = v
    for red in ("none", "mean"):
        loss, gx = _same_as_whole_rows(monkeypatch, x, W, t, b, reduction=red, **options)
        e_loss = ref_linear_cross_entropy(x, W, t, linear_bias=b, reduction=red, **options)[0]
        scaled_close(loss, e_loss, 1e-10, "loss")
    assert len(online) == 2


@pytest.mark.parametrize("what", ["nan", "inf", "-inf"])
def test_ignored_rows_are_zero_whatever_they_hold(rng, online, what):
    x, W, b, t = make_problem(rng, lead=(40,), D=6, C=50, ignore_frac=0)
    ignored = [3, 17, 30]
    t[ignored] = -100
    x[ignored] = float(what)
    loss, gx = _input_grad(x, W, t, b, reduction="none", label_smoothing=0.1)
    assert (loss[ignored] == 0).all() and (gx[ignored] == 0).all()
    kept = np.setdiff1d(np.arange(40), ignored)
    e_loss, e_gx, _, _ = ref_linear_cross_entropy(x[kept], W, t[kept], linear_bias=b,
                                                  reduction="none", label_smoothing=0.1)
    scaled_close(loss[kept], e_loss, 1e-10, "loss")
    scaled_close(gx[kept], e_gx, 1e-10, "input gradient")


def test_large_logits_rescale_the_accumulator(rng, online):
    """Logits of hundreds: each class tile raises the running max of many rows, so
    the accumulator is rescaled by exp(m_old - m_new) tile after tile."""
    x, W, b, t = make_problem(rng, lead=(40,), D=6, C=100, ignore_frac=0)
    W *= np.linspace(1, 40, 100)[:, None]  # later classes larger
    _check(x, W, t, None, F64, z_loss=1e-4)
    _check(x.astype(F32), W.astype(F32), t, None, F32)


# ---------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_bitwise_identical_at_1_2_3_threads(rng, online, monkeypatch, dtype):
    """Seven row tiles of 16 and a partial one; C = 1100 and D = 260 cross class tiles
    and are not multiples of any BLAS panel width."""
    x, W, b, t = make_problem(rng, lead=(120,), D=260, C=1100, dtype=dtype)
    x *= np.asarray(0.2, dtype)
    opts = dict(linear_bias=b, weight=class_weights(1100), label_smoothing=0.1, z_loss=1e-3)

    def run():
        return (
            xent.linear_cross_entropy(x, W, t, return_grad=("input",), **opts),
            xent.linear_cross_entropy(x, W, t, return_grad=("input",), softcap=5.0,
                                      reduction="none", linear_bias=b),
        )

    first = assert_same_bits_for_thread_counts(run, what="online input gradient")
    assert len(online) == 6
    e_loss, e_gx, _, _ = ref_linear_cross_entropy(x, W, t, **opts)
    scaled_close(first[0][0], e_loss, REF_RTOL[dtype], "loss")
    scaled_close(first[0][1].input, e_gx, REF_RTOL[dtype], "input gradient")
    assert bitwise_equal(first[0][1].input, run()[0][1].input)
