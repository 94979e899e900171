/* AVX2 kernels over the repacked q4_0 / q8_0 / q4_k layout (qpack.c): lane r
 * of every vector is weight row r of an 8-row group, so a block's 8 dot
 * products come out of 4 (q4_0) or 8 (q8_0) 32-byte loads, one broadcast of
 * 4 activation bytes per load and a u8 x s8 dot product, with no shuffles or
 * horizontal sums; the fp32 step per block is one vcvtph2ps (8 scales), one
 * multiply and one fma, exactly the reference's sequence. A tile is one
 * group x up to VX_QP_MR rows of x: the group's unpacked nibbles serve all
 * of them.
 * One body, three builds: AVX2 (maddubs into int16, then madd), and, where
 * qpack_avxvnni.c / qpack_avx512vnni.c include this file, the VEX
 * (AVX-VNNI) or EVEX (AVX-512 VL + VNNI, 32 vector registers) vpdpbusd on
 * ymm, which adds four u8 x s8 products straight into int32 lanes. The
 * block sums are exact int32 in every build, so all three give the scalar
 * kernel's bits. */
#if defined(__x86_64__) || defined(_M_X64)
#include "vx_quant.h"

#include "simd_avx2.h"

/* The build: the kernel table's name and the dot-product instruction. */
#if defined(VX_QP_EVEX_VNNI)
#define VX_QP_DPBUSD(acc, u, s) _mm256_dpbusd_epi32(acc, u, s)
#define VX_QP_TABLE vx_qpops_avx512vnni
#define VX_QP_TABLE_NAME "avx512vnni"
#elif defined(VX_QP_VEX_VNNI)
#define VX_QP_DPBUSD(acc, u, s) _mm256_dpbusd_avx_epi32(acc, u, s)
#define VX_QP_TABLE vx_qpops_avxvnni
#define VX_QP_TABLE_NAME "avxvnni"
#else
#define VX_QP_TABLE vx_qpops_avx2
#define VX_QP_TABLE_NAME "avx2"
#endif

/* rows of x per tile: q4_0 keeps 4 (a chunk's nibbles, each row's int16
 * block sum and fp32 accumulator stay in the 16 ymm registers; 8 rows from
 * one unpack of the block spilled and measured 5-12% slower at M = 2..16);
 * q8_0 keeps 4, its per-row sign step reloads the weights either way (8
 * rows measured no faster than two tiles of 4). VX_QP_MR: the largest, and
 * what the AVX-512 build (32 registers) gives every tile. */
#define VX_QP_MR 8
#define VX_QP_MR_Q4 4
#define VX_QP_MR_Q8 4
#if defined(__GNUC__) && !defined(__clang__)
#define VX_NO_UNROLL _Pragma("GCC unroll 1")
#elif defined(__clang__)
#define VX_NO_UNROLL _Pragma("clang loop unroll(disable)")
#else
#define VX_NO_UNROLL
#endif
/* An empty asm that claims to change v: the compiler cannot reassociate the
 * int16 sums across it (GCC otherwise hoists all of a block's products
 * before the adds and spills them, ~12 stack accesses per row and block). */
#if defined(__GNUC__) || defined(__clang__)
#define VX_KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define VX_KEEP_IN_REGISTER(v) ((void)0)
#endif
/* Software prefetch ahead along the group's stream (about one line per 64
 * B), in tiles of 2 or more rows of x only (mr is a constant in each tile):
 * at one row the hardware prefetchers keep up alone and the prefetches cost
 * more than they bring (Zen 4, 3072x3072 GEMV, alternating runs: q4_0 /
 * q8_0 / q4_k 1.23x / 1.17x / 1.13x faster on one thread without them at
 * the AVX2 level, 1.08x on two; the AVX-512 VNNI q4_0 / q8_0 1.13x / 1.10x
 * on one thread, 1.05x / 1.02x on two), while at M = 4 they are worth 1.1x. */
#define VX_QP_PREFETCH 1024

VX_INLINE __m256i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

VX_INLINE void prefetch_block(const uint8_t *blk, int64_t bb) {
    for (int64_t o = 0; o < bb; o += 64) _mm_prefetch((const char *)(blk + VX_QP_PREFETCH + o), _MM_HINT_T0);
}

/* q4_0 loop order: weight block outer, then its 4 chunks, x rows inner.
 * A chunk's low and high nibbles are unpacked once and serve every row of
 * the tile; each row keeps its block's int16 sum in a register, so a tile
 * of VX_QP_MR_Q4 rows holds its nibbles, sums and accumulators in the 16
 * ymm registers of AVX2 (unpacking the whole block first for 8 rows needs
 * about 26 and spilled, 8-10 stack accesses per row and block). The int32
 * block sum of a row is exact (no lane can overflow), so its value does
 * not depend on the order of the partial sums; the fp32 step is the
 * reference's. */
VX_INLINE void tile_q4_0(const vx_qx *x, int64_t K, const uint8_t *grp, int64_t nb, float r[VX_QP_MR][VX_QP_ROWS],
                         const int mr) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
#if !defined(VX_QP_DPBUSD)
    const __m256i ones = _mm256_set1_epi16(1);
#endif
    const int64_t bb = VX_Q4_0_BYTES * VX_QP_ROWS;
    __m256 acc[VX_QP_MR]; /* past VX_QP_MR_Q4 rows: only the AVX-512 build's lone last group */
    for (int m = 0; m < mr; m++) acc[m] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + b * bb;
        if (mr > 1) prefetch_block(blk, bb);
#if defined(VX_QP_DPBUSD)
        /* the nibbles' offset of 8 is the sum's initial value */
        __m256i isum[VX_QP_MR];
        for (int m = 0; m < mr; m++) isum[m] = _mm256_set1_epi32(-8 * x->s[m * nb + b]);
#else
        __m256i s16[VX_QP_MR];
#endif
        for (int j = 0; j < 4; j++) {
            const __m256i y = _mm256_loadu_si256((const __m256i *)(blk + VX_Q_HEAD_BYTES * VX_QP_ROWS + 32 * j));
            const __m256i lo = _mm256_and_si256(y, low4), hi = _mm256_and_si256(_mm256_srli_epi16(y, 4), low4);
            for (int m = 0; m < mr; m++) {
                const int8_t *xb = x->q + m * K + b * VX_QBLOCK + 4 * j;
#if defined(VX_QP_DPBUSD)
                isum[m] = VX_QP_DPBUSD(VX_QP_DPBUSD(isum[m], lo, bcast4(xb)), hi, bcast4(xb + 16));
#else
                /* nibble x int8 pairs <= 3810; 8 of them fit int16 */
                const __m256i p =
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, bcast4(xb)), _mm256_maddubs_epi16(hi, bcast4(xb + 16)));
                s16[m] = j ? _mm256_add_epi16(s16[m], p) : p;
                VX_KEEP_IN_REGISTER(s16[m]);
#endif
            }
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
        for (int m = 0; m < mr; m++) {
#if !defined(VX_QP_DPBUSD)
            const __m256i isum_m =
                _mm256_sub_epi32(_mm256_madd_epi16(s16[m], ones), _mm256_set1_epi32(8 * x->s[m * nb + b]));
#else
            const __m256i isum_m = isum[m];
#endif
            const __m256 s = _mm256_mul_ps(dw, _mm256_set1_ps(x->d[m * nb + b]));
            acc[m] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(isum_m), acc[m]);
        }
    }
    for (int m = 0; m < mr; m++) _mm256_storeu_ps(r[m], acc[m]);
}

VX_INLINE void tile_q8_0(const vx_qx *x, int64_t K, const uint8_t *grp, int64_t nb, float r[VX_QP_MR][VX_QP_ROWS],
                         const int mr) {
#if !defined(VX_QP_DPBUSD)
    const __m256i ones = _mm256_set1_epi16(1);
#endif
    const int64_t bb = VX_Q8_0_BYTES * VX_QP_ROWS;
    __m256 acc[VX_QP_MR]; /* past VX_QP_MR_Q8 rows: only the AVX-512 build's lone last group */
    for (int m = 0; m < mr; m++) acc[m] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + b * bb;
        if (mr > 1) prefetch_block(blk, bb);
        __m256i s32[VX_QP_MR];
#if defined(VX_QP_DPBUSD)
        /* (w + 128) as u8 times x: the offset's -128 sum(x) is the initial value */
        for (int m = 0; m < mr; m++) s32[m] = _mm256_set1_epi32(-128 * x->s[m * nb + b]);
#else
        for (int m = 0; m < mr; m++) s32[m] = _mm256_setzero_si256();
#endif
        VX_NO_UNROLL /* unrolled, GCC runs out of registers and spills acc */
            for (int j = 0; j < 8; j++) {
            const __m256i y = _mm256_loadu_si256((const __m256i *)(blk + VX_Q_HEAD_BYTES * VX_QP_ROWS + 32 * j));
#if defined(VX_QP_DPBUSD)
            const __m256i u = _mm256_xor_si256(y, _mm256_set1_epi8((char)0x80));
            for (int m = 0; m < mr; m++) s32[m] = VX_QP_DPBUSD(s32[m], u, bcast4(x->q + m * K + b * VX_QBLOCK + 4 * j));
#else
            const __m256i a = _mm256_abs_epi8(y);
            for (int m = 0; m < mr; m++) {
                const int8_t *xb = x->q + m * K + b * VX_QBLOCK;
                /* |w| x sign(x, w): pairs <= 32512, widened to int32 at once */
                const __m256i p = _mm256_maddubs_epi16(a, _mm256_sign_epi8(bcast4(xb + 4 * j), y));
                s32[m] = _mm256_add_epi32(s32[m], _mm256_madd_epi16(p, ones));
            }
#endif
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
        for (int m = 0; m < mr; m++) {
            const __m256 s = _mm256_mul_ps(dw, _mm256_set1_ps(x->d[m * nb + b]));
            acc[m] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(s32[m]), acc[m]);
        }
    }
    for (int m = 0; m < mr; m++) _mm256_storeu_ps(r[m], acc[m]);
}

/* q4_k over the layout: the scalar kernel's fp32 sequence per row lane
 * (separate multiplies and adds: this file is compiled with
 * -ffp-contract=off). Per super-block the group's heads are decoded once
 * for all x rows: d sc_j and dmin m_j per row lane, 8 sub-blocks. Then per
 * sub-block j (32 values: the low or high nibbles of 8 chunks) the 8
 * unpacked nibble vectors serve every row of the tile. */
VX_INLINE void q4k_heads(const uint8_t *blk, float dsc[8][VX_QP_ROWS], float dmn[8][VX_QP_ROWS]) {
    uint32_t dd[VX_QP_ROWS], a[VX_QP_ROWS], b[VX_QP_ROWS], c[VX_QP_ROWS];
    for (int r = 0; r < VX_QP_ROWS; r++) {
        memcpy(&dd[r], blk + VX_Q4_K_HEAD_BYTES * r, 4);
        memcpy(&a[r], blk + VX_Q4_K_HEAD_BYTES * r + 4, 4);
        memcpy(&b[r], blk + VX_Q4_K_HEAD_BYTES * r + 8, 4);
        memcpy(&c[r], blk + VX_Q4_K_HEAD_BYTES * r + 12, 4);
    }
    const __m256i vdd = _mm256_loadu_si256((const __m256i *)dd), va = _mm256_loadu_si256((const __m256i *)a);
    const __m256i vb = _mm256_loadu_si256((const __m256i *)b), vc = _mm256_loadu_si256((const __m256i *)c);
    const __m256i lo16 = _mm256_set1_epi32(0xffff);
    /* [d0..d3 dmin0..dmin3 | d4..d7 dmin4..dmin7] -> [d0..d7 | dmin0..dmin7] */
    const __m256i h =
        _mm256_permute4x64_epi64(_mm256_packus_epi32(_mm256_and_si256(vdd, lo16), _mm256_srli_epi32(vdd, 16)), 0xd8);
    const __m256 d = _mm256_cvtph_ps(_mm256_castsi256_si128(h)), dmin = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
    /* vx_q4k_scales, 8 rows at once: bytes of sc_lo / mn_lo = sub-blocks 0..3, of sc_hi / mn_hi = 4..7 */
    const __m256i m6 = _mm256_set1_epi32(0x3f3f3f3f), m4 = _mm256_set1_epi32(0x0f0f0f0f);
    const __m256i m2 = _mm256_set1_epi32(0x03030303), byte = _mm256_set1_epi32(0xff);
    const __m256i sc_lo = _mm256_and_si256(va, m6), mn_lo = _mm256_and_si256(vb, m6);
    const __m256i sc_hi =
        _mm256_or_si256(_mm256_and_si256(vc, m4), _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(va, 6), m2), 4));
    const __m256i mn_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(vc, 4), m4),
                                          _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(vb, 6), m2), 4));
    for (int j = 0; j < 4; j++) {
        const __m128i sh = _mm_cvtsi32_si128(8 * j);
        const __m256 s0 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(sc_lo, sh), byte));
        const __m256 s1 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(sc_hi, sh), byte));
        const __m256 n0 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(mn_lo, sh), byte));
        const __m256 n1 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(mn_hi, sh), byte));
        _mm256_storeu_ps(dsc[j], _mm256_mul_ps(d, s0));
        _mm256_storeu_ps(dsc[j + 4], _mm256_mul_ps(d, s1));
        _mm256_storeu_ps(dmn[j], _mm256_mul_ps(dmin, n0));
        _mm256_storeu_ps(dmn[j + 4], _mm256_mul_ps(dmin, n1));
    }
}

VX_INLINE void tile_q4_k(const vx_qx *x, int64_t K, const uint8_t *grp, int64_t nsb, float r[VX_QP_MR][VX_QP_ROWS],
                         const int mr) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
#if !defined(VX_QP_DPBUSD)
    const __m256i ones = _mm256_set1_epi16(1);
#endif
    const int64_t bb = VX_Q4_K_BYTES * VX_QP_ROWS, xnb = K / VX_QBLOCK;
    __m256 acc[VX_QP_MR];
    for (int m = 0; m < mr; m++) acc[m] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *blk = grp + sb * bb, *qs = blk + VX_Q4_K_HEAD_BYTES * VX_QP_ROWS;
        if (mr > 1) prefetch_block(blk, bb);
        float dsc[8][VX_QP_ROWS], dmn[8][VX_QP_ROWS];
        q4k_heads(blk, dsc, dmn);
        for (int j = 0; j < 8; j++) { /* sub-block j: chunks 8 (j / 2) .. +7, low nibbles if j is even */
            __m256i wq[8];
            for (int k = 0; k < 8; k++) {
                const __m256i y = _mm256_loadu_si256((const __m256i *)(qs + 32 * (8 * (j / 2) + k)));
                wq[k] = _mm256_and_si256(j % 2 ? _mm256_srli_epi16(y, 4) : y, low4);
            }
            const __m256 ds = _mm256_loadu_ps(dsc[j]);
            for (int m = 0; m < mr; m++) {
                const int8_t *xb = x->q + m * K + sb * VX_Q4K_SUPER + 32 * j;
#if defined(VX_QP_DPBUSD)
                /* two chains of dot products, as the int16 pairs below */
                __m256i s0 = VX_QP_DPBUSD(_mm256_setzero_si256(), wq[0], bcast4(xb));
                __m256i s1 = VX_QP_DPBUSD(_mm256_setzero_si256(), wq[1], bcast4(xb + 4));
                for (int k = 2; k < 8; k += 2) {
                    s0 = VX_QP_DPBUSD(s0, wq[k], bcast4(xb + 4 * k));
                    s1 = VX_QP_DPBUSD(s1, wq[k + 1], bcast4(xb + 4 * k + 4));
                }
                const __m256i isum = _mm256_add_epi32(s0, s1);
#else
                /* nibble x int8 pairs <= 3810; 8 of them fit int16 */
                __m256i s0 = _mm256_maddubs_epi16(wq[0], bcast4(xb));
                __m256i s1 = _mm256_maddubs_epi16(wq[1], bcast4(xb + 4));
                for (int k = 2; k < 8; k += 2) {
                    s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(wq[k], bcast4(xb + 4 * k)));
                    s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(wq[k + 1], bcast4(xb + 4 * k + 4)));
                }
                const __m256i isum = _mm256_madd_epi16(_mm256_add_epi16(s0, s1), ones);
#endif
                const __m256 t = _mm256_mul_ps(ds, _mm256_set1_ps(x->d[m * xnb + sb * 8 + j]));
                acc[m] = _mm256_add_ps(acc[m], _mm256_mul_ps(t, _mm256_cvtepi32_ps(isum)));
            }
        }
        for (int m = 0; m < mr; m++) { /* mins: sum_j (dmin m_j) (dx_j sum_j(x)), then one subtraction */
            const float *db = x->d + m * xnb + sb * 8;
            const int32_t *sx = x->s + m * xnb + sb * 8;
            __m256 mins = _mm256_setzero_ps();
            for (int j = 0; j < 8; j++)
                mins =
                    _mm256_add_ps(mins, _mm256_mul_ps(_mm256_loadu_ps(dmn[j]), _mm256_set1_ps(db[j] * (float)sx[j])));
            acc[m] = _mm256_sub_ps(acc[m], mins);
        }
    }
    for (int m = 0; m < mr; m++) _mm256_storeu_ps(r[m], acc[m]);
}

/* A tile's results (ldr floats per row of x) to out, with the bias and
 * accumulation: nr weight rows of mr rows of x. */
VX_INLINE void qp_store(const float *r, int ldr, int mr, int nr, const float *bias, float *out, int64_t ldo,
                        int accumulate) {
    for (int m = 0; m < mr; m++) {
        float *o = out + m * ldo;
        for (int n = 0; n < nr; n++) {
            float v = r[m * ldr + n];
            if (bias) v += bias[n];
            if (accumulate) o[n] += v;
            else o[n] = v;
        }
    }
}

/* the tile call for mr rows of x, specialised for each mr up to 8 */
#define VX_QP_TILE_CALL(tile, mr, ...)    \
    switch (mr) {                         \
    case 1: tile(__VA_ARGS__, 1); break;  \
    case 2: tile(__VA_ARGS__, 2); break;  \
    case 3: tile(__VA_ARGS__, 3); break;  \
    case 4: tile(__VA_ARGS__, 4); break;  \
    case 5: tile(__VA_ARGS__, 5); break;  \
    case 6: tile(__VA_ARGS__, 6); break;  \
    case 7: tile(__VA_ARGS__, 7); break;  \
    default: tile(__VA_ARGS__, 8); break; \
    }

#define VX_DEFINE_QP_GEMM(name, tile, block_bytes, block_vals, MR)                                                     \
    static void name(const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias, float *out, \
                     int64_t ldo, int accumulate) {                                                                    \
        const int64_t nb = K / (block_vals), gb = nb * (block_bytes);                                                  \
        for (int64_t n0 = 0; n0 < N; n0 += VX_QP_ROWS) {                                                               \
            const int nr = (N - n0) < VX_QP_ROWS ? (int)(N - n0) : VX_QP_ROWS;                                         \
            const uint8_t *grp = w + (n0 / VX_QP_ROWS) * gb;                                                           \
            for (int64_t m0 = 0; m0 < M; m0 += (MR)) {                                                                 \
                const int mr = (M - m0) < (MR) ? (int)(M - m0) : (MR);                                                 \
                const vx_qx xt = {x->q + m0 * K, x->d + m0 * (K / VX_QBLOCK), x->s + m0 * (K / VX_QBLOCK)};            \
                float r[VX_QP_MR][VX_QP_ROWS];                                                                         \
                VX_QP_TILE_CALL(tile, mr, &xt, K, grp, nb, r)                                                          \
                qp_store(&r[0][0], VX_QP_ROWS, mr, nr, bias ? bias + n0 : NULL, out + m0 * ldo + n0, ldo, accumulate); \
            }                                                                                                          \
        }                                                                                                              \
    }

#if !defined(VX_QP_WIDE) /* qpack_avx512vnni.c defines these over two groups per 512-bit vector */
VX_DEFINE_QP_GEMM(gemm_qp_q8_0, tile_q8_0, VX_Q8_0_BYTES *VX_QP_ROWS, VX_QBLOCK, VX_QP_MR_Q8)
VX_DEFINE_QP_GEMM(gemm_qp_q4_0, tile_q4_0, VX_Q4_0_BYTES *VX_QP_ROWS, VX_QBLOCK, VX_QP_MR_Q4)
VX_DEFINE_QP_GEMM(gemm_qp_q4_k, tile_q4_k, VX_Q4_K_BYTES *VX_QP_ROWS, VX_Q4K_SUPER, VX_QP_MR)

const vx_qops VX_QP_TABLE = {VX_QP_TABLE_NAME, {gemm_qp_q8_0, gemm_qp_q4_0, gemm_qp_q4_k}};
#endif
#endif
