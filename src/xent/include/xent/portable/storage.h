/*
 * Rows of any floating storage (float32, float64, float16, bfloat16, any
 * stride) loaded as contiguous float32 or float64 rows.  After select.h: the
 * leading values of a unit-stride float16 row are converted by the build's
 * xent_half_row_head.
 */
#ifndef XENT_PORTABLE_STORAGE_H
#define XENT_PORTABLE_STORAGE_H

#include "../select.h"

/* Convert n strided 16-bit values (stride in elements) to contiguous floats. */
static void xent_load_half_row(const xent_u16u *x, ptrdiff_t n, ptrdiff_t stride,
                               int is_bfloat16, float *dst)
{
    ptrdiff_t i = 0;
    if (is_bfloat16) {
        if (stride == 1) {
            XENT_SIMD
            for (i = 0; i < n; i++)
                dst[i] = xent_bfloat16_to_float(x[i]);
        } else {
            for (i = 0; i < n; i++)
                dst[i] = xent_bfloat16_to_float(x[i * stride]);
        }
        return;
    }
    if (stride == 1)
        i = xent_half_row_head(x, n, dst);
    for (; i < n; i++)
        dst[i] = xent_half_to_float(x[i * stride]);
}

/* Load n values of storage `kind`, stride_bytes apart, as floats / doubles. */
static void xent_load_row_f32(const char *p, ptrdiff_t n, ptrdiff_t stride_bytes, int kind,
                              float *dst)
{
    ptrdiff_t i;
    switch (kind) {
    case XENT_KIND_F32:
        for (i = 0; i < n; i++)
            dst[i] = *(const xent_f32u *)(p + i * stride_bytes);
        break;
    case XENT_KIND_F64:
        for (i = 0; i < n; i++)
            dst[i] = (float)*(const xent_f64u *)(p + i * stride_bytes);
        break;
    default:
        if (stride_bytes % 2 == 0 && ((uintptr_t)p) % 2 == 0) {
            xent_load_half_row((const xent_u16u *)p, n, stride_bytes / 2, kind == XENT_KIND_BF16, dst);
            break;
        }
        for (i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + i * stride_bytes, sizeof h);
            dst[i] = kind == XENT_KIND_BF16 ? xent_bfloat16_to_float(h) : xent_half_to_float(h);
        }
    }
}

static void xent_load_row_f64(const char *p, ptrdiff_t n, ptrdiff_t stride_bytes, int kind,
                              double *dst)
{
    ptrdiff_t i;
    switch (kind) {
    case XENT_KIND_F64:
        for (i = 0; i < n; i++)
            dst[i] = *(const xent_f64u *)(p + i * stride_bytes);
        break;
    case XENT_KIND_F32:
        for (i = 0; i < n; i++)
            dst[i] = *(const xent_f32u *)(p + i * stride_bytes);
        break;
    default:
        for (i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + i * stride_bytes, sizeof h);
            dst[i] = kind == XENT_KIND_BF16 ? xent_bfloat16_to_float(h) : xent_half_to_float(h);
        }
    }
}

#endif /* XENT_PORTABLE_STORAGE_H */
