/*
 * float16 rows read in place, without a float32 copy: the parts of a row's
 * normaliser (f16_row_parts) and its log-softmax.  After the per-type
 * templates (kernels.h): the log-softmax finishes with log_sum_f32.
 *
 * f16_row_parts has hand-written twins (x86_64_v3/rows.h, x86_64_v4/rows.h);
 * the portable one reads nothing and returns 0, so its callers convert the
 * row to float32 first.
 */
#ifndef XENT_PORTABLE_HALF_ROWS_H
#define XENT_PORTABLE_HALF_ROWS_H

#include "../select.h"

/* row_parts_f32 of the converted row (the same max, k and rest, and with
 * e != NULL the same exps, bits and all) for a unit-stride float16 row read in
 * place; returns 0 where this build has no in-place loops or m is not finite. */
static int xent_portable_f16_row_parts(const xent_u16u *x, ptrdiff_t n, float *m, ptrdiff_t *k,
                                       double *rest, xent_f32u *e)
{
    (void)x, (void)n, (void)m, (void)k, (void)rest, (void)e;
    return 0;
}

/* log_softmax_finish_f32 for a float16 row read in place: out = (x - m) - ls
 * (write_log_softmax_f32's arithmetic on the converted values). */
static void xent_f16_log_softmax_finish(const xent_u16u *x, ptrdiff_t n, float m, ptrdiff_t k,
                                        double rest, xent_f32u *out)
{
    float ls = (float)xent_log_sum_f32(k, rest);
    ptrdiff_t i = xent_f16_log_softmax_head(x, n, m, ls, out);
    for (; i < n; i++)
        out[i] = (xent_half_to_float(x[i]) - m) - ls;
}

#endif /* XENT_PORTABLE_HALF_ROWS_H */
