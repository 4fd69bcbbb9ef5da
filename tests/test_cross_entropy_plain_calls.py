"""Plain cross_entropy calls (the small-call path, ``_kernels.cross_entropy_small``)
give the general path's bits.

A plain call -- 2-D C-contiguous float32/float64 logits, 1-D native integer
targets, "mean" or "sum", no weight, smoothing, z-loss or gradient -- is computed
by one compiled call that runs the general path's kernel (``_ce_compute``) and
sums the rows in the general path's fixed order.  These tests check that

* it is taken for exactly those calls: the entry point answers None for anything
  else, and the general path then gives the answer or the error;
* its result has the bits of the general path's (forced by replacing the entry
  point with one that always declines), for finite, non-finite and ignored rows,
  below and above the few-class tile threshold, and at 1 and 2 threads;
* it agrees with the independent float64 NumPy reference of references.py;
* a bad class index raises the general path's IndexError and leaves the inputs
  as they were;
* it asks ``threads_for`` for its team size, as the general path does.
"""

import numpy as np
import pytest
from helpers import assert_close, assert_same_bits_for_thread_counts, bitwise_equal, loss_tol
from references import ref_cross_entropy

import xent
from xent._api import multiclass as _crossentropy

SMALL = _crossentropy._cross_entropy_small  # the compiled entry point


def small(x, t, axis=-1, ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0,
          threads_for=None):
    """The entry point itself: a NumPy scalar, or None (general path)."""
    return SMALL(x, t, axis=axis, ignore_index=ignore_index, reduction=reduction,
                 label_smoothing=label_smoothing, z_loss=z_loss,
                 threads_for=threads_for or _crossentropy.threads_for)


@pytest.fixture
def general(monkeypatch):
    """cross_entropy with the small-call path switched off (the core function: the
    public one calls the compiled entry point directly for a bare call)."""

    def run(*args, **kwargs):
        with monkeypatch.context() as m:
            m.setattr(_crossentropy, "_cross_entropy_small", lambda *a, **k: None)
            return _crossentropy.cross_entropy(*args, **kwargs)

    return run


def _targets(rng, N, C, tdtype, ignore_index):
    """Class indices with every 7th row ignored."""
    t = rng.integers(0, max(C, 1), N).astype(tdtype)
    t[::7] = ignore_index
    return t


def _ignore_for(tdtype):
    # unsigned targets cannot hold -100: ignore class 0 instead
    return 0 if np.dtype(tdtype).kind == "u" else -100


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tdtype", [np.int64, np.int32, np.int16, np.uint8, np.uint64])
@pytest.mark.parametrize("N", [0, 1, 31, 32, 257, 600])
@pytest.mark.parametrize("C", [1, 2, 10, 32, 33])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_same_bits_as_general_path(dtype, tdtype, N, C, reduction, general):
    rng = np.random.default_rng(N * 100 + C)
    x = (rng.standard_normal((N, C)) * 4).astype(dtype)
    ignore_index = _ignore_for(tdtype)
    t = _targets(rng, N, C, tdtype, ignore_index)
    taken = small(x, t, ignore_index=ignore_index, reduction=reduction)
    assert taken is not None, "the small-call path declined a plain call"
    loss = xent.cross_entropy(x, t, ignore_index=ignore_index, reduction=reduction)
    expected = general(x, t, ignore_index=ignore_index, reduction=reduction)
    assert type(loss) is np.dtype(dtype).type
    assert bitwise_equal(loss, expected), (loss, expected)
    assert bitwise_equal(taken, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(256, 10), (1, 5), (100, 1), (300, 32), (64, 1000)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_float64_reference(dtype, shape, reduction):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    t = rng.integers(0, shape[1], shape[0])
    t[1::5] = -100
    loss = xent.cross_entropy(x, t, reduction=reduction)
    ref, _ = ref_cross_entropy(x, t, reduction=reduction)
    rtol, atol = loss_tol(dtype, scale=shape[0] if reduction == "sum" else 1.0)
    assert_close(loss, ref, rtol, atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nonfinite_and_ignored_rows(dtype, reduction, general):
    """Rows at tile boundaries (tiles of 256) with NaN, +inf and -inf entries; an
    ignored row full of NaN contributes 0."""
    rng = np.random.default_rng(3)
    N, C = 600, 10
    x = rng.standard_normal((N, C)).astype(dtype)
    t = rng.integers(0, C, N)
    x[255, 3] = np.inf  # a lone +inf, last row of the first tile
    t[255] = 3  # ... at the target: loss 0
    x[256, :] = -np.inf  # no class has probability: NaN
    x[511, 2] = -np.inf  # a -inf class in a finite row
    x[599, :] = np.inf  # every entry +inf: log C
    x[300, :] = np.nan  # ignored: contributes exactly 0
    t[300] = -100
    for rows in (slice(None), slice(0, 256), slice(257, None)):
        xs, ts = np.ascontiguousarray(x[rows]), t[rows]
        assert small(xs, ts, reduction=reduction) is not None
        with np.errstate(all="ignore"):
            loss = xent.cross_entropy(xs, ts, reduction=reduction)
            expected = general(xs, ts, reduction=reduction)
            ref, _ = ref_cross_entropy(xs, ts, reduction=reduction)
        assert bitwise_equal(loss, expected), (rows, loss, expected)
        assert_close(loss, ref, *loss_tol(dtype, scale=len(ts)))


def test_nothing_to_average(general):
    x = np.zeros((40, 3), np.float32)
    t = np.full(40, -100)
    for xs, ts in ((x, t), (x[:0], t[:0]), (np.zeros((5, 0), np.float64), t[:5])):
        assert small(xs, ts) is not None
        mean = xent.cross_entropy(xs, ts)
        total = xent.cross_entropy(xs, ts, reduction="sum")
        assert np.isnan(mean) and type(mean) is xs.dtype.type
        assert total == 0 and type(total) is xs.dtype.type
        assert bitwise_equal(mean, general(xs, ts))
        assert bitwise_equal(total, general(xs, ts, reduction="sum"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_counts(dtype, general):
    """Above the one-thread size (threads_for) the rows are split over a team; the
    bits are those of one thread and of the general path."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5000, 10)).astype(dtype)  # 50,000 >= SMALL_WORK elements
    t = rng.integers(0, 10, 5000)
    loss, general_loss = assert_same_bits_for_thread_counts(
        lambda: (xent.cross_entropy(x, t), general(x, t)), (1, 2)
    )
    assert bitwise_equal(loss, general_loss)


def test_asks_threads_for_its_team_size(monkeypatch):
    asked = []

    def threads_for(n):
        asked.append(n)
        return 2

    monkeypatch.setattr(_crossentropy, "threads_for", threads_for)
    x = np.random.default_rng(0).standard_normal((300, 7)).astype(np.float32)
    t = np.arange(300) % 7
    two = _crossentropy.cross_entropy(x, t)  # (the public bare call binds threads_for
    assert asked == [x.size]                 # at import: test_public_bare_call_...)
    # a team of two on a small input: the same bits as one thread
    assert bitwise_equal(two, small(x, t, threads_for=lambda n: 1))


@pytest.mark.parametrize("bad", [10, -1, -101, "max"])
@pytest.mark.parametrize("where", [0, 150, 299])
@pytest.mark.parametrize("tdtype", [np.int64, np.int32])
def test_bad_index_raises_general_error_and_writes_nothing(bad, where, tdtype, general):
    if bad == "max":
        bad = np.iinfo(tdtype).max
    rng = np.random.default_rng(where)
    x = rng.standard_normal((300, 10)).astype(np.float32)
    t = rng.integers(0, 10, 300).astype(tdtype)
    t[where] = bad
    t[where + 1 :] = 99  # later bad indices: the first one is named
    x0, t0 = x.copy(), t.copy()
    assert small(x, t) is None
    with pytest.raises(IndexError) as fast_error:
        xent.cross_entropy(x, t)
    with pytest.raises(IndexError) as general_error:
        general(x, t)
    assert str(fast_error.value) == str(general_error.value)
    assert f"position ({where},)" in str(fast_error.value)
    assert bitwise_equal(x, x0) and bitwise_equal(t, t0)


def test_unsigned_indices_out_of_range():
    x = np.zeros((40, 10), np.float32)
    t = np.zeros(40, np.uint64)
    t[7] = 2**63 + 5  # loads as a negative int64: out of range too
    assert small(x, t) is None
    with pytest.raises(IndexError, match=r"position \(7,\)"):
        xent.cross_entropy(x, t)
    t8 = np.zeros(40, np.uint8)
    t8[3] = 200
    with pytest.raises(IndexError, match=r"position \(3,\)"):
        xent.cross_entropy(x, t8)


def _swapped(a):
    return a.astype(a.dtype.newbyteorder())


def _cases_taken(rng):
    x = rng.standard_normal((64, 6)).astype(np.float32)
    t = rng.integers(0, 6, 64)
    ro_x, ro_t = x.copy(), t.copy()
    ro_x.flags.writeable = False
    ro_t.flags.writeable = False
    long_t = rng.integers(0, 6, 128)
    return {
        "axis=1": (x, t, dict(axis=1)),
        "strided targets": (x, long_t[::2], {}),
        "reversed targets": (x, t[::-1], {}),
        "read-only": (ro_x, ro_t, {}),
        "ignore_index=int64 min": (x, t, dict(ignore_index=-(2**63))),
        "ignore_index=class 2": (x, t, dict(ignore_index=2)),
        "label_smoothing=0": (x, t, dict(label_smoothing=0)),
        "z_loss=0.0 sum": (x, t, dict(z_loss=0.0, reduction="sum")),
        # C-contiguous, with the stride NumPy reports for the length-1 axis 0
        "one class, zero stride": (np.ascontiguousarray(x[:, 0])[:, None], t % 1 - 100 * (t > 3),
                                   {}),
    }


def _cases_declined(rng):
    x = rng.standard_normal((64, 6)).astype(np.float32)
    t = rng.integers(0, 6, 64)
    big = rng.standard_normal((64, 12)).astype(np.float32)
    return {
        "Fortran logits": (np.asfortranarray(x), t, {}),
        "column slice": (big[:, ::2], t, {}),
        "row slice": (x[::2], t[:32], {}),
        "3-D logits": (x.reshape(8, 8, 6), t.reshape(8, 8), {}),
        "1-D logits": (x[0], t[0], {}),
        "float16 logits": (x.astype(np.float16), t, {}),
        "int logits": ((x * 10).astype(np.int32), t, {}),
        "swapped logits": (_swapped(x), t, {}),
        "swapped targets": (x, _swapped(t), {}),
        "bool targets": (x, t > 2, {}),
        "float targets": (x, np.full(x.shape, 1 / 6, np.float32), {}),
        "2-D targets": (x, t.reshape(64, 1), {}),
        "short targets": (x, t[:63], {}),
        "list logits": (x.tolist(), t, {}),
        "memmap-like subclass": (x.view(np.memmap), t, {}),
        "reduction none": (x, t, dict(reduction="none")),
        "reduction MEAN": (x, t, dict(reduction="MEAN")),
        "reduction None": (x, t, dict(reduction=None)),
        "axis 0": (x, t[:6], dict(axis=0)),
        "axis np.int64(1)": (x, t, dict(axis=np.int64(1))),
        "axis True": (x, t, dict(axis=True)),
        "axis 2": (x, t, dict(axis=2)),
        "ignore_index np.int64": (x, t, dict(ignore_index=np.int64(-100))),
        "ignore_index True": (x, t, dict(ignore_index=True)),
        "ignore_index 2**70": (x, t, dict(ignore_index=2**70)),
        "label_smoothing 0.1": (x, t, dict(label_smoothing=0.1)),
        "label_smoothing False": (x, t, dict(label_smoothing=False)),
        "label_smoothing np.float64(0)": (x, t, dict(label_smoothing=np.float64(0))),
        "z_loss 1e-4": (x, t, dict(z_loss=1e-4)),
        "z_loss False": (x, t, dict(z_loss=False)),
        "z_loss array": (x, t, dict(z_loss=np.zeros(2))),
    }


def _entry_args(kwargs):
    """The entry point's arguments for the cross_entropy keywords `kwargs`."""
    defaults = dict(axis=-1, ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0)
    return {k: kwargs.get(k, d) for k, d in defaults.items()}


def _outcome(f):
    """(kind, value): the result's bytes and type, or the exception's type and text."""
    try:
        with np.errstate(all="ignore"):
            r = f()
    except Exception as e:  # noqa: BLE001 - the very point is to compare errors
        return "raised", (type(e), str(e))
    return "returned", (type(r), np.asarray(r).dtype, np.asarray(r).tobytes())


@pytest.mark.parametrize("case", sorted(_cases_taken(np.random.default_rng(0))))
def test_taken_for_plain_calls(case, general):
    x, t, kwargs = _cases_taken(np.random.default_rng(1))[case]
    assert small(x, t, **_entry_args(kwargs)) is not None
    assert _outcome(lambda: xent.cross_entropy(x, t, **kwargs)) == _outcome(
        lambda: general(x, t, **kwargs))


@pytest.mark.parametrize("case", sorted(_cases_declined(np.random.default_rng(0))))
def test_declines_anything_else(case, general):
    """Every other call goes the general way: same result, or the same error."""
    x, t, kwargs = _cases_declined(np.random.default_rng(1))[case]
    assert small(x, t, **_entry_args(kwargs)) is None
    fast, slow = (_outcome(lambda: xent.cross_entropy(x, t, **kwargs)),
                  _outcome(lambda: general(x, t, **kwargs)))
    assert fast == slow


def test_weight_of_ones_gives_the_same_bits():
    """weight=np.ones(C) takes the general path (class weights), whose "mean"
    denominator is then the number of non-ignored rows again: the same value."""
    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((256, 10)).astype(dtype)
        t = rng.integers(0, 10, 256)
        t[::9] = -100
        for reduction in ("mean", "sum"):
            loss = xent.cross_entropy(x, t, reduction=reduction)
            weighted = xent.cross_entropy(x, t, reduction=reduction, weight=np.ones(10))
            assert bitwise_equal(loss, weighted)


def test_public_bare_call_runs_this_entry_point_with_the_defaults():
    """``xent.cross_entropy(logits, target)`` calls the entry point directly (the
    namespace layer's compiled fast path) with the defaults and ``threads_for``."""
    compiled, extra = _crossentropy.cross_entropy.defaults_fast_path
    assert compiled is SMALL
    assert extra == (-1, -100, "mean", 0.0, 0.0, _crossentropy.threads_for)
    x = np.random.default_rng(3).standard_normal((300, 7)).astype(np.float32)
    t = np.arange(300) % 7
    assert bitwise_equal(xent.cross_entropy(x, t), small(x, t))
