/* AVX-512 (F/BW/DQ/VL) attention over a compact (bf16 / int8) KV cache: the
 * 16-lane mapping of both attention bodies, with twice the AVX2 file's
 * registers: one position per task (attn_one_body.h; scores 4 rows x 4
 * heads per pass, output 64 lanes x 4 heads per block) and several
 * positions per task (attn_mq_body.h: the encoder's push, each row widened
 * once for all of them; 4 rows x 4 query vectors per score pass). Head dims
 * that are not a multiple of 16 go to the AVX2 kernels (the CPU has them
 * whenever it has these). */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(VX_HAVE_AVX512)
#include "simd_avx2.h" /* VX_INLINE, and softmax_rows for the multi-position body */
#include "vx_kv.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

VX_INLINE __m512 ld16(int kind, const void *p, int64_t i) {
    if (kind == VX_KV_BF16) {
        const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    const __m128i b = _mm_loadu_si128((const __m128i *)((const int8_t *)p + i));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}

/* lane i = sum of the lanes of a[i], for 16 vectors at once */
VX_INLINE __m512 hsum16x16(const __m512 *a) {
    __m256 h[16];
    for (int i = 0; i < 16; i++) /* 16 -> 8 lanes each */
        h[i] = _mm256_add_ps(_mm512_castps512_ps256(a[i]),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[i]), 1)));
    __m256 r[2];
    for (int b = 0; b < 2; b++) {
        const __m256 *x = h + 8 * b;
        const __m256 t0 = _mm256_hadd_ps(x[0], x[1]), t1 = _mm256_hadd_ps(x[2], x[3]);
        const __m256 t2 = _mm256_hadd_ps(x[4], x[5]), t3 = _mm256_hadd_ps(x[6], x[7]);
        const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
        r[b] = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
    }
    return _mm512_castpd_ps(
        _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(r[0])), _mm256_castps_pd(r[1]), 1));
}

VX_INLINE __m512 exp16(__m512 x) { /* Cephes-style expf, ~1 ulp on [-87, 88] */
    x = _mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f));
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    __m512 fx = _mm512_roundscale_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
                                     _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(fx), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

VX_INLINE __mmask16 first(int64_t r) { return r >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << r) - 1u); }

static void softmax16(float *s, int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; r++, s += n) {
        __m512 mx16 = _mm512_set1_ps(-INFINITY);
        for (int64_t j = 0; j < n; j += 16) {
            const __mmask16 m = first(n - j);
            mx16 = _mm512_mask_max_ps(mx16, m, mx16, _mm512_maskz_loadu_ps(m, s + j));
        }
        const __m512 m16 = _mm512_set1_ps(_mm512_reduce_max_ps(mx16));
        __m512 sum16 = _mm512_setzero_ps();
        for (int64_t j = 0; j < n; j += 16) {
            const __mmask16 m = first(n - j);
            const __m512 e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), m16)));
            _mm512_mask_storeu_ps(s + j, m, e);
            sum16 = _mm512_add_ps(sum16, e);
        }
        const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum16));
        for (int64_t j = 0; j < n; j += 16) {
            const __mmask16 m = first(n - j);
            _mm512_mask_storeu_ps(s + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + j), inv));
        }
    }
}

/* ---- several positions per task: the 16-lane mapping of attn_mq_body.h ---- */
typedef __m512 mq_vec;
#define MQ_LANES 16
#define MQ_ROWS 4 /* 16 accumulators, reduced by one hsum16x16 */
#define MQ_NC 4
#define mq_zero _mm512_setzero_ps
#define mq_loadu _mm512_loadu_ps
#define mq_storeu _mm512_storeu_ps
#define mq_bcast(p) _mm512_set1_ps(*(p))
#define mq_fma _mm512_fmadd_ps
#define mq_hsum hsum16x16

#define mq_load ld16 /* compact rows only: the fp32 cache's AVX-512 level runs the AVX2 body */

/* s[c][r] = mul[r] * lane (4r + c) of h */
VX_INLINE void mq_store_scores(int R, int C, const float *mul, __m512 h, float *const *s) {
    float t[16];
    _mm512_storeu_ps(t, h);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) s[c][r] = mul[r] * t[4 * r + c];
}

#include "attn_mq_body.h"

#define mq_add _mm512_add_ps
#define MQ_ONE_PREFETCH 16 /* K rows ahead: a few hundred ns of work */
#define mq_softmax softmax16
#include "attn_one_body.h"

int vx_attn_kv_avx512(int kind, const float *qg, int64_t nkv, int64_t group, const void *k, const void *v,
                      const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t n, int64_t D,
                      float scale, float *scores, float *og) {
    if (n <= 0) return 0;
    if (D % 16) return vx_attn_kv_avx2(kind, qg, nkv, group, k, v, ks, vs, stride, sstride, n, D, scale, scores, og);
    attn_one_compact(kind, qg, nkv, group, k, v, ks, vs, stride, sstride, n, D, scale, scores, og);
    return 1;
}

int vx_attn_kv_mq_avx512(int kind, int64_t nq, const float *q, int64_t qstride, const int64_t *lo, const int64_t *n,
                         int64_t nkv, int64_t group, const void *k, const void *v, const float *ks, const float *vs,
                         int64_t stride, int64_t sstride, int64_t nu, int64_t D, float scale, float *scores, float *o,
                         int64_t ostride) {
    if (D % MQ_LANES)
        return vx_attn_kv_mq_avx2(kind, nq, q, qstride, lo, n, nkv, group, k, v, ks, vs, stride, sstride, nu, D, scale,
                                  scores, o, ostride);
    return attn_mq_compact(kind, nq, q, qstride, lo, n, nkv, group, k, v, ks, vs, stride, sstride, nu, D, scale, scores,
                           o, ostride);
}


const vx_kv_kernels vx_kv_avx512 = {"avx512", vx_attn_kv_avx512, vx_attn_kv_mq_avx512,
                                    vx_kv_store_int8_avx2}; /* the store is memory-bound: 256 bits suffice */
#endif
