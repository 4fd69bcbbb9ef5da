"""Every path through the normalisers and cross_entropy, on both sides of its thresholds.

The shapes are built from the thresholds the extension exports
(``kernels.THRESHOLDS``), and ``kernels.normalize_path`` /
``kernels.cross_entropy_path`` (the kernels' own choice, not a copy of it) say
which path the call takes; each result is checked against a float64 NumPy
reference.  A threshold that moves keeps these tests on both sides of it.
"""

import numpy as np
import pytest

import xent
from xent._api.validation import float_kind, index_storage, input_3d
from xent._runtime.dispatch import kernels

T = kernels.THRESHOLDS
SMALL_C, MIN_BLOCK, TILE_ROWS = T["SMALL_C"], T["MIN_BLOCK"], T["TILE_ROWS"]
# float32 rows longer than this are too long for 4 in a re-reading row batch
LONG_ROW = T["ROW_BATCH_BYTES"] // (4 * 4)
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}

OPS = {
    "logsumexp": (kernels.LOGSUMEXP, xent.logsumexp),
    "log_softmax": (kernels.LOG_SOFTMAX, xent.log_softmax),
    "softmax": (kernels.SOFTMAX, xent.softmax),
}


def _reference(name, x, axis):
    x = x.astype(np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    lse = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    if name == "logsumexp":
        return np.squeeze(lse, axis=axis)
    if name == "log_softmax":
        return x - lse
    return np.exp(x - lse)


def _normalize_path(name, x, axis):
    """The path normalize takes for xent.<name>(x, axis), with the 3-D views
    the Python layer passes it."""
    op = OPS[name][0]
    ax = axis % x.ndim
    x3 = input_3d(x, ax)
    shape = (x3.shape[0], x3.shape[2]) if name == "logsumexp" else x3.shape
    return kernels.normalize_path(op=op, x=x3, xkind=float_kind(x), out=np.empty(shape, x.dtype))


# (shape, axis, dtype, op names, expected path); x is C-contiguous unless sliced
NORMALIZE_CASES = [
    ((2 * MIN_BLOCK, SMALL_C), -1, np.float32, OPS, "tiles"),
    ((2 * MIN_BLOCK, 1), -1, np.float64, OPS, "tiles"),
    ((2 * MIN_BLOCK, SMALL_C + 1), -1, np.float32, OPS, "row_batches"),
    ((2 * MIN_BLOCK - 1, SMALL_C), -1, np.float64, OPS, "row_batches"),
    ((3, LONG_ROW), -1, np.float32, OPS, "row_batches"),
    ((3, LONG_ROW + 1), -1, np.float32, ("log_softmax", "softmax"), "rows"),
    ((3, LONG_ROW + 1), -1, np.float32, ("logsumexp",), "row_batches"),
    ((2, 5, 7), 1, np.float32, OPS, "blocks"),
    ((2, 2 * MIN_BLOCK, 3), 1, np.float64, OPS, "blocks"),
    ((1, T["SPLIT_MIN"]), -1, np.float32, OPS, "split"),
    ((1, T["SPLIT_MIN"] - 1), -1, np.float32, ("logsumexp",), "row_batches"),
]


@pytest.mark.parametrize("shape, axis, dtype, names, path", NORMALIZE_CASES)
def test_normalizer_paths(shape, axis, dtype, names, path):
    x = (np.random.default_rng(0).standard_normal(shape) * 4).astype(dtype)
    for name in names:
        assert _normalize_path(name, x, axis) == path, name
        got = OPS[name][1](x, axis=axis)
        np.testing.assert_allclose(got, _reference(name, x, axis), **TOL[dtype], err_msg=name)


@pytest.mark.parametrize("name", list(OPS))
def test_strided_rows_take_the_row_path(name):
    x = np.random.default_rng(1).standard_normal((2 * MIN_BLOCK, 2 * SMALL_C)).astype(np.float32)
    xs = x[:, ::2]  # class stride 2: no typed path reads it in place
    assert _normalize_path(name, xs, -1) == "rows"
    np.testing.assert_allclose(OPS[name][1](xs), _reference(name, xs, -1), **TOL[np.float32])


def _ce_path(x, t, axis, return_grad=False, label_smoothing=0.0):
    """The path cross_entropy takes for xent.cross_entropy(x, t, axis=axis, ...)."""
    ax = axis % x.ndim
    x3 = input_3d(x, ax)
    if t.dtype.kind == "f":
        t3, code, prob = input_3d(t, ax), float_kind(t), True
    else:
        t, code = index_storage(t)
        t3, prob = input_3d(np.expand_dims(t, ax), ax), False
    return kernels.cross_entropy_path(
        x3, t3, xkind=float_kind(x), tcode=code, prob=prob, eps=label_smoothing,
        grad=np.empty(x3.shape, x.dtype) if return_grad else None,
    )


def _ce_reference(x, t, axis):
    """Per-row cross-entropy (class indices) and its gradient of the sum, in float64."""
    logp = _reference("log_softmax", x, axis)
    loss = -np.squeeze(np.take_along_axis(logp, np.expand_dims(t, axis), axis), axis=axis)
    onehot = np.zeros_like(logp)
    np.put_along_axis(onehot, np.expand_dims(t, axis), 1.0, axis)
    return loss, np.exp(logp) - onehot


# (shape, axis, dtype, return_grad, expected path)
CE_CASES = [
    ((2 * MIN_BLOCK, SMALL_C), -1, np.float32, False, "tiles"),
    ((TILE_ROWS + 1, SMALL_C), -1, np.float64, True, "tiles"),
    ((2 * MIN_BLOCK, SMALL_C + 1), -1, np.float32, False, "row_batches"),
    ((2 * MIN_BLOCK - 1, SMALL_C), -1, np.float32, True, "row_batches"),
    ((3, LONG_ROW), -1, np.float32, True, "row_batches"),
    ((3, LONG_ROW + 1), -1, np.float32, True, "rows"),
    ((3, LONG_ROW + 1), -1, np.float32, False, "row_batches"),
    ((2, 5, 7), 1, np.float32, True, "blocks"),
    ((2, SMALL_C + 1, 2 * MIN_BLOCK), 1, np.float64, False, "blocks"),
]


@pytest.mark.parametrize("shape, axis, dtype, return_grad, path", CE_CASES)
def test_cross_entropy_paths(shape, axis, dtype, return_grad, path):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    C = shape[axis]
    t = rng.integers(0, C, np.delete(shape, axis % len(shape)))
    assert _ce_path(x, t, axis, return_grad) == path
    loss, grad = _ce_reference(x, t, axis)
    got = xent.cross_entropy(x, t, axis=axis, reduction="none", return_grad=return_grad)
    if return_grad:
        got, got_grad = got
        np.testing.assert_allclose(got_grad, grad, **TOL[dtype])
    np.testing.assert_allclose(got, loss, **TOL[dtype])
    # "mean" (the small-call path where it applies): the same rows, summed
    mean = xent.cross_entropy(x, t, axis=axis)
    np.testing.assert_allclose(mean, loss.mean(), **TOL[dtype])


def test_cross_entropy_probability_targets_take_the_row_path():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2 * MIN_BLOCK, SMALL_C)).astype(np.float32)
    y = rng.dirichlet(np.ones(SMALL_C), 2 * MIN_BLOCK).astype(np.float32)
    assert _ce_path(x, y, -1) == "rows"
    ref = -np.sum(y * _reference("log_softmax", x, -1), axis=-1)
    np.testing.assert_allclose(xent.cross_entropy(x, y, reduction="none"), ref, **TOL[np.float32])


def test_label_smoothing_keeps_float16_rows_out_of_batches():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2 * MIN_BLOCK, SMALL_C + 1)).astype(np.float16)
    t = rng.integers(0, SMALL_C + 1, 2 * MIN_BLOCK)
    assert _ce_path(x, t, -1) == "row_batches"
    assert _ce_path(x, t, -1, label_smoothing=0.1) == "rows"
    loss, _ = _ce_reference(x, t, -1)
    np.testing.assert_allclose(xent.cross_entropy(x, t, reduction="none"), loss, rtol=2e-5,
                               atol=2e-5)


def test_path_names_are_the_exported_ones():
    assert set(kernels.NORMALIZE_PATHS) == {"rows", "row_batches", "tiles", "blocks", "split"}
    assert set(kernels.CROSS_ENTROPY_PATHS) == {"rows", "row_batches", "tiles", "blocks"}
    assert {c[-1] for c in NORMALIZE_CASES} == set(kernels.NORMALIZE_PATHS)
    assert {c[-1] for c in CE_CASES} | {"rows"} == set(kernels.CROSS_ENTROPY_PATHS)
