"""Benchmarks of xent's kernels against NumPy, SciPy and PyTorch.

This module is the library behind ``xent bench``; it can also be used directly::

    >>> from xent import bench
    >>> rows = bench.run(quick=True, cases=["log_softmax"])  # doctest: +SKIP
    >>> print(bench.format_header(bench.machine_info()))     # doctest: +SKIP

What is timed
-------------
For every *case* (a function and an input shape) each available implementation is
timed on the same input array:

``xent``
    the xent function writing into a preallocated ``out=`` array where its API has one
    (``log_softmax``, ``softmax``, ``logsumexp``), so no result allocation is timed.
``numpy``
    the plain NumPy formula (e.g. ``x - m - log(sum(exp(x - m)))``), with the full-size
    temporaries it allocates; that is its cost.
``scipy``
    ``scipy.special.<function>`` when SciPy is importable; allocates its result.
``torch``
    ``torch.<function>`` on ``torch.from_numpy(x)`` (zero-copy) when PyTorch is
    importable; allocates its result.
``floor``
    ``np.max`` over every input array: one streaming read of the data, the least
    any of these functions can cost.

Each callable is called once untimed (warm-up: page-faults the output in, loads the
caches, lets libraries initialise), then ``repeat`` times under
:func:`time.perf_counter`; the median is reported.  For implementations that return
a new array the time includes allocating and freeing it.

Reported per row: ``median_s``; ``gbps`` = bytes of the input arrays / median time;
``x_floor`` = median / floor median; ``speedup`` = median / xent median (how many
times faster xent is than that implementation; ``1`` for xent itself).

Adding a function
-----------------
Register a :class:`Function` with its implementations::

    register(Function("entropy", {"xent": ..., "numpy": ..., "scipy": ...}))

Each implementation is a *factory*: it receives the inputs (a dict of arrays made by
``Function.make_inputs``) and returns a zero-argument callable, the thing that is
timed.  Preallocate outputs in the factory, not in the callable.  A factory raises
:class:`Unavailable` when its library is not installed; the implementation is then
skipped.  Functions that need more than logits (e.g. class targets) pass their own
``make_inputs``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import xent

__all__ = [
    "DEFAULT_REPEAT",
    "DEFAULT_SHAPES",
    "FUNCTIONS",
    "QUICK_REPEAT",
    "QUICK_SHAPES",
    "Case",
    "Function",
    "Table",
    "Unavailable",
    "default_cases",
    "format_header",
    "logits_inputs",
    "machine_info",
    "numpy_log_softmax",
    "numpy_logsumexp",
    "numpy_softmax",
    "plot",
    "register",
    "require_matplotlib",
    "run",
    "thread_count",
    "time_call",
    "write_json",
]

DTYPE = "float32"
DEFAULT_SHAPES: tuple[tuple[int, ...], ...] = ((32768, 1000), (2048, 50257), (4_000_000, 10))
QUICK_SHAPES: tuple[tuple[int, ...], ...] = ((2048, 1000), (256, 50257), (200_000, 10))
DEFAULT_REPEAT = 5
QUICK_REPEAT = 3
FLOOR = "floor"

Inputs = Mapping[str, np.ndarray]
Factory = Callable[[Inputs], Callable[[], object]]


class Unavailable(Exception):
    """Raised by an implementation factory whose library cannot be imported."""


# --------------------------------------------------------------------------- registry


def logits_inputs(shape: tuple[int, ...], dtype: np.dtype) -> dict[str, np.ndarray]:
    """Make the standard benchmark logits.

    Parameters
    ----------
    shape : tuple of int
        Shape of the logits; the class axis is the last one.
    dtype : numpy.dtype
        Float dtype of the logits.

    Returns
    -------
    dict
        ``{"x": x}`` with ``x = default_rng(0).standard_normal(shape) * 3``, built in
        place so only one array of that size is allocated.

    Examples
    --------
    >>> logits_inputs((2, 3), np.dtype(np.float32))["x"].shape
    (2, 3)
    """
    x = np.random.default_rng(0).standard_normal(shape, dtype=dtype)
    x *= 3
    return {"x": x}


@dataclass(frozen=True)
class Function:
    """A function to benchmark and its implementations.

    Parameters
    ----------
    name : str
        Name shown in the table (and the xent function it times).
    impls : mapping of str to factory
        Implementation name (``"xent"``, ``"numpy"``, ``"scipy"``, ``"torch"``) to a
        factory ``f(inputs) -> callable``; rows are reported in this order.
    make_inputs : callable, optional
        ``make_inputs(shape, dtype) -> dict`` of input arrays; the default makes logits
        ``{"x": ...}`` with :func:`logits_inputs`.  Cases sharing the same
        ``make_inputs``, shape and dtype share one set of arrays.
    """

    name: str
    impls: Mapping[str, Factory]
    make_inputs: Callable[[tuple[int, ...], np.dtype], dict[str, np.ndarray]] = field(
        default=logits_inputs
    )


@dataclass(frozen=True)
class Case:
    """One benchmark case: a registered function on inputs of one shape.

    Parameters
    ----------
    function : str
        Key in :data:`FUNCTIONS`.
    shape : tuple of int
        Shape of the logits.
    dtype : str, optional
        Float dtype of the logits, ``"float32"`` by default.

    Examples
    --------
    >>> Case("softmax", (256, 50257)).label
    'softmax 256x50257'
    """

    function: str
    shape: tuple[int, ...]
    dtype: str = DTYPE

    @property
    def shape_str(self) -> str:
        """The shape as ``"2048x50257"``."""
        return "x".join(str(n) for n in self.shape)

    @property
    def label(self) -> str:
        """``"<function> <shape>"``, e.g. for plots."""
        return f"{self.function} {self.shape_str}"


#: Registered functions, in the order ``xent bench`` runs them.
FUNCTIONS: dict[str, Function] = {}


def register(function: Function) -> Function:
    """Add (or replace) a function in :data:`FUNCTIONS`.

    Parameters
    ----------
    function : Function
        The function and its implementation factories.

    Returns
    -------
    Function
        ``function``, unchanged.
    """
    FUNCTIONS[function.name] = function
    return function


def default_cases(quick: bool = False, functions: Iterable[str] | None = None) -> list[Case]:
    """The standard cases: every registered function on every standard shape.

    Parameters
    ----------
    quick : bool, optional
        Use the small :data:`QUICK_SHAPES` instead of :data:`DEFAULT_SHAPES`.
    functions : iterable of str, optional
        Restrict to these function names (default: all of :data:`FUNCTIONS`).

    Returns
    -------
    list of Case
        Shape-major, so cases sharing an input array are adjacent and the array is
        generated once.

    Examples
    --------
    >>> [c.label for c in default_cases(quick=True, functions=["softmax"])]
    ['softmax 2048x1000', 'softmax 256x50257', 'softmax 200000x10']
    """
    names = list(FUNCTIONS) if functions is None else list(functions)
    shapes = QUICK_SHAPES if quick else DEFAULT_SHAPES
    return [Case(name, shape) for shape in shapes for name in names]


def _optional(module: str) -> Any:
    """Import ``module`` or raise :class:`Unavailable`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(f"{module} is not importable: {exc}") from None


def _xent(name: str, out_shape: Callable[[np.ndarray], tuple[int, ...]] | None) -> Factory:
    """Factory timing ``xent.<name>(x, out=out)`` with ``out`` preallocated.

    ``out_shape(x)`` gives the output shape; ``None`` means the function has no
    ``out=`` and its result allocation is timed.
    """

    def factory(inputs: Inputs) -> Callable[[], object]:
        f = getattr(xent, name)
        x = inputs["x"]
        if out_shape is None:
            return lambda: f(x)
        out = np.empty(out_shape(x), dtype=x.dtype)
        return lambda: f(x, out=out)

    return factory


def _numpy(formula: Callable[[np.ndarray], object]) -> Factory:
    """Factory timing a plain NumPy formula of the logits."""

    def factory(inputs: Inputs) -> Callable[[], object]:
        x = inputs["x"]
        return lambda: formula(x)

    return factory


def _scipy(name: str) -> Factory:
    """Factory timing ``scipy.special.<name>(x, axis=-1)``."""

    def factory(inputs: Inputs) -> Callable[[], object]:
        f = getattr(_optional("scipy.special"), name)
        x = inputs["x"]
        return lambda: f(x, axis=-1)

    return factory


def _torch(name: str) -> Factory:
    """Factory timing ``torch.<name>(torch.from_numpy(x), dim=-1)`` (zero-copy input)."""

    def factory(inputs: Inputs) -> Callable[[], object]:
        torch = _optional("torch")
        f = getattr(torch, name)
        t = torch.from_numpy(inputs["x"])
        return lambda: f(t, dim=-1)

    return factory


def numpy_logsumexp(x: np.ndarray) -> np.ndarray:
    """The plain NumPy formula xent's ``logsumexp`` is compared with (last axis).

    ``m + log(sum(exp(x - m)))`` with ``m`` the row maximum; allocates ``x - m`` and
    its ``exp`` as full-size temporaries.

    Examples
    --------
    >>> float(numpy_logsumexp(np.zeros((1, 4)))[0]) == float(np.log(4))
    True
    """
    m = x.max(axis=-1, keepdims=True)
    return np.log(np.sum(np.exp(x - m), axis=-1)) + m[..., 0]


def numpy_log_softmax(x: np.ndarray) -> np.ndarray:
    """The plain NumPy formula xent's ``log_softmax`` is compared with (last axis).

    ``x - m - log(sum(exp(x - m)))`` with ``m`` the row maximum.

    Examples
    --------
    >>> numpy_log_softmax(np.zeros((1, 2))).tolist() == [[-np.log(2)] * 2]
    True
    """
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def numpy_softmax(x: np.ndarray) -> np.ndarray:
    """The plain NumPy formula xent's ``softmax`` is compared with (last axis).

    ``e = exp(x - m); e / sum(e)`` with ``m`` the row maximum.

    Examples
    --------
    >>> numpy_softmax(np.zeros((1, 4))).tolist()
    [[0.25, 0.25, 0.25, 0.25]]
    """
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - m)
    e /= np.sum(e, axis=-1, keepdims=True)
    return e


def _same_shape(x: np.ndarray) -> tuple[int, ...]:
    return x.shape


def _reduced_shape(x: np.ndarray) -> tuple[int, ...]:
    return x.shape[:-1]


register(
    Function(
        "log_softmax",
        {
            "xent": _xent("log_softmax", _same_shape),
            "numpy": _numpy(numpy_log_softmax),
            "scipy": _scipy("log_softmax"),
            "torch": _torch("log_softmax"),
        },
    )
)
register(
    Function(
        "softmax",
        {
            "xent": _xent("softmax", _same_shape),
            "numpy": _numpy(numpy_softmax),
            "scipy": _scipy("softmax"),
            "torch": _torch("softmax"),
        },
    )
)
register(
    Function(
        "logsumexp",
        {
            "xent": _xent("logsumexp", _reduced_shape),
            "numpy": _numpy(numpy_logsumexp),
            "scipy": _scipy("logsumexp"),
            "torch": _torch("logsumexp"),
        },
    )
)

# --------------------------------------------------------------------------- timing


def time_call(fn: Callable[[], object], repeat: int) -> tuple[float, list[float]]:
    """Time ``fn()``: one untimed warm-up call, then ``repeat`` timed calls.

    Parameters
    ----------
    fn : callable
        Zero-argument callable; its result is discarded (freeing it is timed).
    repeat : int
        Number of timed calls, at least 1.

    Returns
    -------
    median : float
        Median of the timed calls, in seconds.
    times : list of float
        Every timed call, in seconds.

    Examples
    --------
    >>> median, times = time_call(lambda: sum(range(100)), 3)
    >>> len(times)
    3
    """
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def _floor(inputs: Inputs) -> None:
    # One streaming read of every input array: the least any case can cost.
    for a in inputs.values():
        np.max(a)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


@contextlib.contextmanager
def thread_count(threads: int | None):
    """Context manager: set xent's (and, if installed, PyTorch's) thread count.

    Parameters
    ----------
    threads : int or None
        Thread count to use inside the block; ``None`` changes nothing.

    Yields
    ------
    int
        ``xent.get_num_threads()`` inside the block (what xent really uses, e.g. 1
        when it was built without OpenMP).

    Notes
    -----
    The previous counts are restored on exit, also after an exception.
    """
    if threads is None:
        yield xent.get_num_threads()
        return
    torch = None
    if importlib.util.find_spec("torch") is not None:
        with contextlib.suppress(ImportError):
            import torch
    old = xent.get_num_threads()
    old_torch = torch.get_num_threads() if torch is not None else None
    xent.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        yield xent.get_num_threads()
    finally:
        xent.set_num_threads(old)
        if torch is not None:
            torch.set_num_threads(old_torch)


def _resolve_cases(cases: Iterable[Case | str] | None, quick: bool) -> list[Case]:
    if cases is None:
        return default_cases(quick)
    cases = list(cases)
    resolved: list[Case] = []
    for case in cases:
        if isinstance(case, str):
            resolved.extend(default_cases(quick, [case]))
        elif isinstance(case, Case):
            resolved.append(case)
        else:
            raise TypeError(f"cases: expected Case objects or function names, got {case!r}")
    for case in resolved:
        if case.function not in FUNCTIONS:
            raise ValueError(
                f"cases: unknown function {case.function!r}; known: {', '.join(FUNCTIONS)}"
            )
    if any(isinstance(c, str) for c in cases):
        # Function names expand shape by shape; regroup so each array is made once.
        order = {shape: i for i, shape in enumerate(dict.fromkeys(c.shape for c in resolved))}
        resolved.sort(key=lambda c: order[c.shape])
    return resolved


def _run_case(
    case: Case, function: Function, inputs: Inputs, repeat: int, threads: int
) -> list[dict]:
    nbytes = sum(a.nbytes for a in inputs.values())
    timings: dict[str, tuple[float, list[float]]] = {}
    for impl, factory in function.impls.items():
        try:
            call = factory(inputs)
        except Unavailable:
            continue
        timings[impl] = time_call(call, repeat)
        del call  # free a preallocated output before the next factory makes its own
    timings[FLOOR] = time_call(lambda: _floor(inputs), repeat)

    floor_s = timings[FLOOR][0]
    xent_s = timings["xent"][0] if "xent" in timings else None
    rows = []
    for impl, (median, times) in timings.items():
        rows.append(
            {
                "case": case.function,
                "shape": list(case.shape),
                "dtype": case.dtype,
                "impl": impl,
                "median_s": median,
                "gbps": _ratio(nbytes / 1e9, median),
                "x_floor": _ratio(median, floor_s),
                "speedup": _ratio(median, xent_s) if xent_s is not None else None,
                "threads": threads,
                "bytes": nbytes,
                "repeat": repeat,
                "times_s": times,
            }
        )
    return rows


def run(
    quick: bool = False,
    threads: int | None = None,
    repeat: int | None = None,
    cases: Iterable[Case | str] | None = None,
    *,
    on_case: Callable[[Case, list[dict]], None] | None = None,
) -> list[dict]:
    """Run the benchmark cases and return one result row per case and implementation.

    Parameters
    ----------
    quick : bool, optional
        Small shapes (:data:`QUICK_SHAPES`) and :data:`QUICK_REPEAT` timed calls, so
        the whole run takes seconds.
    threads : int, optional
        Thread count for xent (and PyTorch, when installed) during the run; the
        previous counts are restored afterwards.  Default: leave them as they are.
    repeat : int, optional
        Timed calls per implementation (after one warm-up call); the median is
        reported.  Default :data:`DEFAULT_REPEAT`, or :data:`QUICK_REPEAT` if ``quick``.
    cases : iterable of Case or str, optional
        Cases to run; a string is a function name and stands for that function on the
        standard shapes.  Default: every registered function on the standard shapes.
    on_case : callable, optional
        Called as ``on_case(case, rows)`` after each case, e.g. to print progress.

    Returns
    -------
    list of dict
        Keys ``case``, ``shape``, ``dtype``, ``impl`` (``"xent"``, ``"numpy"``,
        ``"scipy"``, ``"torch"`` or ``"floor"``), ``median_s``, ``gbps``, ``x_floor``,
        ``speedup`` (implementation time / xent time), ``threads``, ``bytes``,
        ``repeat`` and ``times_s``.  Implementations whose library is not installed
        are left out.

    Raises
    ------
    ValueError
        If ``threads`` or ``repeat`` is not positive, or a case names an unknown
        function.

    Examples
    --------
    >>> rows = run(quick=True, repeat=1, cases=[Case("logsumexp", (64, 10))])
    >>> {"xent", "numpy", "floor"} <= {r["impl"] for r in rows}
    True
    """
    if repeat is None:
        repeat = QUICK_REPEAT if quick else DEFAULT_REPEAT
    if isinstance(repeat, bool) or not isinstance(repeat, (int, np.integer)) or repeat < 1:
        raise ValueError(f"repeat must be a positive integer, got {repeat!r}")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1
    ):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    cases = _resolve_cases(cases, quick)

    results: list[dict] = []
    with thread_count(threads) as n_threads:
        key = None
        inputs: Inputs | None = None
        for case in cases:
            function = FUNCTIONS[case.function]
            case_key = (function.make_inputs, case.shape, np.dtype(case.dtype))
            if case_key != key:
                inputs = None  # drop the previous arrays before making the next ones
                inputs = function.make_inputs(case.shape, np.dtype(case.dtype))
                key = case_key
            rows = _run_case(case, function, inputs, int(repeat), n_threads)
            results.extend(rows)
            if on_case is not None:
                on_case(case, rows)
    return results


# --------------------------------------------------------------------------- reporting


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Versions and hardware details recorded with the results.

    Returns
    -------
    dict
        ``xent``, ``numpy``, ``scipy``, ``torch`` versions (``None`` when not
        installed), ``python``, ``platform``, ``cpu``, ``cpu_count``,
        ``usable_cpus``, ``xent_threads`` and ``xent_config`` (the text of
        :func:`xent.show_config`).
    """
    config = io.StringIO()
    try:
        with contextlib.redirect_stdout(config):
            xent.show_config()
    except Exception as exc:  # a broken show_config must not lose the results
        config.write(f"show_config() failed: {exc!r}")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "xent": xent.__version__,
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "torch": _version("torch"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "xent_threads": xent.get_num_threads(),
        "xent_config": config.getvalue().strip(),
    }


def format_header(
    info: Mapping[str, Any], *, threads: int | None = None, repeat: int = DEFAULT_REPEAT
) -> str:
    """The lines printed above the table.

    Parameters
    ----------
    info : mapping
        From :func:`machine_info`.
    threads : int, optional
        xent's thread count during the run (default ``info["xent_threads"]``).
    repeat : int, optional
        Timed calls per implementation.

    Returns
    -------
    str
        Versions, thread count, hardware and what each column means.
    """
    threads = info["xent_threads"] if threads is None else threads

    def ver(name: str) -> str:
        return info[name] or "not installed"

    return "\n".join(
        [
            f"xent {info['xent']} bench: {threads} thread(s) for xent; "
            f"numpy {info['numpy']}, scipy {ver('scipy')}, torch {ver('torch')}",
            f"cpu: {info['cpu']} ({info['usable_cpus']} usable of {info['cpu_count']}); "
            f"python {info['python']}, {info['platform']}",
            f"time: median of {repeat} call{'s' if repeat != 1 else ''} after 1 warm-up; "
            "xent writes into a "
            "preallocated out=, the others allocate their result",
            "floor: np.max(x), one streaming read of the input; GB/s: input bytes / time; "
            "speed-up: impl time / xent time",
        ]
    )


def _fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


class Table:
    """Fixed-width text table, printable row by row while the benchmark runs.

    Parameters
    ----------
    cases : sequence of Case
        The cases that will be shown (sets the column widths).

    Examples
    --------
    >>> table = Table([Case("softmax", (2, 3))])
    >>> table.header().splitlines()[0].split()[:3]
    ['function', 'shape', 'impl']
    """

    COLUMNS = ("function", "shape", "impl", "ms", "GB/s", "x floor", "speed-up")

    def __init__(self, cases: Sequence[Case]):
        self._widths = [
            max([len(self.COLUMNS[0])] + [len(c.function) for c in cases]),
            max([len(self.COLUMNS[1])] + [len(c.shape_str) for c in cases]),
            6,
            10,
            8,
            8,
            9,
        ]

    def _line(self, cells: Sequence[str]) -> str:
        w = self._widths
        left = [f"{cells[i]:<{w[i]}}" for i in range(3)]
        right = [f"{cells[i]:>{w[i]}}" for i in range(3, len(cells))]
        return "  ".join(left + right).rstrip()

    def header(self) -> str:
        """Column titles and a rule."""
        title = self._line(self.COLUMNS)
        return title + "\n" + "-" * len(title)

    def rows(self, rows: Iterable[Mapping[str, Any]]) -> str:
        """One line per result row (as returned by :func:`run`)."""
        lines = []
        for r in rows:
            shape = "x".join(str(n) for n in r["shape"])
            speedup = None if r["impl"] in ("xent", FLOOR) else r["speedup"]
            lines.append(
                self._line(
                    [
                        r["case"],
                        shape,
                        r["impl"],
                        _fmt_ms(r["median_s"]),
                        _fmt(r["gbps"], ".2f" if (r["gbps"] or 0) < 10 else ".1f"),
                        _fmt(r["x_floor"], ".2f"),
                        _fmt(speedup, ".2f", "x"),
                    ]
                )
            )
        return "\n".join(lines)


def write_json(
    path: str | os.PathLike, results: list[dict], info: Mapping[str, Any], **settings: Any
) -> None:
    """Write the results and machine info as JSON.

    Parameters
    ----------
    path : str or path-like
        Output file (overwritten).
    results : list of dict
        From :func:`run`.
    info : mapping
        From :func:`machine_info`.
    **settings
        Run settings recorded alongside (e.g. ``quick=True, repeat=3``).

    Notes
    -----
    The file holds one object: ``{"xent_version", "machine", "settings", "results"}``.
    """
    doc = {
        "xent_version": info["xent"],
        "machine": dict(info),
        "settings": settings,
        "results": results,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def require_matplotlib() -> None:
    """Raise ImportError with an install hint if matplotlib cannot be imported."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from None


def plot(results: list[dict], path: str | os.PathLike) -> None:
    """Bar chart of each implementation's time relative to the floor.

    Parameters
    ----------
    results : list of dict
        From :func:`run`.
    path : str or path-like
        Image file; the format follows the extension (``.png``, ``.svg``, ...).

    Raises
    ------
    ImportError
        If matplotlib is not installed.

    Notes
    -----
    Uses :class:`matplotlib.figure.Figure` directly, so it neither needs nor changes
    a pyplot backend.  Lower is better; 1 is a single read of the input.
    """
    require_matplotlib()
    from matplotlib.figure import Figure

    groups = list(dict.fromkeys((r["case"], tuple(r["shape"])) for r in results))
    impls = list(dict.fromkeys(r["impl"] for r in results if r["impl"] != FLOOR))
    value = {(r["case"], tuple(r["shape"]), r["impl"]): r["x_floor"] for r in results}

    fig = Figure(figsize=(max(6.0, 1.1 * len(groups) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(impls))
    for i, impl in enumerate(impls):
        xs, ys = [], []
        for g, (case, shape) in enumerate(groups):
            v = value.get((case, shape, impl))
            if v is not None:
                xs.append(g + (i - (len(impls) - 1) / 2) * width)
                ys.append(v)
        ax.bar(xs, ys, width=width, label=impl)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--", label="floor (np.max)")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(
        [f"{case}\n{'x'.join(map(str, shape))}" for case, shape in groups], fontsize=8
    )
    ax.set_yscale("log")
    ax.set_ylabel("time / floor (lower is better)")
    threads = results[0]["threads"] if results else "?"
    ax.set_title(f"xent {xent.__version__}, {threads} thread(s)")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
