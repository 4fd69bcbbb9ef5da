/*
 * xent_kernels.h -- xent's row kernels for other C and Cython extensions.
 *
 * This is the stable C interface behind `cimport xent` (src/xent/__init__.pxd).
 * The functions below keep their names, arguments and meaning across xent
 * releases; everything else in the headers next to this one (xent/, see
 * xent/kernels.h) is internal and may change at any time.
 *
 * How to use it
 * -------------
 * The kernels are header-only (static inline C, no exported symbols), so they
 * are compiled into *your* extension: add `xent.get_include()` to its include
 * directories and include this header (Cython does that for you on
 * `cimport xent`).  For speed compile with -O3 and, on GCC/Clang,
 * -fopenmp-simd (or -fopenmp): the inner loops carry `#pragma omp simd`
 * reductions that need it to vectorise.  Never -ffast-math/-Ofast: the
 * non-finite rules below depend on IEEE infinities and NaN.
 *
 * Contract shared by every function
 * ---------------------------------
 * The functions check nothing; the caller guarantees:
 *   - `x` points to `n` contiguous values (one row; gather strided rows first);
 *   - outputs (`out`, `grad`) point to `n` writable contiguous values and are
 *     either disjoint from `x` or exactly `x` (computed in place);
 *   - `n >= 0` (`n >= 1` for the cross-entropy), `0 <= target < n`;
 *   - `weight`, when not NULL, points to `n` class weights.
 * They allocate nothing, touch no global state and never call Python, so they
 * may run without the GIL, from any number of threads at once (e.g. inside a
 * `prange`).  Each row is computed in a fixed order: results do not depend on
 * how rows are spread over threads.
 *
 * Precision: float rows (f32) are computed in float with double accumulation of
 * SIMD partial sums; double rows (f64) in double.  Losses are returned as double.
 *
 * Non-finite values (xent's rule, SPEC "Conventions"): a -inf logit is a class of
 * probability 0; a row with k +inf entries gives them probability 1/k each; a
 * NaN makes everything computed from its row NaN; a row that is empty or all
 * -inf has logsumexp -inf and NaN (log-)softmax.
 *
 * Ignored rows (ignore_index) are the caller's business: skip the call and,
 * if a gradient is wanted, zero that row of it.
 */
#ifndef XENT_KERNELS_H
#define XENT_KERNELS_H

/* Bumped if a function below ever changes incompatibly (new functions do not). */
#define XENT_KERNELS_API_VERSION 1

/* The internal headers define more static functions than a user calls, and their
 * `#pragma omp simd` is unknown to a compiler run without -fopenmp(-simd): keep
 * -Wall quiet about both in the downstream build. */
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#endif

#include "xent/kernels.h"

/* ---- logsumexp, log-softmax, softmax of one row ------------------------------
 * logsumexp: log(sum_c exp(x[c])), -inf for n == 0.
 * log_softmax: out[c] = x[c] - logsumexp(x), computed as (x[c] - max) - log(sum).
 * softmax: out[c] = exp(x[c] - max) / sum; the row sums to 1.
 */
static inline float xent_logsumexp_row_f32(const float *x, ptrdiff_t n)
{
    return xent_row_logsumexp_f32(x, n);
}

static inline double xent_logsumexp_row_f64(const double *x, ptrdiff_t n)
{
    return xent_row_logsumexp_f64(x, n);
}

static inline void xent_log_softmax_row_f32(const float *x, ptrdiff_t n, float *out)
{
    xent_row_log_softmax_f32(x, n, out);
}

static inline void xent_log_softmax_row_f64(const double *x, ptrdiff_t n, double *out)
{
    xent_row_log_softmax_f64(x, n, out);
}

static inline void xent_softmax_row_f32(const float *x, ptrdiff_t n, float *out)
{
    xent_row_softmax_f32(x, n, out);
}

static inline void xent_softmax_row_f64(const double *x, ptrdiff_t n, double *out)
{
    xent_row_softmax_f64(x, n, out);
}

/* ---- cross-entropy of one row with a class-index target ----------------------
 * xent_cross_entropy_row_*: returns -log_softmax(x)[target] and, when grad is not
 * NULL, writes grad[c] = grad_scale * (softmax(x)[c] - [c == target]) in the same
 * pass over the row (grad may be x itself).  grad_scale folds a reduction in:
 * 1 for a sum, 1/N for the mean over N rows.
 *
 * xent_cross_entropy_row_ex_*: PyTorch's F.cross_entropy row with class weights
 * (weight may be NULL: all ones), label smoothing eps in [0, 1] (Szegedy et al.
 * 2016, as torch: target (1-eps)*onehot + eps/n) and PaLM's z-loss coefficient
 * z >= 0.  Returns the cross-entropy term
 *     ce = (1-eps) w[t] (-lp[t]) + (eps/n) sum_c w[c] (-lp[c]),  lp = log_softmax(x),
 * and stores logsumexp(x) in *lse when lse is not NULL; the row's full loss is
 * ce + z * lse^2.  When grad is not NULL it receives
 *     grad = ce_scale * d(ce)/dx + z_scale * d(z * lse^2)/dx,
 * two scales because PyTorch-style "mean" divides the cross-entropy by the summed
 * target weight and the z-loss by the number of rows.  With weight and eps > 0,
 * sum_c w[c] is recomputed on each call (one extra read of `weight`).
 */
static inline double xent_cross_entropy_row_ex_f32(const float *x, ptrdiff_t n, ptrdiff_t target,
                                                   const float *weight, float label_smoothing,
                                                   float z_loss, float ce_scale, float z_scale,
                                                   float *grad, double *lse)
{
    return xent_ce_index_row_wsum_f32(x, n, target, weight, label_smoothing, z_loss, ce_scale,
                                      z_scale, grad, lse);
}

static inline double xent_cross_entropy_row_ex_f64(const double *x, ptrdiff_t n, ptrdiff_t target,
                                                   const double *weight, double label_smoothing,
                                                   double z_loss, double ce_scale, double z_scale,
                                                   double *grad, double *lse)
{
    return xent_ce_index_row_wsum_f64(x, n, target, weight, label_smoothing, z_loss, ce_scale,
                                      z_scale, grad, lse);
}

static inline double xent_cross_entropy_row_f32(const float *x, ptrdiff_t n, ptrdiff_t target,
                                                float grad_scale, float *grad)
{
    return xent_cross_entropy_row_ex_f32(x, n, target, NULL, 0.0f, 0.0f, grad_scale, 0.0f, grad,
                                         NULL);
}

static inline double xent_cross_entropy_row_f64(const double *x, ptrdiff_t n, ptrdiff_t target,
                                                double grad_scale, double *grad)
{
    return xent_cross_entropy_row_ex_f64(x, n, target, NULL, 0.0, 0.0, grad_scale, 0.0, grad,
                                         NULL);
}

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif /* XENT_KERNELS_H */
