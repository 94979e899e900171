/* Internal: quantized-weight kernels (GGML q8_0 / q4_0 / q4_k blocks), one
 * table per ISA like vx_isa.h. Each kernel is single-threaded; vx_quant.c
 * quantizes the activations once and splits the weight rows across threads.
 *
 * Row determinism: every kernel computes each output (m, n) by one fixed
 * sequence of fp32 operations that depends only on K, never on M, N or the
 * tile the output falls in, so chunked (streaming) and whole (offline) calls
 * give bit-identical rows. */
#ifndef VX_QUANT_H
#define VX_QUANT_H

#include <stdint.h>
#include <string.h>

#define VX_QBLOCK 32          /* activation block: 32 int8 values, one fp32 scale, their sum */
#define VX_Q4K_SUPER 256      /* q4_k super-block */
#define VX_Q8_0_BYTES 34      /* fp16 d + 32 x int8 */
#define VX_Q4_0_BYTES 18      /* fp16 d + 16 bytes of nibbles */
#define VX_Q4_K_BYTES 144     /* fp16 d, fp16 dmin, 12 bytes scales/mins, 128 bytes of nibbles */
#define VX_Q_HEAD_BYTES 2     /* q8_0 / q4_0: the bytes of a block before its quants (fp16 d) */
#define VX_Q4_K_HEAD_BYTES 16 /* q4_k: the bytes before its quants (d, dmin, scales and mins) */

/* Quantized activations: row m has K int8 at q + m*K, and K/32 scales and
 * block sums at d + m*(K/32), s + m*(K/32). */
typedef struct vx_qx {
    const int8_t *q;
    const float *d;
    const int32_t *s;
} vx_qx;

/* out[m*ldo + n] (+)= sum_k x[m,k] w[n,k] (+ bias[n]) for m < M, n < N;
 * w: N rows of GGML blocks, row after row. */
typedef void (*vx_qgemm_fn)(const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias,
                            float *out, int64_t ldo, int accumulate);

typedef struct vx_qops {
    const char *name;
    vx_qgemm_fn gemm[3]; /* indexed by VX_Q8_0, VX_Q4_0, VX_Q4_K */
} vx_qops;

/* Streams per thread in the read-bandwidth probe: the prefetchers and DRAM
 * banks serve several distant sequential streams (a GEMV tile reads 4 weight
 * rows at once) faster than one. */
#define VX_READ_STREAMS 4

extern const vx_qops vx_qops_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const vx_qops vx_qops_avx2;
#if defined(VX_HAVE_AVXVNNI)
extern const vx_qops vx_qops_avxvnni;
#endif
#if defined(VX_HAVE_AVX512VNNI)
extern const vx_qops vx_qops_avx512vnni;
#endif
/* xor of every 64-bit word of cache lines [lo, hi): the read-bandwidth probe */
uint64_t vx_read_lines_avx2(const uint64_t *p, int64_t lo, int64_t hi);
#if defined(VX_HAVE_AVX512VNNI)
uint64_t vx_read_lines_avx512(const uint64_t *p, int64_t lo, int64_t hi);
#endif
#endif
#if defined(__aarch64__)
extern const vx_qops vx_qops_neon;
#if defined(VX_HAVE_NEON_DOTPROD)
extern const vx_qops vx_qops_neon_dotprod;
#endif
#endif

static inline uint16_t vx_load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2); /* GGUF is little-endian, like every target we build for */
    return v;
}

/* IEEE half -> float, portable (inf, NaN and subnormals included). */
static inline float vx_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* The 12 bytes of q4_k 6-bit scales and mins -> sc[8], mn[8] (8 bytes each,
 * as two little-endian u64 so SIMD code can load them in one move). */
static inline void vx_q4k_scales(const uint8_t *s12, uint64_t *sc, uint64_t *mn) {
    uint32_t a, b, c;
    memcpy(&a, s12, 4);
    memcpy(&b, s12 + 4, 4);
    memcpy(&c, s12 + 8, 4);
    const uint32_t sc_lo = a & 0x3f3f3f3fu, mn_lo = b & 0x3f3f3f3fu;
    const uint32_t sc_hi = (c & 0x0f0f0f0fu) | (((a >> 6) & 0x03030303u) << 4);
    const uint32_t mn_hi = ((c >> 4) & 0x0f0f0f0fu) | (((b >> 6) & 0x03030303u) << 4);
    *sc = (uint64_t)sc_lo | ((uint64_t)sc_hi << 32);
    *mn = (uint64_t)mn_lo | ((uint64_t)mn_hi << 32);
}

/* One q4_k super-block added to a dot product in the scalar kernels' float
 * order (the oracle the SIMD bodies are held to): head = d, dmin and the 12
 * scale bytes; qs = its 128 quant bytes in GGML order; xb, db, sx = the
 * activations' 256 int8 values, 8 block scales and 8 block sums. */
static inline float vx_q4k_superblock_dot(float acc, const uint8_t *head, const uint8_t *qs, const int8_t *xb,
                                          const float *db, const int32_t *sx) {
    const float d = vx_f16_to_f32(vx_load_u16(head)), dmin = vx_f16_to_f32(vx_load_u16(head + 2));
    uint64_t sc64, mn64;
    vx_q4k_scales(head + 4, &sc64, &mn64);
    uint8_t sc[8], mn[8];
    memcpy(sc, &sc64, 8);
    memcpy(mn, &mn64, 8);
    float mins = 0.0f;
    for (int c = 0; c < 4; c++) { /* 32 bytes: low nibbles = sub-block 2c, high = 2c+1 */
        int32_t lo = 0, hi = 0;
        for (int i = 0; i < 32; i++) {
            lo += (int32_t)(qs[32 * c + i] & 0x0f) * xb[64 * c + i];
            hi += (int32_t)(qs[32 * c + i] >> 4) * xb[64 * c + 32 + i];
        }
        acc += (d * (float)sc[2 * c] * db[2 * c]) * (float)lo;
        acc += (d * (float)sc[2 * c + 1] * db[2 * c + 1]) * (float)hi;
    }
    for (int j = 0; j < 8; j++) mins += (dmin * (float)mn[j]) * (db[j] * (float)sx[j]);
    return acc - mins;
}

/* Shared tiling: outputs in tiles of up to MR x rows by NR (<= 4) weight rows;
 * the tile function gets mr, nr as compile-time constants (so its
 * accumulators stay in registers) and writes r[m][n] before bias/accumulate. */
#define VX_TILE_NR(tile, mr, nr, ...)         \
    switch (nr) {                             \
    case 1: tile(__VA_ARGS__, mr, 1); break;  \
    case 2: tile(__VA_ARGS__, mr, 2); break;  \
    case 3: tile(__VA_ARGS__, mr, 3); break;  \
    default: tile(__VA_ARGS__, mr, 4); break; \
    }
#define VX_TILE_CALL_2(tile, mr, nr, ...)    \
    if ((mr) == 1) {                         \
        VX_TILE_NR(tile, 1, nr, __VA_ARGS__) \
    } else {                                 \
        VX_TILE_NR(tile, 2, nr, __VA_ARGS__) \
    }
#define VX_TILE_CALL_4(tile, mr, nr, ...)                \
    switch (mr) {                                        \
    case 1: VX_TILE_NR(tile, 1, nr, __VA_ARGS__) break;  \
    case 2: VX_TILE_NR(tile, 2, nr, __VA_ARGS__) break;  \
    case 3: VX_TILE_NR(tile, 3, nr, __VA_ARGS__) break;  \
    default: VX_TILE_NR(tile, 4, nr, __VA_ARGS__) break; \
    }

/* Defines `name`: loops over tiles (MR is 2 or 4, NR 4), calls `tile`, stores. */
#define VX_DEFINE_QGEMM(name, tile, block_bytes, block_vals, MR)                                                       \
    static void name(const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias, float *out, \
                     int64_t ldo, int accumulate) {                                                                    \
        const int64_t nb = K / (block_vals), rb = nb * (block_bytes), xnb = K / VX_QBLOCK;                             \
        for (int64_t n0 = 0; n0 < N; n0 += 4) {                                                                        \
            const int nr = (N - n0) < 4 ? (int)(N - n0) : 4;                                                           \
            for (int64_t m0 = 0; m0 < M; m0 += (MR)) {                                                                 \
                const int mr = (M - m0) < (MR) ? (int)(M - m0) : (MR);                                                 \
                float r[4][4];                                                                                         \
                const vx_qx xt = {x->q + m0 * K, x->d + m0 * xnb, x->s + m0 * xnb};                                    \
                VX_TILE_CALL_##MR(tile, mr, nr, &xt, K, w + n0 * rb, rb, nb,                                           \
                                  r) for (int m = 0; m < mr; m++) for (int n = 0; n < nr; n++) {                       \
                    float v = r[m][n];                                                                                 \
                    if (bias) v += bias[n0 + n];                                                                       \
                    float *o = out + (m0 + m) * ldo + n0 + n;                                                          \
                    if (accumulate) *o += v;                                                                           \
                    else *o = v;                                                                                       \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
    }


/* Repacked layout (qpack.c): groups of VX_QP_ROWS weight rows interleaved;
 * the tables hold kernels for q8_0, q4_0 and q4_k. */
#define VX_QP_ROWS 8
int64_t vx_qp_block_bytes(int qtype); /* bytes of one block of a whole group; -1: not repacked */
extern const vx_qops vx_qpops_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const vx_qops vx_qpops_avx2;
#if defined(VX_HAVE_AVXVNNI)
extern const vx_qops vx_qpops_avxvnni;
#endif
#if defined(VX_HAVE_AVX512VNNI)
extern const vx_qops vx_qpops_avx512vnni;
#endif
#if defined(VX_HAVE_AMX)
extern const vx_qops vx_qpops_amx;
#endif
#endif

#endif
