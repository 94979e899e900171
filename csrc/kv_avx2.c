/* AVX2 + FMA attention over a compact (bf16 / int8) KV cache; compiled with
 * -mavx2 -mfma, only called when the CPU has them: the 8-lane mapping
 * (attn_mq_avx2.h) of both attention bodies.
 *
 * Rows are widened to fp32 in registers (bf16: a 16-bit shift, exact; int8:
 * an exact int -> float conversion), so the cache is streamed once per task
 * at 1/2 or 1/4 of the fp32 bytes. At those byte counts the arithmetic, not
 * memory, is the limit. Two bodies, chosen by shape (vx_kv.c), never by M:
 *  - one position per task (GQA groups of 4 or more: the decoder),
 *    attn_one_body.h: scores 2 rows x up to 4 query heads per pass, output
 *    16 lanes x 4 heads per block of rows;
 *  - several positions per task, sharing every row read (smaller groups:
 *    the encoder's 4-position live push), attn_mq_body.h. */
#if defined(__x86_64__) || defined(_M_X64)
#include "attn_mq_avx2.h"

#define mq_add _mm256_add_ps
#define MQ_ONE_PREFETCH 8 /* K rows ahead: a few hundred ns of work */
#define mq_softmax softmax_rows
#include "attn_one_body.h"

int vx_attn_kv_avx2(int kind, const float *qg, int64_t nkv, int64_t group, const void *k, const void *v,
                    const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t n, int64_t D,
                    float scale, float *scores, float *og) {
    if (D % 8 || n <= 0) return 0;
    attn_one_compact(kind, qg, nkv, group, k, v, ks, vs, stride, sstride, n, D, scale, scores, og);
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
