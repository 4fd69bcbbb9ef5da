/* Forwarding header, kept for one release: xent's public C header moved to
 * include/xent_kernels.h (the directory xent.get_include() returns).  Code built
 * with the package directory itself on its include path keeps compiling. */
#include "include/xent_kernels.h"
