"""Evaluation of a classifier's logits: loss, perplexity and top-k accuracy in one pass.

``evaluate`` reads each row of logits once (``_cython/evaluate.pxi``): the row's max, its
log-sum-exp and the rank of the target logit come from the same read.  The kernel
writes two per-row arrays (``-log p_t`` in float64 and the target's rank in int64);
they are reduced here into float64 / integer sums.  ``Evaluator`` keeps those sums
across batches, so a dataset can be evaluated in pieces -- in any order, on any
machine -- and the pieces combined exactly with ``merge``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from xent._api.multiclass import _logits_and_axis, _Targets
from xent._runtime.dispatch import kernels as _kernels
from xent._runtime.integers import as_integer
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
    # rank < k: top-k correct (ignored rows and NaN targets have rank _NEVER)
    hits = tuple(int(np.count_nonzero(rank < min(k, _NEVER))) for k in ks)
    with np.errstate(over="ignore", invalid="ignore"):  # inf, NaN: the answers
        total = float(np.sum(nll))
    return total, int(targets.n_valid), hits


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


def evaluate(logits, target, *, axis=-1, ignore_index=-100, k=(1, 5)):
    """Loss, perplexity and top-k accuracy of logits against class indices, in one pass.

    Each row of logits is read once: its max, its log-sum-exp and the rank of the
    target's logit all come from the same read (no N×C temporary).  Sums over the
    rows are taken in float64.

    Parameters
    ----------
    logits : array_like
        Unnormalised scores, class axis `axis`.  float32/float64 computed in their
        own precision, float16/bfloat16 in float32, integers in float64.
    target : array_like of int
        Class indices, the logits' shape without `axis`.
    axis : int, optional
        The class axis (default: last).
    ignore_index : int, optional
        Rows whose target equals this are left out of every result, whatever their
        logits hold (default -100).
    k : int or sequence of int, optional
        The k of the top-k accuracies (default ``(1, 5)``); each ``>= 1``.  A k of
        at least C makes every row correct except those with a NaN target logit.

    Returns
    -------
    Evaluation
        ``loss``: mean of ``-log softmax(logits)[target]`` over the non-ignored rows
        (float64; NaN for no rows); ``perplexity = exp(loss)``; ``accuracy``:
        ``{k: fraction of rows that are top-k correct}``; ``count``: the number of
        non-ignored rows.

    Raises
    ------
    IndexError
        A class index outside ``[0, C)`` that is not `ignore_index` (the message
        names the first one and its position).
    ValueError
        `target`'s shape is not the logits' shape without `axis`; `axis` out of
        range; `ignore_index` outside int64's range; a k below 1.
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
    """
    ks = _check_ks(k)
    ignore_index = check_ignore_index(ignore_index)
    total, count, hits = _partials(logits, target, axis, ignore_index, ks)
    return _result(total, count, hits, ks)


class Evaluator:
    """Streaming `evaluate`: feed batches with `update`, read the totals with `result`.

    The state is a float64 sum of the rows' losses (compensated, so the total does
    not depend on how the rows were batched beyond float64 rounding), the number
    of rows and an integer count of top-k hits per k.  `merge` adds another
    evaluator's state, so batches evaluated in other threads, processes or
    machines combine exactly.

    Parameters
    ----------
    axis : int, optional
        The class axis of every batch (default: last).
    ignore_index : int, optional
        Targets equal to this are left out (default -100).
    k : int or sequence of int, optional
        The k of the top-k accuracies (default ``(1, 5)``).

    Raises
    ------
    ValueError
        `ignore_index` outside int64's range, a k below 1 (here, before any batch).
    TypeError
        A non-integer `axis`, `ignore_index` or k.

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
    """

    __slots__ = ("_axis", "_ignore_index", "_ks", "_sum", "_comp", "_count", "_hits")

    def __init__(self, *, axis=-1, ignore_index=-100, k=(1, 5)):
        self._axis = _check_axis(axis)
        self._ignore_index = check_ignore_index(ignore_index)
        self._ks = _check_ks(k)
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
            Logits, class axis `axis` (any batch size, even 0 rows).
        target : array_like of int
            Class indices, the logits' shape without `axis`.

        Raises
        ------
        IndexError, ValueError, TypeError
            As for `evaluate`; a batch that raises is not counted.
        """
        self._add(*_partials(logits, target, self._axis, self._ignore_index, self._ks))

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
            `other` was built with another `axis`, `ignore_index` or `k`.
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
        for name, value in state.items():
            setattr(self, name, value)

    def __repr__(self):
        return (
            f"Evaluator(axis={self._axis}, ignore_index={self._ignore_index}, "
            f"k={self._ks}, count={self._count})"
        )
