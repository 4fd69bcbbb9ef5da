"""The peak extra memory of one call, measured two ways: tracemalloc and the RSS peak.

``xent bench`` prints, beside the time of each hidden-state case, how much memory the
call needed beyond its inputs and the gradients it returns.  Two measurements, because
neither sees everything:

tracemalloc
    NumPy reports every array allocation to tracemalloc, so its peak is exact for
    memory allocated through NumPy (xent allocates its scratch that way), whatever the
    allocator does with freed pages.  It does not see memory allocated in C outside
    NumPy: BLAS workspaces, PyTorch's tensors.
the RSS high-water mark (Linux)
    ``/proc/self/status``'s ``VmHWM`` after resetting it to the current RSS (writing
    ``5`` to ``/proc/self/clear_refs``): every page the process touched, whoever
    allocated it.  It undercounts when the allocator hands out pages that an earlier
    call freed but kept (glibc keeps freed heap pages below its trim threshold and
    raises its mmap threshold to 32 MiB as blocks are freed), so :func:`fix_allocator`
    makes glibc map every allocation of 64 KiB or more afresh and unmap it when freed;
    then the RSS follows what is alive.  Call it in a process that times nothing
    afterwards: it changes how fast allocation-heavy code runs.

Both are reported "extra": the peak during the call minus what was in use when it
started (the inputs) minus the bytes of the arrays the call returns (the gradients),
never below 0.

Examples
--------
>>> import numpy as np
>>> m = measure(lambda: np.ones(1 << 20).sum())   # an 8 MiB temporary
>>> m.tracemalloc_bytes >= 8 << 20
True
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["PeakMemory", "fix_allocator", "measure", "rss_peak_supported"]

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_FIXED_MMAP_THRESHOLD = 64 << 10


@dataclass(frozen=True)
class PeakMemory:
    """The extra memory of one call, in bytes (None where not measurable).

    Attributes
    ----------
    tracemalloc_bytes : int or None
        Peak of NumPy (and Python) allocations during the call, beyond those alive when
        it started and the returned arrays; None when not measured.
    rss_bytes : int or None
        RSS high-water mark during the call, beyond the RSS when it started and the
        returned arrays; None where the RSS peak cannot be reset (not Linux).
    returned_bytes : int
        Bytes of the arrays the call returned (subtracted from both).
    """

    tracemalloc_bytes: int | None
    rss_bytes: int | None
    returned_bytes: int


def _status_kib(field: str) -> int | None:
    try:
        with open(_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_rss_peak() -> bool:
    """Set VmHWM to the current RSS (Linux >= 4.0); False where that is impossible."""
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def rss_peak_supported() -> bool:
    """Whether this process can reset and read its RSS high-water mark."""
    return _status_kib("VmHWM") is not None and _reset_rss_peak()


def fix_allocator() -> bool:
    """Make glibc map every allocation of 64 KiB or more afresh, and give it back.

    Sets ``M_MMAP_THRESHOLD`` (which also stops glibc raising it as blocks are freed)
    and a zero ``M_TRIM_THRESHOLD``, then trims the heap, so that the RSS follows the
    memory alive and its peak counts every large allocation of a call.  For the
    process's remaining life: allocation becomes slower, so time nothing after it.

    Returns
    -------
    bool
        True if glibc took the settings (False on other C libraries).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _FIXED_MMAP_THRESHOLD) == 1
        ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, 0) == 1
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return ok


def _returned_bytes(result: Any) -> int:
    """Bytes of the arrays (NumPy or PyTorch) in `result`, a value or a (nested)
    tuple of them; the same array counted once."""
    seen: set[int] = set()
    total = 0

    def visit(value: Any) -> None:
        nonlocal total
        if isinstance(value, (tuple, list)):
            for v in value:
                visit(v)
            return
        nbytes = getattr(value, "nbytes", None)
        if nbytes is None and hasattr(value, "untyped_storage"):  # a torch.Tensor
            nbytes = value.untyped_storage().nbytes()
        if isinstance(nbytes, int) and id(value) not in seen:
            seen.add(id(value))
            total += nbytes

    visit(result)
    return total


def measure(
    call: Callable[[], Any],
    *,
    use_tracemalloc: bool = True,
) -> PeakMemory:
    """Run ``call()`` once and measure the memory it needed beyond its inputs and result.

    Parameters
    ----------
    call : callable
        Zero-argument callable returning what the call keeps (NumPy arrays or PyTorch
        tensors, or tuples of them: e.g. the loss and the gradients); it should have run at least once before (warm-up), so
        that one-time allocations (library initialisation, BLAS buffers) do not count.
    use_tracemalloc : bool, optional
        Also trace allocations with tracemalloc during the call (default True).  Off
        for PyTorch, whose tensors tracemalloc does not see.

    Returns
    -------
    PeakMemory
        The peaks beyond the start and the returned bytes (each never below 0).

    Examples
    --------
    >>> import numpy as np
    >>> m = measure(lambda: np.zeros(1000))          # returns what it allocates
    >>> m.returned_bytes, m.tracemalloc_bytes < 8000
    (8000, True)
    """
    rss_ok = _reset_rss_peak() and _status_kib("VmHWM") is not None
    started_tracing = False
    if use_tracemalloc and not tracemalloc.is_tracing():
        tracemalloc.start()
        started_tracing = True
    try:
        traced_before = tracemalloc.get_traced_memory()[0] if use_tracemalloc else 0
        if use_tracemalloc:
            tracemalloc.reset_peak()
        rss_before = _status_kib("VmRSS") if rss_ok else None
        if rss_ok:
            _reset_rss_peak()
        result = call()
        rss_peak = _status_kib("VmHWM") if rss_ok else None
        traced_peak = tracemalloc.get_traced_memory()[1] if use_tracemalloc else None
    finally:
        if started_tracing:
            with contextlib.suppress(Exception):
                tracemalloc.stop()
    kept = _returned_bytes(result)
    del result
    traced = None if traced_peak is None else max(0, traced_peak - traced_before - kept)
    rss = None
    if rss_peak is not None and rss_before is not None:
        rss = max(0, (rss_peak - rss_before) * 1024 - kept)
    return PeakMemory(traced, rss, kept)
