"""Hardening of the multiclass losses and evaluation (issue 17): wrong answers and
errors found by a stress test, each pinned here.

References are float64 NumPy formulas written in this file (and PyTorch where it
is installed, skipped cleanly where it is not); none of them calls xent.
"""

import math
import re
import warnings

import numpy as np
import pytest

import xent

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - depends on the environment
    torch = F = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch not installed")


def _log_softmax(x):
    """float64 log-softmax of finite rows (the reference of this file)."""
    x = np.asarray(x, np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _no_warnings(f, *args, **kwargs):
    """f(*args, **kwargs) with every warning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return f(*args, **kwargs)


# ---------------------------------------------------------------------------
# 1. uint64 class indices above INT64_MAX are out of range, not ignore_index
# ---------------------------------------------------------------------------

BIG = 2**64 - 100  # reads as -100 (the default ignore_index) when wrapped to int64
X3 = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [3.0, 2.0, 1.0]])


def _index_calls():
    """Every public function that takes class indices, as f(logits, target)."""
    return {
        "cross_entropy_none": lambda x, t: xent.cross_entropy(x, t, reduction="none"),
        "cross_entropy_mean": lambda x, t: xent.cross_entropy(x, t),
        "cross_entropy_sum": lambda x, t: xent.cross_entropy(x, t, reduction="sum"),
        "cross_entropy_grad": lambda x, t: xent.cross_entropy(x, t, return_grad=True),
        "cross_entropy_weight": lambda x, t: xent.cross_entropy(x, t, weight=np.ones(3)),
        "nll_loss": lambda x, t: xent.nll_loss(x, t),
        "focal_loss": lambda x, t: xent.focal_loss(x, t),
        "evaluate": lambda x, t: xent.evaluate(x, t),
        "Evaluator.update": lambda x, t: xent.Evaluator().update(x, t),
    }


@pytest.mark.parametrize("name", sorted(_index_calls()))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uint64_index_above_int64_max_is_an_index_error(name, dtype):
    f = _index_calls()[name]
    t = np.array([0, 1, BIG], np.uint64)
    with pytest.raises(IndexError, match=rf"target: class index {BIG} at position \(2,\)"):
        f(X3.astype(dtype), t)


@pytest.mark.parametrize("name", sorted(_index_calls()))
def test_uint64_first_bad_index_is_named(name):
    # An ordinary out-of-range index before the huge one is the first bad one.
    f = _index_calls()[name]
    t = np.array([0, 7, BIG], np.uint64)
    with pytest.raises(IndexError, match=r"class index 7 at position \(1,\)"):
        f(X3, t)
    # ... and a huge one first, in a 2-D target of a 3-D logits array.
    t2 = np.array([[0, 1, 2], [2**63, 5, 0]], np.uint64)
    x2 = np.zeros((2, 3, 3))
    with pytest.raises(IndexError, match=rf"class index {2**63} at position \(1, 0\)"):
        f(x2, t2)


def test_uint64_big_value_with_nonnegative_ignore_index():
    t = np.array([0, 2, 2**64 - 1], np.uint64)
    with pytest.raises(IndexError, match=rf"class index {2**64 - 1} at position \(2,\)"):
        xent.cross_entropy(X3, t, ignore_index=2)
    # uint64 indices in range are read as they are (ignore_index included).
    t = np.array([0, 2, 1], np.uint64)
    lp = _log_softmax(X3)
    expected = -(lp[0, 0] + lp[2, 1]) / 2
    assert math.isclose(float(xent.cross_entropy(X3, t, ignore_index=2)), expected,
                        rel_tol=1e-14)


def test_uint64_error_writes_nothing():
    g = np.full(X3.shape, 7.0)
    ev = xent.Evaluator()
    ev.update(X3, np.array([0, 1, 2]))
    before = ev.result()
    with pytest.raises(IndexError):
        xent.cross_entropy(X3, np.array([0, 1, BIG], np.uint64), return_grad=True, grad_out=g)
    with pytest.raises(IndexError):
        ev.update(X3, np.array([0, 1, BIG], np.uint64))
    assert np.all(g == 7.0)
    assert ev.result() == before
