/* Instantiate the per-type templates that follow for float32 (see kernels.h). */
#define XENT_T xent_f32u
#define XENT_FN(name) xent_##name##_f32
