"""Shared fixtures for xent's pytest-benchmark suites.

These suites are run by hand, not by CI (``testpaths`` is ``tests``)::

    python -m pytest bench --benchmark-only
    XENT_BENCH_QUICK=1 python -m pytest bench --benchmark-only   # smoke test, seconds

Shapes are those of ``xent bench`` (:data:`xent._cli.bench.DEFAULT_SHAPES`, float32):
32768x1000, 2048x50257 (GPT-2 vocabulary, 412 MB) and 4,000,000x10; with
``XENT_BENCH_QUICK=1`` the small :data:`xent._cli.bench.QUICK_SHAPES`.

Results are reported as ratios against NumPy/SciPy measured in the same run (in
``extra_info`` and at the end of the terminal report), never as pass/fail on an
absolute time.
"""

import os

import numpy as np
import pytest

from xent._cli import bench as xbench

QUICK = os.environ.get("XENT_BENCH_QUICK", "").strip().lower() in {"1", "true", "yes", "on"}

#: (shape, ...) benchmarked by the parametrized ``logits`` fixture.
SHAPES = xbench.QUICK_SHAPES if QUICK else xbench.DEFAULT_SHAPES

#: Arrays at least this large get few pedantic rounds; smaller ones more.
BIG_BYTES = 64 * 2**20
BIG_ROUNDS = 5
SMALL_ROUNDS = 5 if QUICK else 20


def shape_id(shape):
    """``(2048, 50257)`` -> ``"2048x50257"`` (test ids and groups)."""
    return "x".join(str(n) for n in shape)


def make_logits(shape, dtype=np.float32):
    """The standard benchmark logits: ``default_rng(0).standard_normal(shape) * 3``."""
    return xbench.logits_inputs(tuple(shape), np.dtype(dtype))["x"]


def input_bytes(x):
    """Bytes of an input: an array, or a dict of arrays (logits and targets)."""
    if isinstance(x, dict):
        return sum(int(a.nbytes) for a in x.values())
    return int(x.nbytes)


def rounds_for(x):
    """Timed rounds for an input (array or dict of arrays): a few for big inputs, more
    for small ones."""
    return BIG_ROUNDS if input_bytes(x) >= BIG_BYTES else SMALL_ROUNDS


@pytest.fixture
def run_timed(benchmark):
    """``run_timed(fn, x, group, rounds=None, warmup=1)``: time ``fn()`` with
    ``benchmark.pedantic`` (``warmup`` warm-up rounds, then ``rounds`` rounds of one
    call, :func:`rounds_for` ``(x)`` by default), reported in ``group`` with the input
    size in ``extra_info``.  ``x`` is the input array or a dict of input arrays."""

    def run(fn, x, group, rounds=None, warmup=1):
        benchmark.group = group
        benchmark.extra_info["input_bytes"] = input_bytes(x)
        rounds = rounds_for(x) if rounds is None else rounds
        return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)

    return run


@pytest.fixture
def measure():
    """``measure(fn, x) -> seconds``: median of :func:`rounds_for` ``(x)`` calls after a
    warm-up, outside pytest-benchmark, for ratios between implementations timed the
    same way in the same test."""

    def run(fn, x):
        return xbench.time_call(fn, rounds_for(x))[0]

    return run


@pytest.fixture
def torch_threads():
    """PyTorch (skipped when missing) with xent's thread count for the test, restored
    after it: both libraries are timed with the same number of threads."""
    torch = pytest.importorskip("torch")
    with xbench.thread_count(None):
        yield torch


@pytest.fixture(scope="module", params=SHAPES, ids=shape_id)
def logits(request):
    """float32 logits of each benchmark shape, made once per module and shape.

    Module scope with parameters makes pytest run all tests of one shape before
    building the next array, so only one large array is alive at a time.
    """
    return make_logits(request.param)


#: Shape of the headline ratio (xent vs SciPy log_softmax).
RATIO_SHAPE = SHAPES[0]


@pytest.fixture(scope="module")
def ratio_logits():
    """float32 logits of :data:`RATIO_SHAPE` (32768x1000; quick: 2048x1000)."""
    return make_logits(RATIO_SHAPE)


# --------------------------------------------------------------------------- ratios

_RATIOS = []


@pytest.fixture
def report_ratio(benchmark):
    """``report_ratio(key, text, value)``: store ``value`` as
    ``benchmark.extra_info[key]`` and print ``text: value x`` in the terminal summary."""

    def report(key, text, value):
        benchmark.extra_info[key] = value
        _RATIOS.append(f"{text}: {value:.2f}x")

    return report


def pytest_terminal_summary(terminalreporter):
    if _RATIOS:
        terminalreporter.section("xent speed-ups (same run)")
        for line in _RATIOS:
            terminalreporter.write_line(line)
