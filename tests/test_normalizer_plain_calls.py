"""Plain normalizer calls (``xent.logsumexp(x)``, ``xent.log_softmax(x)``,
``xent.softmax(x)``: the array alone, by position) take one compiled call,
``_kernels.normalize_small``, and give the general path's bits.

That entry point takes exact NumPy arrays of float32/float64, native, aligned,
C-contiguous, at least 1-D, with the class axis last; for anything else it answers
None and the general path runs.  These tests check that

* its results have the bits of the general path's (the core function called with
  ``axis=-1`` by keyword, which never takes it), including non-finite rows, empty
  and one-class rows, few-class tiles, long split rows, 1-D inputs (NumPy scalars);
* they agree with the float64 NumPy references of references.py;
* the bits do not depend on the thread count;
* it declines everything else (so subclasses, other layouts and dtypes, and other
  namespaces get the general path or the namespace layer).
"""

import numpy as np
import pytest
from helpers import assert_close, assert_same_bits_for_thread_counts, bitwise_equal
from references import ref_log_softmax, ref_logsumexp, ref_softmax

import xent
from xent._api import normalizers as _normalizers
from xent._runtime.dispatch import kernels as _kernels

FUNCTIONS = {
    "logsumexp": (_kernels.LOGSUMEXP, ref_logsumexp),
    "log_softmax": (_kernels.LOG_SOFTMAX, ref_log_softmax),
    "softmax": (_kernels.SOFTMAX, ref_softmax),
}
SHAPES = [(0,), (1,), (5,), (3, 0), (0, 4), (1, 1), (256, 10), (7, 3, 5), (40, 2), (600, 33),
          (3, 70_000)]


def _general(name, x):
    return getattr(_normalizers, name)(x, axis=-1)


def _logits(shape, dtype, seed=0):
    x = (np.random.default_rng(seed).standard_normal(shape) * 5).astype(dtype)
    if x.size > 3:
        x.flat[1], x.flat[2] = np.inf, -np.inf  # the non-finite rule on a row
    if x.size > 40 and x.shape[-1] > 1:
        x.reshape(-1, x.shape[-1])[-1] = -np.inf  # a row with nothing: lse -inf
        x.flat[x.shape[-1] + 1] = np.nan
    return x


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_same_bits_as_general_path(name, dtype, shape):
    x = _logits(shape, dtype)
    op, _ = FUNCTIONS[name]
    assert _kernels.normalize_small(x, -1, op, _normalizers.threads_for) is not None
    got, want = getattr(xent, name)(x), _general(name, x)
    assert type(got) is type(want)  # a NumPy scalar for a 1-D logsumexp
    assert bitwise_equal(got, want)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_float64_reference(name, dtype):
    x = _logits((300, 17), dtype, seed=1)
    _, ref = FUNCTIONS[name]
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert_close(getattr(xent, name)(x), ref(x), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("shape", [(5000, 10), (4, 100_000)], ids=str)
def test_thread_counts(name, shape):
    x = _logits(shape, np.float32, seed=2)
    assert_same_bits_for_thread_counts(lambda: getattr(xent, name)(x), (1, 2, 3))


def _declined():
    x = _logits((6, 5), np.float64)
    swapped = x.astype(x.dtype.newbyteorder())
    unaligned = np.frombuffer(b"\0" + x.tobytes(), np.float64, x.size, 1).reshape(6, 5)
    return {
        "0-d": np.float64(1.0),
        "0-d array": np.array(1.0),
        "float16": x.astype(np.float16),
        "int": np.arange(6),
        "transposed": x.T,
        "strided rows": x[:, ::2],
        "byte-swapped": swapped,
        "unaligned": unaligned,
        "memmap-like subclass": x.view(np.memmap),
        "list": x.tolist(),
    }


@pytest.mark.parametrize("case", sorted(_declined()))
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_declines_anything_else(case, name):
    x = _declined()[case]
    op, _ = FUNCTIONS[name]
    assert _kernels.normalize_small(x, -1, op, _normalizers.threads_for) is None
    got = getattr(xent, name)(x)  # the general path's answer
    assert bitwise_equal(got, _general(name, x))


@pytest.mark.parametrize("axis", [0, 1.0, None, (1,), np.int64(-1)])
def test_declines_any_other_axis(axis):
    x = _logits((6, 5), np.float32)
    assert _kernels.normalize_small(x, axis, _kernels.LOGSUMEXP, _normalizers.threads_for) is None


def test_last_axis_by_its_index_is_taken():
    x = _logits((6, 5), np.float32)
    got = _kernels.normalize_small(x, 1, _kernels.SOFTMAX, _normalizers.threads_for)
    assert bitwise_equal(got, _general("softmax", x))


def test_asks_threads_for_its_team_size():
    asked = []
    x = _logits((300, 7), np.float32)
    _kernels.normalize_small(x, -1, _kernels.LOGSUMEXP, lambda n: asked.append(n) or 1)
    assert asked == [x.size]
