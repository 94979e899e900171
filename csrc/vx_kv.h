/* Compact decoder KV cache: rows stored as bf16 or int8 (+ one fp32 scale per
 * row and KV head) and attention kernels that read them directly.
 *
 * Public entry points (called from the Cython layer, which validates every
 * pointer and size) plus the internal per-ISA kernel table (one file each:
 * kv_avx2.c, kv_avx512.c, kv_neon.c; the scalar reference lives in vx_kv.c).
 */
#ifndef VX_KV_H
#define VX_KV_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Storage kinds of a compact cache row. */
enum { VX_KV_BF16 = 1, VX_KV_INT8 = 2 };

/* Convert rows src[rows, H, D] (fp32) into dst (bf16 bits as uint16, or int8)
 * with the same layout. BF16: round to nearest even. INT8: per (row, head)
 * scale = amax / 127 written to scales[rows, H], q = rint(x / scale) (a NaN
 * value: 0; a row with an inf or NaN amax, or all zeros: zeros). */
const char *vx_kv_kernels_name(void); /* which compact-KV attention kernel the active ISA uses */
int vx_kv_store(int kind, const float *src, void *dst, float *scales, int64_t rows, int64_t H, int64_t D);

/* vx_attention over a compact cache k/v[T, Hkv, D] of `kind`; for INT8 the
 * per-row scales k_scales/v_scales[T, Hkv] (NULL for BF16). */
int vx_attention_kv(int kind, const float *q, const void *k, const void *v, const float *k_scales,
                    const float *v_scales, float *out, int64_t M, int64_t Hq, int64_t T, int64_t Hkv, int64_t D,
                    int64_t q_pos0, int64_t k_pos0, int64_t window, float scale);

/* ---- internal ---- */

/* One task: one query position x nkv consecutive KV heads (each with `group`
 * query heads, D apart in qg/og) over n rows. Row j of head h is at element
 * j*stride + h*D of k/v; its INT8 scale at j*sstride + h of ks/vs.
 * scores: nkv*group*n floats of scratch. Writes og; returns 0 when it does not
 * handle the shape (the scalar reference runs instead). */
typedef int (*vx_attn_kv_fn)(int kind, const float *qg, int64_t nkv, int64_t group, const void *k, const void *v,
                             const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t n, int64_t D,
                             float scale, float *scores, float *og);

int vx_attn_kv_scalar(int kind, const float *qg, int64_t nkv, int64_t group, const void *k, const void *v,
                      const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t n, int64_t D,
                      float scale, float *scores, float *og);
/* The same over a task of nq <= VX_ATTN_MQ query positions that share
 * every row read: query i's heads at q + i*qstride (output o + i*ostride),
 * its rows [lo[i], lo[i] + n[i]) of the nu rows at k/v (n[i] = 0: zeros);
 * scores: nq*nkv*group*nu floats. An output does not depend on the other
 * positions of the task. */
typedef int (*vx_attn_kv_mq_fn)(int kind, int64_t nq, const float *q, int64_t qstride, const int64_t *lo,
                                const int64_t *n, int64_t nkv, int64_t group, const void *k, const void *v,
                                const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t nu,
                                int64_t D, float scale, float *scores, float *o, int64_t ostride);
/* A level's compact-cache attention kernels: one query position per task
 * (`one`), and where the level has it, several positions per task sharing
 * every row read (`mq`, NULL: none). Which one runs depends on the shape
 * only (vx_kv.c), so an output never depends on M. */
/* rows x D fp32 -> int8 + one scale per row, vx_kv_store's INT8 rule bit
 * for bit; returns 0 when it does not handle D (the scalar store runs). */
typedef int (*vx_kv_store_int8_fn)(const float *x, int8_t *q, float *scales, int64_t rows, int64_t D);

typedef struct vx_kv_kernels {
    const char *name;
    vx_attn_kv_fn one;
    vx_attn_kv_mq_fn mq;
    vx_kv_store_int8_fn store_int8; /* NULL: the scalar store */
} vx_kv_kernels;
extern const vx_kv_kernels vx_kv_scalar;

#if defined(__x86_64__) || defined(_M_X64)
extern const vx_kv_kernels vx_kv_avx2;
int vx_kv_store_int8_avx2(const float *x, int8_t *q, float *scales, int64_t rows, int64_t D);
int vx_attn_kv_avx2(int kind, const float *qg, int64_t nkv, int64_t group, const void *k, const void *v,
                    const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t n, int64_t D,
                    float scale, float *scores, float *og);
int vx_attn_kv_mq_avx2(int kind, int64_t nq, const float *q, int64_t qstride, const int64_t *lo, const int64_t *n,
                       int64_t nkv, int64_t group, const void *k, const void *v, const float *ks, const float *vs,
                       int64_t stride, int64_t sstride, int64_t nu, int64_t D, float scale, float *scores, float *o,
                       int64_t ostride);
#if defined(VX_HAVE_AVX512)
extern const vx_kv_kernels vx_kv_avx512;
int vx_attn_kv_avx512(int kind, const float *qg, int64_t nkv, int64_t group, const void *k, const void *v,
                      const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t n, int64_t D,
                      float scale, float *scores, float *og);
int vx_attn_kv_mq_avx512(int kind, int64_t nq, const float *q, int64_t qstride, const int64_t *lo, const int64_t *n,
                         int64_t nkv, int64_t group, const void *k, const void *v, const float *ks, const float *vs,
                         int64_t stride, int64_t sstride, int64_t nu, int64_t D, float scale, float *scores, float *o,
                         int64_t ostride);
#endif
#endif
#if defined(__aarch64__)
extern const vx_kv_kernels vx_kv_neon;
int vx_attn_kv_neon(int kind, const float *qg, int64_t nkv, int64_t group, const void *k, const void *v,
                    const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t n, int64_t D,
                    float scale, float *scores, float *og);
#endif

#ifdef __cplusplus
}
#endif
#endif
