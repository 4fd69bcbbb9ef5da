# The kernels compiled for a wider SIMD level (setup.py picks the -march);
# _dispatch.py chooses among the variants at import.
include "_kernels.pyx"
