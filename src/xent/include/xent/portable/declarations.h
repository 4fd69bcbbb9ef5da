/*
 * The portable functions that hand-written code calls for the cases it leaves
 * to them (a vector with a non-finite logit, a group read in place).  Declared
 * here because the hand-written headers come before the per-type templates
 * that define them (kernels.h instantiates those after select.h); the compiler
 * checks each declaration against its definition.
 */
#ifndef XENT_PORTABLE_DECLARATIONS_H
#define XENT_PORTABLE_DECLARATIONS_H

#include "../common.h"

/* portable/pointwise.h, XENT_T = float */
XENT_INLINE double xent_bce_logits_body_f32(ptrdiff_t n, const xent_f32u *x, const xent_f32u *y,
                                            const xent_f32u *w, const xent_f32u *pw,
                                            xent_f32u *loss, xent_f32u *grad, xent_f32u scale,
                                            const int has_w, const int has_pw,
                                            const int has_loss, const int has_grad);

/* portable/tiles.h, XENT_T = float */
XENT_INLINE ptrdiff_t xent_group_ce_f32(const xent_f32u *x, ptrdiff_t rs, ptrdiff_t cs,
                                        const ptrdiff_t C, const int32_t *t, const xent_f32u *tx,
                                        double *ce, double *lse);

#endif /* XENT_PORTABLE_DECLARATIONS_H */
