# Cython declarations of xent's row kernels, for other extensions: `cimport xent`.
#
#     cimport xent
#     with nogil:
#         loss = xent.cross_entropy_row_f32(&x[i, 0], C, t[i], 1.0 / N, &g[i, 0])
#
# (or `from xent cimport cross_entropy_row_f32, ...`).  Build with
# `include_dirs=[xent.get_include()]`: the kernels are header-only C
# (xent_kernels.h, static inline), compiled into your extension, so there is
# nothing to link and no run-time import of xent.  This file and
# xent_kernels.h are the stable interface (XENT_KERNELS_API_VERSION); the full
# contract is in xent_kernels.h.  In short, the kernels check nothing:
#
#   * x is one contiguous row of n values (gather strided rows first);
#   * out / grad hold n writable contiguous values, disjoint from x or exactly x
#     (in place); grad may be NULL (no gradient);
#   * n >= 0 (n >= 1 for the cross-entropy) and 0 <= target < n -- check labels,
#     and ignore_index rows, before calling; weight is NULL or n values;
#   * no allocation, no global state, no Python: safe without the GIL and from
#     any number of threads (prange); each row's result is independent of the
#     thread count.
#
# Non-finite rule: a -inf logit has probability 0, k +inf logits share it
# equally, NaN propagates through its row, an empty or all -inf row has
# logsumexp -inf and NaN (log-)softmax.  Losses are returned as double; float
# rows are computed in float with double accumulation.
#
# Names: <what>_row_f32 takes float rows, <what>_row_f64 double rows; the fused
# forms without suffix (at the end) take either, for code over cython.floating.

from cython cimport floating

cdef extern from "xent_kernels.h" nogil:
    enum: XENT_KERNELS_API_VERSION

    # log(sum(exp(x))) of one row; -inf for n == 0.
    float logsumexp_row_f32 "xent_logsumexp_row_f32"(const float *x, Py_ssize_t n) noexcept
    double logsumexp_row_f64 "xent_logsumexp_row_f64"(const double *x, Py_ssize_t n) noexcept

    # out = x - logsumexp(x); out may be x.
    void log_softmax_row_f32 "xent_log_softmax_row_f32"(
        const float *x, Py_ssize_t n, float *out) noexcept
    void log_softmax_row_f64 "xent_log_softmax_row_f64"(
        const double *x, Py_ssize_t n, double *out) noexcept

    # out = exp(x - logsumexp(x)), summing to 1; out may be x.
    void softmax_row_f32 "xent_softmax_row_f32"(const float *x, Py_ssize_t n, float *out) noexcept
    void softmax_row_f64 "xent_softmax_row_f64"(
        const double *x, Py_ssize_t n, double *out) noexcept

    # Returns -log_softmax(x)[target]; if grad != NULL, writes
    # grad = grad_scale * (softmax(x) - onehot(target)) in the same pass (grad may be x).
    double cross_entropy_row_f32 "xent_cross_entropy_row_f32"(
        const float *x, Py_ssize_t n, Py_ssize_t target, float grad_scale, float *grad) noexcept
    double cross_entropy_row_f64 "xent_cross_entropy_row_f64"(
        const double *x, Py_ssize_t n, Py_ssize_t target, double grad_scale, double *grad) noexcept

    # torch's F.cross_entropy row: class weights (NULL = ones), label smoothing, z-loss.
    # Returns ce = (1-eps) w[t] (-lp[t]) + (eps/n) sum_c w[c] (-lp[c]) (no z-loss term);
    # *lse = logsumexp(x) if lse != NULL, so the row's loss is ce + z_loss * lse**2;
    # grad (if != NULL) = ce_scale * d(ce)/dx + z_scale * d(z_loss * lse**2)/dx.
    double cross_entropy_row_ex_f32 "xent_cross_entropy_row_ex_f32"(
        const float *x, Py_ssize_t n, Py_ssize_t target, const float *weight,
        float label_smoothing, float z_loss, float ce_scale, float z_scale,
        float *grad, double *lse) noexcept
    double cross_entropy_row_ex_f64 "xent_cross_entropy_row_ex_f64"(
        const double *x, Py_ssize_t n, Py_ssize_t target, const double *weight,
        double label_smoothing, double z_loss, double ce_scale, double z_scale,
        double *grad, double *lse) noexcept


# ---- fused forms (float or double rows), for code written over cython.floating ----

cdef inline floating logsumexp_row(const floating *x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return logsumexp_row_f32(x, n)
    else:
        return logsumexp_row_f64(x, n)


cdef inline void log_softmax_row(const floating *x, Py_ssize_t n, floating *out) noexcept nogil:
    if floating is float:
        log_softmax_row_f32(x, n, out)
    else:
        log_softmax_row_f64(x, n, out)


cdef inline void softmax_row(const floating *x, Py_ssize_t n, floating *out) noexcept nogil:
    if floating is float:
        softmax_row_f32(x, n, out)
    else:
        softmax_row_f64(x, n, out)


cdef inline double cross_entropy_row(const floating *x, Py_ssize_t n, Py_ssize_t target,
                                     floating grad_scale, floating *grad) noexcept nogil:
    if floating is float:
        return cross_entropy_row_f32(x, n, target, grad_scale, grad)
    else:
        return cross_entropy_row_f64(x, n, target, grad_scale, grad)
