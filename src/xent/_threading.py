"""How many threads xent's kernels use.

xent keeps its own thread count, shared by every Python thread, so that
``set_num_threads`` in one thread is seen by calls made from another.

* The default is OpenMP's default team size (``OMP_NUM_THREADS`` or the number
  of cores), read once at import.
* ``XENT_NUM_THREADS`` in the environment overrides it at import.
* ``set_num_threads(n)`` changes it at run time.
* ``threadpoolctl.threadpool_limits(n, user_api="openmp")`` changes it for the
  duration of the ``with`` block: xent registers a threadpoolctl controller for
  its own extension module (user API "openmp"), so threadpoolctl limits xent
  exactly as it limits the OpenMP runtime.

Small inputs run on one thread whatever the setting: waking a team costs more
than the work (see ``SMALL_WORK``).
"""

import operator
import os
import warnings

from xent import _xent_runtime

# Below this many input elements a call runs on one thread.  Measured with
# bench/threads.py on the 2-vCPU development machines: a second thread starts to
# pay between 8K and 32K float32 elements (0.5-0.9x the one-thread time), and on a
# busy machine a team of two can stall for milliseconds on small inputs; 32K is
# where it wins reliably (BENCHMARKS.md, "Threads").
SMALL_WORK = 1 << 15


def _initial_num_threads():
    value = os.environ.get("XENT_NUM_THREADS", "").strip()
    if value:
        try:
            n = int(value)
            if n >= 1:
                return n
        except ValueError:
            pass
        warnings.warn(
            f"XENT_NUM_THREADS={value!r} is not a positive integer; ignoring it",
            RuntimeWarning,
            stacklevel=2,
        )
    return max(1, _xent_runtime.openmp_max_threads())


_num_threads = _initial_num_threads()

# OpenMP's team size at import.  If it later drops in the calling thread (an
# `omp_set_num_threads` from threadpoolctl's OpenMP controller, for one), xent
# follows it down too, so a limit applies even where threadpoolctl has not
# picked up xent's own controller.
_OPENMP_DEFAULT = max(1, _xent_runtime.openmp_max_threads())


def _limit():
    n = _num_threads
    omp = _xent_runtime.openmp_max_threads()
    return n if omp >= _OPENMP_DEFAULT else max(1, min(n, omp))


def get_num_threads():
    """Return the number of threads xent's kernels may use.

    Returns
    -------
    int
        The current limit (at least 1).  Without OpenMP the kernels run
        serially whatever this says; ``show_config()`` tells which.

    Examples
    --------
    >>> import xent
    >>> xent.get_num_threads() >= 1
    True
    """
    return _limit()


def set_num_threads(n):
    """Set the number of threads xent's kernels may use.

    Parameters
    ----------
    n : int
        A positive integer.  It applies to every Python thread.

    Raises
    ------
    TypeError
        If `n` is not an integer.
    ValueError
        If `n` is less than 1.

    Examples
    --------
    >>> import xent
    >>> previous = xent.get_num_threads()
    >>> xent.set_num_threads(1)
    >>> xent.get_num_threads()
    1
    >>> xent.set_num_threads(previous)
    """
    global _num_threads
    if isinstance(n, bool):
        raise TypeError(f"n: expected a positive integer, got {n!r}")
    try:
        value = operator.index(n)
    except TypeError:
        raise TypeError(f"n: expected a positive integer, got {n!r}") from None
    if value < 1:
        raise ValueError(f"n: expected a positive integer, got {value}")
    _num_threads = value


def threads_for(n_elements):
    """Team size for a kernel that reads `n_elements` values."""
    return 1 if n_elements < SMALL_WORK else _limit()


def _register_with_threadpoolctl():
    """Let threadpoolctl see and limit xent (if threadpoolctl is installed)."""
    try:
        import threadpoolctl
    except ImportError:
        return
    if not hasattr(threadpoolctl, "register"):  # threadpoolctl < 3.0
        return

    class XentController(threadpoolctl.LibController):
        user_api = "openmp"
        internal_api = "xent"
        filename_prefixes = ("_xent_runtime",)

        def get_num_threads(self):
            return _num_threads

        def set_num_threads(self, num_threads):
            set_num_threads(max(1, int(num_threads)))

        def get_version(self):
            from xent import __version__

            return __version__

    threadpoolctl.register(XentController)


_register_with_threadpoolctl()
