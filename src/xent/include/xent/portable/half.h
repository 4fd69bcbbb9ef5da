/*
 * float16 and bfloat16 values as floats, one at a time: exact for every input.
 * The hand-written loops convert whole vectors (x86_64_v3/half.h,
 * x86_64_v4/half.h) and take these for the values a vector does not cover.
 */
#ifndef XENT_PORTABLE_HALF_H
#define XENT_PORTABLE_HALF_H

#include "../common.h"

/* IEEE binary16 -> float, exact for every input (subnormals, inf, NaN). */
XENT_INLINE float xent_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    uint32_t bits;
    float f;
    if (exp == 0x1Fu) {
        bits = sign | 0x7F800000u | (man << 13); /* inf / NaN */
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13); /* normal: rebias 15 -> 127 */
    } else {
        /* zero or subnormal: man * 2^-24, exact in float */
        f = (float)man * 5.9604644775390625e-08f;
        memcpy(&bits, &f, sizeof bits);
        bits |= sign;
    }
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* bfloat16 -> float: bfloat16 is the top half of a float. */
XENT_INLINE float xent_bfloat16_to_float(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* The leading values of a unit-stride float16 row converted a vector at a time
 * (xent_half_row_head, see select.h), and of its log-softmax
 * (xent_f16_log_softmax_head): the portable build converts none that way, the
 * loops after the call take every value. */
XENT_INLINE ptrdiff_t xent_portable_half_row_head(const xent_u16u *x, ptrdiff_t n, float *dst)
{
    (void)x, (void)n, (void)dst;
    return 0;
}

XENT_INLINE ptrdiff_t xent_portable_f16_log_softmax_head(const xent_u16u *x, ptrdiff_t n,
                                                         float m, float ls, xent_f32u *out)
{
    (void)x, (void)n, (void)m, (void)ls, (void)out;
    return 0;
}

#endif /* XENT_PORTABLE_HALF_H */
