"""``xent bench``'s hidden-state cases: cross-entropy with the classifier layer fused in.

For each shape ``(N, D, C)`` (hidden states ``input`` of N×D, ``linear_weight`` of C×D,
float32, targets drawn uniformly among the C classes) one run times, in this process, with
the same thread count and in interleaved rounds (:func:`time_rounds`: each callable once
per round, so that a shared machine's changing load reaches all alike):

``GEMM``
    the reference, the matrix product alone: ``np.matmul(input, linear_weight.T,
    out=buf)`` into a preallocated N×C buffer (NumPy's BLAS limited to the thread
    count with threadpoolctl).  Also ``scipy.linalg.blas.sgemm`` into the same buffer,
    the BLAS that xent calls, shown for information.  BLAS is limited to the thread
    count around the timing, not in each call (a threadpoolctl switch costs ~1 ms).
``xent`` cases (:data:`XENT_CASES`)
    ``loss`` (``linear_cross_entropy``), ``evaluate`` (``xent.evaluate(input, target,
    linear_weight=...)``, when xent's ``evaluate`` takes it), ``loss+grad input``
    (``return_grad=("input",)``) and ``loss+all grads`` (``return_grad=True``).

Then, per shape, a process of its own (:mod:`xent._cli.bench_linear_peer`) times
PyTorch's ``F.linear_cross_entropy`` when it is installed (two BLAS/OpenMP thread pools
spinning in one process slow each other down, which would make the comparison unfair),
and another, whose allocator returns every large block when it is freed, measures the
peak extra memory of one call of each, xent's and PyTorch's
(:mod:`xent._cli.peak_memory`).

Reported per row: the median time, ``x_gemm`` (time / the NumPy GEMM's time in the same
process and rounds: PyTorch's process times the GEMM too, because a shared machine's load
differs from one process to the next), the peak extra memory by tracemalloc and by the
RSS high-water mark, and for PyTorch rows ``speedup`` (PyTorch's ``x_gemm`` over xent's
for the same work: the forward against xent's ``loss``, the forward and backward against
``loss+all grads``; the ratio of the times when both processes ran under the same load).

Examples
--------
>>> rows = run(shapes=[(64, 16, 100)], repeat=1)            # doctest: +SKIP
>>> print(Table().render(rows))                              # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

import xent
from xent._cli.bench import Unavailable, thread_count

__all__ = [
    "HIDDEN_REPEAT",
    "HIDDEN_SHAPES",
    "QUICK_HIDDEN_SHAPES",
    "TORCH_PASSES",
    "TORCH_WAYS",
    "XENT_CASES",
    "Table",
    "hidden_inputs",
    "run",
    "summary_lines",
    "time_rounds",
]

DTYPE = "float32"
#: (N, D, C) of the full run: the issue's targets.
HIDDEN_SHAPES: tuple[tuple[int, int, int], ...] = (
    (2048, 1024, 32000),
    (4096, 1024, 32000),
    (1024, 2048, 128256),
    (16384, 512, 10000),
)
QUICK_HIDDEN_SHAPES: tuple[tuple[int, int, int], ...] = ((512, 256, 8192),)
#: Timed calls per case unless the run says otherwise (one call of the largest shape
#: is seconds; a full run with PyTorch's six ways takes about 10 minutes on 2 cores).
HIDDEN_REPEAT = 3
#: PyTorch's ways, in the order shown: ``(label, LinearCrossEntropyOptions keywords or
#: None for options=None)``.
TORCH_WAYS: tuple[tuple[str, dict | None], ...] = (
    ("options=None", None),
    ("LinearCrossEntropyOptions()", {}),
    ("batch_chunk_size=256", {"batch_chunk_size": 256}),
)
#: PyTorch's passes and the xent case doing the same work.
TORCH_PASSES: dict[str, str] = {"forward": "loss", "forward+backward": "loss+all grads"}
#: Seconds slept after each timed call: an idle BLAS or OpenMP pool stops spinning.
PAUSE_S = 0.2

Inputs = Mapping[str, np.ndarray]


def hidden_inputs(shape: Sequence[int]) -> dict[str, np.ndarray]:
    """The benchmark's hidden states, classifier weight and targets.

    Parameters
    ----------
    shape : (N, D, C)

    Returns
    -------
    dict
        ``x`` (N, D) standard normal, ``w`` (C, D) normal of variance 1/D (logits of
        unit variance, as a trained head's), float32, drawn with ``default_rng(0)``;
        ``t`` (N,) int64 uniform in [0, C) from ``default_rng(1)``.  The peer process
        draws the same arrays.

    Examples
    --------
    >>> d = hidden_inputs((4, 3, 5))
    >>> d["x"].shape, d["w"].shape, d["t"].shape
    ((4, 3), (5, 3), (4,))
    """
    n, d, c = (int(s) for s in shape)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((c, d), dtype=np.float32)
    w *= np.float32(1.0 / math.sqrt(d))
    t = np.random.default_rng(1).integers(0, c, n, dtype=np.int64)
    return {"x": x, "w": w, "t": t}


def _torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def evaluate_takes_linear_weight() -> bool:
    """Whether this xent's ``evaluate`` has a ``linear_weight`` keyword."""
    try:
        return "linear_weight" in inspect.signature(xent.evaluate).parameters
    except (TypeError, ValueError):
        return False


def _xent_loss(inputs: Inputs) -> Callable[[], object]:
    x, w, t = inputs["x"], inputs["w"], inputs["t"]
    return lambda: xent.linear_cross_entropy(x, w, t)


def _xent_evaluate(inputs: Inputs) -> Callable[[], object]:
    if not evaluate_takes_linear_weight():
        raise Unavailable("xent.evaluate has no linear_weight yet")
    x, w, t = inputs["x"], inputs["w"], inputs["t"]
    return lambda: xent.evaluate(x, t, linear_weight=w)


def _xent_grad_input(inputs: Inputs) -> Callable[[], object]:
    x, w, t = inputs["x"], inputs["w"], inputs["t"]
    return lambda: xent.linear_cross_entropy(x, w, t, return_grad=("input",))


def _xent_all_grads(inputs: Inputs) -> Callable[[], object]:
    x, w, t = inputs["x"], inputs["w"], inputs["t"]
    return lambda: xent.linear_cross_entropy(x, w, t, return_grad=True)


#: xent's cases, in the order shown: name to factory ``f(inputs) -> callable`` (the
#: callable returns what the call keeps: the loss and the gradients).
XENT_CASES: dict[str, Callable[[Inputs], Callable[[], object]]] = {
    "loss": _xent_loss,
    "evaluate": _xent_evaluate,
    "loss+grad input": _xent_grad_input,
    "loss+all grads": _xent_all_grads,
}


def numpy_gemm(inputs: Inputs, buf: np.ndarray) -> Callable[[], object]:
    """The reference: ``np.matmul(x, w.T, out=buf)``; time it inside
    :func:`blas_limited` (not in the call: threadpoolctl costs ~1 ms a switch)."""
    x, w = inputs["x"], inputs["w"]
    return lambda: np.matmul(x, w.T, out=buf)


def _scipy_gemm(inputs: Inputs, buf: np.ndarray) -> Callable[[], object]:
    from scipy.linalg.blas import sgemm

    x, w = inputs["x"], inputs["w"]
    # buf.T = w @ x.T, as xent's logits product (Fortran operands read in place)
    return lambda: sgemm(1.0, w.T, x.T, trans_a=True, c=buf.T, overwrite_c=True)


def blas_limited(threads: int):
    """Context manager: every BLAS loaded (NumPy's, SciPy's) limited to `threads`."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().limit(limits=threads, user_api="blas")


def time_rounds(calls: Mapping[str, Callable[[], object]], repeat: int,
                pause: float = 0.0) -> dict[str, tuple[float, list[float]]]:
    """Time several callables in interleaved rounds: each once untimed, then `repeat`
    rounds in which each is timed once, in order.

    On a shared machine the load changes from one minute to the next; interleaving
    spreads that over every callable alike, so their ratios hold better than those of
    timings taken one callable after the other.

    Parameters
    ----------
    calls : mapping of str to callable
        Zero-argument callables; their results are discarded (freeing them is timed).
    repeat : int
        Timed rounds.
    pause : float, optional
        Seconds slept after each call, untimed (lets a BLAS pool stop spinning).

    Returns
    -------
    dict
        Name to ``(median, times)`` in seconds.

    Examples
    --------
    >>> r = time_rounds({"a": lambda: None, "b": lambda: sum(range(99))}, 3)
    >>> sorted(r), len(r["a"][1])
    (['a', 'b'], 3)
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()
        time.sleep(pause)
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
            time.sleep(pause)
    return {name: (statistics.median(t), t) for name, t in times.items()}


def _row(shape, impl, case, median, times, threads, repeat, **more) -> dict[str, Any]:
    return {
        "case": case,
        "shape": [int(s) for s in shape],
        "dtype": DTYPE,
        "impl": impl,
        "median_s": median,
        "times_s": times,
        "threads": threads,
        "repeat": repeat,
        **more,
    }


def _time_in_process(shape, inputs, repeat, threads) -> list[dict]:
    """The GEMMs and xent's cases, timed here in interleaved rounds."""
    buf = np.empty((inputs["x"].shape[0], inputs["w"].shape[0]), np.float32)
    calls = {("numpy", "GEMM"): numpy_gemm(inputs, buf)}
    try:
        calls[("scipy", "GEMM")] = _scipy_gemm(inputs, buf)
    except ImportError:
        pass  # SciPy's GEMM is for information; NumPy's always runs
    skipped = {}
    for case, factory in XENT_CASES.items():
        try:
            calls[("xent", case)] = factory(inputs)
        except Unavailable as exc:
            skipped[case] = str(exc)
    with blas_limited(threads):
        timed = time_rounds(calls, repeat, pause=PAUSE_S)
    rows = []
    for (impl, case), (median, times) in timed.items():
        rows.append(_row(shape, impl, case, median, times, threads, repeat))
    for case, why in skipped.items():
        rows.append(_row(shape, "xent", case, None, [], threads, repeat, skipped=why))
    order = [("numpy", "GEMM"), ("scipy", "GEMM")] + [("xent", c) for c in XENT_CASES]
    return sorted(rows, key=lambda r: order.index((r["impl"], r["case"])))


def _run_peer(mode, shape, repeat, threads, timeout) -> dict:
    """Run the peer process of one shape in `mode` ("time" or "memory"); its JSON
    answer, or ``{"error": ...}``."""
    from xent._cli.bench_linear_peer import MEMORY_ENV

    spec = {"mode": mode, "shape": list(shape), "repeat": repeat, "threads": threads}
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(xent.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, env.get("PYTHONPATH")) if p
    )
    if mode == "memory":
        env.update(MEMORY_ENV)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "xent._cli.bench_linear_peer", json.dumps(spec)],
            capture_output=True, text=True, env=env, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"{mode} process ran past {timeout} s"}
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-1:])
        return {"error": f"{mode} process failed (exit {proc.returncode}): {tail}"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"error": f"{mode} process printed no result"}


def _merge_peers(rows: list[dict], timed: Mapping, memory: Mapping, shape, threads,
                 repeat) -> list[dict]:
    """Add the memory figures to xent's rows, and PyTorch's rows."""
    xent_memory = memory.get("xent_memory", {})
    for row in rows:
        m = xent_memory.get(row["case"]) if row["impl"] == "xent" else None
        row["peak_extra_tracemalloc_bytes"] = None if m is None else m["tracemalloc_bytes"]
        row["peak_extra_rss_bytes"] = None if m is None else m["rss_bytes"]
        row["returned_bytes"] = None if m is None else m["returned_bytes"]
    torch_memory = {(m["way"], m["pass"]): m for m in memory.get("torch", [])}
    peer_gemm = timed.get("gemm_s")
    if peer_gemm is not None:
        rows.append(_row(shape, "numpy", "GEMM", peer_gemm, timed["gemm_times_s"], threads,
                         repeat, way="PyTorch's process", x_gemm=1.0))
    for t in timed.get("torch", []):
        m = torch_memory.get((t["way"], t["pass"]), {})
        rows.append(
            _row(shape, "torch", t["pass"], t["median_s"], t["times_s"], threads, repeat,
                 way=t["way"], peak_extra_tracemalloc_bytes=None,
                 peak_extra_rss_bytes=m.get("rss_bytes"),
                 returned_bytes=m.get("returned_bytes"), warnings=t.get("warnings", []),
                 torch_version=timed.get("torch_version"),
                 x_gemm=t["median_s"] / peer_gemm if peer_gemm else None)
        )
    gemm = next((r["median_s"] for r in rows if r["impl"] == "numpy" and "way" not in r), None)
    for row in rows:
        if "way" not in row:  # timed in this process
            timed_here = gemm and row["median_s"] is not None
            row["x_gemm"] = row["median_s"] / gemm if timed_here else None
    mine = {r["case"]: r for r in rows if r["impl"] == "xent"}
    for row in rows:
        if row["impl"] == "torch":
            row["speedup"] = _speedup(row, mine.get(TORCH_PASSES[row["case"]]))
    _fastest_torch(rows)
    errors = [answer["error"] for answer in (timed, memory) if "error" in answer]
    if errors:
        for row in rows:
            row["peer_error"] = "; ".join(errors)
    return rows


def _speedup(torch_row: Mapping, xent_row: Mapping | None) -> float | None:
    """PyTorch's time over xent's, each first divided by the GEMM of its own process
    (the processes ran at different moments of a shared machine's load)."""
    if xent_row is None or not xent_row.get("x_gemm") or not torch_row.get("x_gemm"):
        return None
    return torch_row["x_gemm"] / xent_row["x_gemm"]


def _fastest_torch(rows: list[dict]) -> None:
    """On xent's loss and all-grads rows: the fastest PyTorch way for the same work and
    xent's speed-up over it."""
    for torch_pass, case in TORCH_PASSES.items():
        ways = [r for r in rows if r["impl"] == "torch" and r["case"] == torch_pass
                and r.get("speedup") is not None]
        mine = next((r for r in rows if r["impl"] == "xent" and r["case"] == case), None)
        if not ways or mine is None:
            continue
        best = min(ways, key=lambda r: r["median_s"])
        mine["fastest_torch"] = {"pass": torch_pass, "way": best["way"],
                                 "median_s": best["median_s"], "x_gemm": best["x_gemm"]}
        mine["speedup_over_fastest_torch"] = best["speedup"]


def run(
    quick: bool = False,
    threads: int | None = None,
    repeat: int | None = None,
    shapes: Iterable[Sequence[int]] | None = None,
    *,
    peer: bool = True,
    peer_timeout: float = 3600.0,
    on_shape: Callable[[tuple[int, ...], list[dict]], None] | None = None,
) -> list[dict]:
    """Time the hidden-state cases and measure their memory; one row per timing.

    Parameters
    ----------
    quick : bool, optional
        :data:`QUICK_HIDDEN_SHAPES` instead of :data:`HIDDEN_SHAPES`.
    threads : int, optional
        Thread count for xent (and BLAS, and PyTorch in the peer process); default:
        xent's current count.
    repeat : int, optional
        Timed calls per case after one warm-up (default :data:`HIDDEN_REPEAT`).
    shapes : iterable of (N, D, C), optional
        Instead of the standard shapes.
    peer : bool, optional
        Run the peer processes (PyTorch's times, and every memory figure; default True).
    peer_timeout : float, optional
        Seconds each peer process of one shape may run.
    on_shape : callable, optional
        ``on_shape(shape, rows)`` after each shape, e.g. to print its table.

    Returns
    -------
    list of dict
        Keys ``case`` (``"GEMM"``, an :data:`XENT_CASES` name, or a PyTorch pass
        ``"forward"`` / ``"forward+backward"``), ``shape`` ``[N, D, C]``, ``dtype``,
        ``impl`` (``"numpy"``, ``"scipy"``, ``"xent"``, ``"torch"``), ``way`` (PyTorch's
        options; ``"PyTorch's process"`` for the GEMM timed there), ``median_s`` (None
        for a skipped case, with ``skipped`` saying why),
        ``times_s``, ``x_gemm``, ``peak_extra_tracemalloc_bytes``,
        ``peak_extra_rss_bytes``, ``returned_bytes``, ``speedup`` (PyTorch rows),
        ``fastest_torch`` and ``speedup_over_fastest_torch`` (xent's loss and all-grads
        rows, when PyTorch ran), ``threads``, ``repeat``; ``peer_error`` when the peer
        process failed.
    """
    if repeat is None:
        repeat = HIDDEN_REPEAT
    if shapes is None:
        shapes = QUICK_HIDDEN_SHAPES if quick else HIDDEN_SHAPES
    results: list[dict] = []
    with thread_count(threads) as n_threads:
        for shape in shapes:
            shape = tuple(int(s) for s in shape)
            inputs = hidden_inputs(shape)
            rows = _time_in_process(shape, inputs, repeat, n_threads)
            del inputs  # the peers draw their own copies
            timed = memory = {}
            if peer and _torch_installed():
                timed = _run_peer("time", shape, repeat, n_threads, peer_timeout)
            if peer:
                memory = _run_peer("memory", shape, repeat, n_threads, peer_timeout)
            rows = _merge_peers(rows, timed, memory, shape, n_threads, repeat)
            results.extend(rows)
            if on_shape is not None:
                on_shape(shape, rows)
    return results


# --------------------------------------------------------------------------- reporting


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    value, unit = (seconds * 1e3, "ms") if seconds >= 1e-3 else (seconds * 1e6, "us")
    return f"{value:.1f} {unit}" if value >= 100 else f"{value:.2f} {unit}"


def _fmt_mib(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:.1f} MiB"


def _fmt_ratio(value: float | None, suffix: str = "x") -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}{suffix}"


def _label(row: Mapping[str, Any]) -> str:
    if row["impl"] == "numpy":
        where = f" ({row['way']})" if row.get("way") else ""
        return f"GEMM alone: np.matmul{where}"
    if row["impl"] == "scipy":
        return "GEMM alone: scipy sgemm"
    if row["impl"] == "torch":
        return f"torch {row['case']}, {row['way']}"
    return f"xent {row['case']}"


class Table:
    """The hidden-state results as a fixed-width text table, one block per shape.

    Examples
    --------
    >>> Table().header().split()[:4]
    ['N,', 'D,', 'C', 'way']
    """

    COLUMNS = ("N, D, C", "way", "time", "x GEMM", "extra (tracemalloc)", "extra (RSS)",
               "speed-up")
    _WIDTHS = (16, 51, 10, 7, 19, 11, 8)

    def _line(self, cells: Sequence[str]) -> str:
        w = self._WIDTHS
        left = [f"{cells[0]:<{w[0]}}", f"{cells[1]:<{w[1]}}"]
        right = [f"{c:>{n}}" for c, n in zip(cells[2:], w[2:])]
        return "  ".join(left + right).rstrip()

    def header(self) -> str:
        """Column titles and a rule."""
        title = self._line(self.COLUMNS)
        return title + "\n" + "-" * len(title)

    def rows(self, rows: Sequence[Mapping[str, Any]]) -> str:
        """The lines of one shape's rows (as :func:`run` returns them)."""
        lines = []
        for i, r in enumerate(rows):
            shape = "x".join(str(n) for n in r["shape"]) if i == 0 else ""
            if r["median_s"] is None:
                lines.append(self._line([shape, _label(r), f"({r.get('skipped', 'skipped')})"]))
                continue
            speedup = r.get("speedup") if r["impl"] == "torch" else None
            lines.append(
                self._line([
                    shape, _label(r), _fmt_time(r["median_s"]), _fmt_ratio(r.get("x_gemm")),
                    _fmt_mib(r.get("peak_extra_tracemalloc_bytes")),
                    _fmt_mib(r.get("peak_extra_rss_bytes")), _fmt_ratio(speedup),
                ])
            )
        lines.extend(" " * (self._WIDTHS[0] + 2) + s for s in summary_lines(rows))
        return "\n".join(lines)

    def render(self, rows: Sequence[Mapping[str, Any]]) -> str:
        """Header and every shape's block."""
        blocks = [self.header()]
        for shape in dict.fromkeys(tuple(r["shape"]) for r in rows):
            blocks.append(self.rows([r for r in rows if tuple(r["shape"]) == shape]))
        return "\n".join(blocks)


def summary_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """xent's speed-up over the fastest PyTorch way, and a failed peer's error.

    Examples
    --------
    >>> rows = [{"impl": "xent", "case": "loss", "median_s": 1.0, "fastest_torch":
    ...          {"pass": "forward", "way": "options=None", "median_s": 1.5},
    ...          "speedup_over_fastest_torch": 1.5}]
    >>> summary_lines(rows)
    ['xent over the fastest PyTorch: forward 1.50x (options=None)']
    """
    parts = []
    for r in rows:
        best = r.get("fastest_torch")
        if r["impl"] == "xent" and best is not None:
            parts.append(f"{best['pass']} {r['speedup_over_fastest_torch']:.2f}x "
                         f"({best['way']})")
    lines = ["xent over the fastest PyTorch: " + ", ".join(parts)] if parts else []
    error = next((r["peer_error"] for r in rows if r.get("peer_error")), None)
    if error:
        lines.append(f"a peer process failed: {error}")
    return lines


def describe(repeat: int, torch_installed: bool) -> str:
    """The lines printed above the hidden-state table: what each column means."""
    lines = [
        "Cross-entropy from hidden states (float32; input N x D, linear_weight C x D, "
        "int64 targets)",
        f"time: median of {repeat} call{'s' if repeat != 1 else ''} after 1 warm-up; "
        "x GEMM: time / np.matmul(input, linear_weight.T, out=buf) of this run, same threads",
        "extra: peak memory of one call beyond its inputs and the gradients it returns, "
        "measured in a separate process: tracemalloc (NumPy's allocations) and the RSS "
        "high-water mark (every page; glibc set to map blocks >= 64 KiB afresh)",
    ]
    if torch_installed:
        lines.append(
            "torch: F.linear_cross_entropy timed in a process of its own with its own GEMM, "
            "same threads; forward without gradients, forward+backward for input and "
            "weight; speed-up: torch's x GEMM / xent's (loss, or loss+all grads)"
        )
    return "\n".join(lines)
