"""The class axes of a normaliser: `axis` as an int, a tuple of ints or None.

The classes of one row are the elements of all the named axes together (as in
``scipy.special.logsumexp(axis=tuple)`` and ``torch.logsumexp(dim=tuple)``).
This module turns `axis` into a sorted tuple of axes and finds how the kernels
can read such rows:

- as a 3-D view ``(outer, C, inner)`` when the class axes are adjacent and their
  strides chain (e.g. the trailing axes of a C-contiguous array): one long
  strided axis, no copy (`merged_view`);
- otherwise in bounded blocks of rows gathered from a view with the class axes
  moved together (`RowBlocks`), never a transposed copy of the whole array.

``axis=()`` names no axis: every element is its own row of one class (NumPy's
and SciPy's meaning of an empty tuple of axes; PyTorch's reductions read
``dim=()`` as "all dimensions" instead).  It is handled, like a 0-d input, by a
trailing axis of length 1 added as a view (`with_class_axis`).
"""

import math

import numpy as np

from xent._api.validation import view_3d
from xent._runtime.integers import as_integer

#: Elements gathered per block of rows on the block path (one block in flight:
#: bounded extra memory whatever the array's size; a row longer than this is a
#: block of its own).
BLOCK_ELEMENTS = 1 << 18


def class_axes(axis, ndim, name="axis"):
    """`axis` (int, tuple of ints or None) as a sorted tuple of axes in [0, ndim).

    None is every axis.  A 0-d array takes 0, -1, None or () (one class).
    Out of range -> numpy.exceptions.AxisError (a ValueError) naming the value;
    a repeated axis -> ValueError; anything else -> TypeError.
    """
    if type(axis) is int and -ndim <= axis < ndim and ndim:  # the usual call, fast
        return (axis % ndim,)
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, tuple):
        items = axis
    else:
        items = (as_integer(axis, name, "an integer, a tuple of integers or None"),)
    if ndim == 0:
        for a in items:
            a = as_integer(a, name, "an integer, a tuple of integers or None")
            if a not in (0, -1):
                raise np.exceptions.AxisError(
                    f"{name}={a} is out of bounds for a 0-d array (use 0, -1, None or ())"
                )
        return ()
    axes = []
    for a in items:
        a = as_integer(a, name, "an integer, a tuple of integers or None")
        if not -ndim <= a < ndim:
            raise np.exceptions.AxisError(
                f"{name}={a} is out of bounds for an array of dimension {ndim}"
            )
        axes.append(a % ndim)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{name}={axis!r} names the same axis twice")
    return tuple(sorted(axes))


def with_class_axis(a, axes):
    """(array, axes) where `axes` is not empty: for no class axis (a 0-d array or
    ``axis=()``) a trailing axis of length 1 is added as a view, each element a
    row of one class."""
    if axes:
        return a, axes
    return a[..., np.newaxis], (a.ndim,)


def reduced_shape(shape, axes, keepdims):
    """The shape of a reduction of `shape` over `axes`."""
    if len(axes) == 1 and not keepdims:
        return shape[: axes[0]] + shape[axes[0] + 1 :]
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def merged_view(a, axes):
    """`a` as a 3-D view (outer, C, inner) whose axis 1 runs over all the class
    axes `axes` (sorted, not empty), or None when that needs a copy."""
    first, last = axes[0], axes[-1]
    if first == last:
        return view_3d(a, first)
    if last - first + 1 != len(axes):
        return None
    shape = a.shape
    merged = shape[:first] + (math.prod(shape[first : last + 1]),) + shape[last + 1 :]
    try:
        m = a.reshape(merged, copy=False)
    except ValueError:  # the class axes' strides do not chain
        return None
    return view_3d(m, first)


def blocks_3d(outer, C, inner, block_elements=None):
    """(outer slice, inner slice) of bounded blocks of a 3-D (outer, C, inner)
    array, every class in each: k whole outer indices a block while C * inner
    fits, else one outer index and a run of inner positions."""
    if block_elements is None:
        block_elements = BLOCK_ELEMENTS
    if C * inner <= block_elements:
        k = max(1, block_elements // max(C * inner, 1))
        for o in range(0, outer, k):
            yield slice(o, min(o + k, outer)), slice(0, inner)
        return
    w = max(1, block_elements // max(C, 1))
    for o in range(outer):
        for i in range(0, inner, w):
            yield slice(o, o + 1), slice(i, min(i + w, inner))


class RowBlocks:
    """The rows of `a` over class axes `axes`, in bounded blocks read in place.

    A block is 3-D, ``(k, C, inner)`` as the kernels take it: k indices of the
    "outer" row axes (those before the last class axis), all the classes, and
    every index of the "inner" row axes (those after the last class axis,
    usually the contiguous ones: a C-order array keeps its locality).  When
    one outer index holds more than `block_elements` values, the inner axes
    become outer ones (inner = 1: the classes moved last).

    ``moved(a)`` views an array of `a`'s shape as (outer axes, class axes,
    inner axes); per-row arrays (reductions) have the row shape (outer axes,
    inner axes: the row axes in order).  The blocks (`selectors`) index the
    outer axes with basic indexing only (integers and one slice: views, no
    index arrays).  `views` merges the outer axes into one where every array
    allows that as a view (fewer, longer blocks).
    """

    def __init__(self, shape, axes, block_elements=None):
        if block_elements is None:
            block_elements = BLOCK_ELEMENTS
        self.axes = axes
        row_axes = [i for i in range(len(shape)) if i not in axes]
        self.C = math.prod(shape[i] for i in axes)
        inner_axes = [i for i in row_axes if i > axes[-1]]
        inner = math.prod(shape[i] for i in inner_axes)
        if inner == 1 or self.C * inner > block_elements:
            inner_axes, inner = [], 1
        self.outer_axes = tuple(i for i in row_axes if i not in inner_axes)
        self.inner_axes = tuple(inner_axes)
        self.inner = inner
        self.outer_shape = tuple(shape[i] for i in self.outer_axes)
        self.class_shape = tuple(shape[i] for i in axes)
        self.inner_shape = tuple(shape[i] for i in inner_axes)
        self.row_shape = tuple(shape[i] for i in row_axes)
        self.n_outer = math.prod(self.outer_shape)
        self.outer_per_block = max(1, block_elements // max(self.C * inner, 1))

    def moved(self, a):
        """View of `a` as (outer axes, class axes, inner axes)."""
        return a.transpose(self.outer_axes + self.axes + self.inner_axes)

    def _viewed(self, a, outer_shape):
        """`a` (full or per-row) viewed with `outer_shape` as its leading axes."""
        if a.ndim == len(self.row_shape):  # per-row: outer then inner axes already
            return a.reshape(outer_shape + self.inner_shape, copy=False)
        return self.moved(a).reshape(outer_shape + self.class_shape + self.inner_shape,
                                     copy=False)

    def views(self, *arrays):
        """(outer_shape, views): each array (of the full shape, or a per-row
        array of the row shape) viewed with its outer axes first: merged into
        one axis when every array allows that as a view, else as they are."""
        try:
            return (self.n_outer,), [self._viewed(a, (self.n_outer,)) for a in arrays]
        except ValueError:
            return self.outer_shape, [self._viewed(a, self.outer_shape) for a in arrays]

    def selectors(self, outer_shape):
        """(selector, k) per block over outer axes of `outer_shape`: integers
        for the leading axes and a slice of the next one, taking every index
        of the axes after it (as many as fit in a block); k outer indices."""
        level = len(outer_shape)  # the axis the slices run along, plus one
        per_index = 1  # outer indices under one index of that axis
        while level > 0 and per_index * outer_shape[level - 1] <= self.outer_per_block:
            level -= 1
            per_index *= outer_shape[level]
        if level == 0:
            if self.n_outer:
                yield (), self.n_outer
            return
        axis = level - 1
        step = max(1, self.outer_per_block // per_index)
        for prefix in np.ndindex(*outer_shape[:axis]):
            for start in range(0, outer_shape[axis], step):
                stop = min(start + step, outer_shape[axis])
                yield prefix + (slice(start, stop),), (stop - start) * per_index

    def gather(self, source, selector, k, dtype=None):
        """Block `selector` of `source` (a view from `views`) as a C-contiguous
        (k, C, inner) array (of `dtype`, default the source's): the view itself
        when it already is one."""
        block = np.ascontiguousarray(source[selector], dtype=dtype)
        return block.reshape(k, self.C, self.inner)

    def scatter(self, target, selector, values):
        """Write `values` ((k, C, inner), or (k, inner) for a per-row target)
        into block `selector` of `target` (a view from `views`), rounded to
        its dtype."""
        block = target[selector]
        with np.errstate(over="ignore"):
            block[...] = values.reshape(block.shape)


__all__ = [
    "BLOCK_ELEMENTS",
    "RowBlocks",
    "blocks_3d",
    "class_axes",
    "merged_view",
    "reduced_shape",
    "with_class_axis",
]
