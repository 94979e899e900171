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

#include <math.h>
#include <string.h>

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

/* The int8 store (vx_kv.h), 32 values a step: the same bits as the scalar
 * rule. A true division (vdivps is IEEE, as the scalar / is), cvtps2dq rounds
 * to nearest even as rintf does in the default mode, a NaN value gives 0,
 * and the scale is the same fp32 amax / 127 (max is exact in any order; NaN
 * values do not count, as in the scalar loop). */
int vx_kv_store_int8_avx2(const float *x, int8_t *q, float *scales, int64_t rows, int64_t D) {
    if (D % 32) return 0;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t r = 0; r < rows; r++, x += D, q += D) {
        __m256 m8 = _mm256_setzero_ps();
        for (int64_t d = 0; d < D; d += 8) /* a NaN |x| is the first operand: max returns amax */
            m8 = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + d)), m8);
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        const float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1)));
        const float s = amax / 127.0f;
        scales[r] = s;
        if (!(s > 0.0f) || !isfinite(s)) {
            memset(q, 0, (size_t)D);
            continue;
        }
        const __m256 sv = _mm256_set1_ps(s);
        for (int64_t d = 0; d < D; d += 32) {
            __m256i v[4];
            for (int i = 0; i < 4; i++) {
                const __m256 xv = _mm256_loadu_ps(x + d + 8 * i);
                const __m256i n = _mm256_cvtps_epi32(_mm256_div_ps(xv, sv));
                const __m256i ok = _mm256_castps_si256(_mm256_cmp_ps(xv, xv, _CMP_ORD_Q));
                v[i] = _mm256_and_si256(_mm256_min_epi32(_mm256_max_epi32(n, lo), hi), ok);
            }
            const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
            _mm256_storeu_si256((__m256i *)(q + d), _mm256_permutevar8x32_epi32(b, order));
        }
    }
    return 1;
}

const vx_kv_kernels vx_kv_avx2 = {"avx2", vx_attn_kv_avx2, vx_attn_kv_mq_avx2, vx_kv_store_int8_avx2};
#endif
