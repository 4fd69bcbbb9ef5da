/*
 * What every implementation of xent's kernels shares: the C headers, the
 * element types, the inlining and `omp simd` macros, the enums the Python
 * layer passes in, and the sizes that fix the order of every sum.
 *
 * Nothing here depends on the instruction set: that is decided in select.h
 * alone.  No -ffast-math anywhere: -inf must stay -inf, NaN must stay NaN,
 * and subnormal results must not be flushed.
 */
#ifndef XENT_COMMON_H
#define XENT_COMMON_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define XENT_INLINE static inline __attribute__((always_inline))
#else
#define XENT_INLINE static inline
#endif

/* ---- element types of the arrays the kernels read and write ------------------
 * NumPy arrays need not be aligned (np.frombuffer(buf, offset=1) viewed as
 * float32, a field of a packed record array, what dask hands over), and the
 * kernels read and write the caller's arrays in place.  An access through a
 * plain float* to a float that is not 4-byte aligned is undefined behaviour in
 * C, whatever the CPU does with it.  These element types have alignment 1, so
 * every access through a pointer to them is defined at any address; on x86-64
 * (and ARMv8) the compiler emits the same moves as for aligned data (its vector
 * loops use unaligned vector moves anyway), so aligned arrays lose nothing.
 * XENT_T (the element and compute type of the per-type functions) is one of
 * them: as a value it is a plain float or double.  Other compilers (MSVC) get
 * the plain types. */
#if defined(__GNUC__) || defined(__clang__)
#define XENT_UNALIGNED __attribute__((aligned(1)))
#else
#define XENT_UNALIGNED
#endif
typedef float xent_f32u XENT_UNALIGNED;
typedef double xent_f64u XENT_UNALIGNED;
typedef uint16_t xent_u16u XENT_UNALIGNED;
/* class indices of every integer storage (XENT_INDEX_STORAGES below) */
typedef int8_t xent_u_int8_t;
typedef uint8_t xent_u_uint8_t;
typedef int16_t xent_u_int16_t XENT_UNALIGNED;
typedef uint16_t xent_u_uint16_t XENT_UNALIGNED;
typedef int32_t xent_u_int32_t XENT_UNALIGNED;
typedef uint32_t xent_u_uint32_t XENT_UNALIGNED;
typedef int64_t xent_u_int64_t XENT_UNALIGNED;
typedef uint64_t xent_u_uint64_t XENT_UNALIGNED;

/* ---- loops the compiler vectorises --------------------------------------------
 * `omp simd` pragmas, enabled by -fopenmp-simd even when OpenMP threading is
 * off; compilers that know none get plain loops. */
#define XENT_PRAGMA(x) _Pragma(#x)
#if defined(_OPENMP) || defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 5)
#define XENT_SIMD XENT_PRAGMA(omp simd)
#define XENT_SIMD_SUM(...) XENT_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#define XENT_SIMD_MAX(var) XENT_PRAGMA(omp simd reduction(max : var))
/* a max and a count (evaluate.h), three sums and a min (kl_row, losses.h) */
#define XENT_SIMD_MAX_COUNT(m, n) XENT_PRAGMA(omp simd reduction(max : m) reduction(+ : n))
#define XENT_KL_SIMD XENT_PRAGMA(omp simd reduction(+ : a_sp, a_sq, a_d) reduction(min : a_lo))
#else
#define XENT_SIMD
#define XENT_SIMD_SUM(...)
#define XENT_SIMD_MAX(var)
#define XENT_SIMD_MAX_COUNT(m, n)
#define XENT_KL_SIMD
#endif

/* The class loops of the few-class tiles, unrolled (C is a constant there). */
#if defined(__clang__)
#define XENT_UNROLL_CLASSES XENT_PRAGMA(unroll)
#elif defined(__GNUC__) && __GNUC__ >= 8
#define XENT_UNROLL_CLASSES XENT_PRAGMA(GCC unroll 16)
#else
#define XENT_UNROLL_CLASSES
#endif

/* ---- sizes that fix the order of the sums --------------------------------------
 * Every implementation sums in these blocks, so a row's bits do not depend on
 * the thread count. */
/* Values summed in the compute type before the partial sum is added in double. */
#define XENT_SUM_CHUNK 512
/* Few-class tiles: rows per group (one AVX-512 register of floats; a whole
 * number of registers for every narrower SIMD width and for doubles), and the
 * largest class count with a specialised function. */
#define XENT_GROUP 16
#define XENT_ROWS_MAX_C 16

/* ---- enums shared with the Python layer ---------------------------------------- */

/* What a row's maximum says about the row (see row_stats, portable/rows.h). */
enum {
    XENT_ROW_FINITE = 0, /* finite max: normal path (a NaN shows up as a NaN sum) */
    XENT_ROW_POSINF = 1, /* k entries are +inf and no NaN: the limit of equal huge logits */
    XENT_ROW_NOPROB = 2, /* empty, or every entry is -inf: no class has probability */
    XENT_ROW_NAN = 3     /* NaN present and the finite path cannot show it */
};

/* Storage of a floating row as the kernels see it (exported as FLOAT_KINDS by the kernel module, read by _api/validation.py). */
enum { XENT_KIND_F32 = 0, XENT_KIND_F64 = 1, XENT_KIND_F16 = 2, XENT_KIND_BF16 = 3 };

/* Integer storage of class indices (exported as INDEX_CODES by the kernel module). */
enum {
    XENT_INDEX_I8 = 0, XENT_INDEX_U8, XENT_INDEX_I16, XENT_INDEX_U16,
    XENT_INDEX_I32, XENT_INDEX_U32, XENT_INDEX_I64, XENT_INDEX_U64
};

/* X(code, C type) for every index storage: one loop per storage with the
 * switch outside it (see portable/indices.h). */
#define XENT_INDEX_STORAGES(X)                                                      \
    X(XENT_INDEX_I8, int8_t) X(XENT_INDEX_U8, uint8_t) X(XENT_INDEX_I16, int16_t)   \
    X(XENT_INDEX_U16, uint16_t) X(XENT_INDEX_I32, int32_t) X(XENT_INDEX_U32, uint32_t) \
    X(XENT_INDEX_I64, int64_t) X(XENT_INDEX_U64, uint64_t)

/* The float32 twins of portable/rows.h's sum_exp_rest and sum_exp_rest_store
 * over an ISA's hand-written xent_<isa>_sum_exp_rest(x, is_f16, n, m, k, e):
 * defined once here, instantiated by x86_64_v3/rows.h and x86_64_v4/rows.h. */
#define XENT_SUM_EXP_REST_TWINS(isa)                                                    \
    static double xent_##isa##_sum_exp_rest_f32(const xent_f32u *x, ptrdiff_t n,        \
                                                xent_f32u m, ptrdiff_t *k)              \
    {                                                                                   \
        return xent_##isa##_sum_exp_rest(x, 0, n, (float)m, k, NULL);                   \
    }                                                                                   \
    static double xent_##isa##_sum_exp_rest_store_f32(const xent_f32u *x, ptrdiff_t n,  \
                                                      xent_f32u m, ptrdiff_t *k,        \
                                                      xent_f32u *e)                     \
    {                                                                                   \
        return xent_##isa##_sum_exp_rest(x, 0, n, (float)m, k, (float *)e);             \
    }

/* The twin of portable/half_rows.h's f16_row_parts over an ISA's hand-written
 * float16 loops: with e, the max (xent_avx2_max_f16: raw bits, the same at both
 * levels) and then the exps stored; without, xent_<isa>_f16_rest (the max and
 * the sum in the ISA's own way).  Defined once here for x86_64_v3/ and x86_64_v4/. */
#define XENT_F16_ROW_PARTS_TWIN(isa)                                                    \
    static int xent_##isa##_f16_row_parts(const xent_u16u *x, ptrdiff_t n, float *m,    \
                                          ptrdiff_t *k, double *rest, xent_f32u *e)     \
    {                                                                                   \
        if (e) {                                                                        \
            *m = xent_avx2_max_f16(x, n);                                               \
            if (!isfinite(*m))                                                          \
                return 0;                                                               \
            *rest = xent_##isa##_sum_exp_rest(x, 1, n, *m, k, e);                       \
            return 1;                                                                   \
        }                                                                               \
        *rest = xent_##isa##_f16_rest(x, n, m, k);                                      \
        return isfinite(*m);                                                            \
    }

#endif /* XENT_COMMON_H */
