/* Backward entry points for every dtype (bodies in backward.inc). */
#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "internal.h"

#define GN_TEMPLATE "backward.inc"
#include "each_dtype.inc"
