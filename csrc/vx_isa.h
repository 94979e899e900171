/* Internal: the per-ISA kernels (one file each, like ggml-cpu) and the table
 * the dispatcher picks once. Each kernel is single-threaded; threading lives
 * in vx_core.c. */
#ifndef VX_ISA_H
#define VX_ISA_H

#include <stdint.h>

typedef struct vx_ops {
    /* out[m*ldo + n] for m < M, n < N, from rows w + n*K (bf16 bits).
     * Row-deterministic: the result for one row of x does not depend on M,
     * so any chunking of a stream gives bit-identical activations.
     * scratch: at least vx_gemm_scratch_floats(K) floats. */
    void (*gemm_bf16)(const float *x, int64_t M, const uint16_t *w, int64_t N, int64_t K, const float *bias, float *out,
                      int64_t ldo, int accumulate, float *scratch);
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n); /* y += a * x */
    /* Optional fused attention of one query position x `nkv` consecutive KV
     * heads (each with `group` query heads) over n rows: head h of row j at
     * k/v + j*stride + h*D; qg/og hold the nkv*group query heads, D apart;
     * scores: nkv*group*n floats of scratch. Returns 0 if it does not handle
     * the case (NULL: never), and the generic dot/axpy path runs instead. */
    int (*attn)(const float *qg, int64_t nkv, int64_t group, const float *k, const float *v, int64_t stride, int64_t n,
                int64_t D, float scale, float *scores, float *og);
} vx_ops;

/* W rows processed per gemm task; scratch holds their fp32 copy (padded). */
#define VX_GEMM_ROWS 4
static inline int64_t vx_gemm_scratch_floats(int64_t K) { return VX_GEMM_ROWS * (K + 16) + 64; }

extern const vx_ops vx_ops_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const vx_ops vx_ops_avx2;
int vx_attn_avx2(const float *qg, int64_t nkv, int64_t group, const float *k, const float *v, int64_t stride, int64_t n,
                 int64_t D, float scale, float *scores, float *og);
#if defined(VX_HAVE_AVX512)
extern const vx_ops vx_ops_avx512;
#endif
#endif
#if defined(__aarch64__)
extern const vx_ops vx_ops_neon;
#endif

const vx_ops *vx_ops_active(void);

/* Attention tasks (fp32 and compact caches alike): one query position x a
 * block of hb consecutive KV heads with their query heads, so each K/V row
 * segment (hb*D contiguous values) is read once for all the heads sharing
 * it; blocks shrink only as far as needed to give every thread work.
 * Results do not depend on hb. */
static inline int64_t vx_attn_head_block(int64_t M, int64_t Hkv, int nthreads) {
    int64_t hb = Hkv;
    while (hb > 1 && M * ((Hkv + hb - 1) / hb) < nthreads) hb = (hb + 1) / 2;
    return hb;
}

/* Rows [*lo, *hi] of a cache starting at position k_pos0 (T rows) that the
 * query at qpos sees: kpos <= qpos and qpos - kpos < window, one contiguous
 * run (empty when *hi < *lo). */
static inline void vx_attn_visible(int64_t qpos, int64_t k_pos0, int64_t window, int64_t T, int64_t *lo, int64_t *hi) {
    *hi = qpos - k_pos0;
    *lo = qpos - window + 1 - k_pos0;
    if (*hi > T - 1) *hi = T - 1;
    if (*lo < 0) *lo = 0;
}

#endif
