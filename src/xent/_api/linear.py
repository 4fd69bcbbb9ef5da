"""Cross-entropy from hidden states, the classifier layer fused in: linear_cross_entropy.

The logits ``z = input @ linear_weight.T + linear_bias`` of a language model's head are
N×C (8192 tokens × 128k classes is 4 GiB of float32) and exist only to be reduced to one
number per row and, in training, to a gradient.  Here they never exist whole:

* The loss alone (class indices) and ``evaluate`` go by tiles of classes
  (``LinearHead.loss_tiles``): each thread computes a tile of rows × classes into its
  own scratch and reduces it at once into per-row parts, merged in tile order.
* The loss and the gradient of `input` alone (class indices; not a softcap with label
  smoothing) go by an online softmax (``_Job.online_input``): each thread owns a tile
  of rows and sweeps the class tiles, keeping per row a running max, sum of exps and
  accumulator of ``exp(z - max)·W``; two products, no whole row of logits.
* Other gradients (or probability targets) take the rows in blocks of ``block_rows(C)``
  rows whose logits fill one reused buffer of at most ``BLOCK_BYTES``
  (``LinearHead.logit_blocks``); the cross-entropy kernel turns the block into per-row
  losses and, in place, into the gradient of the logits, which is multiplied back into
  the gradients of `input`, `linear_weight` and `linear_bias` before the next block.

The products are BLAS's, on a tile grid that depends on C and D only (``_cython/
linear.pxi``); so each gradient costs one matrix product, nothing is recomputed, and
the results are bitwise identical for any number of threads (BENCHMARKS.md,
"Cross-entropy from hidden states").
"""

from __future__ import annotations

import copy
import math
from collections import namedtuple

import numpy as np

from xent._api.multiclass import _reduce_ce, _Targets, gradient_scales
from xent._api.validation import (
    FLOAT32,
    FLOAT64,
    as_logits,
    check_ignore_index,
    check_reduction,
    check_scalar,
    class_weights,
    float_kind,
)
from xent._runtime.dispatch import kernels as _kernels
from xent._runtime.linear_algebra import load_blas, single_threaded_blas
from xent._runtime.threads import threads_for

__all__ = ["LinearGrads", "LinearHead", "linear_cross_entropy", "BLOCK_BYTES", "block_rows"]

# The scratch of one call: the logits of one block of rows (twice that with a softcap
# and gradients, which need the capped logits and their gradient side by side).
# 56 MiB keeps the whole call within 64 MiB of extra memory with room for the per-row
# arrays and BLAS's own buffers, and gives blocks of >= 448 rows up to C = 32768 in
# float32.  The taller the block, the fewer times the weight is read and packed by
# BLAS, and the gradient of the weight read and written: the gradients' speed is set
# by this budget (BENCHMARKS.md, "Cross-entropy from hidden states").
BLOCK_BYTES = 56 << 20

# Blocks have a multiple of this many rows (BLAS kernels work on panels of rows).
_ROW_QUANTUM = 16

LinearGrads = namedtuple("LinearGrads", ["input", "linear_weight", "linear_bias"])
LinearGrads.__doc__ = """Gradients of `linear_cross_entropy`'s loss; None for those not asked for.

Attributes
----------
input : ndarray or None
    ``∂loss/∂input``, the shape of `input`.
linear_weight : ndarray or None
    ``∂loss/∂linear_weight``, shape ``(C, D)``.
linear_bias : ndarray or None
    ``∂loss/∂linear_bias``, shape ``(C,)`` (also when no bias was given: it is then
    the gradient at a zero bias).
"""

_GRAD_NAMES = LinearGrads._fields


def block_rows(C, itemsize, n_buffers=1, D=0):
    """Rows per block: as many as fit `n_buffers` logit buffers and a converted copy
    of the block's hidden states (D values a row) in BLOCK_BYTES (a multiple of 16,
    at least 16), whatever the thread count."""
    per_row = max(1, (max(1, C) * n_buffers + D) * itemsize)
    rows = (BLOCK_BYTES // per_row) // _ROW_QUANTUM * _ROW_QUANTUM
    return max(_ROW_QUANTUM, rows)


def _balanced(n, most):
    """Rows per block for n rows in blocks of at most `most` (a multiple of 16): as
    many blocks as needed, all of the same height (a last block of a few rows would
    run its products slowly).  Depends on n and `most` only."""
    if n <= most:
        return most
    blocks = -(-n // most)
    per = -(-n // blocks)
    return min(most, -(-per // _ROW_QUANTUM) * _ROW_QUANTUM)


def _compute_dtype(*dtypes):
    """float64 if any operand is float64 (or an integer), else float32."""
    return FLOAT64 if any(dt == FLOAT64 for dt in dtypes) else FLOAT32


def _check_softcap(softcap):
    if softcap is None:
        return None
    return check_scalar(softcap, "softcap", 0.0, low_open=True)


def _as_matrix(x, name):
    """A validated floating array (as_logits' dtype policy), with its computation dtype."""
    lg = as_logits(x, name)
    return lg.array, lg.compute


class _Rows:
    """The hidden states as rows of D: a 2-D view when the leading axes allow one, else
    blocks gathered row by row (never a copy of the whole `input`)."""

    def __init__(self, a, compute):
        self.shape = a.shape
        self.lead = a.shape[:-1]
        self.n = math.prod(self.lead)
        self.D = a.shape[-1]
        self.compute = compute
        self.source = a
        self.segments = None
        try:
            self.view = a.reshape(self.n, self.D, copy=False)
        except ValueError:  # e.g. hidden[:, :-1]: the rows are not evenly spaced
            self.view = None
            # ... but each hidden[b, :-1] is: blocks within one are views
            try:
                self.segments = a.reshape(-1, self.lead[-1], self.D, copy=False)
            except ValueError:
                self.segments = None

    def spans(self, most):
        """(r0, r1) blocks of at most `most` rows covering every row, balanced, and
        never across two segments when the rows are evenly spaced only within
        segments (so that each block is a view).  A function of the shape only."""
        if self.segments is None:
            length = self.n
        else:
            length = self.segments.shape[1]
        out = []
        if length == 0:
            return out
        per = _balanced(length, most)
        for s0 in range(0, self.n, length):
            s1 = min(self.n, s0 + length)
            out.extend((r0, min(s1, r0 + per)) for r0 in range(s0, s1, per))
        return out

    def take(self, index):
        """The rows at `index` (global row numbers), a (len(index), D) copy."""
        if self.view is not None:
            return self.view[index]
        return self.source[np.unravel_index(index, self.lead)]

    def block(self, r0, r1):
        """Rows r0..r1 as a (r1 - r0, D) array the products can read: a view when
        possible; a converted or gathered copy of just these rows otherwise."""
        if self.view is not None:
            b = self.view[r0:r1]
        elif self.segments is not None and r1 > r0 and (
                r0 // self.segments.shape[1] == (r1 - 1) // self.segments.shape[1]):
            seg, i0 = divmod(r0, self.segments.shape[1])
            b = self.segments[seg, i0:i0 + (r1 - r0)]
        else:
            b = self.source[np.unravel_index(np.arange(r0, r1), self.lead)]
        if not _blas_reads(b, self.compute, columns=False):
            # (ascontiguousarray would keep an unaligned contiguous block as it is)
            b = np.require(b, self.compute, "CA")
        return b


def _blas_reads(a, compute, columns=True):
    """Whether BLAS reads the 2-D `a` in place: the computation dtype, aligned, rows
    contiguous (or, with `columns`, columns contiguous) and the other axis's stride
    at least the row's (column's) length -- BLAS's leading dimension: a negative,
    zero or overlapping stride (``x[::-1]``, ``broadcast_to``) is not one."""
    if a.dtype != compute or not a.flags.aligned:
        return False
    n0, n1 = a.shape
    s0, s1 = a.strides[0] // a.itemsize, a.strides[1] // a.itemsize
    if (n1 <= 1 or s1 == 1) and (n0 <= 1 or s0 >= max(n1, 1)):
        return True
    return columns and (n0 <= 1 or s0 == 1) and (n1 <= 1 or s1 >= max(n0, 1))


class LinearHead:
    """A validated classifier layer ``z = softcap·tanh((x @ W.T + b)/softcap)`` whose
    logits are produced block by block of rows (`logit_blocks`).

    Parameters
    ----------
    linear_weight : array_like, shape (C, D)
    linear_bias : array_like of shape (C,), optional
    softcap : float > 0, optional
    compute : numpy.dtype
        float32 or float64.
    """

    def __init__(self, linear_weight, linear_bias=None, softcap=None, *, compute=None):
        w, wc = _as_matrix(linear_weight, "linear_weight")
        if w.ndim != 2:
            raise ValueError(
                f"linear_weight: expected a 2-D (C, D) matrix, got shape {w.shape}"
            )
        self.compute = compute if compute is not None else wc
        self.C, self.D = w.shape
        self.weight = _products_layout(w, self.compute)
        self.bias = None
        if linear_bias is not None:
            b, _ = _as_matrix(linear_bias, "linear_bias")
            if b.shape != (self.C,):
                raise ValueError(
                    f"linear_bias has shape {b.shape}, but linear_weight has shape "
                    f"{w.shape}: expected ({self.C},), one value per class"
                )
            self.bias = np.require(b, self.compute, "CA")  # contiguous and aligned
        self.softcap = _check_softcap(softcap)

    def check_input(self, x_shape, name="input"):
        if len(x_shape) == 0 or x_shape[-1] != self.D:
            raise ValueError(
                f"{name} has shape {tuple(x_shape)}, but linear_weight has shape "
                f"{(self.C, self.D)}: expected {name}.shape[-1] == {self.D}"
            )

    def logit_blocks(self, rows, n_buffers=1):
        """Yield ``(r0, r1, z)``: the (r1 - r0, C) capped logits of rows r0..r1 of
        `rows` (a `_Rows`), in one reused buffer valid until the next step."""
        spans = rows.spans(block_rows(self.C, self.compute.itemsize, n_buffers, self.D))
        buf = np.empty((max([r1 - r0 for r0, r1 in spans], default=0), self.C), self.compute)
        load_blas(_kernels)
        for r0, r1 in spans:
            z = buf[: r1 - r0]
            with single_threaded_blas():  # xent's team runs the products
                _kernels.linear_logits(x=rows.block(r0, r1), w=self.weight, bias=self.bias,
                                       softcap=self.softcap or 0.0, z=z,
                                       n_threads=threads_for(z.size * self.D))
            yield r0, r1, z


    def loss_tiles(self, rows, target, ce, lse, *, class_w=None, eps=0.0, wsum=None,
                   topk=0, rank=None):
        """Per-row loss parts from tiles of classes reduced while hot (linear.pxi's
        `linear_loss_tiles`): `target` int64 (rows.n,), -1 on ignored rows; fills ce
        and lse (and with topk, `rank`) and returns the rows to compute again with
        their whole row of logits (their parts were not all finite)."""
        special = np.zeros(rows.n, np.uint8)
        # the block's hidden states (a converted copy, perhaps) within the budget too
        step = min(int(_kernels.THRESHOLDS["LINEAR_LOSS_ROWS"]),
                   block_rows(0, self.compute.itemsize, 0, self.D))
        load_blas(_kernels)
        with single_threaded_blas():
            for r0, r1 in rows.spans(step):
                _kernels.linear_loss_tiles(
                    x=rows.block(r0, r1), w=self.weight, bias=self.bias,
                    softcap=self.softcap or 0.0, target=target[r0:r1], class_w=class_w,
                    eps=eps, wsum=float(self.C) if wsum is None else wsum, ce=ce[r0:r1],
                    lse=lse[r0:r1], special=special[r0:r1],
                    n_threads=threads_for((r1 - r0) * self.C * self.D),
                    scratch_bytes=BLOCK_BYTES, topk=topk,
                    rank=None if rank is None else rank[r0:r1],
                )
        return np.flatnonzero(special)


# The online input gradient (`_Job.online_input`): on, and its row tiles' heights
# (a function of N, C, D and the dtype, never of the threads).
ONLINE_INPUT_GRAD = True
_ONLINE_ROWS_MIN, _ONLINE_ROWS_MAX = 256, 2048
# Its scratch: per thread one tile of logits and one accumulator of input gradients;
# a block of hidden states that must be converted or gathered takes at most
# _ONLINE_COPY_BYTES beside it (BLOCK_BYTES in all).
_ONLINE_COPY_BYTES = 16 << 20


def input_grad_path(asked, prob, softcap, eps):
    """Which way a call goes: "online" (the loss and the input's gradient alone,
    class indices: `_Job.online_input`), "whole_rows" (other gradients, probability
    targets, or a softcap with label smoothing, whose chain rule varies along the
    row) or "class_tiles" (the loss alone)."""
    if (ONLINE_INPUT_GRAD and tuple(asked) == ("input",) and not prob
            and not (softcap is not None and eps > 0)):
        return "online"
    if asked or prob:
        return "whole_rows"
    return "class_tiles"


def online_row_tile(n, C, D, itemsize):
    """Rows per tile of the online input gradient, a function of the shape only: the
    n rows cut into an even number of tiles (so that two threads share them evenly)
    of at most _ONLINE_ROWS_MAX rows, and no more than lets two threads' scratch fit
    the budget; a multiple of 16, at least _ONLINE_ROWS_MIN (or 16 where the budget
    allows no more).  Taller tiles pack each tile of the weight for more rows."""
    per_row = (int(_kernels.linear_class_tile(C)) + D) * itemsize
    fit = ((BLOCK_BYTES - _ONLINE_COPY_BYTES) // 2 // max(1, per_row)) // _ROW_QUANTUM
    most = max(_ROW_QUANTUM, min(_ONLINE_ROWS_MAX, fit * _ROW_QUANTUM))
    tiles = -(-max(1, n) // most)
    tiles += tiles % 2
    h = -(-(-(-max(1, n) // tiles)) // _ROW_QUANTUM) * _ROW_QUANTUM
    return min(most, max(h, _ONLINE_ROWS_MIN))


def _products_layout(w, compute):
    """The weight as BLAS reads it without a copy: rows or columns contiguous."""
    if _blas_reads(w, compute):
        return w
    return np.require(w, compute, "CA")  # (ascontiguousarray keeps unaligned arrays)


def _grads_asked(return_grad):
    """(the gradients asked for, in _GRAD_NAMES order; whether a (loss, grads) pair
    is returned)."""
    if return_grad is None or isinstance(return_grad, (bool, np.bool_)):
        return (_GRAD_NAMES if return_grad else ()), bool(return_grad)
    if isinstance(return_grad, str):
        names = (return_grad,)
    else:
        try:
            names = tuple(return_grad)
        except TypeError:
            raise TypeError(
                f"return_grad: expected True, False, a gradient name or a tuple of names "
                f"among {_GRAD_NAMES}, got {return_grad!r}"
            ) from None
    for n in names:
        if not isinstance(n, str) or n not in _GRAD_NAMES:
            raise ValueError(
                f"return_grad: unknown gradient {n!r} (expected True, False or names among "
                f"{_GRAD_NAMES})"
            )
    return tuple(n for n in _GRAD_NAMES if n in names), True


def linear_cross_entropy(
    input,
    linear_weight,
    target,
    *,
    linear_bias=None,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    return_grad=False,
):
    return _linear_cross_entropy(
        input, linear_weight, target, linear_bias=linear_bias, weight=weight,
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap, return_grad=return_grad,
    )


_PUBLIC_DOC = """Cross-entropy of the logits ``input @ linear_weight.T + linear_bias``, never
    holding them.

    Exactly ``cross_entropy(z, target, weight=..., ignore_index=..., reduction=...,
    label_smoothing=..., z_loss=...)`` with ``z = input @ linear_weight.T +
    linear_bias`` (capped as ``softcap·tanh(z/softcap)`` when `softcap` is given), and
    ``torch.nn.functional.linear_cross_entropy``'s semantics; the N×C logits exist
    only one block of rows at a time (at most ``BLOCK_BYTES`` of scratch, 56 MiB),
    whatever N and C.

    Parameters
    ----------
    input : array_like, shape (..., D)
        Hidden states, any leading shape and strides (``hidden[:, :-1]`` is read
        without a whole copy).
    linear_weight : array_like, shape (C, D)
        The classifier's weight (rows or columns contiguous are read in place).
    target : array_like
        Class indices of shape ``input.shape[:-1]`` (any integer dtype), or class
        probabilities of shape ``input.shape[:-1] + (C,)``.
    linear_bias : array_like of shape (C,), optional
    weight, ignore_index, reduction, label_smoothing, z_loss
        As for `cross_entropy`.
    softcap : float > 0, optional
        Caps the logits as ``softcap·tanh(z/softcap)`` (Gemma 2) before the loss; the
        gradients include its chain rule.
    return_grad : bool or tuple of str, optional
        False (the loss only), True (every gradient), or names among ``"input"``,
        ``"linear_weight"``, ``"linear_bias"``: only those are computed (a frozen
        classifier asks for ``("input",)`` and saves a matrix product; ``()`` gives
        ``(loss, LinearGrads(None, None, None))``).

    Returns
    -------
    loss : numpy scalar or ndarray
        As `cross_entropy`'s (float32 unless an operand is float64).
    grads : LinearGrads
        With `return_grad`: ``(input, linear_weight, linear_bias)``, the gradients of
        the loss (for ``reduction="none"``, of the sum of the losses), None where not
        asked for.  Computed in the same pass as the loss.

    Raises
    ------
    ValueError
        ``input.shape[-1] != linear_weight.shape[1]``, a target or bias of the wrong
        shape, ``softcap <= 0``, and `cross_entropy`'s errors.
    IndexError, TypeError
        As for `cross_entropy`.

    Notes
    -----
    Gradients go through BLAS's arithmetic: an infinite entry of `linear_weight`
    makes the input gradient NaN (``0·inf`` in ``g @ W``; PyTorch gives NaN too),
    although the loss follows the non-finite rule.

    The matrix products accumulate as BLAS does in the computation dtype (SciPy's
    OpenBLAS); every softmax sum and batch reduction is `cross_entropy`'s.  float16
    and bfloat16 operands are computed in float32.  While the call runs, BLAS is
    limited to xent's thread count (``xent.set_num_threads``), and its products and
    xent's kernels take turns, never oversubscribing the cores.

    Examples
    --------
    >>> import numpy as np, xent
    >>> rng = np.random.default_rng(0)
    >>> h = rng.standard_normal((4, 8))
    >>> W = rng.standard_normal((10, 8))
    >>> t = np.array([1, 2, 3, 4])
    >>> loss = xent.linear_cross_entropy(h, W, t)
    >>> bool(np.isclose(loss, xent.cross_entropy(h @ W.T, t)))
    True
    >>> loss, grads = xent.linear_cross_entropy(h, W, t, return_grad=("input",))
    >>> grads.input.shape, grads.linear_weight is None
    ((4, 8), True)
    """


linear_cross_entropy.__doc__ = _PUBLIC_DOC


def _linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,
                          ignore_index=-100, reduction="mean", label_smoothing=0.0,
                          z_loss=0.0, softcap=None, return_grad=False, grad_row_scale=None,
                          row_terms=False):
    """linear_cross_entropy, plus `grad_row_scale`: None or a float64 array of one
    factor per row (the input's leading shape) multiplying each row's gradient, as
    the backward of ``reduction="none"`` needs (xent.torch); and `row_terms`: True
    returns ``(ce, lse, targets)``, the float64 per-row terms and the validated
    targets, unreduced (xent.dask sums them over blocks; no gradient then)."""
    x, xc = _as_matrix(input, "input")
    w_compute = as_logits(linear_weight, "linear_weight").compute
    compute = _compute_dtype(xc, w_compute)
    head = LinearHead(linear_weight, linear_bias, softcap, compute=compute)
    if x.ndim == 0:
        raise ValueError("input: expected at least one dimension (the hidden size), got a scalar")
    head.check_input(x.shape)
    check_reduction(reduction)
    eps = check_scalar(label_smoothing, "label_smoothing", 0.0, 1.0)
    zc = check_scalar(z_loss, "z_loss", 0.0)
    ignore_index = check_ignore_index(ignore_index)
    asked, pair = _grads_asked(return_grad)
    w = class_weights(weight, head.C, compute)
    w64 = None if w is None else w.astype(FLOAT64)
    logits_shape = x.shape[:-1] + (head.C,)
    # The targets are checked against the logits' shape without the logits existing.
    shape_only = np.broadcast_to(np.zeros((), compute), logits_shape)
    targets = _Targets(target, shape_only, len(logits_shape) - 1, head.C, ignore_index,
                       compute, allow_prob=True, weight64=w64)

    n_valid, weight_total = targets.n_valid, targets.weight_total
    scale_ce, scale_z = gradient_scales(reduction, targets)

    rows = _Rows(x, compute)
    n = rows.n
    row_scale = None
    if grad_row_scale is not None:
        row_scale = np.ascontiguousarray(grad_row_scale, FLOAT64).reshape(n)
    flat_target = (targets.array.reshape(n, head.C) if targets.prob
                   else targets.array.reshape(n))
    job = _Job(head, targets, flat_target, ignore_index, w, eps, zc, scale_ce, scale_z,
               asked, row_scale)
    ce = np.empty(n, FLOAT64)
    lse = np.empty(n, FLOAT64)
    grads = job.grad_arrays(n)
    with single_threaded_blas():
        if input_grad_path(asked, targets.prob, head.softcap, eps) == "online":
            job.online_input(rows, ce, lse, grads[0])
        elif asked or targets.prob:
            job.whole_rows(rows, np.arange(n), ce, lse, grads)
        else:
            job.class_tiles(rows, ce, lse)

    if row_terms:
        return ce, lse, targets
    loss = _reduce_ce(ce, lse, zc, reduction, weight_total, n_valid, targets.row_shape, compute)
    if not pair:
        return loss
    g_input, g_weight, g_bias = grads  # return_grad=() asks for none: all None
    return loss, LinearGrads(
        None if g_input is None else g_input.reshape(x.shape),
        g_weight,
        None if g_bias is None else g_bias.astype(compute),
    )


class _Job:
    """One validated call: the head, the targets and the loss's options, and the
    two ways through the rows (`whole_rows`, `class_tiles`)."""

    def __init__(self, head, targets, flat_target, ignore_index, w, eps, zc, scale_ce,
                 scale_z, asked, row_scale):
        self.head, self.targets, self.flat_target = head, targets, flat_target
        self.ignore_index, self.w, self.eps, self.zc = ignore_index, w, eps, zc
        self.scale_ce, self.scale_z = scale_ce, scale_z
        self.asked, self.row_scale = asked, row_scale
        self.wsum = float(w.sum(dtype=FLOAT64)) if w is not None else float(head.C)
        self.kind = float_kind(np.empty(0, head.compute))

    def grad_arrays(self, n):
        """(input, weight, bias) gradient accumulators, None where not asked."""
        h, asked = self.head, self.asked
        return (np.empty((n, h.D), h.compute) if "input" in asked else None,
                np.zeros((h.C, h.D), h.compute) if "linear_weight" in asked else None,
                np.zeros(h.C, FLOAT64) if "linear_bias" in asked else None)

    def whole_rows(self, rows, index, ce, lse, grads):
        """Blocks of rows with all their logits: the cross-entropy kernel on each
        block (in place into the gradient of the logits), then the products of the
        gradients.  `index`: the global row number of each of `rows` (its blocks are
        written to ce[index], lse[index])."""
        head, targets, asked = self.head, self.targets, self.asked
        g_input, g_weight, g_bias = grads
        capped_grad = bool(asked) and head.softcap is not None
        for r0, r1, z in head.logit_blocks(rows, n_buffers=2 if capped_grad else 1):
            nb = r1 - r0
            at = index[r0:r1]
            contiguous = nb == 0 or at[-1] - at[0] == nb - 1
            sl = slice(at[0], at[0] + nb) if contiguous else at
            t = self.flat_target[sl]
            t3 = t.reshape(nb, head.C, 1) if targets.prob else t.reshape(nb, 1, 1)
            ce_b = ce[sl] if contiguous else np.empty(nb, FLOAT64)
            lse_b = lse[sl] if contiguous else np.empty(nb, FLOAT64)
            g = None
            if asked:  # the gradient overwrites z, unless the cap's chain rule needs z
                g = np.empty_like(z) if capped_grad else z
            _kernels.cross_entropy(
                z.reshape(nb, head.C, 1), t3, xkind=self.kind, tcode=targets.code,
                prob=targets.prob, ignore_index=self.ignore_index, weight=self.w,
                wsum=self.wsum, eps=self.eps, z=self.zc, scale_ce=self.scale_ce,
                scale_z=self.scale_z, grad=None if g is None else g.reshape(nb, head.C, 1),
                ce=ce_b, lse=lse_b, n_threads=threads_for(z.size),
            )
            if not contiguous:
                ce[sl], lse[sl] = ce_b, lse_b
            if asked:
                xb = rows.block(r0, r1)
                if g_weight is not None and not targets.prob:
                    xb = self._without_ignored(xb, t)
                _kernels.linear_backward(
                    x=xb, w=head.weight, z=z, g=g,
                    softcap=head.softcap or 0.0,
                    row_scale=None if self.row_scale is None else self.row_scale[sl],
                    dx=None if g_input is None else g_input[sl], dw=g_weight,
                    db=g_bias, dw_accumulate=r0 > 0, n_threads=threads_for(z.size * head.D),
                )
                del xb  # a converted copy must not live on beside the next block's

    def online_input(self, rows, ce, lse, g_input):
        """The loss and the input's gradient alone, class indices (linear.pxi's
        online softmax: two products, no whole row of logits).  Rows it flags special
        (their parts are not all finite) are computed again by `whole_rows`."""
        head, n = self.head, rows.n
        itemsize = head.compute.itemsize
        t = self.flat_target.astype(np.int64)
        t[self.flat_target == self.ignore_index] = -1
        class_w = None if self.w is None else self.w.astype(FLOAT64)
        V = None
        if self.eps > 0:  # Σ_c w_c W_c, the smoothing term's share of every row
            wv = np.ones(head.C, head.compute) if self.w is None else self.w
            V = np.ascontiguousarray(wv @ head.weight, head.compute)
        h = online_row_tile(n, head.C, head.D, itemsize)
        in_place = rows.view is not None and _blas_reads(rows.view, head.compute,
                                                         columns=False)
        if in_place:
            spans = [(0, n)] if n else []  # read in place, all at once
        else:  # converted or gathered blocks of (two or more) whole row tiles
            step = h * max(2, _ONLINE_COPY_BYTES // (h * head.D * itemsize or 1))
            spans = rows.spans(step)
        special = np.zeros(n, np.uint8)
        load_blas(_kernels)
        for r0, r1 in spans:
            _kernels.linear_online_input_grad(
                x=rows.block(r0, r1), w=head.weight, bias=head.bias,
                softcap=head.softcap or 0.0, target=t[r0:r1], class_w=class_w,
                eps=self.eps, wsum=self.wsum, z_loss=self.zc, scale_ce=self.scale_ce,
                scale_z=self.scale_z,
                row_scale=None if self.row_scale is None else self.row_scale[r0:r1],
                V=V, ce=ce[r0:r1], lse=lse[r0:r1], special=special[r0:r1],
                dx=g_input[r0:r1], row_tile=h,
                n_threads=threads_for((r1 - r0) * head.C * head.D),
                # a copied block's bytes come out of the budget (fewer threads then)
                scratch_bytes=BLOCK_BYTES - max(_ONLINE_COPY_BYTES,
                                                0 if in_place else (r1 - r0) * head.D * itemsize),
            )
        again = np.flatnonzero(special)
        if again.size:
            self._whole_rows_at(rows, again, ce, lse, g_input)

    def _whole_rows_at(self, rows, index, ce, lse, g_input):
        """`whole_rows` for the rows at `index` only, written back there."""
        k = index.size
        sub = copy.copy(self)
        sub.flat_target = self.flat_target[index]
        sub.row_scale = None if self.row_scale is None else self.row_scale[index]
        ce_k, lse_k = np.empty(k, FLOAT64), np.empty(k, FLOAT64)
        dx_k = np.empty((k, self.head.D), self.head.compute)
        sub.whole_rows(_Rows(rows.take(index), self.head.compute), np.arange(k), ce_k,
                       lse_k, (dx_k, None, None))
        ce[index], lse[index], g_input[index] = ce_k, lse_k, dx_k

    def _without_ignored(self, xb, t):
        """The block's hidden states with the ignored rows zeroed (a copy of the block
        when it has any): their gradient is 0, but 0·NaN and 0·inf in ``g.T @ x``
        would not be, and ignored rows contribute exactly 0 whatever they hold."""
        ignored = t == self.ignore_index
        if not ignored.any():
            return xb
        xb = np.array(xb, order="C")
        xb[ignored] = 0
        return xb

    def class_tiles(self, rows, ce, lse):
        """The loss alone, class indices: tiles of classes reduced while hot
        (linear.pxi); rows the tiles flag as special (a non-finite logit, weight or
        sum) are computed again by `whole_rows`, with the kernel's non-finite rules."""
        head = self.head
        t = self.flat_target.astype(np.int64)
        t[self.flat_target == self.ignore_index] = -1
        again = head.loss_tiles(rows, t, ce, lse, eps=self.eps, wsum=self.wsum,
                                class_w=None if self.w is None else self.w.astype(FLOAT64))
        if again.size:
            self.whole_rows(_Rows(rows.take(again), head.compute), again, ce, lse,
                            (None, None, None))
