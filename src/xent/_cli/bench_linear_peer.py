"""The processes of their own that ``xent bench`` runs for each hidden-state shape.

``python -m xent._cli.bench_linear_peer '{"mode": M, "shape": [N, D, C], "repeat": R,
"threads": T}'`` draws the same inputs as :func:`xent._cli.bench_linear.hidden_inputs`,
sets ``xent.set_num_threads(T)`` and ``torch.set_num_threads(T)``, and

``"mode": "time"``
    times ``torch.nn.functional.linear_cross_entropy`` (when PyTorch is installed) in
    each of :data:`~xent._cli.bench_linear.TORCH_WAYS`, forward (no tensor requires
    grad) and forward+backward (``input`` and ``linear_weight`` require grad; the
    gradients are dropped after each call), and NumPy's GEMM, the reference, in
    interleaved rounds (:func:`~xent._cli.bench_linear.time_rounds`): a process of its
    own, because two thread pools spinning in one process slow each other down, with
    its own GEMM because the load of a shared machine differs from one process to the
    next;
``"mode": "memory"``
    measures one call of each PyTorch way (RSS) and of each xent case (tracemalloc and
    RSS) with :func:`xent._cli.peak_memory.measure`, after a warm-up of each on the
    first 512 rows (which initialises the libraries and BLAS's buffers).  The parent
    starts it with glibc told to map every block of 64 KiB or more afresh
    (``MEMORY_ENV``), from the first allocation on, so that the RSS peak counts every
    large allocation of the call (freed heap pages reused would hide them);

and prints one JSON line: ``{"torch": [{"way", "pass", "median_s", "times_s",
"warnings"} or {"way", "pass", "rss_bytes", "returned_bytes"}, ...], "gemm_s",
"gemm_times_s", "xent_memory":
{case: {"tracemalloc_bytes", "rss_bytes", "returned_bytes"}}, "allocator_fixed": bool,
"torch_version": str or None, "threads": int}``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

import xent
from xent._cli.bench import Unavailable
from xent._cli.bench_linear import (
    PAUSE_S,
    TORCH_WAYS,
    XENT_CASES,
    blas_limited,
    hidden_inputs,
    numpy_gemm,
    time_rounds,
)
from xent._cli.peak_memory import fix_allocator, measure

_WARM_ROWS = 512  # the warm-up before a memory measurement: a slice of the rows
#: The environment of the memory process: glibc maps blocks >= 64 KiB afresh and
#: returns them when freed (the same as peak_memory.fix_allocator, from the start).
MEMORY_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "65536",
    "MALLOC_TRIM_THRESHOLD_": "0",
    "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536:glibc.malloc.trim_threshold=0",
}


def _torch_calls(torch: Any, inputs) -> list[tuple[str, str, Callable[[], object]]]:
    """``(way, pass, call)`` for each of PyTorch's ways and passes."""
    F = torch.nn.functional
    x, w, t = (torch.from_numpy(inputs[k]) for k in ("x", "w", "t"))
    xg, wg = (torch.from_numpy(inputs[k]).requires_grad_() for k in ("x", "w"))
    calls = []
    for label, keywords in TORCH_WAYS:
        options = None if keywords is None else torch.nn.LinearCrossEntropyOptions(**keywords)

        def forward(options=options):
            return F.linear_cross_entropy(x, w, t, options=options)

        def forward_backward(options=options):
            loss = F.linear_cross_entropy(xg, wg, t, options=options)
            loss.backward()
            grads = (xg.grad, wg.grad)
            xg.grad = wg.grad = None  # fresh gradients every call
            return loss.detach(), grads  # what the call keeps: loss and gradients

        calls.append((label, "forward", forward))
        calls.append((label, "forward+backward", forward_backward))
    return calls


def _time_torch(torch: Any, inputs, repeat: int, threads: int) -> dict:
    """PyTorch's ways and, in the same rounds, the GEMM reference of this process."""
    buf = np.empty((inputs["x"].shape[0], inputs["w"].shape[0]), np.float32)
    calls = {("numpy", "GEMM"): numpy_gemm(inputs, buf)}
    calls.update(
        ((way, torch_pass), call) for way, torch_pass, call in _torch_calls(torch, inputs)
    )
    with warnings.catch_warnings(record=True) as caught, blas_limited(threads):
        warnings.simplefilter("always")
        timed = time_rounds(calls, repeat, pause=PAUSE_S)
    gemm_s, gemm_times = timed.pop(("numpy", "GEMM"))
    messages = sorted({str(c.message) for c in caught})
    rows = [{"way": way, "pass": torch_pass, "median_s": median, "times_s": times,
             "warnings": messages}
            for (way, torch_pass), (median, times) in timed.items()]
    return {"torch": rows, "gemm_s": gemm_s, "gemm_times_s": gemm_times}


def _warm_slice(inputs):
    return {**inputs, "x": inputs["x"][:_WARM_ROWS], "t": inputs["t"][:_WARM_ROWS]}


def _torch_memory(torch: Any, inputs) -> list[dict]:
    rows = []
    warm_calls = _torch_calls(torch, _warm_slice(inputs))
    for (way, torch_pass, call), (_, _, warm) in zip(_torch_calls(torch, inputs), warm_calls):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warm()
            m = measure(call, use_tracemalloc=False)
        rows.append({"way": way, "pass": torch_pass, "rss_bytes": m.rss_bytes,
                     "returned_bytes": m.returned_bytes})
    return rows


def _xent_memory(inputs) -> dict[str, dict]:
    warm = _warm_slice(inputs)
    memory = {}
    for case, factory in XENT_CASES.items():
        try:
            factory(warm)()  # initialises the code paths and BLAS's buffers
            call = factory(inputs)
        except Unavailable:
            continue
        memory[case] = asdict(measure(call))
    return memory


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    mode, shape, threads = spec["mode"], spec["shape"], int(spec["threads"])
    torch = None
    if importlib.util.find_spec("torch") is not None:
        try:
            import torch
        except (ImportError, OSError):
            torch = None
    xent.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    inputs = hidden_inputs(shape)
    answer = {
        "torch_version": None if torch is None else torch.__version__,
        "threads": xent.get_num_threads(),
    }
    if mode == "time":
        if torch is not None:
            answer.update(_time_torch(torch, inputs, int(spec["repeat"]), threads))
    elif mode == "memory":
        answer["allocator_fixed"] = fix_allocator()  # already so from the start (MEMORY_ENV)
        answer["torch"] = [] if torch is None else _torch_memory(torch, inputs)
        answer["xent_memory"] = _xent_memory(inputs)
    else:
        raise ValueError(f"mode: expected 'time' or 'memory', got {mode!r}")
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
