"""`xent eval` on a memory-mapped .npy file vs `evaluate` on the same array in memory.

Writes a float32 logits file (default 2 GiB, 1024 classes) and its targets into a
temporary directory (or uses the files given), puts the logits in the page cache
the way reading them from disk does (evicted, then read once sequentially), and
times, interleaved:

* ``inmem``   -- ``evaluate(x, t)`` on the arrays loaded into memory;
* ``stream``  -- ``xent._cli.eval.evaluate_npy`` (memory-mapped, batched) in this process;
* ``cli``     -- ``python -m xent eval LOGITS TARGET --json`` wall time;
* ``startup`` -- the same command on a 4-row file (subtracted from ``cli``).

A trial is kept only when the other processes on the machine used less than 5% of
one core during it (psutil), so the numbers are not those of a shared, busy machine.

    python bench/eval_mmap.py [--gib 2] [--trials 7] [LOGITS.npy TARGET.npy]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from xent._cli.eval import evaluate_npy
from xent._api.evaluate import evaluate


def write_files(directory, gib, C=1024):
    rows = int(gib * (1 << 30)) // (4 * C)
    rng = np.random.default_rng(0)
    base = (rng.standard_normal((8192, C)) * 2).astype(np.float32)
    lpath, tpath = os.path.join(directory, "logits.npy"), os.path.join(directory, "target.npy")
    x = np.lib.format.open_memmap(lpath, mode="w+", dtype=np.float32, shape=(rows, C))
    for i in range(0, rows, 8192):
        n = min(8192, rows - i)
        x[i : i + n] = base[:n] + np.float32(i % 7)
    x.flush()
    del x
    t = rng.integers(0, C, rows)
    t[::17] = -100
    np.save(tpath, t)
    return lpath, tpath


def page_cache_as_if_read(path):
    """Evict the file from the page cache, then read it once sequentially."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while os.read(fd, 16 << 20):
            pass
    finally:
        os.close(fd)


def main():
    import psutil

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", metavar="FILE")
    p.add_argument("--gib", type=float, default=2.0)
    p.add_argument("--trials", type=int, default=7)
    args = p.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="xent-eval-bench-")
    L, T = args.files if args.files else write_files(tmp.name, args.gib)
    page_cache_as_if_read(L)
    x, t = np.load(L), np.load(T)
    tiny_x, tiny_t = os.path.join(tmp.name, "tiny_x.npy"), os.path.join(tmp.name, "tiny_t.npy")
    np.save(tiny_x, x[:4])
    np.save(tiny_t, t[:4])
    me = psutil.Process()

    def busy():
        c = psutil.cpu_times()
        return c.user + c.system + c.nice + getattr(c, "irq", 0) + getattr(c, "softirq", 0)

    def own():
        c = me.cpu_times()
        return c.user + c.system + c.children_user + c.children_system

    def cli(lp, tp):
        r = subprocess.run([sys.executable, "-m", "xent", "eval", lp, tp, "--json"],
                           capture_output=True, text=True, check=True)
        return r.stdout

    methods = {
        "inmem": lambda: evaluate(x, t),
        "stream": lambda: evaluate_npy(L, T),
        "cli": lambda: cli(L, T),
        "startup": lambda: cli(tiny_x, tiny_t),
    }
    for f in methods.values():
        f()
    times = {k: [] for k in methods}
    discarded = 0
    while min(map(len, times.values())) < args.trials:
        for k, f in methods.items():
            while True:
                while psutil.cpu_percent(interval=0.3) > 10:
                    time.sleep(1)
                b0, o0, t0 = busy(), own(), time.perf_counter()
                f()
                wall = time.perf_counter() - t0
                if (busy() - b0) - (own() - o0) < 0.05 * wall:
                    times[k].append(wall)
                    break
                discarded += 1
    gb = x.nbytes / 1e9
    print(f"{L}: {x.shape} {x.dtype}, {gb:.2f} GB; xent threads {os.environ.get('XENT_NUM_THREADS', 'default')}; "
          f"{args.trials} clean trials each, {discarded} discarded")
    med = {k: float(np.median(v)) for k, v in times.items()}
    for k, v in times.items():
        print(f"  {k:8s} median {med[k]:.3f} s  min {min(v):.3f} s")
    net = med["cli"] - med["startup"]
    print(f"  evaluate in memory {gb / med['inmem']:.2f} GB/s; evaluate_npy {gb / med['stream']:.2f} GB/s "
          f"({med['stream'] / med['inmem']:.2f}x); xent eval minus startup {gb / net:.2f} GB/s "
          f"({net / med['inmem']:.2f}x)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
