/* AVX2 + FMA + F16C path (this file alone is compiled with those flags; the
 * core picks it at run time after a cpuid check).  float64 uses the scalar
 * template, which the compiler vectorizes as far as exactness allows. */
#include <immintrin.h>
#include "internal.h"
#include "act_avx2.h"

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

/* per dtype computed in float: 8 values -> __m256 (LD8), __m256 -> 8 values
 * (ST8), 16 values with plain and streaming stores (ST16, ST16NT); MASKED:
 * whether the tail is read with masked float loads */
#define GN_AVX2_LD8_f32(p) _mm256_loadu_ps(p)
#define GN_AVX2_ST8_f32(p, v) _mm256_storeu_ps((p), (v))
#define GN_AVX2_ST16_f32(p, a, b) (_mm256_storeu_ps((p), (a)), _mm256_storeu_ps((p) + 8, (b)))
#define GN_AVX2_ST16NT_f32(p, a, b) (_mm256_stream_ps((p), (a)), _mm256_stream_ps((p) + 8, (b)))
#define GN_AVX2_MASKED_f32 1

#define F16X16(a, b)                                                                  \
    _mm256_set_m128i(_mm256_cvtps_ph((b), _MM_FROUND_TO_NEAREST_INT),                 \
                     _mm256_cvtps_ph((a), _MM_FROUND_TO_NEAREST_INT))
#define GN_AVX2_LD8_f16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define GN_AVX2_ST8_f16(p, v) \
    _mm_storeu_si128((__m128i *)(p), _mm256_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT))
#define GN_AVX2_ST16_f16(p, a, b) _mm256_storeu_si256((__m256i *)(p), F16X16(a, b))
#define GN_AVX2_ST16NT_f16(p, a, b) _mm256_stream_si256((__m256i *)(p), F16X16(a, b))
#define GN_AVX2_MASKED_f16 0

#define GN_AVX2_LD8_bf16 ld8_bf16
#define GN_AVX2_ST8_bf16 st8_bf16
#define GN_AVX2_ST16_bf16 st16_bf16
#define GN_AVX2_ST16NT_bf16 st16nt_bf16
#define GN_AVX2_MASKED_bf16 0

/* dtypes computed in float get the AVX2 primitives, float64 the scalar
 * template (prims_avx2.inc picks) */
#define GN_TEMPLATE "prims_avx2.inc"
#include "each_dtype.inc"

const gn_kernels gn_kernels_avx2 = {"avx2", GN_FOR_EACH_DTYPE(GN_PRIMS_INIT)};
