/*
 * float16 rows converted 8 values per instruction (F16C's vcvtph2ps): the
 * x86-64-v3 build, and the leading part of the x86-64-v4 one's loads.
 * Each function returns how many leading values it took; the portable loop
 * after the call converts the rest (portable/storage.h, portable/half_rows.h).
 */
#ifndef XENT_X86_64_V3_HALF_H
#define XENT_X86_64_V3_HALF_H

/* dst[i .. ) = x[i .. ) by whole vectors of 8; returns where they stop. */
XENT_INLINE ptrdiff_t xent_f16c_convert8(const xent_u16u *x, ptrdiff_t i, ptrdiff_t n, float *dst)
{
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    return i;
}

/* 32 values (one cache line) per step, and the line one row further asked for:
 * the next row is read from cache (see prefetch_ahead in portable/rows.h). */
XENT_INLINE ptrdiff_t xent_f16c_half_row_head(const xent_u16u *x, ptrdiff_t n, float *dst)
{
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        int j;
        __builtin_prefetch(x + i + n);
        for (j = 0; j < 32; j += 8)
            _mm256_storeu_ps(dst + i + j,
                             _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i + j))));
    }
    return xent_f16c_convert8(x, i, n, dst);
}

/* out = (x - m) - ls for a float16 row read in place (write_log_softmax_f32's
 * arithmetic on the converted values), 8 at a time. */
XENT_INLINE ptrdiff_t xent_f16c_f16_log_softmax_head(const xent_u16u *x, ptrdiff_t n, float m,
                                                     float ls, xent_f32u *out)
{
    const __m256 vm = _mm256_set1_ps(m), vls = _mm256_set1_ps(ls);
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
        _mm256_storeu_ps(out + i, _mm256_sub_ps(_mm256_sub_ps(v, vm), vls));
    }
    return i;
}

#endif /* XENT_X86_64_V3_HALF_H */
