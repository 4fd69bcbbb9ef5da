"""Benchmarks: xent's losses against their NumPy formulas and PyTorch.

The same cases as ``xent bench`` (:mod:`xent._cli.bench`), timed by the same callables
(each implementation is built by the factory registered in
:data:`xent._cli.bench.FUNCTIONS`), in pytest-benchmark groups:

``cross_entropy <shape>``
    ``xent.cross_entropy(x, t)`` (mean) with int64 class targets
    ``t = default_rng(1).integers(0, C, N)``, against the NumPy formula
    (:func:`xent._cli.bench.numpy_cross_entropy`), ``torch.nn.functional.cross_entropy``
    and the floor (``np.max`` over logits and targets).
``cross_entropy+grad <shape>``
    ``xent.cross_entropy(x, t, return_grad=True, grad_out=buf)`` with a preallocated
    ``buf`` (so every call sees the same logits), against NumPy loss + gradient
    (:func:`xent._cli.bench.numpy_cross_entropy_grad`) and PyTorch forward + backward.
    ``xent-inplace`` times ``grad_out=x`` on a copy of the logits, as a training loop
    calls it: after the warm-up call the "logits" are the previous gradient, which
    costs the same per element -- this row shows that in place costs what ``buf`` costs.
``binary_cross_entropy_with_logits <n>``
    1-D float32 logits and {0, 1} targets (32,000,000; quick 2,000,000); the xent
    test skips while ``xent.binary_cross_entropy_with_logits`` does not exist.
``cross_entropy float16 vs float32 <shape>``
    xent on float16 logits of 2048x50257 (quick 256x50257) and on the same values in
    float32, with the float16 floor (read as uint16, see :mod:`xent._cli.bench`).
``cross_entropy small call 256x10``
    one call on 256x10: :data:`xent._cli.bench.SMALL_CALL_REPEAT` rounds of one call.

PyTorch runs with xent's thread count (``torch_threads`` fixture).  Headline ratios
(vs PyTorch, float16 vs float32) go to ``extra_info`` and the terminal summary.

Run: ``python -m pytest bench --benchmark-only`` (``XENT_BENCH_QUICK=1`` for small shapes).
"""

import os

import numpy as np
import pytest

from xent._cli import bench as xbench

# As in conftest.py (not imported: tests/ has a conftest module of its own).
QUICK = os.environ.get("XENT_BENCH_QUICK", "").strip().lower() in {"1", "true", "yes", "on"}
SHAPES = xbench.QUICK_SHAPES if QUICK else xbench.DEFAULT_SHAPES


def shape_id(shape):
    return "x".join(str(n) for n in shape)

CE = xbench.FUNCTIONS["cross_entropy"]
CE_GRAD = xbench.FUNCTIONS["cross_entropy+grad"]
CE_F16 = xbench.FUNCTIONS["cross_entropy:float16"]
CE_SMALL = xbench.FUNCTIONS["cross_entropy:small"]
BCE = xbench.FUNCTIONS["binary_cross_entropy_with_logits"]


def _shape_of(function):
    shapes = function.quick_shapes if QUICK else function.shapes
    return shapes[0]


def _group(name, shape):
    return f"{name} {shape_id(shape)}"


def _call(function, impl, inputs):
    """The callable ``xent bench`` times for ``function``/``impl``; skip if unavailable."""
    try:
        return function.impls[impl](inputs)
    except xbench.Unavailable as exc:
        pytest.skip(str(exc))


def _floor(inputs):
    return lambda: xbench._floor(inputs)


# --------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module", params=SHAPES, ids=shape_id)
def class_inputs(request):
    """``{"x": float32 logits, "t": int64 class targets}`` for each standard shape,
    one shape alive at a time."""
    return xbench.class_target_inputs(tuple(request.param), np.dtype(np.float32))


@pytest.fixture(scope="module")
def ratio_inputs():
    """Class-target inputs of the headline-ratio shape (32768x1000; quick 2048x1000)."""
    return xbench.class_target_inputs(tuple(SHAPES[0]), np.dtype(np.float32))


@pytest.fixture(scope="module")
def binary_inputs():
    """``{"x", "y"}``: 1-D float32 logits and {0, 1} targets for the BCE case."""
    return xbench.binary_target_inputs(_shape_of(BCE), np.dtype(np.float32))


@pytest.fixture(scope="module")
def half_inputs():
    """float16 logits and targets of the float16 case, and the same values in float32."""
    inputs16 = xbench.class_target_inputs(_shape_of(CE_F16), np.dtype(np.float16))
    inputs32 = {"x": inputs16["x"].astype(np.float32), "t": inputs16["t"]}
    return inputs16, inputs32


@pytest.fixture(scope="module")
def small_inputs():
    return xbench.class_target_inputs(_shape_of(CE_SMALL), np.dtype(np.float32))


# --------------------------------------------------------------------------- cross_entropy


def test_cross_entropy_xent(run_timed, class_inputs):
    x = class_inputs["x"]
    run_timed(_call(CE, "xent", class_inputs), class_inputs, _group("cross_entropy", x.shape))


def test_cross_entropy_numpy(run_timed, class_inputs):
    x = class_inputs["x"]
    run_timed(_call(CE, "numpy", class_inputs), class_inputs, _group("cross_entropy", x.shape))


def test_cross_entropy_torch(run_timed, torch_threads, class_inputs):
    x = class_inputs["x"]
    run_timed(_call(CE, "torch", class_inputs), class_inputs, _group("cross_entropy", x.shape))


def test_cross_entropy_floor(run_timed, class_inputs):
    x = class_inputs["x"]
    run_timed(_floor(class_inputs), class_inputs, _group("cross_entropy", x.shape))


# --------------------------------------------------------------------------- cross_entropy+grad


def test_cross_entropy_grad_xent(run_timed, class_inputs):
    x = class_inputs["x"]
    group = _group("cross_entropy+grad", x.shape)
    run_timed(_call(CE_GRAD, "xent", class_inputs), class_inputs, group)


def test_cross_entropy_grad_xent_inplace(run_timed, class_inputs):
    """``grad_out=x`` on a copy of the logits: each call overwrites its input with the
    gradient, as in training; the per-element work is the same as with a buffer."""
    import xent

    x = class_inputs["x"].copy()
    t = class_inputs["t"]
    group = _group("cross_entropy+grad", x.shape)
    run_timed(
        lambda: xent.cross_entropy(x, t, return_grad=True, grad_out=x), class_inputs, group
    )


def test_cross_entropy_grad_numpy(run_timed, class_inputs):
    x = class_inputs["x"]
    group = _group("cross_entropy+grad", x.shape)
    run_timed(_call(CE_GRAD, "numpy", class_inputs), class_inputs, group)


def test_cross_entropy_grad_torch(run_timed, torch_threads, class_inputs):
    x = class_inputs["x"]
    group = _group("cross_entropy+grad", x.shape)
    run_timed(_call(CE_GRAD, "torch", class_inputs), class_inputs, group)


def test_cross_entropy_grad_floor(run_timed, class_inputs):
    x = class_inputs["x"]
    run_timed(_floor(class_inputs), class_inputs, _group("cross_entropy+grad", x.shape))


def test_cross_entropy_speedup_vs_torch(
    benchmark, run_timed, measure, report_ratio, torch_threads, ratio_inputs
):
    """Headline ratios on float32 32768x1000: xent vs PyTorch for the loss alone and
    for loss + gradient (PyTorch: forward + backward).  Nothing is asserted."""
    shape = shape_id(ratio_inputs["x"].shape)
    xent_fwd = _call(CE, "xent", ratio_inputs)
    run_timed(xent_fwd, ratio_inputs, f"cross_entropy speed-up vs torch {shape}")

    t_fwd = measure(xent_fwd, ratio_inputs)
    t_fwd_torch = measure(_call(CE, "torch", ratio_inputs), ratio_inputs)
    t_grad = measure(_call(CE_GRAD, "xent", ratio_inputs), ratio_inputs)
    t_grad_torch = measure(_call(CE_GRAD, "torch", ratio_inputs), ratio_inputs)
    benchmark.extra_info.update(
        xent_median_s=t_fwd,
        torch_median_s=t_fwd_torch,
        xent_grad_median_s=t_grad,
        torch_grad_median_s=t_grad_torch,
    )
    report_ratio(
        "speedup_vs_torch",
        f"xent.cross_entropy vs torch F.cross_entropy, float32 {shape}",
        t_fwd_torch / t_fwd,
    )
    report_ratio(
        "grad_speedup_vs_torch",
        f"xent.cross_entropy(return_grad=True) vs torch forward+backward, float32 {shape}",
        t_grad_torch / t_grad,
    )


# --------------------------------------------------------------------------- BCE with logits


def test_bce_with_logits_xent(run_timed, binary_inputs):
    group = _group("binary_cross_entropy_with_logits", binary_inputs["x"].shape)
    run_timed(_call(BCE, "xent", binary_inputs), binary_inputs, group)


def test_bce_with_logits_numpy(run_timed, binary_inputs):
    group = _group("binary_cross_entropy_with_logits", binary_inputs["x"].shape)
    run_timed(_call(BCE, "numpy", binary_inputs), binary_inputs, group)


def test_bce_with_logits_torch(run_timed, torch_threads, binary_inputs):
    group = _group("binary_cross_entropy_with_logits", binary_inputs["x"].shape)
    run_timed(_call(BCE, "torch", binary_inputs), binary_inputs, group)


def test_bce_with_logits_floor(run_timed, binary_inputs):
    group = _group("binary_cross_entropy_with_logits", binary_inputs["x"].shape)
    run_timed(_floor(binary_inputs), binary_inputs, group)


# --------------------------------------------------------------------------- float16


def _half_group(inputs16):
    return _group("cross_entropy float16 vs float32", inputs16["x"].shape)


def test_cross_entropy_float16_xent(run_timed, half_inputs):
    inputs16, _ = half_inputs
    run_timed(_call(CE_F16, "xent", inputs16), inputs16, _half_group(inputs16))


def test_cross_entropy_float16_floor(run_timed, half_inputs):
    inputs16, _ = half_inputs
    run_timed(_floor(inputs16), inputs16, _half_group(inputs16))


def test_cross_entropy_float32_same_values(
    benchmark, run_timed, measure, report_ratio, half_inputs
):
    """xent on the float32 copy of the float16 logits, in the float16 group, and the
    ratio float32 time / float16 time (> 1: float16 is faster).  Nothing is asserted."""
    inputs16, inputs32 = half_inputs
    call32 = _call(CE, "xent", inputs32)
    run_timed(call32, inputs32, _half_group(inputs16))

    t16 = measure(_call(CE_F16, "xent", inputs16), inputs16)
    t32 = measure(call32, inputs32)
    benchmark.extra_info.update(float16_median_s=t16, float32_median_s=t32)
    report_ratio(
        "float32_over_float16",
        f"xent.cross_entropy float32 time / float16 time, {shape_id(inputs16['x'].shape)}",
        t32 / t16,
    )


# --------------------------------------------------------------------------- small call

SMALL_ROUNDS = xbench.SMALL_CALL_REPEAT
SMALL_WARMUP = SMALL_ROUNDS // 20


@pytest.mark.parametrize("impl", ["xent", "numpy", "torch"])
def test_cross_entropy_small_call(run_timed, request, small_inputs, impl):
    if impl == "torch":
        request.getfixturevalue("torch_threads")
    run_timed(
        _call(CE_SMALL, impl, small_inputs),
        small_inputs,
        _group("cross_entropy small call", small_inputs["x"].shape),
        rounds=SMALL_ROUNDS,
        warmup=SMALL_WARMUP,
    )


def test_cross_entropy_small_call_floor(run_timed, small_inputs):
    run_timed(
        _floor(small_inputs),
        small_inputs,
        _group("cross_entropy small call", small_inputs["x"].shape),
        rounds=SMALL_ROUNDS,
        warmup=SMALL_WARMUP,
    )
