/* AVX-512 kernels (compiled with -mavx512f/bw/dq/vl; only called when the CPU has all four).
 * Same "dot form" as the AVX2 file with 16-lane accumulators: each output's
 * sum runs over k in order and is reduced by one fixed tree, whatever M is. */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(VX_HAVE_AVX512)
#include "vx_isa.h"

#include <immintrin.h>
#include <string.h>

#if defined(_MSC_VER) && !defined(__clang__)
#define VX_INLINE static __forceinline
#else
#define VX_INLINE static inline __attribute__((always_inline))
#endif

/* Weight rows per pass of the GEMV form (M < 3; the decoder step): 16
 * rows, a whole task, are 16 independent streams in flight and 16
 * accumulators, where 4 left one thread compute-bound on the bf16 widening
 * (Zen 4, 3072x3072, 1 thread: 17.5 -> 22.8 GB/s; 2 threads 31.0 -> 34.7
 * against 37.6 of plain reads). Each output keeps its own sum: same bits. */
#define VX_GEMV_ROWS 16

VX_INLINE __m512 bf16x16(const uint16_t *p) {
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

VX_INLINE float hsum16(__m512 v) {
    __m256 lo = _mm512_castps512_ps256(v);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    __m256 s8 = _mm256_add_ps(lo, hi);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

VX_INLINE void store_out(float *o, float r, const float *bias, int64_t n, int accumulate) {
    if (bias) r += bias[n];
    if (accumulate) *o += r;
    else *o = r;
}

/* out[i*ldo + j] (+)= x row i . bf16 row j (+ bias[n0 + j]) for an MR x NR
 * tile; rows of x K apart, weight rows wstride apart */
VX_INLINE void kernel(int MR, int NR, const float *x, int64_t K, const uint16_t *wp, int64_t wstride, const float *bias,
                      int64_t n0, float *out, int64_t ldo, int accumulate) {
    __m512 acc[4][VX_GEMV_ROWS]; /* MR x NR, NR above 4 only with MR = 1 */
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();
    const int64_t K16 = K & ~(int64_t)15;
    int64_t k = 0;
    for (; k < K16; k += 16) {
        __m512 xv[4];
        for (int i = 0; i < MR; i++) xv[i] = _mm512_loadu_ps(x + i * K + k);
        for (int j = 0; j < NR; j++) {
            const __m512 wv = bf16x16(wp + j * wstride + k);
            for (int i = 0; i < MR; i++) acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
        }
    }
    if (k < K) {
        const int64_t r = K - k;
        const __mmask16 m = (__mmask16)((1u << r) - 1u);
        __m512 xv[4];
        for (int i = 0; i < MR; i++) xv[i] = _mm512_maskz_loadu_ps(m, x + i * K + k);
        for (int j = 0; j < NR; j++) {
            uint16_t buf[16] = {0};
            memcpy(buf, wp + j * wstride + k, (size_t)r * sizeof(uint16_t));
            const __m512 wv = bf16x16(buf);
            for (int i = 0; i < MR; i++) acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
        }
    }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) store_out(out + i * ldo + j, hsum16(acc[i][j]), bias, n0 + j, accumulate);
}

/* a table of case labels in a macro, laid out by hand (clang-format breaks it) */
/* clang-format off */
#define CASE(a, b) case a * 8 + b: kernel(a, b, XPTR, K, WPTR, WSTRIDE, bias, n, o, ldo, accumulate); break;
#define KERNEL_CASES(XPTR_, WPTR_, WSTRIDE_)                                                                \
    {                                                                                                       \
        const float *XPTR = XPTR_;                                                                          \
        const uint16_t *WPTR = WPTR_;                                                                       \
        const int64_t WSTRIDE = WSTRIDE_;                                                                   \
        switch (mr * 8 + nr) {                                                                              \
            CASE(1, 1) CASE(1, 2) CASE(1, 3) CASE(1, 4)                                                     \
            CASE(2, 1) CASE(2, 2) CASE(2, 3) CASE(2, 4)                                                     \
            CASE(3, 1) CASE(3, 2) CASE(3, 3) CASE(3, 4)                                                     \
            CASE(4, 1) CASE(4, 2) CASE(4, 3)                                                                \
            default: kernel(4, 4, XPTR, K, WPTR, WSTRIDE, bias, n, o, ldo, accumulate); break;              \
        }                                                                                                   \
    }
/* clang-format on */

/* Row-deterministic: each output is one kernel's sum over k in order,
 * whatever the tile it falls in. The bf16 rows are widened as they are read
 * at every M: an fp32 copy of a task's rows, shared by every block of x
 * rows, measured slower even at M = 256 (Zen 4, 5120x1280 and 1280x5120:
 * M = 4 1.5-1.8x, M = 64 1.1-1.35x, M = 256 1.06-1.28x faster without it). */
static void gemm_bf16_avx512(const float *x, int64_t M, const uint16_t *w, int64_t N, int64_t K, const float *bias,
                             float *out, int64_t ldo, int accumulate, float *scratch) {
    (void)scratch;
    for (int64_t n = 0; n < N; n += VX_GEMM_ROWS) {
        const int nr = (int)((N - n) < VX_GEMM_ROWS ? (N - n) : VX_GEMM_ROWS);
        const uint16_t *wn = w + n * K;
        if (M < 3 && nr == VX_GEMM_ROWS && N - n >= VX_GEMV_ROWS) {
            for (int64_t m = 0; m < M; m++)
                kernel(1, VX_GEMV_ROWS, x + m * K, K, wn, K, bias, n, out + m * ldo + n, ldo, accumulate);
            n += VX_GEMV_ROWS - VX_GEMM_ROWS; /* the loop adds VX_GEMM_ROWS */
            continue;
        }
        const int64_t mb = M < 3 ? 1 : 4; /* rows of x per block: GEMV rows one by one */
        for (int64_t m = 0; m < M; m += mb) {
            const int mr = (int)((M - m) < mb ? (M - m) : mb);
            float *o = out + m * ldo + n;
            KERNEL_CASES(x + m * K, wn, K)
        }
    }
}

static float dot_avx512(const float *a, const float *b, int64_t n) {
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
    }
    return hsum16(acc);
}

static void axpy_avx512(float *y, float a, const float *x, int64_t n) {
    __m512 av = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

const vx_ops vx_ops_avx512 = {gemm_bf16_avx512, dot_avx512, axpy_avx512, vx_attn_avx2};
#endif
