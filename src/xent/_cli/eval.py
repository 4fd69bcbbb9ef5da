"""Streaming evaluation of ``.npy`` files: the engine of ``xent eval``.

The logits and targets are memory-mapped (``np.load(mmap_mode="r")``) and fed to
an `Evaluator` in batches along the array's outermost non-class axis, so a file
several times larger than RAM is evaluated with bounded memory:

* nothing of the file's size is ever allocated: each batch is a view of the
  mapping, read in place by the kernels (16-bit floats included);
* while a batch is computed, a helper thread maps the next one into the process
  (``MADV_POPULATE_READ``, which also reads it from disk if needed; elsewhere
  ``MADV_WILLNEED``, read-ahead only) -- mapping pages costs about a third of the
  kernel's own time per byte, and is then off the critical path -- and unmaps
  the batch before (``MADV_DONTNEED``; the page cache keeps the pages, so a
  second run still reads from memory).  The resident set stays about two
  batches above the interpreter's, whatever the file size.

With ``--linear-weight`` the first file holds hidden states ``(..., D)`` and the
logits are those of the classifier layer, made block by block of rows by
`xent.evaluate`'s ``linear_weight=`` path (the weight and bias memory-mapped too,
read in place when float32/float64).  Hidden states are C/D times smaller than
their logits and each row costs a C×D product, so the batches are counted in the
head's blocks of rows instead of bytes (`HIDDEN_BATCH_BYTES`).
"""

from __future__ import annotations

import math
import mmap
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from xent._api.evaluate import Evaluator, _check_ks, check_hidden_targets
from xent._api.linear import block_rows
from xent._api.validation import as_logits, check_ignore_index, check_index_targets, normalize_axis

__all__ = ["evaluate_npy", "no_rows_warning"]

#: Default batch size: about this many bytes of logits per batch ...
BATCH_BYTES = 64 << 20
#: ... and at most this many rows (the kernel writes 16 bytes of output per row).
BATCH_MAX_ROWS = 1 << 21
#: Hidden states: whole blocks of the head's rows, about this many bytes of hidden
#: states per batch (a few seconds of matrix products at C = 32k-128k, so the
#: progress bar moves; the memory is the head's 32 MiB block either way).
HIDDEN_BATCH_BYTES = 16 << 20

_PAGE = mmap.PAGESIZE
_MAGIC = b"\x93NUMPY"
_HAVE_MADVISE = hasattr(mmap.mmap, "madvise") and hasattr(mmap, "MADV_DONTNEED")
# madvise(MADV_POPULATE_READ) (Linux >= 5.14; not named by Python's mmap module):
# map the range's pages now, reading them from disk if needed.
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if sys.platform.startswith("linux") else None)


def _open_npy(path, name):
    """`path` as a read-only memory-mapped array (OSError/ValueError naming `name`)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name}: no such file: {str(path)!r}")
    if os.path.isdir(path):
        raise ValueError(f"{name}: {str(path)!r} is a directory, not a .npy file")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_MAGIC))
    except OSError as exc:
        raise OSError(f"{name}: cannot open {str(path)!r}: {exc.strerror or exc}") from None
    if magic != _MAGIC:
        hint = " (it is a zip archive: an .npz file?)" if magic.startswith(b"PK") else ""
        raise ValueError(f"{name}: {str(path)!r} is not a .npy file{hint}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{name}: cannot read {str(path)!r} as a .npy array ({exc})") from None


class _Pages:
    """The mapping behind a memory-mapped array, for read-ahead and release hints."""

    def __init__(self, a):
        mm = a.base if isinstance(a.base, mmap.mmap) else getattr(a, "_mmap", None)
        self.mm = mm if (_HAVE_MADVISE and isinstance(mm, mmap.mmap)) else None
        if self.mm is not None:
            self.base = np.frombuffer(self.mm, np.uint8).ctypes.data
            self.size = len(self.mm)

    def _range(self, view):
        """Byte range [lo, hi) of `view` within the mapping (None if it is not a view of it)."""
        if self.mm is None or view.size == 0:
            return None
        lo = hi = view.ctypes.data - self.base
        for n, s in zip(view.shape, view.strides):
            if s < 0:
                lo += s * (n - 1)
            else:
                hi += s * (n - 1)
        hi += view.itemsize
        if lo < 0 or hi > self.size:
            return None
        if hi - lo > 2 * view.nbytes + 2 * _PAGE:
            # a batch interleaved with the others (e.g. the class axis outermost):
            # its pages are shared with every other batch, so no hints at all
            return None
        return lo, hi

    def populate(self, view):
        """Map the pages of `view` into the process now (best effort, never raises)."""
        r = self._range(view)
        if r is None:
            return
        lo = r[0] - r[0] % _PAGE
        global _MADV_POPULATE_READ
        if _MADV_POPULATE_READ is not None:
            try:
                self.mm.madvise(_MADV_POPULATE_READ, lo, r[1] - lo)
                return
            except OSError:  # an older kernel: EINVAL
                _MADV_POPULATE_READ = None
        if hasattr(mmap, "MADV_WILLNEED"):
            try:
                self.mm.madvise(mmap.MADV_WILLNEED, lo, r[1] - lo)
            except OSError:
                pass

    def done(self, view):
        """Unmap the whole pages of `view` from this process (they stay in the page cache).

        A page shared with the next batch is kept (the range is rounded down at
        its end); one shared with the previous batch was already processed.
        """
        r = self._range(view)
        if r is None:
            return
        lo = r[0] - r[0] % _PAGE
        hi = r[1] - r[1] % _PAGE if r[1] < self.size else self.size
        if hi > lo:
            try:
                self.mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except OSError:
                pass


def _batch_axis(a, ax):
    """The non-class axis to cut batches along: the longer-than-1 one with the
    largest stride (the leading axis of a C-order file, the last of a Fortran-order
    one), or None for a single row."""
    candidates = [d for d in range(a.ndim) if d != ax]
    if not candidates:
        return None
    return max(candidates, key=lambda d: (a.shape[d] > 1, abs(a.strides[d]), -d))


def _check_inputs(x, t, axis, logits_name, target_name):
    """Shape and dtype checks of the whole files, before any batch is read."""
    _check_real(x, logits_name, "the class axis")
    ax = normalize_axis(axis, x.ndim)
    check_index_targets(t, x.shape, ax, target_name)
    return ax


def _check_real(x, name, last_axis):
    if x.ndim == 0:
        raise ValueError(f"{name}: expected at least one dimension ({last_axis}), got a scalar")
    if x.dtype.kind not in "fiub" and x.dtype.name != "bfloat16":
        raise TypeError(f"{name}: unsupported dtype {x.dtype} (expected real numbers)")


def _hidden_evaluator(x, t, axis, ignore_index, ks, paths, softcap, names):
    """The Evaluator of hidden states `x` through the head in the files `paths`
    (weight, bias or None), the head's block of rows and C; everything checked
    before any batch is read."""
    logits_name, target_name, weight_name, bias_name = names
    _check_real(x, logits_name, "the hidden size")
    w = _open_npy(paths[0], weight_name)
    b = None if paths[1] is None else _open_npy(paths[1], bias_name)
    try:
        ev = Evaluator(axis=axis, ignore_index=ignore_index, k=ks, linear_weight=w,
                       linear_bias=b, softcap=softcap)
    except (ValueError, TypeError) as exc:  # name the files as the user gave them
        message = (str(exc).replace("linear_weight", weight_name)
                   .replace("linear_bias", bias_name).replace("softcap:", "--softcap:"))
        raise type(exc)(message) from None
    if w.shape[1] != x.shape[-1]:
        raise ValueError(
            f"{logits_name} has shape {x.shape}, but {weight_name} has shape {w.shape}: "
            f"expected the hidden size {logits_name}.shape[-1] == {w.shape[1]}"
        )
    check_hidden_targets(t, x.shape, target_name, logits_name)
    # the head's block of rows, in the computation dtype of these hidden states
    head = ev._head.for_input(as_logits(x[(slice(0, 0),) * x.ndim], logits_name).compute)
    return ev, block_rows(head.C, head.compute.itemsize), head.C


def _hidden_batch_rows(x, bax, block):
    """Entries of the batch axis per batch: whole blocks of the head, about
    HIDDEN_BATCH_BYTES of hidden states."""
    D = x.shape[-1]
    blocks = max(1, HIDDEN_BATCH_BYTES // max(1, block * D * x.itemsize))
    rows_per_entry = max(1, x.size // max(1, x.shape[bax] * D))
    return max(1, blocks * block // rows_per_entry)


def _position(bad_flat, t_batch, t_axis, start):
    """Position in the whole target array of flat index `bad_flat` of a batch."""
    pos = list(np.unravel_index(bad_flat, t_batch.shape))
    pos[t_axis] += start
    return tuple(int(p) for p in pos)


def _default_batch_rows(x, ax, bax):
    """Entries of the batch axis per batch: ~BATCH_BYTES of logits, <= BATCH_MAX_ROWS rows."""
    per_entry = max(1, x.size // max(1, x.shape[bax]))  # logits values per entry
    rows_per_entry = max(1, per_entry // max(1, x.shape[ax]))  # class rows per entry
    return max(1, min(BATCH_BYTES // (per_entry * x.itemsize), BATCH_MAX_ROWS // rows_per_entry))


def evaluate_npy(logits_path, target_path, *, axis=-1, ignore_index=-100, k=(1, 5),
                 batch_rows=None, progress=False, logits_name="LOGITS", target_name="TARGET",
                 linear_weight_path=None, linear_bias_path=None, softcap=None,
                 weight_name="--linear-weight", bias_name="--linear-bias"):
    """Evaluate a ``.npy`` file of logits against a ``.npy`` file of class indices.

    Both files are memory-mapped and streamed in batches along their outermost
    non-class axis; the result is that of `xent.evaluate` on the whole arrays
    (up to float64 rounding of the loss sum).

    With `linear_weight_path`, the first file holds hidden states ``(..., D)`` and
    the result is that of ``xent.evaluate(hidden, target, linear_weight=...,
    linear_bias=..., softcap=...)``: the logits are made block by block, never
    held, and the batches run along the outermost axis but the last.

    Parameters
    ----------
    logits_path, target_path : str or path-like
        The ``.npy`` files (any float, integer or bool logits; integer targets with
        the logits' shape without `axis`).
    axis, ignore_index, k
        As for `xent.evaluate`.
    batch_rows : int, optional
        Entries of the batch axis per batch (default: about 64 MiB of logits, at
        most 2**21 rows; for hidden states, whole blocks of the head's rows, about
        16 MiB of hidden states).
    progress : bool, optional
        Show a tqdm progress bar on stderr -- only if tqdm is installed and stderr
        is a terminal.
    logits_name, target_name : str, optional
        How error messages name the two inputs.
    linear_weight_path, linear_bias_path : str or path-like, optional
        ``.npy`` files of the classifier layer's weight ``(C, D)`` and bias ``(C,)``:
        the first file is then hidden states.
    softcap : float > 0, optional
        Caps the logits (only with `linear_weight_path`), as in `xent.evaluate`.
    weight_name, bias_name : str, optional
        How error messages name the weight and bias files.

    Returns
    -------
    Evaluation

    Raises
    ------
    FileNotFoundError
        A missing file.
    ValueError
        A file that is not a .npy array, shape mismatches, bad `axis`/`k`.
    TypeError
        Non-numeric logits, non-integer targets.
    IndexError
        A class index outside ``[0, C)`` that is not `ignore_index`; the message
        gives its position in the whole target array.
    """
    ks = _check_ks(k)
    ignore_index = check_ignore_index(ignore_index)
    if batch_rows is not None and (isinstance(batch_rows, bool) or int(batch_rows) < 1):
        raise ValueError(f"batch_rows: expected a positive integer, got {batch_rows!r}")
    if linear_weight_path is None and (linear_bias_path is not None or softcap is not None):
        what = bias_name if linear_bias_path is not None else "--softcap"
        raise ValueError(f"{what}: given without {weight_name}")
    x = _open_npy(logits_path, logits_name)
    t = _open_npy(target_path, target_name)
    if linear_weight_path is None:
        ax = _check_inputs(x, t, axis, logits_name, target_name)
        ev = Evaluator(axis=ax, ignore_index=ignore_index, k=ks)
        C = x.shape[ax]
    else:
        ev, block, C = _hidden_evaluator(
            x, t, axis, ignore_index, ks, (linear_weight_path, linear_bias_path), softcap,
            (logits_name, target_name, weight_name, bias_name))
        ax = x.ndim - 1
    bax = _batch_axis(x, ax)
    if bax is None or x.size == 0:
        ev.update(x, t)
        return ev.result()
    tax = bax if bax < ax else bax - 1
    n = x.shape[bax]
    if batch_rows is not None:
        step = int(batch_rows)
    elif linear_weight_path is None:
        step = _default_batch_rows(x, ax, bax)
    else:
        step = _hidden_batch_rows(x, bax, block)
    xpages, tpages = _Pages(x), _Pages(t)
    index = [slice(None)] * x.ndim
    tindex = [slice(None)] * t.ndim

    def batch(start):
        index[bax] = tindex[tax] = slice(start, min(start + step, n))
        return x[tuple(index)], t[tuple(tindex)]

    bar = _progress_bar(n) if progress else None
    # One helper thread maps the next batch and unmaps the last one while the
    # kernels (which release the GIL) compute the current one.
    pager = ThreadPoolExecutor(1, thread_name_prefix="xent-eval-pages")
    try:
        following = batch(0)
        ready = pager.submit(xpages.populate, following[0])
        for start in range(0, n, step):
            xb, tb = following
            ready.result()
            following = batch(start + step) if start + step < n else None
            if following is not None:
                ready = pager.submit(xpages.populate, following[0])
            try:
                ev.update(xb, tb)
            except IndexError as exc:
                # the batch's message has a position within the batch: give the file's
                raise _global_index_error(tb, tax, start, C, ignore_index,
                                          target_name) or exc from None
            pager.submit(xpages.done, xb)
            pager.submit(tpages.done, tb)
            if bar is not None:
                bar.update(xb.shape[bax])
    finally:
        pager.shutdown(wait=True)
        if bar is not None:
            bar.close()
    return ev.result()


def _progress_bar(total):
    """A tqdm bar on stderr, or None when tqdm is missing or stderr is not a terminal."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="row", unit_scale=True, file=sys.stderr, leave=False,
                dynamic_ncols=True, desc="xent eval")


def _global_index_error(tb, tax, start, C, ignore_index, name):
    """The IndexError of a batch, with the bad index's position in the whole file
    (None if the batch has no bad index)."""
    tb = np.asarray(tb)
    bad = np.flatnonzero(((tb != ignore_index) & ((tb < 0) | (tb >= C))).reshape(-1))
    if bad.size == 0:
        return None
    flat = int(bad[0])
    value = tb.reshape(-1)[flat]
    return IndexError(
        f"{name}: class index {value} at position {_position(flat, tb, tax, start)} "
        f"is outside [0, {C}) and is not ignore_index={ignore_index}"
    )


def no_rows_warning(target_path, ignore_index, target_name="TARGET"):
    """`xent eval`'s one-line warning for a result with count 0: why no row counted.

    Either the files have no rows (an empty batch or row axis), or every target
    equals `ignore_index`.  The loss, perplexity and accuracies are then undefined
    (NaN, as `xent.evaluate` gives them).
    """
    t = _open_npy(target_path, target_name)
    if t.size == 0:
        why = f"the files have no rows ({target_name} has shape {t.shape})"
    else:
        why = f"every target in {target_name} equals --ignore-index {ignore_index}"
    return (
        f"xent eval: warning: no row to evaluate: {why}; loss, perplexity and "
        f"accuracy are undefined (nan), count is 0"
    )


def format_plain(result):
    """`xent eval`'s human-readable output (one ``name value`` line each)."""
    lines = [
        f"loss        {result.loss:.6f}",
        f"perplexity  {result.perplexity:.6f}",
    ]
    for kk, acc in result.accuracy.items():
        pct = "" if math.isnan(acc) else f"  ({100 * acc:.2f}%)"
        lines.append(f"{f'top-{kk}':<12}{acc:.6f}{pct}")
    lines.append(f"count       {result.count}")
    return "\n".join(lines)


def as_json(result):
    """`xent eval --json`'s object: strict JSON, so NaN and infinities are null."""

    def num(v):
        return v if math.isfinite(v) else None

    return {
        "loss": num(result.loss),
        "perplexity": num(result.perplexity),
        "accuracy": {str(kk): num(v) for kk, v in result.accuracy.items()},
        "count": result.count,
    }
