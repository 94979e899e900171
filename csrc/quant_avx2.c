/* AVX2 quantized-weight kernels (-mavx2 -mfma -mf16c), 256-bit: one 32-value
 * block per vector. u8 x s8 products: maddubs + madd here, the AVX-VNNI
 * vpdpbusd when quant_avxvnni.c includes this file with VX_QUANT_AVXVNNI.
 * q8_0 (s8 x s8) uses |w| x sign(x, w); q4_0 adds -8 * sum(x) to the block's
 * int32 lanes; q4_k subtracts the mins once per super-block.
 * Each output (m, n) keeps one 8-lane fp32 accumulator: per block
 * acc += (float(isum lanes) * dx) * dw, reduced by one fixed tree at the end,
 * whatever the tile: row-deterministic. */
#if defined(__x86_64__) || defined(_M_X64)
#include "vx_quant.h"

#include "simd_avx2.h"

#if defined(VX_QUANT_AVXVNNI)
#define VX_SUFFIX avxvnni
VX_INLINE __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_avx_epi32(acc, u, s); }
#else
#define VX_SUFFIX avx2
VX_INLINE __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
    /* u <= 255 (q8_0 |w| <= 128, nibbles <= 15), |s| <= 127: pair sums fit int16 */
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}
#endif

/* 16 accumulators do not fit 16 ymm registers with the operands: tiles of
 * 2 x rows by 4 weight rows (the tile shape never changes results). */
#define VX_MR 2
/* software prefetch distance along each weight row (about once per line):
 * measured +2-3x on cold q4_k/q8_0 rows with one thread */
#define VX_PREFETCH_BYTES 1536
#define VX_NR 4


VX_INLINE __m256 f16x1(const uint8_t *p) { return _mm256_set1_ps(_cvtsh_ss(vx_load_u16(p))); }

VX_INLINE __m256 scaled(__m256i isum, const float *dx) {
    return _mm256_mul_ps(_mm256_cvtepi32_ps(isum), _mm256_broadcast_ss(dx));
}

/* Blocks per row step: a lone x row (decoder step) reads each weight row in
 * runs of G blocks before the next row, which with the software prefetch
 * keeps more memory requests in flight. Every accumulator still sees its
 * blocks in ascending order, so G never changes results. */
#define VX_GROUP(mr) ((mr) == 1 ? 4 : 1)

VX_INLINE void step_q8_0(const vx_qx *x, int64_t K, const uint8_t *w, int64_t rb, int64_t nb, int64_t b,
                         __m256 acc[VX_MR][VX_NR], const int G, const int mr, const int nr) {
    for (int n = 0; n < nr; n++)
        for (int g = 0; g < G; g++) {
            const uint8_t *p = w + n * rb + (b + g) * VX_Q8_0_BYTES;
            if (g % 2 == 0) _mm_prefetch((const char *)(p + VX_PREFETCH_BYTES), _MM_HINT_T0); /* ~ once a line */
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(p + 2));
            const __m256i wa = _mm256_abs_epi8(wv);
            const __m256 dw = f16x1(p);
            for (int m = 0; m < mr; m++) {
                const __m256i xv = _mm256_loadu_si256((const __m256i *)(x->q + m * K + (b + g) * 32));
                const __m256i isum = dot_u8s8(_mm256_setzero_si256(), wa, _mm256_sign_epi8(xv, wv));
                acc[m][n] = _mm256_fmadd_ps(scaled(isum, x->d + m * nb + b + g), dw, acc[m][n]);
            }
        }
}

VX_INLINE void step_q4_0(const vx_qx *x, int64_t K, const uint8_t *w, int64_t rb, int64_t nb, int64_t b,
                         __m256 acc[VX_MR][VX_NR], const int G, const int mr, const int nr) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256i corr[4][VX_MR]; /* -8 * sum(x block) in lane 0: the weights' nibble offset */
    for (int g = 0; g < G; g++)
        for (int m = 0; m < mr; m++) corr[g][m] = _mm256_setr_epi32(-8 * x->s[m * nb + b + g], 0, 0, 0, 0, 0, 0, 0);
    for (int n = 0; n < nr; n++)
        for (int g = 0; g < G; g++) {
            const uint8_t *p = w + n * rb + (b + g) * VX_Q4_0_BYTES;
            if (g % 4 == 0) _mm_prefetch((const char *)(p + VX_PREFETCH_BYTES), _MM_HINT_T0); /* ~ once a line */
            const __m128i y = _mm_loadu_si128((const __m128i *)(p + 2));
            /* weights 0..15 = low nibbles, 16..31 = high nibbles */
            const __m256i wv =
                _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(y), _mm_srli_epi16(y, 4), 1), low4);
            const __m256 dw = f16x1(p);
            for (int m = 0; m < mr; m++) {
                const __m256i xv = _mm256_loadu_si256((const __m256i *)(x->q + m * K + (b + g) * 32));
                const __m256i isum = dot_u8s8(corr[g][m], wv, xv);
                acc[m][n] = _mm256_fmadd_ps(scaled(isum, x->d + m * nb + b + g), dw, acc[m][n]);
            }
        }
}

#define VX_DEFINE_BLOCK_TILE(fmt, VX_GROUP)                                                                          \
    VX_INLINE void tile_##fmt(const vx_qx *x, int64_t K, const uint8_t *w, int64_t rb, int64_t nb, float r[4][4],    \
                              const int mr, const int nr) {                                                          \
        __m256 acc[VX_MR][VX_NR];                                                                                    \
        for (int m = 0; m < mr; m++)                                                                                 \
            for (int n = 0; n < nr; n++) acc[m][n] = _mm256_setzero_ps();                                            \
        int64_t b = 0;                                                                                               \
        for (; b + VX_GROUP(mr) <= nb; b += VX_GROUP(mr)) step_##fmt(x, K, w, rb, nb, b, acc, VX_GROUP(mr), mr, nr); \
        for (; b < nb; b++) step_##fmt(x, K, w, rb, nb, b, acc, 1, mr, nr);                                          \
        for (int m = 0; m < mr; m++)                                                                                 \
            for (int n = 0; n < nr; n++) r[m][n] = hsum8(acc[m][n]);                                                 \
    }

/* q4_0 (18-byte blocks): 2 blocks per step measured best on cold rows
 * (one thread: 1 -> 6.7, 2 -> 8.6, 8 -> 7.3 GB/s) */
#define VX_GROUP_Q4_0(mr) ((mr) == 1 ? 2 : 1)
VX_DEFINE_BLOCK_TILE(q8_0, VX_GROUP)
VX_DEFINE_BLOCK_TILE(q4_0, VX_GROUP_Q4_0)

VX_INLINE void tile_q4_k(const vx_qx *x, int64_t K, const uint8_t *w, int64_t rb, int64_t nsb, float r[4][4],
                         const int mr, const int nr) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const int64_t xnb = K / 32;
    __m256 acc[VX_MR][VX_NR];
    for (int m = 0; m < mr; m++)
        for (int n = 0; n < nr; n++) acc[m][n] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        float dsc[VX_NR][8]; /* d * sc_j per weight row */
        __m256 dmn[VX_NR];   /* dmin * m_j */
        for (int n = 0; n < nr; n++) {
            const uint8_t *p = w + n * rb + sb * VX_Q4_K_BYTES;
            _mm_prefetch((const char *)(p + VX_PREFETCH_BYTES), _MM_HINT_T0);
            _mm_prefetch((const char *)(p + VX_PREFETCH_BYTES + 64), _MM_HINT_T0);
            _mm_prefetch((const char *)(p + VX_PREFETCH_BYTES + 128), _MM_HINT_T0);
            uint64_t sc, mn;
            vx_q4k_scales(p + 4, &sc, &mn);
            const __m256 d = f16x1(p), dmin = f16x1(p + 2);
            _mm256_storeu_ps(
                dsc[n], _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc)))));
            dmn[n] = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mn))));
        }
        for (int c = 0; c < 4; c++) { /* 32 bytes: low nibbles = sub-block 2c, high = 2c+1 */
            for (int n = 0; n < nr; n++) {
                const __m256i y = _mm256_loadu_si256((const __m256i *)(w + n * rb + sb * VX_Q4_K_BYTES + 16 + 32 * c));
                const __m256i wl = _mm256_and_si256(y, low4), wh = _mm256_and_si256(_mm256_srli_epi16(y, 4), low4);
                const __m256 sl = _mm256_broadcast_ss(&dsc[n][2 * c]), sh = _mm256_broadcast_ss(&dsc[n][2 * c + 1]);
                for (int m = 0; m < mr; m++) {
                    const int8_t *xq = x->q + m * K + sb * 256 + 64 * c;
                    const float *dx = x->d + m * xnb + sb * 8 + 2 * c;
                    const __m256i il = dot_u8s8(_mm256_setzero_si256(), wl, _mm256_loadu_si256((const __m256i *)xq));
                    const __m256i ih =
                        dot_u8s8(_mm256_setzero_si256(), wh, _mm256_loadu_si256((const __m256i *)(xq + 32)));
                    acc[m][n] = _mm256_fmadd_ps(scaled(il, dx), sl, acc[m][n]);
                    acc[m][n] = _mm256_fmadd_ps(scaled(ih, dx + 1), sh, acc[m][n]);
                }
            }
        }
        for (int m = 0; m < mr; m++) { /* mins: sum_j (dx_j * sum_j(x)) * (dmin * m_j) */
            const __m256 fx =
                _mm256_mul_ps(_mm256_loadu_ps(x->d + m * xnb + sb * 8),
                              _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(x->s + m * xnb + sb * 8))));
            for (int n = 0; n < nr; n++) acc[m][n] = _mm256_fnmadd_ps(fx, dmn[n], acc[m][n]);
        }
    }
    for (int m = 0; m < mr; m++)
        for (int n = 0; n < nr; n++) r[m][n] = hsum8(acc[m][n]);
}

#define VX_CAT2(a, b) a##_##b
#define VX_CAT(a, b) VX_CAT2(a, b)
#define VX_GEMM(fmt) VX_CAT(gemm_##fmt, VX_SUFFIX)

VX_DEFINE_QGEMM(VX_GEMM(q8_0), tile_q8_0, VX_Q8_0_BYTES, 32, 2)
VX_DEFINE_QGEMM(VX_GEMM(q4_0), tile_q4_0, VX_Q4_0_BYTES, 32, 2)
VX_DEFINE_QGEMM(VX_GEMM(q4_k), tile_q4_k, VX_Q4_K_BYTES, 256, 2)

#if !defined(VX_QUANT_AVXVNNI)
uint64_t vx_read_lines_avx2(const uint64_t *p, int64_t lo, int64_t hi) {
    /* VX_READ_STREAMS sub-ranges in lockstep, like the rows of a GEMV tile */
    const int64_t len = (hi - lo) / VX_READ_STREAMS;
    __m256i acc[VX_READ_STREAMS];
    for (int s = 0; s < VX_READ_STREAMS; s++) acc[s] = _mm256_setzero_si256();
    for (int64_t i = 0; i < len; i++)
        for (int s = 0; s < VX_READ_STREAMS; s++) {
            const __m256i *l = (const __m256i *)(p + (lo + s * len + i) * 8);
            acc[s] = _mm256_xor_si256(acc[s], _mm256_xor_si256(_mm256_loadu_si256(l), _mm256_loadu_si256(l + 1)));
        }
    for (int64_t i = lo + VX_READ_STREAMS * len; i < hi; i++) {
        const __m256i *l = (const __m256i *)(p + i * 8);
        acc[0] = _mm256_xor_si256(acc[0], _mm256_xor_si256(_mm256_loadu_si256(l), _mm256_loadu_si256(l + 1)));
    }
    for (int s = 1; s < VX_READ_STREAMS; s++) acc[0] = _mm256_xor_si256(acc[0], acc[s]);
    const __m128i c = _mm_xor_si128(_mm256_castsi256_si128(acc[0]), _mm256_extracti128_si256(acc[0], 1));
    return (uint64_t)_mm_cvtsi128_si64(c) ^ (uint64_t)_mm_extract_epi64(c, 1);
}
#endif

#if defined(VX_QUANT_AVXVNNI)
const vx_qops vx_qops_avxvnni = {"avxvnni", {VX_GEMM(q8_0), VX_GEMM(q4_0), VX_GEMM(q4_k)}};
#else
const vx_qops vx_qops_avx2 = {"avx2", {VX_GEMM(q8_0), VX_GEMM(q4_0), VX_GEMM(q4_k)}};
#endif
#endif
