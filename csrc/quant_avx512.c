/* AVX-512 VNNI quantized-weight kernels (-mavx512f/bw/dq/vl/vnni): 512-bit
 * vpdpbusd (u8 x s8 -> int32) over two 32-value blocks per vector (q4_k: two
 * sub-blocks), tiles of 4 x rows by 4 weight rows.
 * q8_0 (s8 x s8): (w + 128) as u8 times x, minus 128 * sum(x); q4_0: nibbles
 * times x, minus 8 * sum(x); both corrections ride in as the dot product's
 * initial value. q4_k subtracts the mins once per super-block.
 * Each output (m, n) keeps one 16-lane fp32 accumulator: per block pair
 * acc += (float(isum lanes) * dx) * dw, reduced by one fixed tree at the end,
 * whatever the tile: row-deterministic. */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(VX_HAVE_AVX512VNNI)
#include "vx_quant.h"

#include <immintrin.h>

#if defined(_MSC_VER) && !defined(__clang__)
#define VX_INLINE static __forceinline
#else
#define VX_INLINE static inline __attribute__((always_inline))
#endif

/* Software prefetch along each weight row, about once per cache line: the
 * GEMV (M=1) streams 4 rows at once, which the hardware prefetchers alone
 * do not keep far enough ahead (measured: +30-60% on cold q4_0/q8_0 rows;
 * distances 384..4096 and an L2 hint made no clear difference). */
#define VX_PREFETCH_BYTES 1536
#define VX_PREFETCH_HINT _MM_HINT_T0

VX_INLINE float hsum16(__m512 v) {
    __m256 s8 =
        _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* lanes 0..7 <- element 0, lanes 8..15 <- element 1 */
VX_INLINE __m512i pair_index(void) { return _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1); }

/* fp16 scales of blocks at p and p + stride (stride 0: one block, upper half 0) */
VX_INLINE __m512 f16_pair(const uint8_t *p, int64_t stride, int single) {
    const uint32_t h = (uint32_t)vx_load_u16(p) | (single ? 0u : (uint32_t)vx_load_u16(p + stride) << 16);
    return _mm512_permutexvar_ps(pair_index(), _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128((int)h))));
}

/* Activation side of block pair (b, b+1) of one x row: values, scales, and
 * -k * block sums in lanes 0 and 8 (the weights' offset); `single`: block b only. */
VX_INLINE void act_pair(const int8_t *xq, const float *xd, const int32_t *xs, int64_t b, int shift, int single,
                        __m512i *xv, __m512 *dx, __m512i *corr) {
    const __m512i idx = pair_index();
    __m128i s;
    __m128 d;
    if (single) {
        *xv = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(xq + b * 32)));
        s = _mm_cvtsi32_si128(xs[b]);
        d = _mm_load_ss(xd + b);
    } else {
        *xv = _mm512_loadu_si512((const void *)(xq + b * 32));
        s = _mm_loadl_epi64((const __m128i *)(xs + b));
        d = _mm_castpd_ps(_mm_load_sd((const double *)(xd + b)));
    }
    *dx = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(d));
    *corr = shift
                ? _mm512_maskz_permutexvar_epi32(
                      0x0101, idx, _mm512_castsi128_si512(_mm_sub_epi32(_mm_setzero_si128(), _mm_slli_epi32(s, shift))))
                : _mm512_setzero_si512();
}

/* Pairs per step: a lone x row (decoder step) reads each weight row in runs
 * of 2 pairs before the next row (measured on cold rows: 1 pair 14 GB/s,
 * 2 pairs 18, 4 pairs 9, one thread). Every accumulator still sees its block
 * pairs in ascending order, so the step never changes results. */
#define VX_PAIRS(mr) ((mr) == 1 ? 2 : 1)

/* G consecutive block pairs from block b (the last pair may be a single block) */
VX_INLINE void step_q8_0(const vx_qx *x, int64_t K, const uint8_t *w, int64_t rb, int64_t nb, int64_t b,
                         __m512 acc[4][4], const int G, const int mr, const int nr) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    (void)K;
    __m512i xv[4][4], corr[4][4];
    __m512 dx[4][4];
    for (int g = 0; g < G; g++)
        for (int m = 0; m < mr; m++)
            act_pair(x->q + m * K, x->d + m * nb, x->s + m * nb, b + 2 * g, 7, b + 2 * g + 1 == nb, &xv[g][m],
                     &dx[g][m], &corr[g][m]);
    for (int n = 0; n < nr; n++)
        for (int g = 0; g < G; g++) {
            const int single = b + 2 * g + 1 == nb;
            const uint8_t *p = w + n * rb + (b + 2 * g) * VX_Q8_0_BYTES;
            _mm_prefetch((const char *)(p + VX_PREFETCH_BYTES), VX_PREFETCH_HINT); /* a pair: ~ once a line */
            __m512i wv = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 2)));
            if (!single) wv = _mm512_inserti64x4(wv, _mm256_loadu_si256((const __m256i *)(p + VX_Q8_0_BYTES + 2)), 1);
            wv = _mm512_xor_si512(wv, flip); /* s8 -> u8 (w + 128); upper half of a single block meets x = 0 */
            const __m512 dw = f16_pair(p, VX_Q8_0_BYTES, single);
            for (int m = 0; m < mr; m++) {
                const __m512i isum = _mm512_dpbusd_epi32(corr[g][m], wv, xv[g][m]);
                acc[m][n] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum), dx[g][m]), dw, acc[m][n]);
            }
        }
}

VX_INLINE void step_q4_0(const vx_qx *x, int64_t K, const uint8_t *w, int64_t rb, int64_t nb, int64_t b,
                         __m512 acc[4][4], const int G, const int mr, const int nr) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    __m512i xv[4][4], corr[4][4];
    __m512 dx[4][4];
    for (int g = 0; g < G; g++)
        for (int m = 0; m < mr; m++)
            act_pair(x->q + m * K, x->d + m * nb, x->s + m * nb, b + 2 * g, 3, b + 2 * g + 1 == nb, &xv[g][m],
                     &dx[g][m], &corr[g][m]);
    for (int n = 0; n < nr; n++)
        for (int g = 0; g < G; g++) {
            const int single = b + 2 * g + 1 == nb;
            const uint8_t *p = w + n * rb + (b + 2 * g) * VX_Q4_0_BYTES;
            if (g % 2 == 0) _mm_prefetch((const char *)(p + VX_PREFETCH_BYTES), VX_PREFETCH_HINT); /* ~ once a line */
            /* [qs_b, qs_b, qs_b1, qs_b1] >> [0, 4, 0, 4] & 15: lanes match x (weights 0..15, 16..31 of each block) */
            __m512i z = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(p + 2)));
            if (!single)
                z = _mm512_mask_broadcast_i32x4(z, 0xff00, _mm_loadu_si128((const __m128i *)(p + VX_Q4_0_BYTES + 2)));
            z = _mm512_and_si512(_mm512_mask_srli_epi64(z, 0xcc, z, 4), low4);
            const __m512 dw = f16_pair(p, VX_Q4_0_BYTES, single);
            for (int m = 0; m < mr; m++) {
                const __m512i isum = _mm512_dpbusd_epi32(corr[g][m], z, xv[g][m]);
                acc[m][n] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum), dx[g][m]), dw, acc[m][n]);
            }
        }
}

#define VX_DEFINE_PAIR_TILE(fmt)                                                                                  \
    VX_INLINE void tile_##fmt(const vx_qx *x, int64_t K, const uint8_t *w, int64_t rb, int64_t nb, float r[4][4], \
                              const int mr, const int nr) {                                                       \
        __m512 acc[4][4];                                                                                         \
        for (int m = 0; m < mr; m++)                                                                              \
            for (int n = 0; n < nr; n++) acc[m][n] = _mm512_setzero_ps();                                         \
        int64_t b = 0;                                                                                            \
        for (; b + 2 * VX_PAIRS(mr) <= nb; b += 2 * VX_PAIRS(mr))                                                 \
            step_##fmt(x, K, w, rb, nb, b, acc, VX_PAIRS(mr), mr, nr);                                            \
        for (; b < nb; b += 2) step_##fmt(x, K, w, rb, nb, b, acc, 1, mr, nr);                                    \
        for (int m = 0; m < mr; m++)                                                                              \
            for (int n = 0; n < nr; n++) r[m][n] = hsum16(acc[m][n]);                                             \
    }

VX_DEFINE_PAIR_TILE(q8_0)
VX_DEFINE_PAIR_TILE(q4_0)

VX_INLINE void tile_q4_k(const vx_qx *x, int64_t K, const uint8_t *w, int64_t rb, int64_t nsb, float r[4][4],
                         const int mr, const int nr) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const int64_t xnb = K / 32;
    __m512 acc[4][4];
    for (int m = 0; m < mr; m++)
        for (int n = 0; n < nr; n++) acc[m][n] = _mm512_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        __m512 dsc[4], dmn[4]; /* d * sc_j and dmin * m_j in lanes 0..7 */
        for (int n = 0; n < nr; n++) {
            const uint8_t *p = w + n * rb + sb * VX_Q4_K_BYTES;
            uint64_t sc, mn;
            vx_q4k_scales(p + 4, &sc, &mn);
            const __m256 d = _mm256_set1_ps(_cvtsh_ss(vx_load_u16(p))),
                         dmin = _mm256_set1_ps(_cvtsh_ss(vx_load_u16(p + 2)));
            dsc[n] = _mm512_castps256_ps512(
                _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc)))));
            dmn[n] = _mm512_zextps256_ps512(
                _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mn)))));
        }
        for (int c = 0; c < 4; c++) { /* 32 bytes: low nibbles = sub-block 2c, high = 2c+1 */
            const __m512i idx = _mm512_add_epi32(pair_index(), _mm512_set1_epi32(2 * c));
            __m512i xv[4], corr[4];
            __m512 dx[4];
            for (int m = 0; m < mr; m++)
                act_pair(x->q + m * K + sb * 256, x->d + m * xnb + sb * 8, x->s + m * xnb + sb * 8, 2 * c, 0, 0, &xv[m],
                         &dx[m], &corr[m]);
            for (int n = 0; n < nr; n++) {
                __m512i z = _mm512_broadcast_i64x4(
                    _mm256_loadu_si256((const __m256i *)(w + n * rb + sb * VX_Q4_K_BYTES + 16 + 32 * c)));
                z = _mm512_and_si512(_mm512_mask_srli_epi64(z, 0xf0, z, 4), low4);
                const __m512 s = _mm512_permutexvar_ps(idx, dsc[n]);
                for (int m = 0; m < mr; m++) {
                    const __m512i isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), z, xv[m]);
                    acc[m][n] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum), dx[m]), s, acc[m][n]);
                }
            }
        }
        for (int m = 0; m < mr; m++) { /* mins: lanes 0..7 get (dx_j * sum_j(x)) * (dmin * m_j) */
            const __m512 fx = _mm512_zextps256_ps512(
                _mm256_mul_ps(_mm256_loadu_ps(x->d + m * xnb + sb * 8),
                              _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(x->s + m * xnb + sb * 8)))));
            for (int n = 0; n < nr; n++) acc[m][n] = _mm512_fnmadd_ps(fx, dmn[n], acc[m][n]);
        }
    }
    for (int m = 0; m < mr; m++)
        for (int n = 0; n < nr; n++) r[m][n] = hsum16(acc[m][n]);
}

VX_DEFINE_QGEMM(gemm_q8_0_avx512vnni, tile_q8_0, VX_Q8_0_BYTES, 32, 4)
VX_DEFINE_QGEMM(gemm_q4_0_avx512vnni, tile_q4_0, VX_Q4_0_BYTES, 32, 4)
VX_DEFINE_QGEMM(gemm_q4_k_avx512vnni, tile_q4_k, VX_Q4_K_BYTES, 256, 4)

uint64_t vx_read_lines_avx512(const uint64_t *p, int64_t lo, int64_t hi) {
    /* VX_READ_STREAMS sub-ranges in lockstep, like the rows of a GEMV tile */
    const int64_t len = (hi - lo) / VX_READ_STREAMS;
    __m512i acc[VX_READ_STREAMS];
    for (int s = 0; s < VX_READ_STREAMS; s++) acc[s] = _mm512_setzero_si512();
    for (int64_t i = 0; i < len; i++)
        for (int s = 0; s < VX_READ_STREAMS; s++)
            acc[s] = _mm512_xor_si512(acc[s], _mm512_loadu_si512((const void *)(p + (lo + s * len + i) * 8)));
    for (int64_t i = lo + VX_READ_STREAMS * len; i < hi; i++)
        acc[0] = _mm512_xor_si512(acc[0], _mm512_loadu_si512((const void *)(p + i * 8)));
    for (int s = 1; s < VX_READ_STREAMS; s++) acc[0] = _mm512_xor_si512(acc[0], acc[s]);
    const __m256i y = _mm256_xor_si256(_mm512_castsi512_si256(acc[0]), _mm512_extracti64x4_epi64(acc[0], 1));
    const __m128i c = _mm_xor_si128(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
    return (uint64_t)_mm_cvtsi128_si64(c) ^ (uint64_t)_mm_extract_epi64(c, 1);
}

const vx_qops vx_qops_avx512vnni = {"avx512vnni", {gemm_q8_0_avx512vnni, gemm_q4_0_avx512vnni, gemm_q4_k_avx512vnni}};
#endif
