/* AVX2 + FMA attention of a task (several query positions sharing every row
 * read): the 8-lane mapping of attn_mq_body.h. One body for the fp32 cache
 * (isa_avx2.c) and the compact caches (kv_avx2.c). */
#ifndef VX_ATTN_MQ_AVX2_H
#define VX_ATTN_MQ_AVX2_H

#include "simd_avx2.h"
#include "vx_kv.h"

typedef __m256 mq_vec;
#define MQ_LANES 8
#define MQ_ROWS 2 /* 8 accumulators: 16 ymm registers hold them, the rows and q */
#define MQ_NC 2
#define mq_zero _mm256_setzero_ps
#define mq_loadu _mm256_loadu_ps
#define mq_storeu _mm256_storeu_ps
#define mq_bcast _mm256_broadcast_ss
#define mq_fma _mm256_fmadd_ps
#define mq_hsum hsum8x8

/* 8 consecutive elements of a row of `kind`, as fp32 (bf16: a shift; int8:
 * an int -> float conversion; both exact); kind 0: fp32 rows */
VX_INLINE __m256 mq_load(int kind, const void *p, int64_t i) {
    if (kind == VX_KV_BF16) {
        const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    if (kind == VX_KV_INT8)
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)p + i))));
    return _mm256_loadu_ps((const float *)p + i);
}

/* s[c][r] = mul[r] * lane (4r + c) of h, R <= 2 rows */
VX_INLINE void mq_store_scores(int R, int C, const float *mul, __m256 h, float *const *s) {
    const __m256 m = _mm256_setr_ps(mul[0], mul[0], mul[0], mul[0], mul[R - 1], mul[R - 1], mul[R - 1], mul[R - 1]);
    const __m256 sc = _mm256_mul_ps(m, h);
    if (R == 2) { /* lanes (c, 4 + c) -> s[c][0..1], one 64-bit store each (no store-to-load round trip) */
        const __m256 pr = _mm256_permutevar8x32_ps(sc, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        const __m128 p01 = _mm256_castps256_ps128(pr), p23 = _mm256_extractf128_ps(pr, 1);
        _mm_storel_pi((__m64 *)s[0], p01);
        if (C > 1) _mm_storeh_pi((__m64 *)s[1], p01);
        if (C > 2) _mm_storel_pi((__m64 *)s[2], p23);
        if (C > 3) _mm_storeh_pi((__m64 *)s[3], p23);
    } else {
        float t[8];
        _mm256_storeu_ps(t, sc);
        for (int c = 0; c < C; c++) s[c][0] = t[c];
    }
}

#include "attn_mq_body.h"

#endif
