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
#define STP(p, v) (*(p) = (float)(v))
#include "forward.inc"
#undef SFX
#undef T
#undef F
#undef STAT
#undef LDP
#undef STP

#define SFX f64
#define T double
#define F double
#define STAT double
#define LDP(p) (*(p))
#define STP(p, v) (*(p) = (v))
#include "forward.inc"
#undef SFX
#undef T
#undef F
#undef STAT
#undef LDP
#undef STP

#define SFX f16
#define T uint16_t
#define F float
#define STAT float
#define LDP(p) ((double)gn_f16_to_f32(*(p)))
#define STP(p, v) (*(p) = gn_f32_to_f16((float)(v)))
#include "forward.inc"
#undef SFX
#undef T
#undef F
#undef STAT
#undef LDP
#undef STP

#define SFX bf16
#define T uint16_t
#define F float
#define STAT float
#define LDP(p) ((double)gn_bf16_to_f32(*(p)))
#define STP(p, v) (*(p) = gn_f32_to_bf16((float)(v)))
#include "forward.inc"
