/* Instantiate the per-type templates that follow for float64 (see kernels.h). */
#define XENT_T xent_f64u
#define XENT_FN(name) xent_##name##_f64
