"""xent on Dask arrays: ``cross_entropy``, ``evaluate``, ``log_softmax``, ``logsumexp``.

Needs Dask (``pip install 'xent[dask]'``).  The arrays are expected to be chunked
along the batch; a class axis split over several chunks is first rechunked into
one (each row must be in one block).  Every block is computed by xent's own
kernels, wherever the scheduler runs it (threads, processes, a
``dask.distributed`` cluster).

Reductions are exact: each block contributes float64 partial sums -- the sum of
its losses, the sum of its class weights ``w[t]`` over non-ignored rows, its
number of non-ignored rows, its top-k hits -- which are added over all blocks
before the one division at the end.  A mean of per-block means would be wrong as
soon as blocks hold different numbers of ignored rows or different class weights.
The partial sums stay float64 (never rounded to the computation dtype) until
that end, so the result is the one `xent.cross_entropy` / `xent.evaluate` give
on the whole array, up to the order of float64 additions.

Everything returned is lazy: `logsumexp`, `log_softmax` and
``cross_entropy(reduction="none")`` give Dask arrays; ``"mean"``/``"sum"`` give a
0-d Dask array (computing to a NumPy scalar of the computation dtype, as
`xent.cross_entropy`); `evaluate` gives a ``dask.delayed`` object that computes to
an `xent.Evaluation`.  Call ``.compute()`` (or ``dask.compute(a, b, ...)`` to share
the reading of the inputs).  Argument errors (shapes, dtypes, axis, reduction)
are raised when the graph is built; class indices out of range are found while
computing, and the `IndexError` then names the position in the whole target
array.

Examples
--------
>>> import dask.array as da, numpy as np
>>> import xent.dask as xd
>>> rng = np.random.default_rng(0)
>>> logits = da.from_array(rng.normal(size=(10_000, 100)), chunks=(2_500, 100))
>>> target = da.from_array(rng.integers(0, 100, size=10_000), chunks=2_500)
>>> loss = xd.cross_entropy(logits, target)          # lazy 0-d dask array
>>> float(loss.compute()) > 0
True
>>> xd.evaluate(logits, target, k=(1, 5)).compute().count
10000
"""

from __future__ import annotations

import math

import dask
import dask.array as da
import numpy as np

from xent._api.multiclass import _logits_and_axis, _row_losses, _Targets
from xent._api.multiclass import cross_entropy as _cross_entropy
from xent._runtime.dispatch import kernels as _kernels
from xent._api.evaluate import _check_ks, _partials, _result
from xent._api.normalizers import log_softmax as _log_softmax
from xent._api.normalizers import logsumexp as _logsumexp
from xent._api.validation import (
    FLOAT32,
    FLOAT64,
    check_ignore_index,
    check_index_targets,
    check_reduction,
    check_scalar,
    class_weights,
    normalize_axis,
    rounded,
)

__all__ = ["cross_entropy", "evaluate", "log_softmax", "logsumexp"]


# ---- helpers ----------------------------------------------------------------------


def _as_dask(x):
    return x if isinstance(x, da.Array) else da.asarray(x)


def _compute_dtype(dtype, name):
    """The dtype xent computes in for inputs of `dtype` (SPEC "Conventions")."""
    dt = np.dtype(dtype)
    if dt.name == "bfloat16" or (dt.kind == "f" and dt.itemsize <= 4):
        return FLOAT32
    if dt.kind == "f" or dt.kind in "iub":
        return FLOAT64
    raise TypeError(f"{name}: unsupported dtype {dt} (expected a real floating, integer or bool array)")


def _logits(x, axis, name="logits"):
    """(dask array with the class axis in one chunk, axis, computation dtype)."""
    x = _as_dask(x)
    compute = _compute_dtype(x.dtype, name)
    if x.ndim == 0:
        raise ValueError(f"{name}: expected at least one dimension (the class axis), got a scalar")
    ax = normalize_axis(axis, x.ndim)
    if math.isnan(x.shape[ax]):
        raise ValueError(f"{name}: the length of the class axis {ax} is unknown (compute_chunk_sizes())")
    if x.numblocks[ax] > 1:
        x = x.rechunk({ax: -1})
    return x, ax, compute


def _class_targets(target, x, ax, name="target"):
    """Integer targets as a dask array with a length-1 class axis, chunked like `x`."""
    t = _as_dask(target)
    check_index_targets(t, x.shape, ax, name)
    t = da.expand_dims(t, ax)
    return t.rechunk(x.chunks[:ax] + ((1,),) + x.chunks[ax + 1 :])


def _offsets(block_info, i):
    """Start of block input `i` in its whole array (None outside dask's block calls)."""
    if not block_info or i not in block_info:
        return None
    return tuple(lo for lo, _ in block_info[i]["array-location"])


def _global_index_error(t, C, ignore_index, offsets, ax, name="target"):
    """IndexError for the first bad class index of block `t` (with its length-1
    class axis `ax`), naming its position in the whole target array; None if none."""
    rows = np.squeeze(np.asarray(t), axis=ax)
    bad = np.flatnonzero(((rows != ignore_index) & ((rows < 0) | (rows >= C))).reshape(-1))
    if bad.size == 0:
        return None
    pos = list(np.unravel_index(int(bad[0]), rows.shape))
    if offsets is not None:
        starts = offsets[:ax] + offsets[ax + 1 :]
        pos = [p + s for p, s in zip(pos, starts)]
    position = tuple(int(p) for p in pos)
    value = rows.reshape(-1)[int(bad[0])]
    return IndexError(
        f"{name}: class index {value} at position {position} is outside [0, {C}) "
        f"and is not ignore_index={ignore_index}"
    )


def _partials_chunks(x, ax, P):
    """Chunks of a per-block partials array: one entry per block, P values on axis ax."""
    return tuple((P,) if d == ax else (1,) * x.numblocks[d] for d in range(x.ndim))


def _sum_partials(parts, ax):
    """float64 (P,) totals of the per-block partials: dask's tree sum over the blocks."""
    others = tuple(d for d in range(parts.ndim) if d != ax)
    return parts.sum(axis=others, dtype=FLOAT64) if others else parts


# ---- normalisers ----------------------------------------------------------------


def _lse_block(b, keepdims=True):
    return _logsumexp(b, axis=None, keepdims=keepdims)


def logsumexp(x, axis=-1, *, keepdims=False):
    """`xent.logsumexp` over `axis` of a Dask array (lazy).

    Parameters
    ----------
    x : dask.array.Array or array_like
    axis : int or None, optional
        The class axis (its chunks are merged into one), or None for the whole
        array: a tree reduction of per-block log-sum-exps (logsumexp is
        associative, non-finite rules included).
    keepdims : bool, optional

    Returns
    -------
    dask.array.Array
        The computation dtype (float32 for float32/16-bit input, else float64).
    """
    if axis is None:
        x = _as_dask(x)
        compute = _compute_dtype(x.dtype, "x")
        return da.reduction(
            x, chunk=lambda b, axis, keepdims: _lse_block(b),
            combine=lambda b, axis, keepdims: _lse_block(b),
            aggregate=lambda b, axis, keepdims: _lse_block(b, keepdims),
            axis=None, keepdims=keepdims, dtype=compute, concatenate=True,
            meta=np.empty((0,) * (x.ndim if keepdims else 0), compute),
        )
    x, ax, compute = _logits(x, axis, "x")
    if keepdims:
        chunks = x.chunks[:ax] + ((1,),) + x.chunks[ax + 1 :]
        return x.map_blocks(_logsumexp, axis=ax, keepdims=True, chunks=chunks, dtype=compute,
                            meta=np.empty((0,) * x.ndim, compute))
    return x.map_blocks(_logsumexp, axis=ax, drop_axis=ax, dtype=compute,
                        meta=np.empty((0,) * (x.ndim - 1), compute))


def log_softmax(x, axis=-1):
    """`xent.log_softmax` over `axis` of a Dask array (lazy; the class axis is
    merged into one chunk).

    Parameters
    ----------
    x : dask.array.Array or array_like
    axis : int, optional
        The class axis (default: last).

    Returns
    -------
    dask.array.Array
        The shape and chunks of `x` (class axis in one chunk), computation dtype.
    """
    if axis is None:
        raise ValueError("axis: None (the whole array) is not supported on Dask arrays; give the class axis")
    x, ax, compute = _logits(x, axis, "x")
    return x.map_blocks(_log_softmax, axis=ax, dtype=compute, meta=np.empty((0,) * x.ndim, compute))


# ---- cross-entropy ------------------------------------------------------------------

# Partials of one block: [sum of the cross-entropies, sum of w[t] over non-ignored
# rows (the number of rows for probability targets), sum of the z-loss terms,
# number of non-ignored rows], all float64.
_CE_P = 4


def _ce_block_none(x, t, *, ax, prob, block_info=None, **kw):
    if not prob:
        t = np.squeeze(t, axis=ax)
    try:
        return _cross_entropy(x, t, axis=ax, reduction="none", **kw)
    except IndexError as exc:
        raise _global_index_error(np.expand_dims(t, ax), x.shape[ax], kw["ignore_index"],
                                  _offsets(block_info, 1), ax) or exc from None


def _ce_block_partials(x, t, *, ax, prob, weight, ignore_index, label_smoothing, z_loss,
                       block_info=None):
    """(1, ..., P, ..., 1) float64 partial sums of one block (P on the class axis).

    The per-row float64 losses and logsumexps of xent's kernel are summed as
    `xent.cross_entropy` sums them, without rounding to the computation dtype.
    """
    lg, _ = _logits_and_axis(x, ax)
    C = x.shape[ax]
    w = class_weights(weight, C, lg.compute)  # the weights the kernel reads
    w64 = None if w is None else w.astype(FLOAT64)
    try:
        targets = _Targets(t if prob else np.squeeze(t, axis=ax), lg.array, ax, C, ignore_index,
                           lg.compute, allow_prob=True, weight64=w64)
    except IndexError as exc:
        raise _global_index_error(t, C, ignore_index, _offsets(block_info, 1), ax) \
            or exc from None
    ce, lse = _row_losses(lg, ax, targets, weight=w, eps=label_smoothing, z=z_loss)
    out = np.zeros(_CE_P, FLOAT64)
    out[0] = _kernels.sum_rows(ce)
    out[1] = targets.weight_total
    if z_loss != 0:  # (ignored rows have lse 0)
        with np.errstate(over="ignore"):  # z·lse² beyond float64: inf, the answer
            out[2] = _kernels.sum_rows(z_loss * np.square(lse))
    out[3] = targets.n_valid
    shape = [1] * x.ndim
    shape[ax] = _CE_P
    return out.reshape(shape)


def _ce_finish(totals, reduction, z_loss, compute):
    """The loss from the float64 totals, as `xent.cross_entropy` forms it."""
    ce, wsum, zsum, n = (float(v) for v in np.asarray(totals).reshape(-1))
    if reduction == "sum":
        return rounded(ce + zsum, compute)
    # "mean": 0/0 is NaN (PyTorch); the z-loss has its own denominator (PaLM)
    mean = ce / wsum if wsum != 0 else math.nan
    if z_loss != 0:
        mean += zsum / n if n != 0 else math.nan
    return rounded(mean, compute)


def cross_entropy(logits, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, z_loss=0.0):
    """`xent.cross_entropy` on Dask arrays, with an exact global mean.

    Parameters
    ----------
    logits : dask.array.Array or array_like
        Logits chunked along the batch (a class axis in several chunks is merged).
    target : dask.array.Array or array_like
        Class indices (integers, the logits' shape without `axis`) or class
        probabilities (floats, the logits' shape); rechunked to match the logits.
    axis, weight, ignore_index, reduction, label_smoothing, z_loss
        As for `xent.cross_entropy` (no gradient here).

    Returns
    -------
    dask.array.Array
        ``"none"``: the per-row losses (the target's shape, or the logits' without
        `axis`).  ``"mean"``/``"sum"``: a 0-d array of the computation dtype.
        ``"mean"`` is the sum of every block's losses divided by the sum of every
        block's ``w[t]`` over non-ignored rows (the number of rows for probability
        targets), plus the z-loss sum over the number of non-ignored rows -- the
        same denominators as `xent.cross_entropy` on the whole array.

    Raises
    ------
    ValueError, TypeError
        Bad shapes, dtypes, axis, reduction, weight, label_smoothing, z_loss
        (when the graph is built).
    IndexError
        A class index out of range (when computing; names its global position).
    """
    check_reduction(reduction)
    eps = check_scalar(label_smoothing, "label_smoothing", 0.0, 1.0)
    z = check_scalar(z_loss, "z_loss", 0.0)
    ignore_index = check_ignore_index(ignore_index)
    x, ax, compute = _logits(logits, axis)
    C = x.shape[ax]
    w = class_weights(weight, C, FLOAT64)
    t = _as_dask(target)
    prob = t.dtype.kind == "f" or t.dtype.name == "bfloat16"
    if prob:
        if t.shape != x.shape:
            raise ValueError(
                f"target has shape {t.shape}, but logits have shape {x.shape}; floating "
                "targets are class probabilities and must match the logits' shape "
                "(use an integer dtype for class indices)"
            )
        t = t.rechunk(x.chunks)
    else:
        t = _class_targets(t, x, ax)
    kw = dict(weight=w, ignore_index=ignore_index, label_smoothing=eps)
    if reduction == "none":
        return da.map_blocks(
            _ce_block_none, x, t, ax=ax, prob=prob, z_loss=z, drop_axis=ax, dtype=compute,
            meta=np.empty((0,) * (x.ndim - 1), compute), **kw,
        )
    parts = da.map_blocks(
        _ce_block_partials, x, t, ax=ax, prob=prob, z_loss=z,
        chunks=_partials_chunks(x, ax, _CE_P), dtype=FLOAT64,
        meta=np.empty((0,) * x.ndim, FLOAT64), **kw,
    )
    totals = _sum_partials(parts, ax)
    return da.map_blocks(_ce_finish, totals, reduction=reduction, z_loss=z,
                         compute=compute, drop_axis=0, dtype=compute, meta=np.empty((), compute))


# ---- evaluation ---------------------------------------------------------------------


def _eval_block(x, t, *, ax, ignore_index, ks, block_info=None):
    """[sum of -log p_t, rows, hits for each k] of one block, on its class axis."""
    try:
        total, count, hits = _partials(x, np.squeeze(t, axis=ax), ax, ignore_index, ks)
    except IndexError as exc:
        raise _global_index_error(t, x.shape[ax], ignore_index, _offsets(block_info, 1), ax) \
            or exc from None
    shape = [1] * x.ndim
    shape[ax] = 2 + len(ks)
    return np.array([total, count, *hits], FLOAT64).reshape(shape)


def _eval_finish(totals, ks):
    v = np.asarray(totals, FLOAT64).reshape(-1)
    return _result(float(v[0]), int(v[1]), [int(h) for h in v[2:]], ks)


def evaluate(logits, target, *, axis=-1, ignore_index=-100, k=(1, 5)):
    """`xent.evaluate` on Dask arrays: loss, perplexity and top-k accuracy, exactly.

    Each block is evaluated by `xent.evaluate`'s kernel (one pass over its rows);
    the blocks' float64 loss sums and integer row / hit counts are added, then
    divided once.

    Parameters
    ----------
    logits : dask.array.Array or array_like
        Logits chunked along the batch (a class axis in several chunks is merged).
    target : dask.array.Array or array_like of int
        Class indices, the logits' shape without `axis` (rechunked to match).
    axis, ignore_index, k
        As for `xent.evaluate`.

    Returns
    -------
    dask.delayed.Delayed
        Computes to an `xent.Evaluation` (``.compute()``, or ``dask.compute``).

    Raises
    ------
    ValueError, TypeError
        Bad shapes, dtypes, axis or k (when the graph is built).
    IndexError
        A class index out of range (when computing; names its global position).
    """
    ks = _check_ks(k)
    ignore_index = check_ignore_index(ignore_index)
    x, ax, _ = _logits(logits, axis)
    t = _class_targets(target, x, ax)
    P = 2 + len(ks)
    parts = da.map_blocks(
        _eval_block, x, t, ax=ax, ignore_index=ignore_index, ks=ks,
        chunks=_partials_chunks(x, ax, P), dtype=FLOAT64, meta=np.empty((0,) * x.ndim, FLOAT64),
    )
    totals = _sum_partials(parts, ax)
    return dask.delayed(_eval_finish, pure=True)(totals, ks)
