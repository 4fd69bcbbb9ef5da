/* End of a per-type instantiation (see kernels.h). */
#undef XENT_T
#undef XENT_FN
