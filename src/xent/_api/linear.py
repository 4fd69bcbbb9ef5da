"""Cross-entropy from hidden states, the classifier layer fused in: linear_cross_entropy.

The logits ``z = input @ linear_weight.T + linear_bias`` of a language model's head are
N×C (8192 tokens × 128k classes is 4 GiB of float32) and exist only to be reduced to one
number per row and, in training, to a gradient.  Here they never exist whole: the rows
are taken in blocks of ``block_rows(C)`` rows, each block's logits are computed into one
reused buffer of at most ``BLOCK_BYTES`` (the matrix products through BLAS, the tiles of
one block reduced while hot), the cross-entropy kernel turns the block into per-row
losses and, in place, into the gradient of the logits, and that gradient is multiplied
back into the gradients of `input`, `linear_weight` and `linear_bias` before the next
block overwrites it.  So each gradient costs one matrix product and nothing is
recomputed: loss only is one product, loss and every gradient three (BENCHMARKS.md,
"Cross-entropy from hidden states").

The block height depends only on C and the dtype, never on the thread count, and every
product writes each element from one call of the same shape: the results are bitwise
identical for any number of threads.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from xent._api.multiclass import _reduce_ce, _Targets
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
# 48 MiB keeps the whole call within 64 MiB of extra memory with room for the per-row
# arrays, and gives blocks of >= 384 rows up to C = 32768 in float32, where the
# products run near the speed of one whole matrix product (BENCHMARKS.md).
BLOCK_BYTES = 48 << 20

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


def block_rows(C, itemsize, n_buffers=1):
    """Rows per block: as many as fit `n_buffers` logit buffers in BLOCK_BYTES (a
    multiple of 16, at least 16), whatever the thread count."""
    per_row = max(1, C) * itemsize * n_buffers
    rows = (BLOCK_BYTES // per_row) // _ROW_QUANTUM * _ROW_QUANTUM
    return max(_ROW_QUANTUM, rows)


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
        try:
            self.view = a.reshape(self.n, self.D, copy=False)
        except ValueError:  # e.g. hidden[:, :-1]: the rows are not evenly spaced
            self.view = None

    def block(self, r0, r1):
        """Rows r0..r1 as a (r1 - r0, D) array the products can read: a view when
        possible; a converted or gathered copy of just these rows otherwise."""
        if self.view is not None:
            b = self.view[r0:r1]
        else:
            b = self.source[np.unravel_index(np.arange(r0, r1), self.lead)]
        if (b.dtype != self.compute or not b.flags.aligned
                or (b.shape[1] > 1 and b.strides[1] != b.itemsize)):
            b = np.ascontiguousarray(b, dtype=self.compute)
        return b


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
            self.bias = np.ascontiguousarray(b, dtype=self.compute)
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
        nr = block_rows(self.C, self.compute.itemsize, n_buffers)
        buf = np.empty((min(nr, max(rows.n, 1)), self.C), self.compute)
        load_blas(_kernels)
        for r0 in range(0, rows.n, nr):
            r1 = min(rows.n, r0 + nr)
            z = buf[: r1 - r0]
            with single_threaded_blas():  # xent's team runs the products
                _kernels.linear_logits(x=rows.block(r0, r1), w=self.weight, bias=self.bias,
                                       softcap=self.softcap or 0.0, z=z,
                                       n_threads=threads_for(z.size * self.D))
            yield r0, r1, z


def _products_layout(w, compute):
    """The weight as BLAS reads it without a copy: rows or columns contiguous."""
    if w.dtype == compute and w.flags.aligned and (
            w.strides[1] == w.itemsize or w.strides[0] == w.itemsize):
        return w
    return np.ascontiguousarray(w, dtype=compute)


def _grads_asked(return_grad):
    if return_grad is False or return_grad is None:
        return ()
    if return_grad is True:
        return _GRAD_NAMES
    names = (return_grad,) if isinstance(return_grad, str) else tuple(return_grad)
    for n in names:
        if n not in _GRAD_NAMES:
            raise ValueError(
                f"return_grad: unknown gradient {n!r} (expected True, False or names among "
                f"{_GRAD_NAMES})"
            )
    return tuple(n for n in _GRAD_NAMES if n in names)


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
    only one block of rows at a time (at most ``BLOCK_BYTES`` of scratch, 48 MiB),
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
        classifier asks for ``("input",)`` and saves a matrix product).

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
                          z_loss=0.0, softcap=None, return_grad=False, grad_row_scale=None):
    """linear_cross_entropy, plus `grad_row_scale`: None or a float64 array of one
    factor per row (the input's leading shape) multiplying each row's gradient, as
    the backward of ``reduction="none"`` needs (xent.torch)."""
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
    asked = _grads_asked(return_grad)
    w = class_weights(weight, head.C, compute)
    w64 = None if w is None else w.astype(FLOAT64)
    logits_shape = x.shape[:-1] + (head.C,)
    # The targets are checked against the logits' shape without the logits existing.
    shape_only = np.broadcast_to(np.zeros((), compute), logits_shape)
    targets = _Targets(target, shape_only, len(logits_shape) - 1, head.C, ignore_index,
                       compute, allow_prob=True, weight64=w64)

    n_valid, weight_total = targets.n_valid, targets.weight_total
    if reduction == "mean":
        scale_ce = 1.0 / weight_total if weight_total != 0 else math.nan
        scale_z = 1.0 / n_valid if n_valid != 0 else math.nan
    else:
        scale_ce = scale_z = 1.0

    rows = _Rows(x, compute)
    n = rows.n
    row_scale = None
    if grad_row_scale is not None:
        row_scale = np.ascontiguousarray(grad_row_scale, FLOAT64).reshape(n)
    flat_target = (targets.array.reshape(n, head.C) if targets.prob
                   else targets.array.reshape(n))
    ce = np.empty(n, FLOAT64)
    lse = np.empty(n, FLOAT64)
    g_input = np.empty((n, head.D), compute) if "input" in asked else None
    g_weight = np.zeros((head.C, head.D), compute) if "linear_weight" in asked else None
    g_bias = np.zeros(head.C, FLOAT64) if "linear_bias" in asked else None
    wsum = float(w.sum(dtype=FLOAT64)) if w is not None else float(head.C)
    kind = float_kind(np.empty(0, compute))
    capped_grad = bool(asked) and head.softcap is not None
    with single_threaded_blas():
        for r0, r1, z in head.logit_blocks(rows, n_buffers=2 if capped_grad else 1):
            nb = r1 - r0
            t = flat_target[r0:r1]
            t3 = t.reshape(nb, head.C, 1) if targets.prob else t.reshape(nb, 1, 1)
            g = None
            if asked:  # the gradient overwrites z, unless the cap's chain rule needs z
                g = np.empty_like(z) if capped_grad else z
            _kernels.cross_entropy(
                z.reshape(nb, head.C, 1), t3, xkind=kind, tcode=targets.code,
                prob=targets.prob, ignore_index=ignore_index, weight=w, wsum=wsum, eps=eps,
                z=zc, scale_ce=scale_ce, scale_z=scale_z,
                grad=None if g is None else g.reshape(nb, head.C, 1),
                ce=ce[r0:r1], lse=lse[r0:r1], n_threads=threads_for(z.size),
            )
            if asked:
                _kernels.linear_backward(
                    x=rows.block(r0, r1), w=head.weight, z=z, g=g,
                    softcap=head.softcap or 0.0,
                    row_scale=None if row_scale is None else row_scale[r0:r1],
                    dx=None if g_input is None else g_input[r0:r1], dw=g_weight,
                    db=g_bias, dw_accumulate=r0 > 0, n_threads=threads_for(z.size * head.D),
                )

    loss = _reduce_ce(ce, lse, zc, reduction, weight_total, n_valid, targets.row_shape, compute)
    if not asked:
        return loss
    grads = LinearGrads(
        None if g_input is None else g_input.reshape(x.shape),
        g_weight,
        None if g_bias is None else g_bias.astype(compute),
    )
    return loss, grads
