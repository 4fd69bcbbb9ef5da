/*
 * Few-class cross-entropy rows read where they lie, vectorised across rows.
 *
 * With C <= 16 classes a row is shorter than a SIMD register, so vectorising
 * within a row wastes most lanes.  Here a group of XENT_GROUP rows is one set of
 * vectors instead: lane j holds row j, and the classes are a loop that the
 * compiler unrolls because C is a compile-time constant in each of the
 * specialised functions (C = 2..XENT_ROWS_MAX_C, one per value).  The rows are
 * read in place, a group at a time: with strided loads across the lanes, or, for
 * float32 under AVX-512 (whose compiled strided loads cost more than the
 * arithmetic), by a transpose through registers into 1 KB on the stack; the
 * AVX2 build has its own whole-group function for float32 (_tiles_avx2.h).  The
 * max, the sum of exps and the target's logit of a row stay in registers; no
 * tile is copied.  Other C, and calls with a gradient or label smoothing, take
 * the transposed tiles of the Cython layer (block_stats / block_ce_index).
 *
 * The arithmetic is _rows.h's: xent_exp_term_*, xent_log1p_*, and the same
 * split of the sum of exps into k (entries equal to the max) and rest.
 */
#ifndef XENT_TILES_H
#define XENT_TILES_H

#include "rows.h"

/* Rows per group: one AVX-512 register of floats; a whole number of registers
 * for every narrower SIMD width and for doubles. */
#define XENT_GROUP 16
/* Largest class count with a specialised function. */
#define XENT_ROWS_MAX_C 16

#if defined(__clang__)
#define XENT_UNROLL_CLASSES XENT_PRAGMA(unroll)
#elif defined(__GNUC__) && __GNUC__ >= 8
#define XENT_UNROLL_CLASSES XENT_PRAGMA(GCC unroll 16)
#else
#define XENT_UNROLL_CLASSES
#endif

/* The loop of xent_tile_targets, the j-th index read as LOAD. */
#define XENT_TILE_TARGETS_LOOP(LOAD)                                              \
    for (j = 0; j < n; j++) {                                                     \
        int64_t v = (LOAD);                                                       \
        int ignored = v == ignore_index, outside = (uint64_t)v >= (uint64_t)C;    \
        valid += !ignored;                                                        \
        bad += (!ignored) & outside;                                              \
        ti[j] = (ignored | outside) ? -1 : (int32_t)v;                            \
    }

/*
 * The class indices of n rows (storage `code`, `stride` bytes apart) as int32:
 * ti[j] = the index, or -1 when it equals ignore_index or lies outside [0, C)
 * (so no later read goes out of the row).  Sets *n_valid to the number of rows
 * not ignored and returns the first row whose index is outside [0, C) and not
 * ignored (found by xent_scan_indices), or -1 when there is none.  One loop per
 * storage (XENT_INDEX_STORAGES, the switch outside the loop); contiguous
 * indices take a vectorised one.
 */
static ptrdiff_t xent_tile_targets(const char *p, int code, ptrdiff_t stride, ptrdiff_t n,
                                   int64_t ignore_index, ptrdiff_t C, int32_t *ti,
                                   ptrdiff_t *n_valid)
{
    ptrdiff_t j, valid = 0, bad = 0, unused_valid;
    double unused_total;
    switch (code) {
#define XENT_TILE_TARGETS_RUN(CODE, TYPE)                                         \
    case CODE:                                                                    \
        if (stride == (ptrdiff_t)sizeof(TYPE)) {                                  \
            XENT_SIMD_SUM(valid, bad)                                             \
            XENT_TILE_TARGETS_LOOP((int64_t)((const xent_u_##TYPE *)p)[j])         \
        } else {                                                                  \
            XENT_TILE_TARGETS_LOOP((int64_t) * (const xent_u_##TYPE *)(p + j * stride)) \
        }                                                                         \
        break;
        XENT_INDEX_STORAGES(XENT_TILE_TARGETS_RUN)
#undef XENT_TILE_TARGETS_RUN
    }
    *n_valid = valid;
    if (!bad)
        return -1;
    return xent_scan_indices(p, n, stride, code, C, ignore_index, NULL, &unused_valid,
                             &unused_total);
}

#if defined(__AVX512F__)
#include <immintrin.h>

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
 * row), and tx[j] = x[j*xs + t[j]] (0 where t[j] < 0), gathered from xt.  The
 * compiler's own code for the strided loads of group_ce inserts one value at a
 * time, which costs more than the arithmetic for C >= 6. */
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
#define XENT_TRANSPOSE_GROUP xent_transpose_group_f32
#endif

/* The AVX2 build computes whole float32 groups by hand (_tiles_avx2.h). */
#include "tiles_avx2.h"
#if defined(XENT_HAVE_AVX2_TILES)
#define XENT_GROUP_SIMD xent_avx2_group_ce_f32
#define XENT_GROUP_FINISH xent_avx2_group_finish_f32
#endif

#define XENT_T xent_f32u
#define XENT_FN(name) xent_##name##_f32
#include "tiles_impl.h"
#undef XENT_T
#undef XENT_FN
#undef XENT_TRANSPOSE_GROUP
#undef XENT_GROUP_SIMD
#undef XENT_GROUP_FINISH

#define XENT_T xent_f64u
#define XENT_FN(name) xent_##name##_f64
#include "tiles_impl.h"
#undef XENT_T
#undef XENT_FN

#endif /* XENT_TILES_H */
