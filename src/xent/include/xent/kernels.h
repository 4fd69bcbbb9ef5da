/*
 * The one header the kernels include (_kernels.pyx, and xent_kernels.h for
 * `cimport xent` users): the selector, then the portable code instantiated
 * for float32 and float64 over the functions it selected.
 *
 *   common.h      types, macros, enums, chunk sizes
 *   select.h      the only test of the instruction set; maps generic names
 *   portable/     the algorithms in portable C, and the portable twin of every
 *                 hand-written function
 *   x86_64_v3/    AVX2+FMA+F16C hand-written loops
 *   x86_64_v4/    AVX-512 hand-written loops
 *
 * The per-type templates are included with XENT_T (the element type) and
 * XENT_FN(name) (the name with its _f32 / _f64 suffix) defined, by
 * type/f32.h and type/f64.h, which type/end.h undoes.  The order is the one
 * the functions build on each other in.
 */
#ifndef XENT_KERNELS_INTERNAL_H
#define XENT_KERNELS_INTERNAL_H

#include "select.h"

#include "type/f32.h"
#include "portable/rows.h"
#include "type/end.h"
#include "type/f64.h"
#include "portable/rows.h"
#include "type/end.h"

#include "type/f32.h"
#include "portable/losses.h"
#include "portable/pointwise.h"
#include "portable/evaluate.h"
#include "type/end.h"
#include "type/f64.h"
#include "portable/losses.h"
#include "portable/pointwise.h"
#include "portable/evaluate.h"
#include "type/end.h"

#include "portable/half_rows.h"
#include "portable/storage.h"
#include "portable/indices.h"

#include "type/f32.h"
#include "portable/tiles.h"
#include "type/end.h"
#include "type/f64.h"
#include "portable/tiles.h"
#include "type/end.h"

#endif /* XENT_KERNELS_INTERNAL_H */
