/*
 * Class indices of any integer storage: loaded, checked against the class
 * count, and prepared for the few-class tiles.  One loop per storage
 * (XENT_INDEX_STORAGES, common.h), the switch outside it.
 */
#ifndef XENT_PORTABLE_INDICES_H
#define XENT_PORTABLE_INDICES_H

#include "../common.h"

/* One class index read from storage `code`.  uint64 values above INT64_MAX wrap,
 * but the Python layer has range-checked every index before a kernel runs. */
XENT_INLINE int64_t xent_load_index(const char *p, int code)
{
    switch (code) {
    case XENT_INDEX_I8: return *(const xent_u_int8_t *)p;
    case XENT_INDEX_U8: return *(const xent_u_uint8_t *)p;
    case XENT_INDEX_I16: return *(const xent_u_int16_t *)p;
    case XENT_INDEX_U16: return *(const xent_u_uint16_t *)p;
    case XENT_INDEX_I32: return *(const xent_u_int32_t *)p;
    case XENT_INDEX_U32: return *(const xent_u_uint32_t *)p;
    case XENT_INDEX_I64: return *(const xent_u_int64_t *)p;
    default: return (int64_t)*(const xent_u_uint64_t *)p;
    }
}

/* Runs of class indices, one loop per storage with the switch outside it
 * (xent_load_index in a loop is an indirect jump per index, which costs more
 * than the rest of these loops). */

/* dst[i] = the index at p + i*stride, or -1 where it equals ignore_index. */
static void xent_load_indices(const char *p, ptrdiff_t n, ptrdiff_t stride, int code,
                              int64_t ignore_index, int64_t *dst)
{
    ptrdiff_t i;
    switch (code) {
#define XENT_LOAD_RUN(CODE, TYPE)                                   \
    case CODE:                                                      \
        for (i = 0; i < n; i++) {                                   \
            int64_t v = (int64_t) * (const xent_u_##TYPE *)(p + i * stride); \
            dst[i] = v == ignore_index ? -1 : v;                    \
        }                                                           \
        break;
        XENT_INDEX_STORAGES(XENT_LOAD_RUN)
#undef XENT_LOAD_RUN
    }
}

/* The validation pass over n class indices p[i*stride]: returns the position of
 * the first one outside [0, C) that is not ignore_index, or -1.  Sets *n_valid to
 * the number of the others before that position and *weight_total to the sum
 * of w[index] over them (their number when w == NULL).  uint64 indices above
 * INT64_MAX load as negative: out of range too. */
static ptrdiff_t xent_scan_indices(const char *p, ptrdiff_t n, ptrdiff_t stride, int code,
                                   ptrdiff_t C, int64_t ignore_index, const xent_f64u *w,
                                   ptrdiff_t *n_valid, double *weight_total)
{
    ptrdiff_t i, valid = 0, bad = -1;
    double total = 0;
    switch (code) {
#define XENT_SCAN_RUN(CODE, TYPE)                                   \
    case CODE:                                                      \
        for (i = 0; i < n; i++) {                                   \
            int64_t v = (int64_t) * (const xent_u_##TYPE *)(p + i * stride); \
            if (v == ignore_index)                                  \
                continue;                                           \
            if (v < 0 || v >= C) {                                  \
                bad = i;                                            \
                break;                                              \
            }                                                       \
            valid++;                                                \
            if (w)                                                  \
                total += w[v];                                      \
        }                                                           \
        break;
        XENT_INDEX_STORAGES(XENT_SCAN_RUN)
#undef XENT_SCAN_RUN
    }
    *n_valid = valid;
    *weight_total = w ? total : (double)valid;
    return bad;
}

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

#endif /* XENT_PORTABLE_INDICES_H */
