/* Forward and normalize entry points for every dtype (bodies in forward.inc). */
#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "internal.h"

#define GN_TEMPLATE "forward.inc"
#include "each_dtype.inc"
