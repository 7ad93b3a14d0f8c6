/* AVX2 + FMA + F16C path (this file alone is compiled with those flags; the
 * core picks it at run time after a cpuid check).  float64 uses the scalar
 * template, which the compiler vectorizes as far as exactness allows. */
#include <immintrin.h>
#include "internal.h"

#define GN_PF_HINT _MM_HINT_T0

static inline __m256 ld8_bf16(const uint16_t *p)
{
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

/* float -> bfloat16 bits (round to nearest even, NaN kept quiet) in the low
 * half of each 32-bit lane */
static inline __m256i round_bf16(__m256 v)
{
    __m256i u = _mm256_castps_si256(v), top = _mm256_srli_epi32(u, 16);
    __m256i odd = _mm256_and_si256(top, _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd)), 16);
    __m256i qn = _mm256_or_si256(top, _mm256_set1_epi32(0x40));
    __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    return _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(qn), nan));
}

static inline __m128i pack8_bf16(__m256 v)
{
    __m256i r = round_bf16(v);
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

/* 16 values: one pack and one lane fix-up for both halves */
static inline __m256i pack16_bf16(__m256 a, __m256 b)
{
    __m256i p = _mm256_packus_epi32(round_bf16(a), round_bf16(b));
    return _mm256_permute4x64_epi64(p, 0xd8);
}

#define st8_bf16(p, v) _mm_storeu_si128((__m128i *)(p), pack8_bf16(v))
#define st16_bf16(p, a, b) _mm256_storeu_si256((__m256i *)(p), pack16_bf16((a), (b)))
#define st16nt_bf16(p, a, b) _mm256_stream_si256((__m256i *)(p), pack16_bf16((a), (b)))

#define LD8_F32(p) _mm256_loadu_ps(p)
#define ST8_F32(p, v) _mm256_storeu_ps((p), (v))
#define LD8_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define ST8_F16(p, v) _mm_storeu_si128((__m128i *)(p), _mm256_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT))
#define ST16_F32(p, a, b) (_mm256_storeu_ps((p), (a)), _mm256_storeu_ps((p) + 8, (b)))
#define ST16NT_F32(p, a, b) (_mm256_stream_ps((p), (a)), _mm256_stream_ps((p) + 8, (b)))
#define F16X16(a, b)                                                                  \
    _mm256_set_m128i(_mm256_cvtps_ph((b), _MM_FROUND_TO_NEAREST_INT),                 \
                     _mm256_cvtps_ph((a), _MM_FROUND_TO_NEAREST_INT))
#define ST16_F16(p, a, b) _mm256_storeu_si256((__m256i *)(p), F16X16(a, b))
#define ST16NT_F16(p, a, b) _mm256_stream_si256((__m256i *)(p), F16X16(a, b))
#define LD_PLAIN(p) (*(p))
#define ST_PLAIN(p, v) (*(p) = (v))

#define SFX f32
#define T float
#define MASKED_F32
#define LD8 LD8_F32
#define ST8 ST8_F32
#define ST16 ST16_F32
#define ST16NT ST16NT_F32
#define LD LD_PLAIN
#define ST ST_PLAIN
#include "prims_avx2.inc"
#undef SFX
#undef T
#undef MASKED_F32
#undef LD8
#undef ST8
#undef ST16
#undef ST16NT
#undef LD
#undef ST

#define SFX f16
#define T uint16_t
#define LD8 LD8_F16
#define ST8 ST8_F16
#define ST16 ST16_F16
#define ST16NT ST16NT_F16
#define LD(p) gn_f16_to_f32(*(p))
#define ST(p, v) (*(p) = gn_f32_to_f16(v))
#include "prims_avx2.inc"
#undef SFX
#undef T
#undef LD8
#undef ST8
#undef ST16
#undef ST16NT
#undef LD
#undef ST

#define SFX bf16
#define T uint16_t
#define LD8 ld8_bf16
#define ST8 st8_bf16
#define ST16 st16_bf16
#define ST16NT st16nt_bf16
#define LD(p) gn_bf16_to_f32(*(p))
#define ST(p, v) (*(p) = gn_f32_to_bf16(v))
#include "prims_avx2.inc"
#undef SFX
#undef T
#undef LD8
#undef ST8
#undef ST16
#undef ST16NT
#undef LD
#undef ST

#define SFX f64
#define T double
#define F double
#define LD LD_PLAIN
#define ST ST_PLAIN
#include "prims_scalar.inc"

#define INIT(S) {sums_##S, norm_##S, norm_nt_##S, colsums_##S, norm_rows_##S, \
                 dsums_##S, dnorm_##S, dnorm_nt_##S, dcolsums_##S, dnorm_rows_##S}
const gn_kernels gn_kernels_avx2 = {"avx2", INIT(f32), INIT(f64), INIT(f16), INIT(bf16)};
