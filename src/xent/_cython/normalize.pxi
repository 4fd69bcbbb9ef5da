# Normalisers (logsumexp, log-softmax, softmax) over axis 1 of a 3-D view.
# Included by _kernels.pyx; uses its fused type `real`, _gather/_scatter, scratch,
# and _row_in (_storage.pxi) to read rows of any floating storage.

cdef extern from "xent/kernels.h" nogil:
    float row_logsumexp_f32 "xent_row_logsumexp_f32"(const float *x, Py_ssize_t n)
    int row_parts_f32 "xent_row_parts_f32"(const float *x, Py_ssize_t n, float *m,
                                           Py_ssize_t *k, double *rest, float *e)
    int row_parts_f64 "xent_row_parts_f64"(const double *x, Py_ssize_t n, double *m,
                                           Py_ssize_t *k, double *rest, double *e)
    int f16_row_parts "xent_f16_row_parts"(const uint16_u *x, Py_ssize_t n, float *m,
                                           Py_ssize_t *k, double *rest, float *e)
    float logsumexp_finish_f32 "xent_logsumexp_finish_f32"(float m, Py_ssize_t k, double rest)
    double logsumexp_finish_f64 "xent_logsumexp_finish_f64"(double m, Py_ssize_t k,
                                                           double rest)
    void log_softmax_finish_f32 "xent_log_softmax_finish_f32"(
        const float *x, Py_ssize_t n, float m, Py_ssize_t k, double rest, float *out)
    void log_softmax_finish_f64 "xent_log_softmax_finish_f64"(
        const double *x, Py_ssize_t n, double m, Py_ssize_t k, double rest, double *out)
    void f16_log_softmax_finish "xent_f16_log_softmax_finish"(
        const uint16_u *x, Py_ssize_t n, float m, Py_ssize_t k, double rest, float *out)
    void softmax_finish_f32 "xent_softmax_finish_f32"(Py_ssize_t n, Py_ssize_t k, double rest,
                                                     float *out)
    void softmax_finish_f64 "xent_softmax_finish_f64"(Py_ssize_t n, Py_ssize_t k, double rest,
                                                     double *out)
    double row_logsumexp_f64 "xent_row_logsumexp_f64"(const double *x, Py_ssize_t n)
    void row_log_softmax_f32 "xent_row_log_softmax_f32"(const float *x, Py_ssize_t n, float *out)
    void row_log_softmax_f64 "xent_row_log_softmax_f64"(const double *x, Py_ssize_t n, double *out)
    void row_softmax_f32 "xent_row_softmax_f32"(const float *x, Py_ssize_t n, float *out)
    void row_softmax_f64 "xent_row_softmax_f64"(const double *x, Py_ssize_t n, double *out)
    int block_stats_f32 "xent_block_stats_f32"(const float *x, Py_ssize_t C, Py_ssize_t cs,
                                               Py_ssize_t nb, float *m, float *s, float *ls,
                                               double *acc)
    int block_stats_f64 "xent_block_stats_f64"(const double *x, Py_ssize_t C, Py_ssize_t cs,
                                               Py_ssize_t nb, double *m, double *s, double *ls,
                                               double *acc)
    void block_logsumexp_f32 "xent_block_logsumexp_f32"(Py_ssize_t nb, const float *m,
                                                       const float *s, float *lse, Py_ssize_t ls)
    void block_logsumexp_f64 "xent_block_logsumexp_f64"(Py_ssize_t nb, const double *m,
                                                       const double *s, double *lse, Py_ssize_t ls)
    void block_log_softmax_f32 "xent_block_log_softmax_f32"(
        const float *x, Py_ssize_t C, Py_ssize_t cs, Py_ssize_t nb,
        const float *m, const float *ls, float *out, Py_ssize_t ocs)
    void block_log_softmax_f64 "xent_block_log_softmax_f64"(
        const double *x, Py_ssize_t C, Py_ssize_t cs, Py_ssize_t nb,
        const double *m, const double *ls, double *out, Py_ssize_t ocs)
    void block_softmax_f32 "xent_block_softmax_f32"(
        const float *x, Py_ssize_t C, Py_ssize_t cs, Py_ssize_t nb,
        const float *m, float *s, float *out, Py_ssize_t ocs)
    void block_softmax_f64 "xent_block_softmax_f64"(
        const double *x, Py_ssize_t C, Py_ssize_t cs, Py_ssize_t nb,
        const double *m, double *s, double *out, Py_ssize_t ocs)

cdef extern from "xent/kernels.h" nogil:
    void chunk_stats_f32 "xent_chunk_stats_f32"(const float *x, Py_ssize_t n, double *stats)
    void chunk_stats_f64 "xent_chunk_stats_f64"(const double *x, Py_ssize_t n, double *stats)
    int merge_chunks_f32 "xent_merge_chunks_f32"(const double *stats, Py_ssize_t n,
                                                 float *m, float *s, float *ls)
    int merge_chunks_f64 "xent_merge_chunks_f64"(const double *stats, Py_ssize_t n,
                                                 double *m, double *s, double *ls)
    void write_log_softmax_f32 "xent_write_log_softmax_f32"(const float *x, Py_ssize_t n,
                                                           float m, float ls, float *out)
    void write_log_softmax_f64 "xent_write_log_softmax_f64"(const double *x, Py_ssize_t n,
                                                           double m, double ls, double *out)
    void write_softmax_f32 "xent_write_softmax_f32"(const float *x, Py_ssize_t n, float m,
                                                   float inv_s, float *out)
    void write_softmax_f64 "xent_write_softmax_f64"(const double *x, Py_ssize_t n, double m,
                                                   double inv_s, double *out)

# Which normaliser a loop computes (one branch per row, never per element).
cdef enum Op:
    OP_LOGSUMEXP = 0
    OP_LOG_SOFTMAX = 1
    OP_SOFTMAX = 2

LOGSUMEXP = OP_LOGSUMEXP
LOG_SOFTMAX = OP_LOG_SOFTMAX
SOFTMAX = OP_SOFTMAX

# Class-axis-not-last blocks: adjacent positions handled together so the loops
# vectorise across them.  A block of C x BLOCK_BYTES/C values stays in L2 between
# the max, sum and write sweeps.
cdef Py_ssize_t BLOCK_BYTES = 128 * 1024
cdef Py_ssize_t MIN_BLOCK = 16
cdef Py_ssize_t MAX_BLOCK = 1024

# Few classes (rows shorter than a SIMD register or two): rows are taken
# TILE_ROWS at a time and transposed into scratch, so the block kernels above
# vectorise across rows instead of within a row.
cdef Py_ssize_t SMALL_C = 32

# Long rows (at least SPLIT_MIN unit-stride classes, a megabyte of float32: more
# than one core's L2) are normalised in chunks of SPLIT_CHUNK, spread over the
# threads even when there are fewer rows than threads; see _run_split.
cdef Py_ssize_t SPLIT_MIN = 1 << 18
cdef Py_ssize_t SPLIT_CHUNK = 1 << 15
cdef Py_ssize_t TILE_ROWS = 256
# Rows of a row batch (_row_batch, _ce_row_batch): their maxima and sums of
# exps are all taken before their logs.  One row at a time, a short row is one
# chain of dependent latencies (its max, its sum, then libm's log1p, ~50
# cycles) that leaves most of the core idle; in a batch the logs wait on sums
# taken long before and the next sums do not wait on a log (30-45% less time
# a row for 40-100 float32 classes, one thread).  Where the second pass reads
# or writes whole rows again (log_softmax, softmax, a gradient), batches only
# pay for short rows: one row at a time, a row's write sweep (bound by stores)
# overlaps the next row's sum (bound by FMAs), which batching takes away; in a
# C harness on the AMD machine, log_softmax rows of 300 and 1000 classes took
# 5-25% longer in batches of 2-16, rows of 40 and 100 10-15% less.  So those
# batches hold ROW_BATCH_BYTES of rows (10 rows of 100 float32 classes), and
# rows too long for 4 in a batch go one at a time.
cdef enum:
    ROW_BATCH = 16
cdef Py_ssize_t ROW_BATCH_BYTES = 4 * 1024


cdef inline Py_ssize_t _batch_rows(Py_ssize_t C, Py_ssize_t itemsize, bint rereads) noexcept nogil:
    """Rows in a row batch (see ROW_BATCH) of C classes of `itemsize` bytes."""
    cdef Py_ssize_t n
    if not rereads:
        return ROW_BATCH
    n = ROW_BATCH_BYTES // (C * itemsize) if C > 0 else ROW_BATCH
    return 1 if n < 4 else min(n, ROW_BATCH)  # 1: the row-by-row path instead


# ---- one row / one block, all op and type branches in one place ----------------

cdef inline void _row_op(int op, const real *x, Py_ssize_t C, real *out,
                         real *lse) noexcept nogil:
    """op on one contiguous row: lse[0] for logsumexp, out[0:C] otherwise."""
    if real is float:
        if op == OP_LOGSUMEXP:
            lse[0] = row_logsumexp_f32(x, C)
        elif op == OP_LOG_SOFTMAX:
            row_log_softmax_f32(x, C, out)
        else:
            row_softmax_f32(x, C, out)
    else:
        if op == OP_LOGSUMEXP:
            lse[0] = row_logsumexp_f64(x, C)
        elif op == OP_LOG_SOFTMAX:
            row_log_softmax_f64(x, C, out)
        else:
            row_softmax_f64(x, C, out)


cdef inline void _strided_row(int op, const char *x, int xkind, Py_ssize_t C, Py_ssize_t xs,
                              real *out, Py_ssize_t os, real *lse,
                              real *scratch) noexcept nogil:
    """op on one row of storage xkind and stride xs (bytes), written to out with
    stride os (elements).

    scratch holds C values; it is used only when the row is not contiguous
    `real`s or os is not 1.
    """
    cdef const real *row = _row_in(x, C, xs, xkind, scratch)
    if op == OP_LOGSUMEXP:
        _row_op(op, row, C, <real *> NULL, lse)
    elif os == 1:
        _row_op(op, row, C, out, lse)
    else:
        # Strided output: compute into scratch (in place when row is scratch), scatter.
        _row_op(op, row, C, scratch, lse)
        _scatter(scratch, C, out, os)


cdef void _row_batch(int op, const char *x, int xkind, Py_ssize_t n, Py_ssize_t C,
                     Py_ssize_t xs0, Py_ssize_t xs1, real *out, Py_ssize_t os0, real *lse,
                     Py_ssize_t ls0, real *scratch) noexcept nogil:
    """op on n <= ROW_BATCH unit-stride rows xs0 bytes apart (x's own dtype, or
    float16 read in place), written to out (rows os0 apart, unit stride) or lse
    (ls0 apart): every row's max and sum of exps (row_parts; softmax stores its
    exps into out there), then every row's log and writes (the *_finish
    functions, the arithmetic of the row functions); see ROW_BATCH.  Rows whose
    max is not finite take _strided_row.  scratch: C values."""
    cdef real m[ROW_BATCH]
    cdef Py_ssize_t k[ROW_BATCH]
    cdef double rest[ROW_BATCH]
    cdef int ready[ROW_BATCH]
    cdef Py_ssize_t b
    cdef const char *xb
    cdef real *e
    for b in range(n):
        xb = x + b * xs0
        e = out + b * os0 if op == OP_SOFTMAX else NULL
        if real is float:
            if xkind == XENT_KIND_F16:
                ready[b] = f16_row_parts(<const uint16_u *> xb, C, &m[b], &k[b], &rest[b], e)
            else:
                ready[b] = row_parts_f32(<const float_u *> xb, C, &m[b], &k[b], &rest[b], e)
        else:
            ready[b] = row_parts_f64(<const double_u *> xb, C, &m[b], &k[b], &rest[b], e)
    for b in range(n):
        xb = x + b * xs0
        if not ready[b]:
            _strided_row(op, xb, xkind, C, xs1, out + b * os0, 1, lse + b * ls0, scratch)
        elif op == OP_LOGSUMEXP:
            if real is float:
                lse[b * ls0] = logsumexp_finish_f32(m[b], k[b], rest[b])
            else:
                lse[b * ls0] = logsumexp_finish_f64(m[b], k[b], rest[b])
        elif op == OP_SOFTMAX:
            if real is float:
                softmax_finish_f32(C, k[b], rest[b], out + b * os0)
            else:
                softmax_finish_f64(C, k[b], rest[b], out + b * os0)
        elif real is float:
            if xkind == XENT_KIND_F16:
                f16_log_softmax_finish(<const uint16_u *> xb, C, m[b], k[b], rest[b],
                                       out + b * os0)
            else:
                log_softmax_finish_f32(<const float_u *> xb, C, m[b], k[b], rest[b], out + b * os0)
        else:
            log_softmax_finish_f64(<const double_u *> xb, C, m[b], k[b], rest[b], out + b * os0)


cdef inline Py_ssize_t _block_scratch(Py_ssize_t nb, Py_ssize_t C, Py_ssize_t itemsize) noexcept nogil:
    """Values of scratch _block needs: nb doubles, 3 nb-arrays, one column (even)."""
    cdef Py_ssize_t n = (nb * 8) // itemsize + 3 * nb + C
    return n + n % 2


cdef inline void _block(int op, const real *x, Py_ssize_t C, Py_ssize_t cs, Py_ssize_t nb,
                        real *out, Py_ssize_t ocs, real *lse, Py_ssize_t lse_stride,
                        real *scratch) noexcept nogil:
    """op on nb adjacent unit-stride columns whose classes are cs apart.

    scratch holds nb doubles for the running sums
    (first, so they are 8-byte aligned), the block's max, sum and log-sum, then
    one column: _block_scratch(nb, C) values.
    """
    cdef double *acc = <double *> scratch
    cdef real *m = scratch + (nb * sizeof(double)) // sizeof(real)
    cdef real *s = m + nb
    cdef real *ls = s + nb
    cdef real *col = ls + nb
    cdef Py_ssize_t j
    cdef int special
    if real is float:
        special = block_stats_f32(x, C, cs, nb, m, s, ls, acc)
    else:
        special = block_stats_f64(x, C, cs, nb, m, s, ls, acc)
    if special:
        # Some column has a non-finite max: take each column through the row path,
        # which applies the SPEC's +inf / -inf / NaN rules.
        for j in range(nb):
            _gather(x + j, C, cs, col)
            if op == OP_LOGSUMEXP:
                _row_op(op, col, C, <real *> NULL, lse + j * lse_stride)
            else:
                _row_op(op, col, C, col, lse)
                _scatter(col, C, out + j, ocs)
        return
    if real is float:
        if op == OP_LOGSUMEXP:
            block_logsumexp_f32(nb, m, ls, lse, lse_stride)
        elif op == OP_LOG_SOFTMAX:
            block_log_softmax_f32(x, C, cs, nb, m, ls, out, ocs)
        else:
            block_softmax_f32(x, C, cs, nb, m, s, out, ocs)
    else:
        if op == OP_LOGSUMEXP:
            block_logsumexp_f64(nb, m, ls, lse, lse_stride)
        elif op == OP_LOG_SOFTMAX:
            block_log_softmax_f64(x, C, cs, nb, m, ls, out, ocs)
        else:
            block_softmax_f64(x, C, cs, nb, m, s, out, ocs)


cdef inline void _tile(int op, const real *x, Py_ssize_t R, Py_ssize_t C, Py_ssize_t xs0,
                       real *out, Py_ssize_t os0, Py_ssize_t os1, real *lse, Py_ssize_t ls0,
                       real *scratch) noexcept nogil:
    """op on R rows of C <= SMALL_C unit-stride classes, rows xs0 apart.

    scratch: 2*C*R values for the transposed tile and its result, then the
    block scratch of ``_block(nb=R)``.
    """
    cdef real *xt = scratch
    cdef real *ot = scratch + C * R
    cdef Py_ssize_t r, c
    _tile_in(x, R, C, xs0, xt)
    _block(op, xt, C, R, R, ot, R, lse, ls0, ot + C * R)
    if op != OP_LOGSUMEXP:
        for r in range(R):
            for c in range(C):
                out[r * os0 + c * os1] = ot[c * R + r]


# ---- the loops over rows and blocks --------------------------------------------

cdef void _run(int op, const char *x, int xkind, Py_ssize_t outer, Py_ssize_t C,
               Py_ssize_t inner, Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t xs2,
               real *out, Py_ssize_t os0, Py_ssize_t os1, Py_ssize_t os2,
               real *lse, Py_ssize_t ls0, Py_ssize_t ls1,
               real *scratch, Py_ssize_t per_thread, Py_ssize_t nb,
               int n_threads) noexcept nogil:
    """Rows (nb == 0), blocks of nb positions (nb > 0), or tiles of TILE_ROWS short
    rows (nb < 0), split statically over threads.  x's strides are in bytes; rows
    may be of any storage xkind, blocks and tiles only of `real` storage."""
    cdef Py_ssize_t t, o, i, n_blocks, width
    cdef const real *xr = <const real *> x
    cdef Py_ssize_t e0 = xs0 // <Py_ssize_t> sizeof(real), e1 = xs1 // <Py_ssize_t> sizeof(real)
    cdef int native = XENT_KIND_F32 if sizeof(real) == sizeof(float) else XENT_KIND_F64
    cdef real *mine
    if nb < 0:
        n_blocks = (outer + TILE_ROWS - 1) // TILE_ROWS
        for t in prange(n_blocks, schedule="static", num_threads=n_threads):
            o = t * TILE_ROWS
            width = outer - o if outer - o < TILE_ROWS else TILE_ROWS
            mine = scratch + omp_get_thread_num() * per_thread
            _tile(op, xr + o * e0, width, C, e0, out + o * os0, os0, os1, lse + o * ls0, ls0, mine)
    elif nb > 0:
        n_blocks = (inner + nb - 1) // nb
        for t in prange(outer * n_blocks, schedule="static", num_threads=n_threads):
            o = t // n_blocks
            i = (t % n_blocks) * nb
            width = inner - i if inner - i < nb else nb
            mine = scratch + omp_get_thread_num() * per_thread
            _block(op, xr + o * e0 + i, C, e1, width,
                   out + o * os0 + i, os1, lse + o * ls0 + i * ls1, ls1, mine)
    elif (inner == 1 and C > 0 and (op == OP_LOGSUMEXP or os1 == 1)
          and (_batch_rows(C, sizeof(real), op != OP_LOGSUMEXP) > 1 or xkind == XENT_KIND_F16)
          and (xs1 == sizeof(real) and xkind == native
               or sizeof(real) == sizeof(float) and xkind == XENT_KIND_F16 and xs1 == 2)):
        # Unit-stride rows (and unit-stride outputs): in batches, sums before logs
        # (float16 rows, read in place here, even in batches of one).
        nb = _batch_rows(C, sizeof(real), op != OP_LOGSUMEXP)
        n_blocks = (outer + nb - 1) // nb
        for t in prange(n_blocks, schedule="static", num_threads=n_threads):
            o = t * nb
            width = outer - o if outer - o < nb else nb
            mine = scratch + omp_get_thread_num() * per_thread
            _row_batch(op, x + o * xs0, xkind, width, C, xs0, xs1, out + o * os0, os0,
                       lse + o * ls0, ls0, mine)
    elif inner == 1:
        # Plain rows: no index arithmetic beyond the row number.
        for o in prange(outer, schedule="static", num_threads=n_threads):
            mine = scratch + omp_get_thread_num() * per_thread
            _strided_row(op, x + o * xs0, xkind, C, xs1, out + o * os0, os1, lse + o * ls0, mine)
    else:
        for t in prange(outer * inner, schedule="static", num_threads=n_threads):
            o = t // inner
            i = t % inner
            mine = scratch + omp_get_thread_num() * per_thread
            _strided_row(op, x + o * xs0 + i * xs2, xkind, C, xs1,
                         out + o * os0 + i * os2, os1, lse + o * ls0 + i * ls1, mine)


cdef void _run_split(int op, const real *x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                     Py_ssize_t xs0, Py_ssize_t xs2, real *out, Py_ssize_t os0, Py_ssize_t os2,
                     real *lse, Py_ssize_t ls0, Py_ssize_t ls1, double *stats, double *row,
                     int n_threads) noexcept nogil:
    """Long unit-stride rows in chunks: chunk stats in parallel, a merge per row in
    chunk order, then the chunk writes in parallel.  stats: 3 doubles per chunk;
    row: 3 doubles per row (max, log-sum, 1/sum; NaN max marks a row done by
    the whole-row path)."""
    cdef Py_ssize_t n_chunks = (C + SPLIT_CHUNK - 1) // SPLIT_CHUNK
    cdef Py_ssize_t t, r, o, i, c0, n
    cdef real m = 0, sm = 1, ls = 0
    cdef int finite
    cdef const real *base
    for t in prange(outer * inner * n_chunks, schedule="static", num_threads=n_threads):
        r = t // n_chunks
        c0 = (t % n_chunks) * SPLIT_CHUNK
        n = C - c0 if C - c0 < SPLIT_CHUNK else SPLIT_CHUNK
        base = x + (r // inner) * xs0 + (r % inner) * xs2 + c0
        if real is float:
            chunk_stats_f32(base, n, stats + 3 * t)
        else:
            chunk_stats_f64(base, n, stats + 3 * t)
    for r in range(outer * inner):
        o = r // inner
        i = r % inner
        if real is float:
            finite = merge_chunks_f32(stats + 3 * r * n_chunks, n_chunks, &m, &sm, &ls)
        else:
            finite = merge_chunks_f64(stats + 3 * r * n_chunks, n_chunks, &m, &sm, &ls)
        row[3 * r] = m
        row[3 * r + 1] = ls
        row[3 * r + 2] = 1 / sm
        if not finite:
            # +inf, all -inf or NaN-only: the whole-row path applies the rules
            row[3 * r] = NAN
            _row_op(op, x + o * xs0 + i * xs2, C, out + o * os0 + i * os2, lse + o * ls0 + i * ls1)
        elif op == OP_LOGSUMEXP:
            lse[o * ls0 + i * ls1] = m + ls
    if op == OP_LOGSUMEXP:
        return
    for t in prange(outer * inner * n_chunks, schedule="static", num_threads=n_threads):
        r = t // n_chunks
        if row[3 * r] != row[3 * r]:
            continue
        c0 = (t % n_chunks) * SPLIT_CHUNK
        n = C - c0 if C - c0 < SPLIT_CHUNK else SPLIT_CHUNK
        o = r // inner
        i = r % inner
        if op == OP_LOG_SOFTMAX:
            if real is float:
                write_log_softmax_f32(x + o * xs0 + i * xs2 + c0, n, <float> row[3 * r],
                                      <float> row[3 * r + 1], out + o * os0 + i * os2 + c0)
            else:
                write_log_softmax_f64(x + o * xs0 + i * xs2 + c0, n, row[3 * r],
                                      row[3 * r + 1], out + o * os0 + i * os2 + c0)
        else:
            if real is float:
                write_softmax_f32(x + o * xs0 + i * xs2 + c0, n, <float> row[3 * r],
                                  <float> row[3 * r + 2], out + o * os0 + i * os2 + c0)
            else:
                write_softmax_f64(x + o * xs0 + i * xs2 + c0, n, row[3 * r],
                                  row[3 * r + 2], out + o * os0 + i * os2 + c0)


def normalize(int op, cnp.ndarray x not None, int xkind, cnp.ndarray out not None,
              int n_threads):
    """Apply op along axis 1 of the 3-D array x.

    Parameters
    ----------
    op : {LOGSUMEXP, LOG_SOFTMAX, SOFTMAX}
    x : ndarray, shape (outer, C, inner)
        float32, float64, float16 or bfloat16, of storage kind `xkind`; any
        strides that are multiples of the item size.
    xkind : {KIND_F32, KIND_F64, KIND_F16, KIND_BF16}
        x's storage.
    out : ndarray
        ``(outer, inner)`` for LOGSUMEXP, else ``(outer, C, inner)``; float32 or
        float64 (the computation dtype: float32 for 16-bit x, else x's dtype);
        writable; disjoint from x or x itself.
    n_threads : int
        Upper bound on the OpenMP team size.

    Rows of x's own dtype take the fast paths (long rows in chunks, few classes
    in tiles, class axis not last in blocks); 16-bit rows are converted into
    per-thread scratch one row at a time.
    """
    cdef int typenum = cnp.PyArray_TYPE(out)
    if x.ndim != 3 or typenum not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
        raise TypeError("xent._kernels.normalize: internal contract violated (ndim/dtype)")
    if out.ndim != (2 if op == OP_LOGSUMEXP else 3):
        raise ValueError("xent._kernels.normalize: internal contract violated (out ndim)")
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t xs0 = cnp.PyArray_STRIDE(x, 0), xs1 = cnp.PyArray_STRIDE(x, 1)
    cdef Py_ssize_t xs2 = cnp.PyArray_STRIDE(x, 2)
    cdef Py_ssize_t os0 = 0, os1 = 0, os2 = 0, ls0 = 0, ls1 = 0
    if op == OP_LOGSUMEXP:
        ls0, ls1 = _stride(out, 0), _stride(out, 1)
    else:
        os0, os1, os2 = _stride(out, 0), _stride(out, 1), _stride(out, 2)
    if outer * inner == 0:
        return
    cdef Py_ssize_t itemsize = cnp.PyArray_ITEMSIZE(out)
    # own: x is stored in the computation dtype, so the typed fast paths may read it.
    cdef bint own = xkind == (XENT_KIND_F32 if typenum == cnp.NPY_FLOAT32 else XENT_KIND_F64)
    if cnp.PyArray_ITEMSIZE(x) != (4 if xkind == XENT_KIND_F32 else 8 if xkind == XENT_KIND_F64
                                   else 2 if xkind in (XENT_KIND_F16, XENT_KIND_BF16) else 0):
        raise TypeError("xent._kernels.normalize: internal contract violated (xkind)")
    cdef bint unit = own and xs1 == itemsize
    cdef Py_ssize_t nb = 0, per_thread = 0, n_tasks
    cdef char *xp = cnp.PyArray_BYTES(x)
    cdef char *op_ = cnp.PyArray_BYTES(out)
    cdef double *split = NULL
    cdef Py_ssize_t n_rows = outer * inner, n_chunks
    if unit and C >= SPLIT_MIN and (op == OP_LOGSUMEXP or os1 == 1):
        n_chunks = (C + SPLIT_CHUNK - 1) // SPLIT_CHUNK
        split = <double *> _alloc_scratch((3 * n_rows * n_chunks + 3 * n_rows) * sizeof(double))
        n_threads = <int> max(1, min(<Py_ssize_t> n_threads, n_rows * n_chunks))
        try:
            with nogil:
                if typenum == cnp.NPY_FLOAT32:
                    _run_split(op, <const float_u *> xp, outer, C, inner,
                               xs0 // itemsize, xs2 // itemsize,
                               <float_u *> op_, os0, os2, <float_u *> op_, ls0, ls1,
                               split, split + 3 * n_rows * n_chunks, n_threads)
                else:
                    _run_split(op, <const double_u *> xp, outer, C, inner,
                               xs0 // itemsize, xs2 // itemsize,
                               <double_u *> op_, os0, os2, <double_u *> op_, ls0, ls1,
                               split, split + 3 * n_rows * n_chunks, n_threads)
        finally:
            free(split)
        return
    if inner == 1 and unit and 0 < C <= SMALL_C and outer >= 2 * MIN_BLOCK:
        nb = -1
        per_thread = 2 * C * TILE_ROWS + _block_scratch(TILE_ROWS, C, itemsize)
        per_thread += per_thread % 2
        n_tasks = (outer + TILE_ROWS - 1) // TILE_ROWS
    elif inner > 1 and own and xs2 == itemsize and (op == OP_LOGSUMEXP or os2 == 1):
        nb = BLOCK_BYTES // (C * itemsize) if C > 0 else MAX_BLOCK
        nb = min(max(nb, MIN_BLOCK), MAX_BLOCK, inner)
        per_thread = _block_scratch(nb, C, itemsize)
        n_tasks = outer * ((inner + nb - 1) // nb)
    else:
        if not unit or (op != OP_LOGSUMEXP and os1 != 1):
            per_thread = C
        n_tasks = outer * inner
    n_threads = <int> max(1, min(<Py_ssize_t> n_threads, n_tasks))
    cdef void *scratch = _alloc_scratch(n_threads * per_thread * itemsize)
    try:
        with nogil:
            if typenum == cnp.NPY_FLOAT32:
                _run(op, xp, xkind, outer, C, inner, xs0, xs1, xs2,
                     <float_u *> op_, os0, os1, os2, <float_u *> op_, ls0, ls1,
                     <float_u *> scratch, per_thread, nb, n_threads)
            else:
                _run(op, xp, xkind, outer, C, inner, xs0, xs1, xs2,
                     <double_u *> op_, os0, os1, os2, <double_u *> op_, ls0, ls1,
                     <double_u *> scratch, per_thread, nb, n_threads)
    finally:
        free(scratch)
