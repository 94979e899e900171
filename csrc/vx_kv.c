/* Compact KV cache: the store kernel (fp32 rows -> bf16 / int8 + scales), the
 * scalar reference attention over such rows, and the threaded driver that
 * picks the active ISA's kernel. See vx_kv.h. */
#include "vx_kv.h"
#include "vx.h"
#include "vx_isa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- store ---- */

static uint16_t f32_to_bf16(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40u); /* NaN stays a (quiet) NaN */
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);                 /* round to nearest even */
}

static void store_int8_head(const float *x, int8_t *q, float *scale, int64_t D) {
    float amax = 0.0f;
    for (int64_t d = 0; d < D; d++) {
        const float a = fabsf(x[d]);
        if (a > amax) amax = a;
    }
    const float s = amax / 127.0f;
    *scale = s;
    if (!(s > 0.0f) || !isfinite(s)) { /* all zeros (or non-finite input: not representable) */
        memset(q, 0, (size_t)D);
        return;
    }
    for (int64_t d = 0; d < D; d++) {
        float r = rintf(x[d] / s); /* a true division: the numpy reference does the same */
        if (!(r == r)) r = 0.0f;
        if (r > 127.0f) r = 127.0f;
        if (r < -127.0f) r = -127.0f;
        q[d] = (int8_t)r;
    }
}

int vx_kv_store(int kind, const float *src, void *dst, float *scales, int64_t rows, int64_t H, int64_t D) {
    if (!src || !dst || rows < 0 || H <= 0 || D <= 0) return VX_EINVAL;
    if (kind == VX_KV_BF16) {
        uint16_t *o = (uint16_t *)dst;
        for (int64_t i = 0; i < rows * H * D; i++) o[i] = f32_to_bf16(src[i]);
        return VX_OK;
    }
    if (kind == VX_KV_INT8) {
        if (!scales) return VX_EINVAL;
        int8_t *o = (int8_t *)dst;
        for (int64_t r = 0; r < rows * H; r++) store_int8_head(src + r * D, o + r * D, scales + r, D);
        return VX_OK;
    }
    return VX_EINVAL;
}

/* ---- scalar reference ---- */

static inline float kv_elem(int kind, const void *p, int64_t i) {
    if (kind == VX_KV_BF16) {
        uint32_t bits = (uint32_t)((const uint16_t *)p)[i] << 16;
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
    return (float)((const int8_t *)p)[i];
}

int vx_attn_kv_scalar(int kind, const float *qg, int64_t nkv, int64_t group, const void *k, const void *v,
                      const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t n, int64_t D,
                      float scale, float *scores, float *og) {
    memset(og, 0, (size_t)(nkv * group * D) * sizeof(float));
    for (int64_t h = 0; h < nkv; h++) {
        for (int64_t g = 0; g < group; g++) {
            const int64_t qh = h * group + g;
            const float *q = qg + qh * D;
            float *s = scores + qh * n;
            for (int64_t j = 0; j < n; j++) {
                const int64_t base = j * stride + h * D;
                double acc = 0.0;
                for (int64_t d = 0; d < D; d++) acc += (double)q[d] * (double)kv_elem(kind, k, base + d);
                /* int8: the row's scale multiplies the whole dot product */
                s[j] = scale * (float)acc * (kind == VX_KV_INT8 ? ks[j * sstride + h] : 1.0f);
            }
            float mx = -INFINITY;
            for (int64_t j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
            double sum = 0.0;
            for (int64_t j = 0; j < n; j++) {
                s[j] = expf(s[j] - mx);
                sum += (double)s[j]; /* in double: n can be 10^4 terms */
            }
            const float inv = (float)(1.0 / sum);
            float *o = og + qh * D;
            for (int64_t j = 0; j < n; j++) {
                /* int8: the row's scale folds into the softmax weight */
                const float p = s[j] * inv * (kind == VX_KV_INT8 ? vs[j * sstride + h] : 1.0f);
                const int64_t base = j * stride + h * D;
                for (int64_t d = 0; d < D; d++) o[d] += p * kv_elem(kind, v, base + d);
            }
        }
    }
    return 1;
}

/* ---- dispatch + threaded driver ---- */

static vx_attn_kv_fn active_kernel(void) {
    switch (vx_active_isa()) {
#if defined(__x86_64__) || defined(_M_X64)
    /* the VNNI levels differ only in the integer matmul kernels */
    case VX_ISA_AVX2:
    case VX_ISA_AVXVNNI: return vx_attn_kv_avx2;
#if defined(VX_HAVE_AVX512)
    case VX_ISA_AVX512:
    case VX_ISA_AVX512VNNI: return vx_attn_kv_avx512;
#endif
#endif
#if defined(__aarch64__)
    case VX_ISA_NEON: return vx_attn_kv_neon;
#endif
    default: return vx_attn_kv_scalar;
    }
}

const char *vx_kv_kernels_name(void) {
    const vx_attn_kv_fn f = active_kernel();
#if defined(__x86_64__) || defined(_M_X64)
    if (f == vx_attn_kv_avx2) return "avx2";
#if defined(VX_HAVE_AVX512)
    if (f == vx_attn_kv_avx512) return "avx512";
#endif
#endif
#if defined(__aarch64__)
    if (f == vx_attn_kv_neon) return "neon";
#endif
    return "scalar";
}

int vx_attention_kv(int kind, const float *q, const void *k, const void *v, const float *k_scales,
                    const float *v_scales, float *out, int64_t M, int64_t Hq, int64_t T, int64_t Hkv, int64_t D,
                    int64_t q_pos0, int64_t k_pos0, int64_t window, float scale) {
    if (!q || !k || !v || !out || M <= 0 || Hq <= 0 || T < 0 || Hkv <= 0 || D <= 0 || window <= 0 || Hq % Hkv)
        return VX_EINVAL;
    if (kind != VX_KV_BF16 && kind != VX_KV_INT8) return VX_EINVAL;
    if (kind == VX_KV_INT8 && (!k_scales || !v_scales)) return VX_EINVAL;
    const size_t esize = kind == VX_KV_BF16 ? sizeof(uint16_t) : sizeof(int8_t);
    const vx_attn_kv_fn kernel = active_kernel();
    const int64_t group = Hq / Hkv;
    const int64_t work = M * Hq * (T + 1) * D;
    const int nthreads = work < (1 << 16) ? 1 : vx_get_num_threads();
    const int64_t hb = vx_attn_head_block(M, Hkv, nthreads); /* tasks as in vx_attention */
    const int64_t n_blocks = (Hkv + hb - 1) / hb;
    const int64_t n_tasks = M * n_blocks;
    int status = VX_OK;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        float *scores = (float *)malloc((size_t)(hb * group * (T > 0 ? T : 1)) * sizeof(float));
        if (!scores) {
#pragma omp critical(vx_status)
            status = VX_ENOMEM;
        } else {
#pragma omp for schedule(dynamic, 1)
            for (int64_t t = 0; t < n_tasks; t++) {
                const int64_t i = t / n_blocks, kv0 = (t % n_blocks) * hb;
                const int64_t nkv = (Hkv - kv0) < hb ? (Hkv - kv0) : hb;
                const int64_t qpos = q_pos0 + i;
                int64_t lo, hi;
                vx_attn_visible(qpos, k_pos0, window, T, &lo, &hi);
                float *oblk = out + (i * Hq + kv0 * group) * D;
                if (hi < lo) {
                    memset(oblk, 0, (size_t)(nkv * group * D) * sizeof(float));
                    continue;
                }
                const int64_t n = hi - lo + 1, off = (lo * Hkv + kv0) * D;
                const float *ks = kind == VX_KV_INT8 ? k_scales + lo * Hkv + kv0 : NULL;
                const float *vs = kind == VX_KV_INT8 ? v_scales + lo * Hkv + kv0 : NULL;
                const void *kp = (const char *)k + (size_t)off * esize, *vp = (const char *)v + (size_t)off * esize;
                const float *qg = q + (i * Hq + kv0 * group) * D;
                if (!kernel(kind, qg, nkv, group, kp, vp, ks, vs, Hkv * D, Hkv, n, D, scale, scores, oblk))
                    vx_attn_kv_scalar(kind, qg, nkv, group, kp, vp, ks, vs, Hkv * D, Hkv, n, D, scale, scores, oblk);
            }
            free(scores);
        }
    }
    return status;
}
