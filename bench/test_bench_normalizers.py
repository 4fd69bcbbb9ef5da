"""Benchmarks: xent's normalizers against their NumPy formulas and SciPy.

One pytest-benchmark group per function and shape (``log_softmax 2048x50257``, ...)
holds ``xent`` (writing into a preallocated ``out=``), ``numpy`` (the plain formula,
allocating its temporaries), ``scipy`` (``scipy.special``, skipped when SciPy is
missing), ``torch`` (``torch.<name>(torch.from_numpy(x), dim=-1)`` with xent's thread
count, skipped when PyTorch is missing) and ``floor`` (``np.max``: one streaming read
of the input).  Compare within a group; ``test_log_softmax_speedup_vs_scipy`` and
``test_log_softmax_speedup_vs_torch`` report the headline ratios.

Run: ``python -m pytest bench --benchmark-only`` (``XENT_BENCH_QUICK=1`` for small shapes).
"""

import numpy as np
import pytest

import xent
from xent._cli import bench as xbench

FUNCTIONS = ("log_softmax", "softmax", "logsumexp")

NUMPY_FORMULAS = {
    "log_softmax": xbench.numpy_log_softmax,
    "softmax": xbench.numpy_softmax,
    "logsumexp": xbench.numpy_logsumexp,
}


def _group(name, x):
    return f"{name} {'x'.join(map(str, x.shape))}"


def _xent_call(name, x):
    """``xent.<name>(x, out=out)`` with ``out`` preallocated (not timed)."""
    f = getattr(xent, name)
    out_shape = x.shape[:-1] if name == "logsumexp" else x.shape
    out = np.empty(out_shape, dtype=x.dtype)
    return lambda: f(x, out=out)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_xent(run_timed, logits, name):
    run_timed(_xent_call(name, logits), logits, _group(name, logits))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_numpy(run_timed, logits, name):
    formula = NUMPY_FORMULAS[name]
    run_timed(lambda: formula(logits), logits, _group(name, logits))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_scipy(run_timed, logits, name):
    special = pytest.importorskip("scipy.special")
    f = getattr(special, name)
    run_timed(lambda: f(logits, axis=-1), logits, _group(name, logits))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_torch(run_timed, torch_threads, logits, name):
    f = getattr(torch_threads, name)
    t = torch_threads.from_numpy(logits)
    run_timed(lambda: f(t, dim=-1), logits, _group(name, logits))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_floor(run_timed, logits, name):
    # Same work for every function; repeated in each group as its reference line.
    run_timed(lambda: np.max(logits), logits, _group(name, logits))


def test_log_softmax_speedup_vs_scipy(benchmark, run_timed, measure, report_ratio, ratio_logits):
    """Headline ratio: ``xent.log_softmax`` vs ``scipy.special.log_softmax``
    (and the NumPy formula) on float32 32768x1000, all timed the same way here.

    The ratios go to ``extra_info`` (``speedup_vs_scipy``, ``speedup_vs_numpy``) and
    the terminal summary.  Nothing is asserted about speed.
    """
    special = pytest.importorskip("scipy.special")
    x = ratio_logits
    shape = "x".join(map(str, x.shape))
    xent_call = _xent_call("log_softmax", x)
    run_timed(xent_call, x, f"log_softmax speed-up {shape}")

    t_xent = measure(xent_call, x)
    t_scipy = measure(lambda: special.log_softmax(x, axis=-1), x)
    t_numpy = measure(lambda: xbench.numpy_log_softmax(x), x)
    benchmark.extra_info.update(
        xent_median_s=t_xent, scipy_median_s=t_scipy, numpy_median_s=t_numpy
    )
    report_ratio(
        "speedup_vs_scipy",
        f"xent.log_softmax vs scipy.special.log_softmax, float32 {shape}",
        t_scipy / t_xent,
    )
    report_ratio(
        "speedup_vs_numpy",
        f"xent.log_softmax vs NumPy formula, float32 {shape}",
        t_numpy / t_xent,
    )


def test_log_softmax_speedup_vs_torch(
    benchmark, run_timed, measure, report_ratio, torch_threads, ratio_logits
):
    """Headline ratio: ``xent.log_softmax`` vs ``torch.log_softmax`` (same thread
    count, zero-copy input) on float32 32768x1000.  Nothing is asserted about speed."""
    x = ratio_logits
    shape = "x".join(map(str, x.shape))
    xent_call = _xent_call("log_softmax", x)
    run_timed(xent_call, x, f"log_softmax speed-up vs torch {shape}")

    t = torch_threads.from_numpy(x)
    t_xent = measure(xent_call, x)
    t_torch = measure(lambda: torch_threads.log_softmax(t, -1), x)
    benchmark.extra_info.update(xent_median_s=t_xent, torch_median_s=t_torch)
    report_ratio(
        "speedup_vs_torch",
        f"xent.log_softmax vs torch.log_softmax, float32 {shape}",
        t_torch / t_xent,
    )
