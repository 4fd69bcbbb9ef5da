"""Checks and inputs shared by the xent tests: the dtype rules of the contract,
tolerances and comparisons against the float64 references (references.py), memory
layouts and random cases, and the thread-count determinism check."""

import gc
import re
import tracemalloc

import numpy as np
import pytest

import xent
from references import BFLOAT16, as_f64


# ---------------------------------------------------------------------------
# dtype rules of the contract
# ---------------------------------------------------------------------------


def computation_dtype(in_dtype):
    """The dtype xent computes in (and returns, without ``out=``) for an input dtype."""
    in_dtype = np.dtype(in_dtype)
    if BFLOAT16 is not None and in_dtype == BFLOAT16:
        return np.dtype(np.float32)
    if in_dtype.kind == "f":
        if in_dtype.itemsize <= 4:
            return np.dtype(np.float32)  # float16 and float32
        return np.dtype(np.float64)
    if in_dtype.kind in "iub":
        return np.dtype(np.float64)
    raise TypeError(f"no computation dtype for {in_dtype}")


def resolve_dtype(dtype):
    """np.dtype of a parametrized dtype; the string "bfloat16" is ml_dtypes.bfloat16,
    and the test is skipped when ml_dtypes is not installed."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        if BFLOAT16 is None:
            pytest.skip("ml_dtypes not installed")
        return BFLOAT16
    return np.dtype(dtype)


# ---------------------------------------------------------------------------
# comparison helpers
# ---------------------------------------------------------------------------


def finite_scale(x):
    """max(1, max |finite x|): the scale of absolute rounding errors of a result."""
    a = as_f64(x)
    f = a[np.isfinite(a)]
    return max(1.0, float(np.max(np.abs(f)))) if f.size else 1.0


def tolerances(kind, comp_dtype, out_dtype, scale):
    """(rtol, atol) for comparing a result of ``kind`` against the float64 reference.

    kind: "lse" | "log_softmax" | "softmax".  comp_dtype: the dtype xent computes in.
    out_dtype: the dtype of the result (may be narrower or wider than comp_dtype).
    scale: :func:`finite_scale` of the input.
    """
    comp_dtype = np.dtype(comp_dtype)
    out_dtype = np.dtype(out_dtype)
    if comp_dtype == np.float32:
        rtol, aunit = 2e-5, 1e-6
    else:
        rtol, aunit = 1e-12, 1e-13
    if kind == "softmax":
        # an absolute error d in log p is a relative error d in p
        rtol = max(rtol, 16 * float(np.finfo(comp_dtype).eps) * scale)
        atol = 4 * float(np.finfo(comp_dtype).smallest_normal)
    else:
        atol = aunit * scale
    if out_dtype.kind == "f" and out_dtype.itemsize < comp_dtype.itemsize:
        fo = np.finfo(out_dtype)
        rtol = max(rtol, float(fo.eps))
        atol = max(atol, float(fo.smallest_normal))
        if kind != "softmax":
            atol = max(atol, float(fo.eps) * scale)
    return rtol, atol


def assert_close(actual, expected, rtol, atol, err_msg=""):
    """Compare a result with a float64 reference, non-finite values included.

    NaN positions must agree exactly; infinities must agree exactly (a reference
    value that overflows the result's dtype counts as that infinity); the other
    values must be finite and within ``rtol``/``atol``.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape, err_msg)
    a = actual.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        exp_rounded = expected.astype(actual.dtype).astype(np.float64)
    np.testing.assert_array_equal(
        np.isnan(a), np.isnan(expected), err_msg=f"NaN positions differ {err_msg}"
    )
    infs = np.isinf(exp_rounded)
    np.testing.assert_array_equal(
        a[infs], exp_rounded[infs], err_msg=f"infinite values differ {err_msg}"
    )
    fin = ~np.isnan(expected) & ~infs
    assert np.isfinite(a[fin]).all(), f"non-finite result where a finite one is expected {err_msg}"
    np.testing.assert_allclose(a[fin], expected[fin], rtol=rtol, atol=atol, err_msg=err_msg)


def bitwise_equal(a, b):
    """True when two results have the same dtype, shape and bytes."""
    a = np.asarray(a)
    b = np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------------
# loss tolerances, layouts and cases
# ---------------------------------------------------------------------------

REDUCTIONS = ["none", "mean", "sum"]
SENTINEL = 1234.5  # what a grad_out holds before a call that must not write it


def loss_tol(comp_dtype, scale=1.0):
    """(rtol, atol) for a loss or gradient computed in ``comp_dtype`` vs float64."""
    comp_dtype = np.dtype(comp_dtype)
    scale = max(1.0, float(scale))
    if comp_dtype == np.float32:
        return 3e-5, 3e-6 * scale
    return 1e-11, 1e-12 * scale


def central_difference(f, x, h=1e-5):
    """Numerical gradient of the scalar function ``f`` at float64 ``x`` (central)."""
    x = np.array(x, dtype=np.float64)
    g = np.empty_like(x)
    flat = x.reshape(-1)
    gf = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = float(f(x))
        flat[i] = old - h
        fm = float(f(x))
        flat[i] = old
        gf[i] = (fp - fm) / (2 * h)
    return g


def with_layout(x, layout, readonly=False):
    """A copy of ``x`` with the requested memory layout (values unchanged).

    "C": C-contiguous; "F": Fortran order; "strided": every axis stepped by 2 and the
    first one reversed (negative stride), so neither C- nor F-contiguous (a 0-d
    array is just copied).
    """
    x = np.asarray(x)
    if layout == "C":
        y = np.array(x, order="C", copy=True)
    elif layout == "F":
        y = np.array(x, order="F", copy=True)
    elif layout == "strided" and x.ndim == 0:  # nothing to stride
        y = np.array(x, copy=True)
    elif layout == "strided":
        big = np.zeros(tuple(2 * s for s in x.shape), dtype=x.dtype)
        sl = (slice(None, None, -2),) + (slice(None, None, 2),) * (x.ndim - 1)
        y = big[sl]
        y[...] = x
    else:  # pragma: no cover
        raise ValueError(layout)
    if readonly:
        y.flags.writeable = False
    return y


def random_prob_targets(rng, shape, axis, zeros=True):
    """Random rows of a probability distribution along ``axis`` (some exact zeros)."""
    a = rng.random(shape) ** 2
    if zeros and a.size:
        a[rng.random(shape) < 0.15] = 0.0
    s = a.sum(axis=axis, keepdims=True)
    s[s == 0] = 1.0
    return a / s


def target_shape(shape, axis):
    axis = axis % len(shape)
    return tuple(s for i, s in enumerate(shape) if i != axis)


def ce_grad_scale(target, C, axis=-1, weight=None, ignore_index=-100, reduction="mean"):
    """An upper bound of the per-row coefficient K of the cross-entropy gradient.

    A gradient entry is K·(p_c - onehot_c) plus smoothing/z terms of the same size, so
    in float32 each entry carries an absolute rounding error of a few eps·K even where
    the exact value is (close to) 0; comparisons use max(max|grad|, K) as their scale.
    """
    target = np.asarray(target)
    wmax = 1.0 if weight is None else float(np.max(np.abs(as_f64(weight)))) if C else 1.0
    if reduction != "mean":
        return wmax
    if target.dtype.kind == "f":
        n = target.size // C if C else 0
        return wmax / n if n else wmax
    keep = target != ignore_index
    if not keep.any():
        return wmax
    w = np.ones(C) if weight is None else as_f64(weight)
    den = float(w[target[keep].astype(np.int64)].sum())
    return wmax / den if den else wmax


def make_case(rng, shape, axis, dtype, kind="index", ignore_frac=0.2, ignore_index=-100, scale=3.0):
    """Random logits of ``dtype`` and targets for them.

    kind "index": int64 class indices, about ``ignore_frac`` of them ``ignore_index``;
    kind "prob": rows of probabilities along ``axis`` (float32 for float16 logits).
    """
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    C = shape[axis]
    if kind == "index":
        t = rng.integers(0, C, size=target_shape(shape, axis)).astype(np.int64)
        if ignore_frac and t.size:
            t[rng.random(t.shape) < ignore_frac] = ignore_index
    else:
        t = random_prob_targets(rng, shape, axis).astype(dtype if dtype != np.float16 else np.float32)
    return x, t


def check_loss(res, expected, comp, scale, reduction, n_rows=1, err_msg=""):
    """Compare a loss: an array of ``comp`` for "none", else a ``comp`` scalar
    (whose absolute tolerance grows with the ``n_rows`` summed for "sum")."""
    comp = np.dtype(comp)
    rtol, atol = loss_tol(comp, scale)
    if reduction == "none":
        assert isinstance(res, np.ndarray), type(res)
        assert res.dtype == comp, (res.dtype, comp)
        assert_close(res, expected, rtol, atol, err_msg=err_msg)
    else:
        assert type(res) is comp.type, f"{type(res)} is not {comp.type} {err_msg}"
        if reduction == "sum":
            atol = atol * max(1, n_rows)
        assert_close(np.asarray(res), np.asarray(expected), rtol, atol, err_msg=err_msg)


def check_grad(g, expected, comp, scale, gscale=0.0, err_msg=""):
    """Compare a gradient; absolute errors scale with max(max|expected|, gscale)."""
    comp = np.dtype(comp)
    assert isinstance(g, np.ndarray)
    assert g.shape == expected.shape, (g.shape, expected.shape)
    e = np.asarray(expected)
    fin = np.isfinite(e)
    gmax = float(np.max(np.abs(e[fin]))) if fin.any() else 1.0
    gmax = max(gmax, gscale)
    rtol, atol = loss_tol(comp, scale)
    assert_close(g, expected, rtol, atol * max(gmax, 1e-300), err_msg=err_msg)


def sentinel(shape, dtype=np.float64):
    """A grad_out filled with SENTINEL."""
    return np.full(shape, SENTINEL, dtype=dtype)


def assert_untouched(g, *pairs):
    """After a call that raised: ``g`` (unless None) still all SENTINEL, and each
    ``(array, saved copy)`` pair bitwise unchanged."""
    if g is not None:
        assert bitwise_equal(g, np.full(g.shape, SENTINEL, dtype=g.dtype)), "grad_out was written"
    for a, saved in pairs:
        assert bitwise_equal(a, saved), "an input was modified by a call that raised"


def pos_pattern(index_tuple, flat):
    """Regex for a position in an error message: the index tuple as ``(i, j)`` or
    ``[i, j]``, or the flat index."""
    tup = ", ".join(str(i) for i in index_tuple)
    pats = [re.escape(f"({tup})"), re.escape(f"[{tup}]"), rf"\b{flat}\b"]
    if len(index_tuple) == 1:
        pats.append(re.escape(f"({index_tuple[0]},)"))
    return "|".join(pats)


# ---------------------------------------------------------------------------
# thread-count determinism
# ---------------------------------------------------------------------------


def _leaves(result):
    """The arrays and numbers of a result, in order: tuples, lists and dicts (keys
    and values) are walked, the rest is one leaf."""
    if isinstance(result, (tuple, list)):
        return [leaf for item in result for leaf in _leaves(item)]
    if isinstance(result, dict):
        return [leaf for key, value in result.items() for leaf in _leaves((key, value))]
    return [result]


def assert_same_bits_for_thread_counts(call, counts=(1, 2, 3), what="call"):
    """Run ``call()`` with xent set to each thread count and assert that every result
    has the bits of the first count's (the SPEC: results never depend on the thread
    count).  Tuples, lists and dicts are compared item by item.  The thread count is
    restored; the first count's result is returned."""
    previous = xent.get_num_threads()
    try:
        results = []
        for n in counts:
            xent.set_num_threads(n)
            results.append(call())
    finally:
        xent.set_num_threads(previous)
    first = _leaves(results[0])
    for n, result in zip(counts[1:], results[1:]):
        leaves = _leaves(result)
        assert len(leaves) == len(first), f"{what}: {counts[0]} and {n} threads differ"
        for i, (a, b) in enumerate(zip(first, leaves)):
            assert bitwise_equal(a, b), (
                f"{what}: {counts[0]} and {n} threads differ (result leaf {i} of {len(first)})"
            )
    return results[0]


# ---------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------


def traced_peak(fn):
    """Bytes of traced memory allocated at the peak of ``fn()`` (above the start):
    NumPy reports its data allocations to tracemalloc, so this bounds every NumPy
    temporary of the call."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak - base


def sanitizer_loaded():
    """The name of a sanitizer runtime loaded into this process (a .ci/sanitizers.sh
    run), or None: its shadow memory and quarantine make RSS measurements meaningless."""
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
            maps = f.read()
    except OSError:
        return None
    for runtime in ("libasan", "libubsan", "libtsan"):
        if runtime in maps:
            return runtime
    return None
