/*
 * Few-class cross-entropy rows read where they lie, vectorised across rows.
 * A per-type template (kernels.h: XENT_T = float, then double).
 *
 * With C <= 16 classes a row is shorter than a SIMD register, so vectorising
 * within a row wastes most lanes.  Here a group of XENT_GROUP rows is one set of
 * vectors instead: lane j holds row j, and the classes are a loop that the
 * compiler unrolls because C is a compile-time constant in each of the
 * specialised functions (C = 2..XENT_ROWS_MAX_C, one per value).  The rows are
 * read in place, a group at a time (one_group): here with strided loads across
 * the lanes; the x86-64-v4 build transposes float32 groups through registers
 * first (x86_64_v4/tiles.h), the x86-64-v3 build computes whole float32 groups
 * by hand (x86_64_v3/tiles.h).  The max, the sum of exps and the target's logit
 * of a row stay in registers; no tile is copied.  Other C, and calls with a
 * gradient or label smoothing, take the transposed tiles of the Cython layer
 * (block_stats / block_ce_index).
 *
 * The arithmetic is portable/rows.h's: exp_term, log1p, and the same split of
 * the sum of exps into k (entries equal to the max) and rest.
 */

/*
 * Cross-entropy without weights of XENT_GROUP rows of C classes, element (j, c)
 * of the group at x[j*rs + c*cs] (C, rs or cs compile-time constants once
 * inlined).  t[j] is row j's class index, -1 for a row to skip (ce and lse 0);
 * tx[j], when tx is not NULL, its target's logit, else it is picked here.
 * Writes ce[j] = -log_softmax(row j)[t[j]] = (m - x_t) + log(k + rest) and
 * lse[j] = m + log(k + rest), the finite path of ce_index_row (m the row's max,
 * NaN ignored; k entries equal to m and rest the sum of the other exp(x - m), as
 * in sum_exp_rest, so log1p(rest) keeps a confident row exact).  Returns how
 * many rows not skipped have a non-finite max: their ce / lse are not valid.
 */
XENT_INLINE ptrdiff_t XENT_FN(group_ce)(const XENT_T *x, ptrdiff_t rs, ptrdiff_t cs,
                                        const ptrdiff_t C, const int32_t *t, const XENT_T *tx,
                                        double *ce, double *lse)
{
    ptrdiff_t j, n_special = 0;
    XENT_SIMD_SUM(n_special)
    for (j = 0; j < XENT_GROUP; j++) {
        const XENT_T *row = x + j * rs;
        XENT_T m = -INFINITY, rest = 0, k = 0, xt = tx ? tx[j] : 0, ls;
        int32_t tj = t[j];
        ptrdiff_t c;
        XENT_UNROLL_CLASSES
        for (c = 0; c < C; c++)
            m = row[c * cs] > m ? row[c * cs] : m;
        XENT_UNROLL_CLASSES
        for (c = 0; c < C; c++) {
            XENT_T v = row[c * cs];
            rest += v == m ? 0 : XENT_FN(exp_term)(v - m);
            k += v == m;
            if (!tx)
                xt = tj == c ? v : xt;
        }
        /* log(k + rest) as log1p((k - 1) + rest): exactly log1p(rest) when k == 1 */
        ls = XENT_FN(log1p)((k - 1) + rest);
        n_special += (tj >= 0) & !((m > -INFINITY) & (m < INFINITY));
        ce[j] = tj < 0 ? 0.0 : ((double)m - xt) + ls;
        lse[j] = tj < 0 ? 0.0 : (double)m + ls;
    }
    return n_special;
}

/* group_ce of the XENT_GROUP rows x + j*xs, read in place (one_group; the
 * float32 twins are in x86_64_v3/tiles.h and x86_64_v4/tiles.h). */
XENT_INLINE ptrdiff_t XENT_FN(portable_one_group)(const XENT_T *x, ptrdiff_t xs,
                                                  const ptrdiff_t C, const int32_t *t,
                                                  double *ce, double *lse)
{
    return XENT_FN(group_ce)(x, xs, 1, C, t, NULL, ce, lse);
}

/* The second phase over the groups of a tile, for the implementations that
 * leave one (group_finish, x86_64_v3/tiles.h); here one_group has written
 * everything: no rows left to finish, none special. */
XENT_INLINE ptrdiff_t XENT_FN(portable_group_finish)(ptrdiff_t n, const int32_t *t, double *ce,
                                                     double *lse)
{
    (void)n, (void)t, (void)ce, (void)lse;
    return 0;
}

/* one_group for each specialised C, and the one for a given C (NULL if none). */
typedef ptrdiff_t (*XENT_FN(group_fn))(const XENT_T *x, ptrdiff_t xs, const int32_t *t,
                                        double *ce, double *lse);
#define XENT_GROUP_CE_FOR(K)                                                             \
    static ptrdiff_t XENT_FN(group_ce_##K)(const XENT_T *x, ptrdiff_t xs, const int32_t *t, \
                                           double *ce, double *lse)                       \
    {                                                                                     \
        return XENT_FN(one_group)(x, xs, K, t, ce, lse);                                  \
    }
XENT_GROUP_CE_FOR(2)
XENT_GROUP_CE_FOR(3)
XENT_GROUP_CE_FOR(4)
XENT_GROUP_CE_FOR(5)
XENT_GROUP_CE_FOR(6)
XENT_GROUP_CE_FOR(7)
XENT_GROUP_CE_FOR(8)
XENT_GROUP_CE_FOR(9)
XENT_GROUP_CE_FOR(10)
XENT_GROUP_CE_FOR(11)
XENT_GROUP_CE_FOR(12)
XENT_GROUP_CE_FOR(13)
XENT_GROUP_CE_FOR(14)
XENT_GROUP_CE_FOR(15)
XENT_GROUP_CE_FOR(16)
#undef XENT_GROUP_CE_FOR

static XENT_FN(group_fn) XENT_FN(group_for)(ptrdiff_t C)
{
    static const XENT_FN(group_fn) table[XENT_ROWS_MAX_C + 1] = {
        NULL, NULL, XENT_FN(group_ce_2), XENT_FN(group_ce_3), XENT_FN(group_ce_4),
        XENT_FN(group_ce_5), XENT_FN(group_ce_6), XENT_FN(group_ce_7), XENT_FN(group_ce_8),
        XENT_FN(group_ce_9), XENT_FN(group_ce_10), XENT_FN(group_ce_11), XENT_FN(group_ce_12),
        XENT_FN(group_ce_13), XENT_FN(group_ce_14), XENT_FN(group_ce_15), XENT_FN(group_ce_16)};
    return C >= 0 && C <= XENT_ROWS_MAX_C ? table[C] : NULL;
}

/*
 * Class-index cross-entropy, forward only and without label smoothing, of nr
 * rows of 2 <= C <= XENT_ROWS_MAX_C unit-stride classes, row j at x + j*xs; t as
 * from xent_tile_targets (-1: ignored, ce = lse = 0).  w: class weights or NULL.
 * Writes ce[j] (with its weight: w[t] (-lp_t), 0 when w[t] == 0) and
 * lse[j] = logsumexp(row j), the values of ce_index_row with eps = 0, which
 * computes the rows with a non-finite max (the SPEC's +inf / -inf / NaN rules).
 * Whole groups are read in place, the last nr % XENT_GROUP rows through a padded
 * copy.  Returns 0, or -1 (nothing written) when C has no specialised function.
 */
static int XENT_FN(tile_ce_forward)(const XENT_T *x, ptrdiff_t xs, ptrdiff_t nr, ptrdiff_t C,
                                    const int32_t *t, const XENT_T *w, double *ce, double *lse)
{
    XENT_T pad[XENT_GROUP * XENT_ROWS_MAX_C];
    int32_t tpad[XENT_GROUP];
    double cepad[XENT_GROUP], lsepad[XENT_GROUP];
    ptrdiff_t j, c, j0 = 0, n_special = 0, rem;
    XENT_FN(group_fn) group = XENT_FN(group_for)(C);
    if (!group)
        return -1;
    for (; j0 + XENT_GROUP <= nr; j0 += XENT_GROUP)
        n_special += group(x + j0 * xs, xs, t + j0, ce + j0, lse + j0);
    n_special += XENT_FN(group_finish)(j0, t, ce, lse);
    rem = nr - j0;
    if (rem > 0) {
        for (j = 0; j < XENT_GROUP; j++) {
            tpad[j] = j < rem ? t[j0 + j] : -1;
            for (c = 0; c < C; c++)
                pad[j * C + c] = j < rem ? x[(j0 + j) * xs + c] : 0;
        }
        n_special += group(pad, C, tpad, cepad, lsepad);
        n_special += XENT_FN(group_finish)(XENT_GROUP, tpad, cepad, lsepad);
        for (j = 0; j < rem; j++) {
            ce[j0 + j] = cepad[j];
            lse[j0 + j] = lsepad[j];
        }
    }
    if (w)
        for (j = 0; j < nr; j++)
            ce[j] = t[j] < 0 ? 0 : XENT_FN(mul0)(w[t[j]], ce[j]);
    if (n_special)
        for (j = 0; j < nr; j++)
            if (t[j] >= 0 && !isfinite(XENT_FN(max)(x + j * xs, C)))
                XENT_FN(ce_index_row)(x + j * xs, C, t[j], w, (XENT_T)C, 0, 0, 1, 1, NULL,
                                      &ce[j], &lse[j]);
    return 0;
}
