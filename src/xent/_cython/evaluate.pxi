# Evaluation kernels (evaluate / Evaluator): each row's cross-entropy and the rank
# of its target from one read of the row.  Included by _kernels.pyx, after
# storage.pxi (_row_in, storage codes) and cross_entropy.pxi (load_index).
#
# Contract (checked by the Python layer, _api/evaluate.py): every class index is in
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


# One evaluate call: logits of any floating storage, class indices of integer
# storage tcode, strides in bytes.
cdef struct _EvalJob:
    const char *x
    int xkind
    Py_ssize_t outer, C, inner, xs0, xs1, xs2
    const char *t
    int tcode
    Py_ssize_t ts0, ts2
    int64_t ignore_index
    double *nll             # outer*inner per-row values
    int64_t *rank


cdef void _eval_loop(const _EvalJob *j, real *scratch, int n_threads) noexcept nogil:
    """Rows x[o*xs0 + c*xs1 + i*xs2] with targets t[o*ts0 + i*ts2]; scratch: C
    reals per thread, for rows that are not contiguous `real`s."""
    cdef Py_ssize_t r, o, i, C = j.C, inner = j.inner
    cdef int64_t t
    cdef const real *xr
    for r in prange(j.outer * inner, schedule="static", num_threads=n_threads):
        o = r // inner
        i = r % inner
        t = load_index(j.t + o * j.ts0 + i * j.ts2, j.tcode)
        if t == j.ignore_index:
            # Ignored rows count for nothing, whatever their logits hold.
            j.nll[r] = 0
            j.rank[r] = RANK_NEVER
        else:
            xr = _row_in(j.x + o * j.xs0 + i * j.xs2, C, j.xs1, j.xkind,
                         scratch + omp_get_thread_num() * C)
            if real is float:
                eval_row_f32(xr, C, t, &j.nll[r], &j.rank[r])
            else:
                eval_row_f64(xr, C, t, &j.nll[r], &j.rank[r])


def evaluate(*, cnp.ndarray x not None, int xkind, bint double_precision,
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
    cdef _EvalJob j
    j.outer, j.C, j.inner = x.shape[0], x.shape[1], x.shape[2]
    if (x.ndim != 3 or target.ndim != 3 or nll.shape[0] != j.outer * j.inner
            or rank.shape[0] != j.outer * j.inner):
        raise ValueError("xent._kernels.evaluate: internal contract violated (shapes)")
    if j.outer * j.inner == 0:
        return
    cdef Py_ssize_t itemsize = sizeof(double) if double_precision else sizeof(float)
    n_threads = <int> max(1, min(<Py_ssize_t> n_threads, j.outer * j.inner))
    j.x, j.xkind = cnp.PyArray_BYTES(x), xkind
    j.xs0, j.xs1, j.xs2 = _bstride(x, 0), _bstride(x, 1), _bstride(x, 2)
    j.t, j.tcode = cnp.PyArray_BYTES(target), tcode
    j.ts0, j.ts2 = _bstride(target, 0), _bstride(target, 2)
    j.ignore_index = ignore_index
    j.nll = <double *> cnp.PyArray_DATA(nll)
    j.rank = <int64_t *> cnp.PyArray_DATA(rank)
    cdef void *scratch = _alloc_scratch(n_threads * max(j.C, 1) * itemsize)
    try:
        with nogil:
            if double_precision:
                _eval_loop(&j, <double_u *> scratch, n_threads)
            else:
                _eval_loop(&j, <float_u *> scratch, n_threads)
    finally:
        free(scratch)
