/* Internal: the per-ISA fp32 / bf16 kernels (one file each, like ggml-cpu);
 * each level's table is named in the levels table (vx_levels.h). Each kernel
 * is single-threaded; threading lives in the one driver (vx_tasks.h). */
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
    /* Optional fused attention of nq <= VX_ATTN_MQ query positions x `nkv`
     * consecutive KV heads (each with `group` query heads) over nu rows:
     * head h of row j at k/v + j*stride + h*D. Query i's nkv*group heads are
     * D apart at q + i*qstride (output at o + i*ostride, written whole); it
     * sees rows [lo[i], lo[i] + n[i]) (n[i] = 0: zeros). scores:
     * nq*nkv*group*nu floats of scratch. An output must not depend on the
     * other queries of the task. Returns 0 if it does not handle the case
     * (NULL: never), and the generic dot/axpy path runs instead. */
    int (*attn)(int64_t nq, const float *q, int64_t qstride, const int64_t *lo, const int64_t *n, int64_t nkv,
                int64_t group, const float *k, const float *v, int64_t stride, int64_t nu, int64_t D, float scale,
                float *scores, float *o, int64_t ostride);
} vx_ops;

/* The most query positions per attention task (the fp32 cache's tasks, and
 * the compact caches' where GQA groups are small): they share every K/V row
 * read. */
#define VX_ATTN_MQ 4

/* W rows processed per gemm task; scratch holds their fp32 copy (padded). */
#define VX_GEMM_ROWS 4
static inline int64_t vx_gemm_scratch_floats(int64_t K) { return VX_GEMM_ROWS * (K + 16) + 64; }

extern const vx_ops vx_ops_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const vx_ops vx_ops_avx2;
int vx_attn_avx2(int64_t nq, const float *q, int64_t qstride, const int64_t *lo, const int64_t *n, int64_t nkv,
                 int64_t group, const float *k, const float *v, int64_t stride, int64_t nu, int64_t D, float scale,
                 float *scores, float *o, int64_t ostride);
#if defined(VX_HAVE_AVX512)
extern const vx_ops vx_ops_avx512;
#endif
#endif
#if defined(__aarch64__)
extern const vx_ops vx_ops_neon;
#endif


/* Attention tasks: a group of query positions (up to VX_ATTN_MQ; see
 * vx_attention and vx_attention_kv for how many) x a block of hb consecutive KV heads with their query
 * heads, so each K/V row segment (hb*D contiguous values) is read once for
 * all the heads and positions sharing it; blocks shrink only as far as
 * needed to give every thread work (q_groups: the number of position
 * groups). Results do not depend on hb. */
static inline int64_t vx_attn_head_block(int64_t q_groups, int64_t Hkv, int nthreads) {
    int64_t hb = Hkv;
    while (hb > 1 && q_groups * ((Hkv + hb - 1) / hb) < nthreads) hb = (hb + 1) / 2;
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

/* The rows a task's nq positions q_pos0 .. q_pos0+nq-1 (nq <= VX_ATTN_MQ)
 * see: position i sees rows [*ulo + rel[i], *ulo + rel[i] + n[i]) (n[i] = 0:
 * none) of the T rows starting at k_pos0; the task reads their union,
 * *nu rows from *ulo (0: no position sees a row). */
static inline void vx_attn_task_rows(int64_t nq, int64_t q_pos0, int64_t k_pos0, int64_t window, int64_t T,
                                     int64_t *rel, int64_t *n, int64_t *ulo, int64_t *nu) {
    int64_t lo[VX_ATTN_MQ], hi[VX_ATTN_MQ], u0 = T, u1 = -1;
    for (int64_t i = 0; i < nq; i++) {
        vx_attn_visible(q_pos0 + i, k_pos0, window, T, &lo[i], &hi[i]);
        n[i] = hi[i] < lo[i] ? 0 : hi[i] - lo[i] + 1;
        if (!n[i]) continue;
        u0 = lo[i] < u0 ? lo[i] : u0;
        u1 = hi[i] > u1 ? hi[i] : u1;
    }
    for (int64_t i = 0; i < nq; i++) rel[i] = n[i] ? lo[i] - u0 : 0;
    *ulo = u0;
    *nu = u1 < u0 ? 0 : u1 - u0 + 1;
}


/* One attention task: positions i0 .. i0+nq-1 (nq <= VX_ATTN_MQ) x KV heads
 * kv0 .. kv0+nkv-1. Position i sees rows [ulo + rel[i], ulo + rel[i] + n[i])
 * of the cache (n[i] = 0: none); nu > 0 rows from ulo are their union. q/o:
 * position i0's first query head of the block (positions Hq*D apart). */
typedef struct vx_attn_task {
    int64_t nq, kv0, nkv, ulo, nu;
    const int64_t *rel, *n;
    const float *q;
    float *o;
} vx_attn_task;
/* Writes the task's outputs; scores: per_task*hb*group*T floats. */
typedef void (*vx_attn_task_fn)(const void *ctx, const vx_attn_task *task, float *scores);

/* The threaded driver of both attentions (fp32 and compact caches): tasks of
 * per_task consecutive positions x a block of KV heads (vx_attn_head_block),
 * spread over the threads; positions that see no row get zeros. */
int vx_attn_drive(int64_t M, int64_t Hq, int64_t T, int64_t Hkv, int64_t D, int64_t q_pos0, int64_t k_pos0,
                  int64_t window, int64_t per_task, const float *q, float *out, vx_attn_task_fn fn, const void *ctx);

#endif
