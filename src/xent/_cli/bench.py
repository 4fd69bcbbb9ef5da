"""Benchmarks of xent's kernels against NumPy, SciPy and PyTorch.

This module is the library behind ``xent bench``; it can also be used directly::

    >>> from xent._cli import bench
    >>> rows = bench.run(quick=True, cases=["log_softmax"])  # doctest: +SKIP
    >>> print(bench.format_header(bench.machine_info()))     # doctest: +SKIP

What is timed
-------------
For every *case* (a function and an input shape) each available implementation is
timed on the same input array:

``xent``
    the xent function writing into a preallocated ``out=`` array where its API has one
    (``log_softmax``, ``softmax``, ``logsumexp``), so no result allocation is timed.
``numpy``
    the plain NumPy formula (e.g. ``x - m - log(sum(exp(x - m)))``), with the full-size
    temporaries it allocates; that is its cost.
``scipy``
    ``scipy.special.<function>`` when SciPy is importable; allocates its result.
``torch``
    ``torch.<function>`` on ``torch.from_numpy(x)`` (zero-copy) when PyTorch is
    importable; allocates its result.  PyTorch runs with xent's thread count
    (``torch.set_num_threads(xent.get_num_threads())`` for the run, restored after).
``floor``
    ``np.max`` over every input array (the logits, and the targets where a loss has
    them): one streaming read of the data, the least any of these functions can cost.
    16-bit float arrays are read as ``uint16`` (NumPy's float16 ``max`` is not a
    streaming read: it converts element by element, about 30x slower).
    It is measured in the same run, right after the implementations of each case.

The cases
---------
On the standard shapes (:data:`DEFAULT_SHAPES`, or :data:`QUICK_SHAPES`), float32:

``log_softmax``, ``softmax``, ``logsumexp``
    the normalizers, last axis.
``cross_entropy``
    ``xent.cross_entropy(x, t)`` (``reduction="mean"``) with class-index targets
    ``t = default_rng(1).integers(0, C, N)`` (int64), against the NumPy formula
    :func:`numpy_cross_entropy` and ``torch.nn.functional.cross_entropy``.
``cross_entropy+grad``
    the loss and its gradient in one call:
    ``xent.cross_entropy(x, t, return_grad=True, grad_out=buf)`` with ``buf`` a
    preallocated array of ``x``'s shape (not ``x`` itself, so that every timed call
    sees the same logits).  ``grad_out=x``, overwriting the logits in place as a
    training loop does, costs the same: the kernel does the same work and writes the
    same bytes.  Against :func:`numpy_cross_entropy_grad` and PyTorch's
    ``F.cross_entropy(xt, tt).backward()`` (forward + backward, ``xt.grad`` allocated
    by every call and freed after it).

Cases with shapes of their own:

``binary_cross_entropy_with_logits``
    on a 1-D float32 array of 32,000,000 logits (quick: 2,000,000) with float32
    targets in {0, 1}, ``reduction="mean"``; against :func:`numpy_bce_with_logits` and
    ``F.binary_cross_entropy_with_logits``.
``cross_entropy`` float16 (registered as ``"cross_entropy:float16"``)
    xent on float16 logits of 2048x50257 (quick: 256x50257), same targets; compare
    its time with the float32 ``cross_entropy`` row of that shape (half the bytes read).
``cross_entropy`` 256x10 (registered as ``"cross_entropy:small"``)
    one small call: the median of :data:`SMALL_CALL_REPEAT` calls (whatever
    ``repeat`` says), so per-call overhead (validation, dispatch) shows.

The cross-entropy from hidden states (``linear_cross_entropy``, ``evaluate`` with
``linear_weight``, against the matrix product alone and PyTorch's
``F.linear_cross_entropy`` in a process of its own, with the peak memory of each call)
has a module of its own, :mod:`xent._cli.bench_linear`; ``xent bench`` runs it after
these cases.

A case whose ``xent`` implementation is unavailable (e.g. a function not built yet)
is skipped: it produces no rows.

Each callable is called once untimed (warm-up: page-faults the output in, loads the
caches, lets libraries initialise; small-call cases warm up with ``repeat // 20``
calls), then ``repeat`` times under :func:`time.perf_counter`; the median is
reported.  For implementations that return a new array the time includes allocating
and freeing it.

Reported per row: ``median_s``; ``gbps`` = bytes of the input arrays / median time;
``x_floor`` = median / floor median; ``speedup`` = median / xent median (how many
times faster xent is than that implementation; ``1`` for xent itself).

Adding a function
-----------------
Register a :class:`Function` with its implementations::

    register(Function("entropy", {"xent": ..., "numpy": ..., "scipy": ...}))

Each implementation is a *factory*: it receives the inputs (a dict of arrays made by
``Function.make_inputs``) and returns a zero-argument callable, the thing that is
timed.  Preallocate outputs in the factory, not in the callable.  A factory raises
:class:`Unavailable` when its library is not installed; the implementation is then
skipped.  Functions that need more than logits (e.g. class targets) pass their own
``make_inputs`` (:func:`class_target_inputs`, :func:`binary_target_inputs`); functions
with shapes, a dtype or a timed-call count of their own say so with ``shapes``,
``quick_shapes``, ``dtype`` and ``repeat``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import xent

__all__ = [
    "DEFAULT_REPEAT",
    "DEFAULT_SHAPES",
    "FUNCTIONS",
    "QUICK_REPEAT",
    "QUICK_SHAPES",
    "Case",
    "Function",
    "Table",
    "SMALL_CALL_REPEAT",
    "Unavailable",
    "binary_target_inputs",
    "class_target_inputs",
    "default_cases",
    "dtype_comparisons",
    "format_header",
    "logits_inputs",
    "machine_info",
    "numpy_bce_with_logits",
    "numpy_cross_entropy",
    "numpy_cross_entropy_grad",
    "numpy_log_softmax",
    "numpy_logsumexp",
    "numpy_softmax",
    "plot",
    "register",
    "require_matplotlib",
    "run",
    "thread_count",
    "time_call",
    "write_json",
]

DTYPE = "float32"
DEFAULT_SHAPES: tuple[tuple[int, ...], ...] = ((32768, 1000), (2048, 50257), (4_000_000, 10))
QUICK_SHAPES: tuple[tuple[int, ...], ...] = ((2048, 1000), (256, 50257), (200_000, 10))
DEFAULT_REPEAT = 5
QUICK_REPEAT = 3
#: Timed calls of a small-call case (microseconds each), quick or not.
SMALL_CALL_REPEAT = 2000
FLOOR = "floor"

Inputs = Mapping[str, np.ndarray]
Factory = Callable[[Inputs], Callable[[], object]]


class Unavailable(Exception):
    """Raised by an implementation factory whose library cannot be imported."""


# --------------------------------------------------------------------------- registry


def logits_inputs(shape: tuple[int, ...], dtype: np.dtype) -> dict[str, np.ndarray]:
    """Make the standard benchmark logits.

    Parameters
    ----------
    shape : tuple of int
        Shape of the logits; the class axis is the last one.
    dtype : numpy.dtype
        Float dtype of the logits.

    Returns
    -------
    dict
        ``{"x": x}`` with ``x = default_rng(0).standard_normal(shape) * 3``, built in
        place so only one array of that size is allocated (other dtypes than float32
        and float64, e.g. float16, are drawn in float32 and converted).

    Examples
    --------
    >>> logits_inputs((2, 3), np.dtype(np.float32))["x"].shape
    (2, 3)
    >>> logits_inputs((2, 3), np.dtype(np.float16))["x"].dtype
    dtype('float16')
    """
    dtype = np.dtype(dtype)
    draw = dtype if dtype in (np.dtype(np.float32), np.dtype(np.float64)) else np.float32
    x = np.random.default_rng(0).standard_normal(shape, dtype=draw)
    x *= 3
    if x.dtype != dtype:
        x = x.astype(dtype)
    return {"x": x}


def class_target_inputs(shape: tuple[int, ...], dtype: np.dtype) -> dict[str, np.ndarray]:
    """Logits and class-index targets for the multiclass losses.

    Parameters
    ----------
    shape : tuple of int
        ``(N, C)``: shape of the logits; the class axis is the last one.
    dtype : numpy.dtype
        Float dtype of the logits.

    Returns
    -------
    dict
        ``{"x": x, "t": t}``: ``x`` as made by :func:`logits_inputs` and int64 targets
        ``t = default_rng(1).integers(0, C, N)``.

    Examples
    --------
    >>> d = class_target_inputs((4, 3), np.dtype(np.float32))
    >>> d["t"].shape, d["t"].dtype
    ((4,), dtype('int64'))
    """
    inputs = logits_inputs(shape, dtype)
    inputs["t"] = np.random.default_rng(1).integers(0, shape[-1], shape[:-1], dtype=np.int64)
    return inputs


def binary_target_inputs(shape: tuple[int, ...], dtype: np.dtype) -> dict[str, np.ndarray]:
    """Logits and {0, 1} targets of the same shape and dtype for the binary losses.

    Parameters
    ----------
    shape : tuple of int
        Shape of the logits (and targets), e.g. ``(32_000_000,)``.
    dtype : numpy.dtype
        Float dtype of the logits and targets.

    Returns
    -------
    dict
        ``{"x": x, "y": y}``: ``x`` as made by :func:`logits_inputs`; ``y`` holds 0 and
        1 drawn with ``default_rng(1)``.

    Examples
    --------
    >>> d = binary_target_inputs((5,), np.dtype(np.float32))
    >>> d["y"].dtype, set(d["y"].tolist()) <= {0.0, 1.0}
    (dtype('float32'), True)
    """
    inputs = logits_inputs(shape, dtype)
    y = np.random.default_rng(1).integers(0, 2, shape, dtype=np.uint8)
    inputs["y"] = y.astype(dtype)
    return inputs


@dataclass(frozen=True)
class Function:
    """A function to benchmark and its implementations.

    Parameters
    ----------
    name : str
        Name shown in the table (and the xent function it times).
    impls : mapping of str to factory
        Implementation name (``"xent"``, ``"numpy"``, ``"scipy"``, ``"torch"``) to a
        factory ``f(inputs) -> callable``; rows are reported in this order.
    make_inputs : callable, optional
        ``make_inputs(shape, dtype) -> dict`` of input arrays; the default makes logits
        ``{"x": ...}`` with :func:`logits_inputs`.  Cases sharing the same
        ``make_inputs``, shape and dtype share one set of arrays.
    shapes, quick_shapes : tuple of shapes, optional
        The shapes of this function's standard cases; default :data:`DEFAULT_SHAPES`
        and :data:`QUICK_SHAPES`.
    dtype : str, optional
        dtype of the inputs of its standard cases, ``"float32"`` by default.
    repeat : int, optional
        Timed calls per implementation whatever the run's ``repeat`` (for calls of a
        few microseconds, whose median needs many samples); they are preceded by
        ``repeat // 20`` warm-up calls.
    label : str, optional
        Name shown in the table and in the results' ``case`` (default ``name``), so
        that variants such as ``"cross_entropy:float16"`` show as ``cross_entropy``.
    """

    name: str
    impls: Mapping[str, Factory]
    make_inputs: Callable[[tuple[int, ...], np.dtype], dict[str, np.ndarray]] = field(
        default=logits_inputs
    )
    shapes: tuple[tuple[int, ...], ...] | None = None
    quick_shapes: tuple[tuple[int, ...], ...] | None = None
    dtype: str = DTYPE
    repeat: int | None = None
    label: str | None = None

    @property
    def display_name(self) -> str:
        """``label`` if given, else ``name``."""
        return self.label or self.name


@dataclass(frozen=True)
class Case:
    """One benchmark case: a registered function on inputs of one shape.

    Parameters
    ----------
    function : str
        Key in :data:`FUNCTIONS`.
    shape : tuple of int
        Shape of the logits.
    dtype : str, optional
        Float dtype of the logits, ``"float32"`` by default.

    Examples
    --------
    >>> Case("softmax", (256, 50257)).label
    'softmax 256x50257'
    """

    function: str
    shape: tuple[int, ...]
    dtype: str = DTYPE

    @property
    def shape_str(self) -> str:
        """The shape as ``"2048x50257"``."""
        return "x".join(str(n) for n in self.shape)

    @property
    def name(self) -> str:
        """The name shown in the table: the registered function's ``display_name``."""
        function = FUNCTIONS.get(self.function)
        return function.display_name if function is not None else self.function

    @property
    def label(self) -> str:
        """``"<function> <shape>"``, e.g. for plots."""
        return f"{self.function} {self.shape_str}"


#: Registered functions, in the order ``xent bench`` runs them.
FUNCTIONS: dict[str, Function] = {}


def register(function: Function) -> Function:
    """Add (or replace) a function in :data:`FUNCTIONS`.

    Parameters
    ----------
    function : Function
        The function and its implementation factories.

    Returns
    -------
    Function
        ``function``, unchanged.
    """
    FUNCTIONS[function.name] = function
    return function


def default_cases(quick: bool = False, functions: Iterable[str] | None = None) -> list[Case]:
    """The standard cases: every registered function on each of its shapes.

    Parameters
    ----------
    quick : bool, optional
        Use the small shapes (:data:`QUICK_SHAPES`, or the function's own
        ``quick_shapes``) instead of :data:`DEFAULT_SHAPES` (or its ``shapes``).
    functions : iterable of str, optional
        Restrict to these function names (default: all of :data:`FUNCTIONS`).

    Returns
    -------
    list of Case
        Shape-major (shapes in order of first appearance, functions in the given
        order within a shape), so cases sharing an input array are adjacent and the
        array is generated once.

    Raises
    ------
    ValueError
        If a name is not in :data:`FUNCTIONS`.

    Examples
    --------
    >>> [c.label for c in default_cases(quick=True, functions=["softmax"])]
    ['softmax 2048x1000', 'softmax 256x50257', 'softmax 200000x10']
    """
    names = list(FUNCTIONS) if functions is None else list(functions)
    cases: list[Case] = []
    for name in names:
        function = FUNCTIONS.get(name) if isinstance(name, str) else None
        if function is None:
            raise ValueError(f"cases: unknown function {name!r}; known: {', '.join(FUNCTIONS)}")
        own = function.quick_shapes if quick else function.shapes
        shapes = own if own is not None else (QUICK_SHAPES if quick else DEFAULT_SHAPES)
        cases.extend(Case(name, tuple(shape), function.dtype) for shape in shapes)
    order: dict[tuple[int, ...], int] = {}
    for case in cases:
        order.setdefault(case.shape, len(order))
    return sorted(cases, key=lambda c: order[c.shape])  # stable: keeps function order


def _optional(module: str) -> Any:
    """Import ``module`` or raise :class:`Unavailable`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(f"{module} is not importable: {exc}") from None


def _xent(name: str, out_shape: Callable[[np.ndarray], tuple[int, ...]] | None) -> Factory:
    """Factory timing ``xent.<name>(x, out=out)`` with ``out`` preallocated.

    ``out_shape(x)`` gives the output shape; ``None`` means the function has no
    ``out=`` and its result allocation is timed.
    """

    def factory(inputs: Inputs) -> Callable[[], object]:
        f = getattr(xent, name)
        x = inputs["x"]
        if out_shape is None:
            return lambda: f(x)
        out = np.empty(out_shape(x), dtype=x.dtype)
        return lambda: f(x, out=out)

    return factory


def _numpy(formula: Callable[[np.ndarray], object]) -> Factory:
    """Factory timing a plain NumPy formula of the logits."""

    def factory(inputs: Inputs) -> Callable[[], object]:
        x = inputs["x"]
        return lambda: formula(x)

    return factory


def _scipy(name: str) -> Factory:
    """Factory timing ``scipy.special.<name>(x, axis=-1)``."""

    def factory(inputs: Inputs) -> Callable[[], object]:
        f = getattr(_optional("scipy.special"), name)
        x = inputs["x"]
        return lambda: f(x, axis=-1)

    return factory


def _torch(name: str) -> Factory:
    """Factory timing ``torch.<name>(torch.from_numpy(x), dim=-1)`` (zero-copy input)."""

    def factory(inputs: Inputs) -> Callable[[], object]:
        torch = _optional("torch")
        f = getattr(torch, name)
        t = torch.from_numpy(inputs["x"])
        return lambda: f(t, dim=-1)

    return factory


def numpy_logsumexp(x: np.ndarray) -> np.ndarray:
    """The plain NumPy formula xent's ``logsumexp`` is compared with (last axis).

    ``m + log(sum(exp(x - m)))`` with ``m`` the row maximum; allocates ``x - m`` and
    its ``exp`` as full-size temporaries.

    Examples
    --------
    >>> float(numpy_logsumexp(np.zeros((1, 4)))[0]) == float(np.log(4))
    True
    """
    m = x.max(axis=-1, keepdims=True)
    return np.log(np.sum(np.exp(x - m), axis=-1)) + m[..., 0]


def numpy_log_softmax(x: np.ndarray) -> np.ndarray:
    """The plain NumPy formula xent's ``log_softmax`` is compared with (last axis).

    ``x - m - log(sum(exp(x - m)))`` with ``m`` the row maximum.

    Examples
    --------
    >>> numpy_log_softmax(np.zeros((1, 2))).tolist() == [[-np.log(2)] * 2]
    True
    """
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def numpy_softmax(x: np.ndarray) -> np.ndarray:
    """The plain NumPy formula xent's ``softmax`` is compared with (last axis).

    ``e = exp(x - m); e / sum(e)`` with ``m`` the row maximum.

    Examples
    --------
    >>> numpy_softmax(np.zeros((1, 4))).tolist()
    [[0.25, 0.25, 0.25, 0.25]]
    """
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - m)
    e /= np.sum(e, axis=-1, keepdims=True)
    return e


def numpy_cross_entropy(x: np.ndarray, t: np.ndarray) -> np.floating:
    """The plain NumPy formula xent's ``cross_entropy`` is compared with.

    Mean cross-entropy of 2-D logits ``x`` (rows) and class indices ``t``:
    ``lse = m + log(sum(exp(x - m)))`` with ``m`` the row maximum, then
    ``mean(lse - x[i, t_i])``; allocates ``x - m`` and its ``exp`` as full-size
    temporaries.

    Examples
    --------
    >>> float(numpy_cross_entropy(np.zeros((2, 4)), np.array([0, 3]))) == float(np.log(4))
    True
    """
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    return (lse - x[np.arange(x.shape[0]), t]).mean()


def numpy_cross_entropy_grad(x: np.ndarray, t: np.ndarray) -> tuple[np.floating, np.ndarray]:
    """The plain NumPy formula xent's ``cross_entropy(..., return_grad=True)`` is
    compared with.

    Returns the mean cross-entropy and its gradient ``(softmax(x) - onehot(t)) / N``,
    reusing the ``exp(x - m)`` temporary for the gradient (scaled in one pass), so
    it allocates two full-size arrays (``x - m`` and ``exp``, which is returned).

    Examples
    --------
    >>> loss, grad = numpy_cross_entropy_grad(np.zeros((2, 2)), np.array([0, 1]))
    >>> grad.tolist()
    [[-0.25, 0.25], [0.25, -0.25]]
    """
    n = x.shape[0]
    rows = np.arange(n)
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1)
    loss = (m[:, 0] + np.log(s) - x[rows, t]).mean()
    e *= (1.0 / (n * s))[:, None]
    e[rows, t] -= 1.0 / n
    return loss, e


def numpy_bce_with_logits(x: np.ndarray, y: np.ndarray) -> np.floating:
    """The plain NumPy formula xent's ``binary_cross_entropy_with_logits`` is compared
    with: ``mean(max(x, 0) - x*y + log1p(exp(-|x|)))`` (stable), allocating several
    full-size temporaries.

    Examples
    --------
    >>> float(numpy_bce_with_logits(np.zeros(3), np.ones(3))) == float(np.log(2))
    True
    """
    return np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))))


def _xent_cross_entropy(inputs: Inputs) -> Callable[[], object]:
    x, t = inputs["x"], inputs["t"]
    return lambda: xent.cross_entropy(x, t)


def _xent_cross_entropy_grad(inputs: Inputs) -> Callable[[], object]:
    # A separate grad_out buffer, not x itself: grad_out=x would overwrite the logits
    # and later calls would time other inputs.  In place costs the same (same work,
    # same bytes written).
    x, t = inputs["x"], inputs["t"]
    grad_dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    buf = np.empty(x.shape, dtype=grad_dtype)
    return lambda: xent.cross_entropy(x, t, return_grad=True, grad_out=buf)


def _xent_bce_with_logits(inputs: Inputs) -> Callable[[], object]:
    f = getattr(xent, "binary_cross_entropy_with_logits", None)
    if f is None:
        raise Unavailable("xent.binary_cross_entropy_with_logits does not exist yet")
    x, y = inputs["x"], inputs["y"]
    return lambda: f(x, y)


def _numpy_cross_entropy(inputs: Inputs) -> Callable[[], object]:
    x, t = inputs["x"], inputs["t"]
    return lambda: numpy_cross_entropy(x, t)


def _numpy_cross_entropy_grad(inputs: Inputs) -> Callable[[], object]:
    x, t = inputs["x"], inputs["t"]
    return lambda: numpy_cross_entropy_grad(x, t)


def _numpy_bce_with_logits(inputs: Inputs) -> Callable[[], object]:
    x, y = inputs["x"], inputs["y"]
    return lambda: numpy_bce_with_logits(x, y)


def _torch_cross_entropy(inputs: Inputs) -> Callable[[], object]:
    F = _optional("torch.nn.functional")
    torch = _optional("torch")
    xt, tt = torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["t"])
    return lambda: F.cross_entropy(xt, tt)


def _torch_cross_entropy_grad(inputs: Inputs) -> Callable[[], object]:
    F = _optional("torch.nn.functional")
    torch = _optional("torch")
    xt = torch.from_numpy(inputs["x"]).requires_grad_()
    tt = torch.from_numpy(inputs["t"])

    def call():
        loss = F.cross_entropy(xt, tt)
        loss.backward()
        grad, xt.grad = xt.grad, None  # a fresh gradient every call, freed after it
        return loss, grad

    return call


def _torch_bce_with_logits(inputs: Inputs) -> Callable[[], object]:
    F = _optional("torch.nn.functional")
    torch = _optional("torch")
    xt, yt = torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["y"])
    return lambda: F.binary_cross_entropy_with_logits(xt, yt)


def _same_shape(x: np.ndarray) -> tuple[int, ...]:
    return x.shape


def _reduced_shape(x: np.ndarray) -> tuple[int, ...]:
    return x.shape[:-1]


register(
    Function(
        "log_softmax",
        {
            "xent": _xent("log_softmax", _same_shape),
            "numpy": _numpy(numpy_log_softmax),
            "scipy": _scipy("log_softmax"),
            "torch": _torch("log_softmax"),
        },
    )
)
register(
    Function(
        "softmax",
        {
            "xent": _xent("softmax", _same_shape),
            "numpy": _numpy(numpy_softmax),
            "scipy": _scipy("softmax"),
            "torch": _torch("softmax"),
        },
    )
)
register(
    Function(
        "logsumexp",
        {
            "xent": _xent("logsumexp", _reduced_shape),
            "numpy": _numpy(numpy_logsumexp),
            "scipy": _scipy("logsumexp"),
            "torch": _torch("logsumexp"),
        },
    )
)
register(
    Function(
        "cross_entropy",
        {
            "xent": _xent_cross_entropy,
            "numpy": _numpy_cross_entropy,
            "torch": _torch_cross_entropy,
        },
        make_inputs=class_target_inputs,
    )
)
register(
    Function(
        "cross_entropy+grad",
        {
            "xent": _xent_cross_entropy_grad,
            "numpy": _numpy_cross_entropy_grad,
            "torch": _torch_cross_entropy_grad,
        },
        make_inputs=class_target_inputs,
    )
)
register(
    Function(
        "cross_entropy:float16",
        {"xent": _xent_cross_entropy},
        make_inputs=class_target_inputs,
        shapes=((2048, 50257),),
        quick_shapes=((256, 50257),),
        dtype="float16",
        label="cross_entropy",
    )
)
register(
    Function(
        "binary_cross_entropy_with_logits",
        {
            "xent": _xent_bce_with_logits,
            "numpy": _numpy_bce_with_logits,
            "torch": _torch_bce_with_logits,
        },
        make_inputs=binary_target_inputs,
        shapes=((32_000_000,),),
        quick_shapes=((2_000_000,),),
    )
)
register(
    Function(
        "cross_entropy:small",
        {
            "xent": _xent_cross_entropy,
            "numpy": _numpy_cross_entropy,
            "torch": _torch_cross_entropy,
        },
        make_inputs=class_target_inputs,
        shapes=((256, 10),),
        quick_shapes=((256, 10),),
        repeat=SMALL_CALL_REPEAT,
        label="cross_entropy",
    )
)

# --------------------------------------------------------------------------- timing


def time_call(
    fn: Callable[[], object], repeat: int, warmup: int = 1
) -> tuple[float, list[float]]:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeat`` timed calls.

    Parameters
    ----------
    fn : callable
        Zero-argument callable; its result is discarded (freeing it is timed).
    repeat : int
        Number of timed calls, at least 1.
    warmup : int, optional
        Untimed calls first (default 1).

    Returns
    -------
    median : float
        Median of the timed calls, in seconds.
    times : list of float
        Every timed call, in seconds.

    Examples
    --------
    >>> median, times = time_call(lambda: sum(range(100)), 3)
    >>> len(times)
    3
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def _floor(inputs: Inputs) -> None:
    # One streaming read of every input array: the least any case can cost.  NumPy has
    # no SIMD max for 16-bit floats (it converts element by element, ~30x slower than
    # a read), so those are read as uint16: same bytes, same streaming read.
    for a in inputs.values():
        if a.dtype.itemsize == 2 and a.dtype.kind in "fV" and a.flags.c_contiguous:
            a = a.view(np.uint16)
        np.max(a)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _torch_if_installed() -> Any:
    """The ``torch`` module if it is installed and imports, else ``None``."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch
    except (ImportError, OSError):
        return None
    return torch


@contextlib.contextmanager
def thread_count(threads: int | None):
    """Context manager: set xent's thread count, and PyTorch's to the same.

    Parameters
    ----------
    threads : int or None
        xent's thread count inside the block; ``None`` leaves it as it is.

    Yields
    ------
    int
        ``xent.get_num_threads()`` inside the block (what xent really uses, e.g. 1
        when it was built without OpenMP).

    Notes
    -----
    When PyTorch is installed, ``torch.set_num_threads`` is given that same count
    inside the block (also when ``threads`` is ``None``), so both libraries are
    timed with the same number of threads.  The previous counts are restored on
    exit, also after an exception.
    """
    torch = _torch_if_installed()
    old = xent.get_num_threads()
    old_torch = torch.get_num_threads() if torch is not None else None
    try:
        if threads is not None:
            xent.set_num_threads(threads)
        n = xent.get_num_threads()
        if torch is not None:
            torch.set_num_threads(n)
        yield n
    finally:
        if threads is not None:
            xent.set_num_threads(old)
        if torch is not None:
            torch.set_num_threads(old_torch)


def _resolve_cases(cases: Iterable[Case | str] | None, quick: bool) -> list[Case]:
    if cases is None:
        return default_cases(quick)
    cases = list(cases)
    resolved: list[Case] = []
    for case in cases:
        if isinstance(case, str):
            resolved.extend(default_cases(quick, [case]))  # ValueError if unknown
        elif isinstance(case, Case):
            resolved.append(case)
        else:
            raise TypeError(f"cases: expected Case objects or function names, got {case!r}")
    for case in resolved:
        if case.function not in FUNCTIONS:
            raise ValueError(
                f"cases: unknown function {case.function!r}; known: {', '.join(FUNCTIONS)}"
            )
    if any(isinstance(c, str) for c in cases):
        # Function names expand shape by shape; regroup so each array is made once.
        order = {shape: i for i, shape in enumerate(dict.fromkeys(c.shape for c in resolved))}
        resolved.sort(key=lambda c: order[c.shape])
    return resolved


def _run_case(
    case: Case, function: Function, inputs: Inputs, repeat: int, threads: int
) -> list[dict]:
    nbytes = sum(a.nbytes for a in inputs.values())
    warmup = 1
    if function.repeat is not None:
        repeat = function.repeat
        warmup = max(1, repeat // 20)
    timings: dict[str, tuple[float, list[float]]] = {}
    for impl, factory in function.impls.items():
        try:
            call = factory(inputs)
        except Unavailable:
            if impl == "xent":
                return []  # nothing to compare with: skip the case
            continue
        timings[impl] = time_call(call, repeat, warmup)
        del call  # free a preallocated output before the next factory makes its own
    timings[FLOOR] = time_call(lambda: _floor(inputs), repeat, warmup)

    floor_s = timings[FLOOR][0]
    xent_s = timings["xent"][0] if "xent" in timings else None
    rows = []
    for impl, (median, times) in timings.items():
        rows.append(
            {
                "case": function.display_name,
                "id": case.function,
                "shape": list(case.shape),
                "dtype": case.dtype,
                "impl": impl,
                "median_s": median,
                "gbps": _ratio(nbytes / 1e9, median),
                "x_floor": _ratio(median, floor_s),
                "speedup": _ratio(median, xent_s) if xent_s is not None else None,
                "threads": threads,
                "bytes": nbytes,
                "repeat": repeat,
                "times_s": times,
            }
        )
    return rows


def run(
    quick: bool = False,
    threads: int | None = None,
    repeat: int | None = None,
    cases: Iterable[Case | str] | None = None,
    *,
    on_case: Callable[[Case, list[dict]], None] | None = None,
) -> list[dict]:
    """Run the benchmark cases and return one result row per case and implementation.

    Parameters
    ----------
    quick : bool, optional
        Small shapes (:data:`QUICK_SHAPES`) and :data:`QUICK_REPEAT` timed calls, so
        the whole run takes seconds.
    threads : int, optional
        Thread count for xent (and PyTorch, when installed) during the run; the
        previous counts are restored afterwards.  Default: leave them as they are.
    repeat : int, optional
        Timed calls per implementation (after one warm-up call); the median is
        reported.  Default :data:`DEFAULT_REPEAT`, or :data:`QUICK_REPEAT` if ``quick``.
        Functions with a ``repeat`` of their own (the small-call case) keep it.
    cases : iterable of Case or str, optional
        Cases to run; a string is a function name and stands for that function on its
        standard shapes.  Default: every registered function on its standard shapes.
    on_case : callable, optional
        Called as ``on_case(case, rows)`` after each case, e.g. to print progress;
        ``rows`` is empty for a skipped case.

    Returns
    -------
    list of dict
        Keys ``case`` (the function's display name, e.g. ``"cross_entropy"``), ``id``
        (its key in :data:`FUNCTIONS`, e.g. ``"cross_entropy:float16"``), ``shape``,
        ``dtype``, ``impl`` (``"xent"``, ``"numpy"``, ``"scipy"``, ``"torch"`` or
        ``"floor"``), ``median_s``, ``gbps``, ``x_floor``, ``speedup``
        (implementation time / xent time), ``threads``, ``bytes``, ``repeat`` and
        ``times_s``.  Implementations whose library is not installed are left out; a
        case whose xent implementation is unavailable is left out entirely.

    Raises
    ------
    ValueError
        If ``threads`` or ``repeat`` is not positive, or a case names an unknown
        function.

    Examples
    --------
    >>> rows = run(quick=True, repeat=1, cases=[Case("logsumexp", (64, 10))])
    >>> {"xent", "numpy", "floor"} <= {r["impl"] for r in rows}
    True
    """
    if repeat is None:
        repeat = QUICK_REPEAT if quick else DEFAULT_REPEAT
    if isinstance(repeat, bool) or not isinstance(repeat, (int, np.integer)) or repeat < 1:
        raise ValueError(f"repeat must be a positive integer, got {repeat!r}")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1
    ):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    cases = _resolve_cases(cases, quick)

    results: list[dict] = []
    with thread_count(threads) as n_threads:
        key = None
        inputs: Inputs | None = None
        for case in cases:
            function = FUNCTIONS[case.function]
            case_key = (function.make_inputs, case.shape, np.dtype(case.dtype))
            if case_key != key:
                inputs = None  # drop the previous arrays before making the next ones
                inputs = function.make_inputs(case.shape, np.dtype(case.dtype))
                key = case_key
            rows = _run_case(case, function, inputs, int(repeat), n_threads)
            results.extend(rows)
            if on_case is not None:
                on_case(case, rows)
    return results


# --------------------------------------------------------------------------- reporting


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Versions and hardware details recorded with the results.

    Returns
    -------
    dict
        ``xent``, ``numpy``, ``scipy``, ``torch`` versions (``None`` when not
        installed), ``python``, ``platform``, ``cpu``, ``cpu_count``,
        ``usable_cpus``, ``xent_threads`` and ``xent_config`` (the text of
        :func:`xent.show_config`).
    """
    config = io.StringIO()
    try:
        with contextlib.redirect_stdout(config):
            xent.show_config()
    except Exception as exc:  # a broken show_config must not lose the results
        config.write(f"show_config() failed: {exc!r}")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "xent": xent.__version__,
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "torch": _version("torch"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "xent_threads": xent.get_num_threads(),
        "xent_config": config.getvalue().strip(),
    }


def format_header(
    info: Mapping[str, Any], *, threads: int | None = None, repeat: int = DEFAULT_REPEAT
) -> str:
    """The lines printed above the table.

    Parameters
    ----------
    info : mapping
        From :func:`machine_info`.
    threads : int, optional
        xent's thread count during the run (default ``info["xent_threads"]``).
    repeat : int, optional
        Timed calls per implementation.

    Returns
    -------
    str
        Versions, thread count, hardware and what each column means.
    """
    threads = info["xent_threads"] if threads is None else threads

    def ver(name: str) -> str:
        return info[name] or "not installed"

    return "\n".join(
        [
            f"xent {info['xent']} bench: {threads} thread(s) for xent; "
            f"numpy {info['numpy']}, scipy {ver('scipy')}, torch {ver('torch')}",
            f"cpu: {info['cpu']} ({info['usable_cpus']} usable of {info['cpu_count']}); "
            f"python {info['python']}, {info['platform']}",
            f"time: median of {repeat} call{'s' if repeat != 1 else ''} after 1 warm-up "
            f"({SMALL_CALL_REPEAT} for the 256x10 small call); xent writes into a "
            "preallocated out=/grad_out=, the others allocate their result",
            "floor: np.max over the inputs (logits, targets), one streaming read; "
            "GB/s: input bytes / time; speed-up: impl time / xent time",
        ]
    )


def _fmt_time(seconds: float) -> str:
    """``"27.62 ms"``, ``"412.3 ms"``, ``"5.214 us"``: 4 significant digits."""
    value, unit = (seconds * 1e3, "ms") if seconds >= 1e-3 else (seconds * 1e6, "us")
    if value >= 100:
        return f"{value:.1f} {unit}"
    if value >= 10:
        return f"{value:.2f} {unit}"
    return f"{value:.3f} {unit}"


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


class Table:
    """Fixed-width text table, printable row by row while the benchmark runs.

    Parameters
    ----------
    cases : sequence of Case
        The cases that will be shown (sets the column widths).

    Examples
    --------
    >>> table = Table([Case("softmax", (2, 3))])
    >>> table.header().splitlines()[0].split()[:4]
    ['function', 'shape', 'dtype', 'impl']
    """

    COLUMNS = ("function", "shape", "dtype", "impl", "time", "GB/s", "x floor", "speed-up")
    _LEFT = 4  # left-aligned columns

    def __init__(self, cases: Sequence[Case]):
        self._widths = [
            max([len(self.COLUMNS[0])] + [len(c.name) for c in cases]),
            max([len(self.COLUMNS[1])] + [len(c.shape_str) for c in cases]),
            max([len(self.COLUMNS[2])] + [len(c.dtype) for c in cases]),
            6,
            11,
            8,
            8,
            9,
        ]

    def _line(self, cells: Sequence[str]) -> str:
        w = self._widths
        left = [f"{cells[i]:<{w[i]}}" for i in range(self._LEFT)]
        right = [f"{cells[i]:>{w[i]}}" for i in range(self._LEFT, len(cells))]
        return "  ".join(left + right).rstrip()

    def skipped(self, case: Case, reason: str = "xent implementation unavailable") -> str:
        """The line shown instead of a case's rows when it was skipped."""
        cells = [case.name, case.shape_str, case.dtype]
        return "  ".join(f"{c:<{w}}" for c, w in zip(cells, self._widths)) + f"  ({reason})"

    def header(self) -> str:
        """Column titles and a rule."""
        title = self._line(self.COLUMNS)
        return title + "\n" + "-" * len(title)

    def rows(self, rows: Iterable[Mapping[str, Any]]) -> str:
        """One line per result row (as returned by :func:`run`)."""
        lines = []
        for r in rows:
            shape = "x".join(str(n) for n in r["shape"])
            speedup = None if r["impl"] in ("xent", FLOOR) else r["speedup"]
            lines.append(
                self._line(
                    [
                        r["case"],
                        shape,
                        r["dtype"],
                        r["impl"],
                        _fmt_time(r["median_s"]),
                        _fmt(r["gbps"], ".2f" if (r["gbps"] or 0) < 10 else ".1f"),
                        _fmt(r["x_floor"], ".2f"),
                        _fmt(speedup, ".2f", "x"),
                    ]
                )
            )
        return "\n".join(lines)


def dtype_comparisons(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """xent's throughput on each 16-bit dtype against float32, from one run.

    For every xent result whose dtype is not float32 and which has a float32 xent
    result of the same function and shape in `results`, one line: the float32
    time over the other dtype's time (the same elements, so the ratio of their
    throughputs), e.g. ``float16 cross_entropy 2048x50257: 1.61x the float32
    throughput (21.25 ms against 34.25 ms)``.

    Parameters
    ----------
    results : sequence of mapping
        Rows as returned by :func:`run`.

    Returns
    -------
    list of str
        One line per such pair, in the order of `results`.

    Examples
    --------
    >>> rows = [
    ...     {"case": "cross_entropy", "shape": [8, 4], "dtype": "float32", "impl": "xent",
    ...      "median_s": 0.003},
    ...     {"case": "cross_entropy", "shape": [8, 4], "dtype": "float16", "impl": "xent",
    ...      "median_s": 0.002},
    ... ]
    >>> dtype_comparisons(rows)
    ['float16 cross_entropy 8x4: 1.50x the float32 throughput (2.000 ms against 3.000 ms)']
    """
    xent_rows = [r for r in results if r["impl"] == "xent"]
    float32 = {(r["case"], tuple(r["shape"])): r for r in xent_rows if r["dtype"] == DTYPE}
    lines = []
    for r in xent_rows:
        base = float32.get((r["case"], tuple(r["shape"])))
        if r["dtype"] == DTYPE or base is None or not r["median_s"] > 0:
            continue
        shape = "x".join(str(n) for n in r["shape"])
        lines.append(
            f"{r['dtype']} {r['case']} {shape}: {base['median_s'] / r['median_s']:.2f}x the "
            f"float32 throughput ({_fmt_time(r['median_s'])} against {_fmt_time(base['median_s'])})"
        )
    return lines


def write_json(
    path: str | os.PathLike,
    results: list[dict],
    info: Mapping[str, Any],
    *,
    hidden_states: list[dict] | None = None,
    **settings: Any,
) -> None:
    """Write the results and machine info as JSON.

    Parameters
    ----------
    path : str or path-like
        Output file (overwritten).
    results : list of dict
        From :func:`run`.
    info : mapping
        From :func:`machine_info`.
    hidden_states : list of dict, optional
        From :func:`xent._cli.bench_linear.run`: the cross-entropy from hidden states.
    **settings
        Run settings recorded alongside (e.g. ``quick=True, repeat=3``).

    Notes
    -----
    The file holds one object: ``{"xent_version", "machine", "settings", "results"}``,
    and ``"hidden_states"`` when given.
    """
    doc = {
        "xent_version": info["xent"],
        "machine": dict(info),
        "settings": settings,
        "results": results,
    }
    if hidden_states is not None:
        doc["hidden_states"] = hidden_states
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def require_matplotlib() -> None:
    """Raise ImportError with an install hint if matplotlib cannot be imported."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from None


def plot(results: list[dict], path: str | os.PathLike) -> None:
    """Bar chart of each implementation's time relative to the floor.

    Parameters
    ----------
    results : list of dict
        From :func:`run`.
    path : str or path-like
        Image file; the format follows the extension (``.png``, ``.svg``, ...).

    Raises
    ------
    ImportError
        If matplotlib is not installed.

    Notes
    -----
    Uses :class:`matplotlib.figure.Figure` directly, so it neither needs nor changes
    a pyplot backend.  Lower is better; 1 is a single read of the input.
    """
    require_matplotlib()
    from matplotlib.figure import Figure

    groups = list(dict.fromkeys((r["case"], tuple(r["shape"]), r["dtype"]) for r in results))
    impls = list(dict.fromkeys(r["impl"] for r in results if r["impl"] != FLOOR))
    value = {
        (r["case"], tuple(r["shape"]), r["dtype"], r["impl"]): r["x_floor"] for r in results
    }

    fig = Figure(figsize=(max(6.0, 1.1 * len(groups) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(impls))
    for i, impl in enumerate(impls):
        xs, ys = [], []
        for g, group in enumerate(groups):
            v = value.get((*group, impl))
            if v is not None:
                xs.append(g + (i - (len(impls) - 1) / 2) * width)
                ys.append(v)
        ax.bar(xs, ys, width=width, label=impl)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--", label="floor (np.max)")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(
        [
            f"{case}\n{'x'.join(map(str, shape))}" + ("" if dtype == DTYPE else f" {dtype}")
            for case, shape, dtype in groups
        ],
        fontsize=8,
    )
    ax.set_yscale("log")
    ax.set_ylabel("time / floor (lower is better)")
    threads = results[0]["threads"] if results else "?"
    ax.set_title(f"xent {xent.__version__}, {threads} thread(s)")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
