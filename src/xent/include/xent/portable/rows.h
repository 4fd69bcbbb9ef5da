/*
 * The normaliser of one row (max, sum of exps, log-softmax, softmax), of long
 * rows in chunks, and of blocks of adjacent columns.  A per-type template:
 * kernels.h includes it with XENT_T = float (XENT_FN(name) = xent_name_f32)
 * and XENT_T = double (xent_name_f64).
 *
 * The functions named portable_* have hand-written twins (x86_64_v3/rows.h,
 * x86_64_v4/rows.h); everything here calls them by their generic names
 * (XENT_FN(max), XENT_FN(sum_exp_rest), ...), which select.h maps to the
 * build's implementation.
 *
 * Contract for every function here: pointers are valid for the lengths given,
 * n >= 0, and `out` is either disjoint from `x` or exactly `x` (in-place).
 */

/* Largest entry, ignoring NaN (a NaN row is caught by its NaN sum of exps). */
static XENT_T XENT_FN(portable_max)(const XENT_T *x, ptrdiff_t n)
{
    XENT_T m = -INFINITY;
    ptrdiff_t i;
    XENT_SIMD_MAX(m)
    for (i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* Ask for the cache lines of x[ahead .. ahead + len) while x[0 .. len) is being
 * summed.  The summing loops pass ahead = the row length: in a C-contiguous
 * array that is the next row, which the next call's max pass then reads from
 * cache instead of waiting on memory (the hardware prefetcher stops at every
 * 4 KiB page).  A prefetch never faults, so reading past the array is harmless. */
XENT_INLINE void XENT_FN(prefetch_ahead)(const XENT_T *x, ptrdiff_t len, ptrdiff_t ahead)
{
#if defined(__GNUC__) || defined(__clang__)
    ptrdiff_t i;
    for (i = 0; i < len; i += 64 / (ptrdiff_t)sizeof(XENT_T))
        __builtin_prefetch(x + ahead + i);
#else
    (void)x, (void)len, (void)ahead;
#endif
}

/* For a finite m >= every x[i]: returns rest = sum of exp(x[i] - m) over the
 * entries below m (NaN entries included, so NaN propagates) and sets *k to the
 * number of entries equal to m (each contributes exp(0) = 1).  The sum of exps is
 * k + rest; keeping the two apart lets log(sum) = log1p(rest) stay exact for a
 * confident row whose sum is 1 + tiny.  Partial sums over chunks of
 * XENT_SUM_CHUNK values, added in double: a plain float running sum would lose
 * ~n*eps on long rows.
 *
 * Within a chunk the sum is split explicitly (XENT_REST_CHUNK): four partial
 * sums, part j over the values [j*q, (j+1)*q), q = len / 4 (the last len % 4
 * values go to part 0), added pairwise at the end.  So no sum in the compute
 * type runs over more than q + 3 <= 131 terms at any optimisation level; the
 * SIMD reduction then splits each part further where the compiler vectorises.
 * A single running sum over the chunk was accurate only when vectorised: at -O0
 * a confident float32 row lost 3e-6 relative.  Four parts, not more: eight no
 * longer fit the baseline build's sixteen vector registers (BENCHMARKS.md,
 * "Decisions in the kernels").  The count k is exact in any order (integers
 * below 2^24 in float), one accumulator.
 * EXP is the exp taken (exp_term or, when the exps are stored, exp_nonpos) and
 * STORE(idx, ev) stores one or does nothing.  Each value is read and stored in
 * exactly one (iteration, part), so e may be x. */
#define XENT_REST_PART(S, J, EXP, STORE)                                       \
    {                                                                          \
        XENT_T v = xb[i + (J) * q], ev = EXP(v - m);                           \
        STORE(i + (J) * q, ev);                                                \
        S += v == m ? 0 : ev;                                                  \
        kc += v == m ? 1 : 0;                                                  \
    }
#define XENT_REST_CHUNK(EXP, STORE)                                            \
    for (b = 0; b < n; b += XENT_SUM_CHUNK) {                                  \
        const XENT_T *xb = x + b;                                              \
        XENT_T s0 = 0, s1 = 0, s2 = 0, s3 = 0, kc = 0;                         \
        ptrdiff_t i, q, len = n - b < XENT_SUM_CHUNK ? n - b : XENT_SUM_CHUNK; \
        q = len / 4;                                                           \
        XENT_FN(prefetch_ahead)(xb, len, n);                                   \
        XENT_SIMD_SUM(s0, s1, s2, s3, kc)                                      \
        for (i = 0; i < q; i++) {                                              \
            XENT_REST_PART(s0, 0, EXP, STORE)                                  \
            XENT_REST_PART(s1, 1, EXP, STORE)                                  \
            XENT_REST_PART(s2, 2, EXP, STORE)                                  \
            XENT_REST_PART(s3, 3, EXP, STORE)                                  \
        }                                                                      \
        for (i = 4 * q; i < len; i++)                                          \
            XENT_REST_PART(s0, 0, EXP, STORE)                                  \
        total += (s0 + s1) + (s2 + s3);                                        \
        count += (ptrdiff_t)kc;                                                \
    }
#define XENT_REST_NO_STORE(idx, ev)
#define XENT_REST_STORE(idx, ev) e[b + (idx)] = ev

static double XENT_FN(portable_sum_exp_rest)(const XENT_T *x, ptrdiff_t n, XENT_T m,
                                             ptrdiff_t *k)
{
    double total = 0;
    ptrdiff_t b, count = 0;
    XENT_REST_CHUNK(XENT_FN(exp_term), XENT_REST_NO_STORE)
    *k = count;
    return total;
}

/* sum_exp_rest, and e[i] = exp(x[i] - m) for every i from the same exps (one exp
 * per entry where a sum-then-write would take two).  e may be x itself. */
static double XENT_FN(portable_sum_exp_rest_store)(const XENT_T *x, ptrdiff_t n, XENT_T m,
                                                   ptrdiff_t *k, XENT_T *e)
{
    double total = 0;
    ptrdiff_t b, count = 0;
    XENT_REST_CHUNK(XENT_FN(exp_nonpos), XENT_REST_STORE)
    *k = count;
    return total;
}
#undef XENT_REST_PART
#undef XENT_REST_CHUNK
#undef XENT_REST_NO_STORE
#undef XENT_REST_STORE

/* *m = the max of x, ignoring NaN, and when it is finite (returns 1; 0
 * otherwise) *k and *rest as sum_exp_rest gives them for that max: here the
 * max and then sum_exp_rest; the x86-64-v4 build has a twin that takes both
 * in one pass over a float32 row (xent_avx512_max_rest_f32, whose sum has
 * other roundings than sum_exp_rest's).  Every sum of a row's exps that
 * stores nothing and has no max given goes through here, so each row has one
 * rest whichever function asked. */
static int XENT_FN(portable_max_rest)(const XENT_T *x, ptrdiff_t n, XENT_T *m, ptrdiff_t *k,
                                      double *rest)
{
    *m = XENT_FN(max)(x, n);
    if (!isfinite(*m))
        return 0;
    *rest = XENT_FN(sum_exp_rest)(x, n, *m, k);
    return 1;
}

/* log(k + rest) in double, exact for k == 1 and rest tiny (see sum_exp_rest). */
static double XENT_FN(log_sum)(ptrdiff_t k, double rest)
{
    return k == 1 ? log1p(rest) : log((double)k + rest);
}

/* The parts of a row's sum of exps: *m = its max and, when that is finite
 * (returns 1), *k and *rest as sum_exp_rest gives them, and with e != NULL
 * e[i] = exp(x[i] - m) as sum_exp_rest_store stores them (e may be x); returns
 * 0 otherwise (a +inf, all -inf or empty row), setting nothing else.  Callers
 * that finish rows later (the log, the writes), for a batch of rows at once,
 * keep one row's log from waiting on its sum and the next row's max from
 * waiting on that log.  The *_finish functions below are the FINITE cases of
 * the row functions, with their arithmetic. */
static int XENT_FN(row_parts)(const XENT_T *x, ptrdiff_t n, XENT_T *m, ptrdiff_t *k,
                              double *rest, XENT_T *e)
{
    if (!e)
        return XENT_FN(max_rest)(x, n, m, k, rest);
    *m = XENT_FN(max)(x, n);
    if (!isfinite(*m))
        return 0;
    *rest = XENT_FN(sum_exp_rest_store)(x, n, *m, k, e);
    return 1;
}

/* row_logsumexp from the parts (row_parts returned 1). */
static XENT_T XENT_FN(logsumexp_finish)(XENT_T m, ptrdiff_t k, double rest)
{
    return m + (XENT_T)XENT_FN(log_sum)(k, rest);
}

/*
 * The normaliser of one row: *m = max, *s = sum exp(x - max), *ls = log(*s)
 * (computed from the parts, see sum_exp_rest), and the row's kind.
 * FINITE: the usual case (a NaN entry makes *s NaN, which then reaches every
 * output).  POSINF: *s = k, the number of +inf entries, *ls = log k.  NOPROB:
 * empty or all -inf.  NAN: a NaN together with a non-finite max.
 */
/* The FINITE case of row_stats, for a finite max m: *s and *ls; with e != NULL
 * also e[i] = exp(x[i] - m) (see sum_exp_rest_store; e may be x). */
static void XENT_FN(finite_stats)(const XENT_T *x, ptrdiff_t n, XENT_T m, XENT_T *s, XENT_T *ls,
                                  XENT_T *e)
{
    ptrdiff_t k = 0;
    double rest = e ? XENT_FN(sum_exp_rest_store)(x, n, m, &k, e)
                    : XENT_FN(sum_exp_rest)(x, n, m, &k);
    *s = (XENT_T)((double)k + rest);
    *ls = (XENT_T)XENT_FN(log_sum)(k, rest);
}

static int XENT_FN(row_stats)(const XENT_T *x, ptrdiff_t n, XENT_T *m, XENT_T *s, XENT_T *ls)
{
    ptrdiff_t i, k = 0;
    int has_nan = 0;
    double rest;
    XENT_T mx;
    if (XENT_FN(max_rest)(x, n, m, &k, &rest)) {
        *s = (XENT_T)((double)k + rest);
        *ls = (XENT_T)XENT_FN(log_sum)(k, rest);
        return XENT_ROW_FINITE;
    }
    mx = *m;
    k = 0;
    for (i = 0; i < n; i++) {
        has_nan |= x[i] != x[i];
        k += x[i] == INFINITY;
    }
    *s = (XENT_T)k;
    *ls = (XENT_T)log((double)k);
    if (has_nan)
        return XENT_ROW_NAN;
    return mx > 0 ? XENT_ROW_POSINF : XENT_ROW_NOPROB;
}

static XENT_T XENT_FN(logsumexp_from_stats)(int kind, XENT_T m, XENT_T ls)
{
    switch (kind) {
    case XENT_ROW_FINITE: return m + ls;
    case XENT_ROW_POSINF: return INFINITY;
    case XENT_ROW_NOPROB: return -INFINITY;
    default: return NAN;
    }
}

static XENT_T XENT_FN(row_logsumexp)(const XENT_T *x, ptrdiff_t n)
{
    XENT_T m, s, ls;
    int kind = XENT_FN(row_stats)(x, n, &m, &s, &ls);
    return XENT_FN(logsumexp_from_stats)(kind, m, ls);
}

/* out = (x - m) - ls, and out = exp(x - m) * inv_s: the write sweeps. */
static void XENT_FN(write_log_softmax)(const XENT_T *x, ptrdiff_t n, XENT_T m, XENT_T ls,
                                       XENT_T *out)
{
    ptrdiff_t i;
    XENT_SIMD
    for (i = 0; i < n; i++)
        out[i] = (x[i] - m) - ls;
}

static void XENT_FN(write_softmax)(const XENT_T *x, ptrdiff_t n, XENT_T m, XENT_T inv_s,
                                   XENT_T *out)
{
    ptrdiff_t i;
    XENT_SIMD
    for (i = 0; i < n; i++)
        out[i] = XENT_FN(exp_nonpos)(x[i] - m) * inv_s;
}

/* out *= v: the last sweep of softmax (also for float16 rows, half_rows.h). */
static void XENT_FN(scale)(XENT_T *out, ptrdiff_t n, XENT_T v)
{
    ptrdiff_t i;
    XENT_SIMD
    for (i = 0; i < n; i++)
        out[i] *= v;
}

static void XENT_FN(fill)(XENT_T *out, ptrdiff_t n, XENT_T v)
{
    ptrdiff_t i;
    XENT_SIMD
    for (i = 0; i < n; i++)
        out[i] = v;
}

/* row_log_softmax from the parts (row_parts without e returned 1). */
static void XENT_FN(log_softmax_finish)(const XENT_T *x, ptrdiff_t n, XENT_T m, ptrdiff_t k,
                                        double rest, XENT_T *out)
{
    XENT_FN(write_log_softmax)(x, n, m, (XENT_T)XENT_FN(log_sum)(k, rest), out);
}

/* row_softmax from the parts (row_parts returned 1 having stored the exps into
 * out): out /= s, s rounded as finite_stats rounds it. */
static void XENT_FN(softmax_finish)(ptrdiff_t n, ptrdiff_t k, double rest, XENT_T *out)
{
    XENT_FN(scale)(out, n, 1 / (XENT_T)((double)k + rest));
}

/* out = log_softmax(x).  (x - m) - log s, not x - (m + log s): with huge logits
 * m + log s rounds to m and the -log s would be lost. */
static void XENT_FN(row_log_softmax)(const XENT_T *x, ptrdiff_t n, XENT_T *out)
{
    XENT_T m, s, ls;
    ptrdiff_t i;
    int kind = XENT_FN(row_stats)(x, n, &m, &s, &ls);
    if (kind == XENT_ROW_FINITE) {
        XENT_FN(write_log_softmax)(x, n, m, ls, out);
    } else if (kind == XENT_ROW_POSINF) {
        /* k entries at +inf share all the probability: -log k there, -inf elsewhere */
        for (i = 0; i < n; i++)
            out[i] = x[i] == INFINITY ? -ls : -INFINITY;
    } else {
        XENT_FN(fill)(out, n, NAN);
    }
}

/* out = softmax(x) = exp(x - m) / s: the exps stored by the summing pass, then
 * scaled (out may be x). */
static void XENT_FN(row_softmax)(const XENT_T *x, ptrdiff_t n, XENT_T *out)
{
    XENT_T m = XENT_FN(max)(x, n), s, ls, inv;
    ptrdiff_t i;
    int kind;
    if (isfinite(m)) {
        XENT_FN(finite_stats)(x, n, m, &s, &ls, out);
        XENT_FN(scale)(out, n, 1 / s);
        return;
    }
    kind = XENT_FN(row_stats)(x, n, &m, &s, &ls);
    if (kind == XENT_ROW_POSINF) {
        inv = 1 / s;
        for (i = 0; i < n; i++)
            out[i] = x[i] == INFINITY ? inv : 0;
    } else {
        XENT_FN(fill)(out, n, NAN);
    }
}

/* ---- long rows, in chunks --------------------------------------------------
 * A row longer than a cache (or than one thread's share) is normalised in fixed
 * chunks: each chunk's (max, rest, k) from one read, merged in chunk order
 * (the online normaliser of Milakov & Gimelshein 2018, per block), then the
 * chunks are written.  The chunking does not depend on the thread count, so
 * neither do the bits.
 */

/* stats[0] = max (NaN ignored); for a finite max stats[1] = rest, stats[2] = k
 * (see sum_exp_rest); otherwise stats[1] = NaN if the chunk holds a NaN, else 0. */
static void XENT_FN(chunk_stats)(const XENT_T *x, ptrdiff_t n, double *stats)
{
    XENT_T m = XENT_FN(max)(x, n);
    ptrdiff_t i, k = 0;
    int has_nan = 0;
    stats[0] = m;
    if (isfinite(m)) {
        stats[1] = XENT_FN(sum_exp_rest)(x, n, m, &k);
    } else {
        for (i = 0; i < n; i++)
            has_nan |= x[i] != x[i];
        stats[1] = has_nan ? NAN : 0;
    }
    stats[2] = (double)k;
}

/* Merge n chunks' stats in order.  Returns 1 with the row's *m, *s, *ls when its
 * max is finite, 0 otherwise (the caller then takes the whole-row path, which
 * applies the non-finite rules). */
static int XENT_FN(merge_chunks)(const double *stats, ptrdiff_t n, XENT_T *m, XENT_T *s,
                                 XENT_T *ls)
{
    double M = -INFINITY, rest = 0, k = 0;
    ptrdiff_t i;
    for (i = 0; i < n; i++)
        M = stats[3 * i] > M ? stats[3 * i] : M;
    if (!isfinite(M))
        return 0;
    for (i = 0; i < n; i++) {
        double mi = stats[3 * i];
        if (mi == M) {
            rest += stats[3 * i + 1];
            k += stats[3 * i + 2];
        } else if (mi == -INFINITY) {
            rest += stats[3 * i + 1]; /* 0, or NaN if the chunk held one */
        } else {
            rest += (stats[3 * i + 1] + stats[3 * i + 2]) * exp(mi - M);
        }
    }
    *m = (XENT_T)M;
    *s = (XENT_T)(k + rest);
    *ls = (XENT_T)(k == 1 ? log1p(rest) : log(k + rest));
    return 1;
}

/* Strided row <-> contiguous scratch. */
static void XENT_FN(gather)(const XENT_T *x, ptrdiff_t n, ptrdiff_t stride, XENT_T *dst)
{
    ptrdiff_t i;
    for (i = 0; i < n; i++)
        dst[i] = x[i * stride];
}

static void XENT_FN(scatter)(const XENT_T *src, ptrdiff_t n, XENT_T *out, ptrdiff_t stride)
{
    ptrdiff_t i;
    for (i = 0; i < n; i++)
        out[i * stride] = src[i];
}

/* The few-class tiles: R rows of C contiguous values, rows xs0 elements apart,
 * into the class-major tile t[c*R + r].  Class by class, so the writes are
 * contiguous and the reads are gathers where the ISA has them: a row-by-row
 * copy is a scalar loop of strided stores, several times slower
 * (BENCHMARKS.md, "Decisions in the kernels"). */
static void XENT_FN(tile_in)(const XENT_T *x, ptrdiff_t R, ptrdiff_t C, ptrdiff_t xs0,
                             XENT_T *t)
{
    ptrdiff_t r, c;
    for (c = 0; c < C; c++) {
        XENT_SIMD
        for (r = 0; r < R; r++)
            t[c * R + r] = x[r * xs0 + c];
    }
}

/*
 * Class axis not last: a block of nb adjacent positions j (unit stride) whose
 * classes c are cs elements apart, element (c, j) at x[c*cs + j].  The loops run
 * over c outside and j inside, so they vectorise across positions and read the
 * block in its memory order; no transposed copy.  m and s are nb-long scratch.
 * On return m[j], s[j] and ls[j] = log s[j] (exact for confident columns, see
 * sum_exp_rest).  Returns 1 when some column has a non-finite max: the caller then
 * takes the column-by-column path for this block instead of the writes below.
 * acc is nb doubles of scratch.
 */
static int XENT_FN(block_stats)(const XENT_T *x, ptrdiff_t C, ptrdiff_t cs, ptrdiff_t nb,
                                XENT_T *m, XENT_T *s, XENT_T *ls, double *acc)
{
    ptrdiff_t c, c0, c1, j;
    int special = 0;
    for (j = 0; j < nb; j++) {
        m[j] = -INFINITY;
        acc[j] = 0;
        ls[j] = 0; /* the count k of entries equal to the max, for now */
    }
    for (c = 0; c < C; c++) {
        const XENT_T *xc = x + c * cs;
        XENT_SIMD
        for (j = 0; j < nb; j++)
            m[j] = xc[j] > m[j] ? xc[j] : m[j];
    }
    for (j = 0; j < nb; j++)
        special |= !isfinite(m[j]);
    if (special)
        return 1;
    /* As sum_exp_rest, per column: the terms below the max summed in the compute
     * type over chunks of classes, then in double; the count k apart. */
    for (c0 = 0; c0 < C; c0 = c1) {
        c1 = C - c0 < XENT_SUM_CHUNK ? C : c0 + XENT_SUM_CHUNK;
        for (j = 0; j < nb; j++)
            s[j] = 0;
        for (c = c0; c < c1; c++) {
            const XENT_T *xc = x + c * cs;
            XENT_SIMD
            for (j = 0; j < nb; j++) {
                XENT_T v = xc[j];
                s[j] += v == m[j] ? 0 : XENT_FN(exp_term)(v - m[j]);
                ls[j] += v == m[j];
            }
        }
        for (j = 0; j < nb; j++)
            acc[j] += s[j];
    }
    XENT_SIMD
    for (j = 0; j < nb; j++) {
        XENT_T k = ls[j], rest = (XENT_T)acc[j];
        s[j] = k + rest;
        ls[j] = k == 1 ? XENT_FN(log1p)(rest) : XENT_FN(log)(k + rest);
    }
    return 0;
}

/* After block_stats returned 0: lse[j * lse_stride] = m[j] + log s[j]. */
static void XENT_FN(block_logsumexp)(ptrdiff_t nb, const XENT_T *m, const XENT_T *ls,
                                     XENT_T *lse, ptrdiff_t lse_stride)
{
    ptrdiff_t j;
    for (j = 0; j < nb; j++)
        lse[j * lse_stride] = m[j] + ls[j];
}

/* After block_stats returned 0: log-softmax of the block into out (class stride ocs). */
static void XENT_FN(block_log_softmax)(const XENT_T *x, ptrdiff_t C, ptrdiff_t cs, ptrdiff_t nb,
                                       const XENT_T *m, const XENT_T *ls, XENT_T *out,
                                       ptrdiff_t ocs)
{
    ptrdiff_t c, j;
    for (c = 0; c < C; c++) {
        const XENT_T *xc = x + c * cs;
        XENT_T *oc = out + c * ocs;
        XENT_SIMD
        for (j = 0; j < nb; j++)
            oc[j] = (xc[j] - m[j]) - ls[j];
    }
}

/* After block_stats returned 0: softmax of the block.  s is overwritten with 1/s. */
static void XENT_FN(block_softmax)(const XENT_T *x, ptrdiff_t C, ptrdiff_t cs, ptrdiff_t nb,
                                   const XENT_T *m, XENT_T *s, XENT_T *out, ptrdiff_t ocs)
{
    ptrdiff_t c, j;
    for (j = 0; j < nb; j++)
        s[j] = 1 / s[j];
    for (c = 0; c < C; c++) {
        const XENT_T *xc = x + c * cs;
        XENT_T *oc = out + c * ocs;
        XENT_SIMD
        for (j = 0; j < nb; j++)
            oc[j] = XENT_FN(exp_nonpos)(xc[j] - m[j]) * s[j];
    }
}
