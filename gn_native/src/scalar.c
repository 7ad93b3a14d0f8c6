/* The scalar reference path: the primitives of prims_scalar.inc for every dtype. */
#include "internal.h"

#define GN_TEMPLATE "prims_scalar.inc"
#include "each_dtype.inc"

const gn_kernels gn_kernels_scalar = {"scalar", GN_FOR_EACH_DTYPE(GN_PRIMS_INIT)};
