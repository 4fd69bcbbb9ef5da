# Pointwise losses (binary cross-entropy with logits, binary cross-entropy on
# probabilities, kl_div).  Included by _kernels.pyx; uses its fused type `real`,
# _gather/_scatter, _alloc_scratch.
#
# Contract (checked and prepared by xent/_api/pointwise.py):
# * Every operand has the same logical shape, given after coalescing as `shape`
#   (ndim >= 1, no dimension of length 1 unless ndim == 1, C order of the
#   original array); operand k's element strides are `strides[k, :]` (0 for a
#   broadcast dimension).  Operands (slots): 0 input (logits / probs / log q),
#   1 target, 2 weight, 3 pos_weight, 4 per-element loss, 5 gradient.  Absent
#   operands are None.
# * Inputs are of the computation dtype (float32 / float64) except slot 0, which
#   may hold float16 / bfloat16 bits as uint16 (`half` = 1 / 2); outputs are
#   writable, of the computation dtype, disjoint from the inputs, except that the
#   gradient may be exactly slot 0 (same address and strides: in place).
# * The iteration space (numel elements in C order) is cut into tasks of
#   PW_TASK consecutive elements, independent of the thread count; each task
#   writes its float64 sum of losses to partials[task] (the caller sums them in
#   a fixed order), so results are bitwise identical for any number of threads.
#   For binary_cross_entropy each task also writes the C-order index of its first
#   probability / target outside [0, 1] (or -1) to bad[task, 0 / 1].

cdef extern from "xent/kernels.h" nogil:
    double bce_logits_f32 "xent_bce_logits_f32"(
        Py_ssize_t n, const float *x, const float *y, const float *w, const float *pw,
        float *loss, float *grad, float scale)
    double bce_logits_f64 "xent_bce_logits_f64"(
        Py_ssize_t n, const double *x, const double *y, const double *w, const double *pw,
        double *loss, double *grad, double scale)
    double bce_f32 "xent_bce_f32"(Py_ssize_t n, const float *p, const float *y, const float *w,
                                  float *loss, Py_ssize_t *bad_p, Py_ssize_t *bad_y)
    double bce_f64 "xent_bce_f64"(Py_ssize_t n, const double *p, const double *y,
                                  const double *w, double *loss, Py_ssize_t *bad_p,
                                  Py_ssize_t *bad_y)
    double kl_div_f32 "xent_kl_div_f32"(Py_ssize_t n, const float *q, const float *t,
                                        float *loss, int log_target)
    double kl_div_f64 "xent_kl_div_f64"(Py_ssize_t n, const double *q, const double *t,
                                        double *loss, int log_target)

cdef enum PointwiseKind:
    PW_BCE_LOGITS = 0
    PW_BCE = 1
    PW_KL_DIV = 2
    PW_KL_DIV_LOG_TARGET = 3

BCE_WITH_LOGITS = PW_BCE_LOGITS
BCE = PW_BCE
KL_DIV = PW_KL_DIV
KL_DIV_LOG_TARGET = PW_KL_DIV_LOG_TARGET

cdef enum:
    PW_N_OPS = 6      # operand slots, see above
    PW_N_IN = 4       # slots 0..3 are inputs, 4..5 outputs
    PW_TASK = 8192    # elements per task (one float64 partial sum each)
    PW_CHUNK = 1024   # elements per call of a C piece function (scratch per operand)

POINTWISE_TASK = PW_TASK


cdef inline double _pw_piece(int kind, Py_ssize_t n, real **p, real scale,
                             Py_ssize_t *bad_p, Py_ssize_t *bad_y) noexcept nogil:
    """The C function of `kind` on one contiguous piece (p[k] NULL when absent)."""
    bad_p[0] = -1
    bad_y[0] = -1
    if real is float:
        if kind == PW_BCE_LOGITS:
            return bce_logits_f32(n, p[0], p[1], p[2], p[3], p[4], p[5], scale)
        elif kind == PW_BCE:
            return bce_f32(n, p[0], p[1], p[2], p[4], bad_p, bad_y)
        else:
            return kl_div_f32(n, p[0], p[1], p[4], kind == PW_KL_DIV_LOG_TARGET)
    else:
        if kind == PW_BCE_LOGITS:
            return bce_logits_f64(n, p[0], p[1], p[2], p[3], p[4], p[5], scale)
        elif kind == PW_BCE:
            return bce_f64(n, p[0], p[1], p[2], p[4], bad_p, bad_y)
        else:
            return kl_div_f64(n, p[0], p[1], p[4], kind == PW_KL_DIV_LOG_TARGET)


# One pointwise call (see the contract above): operand k at base[k] (NULL when
# absent; slot 0 holds uint16 bits when `half`), with element strides
# strides[k*ndim : (k+1)*ndim] over `shape`.
cdef struct _PwJob:
    int kind, half
    void *base[PW_N_OPS]
    Py_ssize_t ndim, numel
    const Py_ssize_t *shape
    const Py_ssize_t *strides
    double scale
    double *partials        # one per task
    Py_ssize_t *bad         # two per task


cdef void _pw_task(const _PwJob *pw, Py_ssize_t task, real *scratch) noexcept nogil:
    """Elements [task*PW_TASK, min(numel, (task+1)*PW_TASK)) in C order.

    The range is walked in pieces that never cross a row (the last, coalesced
    dimension) and hold at most PW_CHUNK elements; strided operands go through
    scratch (PW_N_OPS slices of PW_CHUNK values).
    """
    cdef int kind = pw.kind, half = pw.half
    cdef Py_ssize_t ndim = pw.ndim, numel = pw.numel
    cdef const Py_ssize_t *shape = pw.shape
    cdef const Py_ssize_t *strides = pw.strides
    cdef real scale = <real> pw.scale
    cdef real *base[PW_N_OPS]
    cdef const uint16_u *xh = <const uint16_u *> pw.base[0] if half else NULL
    cdef Py_ssize_t e = task * PW_TASK
    cdef Py_ssize_t end = min(e + PW_TASK, numel)
    cdef Py_ssize_t L = shape[ndim - 1]
    cdef Py_ssize_t row, j, n, k, d, r, idx, s, bp, by
    cdef Py_ssize_t first_p = -1, first_y = -1
    cdef Py_ssize_t off[PW_N_OPS]
    cdef real *p[PW_N_OPS]
    cdef double total = 0
    for k in range(PW_N_OPS):
        base[k] = <real *> pw.base[k]
    while e < end:
        row = e // L
        j = e - row * L
        n = min(L - j, end - e, <Py_ssize_t> PW_CHUNK)
        # Offsets of element (row, j): row unravelled over the outer dimensions.
        for k in range(PW_N_OPS):
            off[k] = j * strides[k * ndim + ndim - 1]
        r = row
        d = ndim - 2
        while d >= 0:
            idx = r % shape[d]
            r = r // shape[d]
            for k in range(PW_N_OPS):
                off[k] += idx * strides[k * ndim + d]
            d -= 1
        # Inputs: used in place when unit-stride, else gathered (stride 0 fills).
        for k in range(PW_N_OPS):
            s = strides[k * ndim + ndim - 1]
            if k == 0 and half:
                if real is float:
                    load_half_row(xh + off[0], n, s, half == 2, scratch)
                p[0] = scratch
            elif base[k] == NULL:
                p[k] = NULL
            elif s == 1:
                p[k] = base[k] + off[k]
            elif k < PW_N_IN:
                _gather(base[k] + off[k], n, s, scratch + k * PW_CHUNK)
                p[k] = scratch + k * PW_CHUNK
            else:
                p[k] = scratch + k * PW_CHUNK
        total += _pw_piece(kind, n, p, scale, &bp, &by)
        if bp >= 0 and first_p < 0:
            first_p = e + bp
        if by >= 0 and first_y < 0:
            first_y = e + by
        # Strided outputs: scattered from scratch.
        for k in range(PW_N_IN, PW_N_OPS):
            s = strides[k * ndim + ndim - 1]
            if base[k] != NULL and s != 1:
                _scatter(scratch + k * PW_CHUNK, n, base[k] + off[k], s)
        e += n
    pw.partials[task] = total
    pw.bad[2 * task] = first_p
    pw.bad[2 * task + 1] = first_y


cdef void _pw_run(const _PwJob *pw, real *scratch, int n_threads) noexcept nogil:
    """Every task of the job; scratch: PW_N_OPS * PW_CHUNK reals per thread."""
    cdef Py_ssize_t n_tasks = (pw.numel + PW_TASK - 1) // PW_TASK
    cdef Py_ssize_t t
    for t in prange(n_tasks, schedule="static", num_threads=n_threads):
        _pw_task(pw, t, scratch + omp_get_thread_num() * (PW_N_OPS * PW_CHUNK))


def pointwise(*, int kind, tuple operands not None, shape, strides, int half, double scale,
              cnp.ndarray partials not None, cnp.ndarray bad not None, int n_threads):
    """Run a pointwise loss over prepared operands (see the contract above).

    Parameters
    ----------
    kind : {BCE_WITH_LOGITS, BCE, KL_DIV, KL_DIV_LOG_TARGET}
    operands : tuple of 6 (ndarray or None)
        Slots input, target, weight, pos_weight, loss, grad.
    shape : sequence of int, length ndim >= 1
        The coalesced shape; its product is the number of elements.
    strides : sequence of 6 sequences of ndim ints
        Element strides of each operand over `shape` (anything for absent slots).
    half : int
        0: slot 0 has the computation dtype; 1 / 2: slot 0 is a uint16 view of
        float16 / bfloat16 and the computation dtype is float32.
    scale : float
        Gradient factor (BCE with logits).
    partials : float64 ndarray, C-contiguous, length ceil(numel / POINTWISE_TASK)
    bad : int64 (intp) ndarray, C-contiguous, shape (len(partials), 2)
    n_threads : int
    """
    cdef Py_ssize_t ndim = len(shape)
    cdef Py_ssize_t k, d, numel = 1, n_tasks
    cdef Py_ssize_t shp[64]
    cdef Py_ssize_t strd[PW_N_OPS * 64]
    cdef _PwJob pw
    cdef int typenum = -1, t
    cdef cnp.ndarray a
    if len(operands) != PW_N_OPS or ndim < 1 or ndim > 64 or len(strides) != PW_N_OPS:
        raise ValueError("xent._kernels.pointwise: internal contract violated (operands/shape)")
    for d in range(ndim):
        shp[d] = shape[d]
        if shp[d] < 0:
            raise ValueError("xent._kernels.pointwise: internal contract violated (shape)")
        numel *= shp[d]
    for k in range(PW_N_OPS):
        row = strides[k]
        for d in range(ndim):
            strd[k * ndim + d] = row[d] if operands[k] is not None else 0
    for k in range(PW_N_OPS):
        if operands[k] is None:
            pw.base[k] = NULL
            continue
        a = operands[k]
        t = cnp.PyArray_TYPE(a)
        if k == 0 and half:
            if t != cnp.NPY_UINT16:
                raise TypeError("xent._kernels.pointwise: internal contract violated (half)")
        elif typenum < 0:
            typenum = t
        elif t != typenum:
            raise TypeError("xent._kernels.pointwise: internal contract violated (dtypes)")
        if k >= PW_N_IN and not cnp.PyArray_ISWRITEABLE(a):
            raise ValueError("xent._kernels.pointwise: internal contract violated (read-only out)")
        pw.base[k] = cnp.PyArray_BYTES(a)
    if half:
        typenum = cnp.NPY_FLOAT32 if typenum < 0 else typenum
        if typenum != cnp.NPY_FLOAT32:
            raise TypeError("xent._kernels.pointwise: internal contract violated (half dtype)")
    if typenum not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64) or operands[0] is None or operands[1] is None:
        raise TypeError("xent._kernels.pointwise: internal contract violated (dtype)")
    n_tasks = (numel + PW_TASK - 1) // PW_TASK
    if (cnp.PyArray_TYPE(partials) != cnp.NPY_FLOAT64 or partials.shape[0] != n_tasks
            or not cnp.PyArray_IS_C_CONTIGUOUS(partials) or partials.ndim != 1
            or cnp.PyArray_TYPE(bad) != cnp.NPY_INTP or bad.ndim != 2 or bad.shape[0] != n_tasks
            or bad.shape[1] != 2 or not cnp.PyArray_IS_C_CONTIGUOUS(bad)):
        raise ValueError("xent._kernels.pointwise: internal contract violated (partials/bad)")
    if numel == 0:
        return
    n_threads = <int> max(1, min(<Py_ssize_t> n_threads, n_tasks))
    cdef Py_ssize_t itemsize = 4 if typenum == cnp.NPY_FLOAT32 else 8
    cdef void *scratch = _alloc_scratch(n_threads * PW_N_OPS * PW_CHUNK * itemsize)
    pw.kind, pw.half, pw.ndim, pw.numel = kind, half, ndim, numel
    pw.shape, pw.strides, pw.scale = shp, strd, scale
    pw.partials = <double *> cnp.PyArray_BYTES(partials)
    pw.bad = <Py_ssize_t *> cnp.PyArray_BYTES(bad)
    try:
        with nogil:
            if typenum == cnp.NPY_FLOAT32:
                _pw_run(&pw, <float_u *> scratch, n_threads)
            else:
                _pw_run(&pw, <double_u *> scratch, n_threads)
    finally:
        free(scratch)
