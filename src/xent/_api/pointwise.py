"""Plumbing shared by the pointwise losses (``binary.py``, ``kl_div.py``).

The pointwise kernels (``_cython/pointwise.pxi``) see up to six operands of one logical
shape -- input, target, weight, pos_weight, per-element loss, gradient -- each
with its own element strides (0 where an operand is broadcast).  This module
prepares them: it broadcasts small operands as zero-stride views (never
materialised), merges adjacent dimensions that every operand walks contiguously
(so a C-contiguous problem becomes one long row whatever its rank), decides
whether an output buffer may be written directly, and runs the kernel.

Nothing here validates user input: callers do that first (``validation.py``),
so a call that raises has written nothing.
"""

import math

import numpy as np

from xent._runtime.dispatch import kernels as _kernels
from xent._runtime.threads import threads_for


def _strides_ok(a):
    """True when the kernels may read `a` as it is (aligned, whole-item strides)."""
    return a.flags.aligned and all(s % a.itemsize == 0 for s in a.strides)


def kernel_operand(a, compute):
    """`a` in the computation dtype, aligned, with whole-item strides.

    Targets and weights of another dtype than the computation dtype are
    converted with ``astype`` (a copy of that operand); otherwise `a` is used
    as it is, whatever its strides.
    """
    if a.dtype != compute:
        from xent._api.validation import rounded

        return rounded(a, compute)  # (beyond float32's range: +-inf, as intended)
    if not _strides_ok(a):
        return np.array(a, order="C")  # (ascontiguousarray would make 0-d 1-d)
    return a


def broadcast_shape_check(value, name, shape, what):
    """`value` as a real array that broadcasts to `shape`; ValueError otherwise.

    None (an optional operand not given) stays None, as in broadcast_operand.
    """
    from xent._api.validation import as_real_array

    if value is None:
        return None
    a = as_real_array(value, name)
    try:
        ok = np.broadcast_shapes(a.shape, tuple(shape)) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name} has shape {a.shape}, which cannot be broadcast to {what} {tuple(shape)}"
        )
    return a


def broadcast_operand(a, shape, compute):
    """A zero-stride view of `a` (converted to `compute`) with shape `shape`."""
    if a is None:
        return None
    return np.broadcast_to(kernel_operand(a, compute), shape)


def direct_output(out, compute, reads, inplace_of=None):
    """`out` if a kernel may write it directly, else None (temporary, then copy).

    Direct writes need the computation dtype, whole-item strides, no
    self-overlap, and no memory shared with the arrays the kernel reads, except
    that `out` may be exactly `inplace_of` (same address, shape and strides).
    """
    if out.dtype != compute or not _strides_ok(out):
        return None
    if any(s == 0 and n > 1 for s, n in zip(out.strides, out.shape)):
        return None
    for a in reads:
        if a is None or not np.may_share_memory(out, a):
            continue
        same = (
            a is inplace_of
            and out.__array_interface__["data"][0] == a.__array_interface__["data"][0]
            and out.strides == a.strides
            and out.shape == a.shape
        )
        if not same:
            return None
    return out


def coalesce(shape, operands):
    """(shape, strides) of the C-order iteration over `shape` with dimensions merged.

    Dimensions of length 1 are dropped, and a dimension is merged into the next
    one when every operand's stride over it is the next one's stride times the
    next one's length.  Merging keeps the C order of the elements, so an index in
    the merged iteration is the C-order flat index in `shape`.  Strides are in
    elements; absent operands get zeros.
    """
    dims = []
    for d, size in enumerate(shape):
        if size == 1:
            continue
        st = [a.strides[d] // a.itemsize if a is not None else 0 for a in operands]
        if dims and all(prev == size * s for prev, s in zip(dims[-1][1], st)):
            dims[-1][0] *= size
            dims[-1][1] = st
        else:
            dims.append([size, st])
    if not dims:
        dims = [[1, [0] * len(operands)]]
    out_shape = tuple(size for size, _ in dims)
    out_strides = tuple(tuple(st[k] for _, st in dims) for k in range(len(operands)))
    return out_shape, out_strides


def run(kind, shape, operands, half=0, scale=1.0):
    """Run a pointwise kernel; return (float64 sum of the losses, first bad indices).

    `operands` are the six slots of ``_cython/pointwise.pxi`` (None when absent), each
    of logical shape `shape`.  The sum is formed from one float64 partial per
    fixed block of elements, added by ``np.sum`` in a fixed order, so it does not
    depend on the number of threads.  The bad indices (BCE on probabilities) are
    the C-order flat indices of the first probability and the first target
    outside [0, 1], or -1.
    """
    numel = math.prod(shape)
    n_tasks = -(-numel // _kernels.POINTWISE_TASK)
    partials = np.zeros(n_tasks, dtype=np.float64)
    bad = np.full((n_tasks, 2), -1, dtype=np.intp)
    if numel:
        cshape, cstrides = coalesce(shape, operands)
        _kernels.pointwise(
            kind=kind, operands=tuple(operands), shape=cshape, strides=cstrides, half=half,
            scale=scale, partials=partials, bad=bad, n_threads=threads_for(numel),
        )
    with np.errstate(over="ignore", invalid="ignore"):  # inf, NaN: the answers
        total = np.float64(np.sum(partials, dtype=np.float64))
    firsts = []
    for col in range(2):
        hits = bad[:, col][bad[:, col] >= 0]  # tasks are in C order: the first hit is first
        firsts.append(int(hits[0]) if hits.size else -1)
    return total, firsts[0], firsts[1]


def finish(total, reduction, denominator, compute):
    """The scalar loss for "sum" / "mean" (NaN for a zero denominator, as PyTorch)."""
    from xent._api.validation import rounded

    if reduction == "sum":
        return rounded(total, compute)
    with np.errstate(invalid="ignore", divide="ignore"):
        return rounded(np.float64(total) / np.float64(denominator), compute)


def half_code(logits):
    """(array the kernel reads as slot 0, half code) for a validated Logits."""
    if logits.half is None:
        return kernel_operand(logits.array, logits.compute), 0
    a = logits.array
    if not _strides_ok(a):
        a = np.array(a, order="C")
    return a.view(np.uint16), 2 if logits.half == "bfloat16" else 1
