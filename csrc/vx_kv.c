/* Compact KV cache: the store kernel (fp32 rows -> bf16 / int8 + scales), the
 * scalar reference attention over such rows, and the threaded driver that
 * runs the active level's kernels. See vx_kv.h. */
#include "vx_kv.h"
#include "vx.h"
#include "vx_isa.h"
#include "vx_levels.h"

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
        const vx_kv_store_int8_fn fast = vx_level_active()->kv->store_int8;
        if (!fast || !fast(src, o, scales, rows * H, D))
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

/* ---- the threaded driver ---- */

const vx_kv_kernels vx_kv_scalar = {"scalar", vx_attn_kv_scalar, NULL, NULL};

const char *vx_kv_kernels_name(void) { return vx_level_active()->kv->name; }

typedef struct kv_attn {
    const vx_kv_kernels *kernels;
    int kind;
    int64_t per_task;
    const void *k, *v;
    const float *ks, *vs;
    int64_t Hq, Hkv, D;
    float scale;
} kv_attn;

static void attend_kv_task(const void *ctx, const vx_attn_task *t, float *scores) {
    const kv_attn *a = (const kv_attn *)ctx;
    const int kind = a->kind;
    const size_t esize = kind == VX_KV_BF16 ? sizeof(uint16_t) : sizeof(int8_t);
    const int64_t group = a->Hq / a->Hkv, D = a->D, Hkv = a->Hkv, off = (t->ulo * Hkv + t->kv0) * D;
    const float *uks = kind == VX_KV_INT8 ? a->ks + t->ulo * Hkv + t->kv0 : NULL;
    const float *uvs = kind == VX_KV_INT8 ? a->vs + t->ulo * Hkv + t->kv0 : NULL;
    const void *kp = (const char *)a->k + (size_t)off * esize, *vp = (const char *)a->v + (size_t)off * esize;
    if (a->per_task > 1 && a->kernels->mq(kind, t->nq, t->q, a->Hq * D, t->rel, t->n, t->nkv, group, kp, vp, uks, uvs,
                                          Hkv * D, Hkv, t->nu, D, a->scale, scores, t->o, a->Hq * D))
        return;
    for (int64_t i = 0; i < t->nq; i++) { /* one position at a time */
        float *oi = t->o + i * a->Hq * D;
        const float *qi = t->q + i * a->Hq * D;
        if (!t->n[i]) {
            memset(oi, 0, (size_t)(t->nkv * group * D) * sizeof(float));
            continue;
        }
        const int64_t r0 = t->rel[i] * Hkv * D;
        const void *ki = (const char *)kp + (size_t)r0 * esize, *vi = (const char *)vp + (size_t)r0 * esize;
        const float *ksi = uks ? uks + t->rel[i] * Hkv : NULL, *vsi = uvs ? uvs + t->rel[i] * Hkv : NULL;
        if (!a->kernels->one ||
            !a->kernels->one(kind, qi, t->nkv, group, ki, vi, ksi, vsi, Hkv * D, Hkv, t->n[i], D, a->scale, scores, oi))
            vx_attn_kv_scalar(kind, qi, t->nkv, group, ki, vi, ksi, vsi, Hkv * D, Hkv, t->n[i], D, a->scale, scores,
                              oi);
    }
}

int vx_attention_kv(int kind, const float *q, const void *k, const void *v, const float *k_scales,
                    const float *v_scales, float *out, int64_t M, int64_t Hq, int64_t T, int64_t Hkv, int64_t D,
                    int64_t q_pos0, int64_t k_pos0, int64_t window, float scale) {
    if (!q || !k || !v || !out || M <= 0 || Hq <= 0 || T < 0 || Hkv <= 0 || D <= 0 || window <= 0 || Hq % Hkv)
        return VX_EINVAL;
    if (kind != VX_KV_BF16 && kind != VX_KV_INT8) return VX_EINVAL;
    if (kind == VX_KV_INT8 && (!k_scales || !v_scales)) return VX_EINVAL;
    const vx_kv_kernels *kernels = vx_level_active()->kv;
    /* Positions share a task (and every row read) where their query heads
     * fit one register block of 4 (GQA groups under 4: the encoder), with
     * the `mq` body for every task, whatever M. Compact rows are widened in
     * registers, so the arithmetic is the limit: for wider groups (the
     * decoder's 4) sharing saves no conversion, and a task per position with
     * the `one` body measured faster (8 drafted positions, int8, 8191 rows:
     * 375 ms against 427 in groups of 4). */
    const int64_t group = Hq / Hkv;
    const int64_t per_task = kernels->mq && group < VX_ATTN_MQ ? VX_ATTN_MQ / group : 1;
    const kv_attn ctx = {kernels, kind, per_task, k, v, k_scales, v_scales, Hq, Hkv, D, scale};
    return vx_attn_drive(M, Hq, T, Hkv, D, q_pos0, k_pos0, window, per_task, q, out, attend_kv_task, &ctx);
}
