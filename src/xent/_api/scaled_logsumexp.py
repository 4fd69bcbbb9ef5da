"""logsumexp with SciPy's scale factors `b` and its signed form (`return_sign`).

``log |sum_i b_i exp(x_i)|`` and the sign of the sum, per row, computed with
NumPy on bounded blocks of rows (class_axes.RowBlocks): x and b are broadcast
as views, never as whole copies.

Semantics (SciPy 1.17's ``scipy.special.logsumexp``, with the SPEC's rule for
infinities):

- an entry with ``b == 0`` is left out of the sum whatever x holds there
  (SciPy: "even if an element of `a` is infinite or NaN, it adds nothing to the
  sum if the corresponding weight is zero");
- the sum is shifted by the row's maximum m over the entries left in, and the
  terms at the maximum are summed apart (w = sum of their b) so that
  ``log(w + rest) = log|w| + log1p(rest / w)`` keeps its relative precision
  when the rest is tiny (SciPy's gh-18295);
- a negative sum is NaN unless `return_sign`; an exact zero sum is ``-inf``
  with sign 0; a row with no entry left in (all ``-inf``, all ``b == 0``, or
  no classes at all) is ``-inf`` with sign 0 (SciPy gives sign -1 for an
  empty array: the sign of ``-inf``; the sum is an exact 0 there too);
- NaN in an entry left in gives NaN and sign NaN;
- ``+inf`` entries are the limit of equal, arbitrarily large logits (SPEC): the
  result is ``+inf`` with the sign of the sum of their b, NaN (sign NaN) when
  that sum is 0 (``inf - inf``; SciPy also gives NaN when their b differ in
  sign but do not cancel).
"""

import numpy as np

from xent._api import class_axes
from xent._api.class_axes import RowBlocks, reduced_shape, with_class_axis
from xent._api.normalizer_dtypes import default_compute


def scale_factors(b, x_shape, compute, dtype):
    """`b` as an array, the broadcast shape of x and b, and the computation
    dtype (NumPy's promotion of x's computation dtype with b's, unless the
    caller gave `dtype`).  TypeError for a non-real b; ValueError naming both
    shapes when they do not broadcast."""
    b = np.asarray(b)
    b_compute = default_compute(b.dtype)
    if b_compute is None:
        raise TypeError(f"b: unsupported dtype {b.dtype} (expected real numbers)")
    try:
        shape = np.broadcast_shapes(x_shape, b.shape)
    except ValueError:
        raise ValueError(
            f"b has shape {b.shape}, which does not broadcast against x's shape {x_shape}"
        ) from None
    if dtype is None:
        # Integers promote with float32 to float64 and bool does not, as in
        # NumPy (and SciPy); 16-bit floats count as float32.
        as_float = b.dtype if b.dtype.kind in "iub" else b_compute
        compute = np.result_type(compute, as_float)
        compute = default_compute(compute)
    return b, shape, compute


def signed_rows(x, b):
    """(log|sum b exp(x)|, sign) over axis 1 of the (k, C, inner) blocks x and b
    (one computation dtype), as (k, inner) arrays."""
    with np.errstate(all="ignore"):
        xs = np.where(b != 0, x, -np.inf)  # b == 0: left out, whatever x holds
        m = xs.max(axis=1, initial=-np.inf)  # NaN where NaN is left in
        finite = np.isfinite(m)
        d = xs - np.where(finite, m, 0)[:, None]
        at_max = d == 0  # (only meaningful where the maximum is finite)
        # The terms at the maximum (sum of their b: w) apart from the rest.
        w = np.where(at_max, b, 0).sum(axis=1)
        e = np.exp(d, out=d)
        e[at_max] = 0
        e *= b
        rest = e.sum(axis=1)
        ratio = rest / np.where(w == 0, 1, w)
        log_w = np.log(np.abs(w))
        value = np.where(
            w == 0,
            np.log(np.abs(rest)),
            np.where(ratio < -1, log_w + np.log1p(-ratio - 2), log_w + np.log1p(ratio)),
        )
        sign = np.where(w == 0, np.sign(rest), np.sign(w) * np.sign(1 + ratio))
        value = np.where(sign == 0, -np.inf, value + m)
        if not finite.all():
            _non_finite_rows(~finite, m, xs, b, value, sign)
    return value.astype(x.dtype, copy=False), sign.astype(x.dtype, copy=False)


def _non_finite_rows(rows, m, xs, b, value, sign):
    """value and sign of the rows whose maximum over the entries left in is not
    finite: NaN (NaN, NaN); -inf, nothing left in (-inf, 0); +inf, the limit of
    equal large logits (+inf with the sign of their weights' sum, NaN if it is 0)."""
    m = m[rows]
    at_inf = np.moveaxis(xs, 1, -1)[rows] == np.inf  # (rows, C)
    inf_weight = np.where(at_inf, np.moveaxis(b, 1, -1)[rows], 0).sum(axis=1)
    cancels = inf_weight == 0
    v = np.where(m == np.inf, np.where(cancels, np.nan, np.inf), m)  # NaN, -inf stay
    s = np.where(m == np.inf, np.where(cancels, np.nan, np.sign(inf_weight)),
                 np.where(m == -np.inf, 0, np.nan))
    value[rows] = v
    sign[rows] = s


def scaled_logsumexp(a, b, axis, keepdims, return_sign, compute, dtype, check_result):
    """logsumexp(x, axis, b=b, ...) for the array `a` (any real dtype): returns
    (value, sign) as arrays of the reduced shape in the computation dtype.
    `check_result(shape)` validates the caller's `out` once the result shape is
    known (before anything is computed)."""
    b, shape, compute = scale_factors(b, a.shape, compute, dtype)
    axes = class_axes.class_axes(axis, len(shape))
    result_shape = reduced_shape(shape, axes, keepdims)
    check_result(result_shape)
    xb = np.broadcast_to(a, shape)
    bb = np.broadcast_to(b, shape)
    bb, _ = with_class_axis(bb, axes)
    xb, axes = with_class_axis(xb, axes)
    # signed_rows holds about a dozen block-sized temporaries: smaller blocks
    blocks = RowBlocks(xb.shape, axes, class_axes.BLOCK_ELEMENTS // 8)
    value = np.empty(blocks.row_shape, compute)  # row axes in order
    sign = np.empty(blocks.row_shape, compute)
    outer_shape, (xv, bv, vv, sv) = blocks.views(xb, bb, value, sign)
    for selector, k in blocks.selectors(outer_shape):
        rows_x = blocks.gather(xv, selector, k, compute)
        rows_b = blocks.gather(bv, selector, k, compute)
        v, s = signed_rows(rows_x, rows_b)
        blocks.scatter(vv, selector, v)
        blocks.scatter(sv, selector, s)
    return value.reshape(result_shape), sign.reshape(result_shape), compute


__all__ = ["scale_factors", "scaled_logsumexp", "signed_rows"]
