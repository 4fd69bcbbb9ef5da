"""Choose the compiled kernel variant for this CPU, once, at import.

setup.py builds the same kernels (``_kernels.pyx``) for up to three SIMD levels:
``baseline`` (portable; SSE2 on x86-64), ``avx2`` (x86-64-v3: AVX2+FMA) and
``avx512`` (x86-64-v4).  The best level the CPU supports is used, unless the
environment variable ``XENT_SIMD`` names another one (``baseline``, ``avx2``,
``avx512`` or ``auto``).  A level the CPU cannot run, or that was not built, is
never loaded: the override then falls back to the best safe level with a warning.
"""

import importlib
import os
import warnings

from xent._runtime import xent_openmp as _xent_runtime

LEVELS = ("avx512", "avx2", "baseline")
_MODULES = {"baseline": "xent._kernels", "avx2": "xent._kernels_avx2", "avx512": "xent._kernels_avx512"}


def _try_import(level):
    try:
        return importlib.import_module(_MODULES[level])
    except ImportError:
        return None


def _choose():
    supported = _xent_runtime.cpu_simd_levels()
    requested = os.environ.get("XENT_SIMD", "auto").strip().lower() or "auto"
    if requested != "auto":
        if requested not in LEVELS:
            warnings.warn(
                f"XENT_SIMD={requested!r} is not one of auto, {', '.join(LEVELS)}; using auto",
                RuntimeWarning,
                stacklevel=3,
            )
        elif requested not in supported:
            warnings.warn(
                f"XENT_SIMD={requested!r}: this CPU does not support it; using auto",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            module = _try_import(requested)
            if module is not None:
                return requested, module, supported
            warnings.warn(
                f"XENT_SIMD={requested!r}: that variant was not built; using auto",
                RuntimeWarning,
                stacklevel=3,
            )
    for level in supported:
        module = _try_import(level)
        if module is not None:
            return level, module, supported
    raise ImportError("xent: no compiled kernel module could be imported")  # pragma: no cover


level, kernels, cpu_levels = _choose()
