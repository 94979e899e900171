/* Probe (not part of the library): is an integer K-phase worth it for the
 * int8 KV cache? Times the scores of 4 query heads over n int8 key rows
 * (D = 128, cache-resident, one thread) two ways:
 *   - fp32 FMA on rows widened in registers (what kv_avx512.c does),
 *   - AVX512-VNNI vpdpbusd with q quantized to int8 (offset to u8, the
 *     offset removed with a per-row sum of k, also by vpdpbusd).
 * Both give the same integer-valued scores here (q holds integers), which
 * the probe checks. Build and run on a CPU with AVX512-VNNI:
 *   gcc -O2 -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mfma bench/kv_vnni_probe.c -o /tmp/kv_vnni_probe &&
 * /tmp/kv_vnni_probe
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define D 128 /* head dim; 4 query heads share each key row */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static inline __m512 widen16(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

/* s[j*4 + g] = q_g . k_j, fp32 FMA, 4 rows x 4 heads per pass */
__attribute__((noinline)) static void fma_scores(const float *q, const int8_t *k, int64_t n, float *s) {
    for (int64_t j = 0; j < n; j += 4) {
        __m512 acc[16];
        for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
        for (int d = 0; d < D; d += 16) {
            __m512 kr[4];
            for (int r = 0; r < 4; r++) kr[r] = widen16(k + (j + r) * D + d);
            for (int g = 0; g < 4; g++) {
                const __m512 qv = _mm512_loadu_ps(q + g * D + d);
                for (int r = 0; r < 4; r++) acc[r * 4 + g] = _mm512_fmadd_ps(qv, kr[r], acc[r * 4 + g]);
            }
        }
        for (int i = 0; i < 16; i++) s[j * 4 + i] = _mm512_reduce_add_ps(acc[i]);
    }
}

/* the same with q as u8 (q + 128): q.k = qu.k - 128 * sum(k) */
__attribute__((noinline)) static void vnni_scores(const uint8_t *qu, const int8_t *k, int64_t n, float *s) {
    const __m512i ones = _mm512_set1_epi8(1);
    for (int64_t j = 0; j < n; j += 4) {
        __m512i acc[16], ksum[4];
        for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_si512();
        for (int r = 0; r < 4; r++) ksum[r] = _mm512_setzero_si512();
        for (int d = 0; d < D; d += 64) {
            __m512i kr[4];
            for (int r = 0; r < 4; r++) {
                kr[r] = _mm512_loadu_si512(k + (j + r) * D + d);
                ksum[r] = _mm512_dpbusd_epi32(ksum[r], ones, kr[r]);
            }
            for (int g = 0; g < 4; g++) {
                const __m512i qv = _mm512_loadu_si512(qu + g * D + d);
                for (int r = 0; r < 4; r++) acc[r * 4 + g] = _mm512_dpbusd_epi32(acc[r * 4 + g], qv, kr[r]);
            }
        }
        for (int r = 0; r < 4; r++) {
            const int offset = 128 * _mm512_reduce_add_epi32(ksum[r]);
            for (int g = 0; g < 4; g++)
                s[j * 4 + r * 4 + g] = (float)(_mm512_reduce_add_epi32(acc[r * 4 + g]) - offset);
        }
    }
}

int main(void) {
    const int64_t n = 2048;
    int8_t *k = aligned_alloc(64, n * D);
    float q[4 * D], *s1 = malloc(n * 4 * sizeof(float)), *s2 = malloc(n * 4 * sizeof(float));
    uint8_t qu[4 * D];
    for (int64_t i = 0; i < n * D; i++) k[i] = (int8_t)(rand() % 255 - 127);
    for (int i = 0; i < 4 * D; i++) {
        q[i] = (float)(rand() % 255 - 127);
        qu[i] = (uint8_t)((int)q[i] + 128);
    }
    double best_fma = 1e9, best_vnni = 1e9;
    for (int rep = 0; rep < 300; rep++) {
        double t = now();
        fma_scores(q, k, n, s1);
        t = now() - t;
        best_fma = t < best_fma ? t : best_fma;
        t = now();
        vnni_scores(qu, k, n, s2);
        t = now() - t;
        best_vnni = t < best_vnni ? t : best_vnni;
    }
    for (int64_t i = 0; i < n * 4; i++)
        if (s1[i] != s2[i]) {
            printf("mismatch at %lld: %f vs %f\n", (long long)i, s1[i], s2[i]);
            return 1;
        }
    printf("K-phase per row (4 query heads x D=%d): fp32 FMA %.2f ns, VNNI %.2f ns\n", D, best_fma * 1e9 / n,
           best_vnni * 1e9 / n);
    return 0;
}
