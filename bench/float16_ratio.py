"""float16 against float32 on the same logits, measured interleaved.

`xent bench` times each case once in turn; on a shared machine the memory
bandwidth (which bounds the float32 call) and the free compute (which bounds
the float16 call) drift between the two, so their ratio moves.  Here the two
calls alternate, with a one-read floor of each between them, and the medians
of --repeat rounds are compared: the float16 throughput as a multiple of the
float32 throughput (elements per second), run after run.

The operation is cross_entropy unless --op names logsumexp, or log_softmax or
softmax (written into a preallocated float32 `out=`, so the write is the same
for both dtypes).

    python bench/float16_ratio.py [--op cross_entropy] [--threads 2] [--repeat 9] [--runs 3]
"""

import argparse
import statistics
import time

import numpy as np

import xent


def _seconds(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


OPS = ("cross_entropy", "logsumexp", "log_softmax", "softmax")


def _call(op, x, t, out):
    """The timed call of `op` on logits x."""
    if op == "cross_entropy":
        return lambda: xent.cross_entropy(x, t)
    if op == "logsumexp":
        return lambda: xent.logsumexp(x, axis=-1)
    fn = getattr(xent, op)
    return lambda: fn(x, axis=-1, out=out)


def one_run(x32, x16, t, repeat, op="cross_entropy"):
    out = np.empty(x32.shape, np.float32) if op in ("log_softmax", "softmax") else None
    calls = {
        "floor32": lambda: np.max(x32),
        "float32": _call(op, x32, t, out),
        "floor16": lambda: np.max(x16.view(np.int16)),  # one read of the float16 bytes
        "float16": _call(op, x16, t, out),
    }
    for f in calls.values():
        f()  # warm-up
    times = {k: [] for k in calls}
    for _ in range(repeat):
        for k, f in calls.items():
            times[k].append(_seconds(f))
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=OPS, default="cross_entropy")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=2, default=(2048, 50257))
    args = parser.parse_args()
    xent.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n, c = args.shape
    x32 = rng.standard_normal((n, c), dtype=np.float32)
    x16 = x32.astype(np.float16)
    t = rng.integers(0, c, n)
    print(f"{args.op} {n}x{c}, {args.threads} thread(s), medians of {args.repeat}")
    for _ in range(args.runs):
        m = one_run(x32, x16, t, args.repeat, args.op)
        print(f"float32 {m['float32'] * 1e3:7.2f} ms ({m['float32'] / m['floor32']:.2f}x floor)  "
              f"float16 {m['float16'] * 1e3:7.2f} ms ({m['float16'] / m['floor16']:.2f}x floor)  "
              f"float16 throughput = {m['float32'] / m['float16']:.2f}x float32")


if __name__ == "__main__":
    main()
