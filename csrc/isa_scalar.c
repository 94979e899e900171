/* Generic reference kernels: plain C, no ISA flags. The baseline every SIMD
 * path is tested against, and the fallback on CPUs with no supported SIMD. */
#include "vx_isa.h"

#include <string.h>

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static void gemm_bf16_scalar(const float *x, int64_t M, const uint16_t *w, int64_t N, int64_t K, const float *bias,
                             float *out, int64_t ldo, int accumulate, float *scratch) {
    (void)scratch;
    for (int64_t n = 0; n < N; n++) {
        const uint16_t *wr = w + n * K;
        for (int64_t m = 0; m < M; m++) {
            const float *xr = x + m * K;
            double s = 0.0;
            for (int64_t k = 0; k < K; k++) s += (double)xr[k] * (double)bf16_to_f32(wr[k]);
            float r = (float)s;
            if (bias) r += bias[n];
            if (accumulate) out[m * ldo + n] += r;
            else out[m * ldo + n] = r;
        }
    }
}

static float dot_scalar(const float *a, const float *b, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return (float)s;
}

static void axpy_scalar(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

const vx_ops vx_ops_scalar = {gemm_bf16_scalar, dot_scalar, axpy_scalar, NULL};
