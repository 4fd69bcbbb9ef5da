/*
 * Evaluation rows for evaluate() / Evaluator: the row's cross-entropy and the rank
 * of its target, from one read of the row.  A per-type template (kernels.h:
 * XENT_T = float, then double), after rows.h and losses.h, whose
 * sum_exp_rest / row_stats / nll_special these build on.
 *
 * The row is walked in chunks of XENT_EVAL_CHUNK values.  Each chunk is read
 * from memory once: one vectorised sweep gives its max and the number of its
 * classes that rank above the target; a second sweep over the same chunk, now in
 * L1, gives its sum of exps.  The chunks' (max, rest, k) are merged in order as
 * the online normaliser does (Milakov & Gimelshein 2018), so a long row (a large
 * vocabulary) is not read twice from memory.  The chunking is fixed, so the
 * result does not depend on the thread count.
 *
 * Rank rule (SPEC "Evaluation"): class c ranks above the target t when
 * x_c > x_t, or x_c == x_t and c < t -- so rank 0 is np.argmax's answer.  A NaN
 * class never ranks above (NaN compares false); a NaN target is never correct:
 * its rank is XENT_RANK_NEVER.
 */

#ifndef XENT_EVALUATE_ONCE
#define XENT_EVALUATE_ONCE
/* Values per chunk of a row: 8 KiB of float / 16 KiB of double stay in L1
 * between the two sweeps. */
#define XENT_EVAL_CHUNK 2048
/* The rank of a row that is never top-k correct (NaN target; ignored rows too). */
#define XENT_RANK_NEVER INT64_MAX
#endif

/* Max of x[0..n) (NaN ignored), and the number of entries >= xt (or > xt when
 * strict): the classes before the target rank above it on ties, those after do
 * not.  Split at the target so each loop is one compare per value. */
XENT_INLINE XENT_T XENT_FN(max_count)(const XENT_T *x, ptrdiff_t n, XENT_T xt, int strict,
                                      XENT_T m, int *count)
{
    ptrdiff_t i;
    int above = 0;
    if (strict) {
        XENT_SIMD_MAX_COUNT(m, above)
        for (i = 0; i < n; i++) {
            XENT_T v = x[i];
            m = v > m ? v : m;
            above += v > xt;
        }
    } else {
        XENT_SIMD_MAX_COUNT(m, above)
        for (i = 0; i < n; i++) {
            XENT_T v = x[i];
            m = v > m ? v : m;
            above += v >= xt;
        }
    }
    *count += above;
    return m;
}

/*
 * One row of C >= 1 logits with target 0 <= t < C:
 *   *nll  = -log softmax(x)[t] = (max - x_t) + log(sum exp(x - max)), in double;
 *   *rank = the number of classes ranking above t (XENT_RANK_NEVER if x_t is NaN).
 * Non-finite rows follow the SPEC's rule, as in ce_index_row: with k +inf logits
 * the nll is log k at a +inf target and +inf elsewhere; an all -inf row is NaN; a
 * NaN anywhere makes the nll NaN.
 */
static void XENT_FN(eval_row)(const XENT_T *x, ptrdiff_t C, ptrdiff_t t, double *nll,
                              int64_t *rank)
{
    XENT_T xt = x[t], m, s, ls;
    int kind;
    double M = -INFINITY, rest = 0, k = 0;
    ptrdiff_t b, len, split, kc = 0;
    int above = 0, finite = 1;
    int64_t total_above = 0;

    for (b = 0; b < C; b += XENT_EVAL_CHUNK) {
        const XENT_T *xc = x + b;
        double mc, rc;
        len = C - b < XENT_EVAL_CHUNK ? C - b : XENT_EVAL_CHUNK;
        /* classes b + i with b + i < t tie-break above the target */
        split = t - b < 0 ? 0 : (t - b > len ? len : t - b);
        above = 0;
        m = XENT_FN(max_count)(xc, split, xt, 0, -INFINITY, &above);
        m = XENT_FN(max_count)(xc + split, len - split, xt, 1, m, &above);
        total_above += above;
        if (!finite)
            continue; /* the nll comes from the whole-row path below */
        if (isfinite(m)) {
            rc = XENT_FN(sum_exp_rest)(xc, len, m, &kc);
        } else if (m == -INFINITY) {
            /* every entry -inf or NaN: no probability, unless a NaN is there */
            ptrdiff_t i;
            int has_nan = 0;
            for (i = 0; i < len; i++)
                has_nan |= xc[i] != xc[i];
            rc = has_nan ? NAN : 0;
            kc = 0;
        } else {
            finite = 0; /* a +inf logit: the limit rules, from row_stats */
            continue;
        }
        /* merge (m, rc, kc) into (M, rest, k) in chunk order */
        mc = (double)m;
        if (mc > M) {
            rest = (rest + k) * exp(M - mc) + rc; /* exp(-inf) = 0 for the first chunk */
            k = (double)kc;
            M = mc;
        } else if (mc == M) {
            rest += rc;
            k += (double)kc;
        } else {
            rest += (rc + (double)kc) * exp(mc - M); /* mc = -inf: rc is 0 or NaN */
        }
    }
    *rank = xt == xt ? total_above : XENT_RANK_NEVER;
    if (finite && isfinite(M)) {
        /* log(k + rest) is log1p(rest) for a single max: exact for confident rows */
        *nll = ((M - (double)xt) + (k == 1 ? log1p(rest) : log(k + rest)));
        return;
    }
    /* +inf logits, or every entry -inf / NaN: the SPEC's rules (rare, scalar) */
    kind = XENT_FN(row_stats)(x, C, &m, &s, &ls);
    *nll = XENT_FN(nll_special)(kind, xt, s);
}
