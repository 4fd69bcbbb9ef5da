# Normalisers (logsumexp, log-softmax, softmax) over axis 1 of a 3-D view.
# Included by _kernels.pyx; uses its fused type `real`, _gather/_scatter, scratch,
# and _row_in (storage.pxi) to read rows of any floating storage; its path
# thresholds are in thresholds.pxi.

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


# ---- the job and its path ------------------------------------------------------

# One normaliser call: everything its row, block and tile tasks read.  x's
# strides are in bytes (rows may be of any storage xkind); out has the
# computation dtype and element strides: os* for log-softmax / softmax
# (outer, C, inner), ls* for logsumexp (outer, inner).
cdef struct _NormJob:
    int op
    const char *x
    int xkind
    Py_ssize_t outer, C, inner, xs0, xs1, xs2
    char *out
    Py_ssize_t os0, os1, os2, ls0, ls1

# The ways through a normaliser call, chosen by _norm_path (names: NORMALIZE_PATHS).
cdef enum:
    _NORM_ROWS = 0         # one row at a time, any strides and storage
    _NORM_ROW_BATCHES = 1  # unit-stride rows in batches, sums before logs (ROW_BATCH)
    _NORM_TILES = 2        # few-class rows, TILE_ROWS at a time (SMALL_C)
    _NORM_BLOCKS = 3       # class axis not last: blocks of adjacent positions
    _NORM_SPLIT = 4        # long rows in chunks over the threads (SPLIT_MIN)

NORMALIZE_PATHS = ("rows", "row_batches", "tiles", "blocks", "split")


cdef Py_ssize_t _norm_job(_NormJob *j, int op, cnp.ndarray x, int xkind,
                          cnp.ndarray out) except -1:
    """Fill j for normalize's arguments (checking its contract); return the
    computation dtype's item size."""
    cdef int typenum = cnp.PyArray_TYPE(out)
    if x.ndim != 3 or typenum not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
        raise TypeError("xent._kernels.normalize: internal contract violated (ndim/dtype)")
    if out.ndim != (2 if op == OP_LOGSUMEXP else 3):
        raise ValueError("xent._kernels.normalize: internal contract violated (out ndim)")
    if cnp.PyArray_ITEMSIZE(x) != (4 if xkind == XENT_KIND_F32 else 8 if xkind == XENT_KIND_F64
                                   else 2 if xkind in (XENT_KIND_F16, XENT_KIND_BF16) else 0):
        raise TypeError("xent._kernels.normalize: internal contract violated (xkind)")
    j.op, j.x, j.xkind = op, cnp.PyArray_BYTES(x), xkind
    j.outer, j.C, j.inner = x.shape[0], x.shape[1], x.shape[2]
    j.xs0, j.xs1 = cnp.PyArray_STRIDE(x, 0), cnp.PyArray_STRIDE(x, 1)
    j.xs2 = cnp.PyArray_STRIDE(x, 2)
    j.out = cnp.PyArray_BYTES(out)
    j.os0 = j.os1 = j.os2 = j.ls0 = j.ls1 = 0
    if op == OP_LOGSUMEXP:
        j.ls0, j.ls1 = _stride(out, 0), _stride(out, 1)
    else:
        j.os0, j.os1, j.os2 = _stride(out, 0), _stride(out, 1), _stride(out, 2)
    return cnp.PyArray_ITEMSIZE(out)


cdef int _norm_path(const _NormJob *j, Py_ssize_t itemsize) noexcept nogil:
    """The path of the job (_NORM_*); itemsize: the computation dtype's.  The
    typed paths (split, tiles, blocks) read x in place, so they need it stored
    in the computation dtype ("own"); row batches also read float16 in place."""
    cdef bint own = j.xkind == (XENT_KIND_F32 if itemsize == sizeof(float) else XENT_KIND_F64)
    cdef bint unit = own and j.xs1 == itemsize
    cdef bint lse = j.op == OP_LOGSUMEXP
    if unit and j.C >= SPLIT_MIN and (lse or j.os1 == 1):
        return _NORM_SPLIT
    if j.inner == 1 and unit and 0 < j.C <= SMALL_C and j.outer >= 2 * MIN_BLOCK:
        return _NORM_TILES
    if j.inner > 1 and own and j.xs2 == itemsize and (lse or j.os2 == 1):
        return _NORM_BLOCKS
    if (j.inner == 1 and j.C > 0 and (lse or j.os1 == 1)
            and (_batch_rows(j.C, itemsize, not lse) > 1 or j.xkind == XENT_KIND_F16)
            and (unit or itemsize == sizeof(float) and j.xkind == XENT_KIND_F16 and j.xs1 == 2)):
        # float16 rows are read in place there, even in batches of one.
        return _NORM_ROW_BATCHES
    return _NORM_ROWS


# ---- the loops over rows and blocks --------------------------------------------

cdef void _run(const _NormJob *j, int path, real *scratch, Py_ssize_t per_thread,
               Py_ssize_t nb, int n_threads) noexcept nogil:
    """The tasks of `path` (any but _NORM_SPLIT): rows, row batches, tiles of
    TILE_ROWS short rows, or blocks of nb positions, split statically over
    threads, each with per_thread reals of scratch."""
    cdef int op = j.op, xkind = j.xkind
    cdef const char *x = j.x
    cdef Py_ssize_t outer = j.outer, C = j.C, inner = j.inner
    cdef Py_ssize_t xs0 = j.xs0, xs1 = j.xs1, xs2 = j.xs2
    cdef real *out = <real *> j.out
    cdef real *lse = <real *> j.out
    cdef Py_ssize_t os0 = j.os0, os1 = j.os1, os2 = j.os2, ls0 = j.ls0, ls1 = j.ls1
    cdef Py_ssize_t t, o, i, n_blocks, width
    cdef const real *xr = <const real *> x
    cdef Py_ssize_t e0 = xs0 // <Py_ssize_t> sizeof(real), e1 = xs1 // <Py_ssize_t> sizeof(real)
    cdef real *mine
    if path == _NORM_TILES:
        n_blocks = (outer + TILE_ROWS - 1) // TILE_ROWS
        for t in prange(n_blocks, schedule="static", num_threads=n_threads):
            o = t * TILE_ROWS
            width = outer - o if outer - o < TILE_ROWS else TILE_ROWS
            mine = scratch + omp_get_thread_num() * per_thread
            _tile(op, xr + o * e0, width, C, e0, out + o * os0, os0, os1, lse + o * ls0, ls0, mine)
    elif path == _NORM_BLOCKS:
        n_blocks = (inner + nb - 1) // nb
        for t in prange(outer * n_blocks, schedule="static", num_threads=n_threads):
            o = t // n_blocks
            i = (t % n_blocks) * nb
            width = inner - i if inner - i < nb else nb
            mine = scratch + omp_get_thread_num() * per_thread
            _block(op, xr + o * e0 + i, C, e1, width,
                   out + o * os0 + i, os1, lse + o * ls0 + i * ls1, ls1, mine)
    elif path == _NORM_ROW_BATCHES:
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


cdef void _run_split(const _NormJob *j, real *out, double *stats, double *row,
                     int n_threads) noexcept nogil:
    """Long unit-stride rows (the split path) in chunks: chunk stats in parallel,
    a merge per row in chunk order, then the chunk writes in parallel.  out: j.out
    as the computation dtype; stats: 3 doubles per chunk; row: 3 doubles per row
    (max, log-sum, 1/sum; NaN max marks a row done by the whole-row path)."""
    cdef int op = j.op
    cdef const real *x = <const real *> j.x
    cdef Py_ssize_t outer = j.outer, C = j.C, inner = j.inner
    cdef Py_ssize_t xs0 = j.xs0 // <Py_ssize_t> sizeof(real), xs2 = j.xs2 // <Py_ssize_t> sizeof(real)
    cdef real *lse = out
    cdef Py_ssize_t os0 = j.os0, os2 = j.os2, ls0 = j.ls0, ls1 = j.ls1
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


def normalize(*, int op, cnp.ndarray x not None, int xkind, cnp.ndarray out not None,
              int n_threads):
    """Apply op along axis 1 of the 3-D array x.

    Parameters
    ----------
    op : {LOGSUMEXP, LOG_SOFTMAX, SOFTMAX}
    x : ndarray, shape (outer, C, inner)
        float32, float64, float16 or bfloat16, of storage kind `xkind`; any
        strides that are multiples of the item size.
    xkind : FLOAT_KINDS[x's dtype name]
        x's storage.
    out : ndarray
        ``(outer, inner)`` for LOGSUMEXP, else ``(outer, C, inner)``; float32 or
        float64 (the computation dtype: float32 for 16-bit x, else x's dtype);
        writable; disjoint from x or x itself.
    n_threads : int
        Upper bound on the OpenMP team size.

    Rows of x's own dtype take the fast paths (long rows in chunks, few classes
    in tiles, class axis not last in blocks); 16-bit rows are converted into
    per-thread scratch one row at a time (float16 rows of unit stride are read
    in place, in row batches).  normalize_path names the path.
    """
    cdef _NormJob j
    cdef Py_ssize_t itemsize = _norm_job(&j, op, x, xkind, out)
    _normalize_job(&j, itemsize, n_threads)


cdef int _normalize_job(const _NormJob *j, Py_ssize_t itemsize, int n_threads) except -1:
    """Run a filled job (normalize's body; also normalize_small's)."""
    cdef int op = j.op
    cdef Py_ssize_t outer = j.outer, C = j.C, inner = j.inner
    if outer * inner == 0:
        return 0
    cdef int path = _norm_path(j, itemsize)
    cdef Py_ssize_t nb = 0, per_thread = 0, n_tasks
    cdef double *split = NULL
    cdef Py_ssize_t n_rows = outer * inner, n_chunks
    if path == _NORM_SPLIT:
        n_chunks = (C + SPLIT_CHUNK - 1) // SPLIT_CHUNK
        split = <double *> _alloc_scratch((3 * n_rows * n_chunks + 3 * n_rows) * sizeof(double))
        n_threads = <int> max(1, min(<Py_ssize_t> n_threads, n_rows * n_chunks))
        try:
            with nogil:
                if itemsize == sizeof(float):
                    _run_split(j, <float_u *> j.out, split, split + 3 * n_rows * n_chunks,
                               n_threads)
                else:
                    _run_split(j, <double_u *> j.out, split, split + 3 * n_rows * n_chunks,
                               n_threads)
        finally:
            free(split)
        return 0
    if path == _NORM_TILES:
        per_thread = 2 * C * TILE_ROWS + _block_scratch(TILE_ROWS, C, itemsize)
        per_thread += per_thread % 2
        n_tasks = (outer + TILE_ROWS - 1) // TILE_ROWS
    elif path == _NORM_BLOCKS:
        nb = BLOCK_BYTES // (C * itemsize) if C > 0 else MAX_BLOCK
        nb = min(max(nb, MIN_BLOCK), MAX_BLOCK, inner)
        per_thread = _block_scratch(nb, C, itemsize)
        n_tasks = outer * ((inner + nb - 1) // nb)
    else:
        # scratch for a row that is not contiguous computation-dtype values, or
        # a strided output row
        if j.xkind != (XENT_KIND_F32 if itemsize == sizeof(float) else XENT_KIND_F64) \
                or j.xs1 != itemsize or (op != OP_LOGSUMEXP and j.os1 != 1):
            per_thread = C
        n_tasks = outer * inner
    n_threads = <int> max(1, min(<Py_ssize_t> n_threads, n_tasks))
    cdef void *scratch = _alloc_scratch(n_threads * per_thread * itemsize)
    try:
        with nogil:
            if itemsize == sizeof(float):
                _run(j, path, <float_u *> scratch, per_thread, nb, n_threads)
            else:
                _run(j, path, <double_u *> scratch, per_thread, nb, n_threads)
    finally:
        free(scratch)
    return 0


def normalize_small(x, axis, int op, threads_for):
    """`op` over the last axis of `x` (the public function's call with every
    default) in one compiled call, or None: then the caller takes the general path.

    Taken for an exact ndarray, float32/float64, native, aligned, C-contiguous,
    at least 1-D, `axis` the int -1 or ndim - 1.  The result is a new array of
    x's dtype (x's shape, or x's shape without the last axis for LOGSUMEXP, a
    NumPy scalar for a 1-D x), computed by the same job and path as
    `normalize` with the strides the general path's result has, so with the same
    bits.  threads_for(n_elements) gives the team size.
    """
    cdef cnp.ndarray a, result
    cdef int typenum, nd
    cdef Py_ssize_t k, outer = 1, itemsize
    cdef _NormJob j
    if not cnp.PyArray_CheckExact(x) or type(axis) is not int:
        return None
    a = <cnp.ndarray> x
    nd = cnp.PyArray_NDIM(a)
    typenum = cnp.PyArray_TYPE(a)
    if (nd == 0 or not (axis == -1 or axis == nd - 1)
            or (typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64)
            or not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISBEHAVED_RO(a))):
        return None
    for k in range(nd - 1):
        outer *= cnp.PyArray_DIM(a, k)
    itemsize = cnp.PyArray_ITEMSIZE(a)
    result = cnp.PyArray_EMPTY(nd - 1 if op == OP_LOGSUMEXP else nd, cnp.PyArray_DIMS(a),
                               typenum, 0)
    j.op, j.x = op, cnp.PyArray_BYTES(a)
    j.xkind = XENT_KIND_F32 if typenum == cnp.NPY_FLOAT32 else XENT_KIND_F64
    j.outer, j.C, j.inner = outer, cnp.PyArray_DIM(a, nd - 1), 1
    # C-contiguous: these strides (in bytes for x, elements for the result)
    j.xs1, j.xs2 = itemsize, itemsize
    j.xs0 = j.C * itemsize
    j.out = cnp.PyArray_BYTES(result)
    j.os0 = j.os1 = j.os2 = j.ls0 = j.ls1 = 0
    if op == OP_LOGSUMEXP:
        j.ls0, j.ls1 = 1, 1
    else:
        j.os0, j.os1, j.os2 = j.C, 1, 1
    _normalize_job(&j, itemsize, threads_for(outer * j.C))
    return result if cnp.PyArray_NDIM(result) else result[()]  # (PyArray_Return steals)


def normalize_path(*, int op, cnp.ndarray x not None, int xkind, cnp.ndarray out not None):
    """The name (one of NORMALIZE_PATHS) of the path normalize takes for these
    arguments: the same job and the same choice (_norm_path) as normalize."""
    cdef _NormJob j
    cdef Py_ssize_t itemsize = _norm_job(&j, op, x, xkind, out)
    return NORMALIZE_PATHS[_norm_path(&j, itemsize)]
