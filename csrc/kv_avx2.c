/* AVX2 + FMA attention over a compact (bf16 / int8) KV cache; compiled with
 * -mavx2 -mfma, only called when the CPU has them.
 *
 * Rows are widened to fp32 in registers (bf16: a 16-bit shift, exact; int8:
 * an exact int -> float conversion), so the cache is streamed once per task
 * at 1/2 or 1/4 of the fp32 bytes. At those byte counts the arithmetic, not
 * memory, is the limit. Two bodies, chosen by shape (vx_kv.c), never by M:
 *  - one position per task (GQA groups of 4 or more: the decoder): both
 *    phases register-blocked over the group's query heads;
 *    - scores: 2 rows x up to 4 query heads per pass (8 accumulators; each
 *      q load serves 2 rows, each K load 4 heads), reduced together by one
 *      hadd tree;
 *    - output: per block of rows, 16 output lanes x 4 heads stay in
 *      registers across the block (no load/store of the output per row);
 *  - several positions per task, sharing every row read (smaller groups:
 *    the encoder's 4-position live push): the fp32 cache's body,
 *    attn_mq_avx2.h.
 * INT8 folds each row's scale into its score and into its softmax weight. */
#if defined(__x86_64__) || defined(_M_X64)
#include "attn_mq_avx2.h"

/* Scores of R rows (R <= 2; row r at element off + r*stride) x G query heads
 * (q, D apart): s[g*lds + r] = mul[r] * q_g . k_r */
VX_INLINE void dot_rows(int kind, int R, int G, const float *q, const void *k, int64_t off, int64_t stride, int64_t D,
                        const float *mul, float *s, int64_t lds) {
    __m256 acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d += 8) {
        __m256 kr[2];
        for (int r = 0; r < R; r++) kr[r] = mq_load(kind, k, off + r * stride + d);
        for (int g = 0; g < G; g++) {
            const __m256 qv = _mm256_loadu_ps(q + g * D + d);
            for (int r = 0; r < R; r++) acc[r * 4 + g] = _mm256_fmadd_ps(qv, kr[r], acc[r * 4 + g]);
        }
    }
    float t[8];
    _mm256_storeu_ps(t, hsum8x8(acc));
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++) s[g * lds + r] = mul[r] * t[r * 4 + g];
}

VX_INLINE void prefetch_bytes(const void *p, int64_t bytes) {
    for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch((const char *)p + b, _MM_HINT_T0);
}

#define KV_PREFETCH_ROWS 8 /* K rows ahead: a few hundred ns of work */
#define KV_V_BLOCK 64      /* rows whose V stays in L1 while every head/lane chunk passes over them */

/* o_g[d0 .. d0 + 8*NC) += sum_j w_g[j] * v_j over rows j < nb (row j at
 * element off + j*stride), G heads; w_g at w + g*ldw. */
VX_INLINE void axpy_rows(int kind, int NC, int G, const float *w, int64_t ldw, const void *v, int64_t off,
                         int64_t stride, int64_t nb, int64_t ahead, int64_t D, float *o) {
    __m256 acc[4][2];
    for (int g = 0; g < G; g++)
        for (int c = 0; c < NC; c++) acc[g][c] = _mm256_setzero_ps();
    for (int64_t j = 0; j < nb; j++) {
        if (j < ahead) /* the same lanes of the next block's row j */
            prefetch_bytes((const char *)v + (off + (j + KV_V_BLOCK) * stride) * (kind == VX_KV_BF16 ? 2 : 1),
                           8 * NC * (kind == VX_KV_BF16 ? 2 : 1));
        __m256 vv[2];
        for (int c = 0; c < NC; c++) vv[c] = mq_load(kind, v, off + j * stride + 8 * c);
        for (int g = 0; g < G; g++) {
            const __m256 p = _mm256_broadcast_ss(w + g * ldw + j);
            for (int c = 0; c < NC; c++) acc[g][c] = _mm256_fmadd_ps(p, vv[c], acc[g][c]);
        }
    }
    for (int g = 0; g < G; g++)
        for (int c = 0; c < NC; c++)
            _mm256_storeu_ps(o + g * D + 8 * c, _mm256_add_ps(_mm256_loadu_ps(o + g * D + 8 * c), acc[g][c]));
}


#define G_CASES(EXPR)    \
    switch (G) {         \
    case 1: {            \
        enum { G_ = 1 }; \
        EXPR;            \
    } break;             \
    case 2: {            \
        enum { G_ = 2 }; \
        EXPR;            \
    } break;             \
    case 3: {            \
        enum { G_ = 3 }; \
        EXPR;            \
    } break;             \
    default: {           \
        enum { G_ = 4 }; \
        EXPR;            \
    } break;             \
    }

VX_INLINE void attn_kind(int kind, const float *qg, int64_t nkv, int64_t group, const void *k, const void *v,
                         const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t n, int64_t D,
                         float scale, float *scores, float *og) {
    const int64_t esize = kind == VX_KV_BF16 ? 2 : 1, seg = nkv * D * esize, heads = nkv * group;
    /* scores[(h*group + g)*n + j] */
    for (int64_t j = 0; j < n; j += 2) {
        const int R = (n - j) >= 2 ? 2 : 1;
        for (int64_t r = j + KV_PREFETCH_ROWS; r < j + KV_PREFETCH_ROWS + 2 && r < n; r++)
            prefetch_bytes((const char *)k + r * stride * esize, seg);
        for (int64_t h = 0; h < nkv; h++) {
            float mul[2];
            for (int r = 0; r < R; r++) mul[r] = kind == VX_KV_INT8 ? scale * ks[(j + r) * sstride + h] : scale;
            for (int64_t g0 = 0; g0 < group; g0 += 4) {
                const int G = (int)((group - g0) < 4 ? (group - g0) : 4);
                const int64_t qh = h * group + g0;
                const float *q = qg + qh * D;
                float *s = scores + qh * n + j;
                const int64_t off = j * stride + h * D;
                if (R == 2) {
                    G_CASES(dot_rows(kind, 2, G_, q, k, off, stride, D, mul, s, n))
                } else {
                    G_CASES(dot_rows(kind, 1, G_, q, k, off, stride, D, mul, s, n))
                }
            }
        }
    }
    softmax_rows(scores, heads, n);
    if (kind == VX_KV_INT8) /* fold V's row scales into the weights */
        for (int64_t h = 0; h < nkv; h++)
            for (int64_t g = 0; g < group; g++) {
                float *w = scores + (h * group + g) * n;
                for (int64_t j = 0; j < n; j++) w[j] *= vs[j * sstride + h];
            }
    memset(og, 0, (size_t)(heads * D) * sizeof(float));
    for (int64_t j0 = 0; j0 < n; j0 += KV_V_BLOCK) {
        const int64_t nb = (n - j0) < KV_V_BLOCK ? (n - j0) : KV_V_BLOCK;
        const int64_t ahead = (n - j0 - nb) < KV_V_BLOCK ? (n - j0 - nb) : KV_V_BLOCK; /* rows of the next block */
        if (j0 == 0) /* later blocks were prefetched while the previous one ran */
            for (int64_t j = 0; j < nb; j++) prefetch_bytes((const char *)v + j * stride * esize, seg);
        for (int64_t h = 0; h < nkv; h++) {
            for (int64_t g0 = 0; g0 < group; g0 += 4) {
                const int G = (int)((group - g0) < 4 ? (group - g0) : 4);
                const int64_t qh = h * group + g0;
                const float *w = scores + qh * n + j0;
                for (int64_t d = 0; d < D; d += 16) {
                    const int64_t off = j0 * stride + h * D + d;
                    float *o = og + qh * D + d;
                    if (D - d >= 16) {
                        G_CASES(axpy_rows(kind, 2, G_, w, n, v, off, stride, nb, ahead, D, o))
                    } else {
                        G_CASES(axpy_rows(kind, 1, G_, w, n, v, off, stride, nb, ahead, D, o))
                    }
                }
            }
        }
    }
}

int vx_attn_kv_avx2(int kind, const float *qg, int64_t nkv, int64_t group, const void *k, const void *v,
                    const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t n, int64_t D,
                    float scale, float *scores, float *og) {
    if (D % 8 || n <= 0) return 0;
    if (kind == VX_KV_BF16)
        attn_kind(VX_KV_BF16, qg, nkv, group, k, v, ks, vs, stride, sstride, n, D, scale, scores, og);
    else attn_kind(VX_KV_INT8, qg, nkv, group, k, v, ks, vs, stride, sstride, n, D, scale, scores, og);
    return 1;
}
int vx_attn_kv_mq_avx2(int kind, int64_t nq, const float *q, int64_t qstride, const int64_t *lo, const int64_t *n,
                       int64_t nkv, int64_t group, const void *k, const void *v, const float *ks, const float *vs,
                       int64_t stride, int64_t sstride, int64_t nu, int64_t D, float scale, float *scores, float *o,
                       int64_t ostride) {
    return attn_mq_compact(kind, nq, q, qstride, lo, n, nkv, group, k, v, ks, vs, stride, sstride, nu, D, scale, scores,
                           o, ostride);
}

const vx_kv_kernels vx_kv_avx2 = {"avx2", vx_attn_kv_avx2, vx_attn_kv_mq_avx2};
#endif
