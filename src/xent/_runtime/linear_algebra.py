"""The BLAS behind linear_cross_entropy: SciPy's, called from xent's own threads.

The products of a block of rows (``_cython/linear.pxi``) call SciPy's OpenBLAS gemm
through the function pointers ``scipy.linalg.cython_blas`` exports: from inside xent's
OpenMP team, each thread on its own tiles, one thread pool at a time.  So while such a
call runs, BLAS itself is limited to one thread (`single_threaded_blas`); xent's thread
count (``xent.set_num_threads``, threadpoolctl's "openmp" limit) is the call's.  Why
SciPy's BLAS and not NumPy's matmul: gemm accumulates into the weight gradient
(``beta=1``, no C×D temporary) and can be called without the GIL from C
(BENCHMARKS.md, "Cross-entropy from hidden states").
"""

from __future__ import annotations

import contextlib

_controller = None


def load_blas(kernels):
    """Give the kernel module `kernels` SciPy's sgemm/dgemm (once per module)."""
    if kernels.has_blas():
        return
    from scipy.linalg import cython_blas  # `import xent` itself needs NumPy only

    capi = cython_blas.__pyx_capi__
    kernels.set_blas(capi["sgemm"], capi["dgemm"])


def single_threaded_blas():
    """Context manager: BLAS on one thread while xent's team calls it (threadpoolctl).

    The threadpoolctl controller is made once (it scans the loaded libraries), after
    SciPy's BLAS is loaded: made before, it would not see that BLAS, which would then
    start its own threads beside xent's."""
    global _controller
    from scipy.linalg import cython_blas  # noqa: F401  (loads SciPy's BLAS)

    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")

