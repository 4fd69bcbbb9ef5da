# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True
"""A downstream Cython extension built on xent's nogil row kernels.

Shows the pattern xent's own kernels follow: validate in Python (labels, shapes),
then loop over rows without the GIL and call one kernel per row.  Each row's
result goes to its own slot and the batch sum is formed afterwards in row order,
so results do not depend on the number of threads.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t

cimport xent  # the declarations in xent/__init__.pxd; nothing is imported at run time

import numpy as np


def api_version():
    """XENT_KERNELS_API_VERSION of the xent headers this module was compiled with."""
    return xent.XENT_KERNELS_API_VERSION


def _check_targets(const int64_t[::1] target, Py_ssize_t C, int64_t ignore_index):
    """The kernels trust their inputs: every label is checked before any runs."""
    cdef Py_ssize_t i
    for i in range(target.shape[0]):
        if target[i] != ignore_index and not (0 <= target[i] < C):
            raise IndexError(f"target[{i}] = {target[i]} is outside [0, {C})")


def cross_entropy(const floating[:, ::1] logits, const int64_t[::1] target):
    """Mean cross-entropy of (N, C) logits and its gradient, in one pass per row.

    Uses the fused kernel ``xent.cross_entropy_row`` (float or double rows).
    """
    cdef Py_ssize_t N = logits.shape[0], C = logits.shape[1], i
    if target.shape[0] != N:
        raise ValueError(f"target has {target.shape[0]} rows, logits {N}")
    if C < 1:
        raise ValueError("logits: need at least one class")
    _check_targets(target, C, -1)
    dtype = np.float32 if floating is float else np.float64
    grad_arr = np.empty((N, C), dtype)
    rows_arr = np.empty(N, np.float64)
    cdef floating[:, ::1] grad = grad_arr
    cdef double[::1] rows = rows_arr
    cdef floating scale = 1.0 / N if N else 0.0
    with nogil:
        for i in prange(N, schedule="static"):
            rows[i] = xent.cross_entropy_row(&logits[i, 0], C, target[i], scale, &grad[i, 0])
    return rows_arr.sum() / N if N else np.nan, grad_arr


def cross_entropy_weighted(const floating[:, ::1] logits, const int64_t[::1] target,
                           const floating[::1] weight, double label_smoothing=0.0,
                           double z_loss=0.0, int64_t ignore_index=-100):
    """torch-style mean cross-entropy with class weights, label smoothing, z-loss and
    ignored rows, and its gradient, with the explicit float/double kernels
    (``xent.cross_entropy_row_ex_f32`` / ``_f64``).

    "mean" as in torch: the cross-entropy is divided by the summed weight of the
    non-ignored targets, the z-loss by the number of non-ignored rows.
    """
    cdef Py_ssize_t N = logits.shape[0], C = logits.shape[1], i
    cdef double weight_total = 0, n_valid = 0
    if target.shape[0] != N or weight.shape[0] != C:
        raise ValueError("target must have N entries and weight C entries")
    _check_targets(target, C, ignore_index)
    for i in range(N):
        if target[i] != ignore_index:
            weight_total += weight[target[i]]
            n_valid += 1
    dtype = np.float32 if floating is float else np.float64
    grad_arr = np.zeros((N, C), dtype)  # ignored rows keep a zero gradient
    ce_arr = np.zeros(N, np.float64)
    lse_arr = np.zeros(N, np.float64)
    cdef floating[:, ::1] grad = grad_arr
    cdef double[::1] ce = ce_arr, lse = lse_arr
    cdef floating ce_scale = 1.0 / weight_total, z_scale = 1.0 / n_valid
    with nogil:
        for i in prange(N, schedule="static"):
            if target[i] == ignore_index:
                continue
            if floating is float:
                ce[i] = xent.cross_entropy_row_ex_f32(
                    &logits[i, 0], C, target[i], &weight[0], <float>label_smoothing,
                    <float>z_loss, ce_scale, z_scale, &grad[i, 0], &lse[i])
            else:
                ce[i] = xent.cross_entropy_row_ex_f64(
                    &logits[i, 0], C, target[i], &weight[0], label_smoothing,
                    z_loss, ce_scale, z_scale, &grad[i, 0], &lse[i])
    loss = ce_arr.sum() / weight_total + z_loss * np.square(lse_arr).sum() / n_valid
    return loss, grad_arr


def log_softmax(const floating[:, ::1] x):
    """Row-wise log-softmax of a 2-D array."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], i
    out_arr = np.empty((N, C), np.float32 if floating is float else np.float64)
    cdef floating[:, ::1] out = out_arr
    if C == 0:
        return out_arr
    with nogil:
        for i in prange(N, schedule="static"):
            xent.log_softmax_row(&x[i, 0], C, &out[i, 0])
    return out_arr


def softmax_inplace(floating[:, ::1] x):
    """Row-wise softmax, overwriting x (out may be the input row)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], i
    if C == 0:
        return
    with nogil:
        for i in prange(N, schedule="static"):
            xent.softmax_row(&x[i, 0], C, &x[i, 0])


def logsumexp(const floating[:, ::1] x):
    """Row-wise logsumexp of a 2-D array (-inf for rows of zero classes)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], i
    out_arr = np.empty(N, np.float32 if floating is float else np.float64)
    cdef floating[::1] out = out_arr
    with nogil:
        for i in prange(N, schedule="static"):
            if floating is float:
                out[i] = xent.logsumexp_row_f32(&x[i, 0] if C else NULL, C)
            else:
                out[i] = xent.logsumexp_row_f64(&x[i, 0] if C else NULL, C)
    return out_arr
