/* ARM NEON kernels (aarch64, where NEON is always present). Same dot-form
 * GEMM as the x86 files, with 4-lane accumulators and 1x4 tiles. */
#if defined(__aarch64__)
#include "vx_isa.h"

#include <arm_neon.h>
#include <string.h>

static inline float32x4_t bf16x4(const uint16_t *p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }

static inline float hsum4(float32x4_t v) {
    float32x2_t s = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpadd_f32(s, s), 0);
}

static void gemm_bf16_neon(const float *x, int64_t M, const uint16_t *w, int64_t N, int64_t K, const float *bias,
                           float *out, int64_t ldo, int accumulate, float *scratch) {
    (void)scratch;
    const int64_t K4 = K & ~(int64_t)3;
    for (int64_t n = 0; n < N; n += 4) {
        const int nr = (int)((N - n) < 4 ? (N - n) : 4);
        for (int64_t m = 0; m < M; m++) {
            const float *xr = x + m * K;
            float32x4_t acc[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
            int64_t k = 0;
            for (; k < K4; k += 4) {
                float32x4_t xv = vld1q_f32(xr + k);
                for (int j = 0; j < nr; j++) acc[j] = vfmaq_f32(acc[j], xv, bf16x4(w + (n + j) * K + k));
            }
            if (k < K) {
                float xb[4] = {0, 0, 0, 0};
                memcpy(xb, xr + k, (size_t)(K - k) * sizeof(float));
                float32x4_t xv = vld1q_f32(xb);
                for (int j = 0; j < nr; j++) {
                    uint16_t wb[4] = {0, 0, 0, 0};
                    memcpy(wb, w + (n + j) * K + k, (size_t)(K - k) * sizeof(uint16_t));
                    acc[j] = vfmaq_f32(acc[j], xv, bf16x4(wb));
                }
            }
            for (int j = 0; j < nr; j++) {
                float r = hsum4(acc[j]);
                if (bias) r += bias[n + j];
                if (accumulate) out[m * ldo + n + j] += r;
                else out[m * ldo + n + j] = r;
            }
        }
    }
}

static float dot_neon(const float *a, const float *b, int64_t n) {
    float32x4_t acc = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) acc = vfmaq_f32(acc, vld1q_f32(a + i), vld1q_f32(b + i));
    float s = hsum4(acc);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_neon(float *y, float a, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
    for (; i < n; i++) y[i] += a * x[i];
}

const vx_ops vx_ops_neon = {gemm_bf16_neon, dot_neon, axpy_neon, NULL};
#endif
