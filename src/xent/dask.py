"""xent on Dask arrays: ``cross_entropy``, ``linear_cross_entropy``, ``evaluate``,
``log_softmax``, ``logsumexp``.

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

From hidden states (`linear_cross_entropy`, ``evaluate(..., linear_weight=)``), the
hidden states are chunked along their leading axes (the feature axis is merged into
one chunk) and the classifier layer is one key of the graph: every block's task
depends on that key, so each worker receives the weight once, however many blocks
it computes -- the weight is never copied into each task.

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
>>> import xent, xent.dask as xd
>>> rng = np.random.default_rng(0)
>>> logits = da.from_array(rng.normal(size=(10_000, 100)), chunks=(2_500, 100))
>>> target = da.from_array(rng.integers(0, 100, size=10_000), chunks=2_500)
>>> loss = xd.cross_entropy(logits, target)          # lazy 0-d dask array
>>> float(loss.compute()) > 0
True
>>> xd.evaluate(logits, target, k=(1, 5)).compute().count
10000

From hidden states, the logits never held:

>>> hidden = da.from_array(rng.normal(size=(10_000, 32)), chunks=(2_500, 32))
>>> W = rng.normal(size=(100, 32))
>>> loss = xd.linear_cross_entropy(hidden, W, target)          # lazy 0-d dask array
>>> bool(np.isclose(loss.compute(), xent.linear_cross_entropy(hidden.compute(), W, target)))
True
>>> xd.evaluate(hidden, target, linear_weight=W).compute().count
10000
"""

from __future__ import annotations

import math

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize

from xent._api.multiclass import _logits_and_axis, _row_losses, _Targets
from xent._api.multiclass import cross_entropy as _cross_entropy
from xent._runtime.dispatch import kernels as _kernels
from xent._api.evaluate import (
    _check_axis,
    _check_head_axis,
    _check_ks,
    _hidden_partials,
    _make_head,
    _partials,
    _result,
    check_hidden_targets,
)
from xent._api.linear import LinearHead, _check_softcap, _linear_cross_entropy
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

__all__ = ["cross_entropy", "evaluate", "linear_cross_entropy", "log_softmax", "logsumexp"]


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


def _on_axis(values, ndim, ax):
    """The (P,) partials of one block as a (1, ..., P, ..., 1) float64 block, P on `ax`."""
    shape = [1] * ndim
    shape[ax] = len(values)
    return np.asarray(values, FLOAT64).reshape(shape)


# ---- hidden states and the classifier layer ----------------------------------------


def _hidden(x, name):
    """(hidden states as a dask array with the feature axis in one chunk, their
    computation dtype)."""
    x = _as_dask(x)
    compute = _compute_dtype(x.dtype, name)
    if x.ndim == 0:
        raise ValueError(f"{name}: expected hidden states of shape (..., D), got a scalar")
    if math.isnan(x.shape[-1]):
        raise ValueError(f"{name}: the length of the feature axis is unknown (compute_chunk_sizes())")
    if x.numblocks[-1] > 1:
        x = x.rechunk({x.ndim - 1: -1})
    return x, compute


def _one_key(a):
    """A dask array as one Delayed holding the whole array (one graph key); anything
    else unchanged."""
    if isinstance(a, da.Array):
        return a.rechunk(a.shape).to_delayed().reshape(-1)[0]
    return a


def _head_key(linear_weight, linear_bias, softcap, x, x_compute, name):
    """(the classifier layer as one graph key -- a Delayed `LinearHead` --, C, the
    computation dtype): every block's task depends on that key, so a worker
    receives the weight once however many blocks it computes.

    A NumPy weight is validated and converted (when its dtype or layout is not the
    computation's) here, once; a Dask weight or bias is checked by shape and dtype
    here, and made into the head by one task."""
    softcap = _check_softcap(softcap)
    lazy = isinstance(linear_weight, da.Array) or isinstance(linear_bias, da.Array)
    w = linear_weight if lazy else np.asarray(linear_weight)
    compute = _compute_dtype(w.dtype, "linear_weight")
    if x_compute == FLOAT64:
        compute = FLOAT64
    if not lazy:
        head = LinearHead(w, linear_bias, softcap, compute=compute)
        head.check_input(x.shape, name)
        key = "xent-linear-head-" + tokenize(head.weight, head.bias, head.softcap, compute.str)
        return dask.delayed(head, name=key), head.C, compute
    if w.ndim != 2:
        raise ValueError(f"linear_weight: expected a 2-D (C, D) matrix, got shape {w.shape}")
    C, D = w.shape
    if x.shape[-1] != D:
        raise ValueError(
            f"{name} has shape {x.shape}, but linear_weight has shape {w.shape}: "
            f"expected {name}.shape[-1] == {D}"
        )
    if linear_bias is not None and tuple(linear_bias.shape) != (C,):
        raise ValueError(
            f"linear_bias has shape {tuple(linear_bias.shape)}, but linear_weight has shape "
            f"{w.shape}: expected ({C},), one value per class"
        )
    if linear_bias is not None:
        _compute_dtype(linear_bias.dtype, "linear_bias")
    head = dask.delayed(LinearHead, pure=True)(_one_key(w), _one_key(linear_bias), softcap,
                                               compute=compute)
    return head, C, compute


def _aligned(head):
    """The LinearHead a task received, its arrays aligned as the kernels need.

    One that came through the network may not be (its buffers lie where the
    frames put them): it is realigned in place, so once per worker, as the
    worker hands the same object to every task."""
    for attr in ("weight", "bias"):
        a = getattr(head, attr)
        if a is not None and not a.flags.aligned:
            setattr(head, attr, np.require(a, requirements="A"))
    return head


def _hidden_class_targets(target, x, name):
    """Class indices for hidden states `x`, with a length-1 last axis, chunked like `x`."""
    t = _as_dask(target)
    check_hidden_targets(t, x.shape, "target", name)
    return da.expand_dims(t, -1).rechunk(x.chunks[:-1] + ((1,),))


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


def _linear_block(x, t, head, **kw):
    """`_linear_cross_entropy` on one block of hidden states, through `head` (a LinearHead)."""
    head = _aligned(head)
    return _linear_cross_entropy(x, head.weight, t, linear_bias=head.bias, softcap=head.softcap,
                                 **kw)


def _ce_block_none(x, t, *, ax, prob, head=None, block_info=None, **kw):
    """The per-row losses of one block (of logits; of hidden states with `head`)."""
    if not prob:
        t = np.squeeze(t, axis=ax)
    try:
        if head is None:
            return _cross_entropy(x, t, axis=ax, reduction="none", **kw)
        return _linear_block(x, t, head, reduction="none", **kw)
    except IndexError as exc:
        C = x.shape[ax] if head is None else head.C
        raise _global_index_error(np.expand_dims(t, ax), C, kw["ignore_index"],
                                  _offsets(block_info, 1), ax) or exc from None


def _ce_block_partials(x, t, *, ax, prob, weight, ignore_index, label_smoothing, z_loss,
                       head=None, block_info=None):
    """(1, ..., P, ..., 1) float64 partial sums of one block (P on the class axis; on
    the feature axis for hidden states, with `head`).

    The per-row float64 losses and logsumexps of xent's kernel are summed as
    `xent.cross_entropy` sums them, without rounding to the computation dtype.
    """
    C = x.shape[ax] if head is None else head.C
    try:
        if head is None:
            lg, _ = _logits_and_axis(x, ax)
            w = class_weights(weight, C, lg.compute)  # the weights the kernel reads
            w64 = None if w is None else w.astype(FLOAT64)
            targets = _Targets(t if prob else np.squeeze(t, axis=ax), lg.array, ax, C,
                               ignore_index, lg.compute, allow_prob=True, weight64=w64)
            ce, lse = _row_losses(lg, ax, targets, weight=w, eps=label_smoothing, z=z_loss)
        else:
            ce, lse, targets = _linear_block(
                x, t if prob else np.squeeze(t, axis=ax), head, weight=weight,
                ignore_index=ignore_index, reduction="sum", label_smoothing=label_smoothing,
                z_loss=z_loss, row_terms=True)
    except IndexError as exc:
        raise _global_index_error(t, C, ignore_index, _offsets(block_info, 1), ax) \
            or exc from None
    out = np.zeros(_CE_P, FLOAT64)
    out[0] = _kernels.sum_rows(ce)
    out[1] = targets.weight_total
    if z_loss != 0:  # (ignored rows have lse 0)
        with np.errstate(over="ignore"):  # z·lse² beyond float64: inf, the answer
            out[2] = _kernels.sum_rows(z_loss * np.square(lse))
    out[3] = targets.n_valid
    return _on_axis(out, x.ndim, ax)


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
    return _ce_graph(x, t, ax, prob, reduction, z, compute, kw)


def _ce_graph(x, t, ax, prob, reduction, z, compute, kw):
    """The lazy loss of blocks `x`, `t` (chunked alike): per-row losses for "none",
    else the float64 partials of every block, summed, then divided once."""
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


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,
                         ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0,
                         softcap=None):
    """`xent.linear_cross_entropy` (the loss) on Dask arrays of hidden states, with an
    exact global mean.

    Each block of rows is computed by `xent.linear_cross_entropy`'s kernels (the
    logits made block by block, never held); the blocks' float64 partial sums are
    added, then divided once, as in `cross_entropy`.  The classifier layer is one
    key of the graph, so each worker receives the weight once.

    Parameters
    ----------
    input : dask.array.Array or array_like, shape (..., D)
        Hidden states chunked along their leading axes (a feature axis in several
        chunks is merged into one).
    linear_weight : array_like or dask.array.Array, shape (C, D)
        The classifier's weight.  A NumPy array is validated and, if its dtype is
        not the computation's, converted here, once, and travels in the graph as
        one key; a Dask array (e.g. read from Zarr) is merged into one chunk that
        one task turns into the classifier layer on a worker.
    target : dask.array.Array or array_like
        Class indices (integers, shape ``input.shape[:-1]``) or class probabilities
        (floats, shape ``input.shape[:-1] + (C,)``); rechunked to match `input`.
    linear_bias : array_like or dask.array.Array of shape (C,), optional
    weight, ignore_index, reduction, label_smoothing, z_loss, softcap
        As for `xent.linear_cross_entropy` (no gradient here).

    Returns
    -------
    dask.array.Array
        ``"none"``: the per-row losses, shape ``input.shape[:-1]``, chunked like
        `input`'s leading axes.  ``"mean"``/``"sum"``: a 0-d array of the
        computation dtype (float64 if `input` or `linear_weight` is, else
        float32); ``"mean"`` divides the sum of every block's losses by the sum of
        every block's ``w[t]`` over non-ignored rows -- the denominators of
        `xent.linear_cross_entropy` on the whole array.

    Raises
    ------
    ValueError, TypeError
        Bad shapes (``input.shape[-1] != linear_weight.shape[1]``, target, bias),
        dtypes, reduction, weight, label_smoothing, z_loss, ``softcap <= 0``
        (when the graph is built).
    IndexError
        A class index out of range (when computing; names its global position).

    Examples
    --------
    >>> import dask.array as da, numpy as np, xent, xent.dask as xd
    >>> rng = np.random.default_rng(0)
    >>> h = rng.normal(size=(1000, 16)).astype(np.float32)
    >>> W, t = rng.normal(size=(50, 16)).astype(np.float32), rng.integers(0, 50, 1000)
    >>> loss = xd.linear_cross_entropy(da.from_array(h, chunks=(300, 16)), W, t, softcap=30.0)
    >>> got, want = loss.compute(), xent.linear_cross_entropy(h, W, t, softcap=30.0)
    >>> got.dtype, bool(np.isclose(got, want, rtol=1e-6))
    (dtype('float32'), True)
    """
    check_reduction(reduction)
    eps = check_scalar(label_smoothing, "label_smoothing", 0.0, 1.0)
    z = check_scalar(z_loss, "z_loss", 0.0)
    ignore_index = check_ignore_index(ignore_index)
    x, x_compute = _hidden(input, "input")
    head, C, compute = _head_key(linear_weight, linear_bias, softcap, x, x_compute, "input")
    w = class_weights(weight, C, FLOAT64)
    t = _as_dask(target)
    prob = t.dtype.kind == "f" or t.dtype.name == "bfloat16"
    if prob:
        want = x.shape[:-1] + (C,)
        if t.shape != want:
            raise ValueError(
                f"target has shape {t.shape}, but class probabilities for hidden states of "
                f"shape {x.shape} and {C} classes must have shape {want} (use an integer "
                "dtype for class indices)"
            )
        t = t.rechunk(x.chunks[:-1] + ((C,),))
    else:
        t = _hidden_class_targets(t, x, "input")
    kw = dict(weight=w, ignore_index=ignore_index, label_smoothing=eps, head=head)
    return _ce_graph(x, t, x.ndim - 1, prob, reduction, z, compute, kw)


# ---- evaluation ---------------------------------------------------------------------


def _eval_block(x, t, *, ax, ignore_index, ks, head=None, block_info=None):
    """[sum of -log p_t, rows, hits for each k] of one block, on its class axis (of
    hidden states through `head`, a LinearHead, on their feature axis)."""
    try:
        if head is None:
            total, count, hits = _partials(x, np.squeeze(t, axis=ax), ax, ignore_index, ks)
        else:
            total, count, hits = _hidden_partials(_aligned(head), x, np.squeeze(t, axis=ax),
                                                  ignore_index, ks)
    except IndexError as exc:
        C = x.shape[ax] if head is None else head.C
        raise _global_index_error(t, C, ignore_index, _offsets(block_info, 1), ax) \
            or exc from None
    return _on_axis([total, count, *hits], x.ndim, ax)


def _eval_finish(totals, ks):
    v = np.asarray(totals, FLOAT64).reshape(-1)
    return _result(float(v[0]), int(v[1]), [int(h) for h in v[2:]], ks)


def evaluate(logits, target, *, axis=-1, ignore_index=-100, k=(1, 5), linear_weight=None,
             linear_bias=None, softcap=None):
    """`xent.evaluate` on Dask arrays: loss, perplexity and top-k accuracy, exactly.

    Each block is evaluated by `xent.evaluate`'s kernel (one pass over its rows);
    the blocks' float64 loss sums and integer row / hit counts are added, then
    divided once.  With `linear_weight`, `logits` are hidden states and each
    block's logits are made block by block of rows, never held; the classifier
    layer is one key of the graph, received once by each worker.

    Parameters
    ----------
    logits : dask.array.Array or array_like
        Logits chunked along the batch (a class axis in several chunks is merged);
        with `linear_weight`, hidden states ``(..., D)`` chunked along their
        leading axes.
    target : dask.array.Array or array_like of int
        Class indices, the logits' shape without `axis` (the hidden states' shape
        without their last axis); rechunked to match.
    axis, ignore_index, k
        As for `xent.evaluate` (`axis` must be -1 with `linear_weight`).
    linear_weight : array_like or dask.array.Array of shape (C, D), optional
    linear_bias : array_like or dask.array.Array of shape (C,), optional
    softcap : float > 0, optional
        The classifier layer, as for `xent.evaluate` and `linear_cross_entropy`.

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
    head = None
    if linear_weight is None:
        _make_head(None, linear_bias, softcap)  # a bias or a cap without a weight: an error
        x, ax, _ = _logits(logits, axis)
        t = _class_targets(target, x, ax)
    else:
        _check_head_axis(_check_axis(axis))
        x, x_compute = _hidden(logits, "logits")
        head, _, _ = _head_key(linear_weight, linear_bias, softcap, x, x_compute, "logits")
        ax = x.ndim - 1
        t = _hidden_class_targets(target, x, "logits")
    P = 2 + len(ks)
    parts = da.map_blocks(
        _eval_block, x, t, ax=ax, ignore_index=ignore_index, ks=ks, head=head,
        chunks=_partials_chunks(x, ax, P), dtype=FLOAT64, meta=np.empty((0,) * x.ndim, FLOAT64),
    )
    totals = _sum_partials(parts, ax)
    return dask.delayed(_eval_finish, pure=True)(totals, ks)
