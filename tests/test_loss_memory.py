"""The losses allocate no N×C temporary (SPEC: "No N×C temporary is allocated in any
mode"; kl_divergence "in one pass with no N×C temporaries"; float16 "read as they are
(no upcast copy)").

NumPy reports its data allocations to tracemalloc, so the traced peak during a call
bounds every NumPy temporary the call makes.  Each call here must stay far below the
size of its N×C input (10% of it).  A guard test checks that the measurement does see
an N×C NumPy temporary, so that these tests cannot pass vacuously.
"""

import numpy as np
import pytest

import xent
from helpers import traced_peak

N, C = 4000, 1000
LIMIT = 0.10


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((N, C)) * 3).astype(np.float32)
    t = rng.integers(0, C, size=N)
    t[::13] = -100
    tp = rng.random((N, C), dtype=np.float32)
    tp /= tp.sum(axis=1, keepdims=True)
    q = (rng.standard_normal((N, C)) * 3).astype(np.float32)
    # warm-up: lazy imports, caches, thread pools
    small = x[:8, :16].copy()
    xent.cross_entropy(small, t[:8] % 16, return_grad=True, grad_out=small)
    xent.kl_divergence(small, small.copy(), return_grad=True)
    return x, t, tp, q


def _check(peak, nbytes, what):
    assert peak < LIMIT * nbytes, (
        f"{what}: traced peak {peak / 2**20:.2f} MiB >= {LIMIT:.0%} of the "
        f"{nbytes / 2**20:.1f} MiB input (an N×C temporary?)"
    )


def test_guard_tracemalloc_sees_numpy_temporaries(data):
    x = data[0]
    assert traced_peak(lambda: float(np.exp(x).sum())) >= x.nbytes


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_forward(data, reduction):
    x, t, _, _ = data
    _check(traced_peak(lambda: xent.cross_entropy(x, t, reduction=reduction)), x.nbytes, reduction)


def test_cross_entropy_forward_all_options(data):
    x, t, _, _ = data
    w = np.linspace(0.5, 2.0, C)
    peak = traced_peak(lambda: xent.cross_entropy(x, t, weight=w, label_smoothing=0.1, z_loss=1e-4))
    _check(peak, x.nbytes, "weight+smoothing+z_loss")


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_grad_in_place(data, reduction):
    x0, t, _, _ = data
    x = x0.copy()
    peak = traced_peak(
        lambda: xent.cross_entropy(
            x, t, reduction=reduction, label_smoothing=0.1, z_loss=1e-4, return_grad=True, grad_out=x
        )
    )
    _check(peak, x.nbytes, f"grad_out=x ({reduction})")


def test_cross_entropy_grad_separate_buffer(data):
    x, t, _, _ = data
    g = np.empty_like(x)
    _check(traced_peak(lambda: xent.cross_entropy(x, t, return_grad=True, grad_out=g)), x.nbytes, "grad_out=g")


def test_cross_entropy_probability_targets(data):
    x0, _, tp, _ = data
    _check(traced_peak(lambda: xent.cross_entropy(x0, tp)), x0.nbytes, "probability targets")
    x = x0.copy()
    peak = traced_peak(
        lambda: xent.cross_entropy(x, tp, label_smoothing=0.1, return_grad=True, grad_out=x)
    )
    _check(peak, x.nbytes, "probability targets, grad_out=x")


def test_cross_entropy_class_axis_first(data):
    x0, t, _, _ = data
    xt = np.ascontiguousarray(x0.T)  # (C, N), classes along axis 0
    _check(traced_peak(lambda: xent.cross_entropy(xt, t, axis=0)), xt.nbytes, "axis=0 forward")
    peak = traced_peak(lambda: xent.cross_entropy(xt, t, axis=0, return_grad=True, grad_out=xt))
    _check(peak, xt.nbytes, "axis=0, grad_out=x")


def test_cross_entropy_float16_no_upcast_copy(data):
    x0, t, _, _ = data
    xh = x0.astype(np.float16)
    _check(traced_peak(lambda: xent.cross_entropy(xh, t)), xh.nbytes, "float16 forward")


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_kl_divergence(data, reduction):
    p, _, _, q0 = data
    _check(traced_peak(lambda: xent.kl_divergence(p, q0, reduction=reduction)), p.nbytes, "kl forward")
    q = q0.copy()
    peak = traced_peak(
        lambda: xent.kl_divergence(p, q, temperature=2.0, reduction=reduction, return_grad=True, grad_out=q)
    )
    _check(peak, q.nbytes, "kl grad_out=q")
