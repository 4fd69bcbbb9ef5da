"""Rows of tens to hundreds of classes: xent against the floor and PyTorch.

Rows this short are bound by per-row latency, not by memory or arithmetic: one
row's max, sum of exps and log follow each other, and the core waits on each.
xent computes unit-stride rows in batches (ROW_BATCH in _cython/thresholds.pxi: the
sums of 16 rows, then their logs and writes) so that the waits overlap.  This script
times, on float32 logits ``default_rng(0).standard_normal((N, C)) * 3``:

* ``cross_entropy(x, t, reduction="none")``,
* ``cross_entropy(x, t, return_grad=True, grad_out=buf)`` (mean),
* ``logsumexp(x, axis=-1)`` and ``log_softmax(x, axis=-1, out=buf)``,

against the floor (``np.max(x)``, one read) and, when installed, PyTorch's
``F.cross_entropy`` (forward, and forward + backward), ``torch.logsumexp`` and
``torch.log_softmax(out=)``, all medians of ``--repeat`` calls measured in one run.

Example::

    python bench/short_rows.py --threads 1 --repeat 9
"""

import argparse
import time

import numpy as np

import xent

SHAPES = ((131072, 40), (262144, 100), (65536, 300))


def median_seconds(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def torch_cases(x, t, threads):
    """PyTorch callables for the same cases, or {} without PyTorch."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return {}
    torch.set_num_threads(threads)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    out = torch.empty_like(xt)

    def fwd_bwd():
        leaf = xt.detach().requires_grad_()
        F.cross_entropy(leaf, tt).backward()

    return {
        "cross_entropy": lambda: F.cross_entropy(xt, tt, reduction="none"),
        "cross_entropy+grad": fwd_bwd,
        "logsumexp": lambda: torch.logsumexp(xt, dim=-1),
        "log_softmax(out=)": lambda: torch.log_softmax(xt, dim=-1, out=out),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=xent.get_num_threads())
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    xent.set_num_threads(args.threads)
    print(f"{args.threads} thread(s), medians of {args.repeat}; x floor = time / np.max(x)")
    print(f"{'case':22s} {'shape':>12s} {'xent ms':>9s} {'x floor':>8s} {'ns/row':>7s} "
          f"{'torch ms':>9s} {'speed-up':>8s}")
    for n, c in SHAPES:
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((n, c)) * 3).astype(np.float32)
        t = np.random.default_rng(1).integers(0, c, n)
        buf = np.empty_like(x)
        floor = median_seconds(lambda: np.max(x), args.repeat)
        ours = {
            "cross_entropy": lambda: xent.cross_entropy(x, t, reduction="none"),
            "cross_entropy+grad": lambda: xent.cross_entropy(
                x, t, return_grad=True, grad_out=buf
            ),
            "logsumexp": lambda: xent.logsumexp(x, axis=-1),
            "log_softmax(out=)": lambda: xent.log_softmax(x, axis=-1, out=buf),
        }
        theirs = torch_cases(x, t, args.threads)
        for name, fn in ours.items():
            sec = median_seconds(fn, args.repeat)
            line = (f"{name:22s} {n:>6d}x{c:<5d} {sec * 1e3:9.2f} {sec / floor:8.2f} "
                    f"{sec / n * 1e9:7.1f}")
            if name in theirs:
                other = median_seconds(theirs[name], args.repeat)
                line += f" {other * 1e3:9.2f} {other / sec:7.2f}x"
            print(line)


if __name__ == "__main__":
    main()
