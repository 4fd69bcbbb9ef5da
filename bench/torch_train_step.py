"""A training step of the loss only: xent.torch.cross_entropy vs F.cross_entropy.

Forward and backward of the loss on leaf logits that require grad (``x.grad`` reset
to None before each step, as ``optimizer.zero_grad()`` does), float32 on the CPU,
the same number of threads for both (``torch.set_num_threads(xent.get_num_threads())``).
Runs alternate between the two functions; the medians and their ratio are printed.

    python bench/torch_train_step.py [--repeat 9] [--shapes 2048x50257 32768x1000]
                                     [--label-smoothing 0.1]

PyTorch's CPU allocator maps large tensors with 4 KiB pages unless
``THP_MEM_ALLOC_ENABLE=1`` is set (xent.torch's gradient buffer is allocated by
NumPy, which asks for transparent huge pages); run both ways for a full picture.
"""

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

import xent
import xent.torch as xt


def step_times(fns, x, t, repeat, **kw):
    times = {name: [] for name in fns}
    for name, fn in fns.items():  # warm-up
        x.grad = None
        fn(x, t, **kw).backward()
    for _ in range(repeat):
        for name, fn in fns.items():
            x.grad = None
            t0 = time.perf_counter()
            fn(x, t, **kw).backward()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--shapes", nargs="+", default=["2048x50257", "32768x1000"])
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    args = parser.parse_args()

    torch.set_num_threads(xent.get_num_threads())
    print(
        f"threads: xent {xent.get_num_threads()}, torch {torch.get_num_threads()}; "
        f"torch {torch.__version__}; THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '')!r}"
    )
    fns = {"xent.torch": xt.cross_entropy, "torch": F.cross_entropy}
    for shape in args.shapes:
        N, C = map(int, shape.split("x"))
        g = torch.Generator().manual_seed(0)
        x = (torch.randn(N, C, generator=g) * 2).requires_grad_()
        t = torch.randint(0, C, (N,), generator=g)
        med = step_times(fns, x, t, args.repeat, label_smoothing=args.label_smoothing)
        print(
            f"{N}x{C} float32 (label_smoothing={args.label_smoothing}): "
            f"xent.torch {med['xent.torch'] * 1e3:.1f} ms, torch {med['torch'] * 1e3:.1f} ms, "
            f"torch/xent = {med['torch'] / med['xent.torch']:.2f}x"
        )
        del x


if __name__ == "__main__":
    main()
