/* AVX2 + FMA kernels (compiled with -mavx2 -mfma; only called when the CPU
 * has them). BF16 -> FP32 is a 16-bit left shift, exact.
 *
 * GEMM in "dot form": every output (m, n) owns one 8-lane accumulator that
 * runs over k in order (lane l holds k = l mod 8), reduced by one fixed tree.
 * Both the M < 3 path (W converted on the fly, memory-bound decoder step)
 * and the M >= 3 path (4 W rows unpacked once, reused by 3x4 micro-kernels)
 * produce exactly that sum, so results do not depend on how rows are batched. */
#if defined(__x86_64__) || defined(_M_X64)
#include "vx_isa.h"

#include <string.h>

#include "attn_mq_avx2.h"
#include "simd_avx2.h"

VX_INLINE __m256 bf16x8(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}


static const int32_t tail_mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

VX_INLINE __m256i tail_mask(int64_t r) { return _mm256_loadu_si256((const __m256i *)(tail_mask_table + 8 - r)); }

VX_INLINE void store_out(float *o, float r, const float *bias, int64_t n, int accumulate) {
    if (bias) r += bias[n];
    if (accumulate) *o += r;
    else *o = r;
}

/* MR rows of x against NR rows of W. W is fp32 (panel, row stride wstride,
 * zero-padded past K) when W_F32, else bf16 rows of stride K. */
VX_INLINE void kernel(int MR, int NR, int W_F32, const float *x, int64_t K, const void *wp, int64_t wstride,
                      const float *bias, int64_t n0, float *out, int64_t ldo, int accumulate) {
    __m256 acc[3][8];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();
    const int64_t K8 = K & ~(int64_t)7;
    int64_t k = 0;
    for (; k < K8; k += 8) {
        __m256 xv[3];
        for (int i = 0; i < MR; i++) xv[i] = _mm256_loadu_ps(x + i * K + k);
        for (int j = 0; j < NR; j++) {
            __m256 wv = W_F32 ? _mm256_loadu_ps((const float *)wp + j * wstride + k)
                              : bf16x8((const uint16_t *)wp + j * wstride + k);
            for (int i = 0; i < MR; i++) acc[i][j] = _mm256_fmadd_ps(xv[i], wv, acc[i][j]);
        }
    }
    if (k < K) { /* zero-padded tail: lanes past K add 0*0 */
        const int64_t r = K - k;
        __m256i m = tail_mask(r);
        __m256 xv[3];
        for (int i = 0; i < MR; i++) xv[i] = _mm256_maskload_ps(x + i * K + k, m);
        for (int j = 0; j < NR; j++) {
            __m256 wv;
            if (W_F32) {
                wv = _mm256_loadu_ps((const float *)wp + j * wstride + k);
            } else {
                uint16_t buf[8] = {0};
                memcpy(buf, (const uint16_t *)wp + j * wstride + k, (size_t)r * sizeof(uint16_t));
                wv = bf16x8(buf);
            }
            for (int i = 0; i < MR; i++) acc[i][j] = _mm256_fmadd_ps(xv[i], wv, acc[i][j]);
        }
    }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) store_out(out + i * ldo + j, hsum8(acc[i][j]), bias, n0 + j, accumulate);
}

#define KERNEL_CASES(WF32, XPTR, WPTR, WSTRIDE)                                                     \
    switch (mr * 4 + nr) {                                                                          \
    case 1 * 4 + 1: kernel(1, 1, WF32, XPTR, K, WPTR, WSTRIDE, bias, n, o, ldo, accumulate); break; \
    case 1 * 4 + 2: kernel(1, 2, WF32, XPTR, K, WPTR, WSTRIDE, bias, n, o, ldo, accumulate); break; \
    case 1 * 4 + 3: kernel(1, 3, WF32, XPTR, K, WPTR, WSTRIDE, bias, n, o, ldo, accumulate); break; \
    case 1 * 4 + 4: kernel(1, 4, WF32, XPTR, K, WPTR, WSTRIDE, bias, n, o, ldo, accumulate); break; \
    case 2 * 4 + 1: kernel(2, 1, WF32, XPTR, K, WPTR, WSTRIDE, bias, n, o, ldo, accumulate); break; \
    case 2 * 4 + 2: kernel(2, 2, WF32, XPTR, K, WPTR, WSTRIDE, bias, n, o, ldo, accumulate); break; \
    case 2 * 4 + 3: kernel(2, 3, WF32, XPTR, K, WPTR, WSTRIDE, bias, n, o, ldo, accumulate); break; \
    case 2 * 4 + 4: kernel(2, 4, WF32, XPTR, K, WPTR, WSTRIDE, bias, n, o, ldo, accumulate); break; \
    case 3 * 4 + 1: kernel(3, 1, WF32, XPTR, K, WPTR, WSTRIDE, bias, n, o, ldo, accumulate); break; \
    case 3 * 4 + 2: kernel(3, 2, WF32, XPTR, K, WPTR, WSTRIDE, bias, n, o, ldo, accumulate); break; \
    case 3 * 4 + 3: kernel(3, 3, WF32, XPTR, K, WPTR, WSTRIDE, bias, n, o, ldo, accumulate); break; \
    default: kernel(3, 4, WF32, XPTR, K, WPTR, WSTRIDE, bias, n, o, ldo, accumulate); break;        \
    }

/* Up to this many rows of x the kernel widens the bf16 rows as it reads
 * them, once per block of 3 rows of x; above, a task's rows are widened once
 * into an fp32 panel that every block reads. Zen 4, 2 threads, 5120x1280
 * and 1280x5120: reading the rows directly was 1.1-1.6x faster at M = 3..16,
 * the panel 1.05-1.1x faster at M = 64 and 256. Same bits either way. */
#define VX_BF16_DIRECT_M 16

static void gemm_bf16_avx2(const float *x, int64_t M, const uint16_t *w, int64_t N, int64_t K, const float *bias,
                           float *out, int64_t ldo, int accumulate, float *scratch) {
    const int64_t KP = (K + 7) & ~(int64_t)7; /* panel row stride, zero-padded */
    for (int64_t n = 0; n < N; n += VX_GEMM_ROWS) {
        const int nr = (int)((N - n) < VX_GEMM_ROWS ? (N - n) : VX_GEMM_ROWS);
        const uint16_t *wn = w + n * K;
        if (M < 3) {
            if (nr == VX_GEMM_ROWS && N - n >= 2 * VX_GEMM_ROWS) {
                /* 8 weight rows per pass: more independent streams in flight
                 * for the memory-bound decoder step; same per-output sum. */
                for (int64_t m = 0; m < M; m++)
                    kernel(1, 8, 0, x + m * K, K, wn, K, bias, n, out + m * ldo + n, ldo, accumulate);
                n += VX_GEMM_ROWS; /* the loop adds the other VX_GEMM_ROWS */
                continue;
            }
            for (int64_t m = 0; m < M; m++) {
                const int mr = 1;
                float *o = out + m * ldo + n;
                KERNEL_CASES(0, x + m * K, wn, K)
            }
            continue;
        }
        if (M <= VX_BF16_DIRECT_M) { /* blocks of 3 rows of x straight from the bf16 rows */
            for (int64_t m = 0; m < M; m += 3) {
                const int mr = (int)((M - m) < 3 ? (M - m) : 3);
                float *o = out + m * ldo + n;
                KERNEL_CASES(0, x + m * K, wn, K)
            }
            continue;
        }
        /* unpack nr rows once, reuse for all M */
        for (int j = 0; j < nr; j++) {
            float *dst = scratch + j * KP;
            const uint16_t *src = wn + j * K;
            int64_t k = 0;
            for (; k + 8 <= K; k += 8) _mm256_storeu_ps(dst + k, bf16x8(src + k));
            for (; k < K; k++) {
                uint32_t bits = (uint32_t)src[k] << 16;
                memcpy(dst + k, &bits, 4);
            }
            for (; k < KP; k++) dst[k] = 0.0f;
        }
        for (int64_t m = 0; m < M; m += 3) {
            const int mr = (int)((M - m) < 3 ? (M - m) : 3);
            float *o = out + m * ldo + n;
            KERNEL_CASES(1, x + m * K, scratch, KP)
        }
    }
}

static float dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    float s = hsum8(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_avx2(float *y, float a, const float *x, int64_t n) {
    __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}


/* ---- attention (the multi-position body: attn_mq_avx2.h) ---- */
int vx_attn_avx2(int64_t nq, const float *q, int64_t qstride, const int64_t *lo, const int64_t *n, int64_t nkv,
                 int64_t group, const float *k, const float *v, int64_t stride, int64_t nu, int64_t D, float scale,
                 float *scores, float *o, int64_t ostride) {
    return attn_mq_body(VX_ROW_F32, nq, q, qstride, lo, n, nkv, group, k, v, NULL, NULL, stride, 0, nu, D, scale,
                        scores, o, ostride);
}

const vx_ops vx_ops_avx2 = {gemm_bf16_avx2, dot_avx2, axpy_avx2, vx_attn_avx2};
#endif
