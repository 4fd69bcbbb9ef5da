/*
 * Few-class rows (portable/tiles.h) on AVX-512, float32: a group of 16 rows is
 * transposed through registers before group_ce reads it, because the compiled
 * strided loads of group_ce insert one value at a time, which costs more than
 * the arithmetic for C >= 6.  The x86-64-v4 build only.
 */
#ifndef XENT_X86_64_V4_TILES_H
#define XENT_X86_64_V4_TILES_H

#include "../portable/declarations.h"

/* 16x16 transpose of the registers r[0..15] (r[i] lane j becomes r[j] lane i):
 * 2x2 blocks of floats, then of pairs, of 128-bit lanes and of 256-bit halves. */
XENT_INLINE void xent_transpose16x16_f32(__m512 r[16])
{
    __m512 u[16];
    int i, a;
    for (i = 0; i < 16; i += 2) {
        u[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        u[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(u[i], u[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(u[i], u[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(u[i + 1], u[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(u[i + 1], u[i + 3], 0xEE);
    }
    for (i = 0; i < 8; i++) {
        a = (i & 3) + (i >> 2) * 8; /* rows 0-3 with 4-7, 8-11 with 12-15 */
        u[a] = _mm512_shuffle_f32x4(r[a], r[a + 4], 0x88);
        u[a + 4] = _mm512_shuffle_f32x4(r[a], r[a + 4], 0xDD);
    }
    for (i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(u[i], u[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(u[i], u[i + 8], 0xDD);
    }
}

/* The XENT_GROUP (= 16) rows x + j*xs of C <= 16 floats as columns,
 * xt[c*16 + j] = x[j*xs + c], through registers (masked loads never read past a
 * row), and tx[j] = x[j*xs + t[j]] (0 where t[j] < 0), gathered from xt. */
XENT_INLINE void xent_transpose_group_f32(const xent_f32u *x, ptrdiff_t xs, ptrdiff_t C,
                                          const int32_t *t, float *xt, float *tx)
{
    __m512 r[16];
    __mmask16 row = (__mmask16)((1u << C) - 1);
    __m512i tj = _mm512_loadu_si512((const void *)t);
    __m512i at = _mm512_add_epi32(_mm512_slli_epi32(tj, 4), /* t[j]*16 + j */
                                  _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                                    13, 14, 15));
    ptrdiff_t j, c;
    for (j = 0; j < 16; j++)
        r[j] = _mm512_maskz_loadu_ps(row, x + j * xs);
    xent_transpose16x16_f32(r);
    for (c = 0; c < C; c++)
        _mm512_storeu_ps(xt + c * 16, r[c]);
    _mm512_storeu_ps(tx, _mm512_mask_i32gather_ps(_mm512_setzero_ps(),
                                                  _mm512_cmpge_epi32_mask(tj, _mm512_setzero_si512()),
                                                  at, xt, 4));
}

/* one_group of portable/tiles.h for float32: transposed (C >= 6) or in place. */
XENT_INLINE ptrdiff_t xent_avx512_one_group_f32(const xent_f32u *x, ptrdiff_t xs, const ptrdiff_t C,
                                                const int32_t *t, double *ce, double *lse)
{
    xent_f32u xt[XENT_ROWS_MAX_C * XENT_GROUP], tx[XENT_GROUP];
    if (C >= 6) { /* below, the plain loads cost no more than the transpose */
        xent_transpose_group_f32(x, xs, C, t, xt, tx);
        return xent_group_ce_f32(xt, 1, XENT_GROUP, C, t, tx, ce, lse);
    }
    return xent_group_ce_f32(x, xs, 1, C, t, NULL, ce, lse);
}

#endif /* XENT_X86_64_V4_TILES_H */
