/* AVX-512 VNNI (EVEX vpdpbusd, Ice Lake, Zen 4 and later): the repacked-
 * layout kernels of qpack_avx2.c with the u8 x s8 dot product in one
 * instruction and two 8-row groups side by side in one 512-bit vector
 * (lanes 0-7 one group, 8-15 another): each broadcast of activations,
 * each dot product and each fp32 step serves 16 weight rows, half the
 * instructions per weight of the 256-bit tile, which still serves the lone
 * group of an odd count. Every lane does the 256-bit tile's (and the scalar
 * kernel's) operations in the same order: the same bits.
 * Built with the AVX-512 flags and -ffp-contract=off; run only when the CPU
 * has it. */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(VX_HAVE_AVX512VNNI)
#define VX_QP_EVEX_VNNI 1
#define VX_QP_WIDE 1
#include "qpack_avx2.c"
#include "vx.h" /* the weight type ids */

#define VX_QP_PAIR (2 * VX_QP_ROWS)

/* 32 bytes at a (lanes 0-7's group) and at b (lanes 8-15's) as one vector */
VX_INLINE __m512i load_pair(const uint8_t *a, const uint8_t *b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a)),
                              _mm256_loadu_si256((const __m256i *)b), 1);
}

/* the 8 fp16 block scales at a and the 8 at b, as 16 floats */
VX_INLINE __m512 scales_pair(const uint8_t *a, const uint8_t *b) {
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)a)),
                                                   _mm_loadu_si128((const __m128i *)b), 1));
}

VX_INLINE __m512i bcast4_512(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* q4_0 and q8_0 (32-value blocks, an fp16 scale each) over a pair of groups;
 * qtype is a constant at every call, so each type gets its own loop. q4_0:
 * nibbles times x, the offset's -8 sum(x) the initial value; q8_0: (w + 128)
 * as u8 times x, -128 sum(x) the initial value. */
VX_INLINE void tile2_q32(const int qtype, const vx_qx *x, int64_t K, const uint8_t *g0, const uint8_t *g1, int64_t nb,
                         float r[VX_QP_MR][VX_QP_PAIR], const int mr) {
    const int q4 = qtype == VX_Q4_0;
    const __m512i low4 = _mm512_set1_epi8(0x0f), flip = _mm512_set1_epi8((char)0x80);
    const int64_t bb = (q4 ? VX_Q4_0_BYTES : VX_Q8_0_BYTES) * VX_QP_ROWS;
    const int32_t offset = q4 ? 8 : 128;
    __m512 acc[VX_QP_MR];
    for (int m = 0; m < mr; m++) acc[m] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *b0 = g0 + b * bb, *b1 = g1 + b * bb;
        if (mr > 1) prefetch_block(b0, bb);
        if (mr > 1) prefetch_block(b1, bb);
        __m512i isum[VX_QP_MR];
        for (int m = 0; m < mr; m++) isum[m] = _mm512_set1_epi32(-offset * x->s[m * nb + b]);
        for (int j = 0; j < (q4 ? 4 : 8); j++) { /* 32-byte chunks of the 8 rows' quants */
            const int64_t at = VX_Q_HEAD_BYTES * VX_QP_ROWS + 32 * j;
            const __m512i y = load_pair(b0 + at, b1 + at);
            if (q4) {
                const __m512i lo = _mm512_and_si512(y, low4), hi = _mm512_and_si512(_mm512_srli_epi16(y, 4), low4);
                for (int m = 0; m < mr; m++) {
                    const int8_t *xb = x->q + m * K + b * VX_QBLOCK + 4 * j;
                    isum[m] =
                        _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(isum[m], lo, bcast4_512(xb)), hi, bcast4_512(xb + 16));
                }
            } else {
                const __m512i u = _mm512_xor_si512(y, flip);
                for (int m = 0; m < mr; m++)
                    isum[m] = _mm512_dpbusd_epi32(isum[m], u, bcast4_512(x->q + m * K + b * VX_QBLOCK + 4 * j));
            }
        }
        const __m512 dw = scales_pair(b0, b1);
        for (int m = 0; m < mr; m++) {
            const __m512 s = _mm512_mul_ps(dw, _mm512_set1_ps(x->d[m * nb + b]));
            acc[m] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(isum[m]), acc[m]);
        }
    }
    for (int m = 0; m < mr; m++) _mm512_storeu_ps(r[m], acc[m]);
}

VX_INLINE void tile2_q4_0(const vx_qx *x, int64_t K, const uint8_t *g0, const uint8_t *g1, int64_t nb,
                          float r[VX_QP_MR][VX_QP_PAIR], const int mr) {
    tile2_q32(VX_Q4_0, x, K, g0, g1, nb, r, mr);
}

VX_INLINE void tile2_q8_0(const vx_qx *x, int64_t K, const uint8_t *g0, const uint8_t *g1, int64_t nb,
                          float r[VX_QP_MR][VX_QP_PAIR], const int mr) {
    tile2_q32(VX_Q8_0, x, K, g0, g1, nb, r, mr);
}

/* q4_k: the 256-bit tile's sequence (qpack_avx2.c tile_q4_k) on 16 lanes. */

/* q4k_heads for two groups at once: the 8 heads of a group are 128
 * contiguous bytes (d|dmin, then the 12 scale bytes as three words, per
 * row); two permutes per group gather each word of the 8 rows, then the
 * same bit operations and products as q4k_heads, per lane. */
VX_INLINE void q4k_heads_pair(const uint8_t *b0, const uint8_t *b1, float dsc[8][VX_QP_PAIR],
                              float dmn[8][VX_QP_PAIR]) {
    const __m512i even = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    const __m512i odd = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
    const __m512i g0lo = _mm512_loadu_si512((const void *)b0), g0hi = _mm512_loadu_si512((const void *)(b0 + 64));
    const __m512i g1lo = _mm512_loadu_si512((const void *)b1), g1hi = _mm512_loadu_si512((const void *)(b1 + 64));
    /* [word 0 of rows 0-7 | word 1 of rows 0-7], [word 2 | word 3], per group */
    const __m512i t0 = _mm512_permutex2var_epi32(g0lo, even, g0hi), t1 = _mm512_permutex2var_epi32(g0lo, odd, g0hi);
    const __m512i u0 = _mm512_permutex2var_epi32(g1lo, even, g1hi), u1 = _mm512_permutex2var_epi32(g1lo, odd, g1hi);
    /* lanes 0-7 b0's group, 8-15 b1's */
    const __m512i vdd = _mm512_shuffle_i64x2(t0, u0, 0x44), va = _mm512_shuffle_i64x2(t0, u0, 0xee);
    const __m512i vb = _mm512_shuffle_i64x2(t1, u1, 0x44), vc = _mm512_shuffle_i64x2(t1, u1, 0xee);
    const __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(vdd));
    const __m512 dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(vdd, 16)));
    const __m512i m6 = _mm512_set1_epi32(0x3f3f3f3f), m4 = _mm512_set1_epi32(0x0f0f0f0f);
    const __m512i m2 = _mm512_set1_epi32(0x03030303), byte = _mm512_set1_epi32(0xff);
    const __m512i sc_lo = _mm512_and_si512(va, m6), mn_lo = _mm512_and_si512(vb, m6);
    const __m512i sc_hi =
        _mm512_or_si512(_mm512_and_si512(vc, m4), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(va, 6), m2), 4));
    const __m512i mn_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(vc, 4), m4),
                                          _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(vb, 6), m2), 4));
    for (int j = 0; j < 4; j++) {
        const __m128i sh = _mm_cvtsi32_si128(8 * j);
        const __m512 s0 = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srl_epi32(sc_lo, sh), byte));
        const __m512 s1 = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srl_epi32(sc_hi, sh), byte));
        const __m512 n0 = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srl_epi32(mn_lo, sh), byte));
        const __m512 n1 = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srl_epi32(mn_hi, sh), byte));
        _mm512_storeu_ps(dsc[j], _mm512_mul_ps(d, s0));
        _mm512_storeu_ps(dsc[j + 4], _mm512_mul_ps(d, s1));
        _mm512_storeu_ps(dmn[j], _mm512_mul_ps(dmin, n0));
        _mm512_storeu_ps(dmn[j + 4], _mm512_mul_ps(dmin, n1));
    }
}

VX_INLINE void tile2_q4_k(const vx_qx *x, int64_t K, const uint8_t *g0, const uint8_t *g1, int64_t nsb,
                          float r[VX_QP_MR][VX_QP_PAIR], const int mr) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const int64_t bb = VX_Q4_K_BYTES * VX_QP_ROWS, xnb = K / VX_QBLOCK;
    __m512 acc[VX_QP_MR];
    for (int m = 0; m < mr; m++) acc[m] = _mm512_setzero_ps();
    /* No software prefetch here, at any M: a super-block of 8 rows is 1152
     * bytes, and prefetching it 1 KB ahead (36 instructions per pair) only
     * reached into the block being read; it measured slower at every M on
     * a Zen 4 (3072x3072 GEMV: 1 thread 1.34x, 2 threads 1.13x faster
     * without; M = 4 and 64: 1.03x, 1.01x), and so did a distance of one
     * or two super-blocks. */
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *b0 = g0 + sb * bb, *b1 = g1 + sb * bb;
        float dsc[8][VX_QP_PAIR], dmn[8][VX_QP_PAIR];
        q4k_heads_pair(b0, b1, dsc, dmn);
        for (int j = 0; j < 8; j++) { /* sub-block j: chunks 8 (j / 2) .. +7, low nibbles if j is even */
            __m512i wq[8];
            for (int k = 0; k < 8; k++) {
                const int64_t at = VX_Q4_K_HEAD_BYTES * VX_QP_ROWS + 32 * (8 * (j / 2) + k);
                const __m512i y = load_pair(b0 + at, b1 + at);
                wq[k] = _mm512_and_si512(j % 2 ? _mm512_srli_epi16(y, 4) : y, low4);
            }
            const __m512 ds = _mm512_loadu_ps(dsc[j]);
            for (int m = 0; m < mr; m++) {
                const int8_t *xb = x->q + m * K + sb * VX_Q4K_SUPER + 32 * j;
                __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq[0], bcast4_512(xb));
                __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq[1], bcast4_512(xb + 4));
                for (int k = 2; k < 8; k += 2) {
                    s0 = _mm512_dpbusd_epi32(s0, wq[k], bcast4_512(xb + 4 * k));
                    s1 = _mm512_dpbusd_epi32(s1, wq[k + 1], bcast4_512(xb + 4 * k + 4));
                }
                const __m512i isum = _mm512_add_epi32(s0, s1);
                const __m512 t = _mm512_mul_ps(ds, _mm512_set1_ps(x->d[m * xnb + sb * 8 + j]));
                acc[m] = _mm512_add_ps(acc[m], _mm512_mul_ps(t, _mm512_cvtepi32_ps(isum)));
            }
        }
        for (int m = 0; m < mr; m++) { /* mins: sum_j (dmin m_j) (dx_j sum_j(x)), then one subtraction */
            const float *db = x->d + m * xnb + sb * 8;
            const int32_t *sx = x->s + m * xnb + sb * 8;
            __m512 mins = _mm512_setzero_ps();
            for (int j = 0; j < 8; j++)
                mins =
                    _mm512_add_ps(mins, _mm512_mul_ps(_mm512_loadu_ps(dmn[j]), _mm512_set1_ps(db[j] * (float)sx[j])));
            acc[m] = _mm512_sub_ps(acc[m], mins);
        }
    }
    for (int m = 0; m < mr; m++) _mm512_storeu_ps(r[m], acc[m]);
}

/* Group i of the task's rows is paired with group i + half (half: the
 * number of groups, halved and rounded up), so each of the two vectors'
 * streams walks consecutive groups, one contiguous run of memory, as the
 * 256-bit kernel's single stream does; a lone middle group (an odd count)
 * goes through the 256-bit tile. Any two groups can share a vector: a
 * lane's operations do not depend on its neighbour's. */
#define VX_DEFINE_QP_GEMM_WIDE(name, tile2, tile1, block_bytes, block_vals)                                            \
    static void name(const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias, float *out, \
                     int64_t ldo, int accumulate) {                                                                    \
        const int64_t nb = K / (block_vals), gb = nb * (block_bytes), xnb = K / VX_QBLOCK;                             \
        const int64_t groups = (N + VX_QP_ROWS - 1) / VX_QP_ROWS, half = (groups + 1) / 2;                             \
        for (int64_t g = 0; g < half; g++) {                                                                           \
            const int64_t n0 = g * VX_QP_ROWS, n1 = (g + half) * VX_QP_ROWS;                                           \
            const int paired = g + half < groups;                                                                      \
            const int nr0 = (N - n0) < VX_QP_ROWS ? (int)(N - n0) : VX_QP_ROWS;                                        \
            const int nr1 = paired ? ((N - n1) < VX_QP_ROWS ? (int)(N - n1) : VX_QP_ROWS) : 0;                         \
            for (int64_t m0 = 0; m0 < M; m0 += VX_QP_MR) {                                                             \
                const int mr = (M - m0) < VX_QP_MR ? (int)(M - m0) : VX_QP_MR;                                         \
                const vx_qx xt = {x->q + m0 * K, x->d + m0 * xnb, x->s + m0 * xnb};                                    \
                if (paired) {                                                                                          \
                    float r[VX_QP_MR][VX_QP_PAIR];                                                                     \
                    VX_QP_TILE_CALL(tile2, mr, &xt, K, w + g * gb, w + (g + half) * gb, nb, r)                         \
                    qp_store(&r[0][0], VX_QP_PAIR, mr, nr0, bias ? bias + n0 : NULL, out + m0 * ldo + n0, ldo,         \
                             accumulate);                                                                              \
                    qp_store(&r[0][VX_QP_ROWS], VX_QP_PAIR, mr, nr1, bias ? bias + n1 : NULL, out + m0 * ldo + n1,     \
                             ldo, accumulate);                                                                         \
                } else {                                                                                               \
                    float r[VX_QP_MR][VX_QP_ROWS];                                                                     \
                    VX_QP_TILE_CALL(tile1, mr, &xt, K, w + g * gb, nb, r)                                              \
                    qp_store(&r[0][0], VX_QP_ROWS, mr, nr0, bias ? bias + n0 : NULL, out + m0 * ldo + n0, ldo,         \
                             accumulate);                                                                              \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }

VX_DEFINE_QP_GEMM_WIDE(gemm_qp_q8_0, tile2_q8_0, tile_q8_0, VX_Q8_0_BYTES *VX_QP_ROWS, VX_QBLOCK)
VX_DEFINE_QP_GEMM_WIDE(gemm_qp_q4_0, tile2_q4_0, tile_q4_0, VX_Q4_0_BYTES *VX_QP_ROWS, VX_QBLOCK)
VX_DEFINE_QP_GEMM_WIDE(gemm_qp_q4_k, tile2_q4_k, tile_q4_k, VX_Q4_K_BYTES *VX_QP_ROWS, VX_Q4K_SUPER)

#if !defined(VX_QP_NO_TABLE) /* qpack_amx.c includes these kernels for its small M */
const vx_qops VX_QP_TABLE = {VX_QP_TABLE_NAME, {gemm_qp_q8_0, gemm_qp_q4_0, gemm_qp_q4_k}};
#endif
#endif
