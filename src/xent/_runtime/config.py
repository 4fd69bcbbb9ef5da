"""show_config(): what this build of xent is and how it will run."""

import platform
import sys

import numpy as np

from xent._runtime import dispatch as _dispatch
from xent._runtime import xent_openmp as _xent_runtime
from xent._runtime.threads import get_num_threads


def config_lines():
    """The lines show_config prints, as a list of strings."""
    from xent import __version__

    omp = "enabled" if _xent_runtime.openmp_enabled() else "disabled (serial build)"
    return [
        f"xent: {__version__}",
        f"Python: {sys.version.split()[0]} ({platform.machine()})",
        f"NumPy: {np.__version__}",
        f"compiler: {_xent_runtime.compiler()}",
        f"OpenMP: {omp}",
        f"threads: {get_num_threads()}",
        f"SIMD: {_dispatch.kernels.simd_level()} (variant {_dispatch.level!r}; "
        f"CPU supports {', '.join(_dispatch.cpu_levels)}; override with XENT_SIMD)",
        f"hand-written SIMD paths: {', '.join(_dispatch.kernels.simd_features()) or 'none'}",
    ]


def show_config():
    """Print xent's version, compiler, OpenMP status, thread count and SIMD level.

    Examples
    --------
    >>> import xent
    >>> xent.show_config()  # doctest: +ELLIPSIS
    xent: ...
    """
    print("\n".join(config_lines()))
