"""Thread scaling and the one-thread threshold, measured.

For growing input sizes, times xent.log_softmax and xent.cross_entropy at each
thread count (forcing the team even for small inputs) and prints the time
relative to one thread, so the size below which one thread wins
(xent._runtime.threads.SMALL_WORK) can be read off the table.

    python bench/threads.py [--max-threads N]
"""

import argparse
import os
import statistics
import time

import numpy as np

# Exact teams: the scaling table must not shrink when the machine is busy.
os.environ.setdefault("XENT_DYNAMIC_THREADS", "0")

import xent  # noqa: E402
from xent._runtime import threads as _threading  # noqa: E402


def median_time(f, repeat):
    f()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    threads = sorted({1, 2, 4, 8, 16, args.max_threads} & set(range(1, args.max_threads + 1)))
    rng = np.random.default_rng(0)
    saved_threshold, saved_threads = _threading.SMALL_WORK, xent.get_num_threads()
    _threading.SMALL_WORK = 0  # measure the team even where xent would not use it
    try:
        print(f"{'case':<28}{'elements':>10}  " + "  ".join(f"{t:>2} thr" for t in threads))
        for C in (10, 1000):
            for log2n in range(11, 25, 2):
                n = 1 << log2n
                rows = max(1, n // C)
                x = rng.standard_normal((rows, C), dtype=np.float32)
                t = rng.integers(0, C, rows)
                out = np.empty_like(x)
                for name, f in (("log_softmax", lambda: xent.log_softmax(x, out=out)),
                                ("cross_entropy", lambda: xent.cross_entropy(x, t))):
                    base = None
                    cells = []
                    for k in threads:
                        xent.set_num_threads(k)
                        repeat = max(5, min(2000, int(2e7 // max(x.size, 1))))
                        s = median_time(f, repeat)
                        base = base or s
                        cells.append(f"{s / base:6.2f}")
                    label = f"{name} C={C}"
                    print(f"{label:<28}{x.size:>10}  " + "  ".join(cells), flush=True)
    finally:
        _threading.SMALL_WORK = saved_threshold
        xent.set_num_threads(saved_threads)


if __name__ == "__main__":
    main()
