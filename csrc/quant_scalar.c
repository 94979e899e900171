/* Generic reference for the quantized-weight kernels: plain C, no ISA flags.
 * Per output: integer dot products per 32-block, each scaled and added in
 * fp32 in block order (q4_k: the sub-block mins once per super-block). */
#include "vx_quant.h"

#include <string.h>

static float dot_q8_0(const int8_t *xq, const float *xd, const uint8_t *w, int64_t nb) {
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * VX_Q8_0_BYTES;
        const int8_t *wq = (const int8_t *)(blk + 2);
        const int8_t *xb = xq + b * 32;
        int32_t isum = 0;
        for (int i = 0; i < 32; i++) isum += (int32_t)wq[i] * xb[i];
        acc += (vx_f16_to_f32(vx_load_u16(blk)) * xd[b]) * (float)isum;
    }
    return acc;
}

static float dot_q4_0(const int8_t *xq, const float *xd, const int32_t *xs, const uint8_t *w, int64_t nb) {
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + b * VX_Q4_0_BYTES, *qs = blk + 2;
        const int8_t *xb = xq + b * 32;
        int32_t isum = 0; /* unsigned nibbles times x, then the -8 offset via the block sum */
        for (int i = 0; i < 16; i++) isum += (int32_t)(qs[i] & 0x0f) * xb[i] + (int32_t)(qs[i] >> 4) * xb[i + 16];
        isum -= 8 * xs[b];
        acc += (vx_f16_to_f32(vx_load_u16(blk)) * xd[b]) * (float)isum;
    }
    return acc;
}

static float dot_q4_k(const int8_t *xq, const float *xd, const int32_t *xs, const uint8_t *w, int64_t nsb) {
    float acc = 0.0f;
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *blk = w + sb * VX_Q4_K_BYTES;
        acc = vx_q4k_superblock_dot(acc, blk, blk + 16, xq + sb * 256, xd + sb * 8, xs + sb * 8);
    }
    return acc;
}

static void gemm_scalar(int qtype, const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias,
                        float *out, int64_t ldo, int accumulate) {
    const int64_t xnb = K / 32;
    const int64_t rb = qtype == 2 ? K / 256 * VX_Q4_K_BYTES : xnb * (qtype == 0 ? VX_Q8_0_BYTES : VX_Q4_0_BYTES);
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *wr = w + n * rb;
        for (int64_t m = 0; m < M; m++) {
            const int8_t *xq = x->q + m * K;
            const float *xd = x->d + m * xnb;
            const int32_t *xs = x->s + m * xnb;
            float v = qtype == 0   ? dot_q8_0(xq, xd, wr, xnb)
                      : qtype == 1 ? dot_q4_0(xq, xd, xs, wr, xnb)
                                   : dot_q4_k(xq, xd, xs, wr, K / 256);
            if (bias) v += bias[n];
            if (accumulate) out[m * ldo + n] += v;
            else out[m * ldo + n] = v;
        }
    }
}

static void gemm_q8_0_scalar(const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias,
                             float *out, int64_t ldo, int accumulate) {
    gemm_scalar(0, x, M, w, N, K, bias, out, ldo, accumulate);
}
static void gemm_q4_0_scalar(const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias,
                             float *out, int64_t ldo, int accumulate) {
    gemm_scalar(1, x, M, w, N, K, bias, out, ldo, accumulate);
}
static void gemm_q4_k_scalar(const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias,
                             float *out, int64_t ldo, int accumulate) {
    gemm_scalar(2, x, M, w, N, K, bias, out, ldo, accumulate);
}

const vx_qops vx_qops_scalar = {"scalar", {gemm_q8_0_scalar, gemm_q4_0_scalar, gemm_q4_k_scalar}};
