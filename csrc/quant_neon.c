/* NEON quantized-weight kernels (aarch64). With __ARM_FEATURE_DOTPROD (this
 * file included by quant_neon_dotprod.c, built with +dotprod and run only
 * when the CPU reports it) the s8 x s8 products use vdotq_s32; otherwise
 * widening multiplies. Weights are made signed (q4_0: nibble - 8), so no
 * correction terms are needed; q4_k subtracts the mins per super-block.
 * Each output (m, n) is computed alone, one 4-lane accumulator, block order:
 * row-deterministic by construction. */
#if defined(__aarch64__)
#include "vx_quant.h"

#include <arm_neon.h>

#if defined(__ARM_FEATURE_DOTPROD)
#define VX_QOPS_NAME vx_qops_neon_dotprod
#define VX_QOPS_STR "neon_dotprod"
static inline int32x4_t dot32(int8x16_t a0, int8x16_t a1, int8x16_t b0, int8x16_t b1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), a0, b0), a1, b1);
}
#else
#define VX_QOPS_NAME vx_qops_neon
#define VX_QOPS_STR "neon"
static inline int32x4_t dot32(int8x16_t a0, int8x16_t a1, int8x16_t b0, int8x16_t b1) {
    /* |a| <= 128, |b| <= 127: two products fit int16 */
    int16x8_t p0 = vmlal_s8(vmull_s8(vget_low_s8(a0), vget_low_s8(b0)), vget_high_s8(a0), vget_high_s8(b0));
    int16x8_t p1 = vmlal_s8(vmull_s8(vget_low_s8(a1), vget_low_s8(b1)), vget_high_s8(a1), vget_high_s8(b1));
    return vpadalq_s16(vpaddlq_s16(p0), p1);
}
#endif

static inline float f16(const uint8_t *p) { return vx_f16_to_f32(vx_load_u16(p)); }

static float dot_q8_0(const int8_t *xq, const float *xd, const uint8_t *w, int64_t nb) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *p = w + b * VX_Q8_0_BYTES;
        const int8_t *xb = xq + b * 32;
        const int32x4_t isum =
            dot32(vld1q_s8((const int8_t *)p + 2), vld1q_s8((const int8_t *)p + 18), vld1q_s8(xb), vld1q_s8(xb + 16));
        acc = vfmaq_n_f32(acc, vmulq_n_f32(vcvtq_f32_s32(isum), xd[b]), f16(p));
    }
    return vaddvq_f32(acc);
}

static float dot_q4_0(const int8_t *xq, const float *xd, const uint8_t *w, int64_t nb) {
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    const int8x16_t eight = vdupq_n_s8(8);
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *p = w + b * VX_Q4_0_BYTES;
        const int8_t *xb = xq + b * 32;
        const uint8x16_t q = vld1q_u8(p + 2);
        const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, low4)), eight);
        const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), eight);
        const int32x4_t isum = dot32(lo, hi, vld1q_s8(xb), vld1q_s8(xb + 16));
        acc = vfmaq_n_f32(acc, vmulq_n_f32(vcvtq_f32_s32(isum), xd[b]), f16(p));
    }
    return vaddvq_f32(acc);
}

static float dot_q4_k(const int8_t *xq, const float *xd, const int32_t *xs, const uint8_t *w, int64_t nsb) {
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *p = w + sb * VX_Q4_K_BYTES, *qs = p + 16;
        const float d = f16(p), dmin = f16(p + 2);
        uint64_t sc64, mn64;
        vx_q4k_scales(p + 4, &sc64, &mn64);
        uint8_t sc[8], mn[8];
        memcpy(sc, &sc64, 8);
        memcpy(mn, &mn64, 8);
        const int8_t *xb = xq + sb * 256;
        const float *db = xd + sb * 8;
        for (int c = 0; c < 4; c++) {
            const uint8x16_t q0 = vld1q_u8(qs + 32 * c), q1 = vld1q_u8(qs + 32 * c + 16);
            const int32x4_t lo = dot32(vreinterpretq_s8_u8(vandq_u8(q0, low4)), vreinterpretq_s8_u8(vandq_u8(q1, low4)),
                                       vld1q_s8(xb + 64 * c), vld1q_s8(xb + 64 * c + 16));
            const int32x4_t hi = dot32(vreinterpretq_s8_u8(vshrq_n_u8(q0, 4)), vreinterpretq_s8_u8(vshrq_n_u8(q1, 4)),
                                       vld1q_s8(xb + 64 * c + 32), vld1q_s8(xb + 64 * c + 48));
            acc = vfmaq_n_f32(acc, vmulq_n_f32(vcvtq_f32_s32(lo), db[2 * c]), d * (float)sc[2 * c]);
            acc = vfmaq_n_f32(acc, vmulq_n_f32(vcvtq_f32_s32(hi), db[2 * c + 1]), d * (float)sc[2 * c + 1]);
        }
        /* mins in lane j % 4: (dx_j * sum_j(x)) * (dmin * m_j) */
        const float32x4_t fx0 = vmulq_f32(vld1q_f32(db), vcvtq_f32_s32(vld1q_s32(xs + sb * 8)));
        const float32x4_t fx1 = vmulq_f32(vld1q_f32(db + 4), vcvtq_f32_s32(vld1q_s32(xs + sb * 8 + 4)));
        const uint8x8_t m8 = vcreate_u8(mn64);
        const uint16x8_t m16 = vmovl_u8(m8);
        const float32x4_t mn0 = vmulq_n_f32(vcvtq_f32_u32(vmovl_u16(vget_low_u16(m16))), dmin);
        const float32x4_t mn1 = vmulq_n_f32(vcvtq_f32_u32(vmovl_u16(vget_high_u16(m16))), dmin);
        acc = vfmsq_f32(acc, fx0, mn0);
        acc = vfmsq_f32(acc, fx1, mn1);
    }
    return vaddvq_f32(acc);
}

static void gemm_neon(int qtype, const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias,
                      float *out, int64_t ldo, int accumulate) {
    const int64_t xnb = K / 32;
    const int64_t rb = qtype == 2 ? K / 256 * VX_Q4_K_BYTES : xnb * (qtype == 0 ? VX_Q8_0_BYTES : VX_Q4_0_BYTES);
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *wr = w + n * rb;
        for (int64_t m = 0; m < M; m++) {
            const int8_t *xq = x->q + m * K;
            const float *xd = x->d + m * xnb;
            float v = qtype == 0   ? dot_q8_0(xq, xd, wr, xnb)
                      : qtype == 1 ? dot_q4_0(xq, xd, wr, xnb)
                                   : dot_q4_k(xq, xd, x->s + m * xnb, wr, K / 256);
            if (bias) v += bias[n];
            if (accumulate) out[m * ldo + n] += v;
            else out[m * ldo + n] = v;
        }
    }
}

static void gemm_q8_0_neon(const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias,
                           float *out, int64_t ldo, int accumulate) {
    gemm_neon(0, x, M, w, N, K, bias, out, ldo, accumulate);
}
static void gemm_q4_0_neon(const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias,
                           float *out, int64_t ldo, int accumulate) {
    gemm_neon(1, x, M, w, N, K, bias, out, ldo, accumulate);
}
static void gemm_q4_k_neon(const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias,
                           float *out, int64_t ldo, int accumulate) {
    gemm_neon(2, x, M, w, N, K, bias, out, ldo, accumulate);
}

const vx_qops VX_QOPS_NAME = {VX_QOPS_STR, {gemm_q8_0_neon, gemm_q4_0_neon, gemm_q4_k_neon}};
#endif
