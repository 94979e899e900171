/* AVX2 + FMA helpers shared by the files compiled with -mavx2 -mfma: the
 * horizontal sums, a vectorised expf and the in-place softmax of score rows
 * (one copy, so the fp32 and the compact-KV attention normalise alike). */
#ifndef VX_SIMD_AVX2_H
#define VX_SIMD_AVX2_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#if defined(_MSC_VER) && !defined(__clang__)
#define VX_INLINE static __forceinline
#else
#define VX_INLINE static inline __attribute__((always_inline))
#endif

VX_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* lane i = sum of the lanes of a[i], for 8 vectors at once; each vector's
 * lanes are added by the same tree whatever its slot */
VX_INLINE __m256 hsum8x8(const __m256 *a) {
    const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

VX_INLINE __m256 exp256(__m256 x) { /* Cephes expf, ~1 ulp on [-87, 88] */
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* softmax of each of `rows` score rows of length n, in place (max-subtracted) */
static inline void softmax_rows(float *s, int64_t rows, int64_t n) {
    const int64_t n8 = n & ~(int64_t)7;
    for (int64_t r = 0; r < rows; r++, s += n) {
        __m256 mx8 = _mm256_set1_ps(-INFINITY);
        int64_t j = 0;
        for (; j < n8; j += 8) mx8 = _mm256_max_ps(mx8, _mm256_loadu_ps(s + j));
        float t[8], mx = -INFINITY;
        _mm256_storeu_ps(t, mx8);
        for (int i = 0; i < 8; i++) mx = t[i] > mx ? t[i] : mx;
        for (; j < n; j++) mx = s[j] > mx ? s[j] : mx;
        const __m256 m8 = _mm256_set1_ps(mx);
        __m256 sum8 = _mm256_setzero_ps();
        for (j = 0; j < n8; j += 8) {
            const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), m8));
            _mm256_storeu_ps(s + j, e);
            sum8 = _mm256_add_ps(sum8, e);
        }
        float sum = hsum8(sum8);
        if (j < n) { /* tail through the same exp */
            float e[8];
            for (int i = 0; i < 8; i++) t[i] = (j + i < n) ? s[j + i] - mx : -INFINITY;
            _mm256_storeu_ps(e, exp256(_mm256_loadu_ps(t)));
            for (int64_t i = j; i < n; i++) {
                s[i] = e[i - j];
                sum += e[i - j];
            }
        }
        const float inv = 1.0f / sum;
        const __m256 inv8 = _mm256_set1_ps(inv);
        for (j = 0; j < n8; j += 8) _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), inv8));
        for (; j < n; j++) s[j] *= inv;
    }
}

#endif
