/* The dtypes of the C core: the one list that every per-dtype declaration,
 * kernel table and template instantiation comes from.
 *
 * One line per dtype: X(suffix, storage type, compute type, bits of the
 * compute type, load, store).  The compute type also holds mean and rstd;
 * load reads one stored value as the compute type, store writes one
 * compute-type value, rounded to nearest even.
 *
 * Adding a dtype: a line here, its line in each_dtype.inc, its conversion
 * helpers (internal.h), its AVX2 loads and stores (simd_avx2.c), its
 * functions in include/gn_native.h and capi.pxd, and its line in
 * gn_native/_dtypes.py (the Python list; the Cython wrapper's kernel table,
 * kernel_table.h, is built from this one).  tests/test_dtypes.py checks that
 * they agree. */
#ifndef GN_DTYPES_H
#define GN_DTYPES_H

#define GN_DTYPE_f32(X)  X(f32,  float,    float,  32, GN_LD_PLAIN, GN_ST_PLAIN)
#define GN_DTYPE_f64(X)  X(f64,  double,   double, 64, GN_LD_PLAIN, GN_ST_PLAIN)
#define GN_DTYPE_f16(X)  X(f16,  uint16_t, float,  32, GN_LD_F16,   GN_ST_F16)
#define GN_DTYPE_bf16(X) X(bf16, uint16_t, float,  32, GN_LD_BF16,  GN_ST_BF16)

#define GN_FOR_EACH_DTYPE(X) GN_DTYPE_f32(X) GN_DTYPE_f64(X) GN_DTYPE_f16(X) GN_DTYPE_bf16(X)

#define GN_LD_PLAIN(p) (*(p))
#define GN_ST_PLAIN(p, v) (*(p) = (v))
#define GN_LD_F16(p) gn_f16_to_f32(*(p))
#define GN_ST_F16(p, v) (*(p) = gn_f32_to_f16(v))
#define GN_LD_BF16(p) gn_bf16_to_f32(*(p))
#define GN_ST_BF16(p, v) (*(p) = gn_f32_to_bf16(v))

#define GN_PASTE_(a, b) a##b
#define GN_PASTE(a, b) GN_PASTE_(a, b)

/* one column of a dtype's line */
#define GN_DT_SFX(s, t, f, b, ld, st) s
#define GN_DT_T(s, t, f, b, ld, st) t
#define GN_DT_F(s, t, f, b, ld, st) f
#define GN_DT_FBITS(s, t, f, b, ld, st) b
#define GN_DT_LD(s, t, f, b, ld, st) ld
#define GN_DT_ST(s, t, f, b, ld, st) st

#endif /* GN_DTYPES_H */
