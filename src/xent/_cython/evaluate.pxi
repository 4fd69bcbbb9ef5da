# Evaluation kernels (evaluate / Evaluator): each row's cross-entropy and the rank
# of its target from one read of the row.  Included by _kernels.pyx, after
# _storage.pxi (_row_in) and _crossentropy.pxi (load_index, storage kinds).
#
# Contract (checked by the Python layer, _evaluate.py): every class index is in
# [0, C) or equals ignore_index; C >= 1 whenever a row is not ignored; strides are
# whole multiples of the item size; nll and rank are contiguous outputs of
# outer*inner values (float64 and int64).

cdef extern from "xent/kernels.h" nogil:
    int64_t RANK_NEVER "XENT_RANK_NEVER"
    void eval_row_f32 "xent_eval_row_f32"(const float *x, Py_ssize_t C, Py_ssize_t t,
                                          double *nll, int64_t *rank)
    void eval_row_f64 "xent_eval_row_f64"(const double *x, Py_ssize_t C, Py_ssize_t t,
                                          double *nll, int64_t *rank)

#: rank of a row that no k makes correct: ignored rows and rows whose target logit is NaN
NEVER = RANK_NEVER


cdef void _eval_loop(const char *x, int xkind, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                     Py_ssize_t xs0, Py_ssize_t xs1, Py_ssize_t xs2,
                     const char *tg, int tcode, Py_ssize_t ts0, Py_ssize_t ts2,
                     int64_t ignore_index, double *nll, int64_t *rank, real *scratch,
                     int n_threads) noexcept nogil:
    """Rows x[o*xs0 + c*xs1 + i*xs2] (strides in bytes) with targets tg[o*ts0 + i*ts2];
    scratch: C reals per thread, for rows that are not contiguous `real`s."""
    cdef Py_ssize_t r, o, i
    cdef int64_t t
    cdef const real *xr
    for r in prange(outer * inner, schedule="static", num_threads=n_threads):
        o = r // inner
        i = r % inner
        t = load_index(tg + o * ts0 + i * ts2, tcode)
        if t == ignore_index:
            # Ignored rows count for nothing, whatever their logits hold.
            nll[r] = 0
            rank[r] = RANK_NEVER
        else:
            xr = _row_in(x + o * xs0 + i * xs2, C, xs1, xkind, scratch + omp_get_thread_num() * C)
            if real is float:
                eval_row_f32(xr, C, t, &nll[r], &rank[r])
            else:
                eval_row_f64(xr, C, t, &nll[r], &rank[r])


def evaluate(cnp.ndarray x not None, int xkind, bint double_precision,
             cnp.ndarray target not None, int tcode, int64_t ignore_index,
             cnp.ndarray nll not None, cnp.ndarray rank not None, int n_threads):
    """Per-row -log softmax(x)[t] and rank of the target over axis 1 of x (outer, C, inner).

    x : logits of storage `xkind` (uint16 view allowed for 16-bit floats); computed
        in double if `double_precision`, else float.
    target : (outer, 1, inner) class indices of integer storage `tcode`.
    nll : contiguous float64 (outer*inner,) output; 0 for ignored rows.
    rank : contiguous int64 (outer*inner,) output: the number of classes ranking
        above the target (so the row is top-k correct iff rank < k); NEVER for
        ignored rows and for rows whose target logit is NaN.
    """
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    if (x.ndim != 3 or target.ndim != 3 or nll.shape[0] != outer * inner
            or rank.shape[0] != outer * inner):
        raise ValueError("xent._kernels.evaluate: internal contract violated (shapes)")
    if outer * inner == 0:
        return
    cdef Py_ssize_t itemsize = sizeof(double) if double_precision else sizeof(float)
    n_threads = <int> max(1, min(<Py_ssize_t> n_threads, outer * inner))
    cdef void *scratch = _alloc_scratch(n_threads * max(C, 1) * itemsize)
    cdef const char *xp = cnp.PyArray_BYTES(x)
    cdef const char *tp = cnp.PyArray_BYTES(target)
    cdef Py_ssize_t xs0 = _bstride(x, 0), xs1 = _bstride(x, 1), xs2 = _bstride(x, 2)
    cdef Py_ssize_t ts0 = _bstride(target, 0), ts2 = _bstride(target, 2)
    cdef double *nllp = <double *> cnp.PyArray_DATA(nll)
    cdef int64_t *rankp = <int64_t *> cnp.PyArray_DATA(rank)
    try:
        with nogil:
            if double_precision:
                _eval_loop(xp, xkind, outer, C, inner, xs0, xs1, xs2, tp, tcode, ts0, ts2,
                           ignore_index, nllp, rankp, <double_u *> scratch, n_threads)
            else:
                _eval_loop(xp, xkind, outer, C, inner, xs0, xs1, xs2, tp, tcode, ts0, ts2,
                           ignore_index, nllp, rankp, <float_u *> scratch, n_threads)
    finally:
        free(scratch)
