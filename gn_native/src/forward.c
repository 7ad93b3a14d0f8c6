/* Forward and normalize entry points for every dtype (bodies in forward.inc). */
#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "internal.h"

#define SFX f32
#define T float
#define F float
#define STAT float
#define LDP(p) ((double)*(p))
#include "forward.inc"
#undef SFX
#undef T
#undef F
#undef STAT
#undef LDP

#define SFX f64
#define T double
#define F double
#define STAT double
#define LDP(p) (*(p))
#include "forward.inc"
#undef SFX
#undef T
#undef F
#undef STAT
#undef LDP

#define SFX f16
#define T uint16_t
#define F float
#define STAT float
#define LDP(p) ((double)gn_f16_to_f32(*(p)))
#include "forward.inc"
#undef SFX
#undef T
#undef F
#undef STAT
#undef LDP

#define SFX bf16
#define T uint16_t
#define F float
#define STAT float
#define LDP(p) ((double)gn_bf16_to_f32(*(p)))
#include "forward.inc"
