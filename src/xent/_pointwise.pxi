# Pointwise losses; included by _kernels.pyx.
