/* The scalar reference path: the primitives of prims_scalar.inc for every dtype. */
#include "internal.h"

#define LD_PLAIN(p) (*(p))
#define ST_PLAIN(p, v) (*(p) = (v))
#define LD_F16(p) gn_f16_to_f32(*(p))
#define ST_F16(p, v) (*(p) = gn_f32_to_f16(v))
#define LD_BF16(p) gn_bf16_to_f32(*(p))
#define ST_BF16(p, v) (*(p) = gn_f32_to_bf16(v))

#define SFX f32
#define T float
#define F float
#define LD LD_PLAIN
#define ST ST_PLAIN
#include "prims_scalar.inc"
#undef SFX
#undef T
#undef F
#undef LD
#undef ST

#define SFX f64
#define T double
#define F double
#define LD LD_PLAIN
#define ST ST_PLAIN
#include "prims_scalar.inc"
#undef SFX
#undef T
#undef F
#undef LD
#undef ST

#define SFX f16
#define T uint16_t
#define F float
#define LD LD_F16
#define ST ST_F16
#include "prims_scalar.inc"
#undef SFX
#undef T
#undef F
#undef LD
#undef ST

#define SFX bf16
#define T uint16_t
#define F float
#define LD LD_BF16
#define ST ST_BF16
#include "prims_scalar.inc"

#define INIT(S) {sums_##S, norm_##S, norm_nt_##S, colsums_##S, norm_rows_##S, \
                 dsums_##S, dnorm_##S, dnorm_nt_##S, dcolsums_##S, dnorm_rows_##S}
const gn_kernels gn_kernels_scalar = {"scalar", INIT(f32), INIT(f64), INIT(f16), INIT(bf16)};
