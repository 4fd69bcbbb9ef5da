"""The class axes of a normaliser: `axis` as an int, a tuple of ints or None.

The classes of one row are the elements of all the named axes together (as in
``scipy.special.logsumexp(axis=tuple)`` and ``torch.logsumexp(dim=tuple)``).
This module turns `axis` into a sorted tuple of axes and finds how the kernels
can read such rows:

- as a 3-D view ``(outer, C, inner)`` when the class axes are adjacent and their
  strides chain (e.g. the trailing axes of a C-contiguous array): one long
  strided axis, no copy (`merged_view`);
- otherwise row by row, in bounded blocks of rows gathered from a view with the
  class axes moved last (`RowBlocks`), never a transposed copy of the whole array.

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


class RowBlocks:
    """The rows of `a` over class axes `axes`, in blocks of at most
    BLOCK_ELEMENTS elements, read in place.

    ``moved(a)`` views an array of `a`'s shape with the class axes last; the
    blocks (`selectors`) index its leading "row" axes: slices when those merge
    into one axis as a view (`views`), else tuples of index arrays.  `gather` copies one
    block of rows as a C-contiguous (rows, C) array; `scatter` writes one back.
    """

    def __init__(self, shape, axes, block_elements=None):
        self.axes = axes
        ndim = len(shape)
        self.row_axes = tuple(i for i in range(ndim) if i not in axes)
        self.row_shape = tuple(shape[i] for i in self.row_axes)
        self.class_shape = tuple(shape[i] for i in axes)
        self.n_rows = math.prod(self.row_shape)
        self.C = math.prod(self.class_shape)
        if block_elements is None:
            block_elements = BLOCK_ELEMENTS
        self.rows_per_block = max(1, block_elements // max(self.C, 1))

    def moved(self, a):
        """View of `a` with the class axes last (row axes first, in order)."""
        return a.transpose(self.row_axes + self.axes)

    def views(self, *arrays):
        """(flat_rows, views): each array (of the full shape, or a per-row array
        of the row shape) viewed for the blocks' selectors: with its row axes
        merged into one when every array allows that as a view (selectors are
        then slices), else with the class axes moved last (index arrays)."""
        views = []
        for a in arrays:
            per_row = a.ndim == len(self.row_shape)
            try:
                views.append(a.reshape(self.n_rows, copy=False) if per_row else
                             self.moved(a).reshape((self.n_rows,) + self.class_shape,
                                                   copy=False))
            except ValueError:
                break
        else:
            return True, views
        return False, [a if a.ndim == len(self.row_shape) else self.moved(a) for a in arrays]

    def selectors(self, flat_rows):
        """(selector, row count) per block: slices of the merged row axis when
        `flat_rows`, else tuples of index arrays over the row axes."""
        step = self.rows_per_block
        for start in range(0, self.n_rows, step):
            stop = min(start + step, self.n_rows)
            if flat_rows:
                yield slice(start, stop), stop - start
            else:
                index = np.unravel_index(np.arange(start, stop), self.row_shape)
                yield tuple(index), stop - start

    def gather(self, source, selector, n, dtype=None):
        """The block of rows `selector` of `source` (a moved or rows view) as a
        C-contiguous (n, C) array (of `dtype`, default the source's)."""
        block = source[selector]
        return np.ascontiguousarray(block, dtype=dtype).reshape(n, self.C)

    def scatter(self, target, selector, values):
        """Write `values` ((n, C) or (n,)) into the rows `selector` of `target`
        (a moved or rows view of an output), rounded to its dtype."""
        if values.ndim > 1:
            values = values.reshape((len(values),) + self.class_shape)
        with np.errstate(over="ignore"):
            target[selector] = values


__all__ = [
    "BLOCK_ELEMENTS",
    "RowBlocks",
    "class_axes",
    "merged_view",
    "reduced_shape",
    "with_class_axis",
]
