"""Shared fixtures and independent float64 references for the xent test suite.

The references here are written with plain float64 NumPy and implement the
non-finite rules of SPEC.md ("Conventions shared by every function") on their own,
so that a test compares xent against something that is *not* xent:

* a ``-inf`` logit is a class of probability 0;
* a row with ``k`` ``+inf`` entries has softmax ``1/k`` on them and 0 elsewhere,
  log-softmax ``-log k`` on them and ``-inf`` elsewhere, and logsumexp ``+inf``;
* a NaN anywhere in a row makes everything computed from that row NaN;
* a row whose entries are all ``-inf`` has logsumexp ``-inf`` and NaN
  softmax/log-softmax;
* an empty class axis has logsumexp ``-inf`` (and empty softmax/log-softmax).

Finite rows use the max-shift with ``log1p`` of the sum of the non-maximal terms,
so that the reference stays accurate when ``logsumexp`` is close to the maximum.
"""

import os

import numpy as np
import pytest

# Thread-count tests ask for exact teams: xent's default leaves CPUs that other
# processes keep busy to them (_threading.py), which on a busy CI machine would
# quietly turn "two threads" into one.  The test that checks that adjustment
# turns it back on in a subprocess of its own.
os.environ.setdefault("XENT_DYNAMIC_THREADS", "0")

import xent  # noqa: E402

try:  # optional dtype; tests that need it skip when it is missing
    import ml_dtypes  # noqa: F401

    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    BFLOAT16 = None


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
# float64 references
# ---------------------------------------------------------------------------


def as_f64(x):
    """float64 copy of ``x`` (bfloat16 through float32, which NumPy can convert)."""
    x = np.asarray(x)
    if BFLOAT16 is not None and x.dtype == BFLOAT16:
        return x.astype(np.float32).astype(np.float64)
    return x.astype(np.float64)


def _rows_last(x, axis):
    """float64 copy of ``x`` with the class axis moved last (axis=None: flattened)."""
    a = as_f64(x)
    if axis is None:
        return a.reshape(1, -1)
    return np.moveaxis(a, axis, -1)


def _core_lastaxis(a):
    """Return (lse, log_softmax, softmax) over the last axis of float64 ``a``."""
    shape = a.shape
    C = shape[-1]
    n = int(np.prod(shape[:-1], dtype=np.int64))
    rows = a.reshape(n, C)
    lse = np.empty(n)
    lsm = np.empty((n, C))
    sm = np.empty((n, C))
    if C == 0:
        lse[:] = -np.inf
        return lse.reshape(shape[:-1]), lsm.reshape(shape), sm.reshape(shape)
    with np.errstate(all="ignore"):
        nan_row = np.isnan(rows).any(axis=1)
        pos = rows == np.inf
        k = pos.sum(axis=1)
        all_neg = (rows == -np.inf).all(axis=1)
        inf_row = ~nan_row & (k > 0)
        dead_row = ~nan_row & ~inf_row & all_neg
        reg = ~nan_row & ~inf_row & ~dead_row

        # NaN anywhere in the row: everything NaN
        lse[nan_row] = np.nan
        lsm[nan_row] = np.nan
        sm[nan_row] = np.nan

        # k entries of +inf: the limit of k equal, arbitrarily large logits
        kk = k[inf_row][:, None].astype(np.float64)
        p = pos[inf_row]
        lse[inf_row] = np.inf
        lsm[inf_row] = np.where(p, -np.log(kk), -np.inf)
        sm[inf_row] = np.where(p, 1.0 / kk, 0.0)

        # every class has probability zero
        lse[dead_row] = -np.inf
        lsm[dead_row] = np.nan
        sm[dead_row] = np.nan

        # finite maximum: shift by it, log1p of the non-maximal terms
        r = rows[reg]
        idx = np.arange(r.shape[0])
        j = np.argmax(r, axis=1)
        m = r[idx, j]
        z = np.exp(r - m[:, None])  # exp(-inf) == 0 for the -inf classes
        z[idx, j] = 0.0
        rest = z.sum(axis=1)  # pairwise summation
        log_s = np.log1p(rest)
        lse[reg] = m + log_s
        lsm[reg] = (r - m[:, None]) - log_s[:, None]
        z[idx, j] = 1.0
        sm[reg] = z / (1.0 + rest)[:, None]
    return lse.reshape(shape[:-1]), lsm.reshape(shape), sm.reshape(shape)


def ref_logsumexp(x, axis=-1, keepdims=False):
    """float64 reference for ``xent.logsumexp`` (independent of xent)."""
    xa = np.asarray(x)
    a = _rows_last(xa, axis)
    lse, _, _ = _core_lastaxis(a)
    if axis is None:
        if keepdims:
            return lse.reshape((1,) * xa.ndim)
        return np.float64(lse.reshape(()))
    if keepdims:
        return np.expand_dims(lse, axis)
    return lse


def ref_log_softmax(x, axis=-1):
    """float64 reference for ``xent.log_softmax`` (independent of xent)."""
    xa = np.asarray(x)
    a = _rows_last(xa, axis)
    _, lsm, _ = _core_lastaxis(a)
    if axis is None:
        return lsm.reshape(xa.shape)
    return np.moveaxis(lsm, -1, axis)


def ref_softmax(x, axis=-1):
    """float64 reference for ``xent.softmax`` (independent of xent)."""
    xa = np.asarray(x)
    a = _rows_last(xa, axis)
    _, _, sm = _core_lastaxis(a)
    if axis is None:
        return sm.reshape(xa.shape)
    return np.moveaxis(sm, -1, axis)


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
# fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def num_threads(request):
    """Run the test with xent limited to 1 and to 2 threads; restore afterwards."""
    previous = xent.get_num_threads()
    xent.set_num_threads(request.param)
    try:
        yield request.param
    finally:
        xent.set_num_threads(previous)


@pytest.fixture
def restore_threads():
    """Restore xent's thread count after a test that changes it."""
    previous = xent.get_num_threads()
    try:
        yield previous
    finally:
        xent.set_num_threads(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)
