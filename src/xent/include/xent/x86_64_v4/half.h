/*
 * float16 rows converted 16 values per instruction (vcvtph2ps on 512 bits):
 * the x86-64-v4 build's loads, ending with the 8-wide ones of
 * x86_64_v3/half.h.  Returns how many leading values it took (see there).
 */
#ifndef XENT_X86_64_V4_HALF_H
#define XENT_X86_64_V4_HALF_H

XENT_INLINE ptrdiff_t xent_avx512_half_row_head(const xent_u16u *x, ptrdiff_t n, float *dst)
{
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) { /* see xent_f16c_half_row_head */
        __builtin_prefetch(x + i + n);
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i))));
        _mm512_storeu_ps(dst + i + 16,
                         _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i + 16))));
    }
    return xent_f16c_convert8(x, i, n, dst);
}

#endif /* XENT_X86_64_V4_HALF_H */
