/* The block quantizers, compiled once per build: the including file defines
 * VXQ_SUFFIX (scalar, avx2) and compiles with floating-point contraction off.
 * Float sums run in 8 independent lanes reduced in a fixed tree, so a
 * vectorizing build computes exactly what the scalar build computes. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "vx.h"
#include "vx_quantize.h"

#define VXQ_CAT2(a, b) a##_##b
#define VXQ_CAT(a, b) VXQ_CAT2(a, b)
#define VXQ(name) VXQ_CAT(name, VXQ_SUFFIX)

#define VXQ_LANES 8

/* error flags a block can raise (reported as VX_Q_ENONFINITE first, then VX_Q_EOVERFLOW) */
#define VXQ_F_NONFINITE 1
#define VXQ_F_OVERFLOW 2

static inline uint32_t VXQ(f32_bits)(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float VXQ(bits_f32)(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* float32 -> fp16, round to nearest even (as numpy's astype(float16) and
 * F16C); a finite value that rounds past 65504 gives Inf. */
static inline uint16_t VXQ(to_f16)(float f) {
    uint32_t x = VXQ(f32_bits)(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) return sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u);
    if (a >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds to Inf */
    if (a < 0x38800000u) {                       /* below 2^-14: fp16 subnormal, unit 2^-24 */
        float v = VXQ(bits_f32)(a) * 0x1p24f;    /* exact: a power-of-two scale into the normal range */
        return sign | (uint16_t)nearbyintf(v);   /* 1024 is the smallest normal: still right */
    }
    uint32_t h = ((((a >> 23) - 127 + 15) << 10) | ((a & 0x7fffffu) >> 13));
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* a carry into the exponent is right too */
    return sign | (uint16_t)h;
}

static inline float VXQ(from_f16)(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 31u, m = h & 1023u;
    if (e == 0) {
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31) return VXQ(bits_f32)(sign | 0x7f800000u | (m << 13));
    return VXQ(bits_f32)(sign | ((e + 112u) << 23) | (m << 13));
}

/* n values of block b into x (float32); flags non-finite input */
static inline int VXQ(load)(const void *src, int src_bf16, int64_t start, int n, float *x) {
    int bad = 0;
    if (src_bf16) {
        const uint16_t *s = (const uint16_t *)src + start;
        for (int i = 0; i < n; i++) {
            bad |= (s[i] & 0x7f80u) == 0x7f80u;
            x[i] = VXQ(bits_f32)((uint32_t)s[i] << 16);
        }
    } else {
        const float *s = (const float *)src + start;
        for (int i = 0; i < n; i++) {
            bad |= (VXQ(f32_bits)(s[i]) & 0x7f800000u) == 0x7f800000u;
            x[i] = s[i];
        }
    }
    if (bad) memset(x, 0, (size_t)n * sizeof *x); /* reported; quantize zeros rather than NaN casts */
    return bad ? VXQ_F_NONFINITE : 0;
}

/* 1/d in float32, 0 where d is 0 or its inverse is not finite (a subnormal d:
 * such a block is stored as zeros, where ggml's C code would cast Inf to int) */
static inline float VXQ(inverse)(float num, float d) {
    if (d == 0.0f) return 0.0f;
    float inv = num / d;
    return isfinite(inv) ? inv : 0.0f;
}

static inline void VXQ(put_f16)(uint8_t *p, uint16_t h) {
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
}

/* max |x| over 32 values, in lanes (exact: max does not round) */
static inline float VXQ(amax32)(const float *x) {
    float m[VXQ_LANES] = {0};
    for (int k = 0; k < 32; k += VXQ_LANES)
        for (int j = 0; j < VXQ_LANES; j++) {
            float a = fabsf(x[k + j]);
            m[j] = a > m[j] ? a : m[j];
        }
    float r = 0.0f;
    for (int j = 0; j < VXQ_LANES; j++) r = m[j] > r ? m[j] : r;
    return r;
}

/* roundf (half away from zero) through truncf, which vectorizes; exact for |v| < 2^23 */
static inline float VXQ(round_away)(float v) {
    float t = truncf(v), f = v - t; /* v - t is exact */
    return t + (f >= 0.5f ? 1.0f : (f <= -0.5f ? -1.0f : 0.0f));
}

static inline int VXQ(q8_0)(const float *x, uint8_t *out) {
    float amax = VXQ(amax32)(x);
    float d = amax / 127.0f, id = VXQ(inverse)(1.0f, d);
    uint16_t h = VXQ(to_f16)(d);
    VXQ(put_f16)(out, h);
#if defined(__AVX2__)
    /* round_away in registers: trunc, then +-1 where the exact remainder reaches a half */
    __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    __m256i q4[4];
    for (int k = 0; k < 4; k++) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid);
        __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        __m256 f = _mm256_sub_ps(v, t);
        __m256 up = _mm256_and_ps(_mm256_cmp_ps(f, half, _CMP_GE_OQ), one);
        __m256 down = _mm256_and_ps(_mm256_cmp_ps(f, _mm256_sub_ps(_mm256_setzero_ps(), half), _CMP_LE_OQ), one);
        q4[k] = _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_sub_ps(up, down)));
    }
    __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q4[0], q4[1]), _mm256_packs_epi32(q4[2], q4[3]));
    b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)); /* undo the per-lane packs */
    _mm256_storeu_si256((__m256i *)(out + 2), b);
#else
    int32_t q[32];
    for (int i = 0; i < 32; i++) q[i] = (int32_t)VXQ(round_away)(x[i] * id);
    for (int i = 0; i < 32; i++) out[2 + i] = (uint8_t)(int8_t)q[i];
#endif
    return (h & 0x7c00u) == 0x7c00u ? VXQ_F_OVERFLOW : 0;
}

static inline int VXQ(q4_0)(const float *x, uint8_t *out) {
    /* the signed value of largest magnitude (first one) maps to -8 */
    float amax = VXQ(amax32)(x), max = 0.0f;
    for (int i = 0; i < 32; i++) {
        if (fabsf(x[i]) == amax) {
            max = x[i];
            break;
        }
    }
    float d = max / -8.0f, id = VXQ(inverse)(1.0f, d);
    uint16_t h = VXQ(to_f16)(d);
    VXQ(put_f16)(out, h);
#if defined(__AVX2__)
    /* truncation then clamping in int32 equals truncf then clamping in float (|values| < 2^31) */
    __m256 vid = _mm256_set1_ps(id), bias = _mm256_set1_ps(8.5f);
    __m256i zero = _mm256_setzero_si256(), fifteen = _mm256_set1_epi32(15), q4[4];
    for (int k = 0; k < 4; k++) {
        __m256i t = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid), bias));
        q4[k] = _mm256_min_epi32(_mm256_max_epi32(t, zero), fifteen);
    }
    /* weights 0..15 low nibbles, 16..31 high: both halves packed in the same (per-lane) order */
    __m256i lo = _mm256_packs_epi32(q4[0], q4[1]), hi = _mm256_packs_epi32(q4[2], q4[3]);
    __m256i c = _mm256_permute4x64_epi64(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), 0xD8);
    _mm_storeu_si128((__m128i *)(out + 2), _mm_packus_epi16(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1)));
#else
    uint8_t q[32];
    for (int i = 0; i < 32; i++) {
        float t = truncf(x[i] * id + 8.5f);
        q[i] = (uint8_t)(t < 0.0f ? 0.0f : (t > 15.0f ? 15.0f : t));
    }
    for (int i = 0; i < 16; i++) out[2 + i] = (uint8_t)(q[i] | (q[16 + i] << 4));
#endif
    return (h & 0x7c00u) == 0x7c00u ? VXQ_F_OVERFLOW : 0;
}

/* ---- q4_k ------------------------------------------------------------------ */

static inline float VXQ(lanes_sum)(const float *v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* sum w q, sum w q q, sum w q x for the levels q = clip(rint(inv * xc), 0, 15);
 * lane j sums values j, j + 8, j + 16, j + 24 (the AVX2 build: one register per sum) */
static inline void VXQ(level_sums)(const float *x, const float *xc, const float *w, float inv, double *sl, double *sl2,
                                   double *sxl) {
    float a[VXQ_LANES] = {0}, b[VXQ_LANES] = {0}, c[VXQ_LANES] = {0};
#if defined(__AVX2__)
    __m256 va = _mm256_setzero_ps(), vb = va, vc = va, vinv = _mm256_set1_ps(inv);
    __m256 zero = va, fifteen = _mm256_set1_ps(15.0f);
    for (int k = 0; k < 32; k += VXQ_LANES) {
        __m256 q = _mm256_round_ps(_mm256_mul_ps(vinv, _mm256_loadu_ps(xc + k)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm256_min_ps(_mm256_max_ps(q, zero), fifteen); /* as q < 0 ? 0 : q > 15 ? 15 : q (no NaN here) */
        __m256 wq = _mm256_mul_ps(_mm256_loadu_ps(w + k), q);
        va = _mm256_add_ps(va, wq);
        vb = _mm256_add_ps(vb, _mm256_mul_ps(wq, q));
        vc = _mm256_add_ps(vc, _mm256_mul_ps(wq, _mm256_loadu_ps(x + k)));
    }
    _mm256_storeu_ps(a, va);
    _mm256_storeu_ps(b, vb);
    _mm256_storeu_ps(c, vc);
#else
    for (int k = 0; k < 32; k += VXQ_LANES) {
        for (int j = 0; j < VXQ_LANES; j++) {
            float q = rintf(inv * xc[k + j]);
            q = q < 0.0f ? 0.0f : (q > 15.0f ? 15.0f : q);
            float wq = w[k + j] * q;
            a[j] += wq;
            b[j] += wq * q;
            c[j] += wq * x[k + j];
        }
    }
#endif
    /* the lanes sum in float (as the AVX2 body does); the fit goes on in double */
    *sl = (double)VXQ(lanes_sum)(a);
    *sl2 = (double)VXQ(lanes_sum)(b);
    *sxl = (double)VXQ(lanes_sum)(c);
}

/* Per 32 weights x (weights w): scale >= 0 and offset >= 0 with x ~ scale q - offset,
 * q in 0..15, minimizing sum w (scale q - offset - x)^2 over qformats' candidate grids. */
static inline void VXQ(fit_scale_min)(const float *x, const float *w, float *scale_out, float *offset_out) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < 32; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    lo = lo < 0.0f ? lo : 0.0f; /* offsets are stored as -min >= 0 */
    float span = hi - lo;
    int flat = span < 1e-30f; /* a range fp16 scales cannot hold (or none): scale 0 */
    if (flat) span = 1.0f;
    float xc[32];
    float aw[VXQ_LANES] = {0}, ax[VXQ_LANES] = {0}, ax2[VXQ_LANES] = {0};
    for (int k = 0; k < 32; k += VXQ_LANES) {
        for (int j = 0; j < VXQ_LANES; j++) {
            float xi = x[k + j], wi = w[k + j];
            xc[k + j] = xi - lo;
            aw[j] += wi;
            ax[j] += wi * xi;
            ax2[j] += (wi * xi) * xi;
        }
    }
    /* float lane sums, widened explicitly: the candidate errors are computed in double */
    double sum_w = (double)VXQ(lanes_sum)(aw), sum_x = (double)VXQ(lanes_sum)(ax), sum_x2 = (double)VXQ(lanes_sum)(ax2);
    double sl, sl2, sxl;

#define VXQ_ERR(s, m) \
    ((s) * (s) * sl2 + (m) * (m) * sum_w + sum_x2 - 2 * (s) * sxl + 2 * (s) * (m) * sl - 2 * (m) * sum_x)

    /* start: the plain min/max grid */
    double best_scale = (double)(span / 15.0f), best_min = (double)lo;
    VXQ(level_sums)(x, xc, w, 15.0f / span, &sl, &sl2, &sxl);
    double best_err = VXQ_ERR(best_scale, best_min);
    for (int i = 0; i <= 20; i++) {
        float inv = (float)(15.0 + -1.0 + 0.1 * i) / span;
        VXQ(level_sums)(x, xc, w, inv, &sl, &sl2, &sxl);
        double det = sum_w * sl2 - sl * sl;
        if (!(det > 0)) continue;
        double s = (sum_w * sxl - sum_x * sl) / det;
        double m = (sl2 * sum_x - sl * sxl) / det;
        if (m > 0) { /* a positive min cannot be stored: refit the scale alone with min = 0 */
            s = sxl / (sl2 > 0 ? sl2 : 1.0);
            m = 0.0;
        }
        double err = VXQ_ERR(s, m);
        if (err < best_err && s >= 0) {
            best_scale = s;
            best_min = m;
            best_err = err;
        }
    }
#undef VXQ_ERR
    *scale_out = flat ? 0.0f : (float)best_scale;
    *offset_out = (float)(-best_min);
}

static inline int VXQ(q4_k)(const float *x, uint8_t *out) {
    /* weights of the fit (as llama.cpp): the super-block's RMS plus |x| */
    float acc[VXQ_LANES] = {0};
    for (int k = 0; k < 256; k += VXQ_LANES)
        for (int j = 0; j < VXQ_LANES; j++) acc[j] += x[k + j] * x[k + j];
    float rms = sqrtf(VXQ(lanes_sum)(acc) / 256.0f);
    float scale[8], offset[8], w[32];
    for (int s = 0; s < 8; s++) {
        for (int i = 0; i < 32; i++) w[i] = rms + fabsf(x[32 * s + i]);
        VXQ(fit_scale_min)(x + 32 * s, w, &scale[s], &offset[s]);
    }
    /* 6-bit sub-block scales and offsets against the super-block's fp16 d, dmin */
    float max_scale = scale[0], max_offset = offset[0];
    for (int s = 1; s < 8; s++) {
        max_scale = fmaxf(max_scale, scale[s]);
        max_offset = fmaxf(max_offset, offset[s]);
    }
    uint16_t hd = VXQ(to_f16)(max_scale / 63.0f), hm = VXQ(to_f16)(max_offset / 63.0f);
    int flags = ((hd & 0x7c00u) == 0x7c00u || (hm & 0x7c00u) == 0x7c00u) ? VXQ_F_OVERFLOW : 0;
    float inv_s = VXQ(inverse)(63.0f, max_scale), inv_m = VXQ(inverse)(63.0f, max_offset);
    uint8_t sc[8], mn[8];
    for (int s = 0; s < 8; s++) {
        float a = rintf(scale[s] * inv_s), b = rintf(offset[s] * inv_m);
        sc[s] = (uint8_t)(a < 0.0f ? 0.0f : (a > 63.0f ? 63.0f : a));
        mn[s] = (uint8_t)(b < 0.0f ? 0.0f : (b > 63.0f ? 63.0f : b));
    }
    /* levels against the scales as stored, so that dequantization sees what was fitted */
    float d = VXQ(from_f16)(hd), dmin = VXQ(from_f16)(hm);
    uint8_t q[256];
    for (int s = 0; s < 8; s++) {
        float step = d * (float)sc[s], shift = dmin * (float)mn[s];
        float safe = step > 0.0f ? step : 1.0f;
        for (int i = 0; i < 32; i++) {
            float t = rintf((x[32 * s + i] + shift) / safe);
            t = t < 0.0f ? 0.0f : (t > 15.0f ? 15.0f : t);
            q[32 * s + i] = step > 0.0f ? (uint8_t)t : 0;
        }
    }
    VXQ(put_f16)(out, hd);
    VXQ(put_f16)(out + 2, hm);
    for (int j = 0; j < 4; j++) {
        out[4 + j] = (uint8_t)((sc[j] & 63) | ((sc[4 + j] >> 4) << 6));
        out[8 + j] = (uint8_t)((mn[j] & 63) | ((mn[4 + j] >> 4) << 6));
        out[12 + j] = (uint8_t)((sc[4 + j] & 0x0f) | ((mn[4 + j] & 0x0f) << 4));
    }
    /* 64 weights per 32 bytes: sub-block 2c in the low nibbles, 2c+1 in the high */
    for (int c = 0; c < 4; c++)
        for (int i = 0; i < 32; i++) out[16 + 32 * c + i] = (uint8_t)(q[64 * c + i] | (q[64 * c + 32 + i] << 4));
    return flags;
}

int VXQ(vx_quantize_blocks)(const void *src, int src_bf16, uint8_t *dst, int qtype, int64_t b0, int64_t b1) {
    int flags = 0;
    float x[256];
    for (int64_t b = b0; b < b1; b++) {
        switch (qtype) {
        case VX_Q8_0:
            flags |= VXQ(load)(src, src_bf16, b * 32, 32, x);
            flags |= VXQ(q8_0)(x, dst + b * 34);
            break;
        case VX_Q4_0:
            flags |= VXQ(load)(src, src_bf16, b * 32, 32, x);
            flags |= VXQ(q4_0)(x, dst + b * 18);
            break;
        default:
            flags |= VXQ(load)(src, src_bf16, b * 256, 256, x);
            flags |= VXQ(q4_k)(x, dst + b * 144);
            break;
        }
    }
    return flags;
}
