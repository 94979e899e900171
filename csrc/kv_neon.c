/* ARM NEON attention over a compact (bf16 / int8) KV cache (aarch64, where
 * NEON is always present): vectorised row dot products and accumulation with
 * 4-lane widening loads; the softmax uses libm's expf. */
#if defined(__aarch64__)
#include "vx_kv.h"

#include <arm_neon.h>
#include <math.h>
#include <string.h>

/* elements i..i+7 of a compact row as two fp32 vectors */
static inline void ld8(int kind, const void *p, int64_t i, float32x4_t *lo, float32x4_t *hi) {
    if (kind == VX_KV_BF16) {
        const uint16x8_t h = vld1q_u16((const uint16_t *)p + i);
        *lo = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16));
        *hi = vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(h), 16));
    } else {
        const int16x8_t w = vmovl_s8(vld1_s8((const int8_t *)p + i));
        *lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(w)));
        *hi = vcvtq_f32_s32(vmovl_s16(vget_high_s16(w)));
    }
}

static void attn_kind(int kind, const float *qg, int64_t nkv, int64_t group, const void *k, const void *v,
                      const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t n, int64_t D,
                      float scale, float *scores, float *og) {
    for (int64_t j = 0; j < n; j++) {
        for (int64_t h = 0; h < nkv; h++) {
            const float mul = kind == VX_KV_INT8 ? scale * ks[j * sstride + h] : scale;
            const int64_t off = j * stride + h * D;
            for (int64_t g = 0; g < group; g++) {
                const float *q = qg + (h * group + g) * D;
                float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);
                for (int64_t d = 0; d < D; d += 8) {
                    float32x4_t lo, hi;
                    ld8(kind, k, off + d, &lo, &hi);
                    a0 = vfmaq_f32(a0, vld1q_f32(q + d), lo);
                    a1 = vfmaq_f32(a1, vld1q_f32(q + d + 4), hi);
                }
                scores[(h * group + g) * n + j] = mul * vaddvq_f32(vaddq_f32(a0, a1));
            }
        }
    }
    for (int64_t r = 0; r < nkv * group; r++) {
        float *s = scores + r * n, mx = -INFINITY;
        for (int64_t j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
        double sum = 0.0;
        for (int64_t j = 0; j < n; j++) {
            s[j] = expf(s[j] - mx);
            sum += (double)s[j]; /* softmax sum in double: n can be 10^4 terms */
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < n; j++) s[j] *= inv;
    }
    memset(og, 0, (size_t)(nkv * group * D) * sizeof(float));
    for (int64_t j = 0; j < n; j++) {
        for (int64_t h = 0; h < nkv; h++) {
            const float mul = kind == VX_KV_INT8 ? vs[j * sstride + h] : 1.0f;
            const int64_t off = j * stride + h * D;
            for (int64_t d = 0; d < D; d += 8) {
                float32x4_t lo, hi;
                ld8(kind, v, off + d, &lo, &hi);
                for (int64_t g = 0; g < group; g++) {
                    const float p = scores[(h * group + g) * n + j] * mul;
                    float *o = og + (h * group + g) * D + d;
                    vst1q_f32(o, vfmaq_n_f32(vld1q_f32(o), lo, p));
                    vst1q_f32(o + 4, vfmaq_n_f32(vld1q_f32(o + 4), hi, p));
                }
            }
        }
    }
}

int vx_attn_kv_neon(int kind, const float *qg, int64_t nkv, int64_t group, const void *k, const void *v,
                    const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t n, int64_t D,
                    float scale, float *scores, float *og) {
    if (D % 8 || n <= 0) return 0;
    attn_kind(kind, qg, nkv, group, k, v, ks, vs, stride, sstride, n, D, scale, scores, og);
    return 1;
}

const vx_kv_kernels vx_kv_neon = {"neon", vx_attn_kv_neon, NULL, NULL};
#endif
