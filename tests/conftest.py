"""Shared fixtures of the xent test suite.  The float64 references are in
references.py, the comparisons and other checks in helpers.py."""

import os

import numpy as np
import pytest

# Thread-count tests ask for exact teams: xent's default leaves CPUs that other
# processes keep busy to them (_runtime/threads.py), which on a busy CI machine would
# quietly turn "two threads" into one.  The test that checks that adjustment
# turns it back on in a subprocess of its own.
os.environ.setdefault("XENT_DYNAMIC_THREADS", "0")

import xent  # noqa: E402


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
