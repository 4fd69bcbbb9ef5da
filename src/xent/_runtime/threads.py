"""How many threads xent's kernels use.

xent keeps its own thread count, shared by every Python thread, so that
``set_num_threads`` in one thread is seen by calls made from another.

* The default is OpenMP's default team size (``OMP_NUM_THREADS`` or the number
  of cores), read once at import.
* ``XENT_NUM_THREADS`` in the environment overrides it at import.  A value that
  is not a positive integer, or more than ``max_threads()``, is ignored with a
  ``RuntimeWarning`` (the default applies).
* ``set_num_threads(n)`` changes it at run time; it refuses more than
  ``max_threads()`` with ``ValueError``.
* ``threadpoolctl.threadpool_limits(n, user_api="openmp")`` changes it for the
  duration of the ``with`` block: xent registers a threadpoolctl controller for
  its own extension module (user API "openmp"), so threadpoolctl limits xent
  exactly as it limits the OpenMP runtime.

The count is an upper bound, like a team under OpenMP's ``omp_set_dynamic``:

* Small inputs run on one thread whatever the setting: waking a team costs more
  than the work (see ``SMALL_WORK``).
* Cores that other processes keep busy are left to them (Linux): every
  ``LOAD_WINDOW`` seconds at most, xent reads how much CPU time the other
  processes used on the CPUs it may run on (``/proc/stat`` less this process's
  own time) and uses no more threads than the CPUs they left free.  With a
  static split of rows, one thread that shares a core with another process
  holds up the whole call; one thread less is faster (BENCHMARKS.md, "Under
  load").  ``XENT_DYNAMIC_THREADS=0`` in the environment turns this off, so the
  team is exactly the count set.
* OpenMP's wait policy is left as the user set it (``OMP_WAIT_POLICY``,
  ``GOMP_SPINCOUNT``), libgomp's default otherwise: its idle threads spin for
  some milliseconds after a call, which makes back-to-back calls fast on a
  quiet machine; beside busy processes the team shrinks to the CPUs they
  leave free, so no idle thread of xent's spins on a core they need.  A passive wait cost 15-70 microseconds a call here, and changing it
  would change it for every library sharing libgomp (PyTorch included)
  (BENCHMARKS.md, "Under load").
"""

import math
import os
import threading
import time
import warnings

from xent._runtime import xent_openmp as _xent_runtime
from xent._runtime.integers import as_integer

# Below this many input elements a call runs on one thread.  Measured with
# bench/threads.py on the 2-vCPU development machines: a second thread starts to
# pay between 8K and 32K float32 elements (0.5-0.9x the one-thread time), and on a
# busy machine a team of two can stall for milliseconds on small inputs; 32K is
# where it wins reliably (BENCHMARKS.md, "Threads").
SMALL_WORK = 1 << 15

# The most threads per CPU that set_num_threads accepts.  Beyond one thread per
# CPU, threads only take turns, so a few per CPU are legal (to try
# oversubscription) but thousands are a mistake: libgomp then aborts ("Thread
# creation failed" at 40000 on a 2-vCPU machine) or crashes (10**6: a stack
# allocation per team member overflows).  8 per CPU stays far below both.
THREADS_PER_CPU = 8

# How often (seconds) xent looks at the other processes' CPU use, and over how
# long a time it averages it.  /proc/stat counts in ticks of 10 ms, so a window
# of 0.25 s measures a busy core to within about 0.1 CPU; reading it costs some
# 30 microseconds per 100 CPUs, at most once a window.
LOAD_WINDOW = 0.25


def max_threads():
    """The largest thread count xent accepts on this machine.

    ``THREADS_PER_CPU`` times ``os.cpu_count()``, and no more than OpenMP's
    thread limit (``OMP_THREAD_LIMIT``) when that is set.
    """
    cap = THREADS_PER_CPU * (os.cpu_count() or 1)
    return max(1, min(cap, _xent_runtime.openmp_thread_limit()))


def _initial_num_threads():
    value = os.environ.get("XENT_NUM_THREADS", "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if 1 <= n <= max_threads():
            return n
        reason = ("is more than this machine can run (at most %d, %d per CPU)"
                  % (max_threads(), THREADS_PER_CPU) if n > 1 else "is not a positive integer")
        warnings.warn(
            f"XENT_NUM_THREADS={value!r} {reason}; ignoring it", RuntimeWarning, stacklevel=3,
        )
    return _openmp_default()


def _openmp_default():
    n = max(1, _xent_runtime.openmp_max_threads())
    if n > max_threads():  # OMP_NUM_THREADS=100000: libgomp would crash too
        warnings.warn(
            f"OpenMP's default of {n} threads is more than this machine can run; xent uses "
            f"{max_threads()}", RuntimeWarning, stacklevel=4,
        )
        n = max_threads()
    return n


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
        The current limit (at least 1).  A call uses fewer threads on small
        inputs and when other processes keep some of the CPUs busy.  Without
        OpenMP the kernels run serially whatever this says; ``show_config()``
        tells which.

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
        A positive integer, at most 8 per CPU of the machine (``8 *
        os.cpu_count()``) and at most ``OMP_THREAD_LIMIT`` when that is set.
        It applies to every Python thread.  More threads than CPUs only take
        turns; far more cannot be started.

    Raises
    ------
    TypeError
        If `n` is not an integer.
    ValueError
        If `n` is less than 1 or more than the machine can run.

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
    value = as_integer(n, "n", "a positive integer")
    if value < 1:
        raise ValueError(f"n: expected a positive integer, got {value}")
    if value > max_threads():
        raise ValueError(
            f"n: expected at most {max_threads()} threads ({THREADS_PER_CPU} per CPU of "
            f"{os.cpu_count()}, within OMP_THREAD_LIMIT), got {value}"
        )
    _num_threads = value


class _OtherLoad:
    """CPUs that other processes keep busy, measured from /proc/stat (Linux).

    `free` is the number of CPUs this process may run on (its affinity) less
    those the other processes used over the last window, rounded to the
    nearest CPU.  Processes with a positive nice value are not counted: the
    kernel gives way to xent's threads over theirs.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.free = None  # unknown: no limit
        self.enabled = os.environ.get("XENT_DYNAMIC_THREADS", "").strip() != "0"
        self.hz = 100
        self.start = None  # (time, busy CPU seconds, own CPU seconds) at the window's start
        if self.enabled:
            try:
                self.hz = os.sysconf("SC_CLK_TCK")
                self.start = self._sample()
            except (OSError, ValueError, AttributeError, ImportError):
                self.enabled = False  # no /proc/stat (not Linux): no adjustment

    def _sample(self):
        cpus = os.sched_getaffinity(0)
        with open("/proc/stat", "rb") as f:
            lines = f.read().split(b"\n")
        busy = 0
        for line in lines[1:]:
            if not line.startswith(b"cpu"):
                break
            fields = line.split()
            if int(fields[0][3:]) in cpus:
                # user nice system idle iowait irq softirq ...: nice is left out
                busy += int(fields[1]) + int(fields[3]) + int(fields[6]) + int(fields[7])
        import resource  # Unix only; a failed import turns the adjustment off

        own = resource.getrusage(resource.RUSAGE_SELF)  # all its threads, to the microsecond
        # a niced process's own user time is counted under "nice", not "user"
        niced = os.getpriority(os.PRIO_PROCESS, 0) > 0
        own_busy = own.ru_stime + (0.0 if niced else own.ru_utime)
        return time.monotonic(), busy / self.hz, own_busy, len(cpus)

    def free_cpus(self):
        """CPUs left free by other processes (None: unknown), updated once a window."""
        start = self.start
        if start is not None and time.monotonic() - start[0] >= LOAD_WINDOW:
            if self.lock.acquire(blocking=False):  # another Python thread is on it
                try:
                    self._update()
                finally:
                    self.lock.release()
        return self.free

    def _update(self):
        try:
            now = self._sample()
        except (OSError, ValueError):
            self.enabled, self.start, self.free = False, None, None
            return
        then, self.start = self.start, now
        others = max(0.0, (now[1] - then[1]) - (now[2] - then[2])) / (now[0] - then[0])
        self.free = max(1, now[3] - math.floor(others + 0.5))


_load = _OtherLoad()


def threads_for(n_elements):
    """Team size for a kernel that reads `n_elements` values."""
    if n_elements < SMALL_WORK:
        return 1
    n = _limit()
    if n > 1 and _load.enabled:
        free = _load.free_cpus()
        if free is not None:
            n = min(n, free)
    return n


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
        filename_prefixes = ("xent_openmp",)

        def get_num_threads(self):
            return _num_threads

        def set_num_threads(self, num_threads):
            # a limit, so one above what xent accepts means no limit
            set_num_threads(max(1, min(int(num_threads), max_threads())))

        def get_version(self):
            from xent import __version__

            return __version__

    threadpoolctl.register(XentController)


_register_with_threadpoolctl()
