# Reading a row of any floating storage (float32, float64, float16, bfloat16) as
# contiguous values of the computation type.  Included by _kernels.pyx before the
# kernel families, which all read their floating inputs through _row_in.
#
# The storage kinds (XENT_KIND_*) and load_row_f32/f64 are declared in the
# extern block of _crossentropy.pxi; Cython resolves module-level declarations
# before it reads function bodies, so the order of the includes does not matter
# for them.


cdef inline const real *_row_in(const char *p, Py_ssize_t n, Py_ssize_t stride, int kind,
                                real *scratch) noexcept nogil:
    """Row of n values (stride in bytes, storage `kind`) as contiguous `real`s:
    the row itself when it already is one, else a converted copy in scratch."""
    if real is float:
        if kind == XENT_KIND_F32 and stride == sizeof(float):
            return <const float *> p
        load_row_f32(p, n, stride, kind, scratch)
    else:
        if kind == XENT_KIND_F64 and stride == sizeof(double):
            return <const double *> p
        load_row_f64(p, n, stride, kind, scratch)
    return scratch
