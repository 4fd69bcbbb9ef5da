"""Evaluation of a classifier's logits: loss, perplexity and top-k accuracy in one pass.

``evaluate`` reads each row of logits once (``_cython/evaluate.pxi``): the row's max, its
log-sum-exp and the rank of the target logit come from the same read.  The kernel
writes two per-row arrays (``-log p_t`` in float64 and the target's rank in int64);
they are reduced here into float64 / integer sums.  ``Evaluator`` keeps those sums
across batches, so a dataset can be evaluated in pieces -- in any order, on any
machine -- and the pieces combined exactly with ``merge``.

With ``linear_weight=`` the first argument is hidden states, and the logits are those
of the classifier layer ``softcap·tanh((h @ W.T + b)/softcap)``: `LinearHead` produces
them one block of rows at a time into one reused buffer (as `linear_cross_entropy`
does) and the same kernel reads each block while it is hot, so the N×C logits never
exist whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from xent._api.linear import LinearHead, _as_matrix, _compute_dtype, _Rows
from xent._api.multiclass import _logits_and_axis, _Targets
from xent._runtime.dispatch import kernels as _kernels
from xent._runtime.integers import as_integer
from xent._runtime.linear_algebra import single_threaded_blas
from xent._runtime.threads import threads_for
from xent._api.validation import FLOAT64, check_ignore_index, float_kind, input_3d

__all__ = ["Evaluation", "Evaluator", "evaluate"]

# The kernel's rank for rows no k makes correct (ignored rows, NaN target logits).
_NEVER = int(_kernels.NEVER)


@dataclass(frozen=True)
class Evaluation:
    """Summary of a classifier's logits over the non-ignored rows.

    Attributes
    ----------
    loss : float
        Mean cross-entropy ``-log softmax(logits)[target]`` (nats), NaN when
        `count` is 0.
    perplexity : float
        ``exp(loss)``.
    accuracy : dict of int to float
        ``{k: top-k accuracy}``, the fraction of rows whose target is among the
        `k` highest logits (NaN when `count` is 0).
    count : int
        Number of rows evaluated (rows whose target is ``ignore_index`` are not
        counted).

    Examples
    --------
    >>> import numpy as np, xent
    >>> e = xent.evaluate(np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]), np.array([0, 1]), k=(1, 2))
    >>> e.accuracy, e.count
    ({1: 0.5, 2: 1.0}, 2)
    >>> sorted(e.as_dict())
    ['accuracy', 'count', 'loss', 'perplexity']
    """

    loss: float
    perplexity: float
    accuracy: dict = field(hash=False)
    count: int

    def as_dict(self):
        """The fields as a plain dict (``accuracy`` a fresh ``{k: value}`` dict).

        Returns
        -------
        dict
            ``{"loss": float, "perplexity": float, "accuracy": {k: float}, "count": int}``;
            ``json.dumps`` writes the ``k`` keys as strings.
        """
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "accuracy": dict(self.accuracy),
            "count": self.count,
        }


def _check_ks(k):
    """`k` (an int or an iterable of ints >= 1) as a tuple without repeats, order kept."""
    values = [k] if isinstance(k, (int, np.integer)) and not isinstance(k, bool) else k
    try:
        items = list(values)
    except TypeError:
        raise TypeError(f"k: expected an integer or a sequence of integers, got {k!r}") from None
    ks = []
    for v in items:
        v = as_integer(v, "k", "integers")
        if v < 1:
            raise ValueError(f"k: top-k accuracy needs k >= 1, got {v}")
        if v not in ks:
            ks.append(v)
    return tuple(ks)


def _check_axis(axis):
    return as_integer(axis, "axis")


def _partials(logits, target, axis, ignore_index, ks):
    """(sum of -log p_t, number of rows, top-k hits per k) over non-ignored rows.

    Validates everything before the kernel runs: a bad call raises and counts nothing.
    """
    lg, ax = _logits_and_axis(logits, axis)
    a = lg.array
    C = a.shape[ax]
    targets = _Targets(target, a, ax, C, ignore_index, lg.compute, allow_prob=False)
    x3 = input_3d(a, ax)
    n_rows = x3.shape[0] * x3.shape[2]
    nll = np.empty(n_rows, FLOAT64)
    rank = np.empty(n_rows, np.int64)
    _kernels.evaluate(
        x=x3, xkind=float_kind(a), double_precision=lg.compute == FLOAT64,
        target=targets.array3d, tcode=targets.code, ignore_index=ignore_index,
        nll=nll, rank=rank, n_threads=threads_for(a.size),
    )
    return _sums(nll, rank, targets.n_valid, ks)


def _sums(nll, rank, n_valid, ks):
    """(sum of -log p_t, rows, top-k hits per k) from the kernel's per-row outputs."""
    # rank < k: top-k correct (ignored rows and NaN targets have rank _NEVER)
    hits = tuple(int(np.count_nonzero(rank < min(k, _NEVER))) for k in ks)
    with np.errstate(over="ignore", invalid="ignore"):  # inf, NaN: the answers
        total = float(np.sum(nll))
    return total, int(n_valid), hits


# ---- from hidden states ---------------------------------------------------------------


class _Head:
    """The classifier layer of an evaluation from hidden states.

    `linear_weight`, `linear_bias` and `softcap` are validated once, here; the
    `LinearHead` of each computation dtype met (float32, or float64 when the hidden
    states or the weight are float64 -- `linear_cross_entropy`'s rule) is made once.
    """

    def __init__(self, linear_weight, linear_bias, softcap):
        first = LinearHead(linear_weight, linear_bias, softcap)
        self.C, self.D, self.softcap = first.C, first.D, first.softcap
        self.weight_compute = first.compute
        # the bias as given: a float64 head must not see it rounded to float32
        self.bias = None if linear_bias is None else np.asarray(linear_bias)
        self.heads = {first.compute: first}

    def settings(self):
        """What two evaluators must share to be merged: (C, D, bias?, softcap)."""
        return (self.C, self.D, self.bias is not None, self.softcap)

    def describe(self):
        bias = ", linear_bias" if self.bias is not None else ""
        cap = f", softcap={self.softcap}" if self.softcap is not None else ""
        return f"linear_weight of shape {(self.C, self.D)}{bias}{cap}"

    def for_input(self, compute):
        """The LinearHead for hidden states computed in `compute`."""
        compute = _compute_dtype(compute, self.weight_compute)
        if compute not in self.heads:
            # the weight is exact in its own computation dtype (float16 -> float32 is)
            w = self.heads[self.weight_compute].weight
            self.heads[compute] = LinearHead(w, self.bias, self.softcap, compute=compute)
        return self.heads[compute]


def _make_head(linear_weight, linear_bias, softcap):
    """A _Head, or None for logits; linear_bias/softcap without a weight is an error."""
    if linear_weight is None:
        for name, value in (("linear_bias", linear_bias), ("softcap", softcap)):
            if value is not None:
                raise ValueError(
                    f"{name}: given without linear_weight (it applies to the classifier "
                    "layer of an evaluation from hidden states)"
                )
        return None
    return _Head(linear_weight, linear_bias, softcap)


def _check_head_axis(axis):
    if axis != -1:
        raise ValueError(
            f"axis: must be -1 with linear_weight (the classes are the rows of "
            f"linear_weight; the hidden states' last axis is their features), got {axis}"
        )


def check_hidden_targets(t, hidden_shape, name="target", hidden_name="logits"):
    """Class indices `t` (NumPy or dask) for hidden states of `hidden_shape`: TypeError
    unless integers, ValueError unless of shape ``hidden_shape[:-1]``."""
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class indices, got dtype {t.dtype}")
    if tuple(t.shape) != tuple(hidden_shape[:-1]):
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}, but class indices for hidden states "
            f"({hidden_name}) of shape {tuple(hidden_shape)} must have shape "
            f"{tuple(hidden_shape[:-1])}"
        )


def _hidden_partials(head, hidden, target, ignore_index, ks, name="logits"):
    """`_partials` of the logits of hidden states through `head`, computed block by
    block of rows; everything is validated before the first product.

    `head`: a _Head, or (xent.dask, whose blocks all have one dtype) the LinearHead
    of the computation dtype already."""
    x, x_compute = _as_matrix(hidden, name)
    if x.ndim == 0:
        raise ValueError(f"{name}: expected hidden states of shape (..., D), got a scalar")
    lin = head.for_input(x_compute) if isinstance(head, _Head) else head
    compute = lin.compute  # float64 if the hidden states or the weight are
    lin.check_input(x.shape, name)
    t = np.asarray(target)
    check_hidden_targets(t, x.shape, hidden_name=name)
    # the targets are checked against the logits' shape without the logits existing
    logits_shape = x.shape[:-1] + (lin.C,)
    shape_only = np.broadcast_to(np.zeros((), compute), logits_shape)
    targets = _Targets(t, shape_only, x.ndim - 1, lin.C, ignore_index, compute,
                       allow_prob=False)
    rows = _Rows(x, compute)
    flat_target = targets.array.reshape(rows.n)
    nll = np.empty(rows.n, FLOAT64)
    rank = np.empty(rows.n, np.int64)
    topk = max(ks)
    if topk <= TILE_TOPK:
        # tiles of classes reduced while hot, each keeping its topk best classes
        t = flat_target.astype(np.int64)
        t[flat_target == ignore_index] = -1
        again = lin.loss_tiles(rows, t, nll, np.empty(rows.n, FLOAT64), topk=topk,
                               rank=rank)
        if again.size:  # non-finite parts: whole rows, the kernel's rules
            _whole_rows(lin, _Rows(rows.take(again), compute), flat_target[again], targets,
                        ignore_index, nll, rank, again)
    else:
        _whole_rows(lin, rows, flat_target, targets, ignore_index, nll, rank, None)
    return _sums(nll, rank, targets.n_valid, ks)


# evaluate from hidden states keeps each tile's TILE_TOPK best classes at most (k up to
# this many is computed from tiles of classes; a larger k from whole rows of logits).
TILE_TOPK = 16


def _whole_rows(lin, rows, flat_target, targets, ignore_index, nll, rank, index):
    """The evaluate kernel on blocks of whole rows of logits; `index`: None, or the
    global row number of each of `rows` (results written there)."""
    kind = float_kind(np.empty(0, lin.compute))
    with single_threaded_blas():  # xent's team runs the products (as linear_cross_entropy)
        for r0, r1, z in lin.logit_blocks(rows):
            nb = r1 - r0
            n_b = np.empty(nb, FLOAT64)
            r_b = np.empty(nb, np.int64)
            _kernels.evaluate(
                x=z.reshape(nb, lin.C, 1), xkind=kind, double_precision=lin.compute == FLOAT64,
                target=flat_target[r0:r1].reshape(nb, 1, 1), tcode=targets.code,
                ignore_index=ignore_index, nll=n_b, rank=r_b, n_threads=threads_for(z.size),
            )
            at = slice(r0, r1) if index is None else index[r0:r1]
            nll[at], rank[at] = n_b, r_b


def _result(total, count, hits, ks):
    if count == 0:
        nan = math.nan
        return Evaluation(nan, nan, {k: nan for k in ks}, 0)
    loss = total / count
    try:
        perplexity = math.exp(loss)
    except OverflowError:  # a finite loss above ~709.8
        perplexity = math.inf
    return Evaluation(loss, perplexity, {k: h / count for k, h in zip(ks, hits)}, count)


def evaluate(logits, target, *, axis=-1, ignore_index=-100, k=(1, 5), linear_weight=None,
             linear_bias=None, softcap=None):
    """Loss, perplexity and top-k accuracy of logits against class indices, in one pass.

    Each row of logits is read once: its max, its log-sum-exp and the rank of the
    target's logit all come from the same read (no N×C temporary).  Sums over the
    rows are taken in float64.

    With `linear_weight`, `logits` holds hidden states ``h`` of shape ``(..., D)``
    and the logits are ``z = h @ linear_weight.T + linear_bias`` (capped as
    ``softcap·tanh(z/softcap)`` with `softcap`), computed as `linear_cross_entropy`
    computes them: one block of rows at a time into one reused buffer of at most
    32 MiB, each block evaluated while hot -- the N×C logits never exist whole.

    Parameters
    ----------
    logits : array_like
        Unnormalised scores, class axis `axis`.  float32/float64 computed in their
        own precision, float16/bfloat16 in float32, integers in float64.  With
        `linear_weight`: hidden states of shape ``(..., D)``, any leading shape and
        strides (``hidden[:, :-1]`` is read without a whole copy); computed in float64
        if they or the weight are float64, else in float32.
    target : array_like of int
        Class indices, the logits' shape without `axis` (with `linear_weight`: the
        hidden states' shape without the last axis).
    axis : int, optional
        The class axis (default: last).  Must be -1 with `linear_weight`.
    ignore_index : int, optional
        Rows whose target equals this are left out of every result, whatever their
        logits hold (default -100).
    k : int or sequence of int, optional
        The k of the top-k accuracies (default ``(1, 5)``); each ``>= 1``.  A k of
        at least C makes every row correct except those with a NaN target logit.
    linear_weight : array_like of shape (C, D), optional
        The classifier layer's weight: `logits` are then hidden states.
    linear_bias : array_like of shape (C,), optional
        Its bias (only with `linear_weight`).
    softcap : float > 0, optional
        Caps the logits as ``softcap·tanh(z/softcap)`` (Gemma 2; only with
        `linear_weight`).

    Returns
    -------
    Evaluation
        ``loss``: mean of ``-log softmax(logits)[target]`` over the non-ignored rows
        (float64; NaN for no rows); ``perplexity = exp(loss)``; ``accuracy``:
        ``{k: fraction of rows that are top-k correct}``; ``count``: the number of
        non-ignored rows.  Python numbers whatever the array type of the inputs
        (torch tensors too; Dask arrays give a ``dask.delayed`` Evaluation).

    Raises
    ------
    IndexError
        A class index outside ``[0, C)`` that is not `ignore_index` (the message
        names the first one and its position).
    ValueError
        `target`'s shape is not the logits' shape without `axis`; `axis` out of
        range; `ignore_index` outside int64's range; a k below 1.  With
        `linear_weight`: ``logits.shape[-1] != linear_weight.shape[1]``, a bias not
        of shape ``(C,)``, ``softcap <= 0``, an `axis` other than -1;
        `linear_bias` or `softcap` without `linear_weight`.
    TypeError
        Unsupported dtypes (floating targets included: they are not class indices).

    Notes
    -----
    A row is top-k correct when fewer than ``k`` classes rank above its target,
    where class ``c`` ranks above target ``t`` if ``x_c > x_t``, or ``x_c == x_t``
    and ``c < t`` -- so top-1 is ``argmax == target``.  A row whose target logit is
    NaN is never correct; a NaN elsewhere in a row ranks nowhere (it is not above
    the target: comparisons with NaN are false), but makes that row's loss, hence
    the mean loss, NaN.  Infinite logits follow the SPEC's rule: ``-inf`` is a class
    of probability 0 (an infinite loss if it is the target), k ``+inf`` logits
    share the probability.

    Examples
    --------
    >>> import numpy as np, xent
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3], [1.0, 0.0, 3.0]])
    >>> e = xent.evaluate(logits, np.array([0, 2, -100]), k=(1, 2))
    >>> e.count, e.accuracy
    (2, {1: 0.5, 2: 0.5})
    >>> round(e.loss, 4), round(e.perplexity, 4)
    (1.4185, 4.1311)

    From hidden states, without the logits:

    >>> rng = np.random.default_rng(0)
    >>> h, W = rng.normal(size=(6, 4)), rng.normal(size=(10, 4))
    >>> t = np.array([1, 2, 3, 4, 5, -100])
    >>> e = xent.evaluate(h, t, linear_weight=W, softcap=5.0)
    >>> ref = xent.evaluate(5.0 * np.tanh(h @ W.T / 5.0), t)  # the logits held
    >>> e.count, e.accuracy == ref.accuracy, abs(e.loss - ref.loss) < 1e-12
    (5, True, True)
    """
    ks = _check_ks(k)
    ignore_index = check_ignore_index(ignore_index)
    head = _make_head(linear_weight, linear_bias, softcap)
    if head is None:
        total, count, hits = _partials(logits, target, axis, ignore_index, ks)
    else:
        _check_head_axis(_check_axis(axis))
        total, count, hits = _hidden_partials(head, logits, target, ignore_index, ks)
    return _result(total, count, hits, ks)


class Evaluator:
    """Streaming `evaluate`: feed batches with `update`, read the totals with `result`.

    The state is a float64 sum of the rows' losses (compensated, so the total does
    not depend on how the rows were batched beyond float64 rounding), the number
    of rows and an integer count of top-k hits per k.  `merge` adds another
    evaluator's state, so batches evaluated in other threads, processes or
    machines combine exactly.

    With `linear_weight`, every batch given to `update` is hidden states ``(..., D)``
    and its logits come from the classifier layer, block by block, as in `evaluate`
    (the weight is validated, and converted if needed, once, here).

    Parameters
    ----------
    axis : int, optional
        The class axis of every batch (default: last; must be -1 with
        `linear_weight`).
    ignore_index : int, optional
        Targets equal to this are left out (default -100).
    k : int or sequence of int, optional
        The k of the top-k accuracies (default ``(1, 5)``).
    linear_weight : array_like of shape (C, D), optional
        The classifier layer's weight: the batches are then hidden states.  The
        evaluator keeps a reference to it (or its converted copy, e.g. float16 to
        float32), and pickles it with its state.
    linear_bias : array_like of shape (C,), optional
    softcap : float > 0, optional
        As for `evaluate` (only with `linear_weight`).

    Raises
    ------
    ValueError
        `ignore_index` outside int64's range, a k below 1, a bad `linear_weight`,
        `linear_bias` or `softcap`, an `axis` other than -1 with `linear_weight`
        (here, before any batch).
    TypeError
        A non-integer `axis`, `ignore_index` or k; an unsupported weight dtype.

    Examples
    --------
    >>> import numpy as np, xent
    >>> rng = np.random.default_rng(0)
    >>> logits, target = rng.normal(size=(100, 10)), rng.integers(0, 10, 100)
    >>> ev = xent.Evaluator(k=(1, 3))
    >>> for start in range(0, 100, 32):
    ...     ev.update(logits[start:start + 32], target[start:start + 32])
    >>> r, e = ev.result(), xent.evaluate(logits, target, k=(1, 3))
    >>> r.count, r.accuracy == e.accuracy, abs(r.loss - e.loss) < 1e-12
    (100, True, True)

    From hidden states (say a language model's last layer, in batches):

    >>> h, W = rng.normal(size=(100, 16)), rng.normal(size=(10, 16))
    >>> ev = xent.Evaluator(k=(1, 3), linear_weight=W)
    >>> for start in range(0, 100, 32):
    ...     ev.update(h[start:start + 32], target[start:start + 32])
    >>> e = xent.evaluate(h @ W.T, target, k=(1, 3))
    >>> ev.count, ev.result().accuracy == e.accuracy, abs(ev.result().loss - e.loss) < 1e-12
    (100, True, True)
    """

    __slots__ = ("_axis", "_ignore_index", "_ks", "_head", "_sum", "_comp", "_count", "_hits")

    def __init__(self, *, axis=-1, ignore_index=-100, k=(1, 5), linear_weight=None,
                 linear_bias=None, softcap=None):
        self._axis = _check_axis(axis)
        self._ignore_index = check_ignore_index(ignore_index)
        self._ks = _check_ks(k)
        self._head = _make_head(linear_weight, linear_bias, softcap)
        if self._head is not None:
            _check_head_axis(self._axis)
        self.reset()

    @property
    def axis(self):
        """The class axis of the batches."""
        return self._axis

    @property
    def ignore_index(self):
        """Targets equal to this are left out."""
        return self._ignore_index

    @property
    def k(self):
        """The k values of the top-k accuracies (a tuple)."""
        return self._ks

    @property
    def count(self):
        """Rows counted so far (non-ignored)."""
        return self._count

    def reset(self):
        """Forget every batch seen so far."""
        self._sum = 0.0
        self._comp = 0.0
        self._count = 0
        self._hits = [0] * len(self._ks)

    def _add(self, total, count, hits):
        # Neumaier's compensated sum: the total is (nearly) correctly rounded
        # whatever the batch boundaries.  Losses are >= 0, +inf or NaN; once the
        # sum is not finite it stays what it is.
        s = self._sum + total
        if math.isfinite(s):
            if abs(self._sum) >= abs(total):
                self._comp += (self._sum - s) + total
            else:
                self._comp += (total - s) + self._sum
        else:
            self._comp = 0.0
        self._sum = s
        self._count += count
        self._hits = [a + b for a, b in zip(self._hits, hits)]

    def update(self, logits, target):
        """Add a batch of rows.

        Parameters
        ----------
        logits : array_like
            Logits, class axis `axis` (any batch size, even 0 rows); with
            `linear_weight`, hidden states ``(..., D)``.
        target : array_like of int
            Class indices, the logits' shape without `axis` (the hidden states'
            without their last axis).

        Raises
        ------
        IndexError, ValueError, TypeError
            As for `evaluate`; a batch that raises is not counted.
        """
        if self._head is None:
            parts = _partials(logits, target, self._axis, self._ignore_index, self._ks)
        else:
            parts = _hidden_partials(self._head, logits, target, self._ignore_index, self._ks)
        self._add(*parts)

    def merge(self, other):
        """Add the state of another evaluator (same axis, ignore_index and k) into this one.

        Parameters
        ----------
        other : Evaluator

        Returns
        -------
        Evaluator
            self, now counting the rows of both (so ``functools.reduce(Evaluator.merge,
            evaluators)`` combines many).

        Raises
        ------
        TypeError
            `other` is not an Evaluator.
        ValueError
            `other` was built with another `axis`, `ignore_index` or `k`, or another
            classifier layer: one evaluates logits and the other hidden states, or
            their heads differ in shape ``(C, D)``, in having a bias, or in `softcap`.

        Notes
        -----
        The weights' values are not compared (that would read two C×D matrices,
        and an evaluator that went through pickle, e.g. to a dask worker, holds a
        copy, not the same array): merging evaluators of two different heads of the
        same shape is the caller's mistake to avoid.
        """
        if not isinstance(other, Evaluator):
            raise TypeError(f"other: expected an Evaluator, got {type(other).__name__}")
        mine = (self._axis, self._ignore_index, self._ks)
        theirs = (other._axis, other._ignore_index, other._ks)
        if mine != theirs:
            raise ValueError(
                "other: cannot merge evaluators with different settings: "
                f"(axis, ignore_index, k) = {mine} here, {theirs} in other"
            )
        mine, theirs = _head_settings(self._head), _head_settings(other._head)
        if mine != theirs:
            raise ValueError(
                "other: cannot merge evaluators with different classifier layers: "
                f"{_head_description(self._head)} here, {_head_description(other._head)} "
                "in other"
            )
        comp = other._comp
        self._add(other._sum, other._count, other._hits)
        if math.isfinite(self._sum):
            self._comp += comp
        return self

    def result(self):
        """The evaluation of every row seen so far.

        Returns
        -------
        Evaluation
            NaN loss, perplexity and accuracies while `count` is 0.
        """
        total = self._sum + self._comp if math.isfinite(self._sum) else self._sum
        return _result(total, self._count, self._hits, self._ks)

    def __getstate__(self):
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state):
        self._head = None  # the state of an evaluator pickled before heads existed
        for name, value in state.items():
            setattr(self, name, value)

    def __repr__(self):
        head = "" if self._head is None else f", {_head_description(self._head)}"
        return (
            f"Evaluator(axis={self._axis}, ignore_index={self._ignore_index}, "
            f"k={self._ks}{head}, count={self._count})"
        )


def _head_settings(head):
    return None if head is None else head.settings()


def _head_description(head):
    return "logits (no linear_weight)" if head is None else head.describe()
