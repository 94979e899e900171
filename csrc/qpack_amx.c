/* AMX (Intel Sapphire Rapids and later: eight tile registers and an int8
 * tile dot product) over the repacked q4_0 / q8_0 / q4_k layout (qpack.c),
 * for every full tile of 16 rows of x; the rows past the last full tile
 * (and calls of fewer than 16) run the AVX-512 VNNI kernels this file
 * includes. Measured on a Xeon VM (Emerald Rapids class), one thread,
 * alternating with the VNNI kernels, encoder and decoder shapes: a 4-row
 * tile is 0.44-0.62x as fast as VNNI, an 8-row one 0.66-0.87x, a 16-row
 * one 1.0-1.24x, M >= 32 1.2-1.57x (README).
 *
 * Per output the arithmetic is the reference's (qpack.c): an exact int32 dot
 * product per 32-value block, then the VNNI kernels' fp32 step in the same
 * order. AMX only computes the int32 block sums: one tile product per block
 * (16 rows of x by 16 weight rows, K = 32: the scales change every 32
 * values, so a tile's full K = 64 cannot be used), stored to memory, then
 * the fp32 step with AVX-512 on 16 outputs per vector. So every row has the
 * bits of the VNNI and scalar kernels, at any M, tile or thread count.
 *
 * Weights: a pair of 8-row groups (16 weight rows: a B tile's columns) is
 * unpacked once per call into int8 B tiles for the whole K (16 K bytes),
 * its block scales to fp32 (q4_k: d*sc and dmin*m per sub-block); then each
 * tile of 16 rows of x streams over it, its 16 accumulators in registers.
 * A B tile row holds 4 consecutive k of each of the 16 weight rows, which
 * is what the layout's 32-byte chunks hold for 8 rows: a chunk pair's low
 * nibbles are one B row, its high nibbles another.
 *
 * Built with the AVX-512 VNNI flags, -mamx-tile -mamx-int8 and
 * -ffp-contract=off; run only when the CPU has AMX and Linux granted this
 * process the tile state (vx_cpu.c). */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(VX_HAVE_AMX)
#define VX_QP_NO_TABLE 1 /* the VNNI kernels without their table: they serve small M here */
#include "qpack_avx512vnni.c"

#include <stdlib.h>

#define AMX_ROWS 16                   /* rows of x per tile (a tile's most) */
#define AMX_COLS 16                   /* weight rows per tile: a pair of groups */
#define AMX_KB 32                     /* K per tile product: one block */
#define AMX_B_BYTES (AMX_KB / 4 * 64) /* a B tile: 8 rows, each 4 k x 16 columns */

/* K is walked as a pipeline: block b's tile product is stored to buffer
 * b % AMX_NBUF while the fp32 step reads block b - AMX_LAG's, stored two
 * products earlier (a tile store's data reaches vector loads late: in a
 * probe on the Xeon VM, reading each block's sums right after its store
 * made a 16-row block 2.5x slower). The fp32 steps still run in block
 * order. Four buffers of 1 KB: a lag of 4 over 8 buffers measured 2x
 * slower in the same probe (store and loads 4 KB apart; a false store
 * dependency is the likely cause). */
#define AMX_LAG 2
#define AMX_NBUF 4

/* Tile registers: two sets, so that one block's product runs while the
 * other block's sums are scaled (macros: the intrinsics paste the number
 * into the instruction). */
#define T_A0 0
#define T_B0 1
#define T_C0 2
#define T_A1 3
#define T_B1 4
#define T_C1 5

typedef struct amx_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

/* A and C tiles 16 rows high (rows of x), B tiles 8 x 64 bytes */
static void amx_configure(void) {
    amx_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    const int a[2] = {T_A0, T_A1}, b[2] = {T_B0, T_B1}, cc[2] = {T_C0, T_C1};
    for (int i = 0; i < 2; i++) {
        c.rows[a[i]] = AMX_ROWS;
        c.colsb[a[i]] = AMX_KB;
        c.rows[b[i]] = AMX_KB / 4;
        c.colsb[b[i]] = 64;
        c.rows[cc[i]] = AMX_ROWS;
        c.colsb[cc[i]] = AMX_COLS * 4;
    }
    /* GCC 12's intrinsic declares only the first 8 bytes as read, so the
     * other stores could be dropped: the config escapes here first. */
    __asm__ volatile("" : : "r"(&c) : "memory");
    _tile_loadconfig(&c);
}

/* A call's scratch (one allocation, 64-byte aligned parts). The x side's
 * block scales are transposed per tile of 16 rows, so one block's 16 rows
 * are 16 consecutive floats. */
typedef struct amx_scratch {
    int32_t (*c)[AMX_ROWS][AMX_COLS]; /* [AMX_NBUF]: stored tile sums, a ring */
    int8_t *bt;                       /* [K/32] B tiles of the current pair */
    float *ws;  /* q4_0/q8_0: [K/32][16] weight scales; q4_k: [K/256] x {[8][16] d*sc, [8][16] dmin*m} */
    float *dxt; /* [tiles][K/32][16] x block scales */
    float *sxt; /* q4_k only (else NULL): [tiles][K/32][16] x block scale * block sum, the mins' factor */
    void *base;
} amx_scratch;

static int amx_scratch_init(amx_scratch *s, int qtype, const vx_qx *x, int64_t M, int64_t K) {
    const int64_t nb = K / VX_QBLOCK, tiles = M / AMX_ROWS;
    const size_t c = AMX_NBUF * AMX_ROWS * AMX_COLS * sizeof(int32_t), bt = (size_t)(nb * AMX_B_BYTES);
    const size_t ws = (size_t)(nb * AMX_COLS) * sizeof(float) * 2, xt = (size_t)(tiles * nb * AMX_ROWS) * sizeof(float);
    char *p = (char *)malloc(c + bt + ws + (qtype == VX_Q4_K ? 2 : 1) * xt + 64);
    if (!p) return 0;
    char *a = (char *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
    s->base = p;
    s->c = (int32_t (*)[AMX_ROWS][AMX_COLS])a;
    s->bt = (int8_t *)(a + c);
    s->ws = (float *)(a + c + bt);
    s->dxt = (float *)(a + c + bt + ws);
    s->sxt = qtype == VX_Q4_K ? (float *)(a + c + bt + ws + xt) : NULL;
    for (int64_t m = 0; m < M; m++) {
        float *d = s->dxt + (m / AMX_ROWS) * nb * AMX_ROWS + m % AMX_ROWS;
        for (int64_t b = 0; b < nb; b++) d[b * AMX_ROWS] = x->d[m * nb + b];
        if (s->sxt) {
            float *sx = s->sxt + (m / AMX_ROWS) * nb * AMX_ROWS + m % AMX_ROWS;
            for (int64_t b = 0; b < nb; b++) sx[b * AMX_ROWS] = x->d[m * nb + b] * (float)x->s[m * nb + b];
        }
    }
    return 1;
}

/* q4_0 / q8_0: the pair's B tiles and scales. q4_0's nibbles minus 8 are the
 * weights as int8, so the tile's signed product is the block sum itself. */
static void unpack_q32(const int qtype, const uint8_t *g0, const uint8_t *g1, int64_t nb, amx_scratch *s) {
    const int64_t bb = (qtype == VX_Q4_0 ? VX_Q4_0_BYTES : VX_Q8_0_BYTES) * VX_QP_ROWS;
    const __m512i low4 = _mm512_set1_epi8(0x0f), eight = _mm512_set1_epi8(8);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *b0 = g0 + b * bb, *b1 = g1 + b * bb;
        int8_t *t = s->bt + b * AMX_B_BYTES;
        _mm512_store_ps(s->ws + b * AMX_COLS, scales_pair(b0, b1));
        if (qtype == VX_Q4_0) {
            for (int j = 0; j < 4; j++) { /* chunk j: weights 4j.. (low nibbles), 16 + 4j.. (high) */
                const int64_t at = VX_Q_HEAD_BYTES * VX_QP_ROWS + 32 * j;
                const __m512i y = load_pair(b0 + at, b1 + at);
                _mm512_store_si512((void *)(t + 64 * j), _mm512_sub_epi8(_mm512_and_si512(y, low4), eight));
                _mm512_store_si512((void *)(t + 64 * (4 + j)),
                                   _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(y, 4), low4), eight));
            }
        } else {
            for (int j = 0; j < 8; j++) {
                const int64_t at = VX_Q_HEAD_BYTES * VX_QP_ROWS + 32 * j;
                _mm512_store_si512((void *)(t + 64 * j), load_pair(b0 + at, b1 + at));
            }
        }
    }
}

/* q4_k: per super-block its 8 sub-blocks' B tiles (nibbles as u8: the mins
 * are subtracted in fp32, as in the reference) and the heads' products */
static void unpack_q4_k(const uint8_t *g0, const uint8_t *g1, int64_t nsb, amx_scratch *s) {
    const int64_t bb = VX_Q4_K_BYTES * VX_QP_ROWS;
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *b0 = g0 + sb * bb, *b1 = g1 + sb * bb;
        float *h = s->ws + sb * 2 * 8 * AMX_COLS;
        q4k_heads_pair(b0, b1, (float (*)[VX_QP_PAIR])h, (float (*)[VX_QP_PAIR])(h + 8 * AMX_COLS));
        for (int c = 0; c < 4; c++) /* chunk 8c + k: sub-block 2c's weights 4k.. (low), 2c + 1's (high) */
            for (int k = 0; k < 8; k++) {
                const int64_t at = VX_Q4_K_HEAD_BYTES * VX_QP_ROWS + 32 * (8 * c + k);
                const __m512i y = load_pair(b0 + at, b1 + at);
                int8_t *t = s->bt + (sb * 8 + 2 * c) * AMX_B_BYTES + 64 * k;
                _mm512_store_si512((void *)t, _mm512_and_si512(y, low4));
                _mm512_store_si512((void *)(t + AMX_B_BYTES), _mm512_and_si512(_mm512_srli_epi16(y, 4), low4));
            }
    }
}


/* block b's tile product on tile set 0 or 1 (the tile numbers are
 * immediates), its sums stored to buffer b % AMX_NBUF */
#define AMX_BLOCK(set, dp, xq, K, b, s)                                                  \
    do {                                                                                 \
        _tile_loadd(T_A##set, (xq) + (b) * AMX_KB, (K));                                 \
        _tile_loadd(T_B##set, (s)->bt + (b) * AMX_B_BYTES, 64);                          \
        _tile_zero(T_C##set);                                                            \
        dp(T_C##set, T_A##set, T_B##set);                                                \
        _tile_stored(T_C##set, (s)->c[(b) % AMX_NBUF], AMX_COLS * (int)sizeof(int32_t)); \
    } while (0)

/* every block of K: products two at a time (the two tile sets), each
 * block's fp32 step (STEP(b), in order) AMX_LAG blocks behind */
#define AMX_WALK(dp, xq, K, nb, s, STEP)                                       \
    for (int64_t b = 0; b < (nb) + AMX_LAG; b += 2) {                          \
        if (b < (nb)) AMX_BLOCK(0, dp, xq, K, b, s);                           \
        if (b + 1 < (nb)) AMX_BLOCK(1, dp, xq, K, b + 1, s);                   \
        if (b >= AMX_LAG) STEP(b - AMX_LAG);                                   \
        if (b + 1 >= AMX_LAG && b + 1 - AMX_LAG < (nb)) STEP(b + 1 - AMX_LAG); \
    }

/* One tile of 16 rows of x (xq: its first) over the unpacked pair. q4_0 /
 * q8_0 fp32 step of block b: acc = fma(dw * dx, float(isum), acc). */
static void rows_q32(const int8_t *xq, int64_t K, int64_t nb, amx_scratch *s, const float *dxt,
                     float r[AMX_ROWS][AMX_COLS]) {
    __m512 acc[AMX_ROWS];
    for (int m = 0; m < AMX_ROWS; m++) acc[m] = _mm512_setzero_ps();
#define STEP_Q32(b)                                                                                          \
    do {                                                                                                     \
        const __m512 dw = _mm512_load_ps(s->ws + (b) * AMX_COLS);                                            \
        const int32_t (*c)[AMX_COLS] = s->c[(b) % AMX_NBUF];                                                 \
        for (int m = 0; m < AMX_ROWS; m++) {                                                                 \
            const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(dxt[(b) * AMX_ROWS + m]));                    \
            acc[m] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(_mm512_load_si512((const void *)c[m])), acc[m]); \
        }                                                                                                    \
    } while (0)
    AMX_WALK(_tile_dpbssd, xq, K, nb, s, STEP_Q32)
#undef STEP_Q32
    for (int m = 0; m < AMX_ROWS; m++) _mm512_storeu_ps(r[m], acc[m]);
}

/* q4_k, sub-block b (super-block b / 8): acc += (d sc dx) * float(isum), no
 * fma; after a super-block's 8th, its mins: acc -= sum_j (dmin m_j) (dx_j sum_j(x)) */
static void rows_q4_k(const int8_t *xq, int64_t K, int64_t nb, amx_scratch *s, const float *dxt, const float *sxt,
                      float r[AMX_ROWS][AMX_COLS]) {
    __m512 acc[AMX_ROWS];
    for (int m = 0; m < AMX_ROWS; m++) acc[m] = _mm512_setzero_ps();
#define STEP_Q4_K(b)                                                                                                \
    do {                                                                                                            \
        const float *dsc = s->ws + ((b) / 8) * 2 * 8 * AMX_COLS, *dmn = dsc + 8 * AMX_COLS;                         \
        const __m512 ds = _mm512_load_ps(dsc + ((b) % 8) * AMX_COLS);                                               \
        const int32_t (*c)[AMX_COLS] = s->c[(b) % AMX_NBUF];                                                        \
        for (int m = 0; m < AMX_ROWS; m++) {                                                                        \
            const __m512 t = _mm512_mul_ps(ds, _mm512_set1_ps(dxt[(b) * AMX_ROWS + m]));                            \
            acc[m] =                                                                                                \
                _mm512_add_ps(acc[m], _mm512_mul_ps(t, _mm512_cvtepi32_ps(_mm512_load_si512((const void *)c[m])))); \
        }                                                                                                           \
        if ((b) % 8 == 7)                                                                                           \
            for (int m = 0; m < AMX_ROWS; m++) {                                                                    \
                const float *sx = sxt + ((b) - 7) * AMX_ROWS + m;                                                   \
                __m512 mins = _mm512_setzero_ps();                                                                  \
                for (int j = 0; j < 8; j++)                                                                         \
                    mins = _mm512_add_ps(                                                                           \
                        mins, _mm512_mul_ps(_mm512_load_ps(dmn + j * AMX_COLS), _mm512_set1_ps(sx[j * AMX_ROWS]))); \
                acc[m] = _mm512_sub_ps(acc[m], mins);                                                               \
            }                                                                                                       \
    } while (0)
    AMX_WALK(_tile_dpbsud, xq, K, nb, s, STEP_Q4_K)
#undef STEP_Q4_K
    for (int m = 0; m < AMX_ROWS; m++) _mm512_storeu_ps(r[m], acc[m]);
}

/* r's first mr rows, nr columns (+ bias) to out, stored or added (the
 * VNNI kernels' qp_store, one masked vector per row) */
static void store_rows(float r[AMX_ROWS][AMX_COLS], int mr, int nr, const float *bias, float *out, int64_t ldo,
                       int accumulate) {
    const __mmask16 k = (__mmask16)((1u << nr) - 1u);
    const __m512 b = bias ? _mm512_maskz_loadu_ps(k, bias) : _mm512_setzero_ps();
    for (int m = 0; m < mr; m++) {
        __m512 v = _mm512_loadu_ps(r[m]);
        if (bias) v = _mm512_add_ps(v, b);
        if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(k, out + m * ldo), v);
        _mm512_mask_storeu_ps(out + m * ldo, k, v);
    }
}

/* M: a multiple of 16; vnni: the type's VNNI kernel, for when the scratch
 * cannot be had (the same bits) */
static void gemm_amx(const int qtype, vx_qgemm_fn vnni, const vx_qx *x, int64_t M, const uint8_t *w, int64_t N,
                     int64_t K, const float *bias, float *out, int64_t ldo, int accumulate) {
    amx_scratch s;
    if (!amx_scratch_init(&s, qtype, x, M, K)) {
        vnni(x, M, w, N, K, bias, out, ldo, accumulate);
        return;
    }
    const int64_t nb = K / VX_QBLOCK, nsb = K / VX_Q4K_SUPER;
    const int64_t gb = vx_qp_block_bytes(qtype) * (qtype == VX_Q4_K ? nsb : nb);
    const int64_t groups = (N + VX_QP_ROWS - 1) / VX_QP_ROWS;
    amx_configure();
    for (int64_t g = 0; g < groups; g += 2) {
        const uint8_t *g0 = w + g * gb, *g1 = g + 1 < groups ? g0 + gb : g0; /* a lone group: its columns twice */
        if (qtype == VX_Q4_K) unpack_q4_k(g0, g1, nsb, &s);
        else unpack_q32(qtype, g0, g1, nb, &s);
        const int64_t n0 = g * VX_QP_ROWS;
        const int nr = N - n0 < AMX_COLS ? (int)(N - n0) : AMX_COLS;
        for (int64_t m0 = 0; m0 < M; m0 += AMX_ROWS) {
            const float *dxt = s.dxt + (m0 / AMX_ROWS) * nb * AMX_ROWS;
            float r[AMX_ROWS][AMX_COLS];
            if (qtype == VX_Q4_K) rows_q4_k(x->q + m0 * K, K, nb, &s, dxt, s.sxt + (m0 / AMX_ROWS) * nb * AMX_ROWS, r);
            else rows_q32(x->q + m0 * K, K, nb, &s, dxt, r);
            store_rows(r, AMX_ROWS, nr, bias ? bias + n0 : NULL, out + m0 * ldo + n0, ldo, accumulate);
        }
    }
    _tile_release(); /* the thread holds no tile state between calls */
    free(s.base);
}

/* the full tiles of 16 rows through AMX, the rows after them (every row
 * when M < 16) through the VNNI kernel: the same bits either way */
#define VX_DEFINE_AMX_GEMM(name, qtype, vnni)                                                                          \
    static void name(const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias, float *out, \
                     int64_t ldo, int accumulate) {                                                                    \
        const int64_t full = M / AMX_ROWS * AMX_ROWS, nb = K / VX_QBLOCK;                                              \
        if (full) gemm_amx(qtype, vnni, x, full, w, N, K, bias, out, ldo, accumulate);                                 \
        if (full < M) {                                                                                                \
            const vx_qx rest = {x->q + full * K, x->d + full * nb, x->s + full * nb};                                  \
            vnni(&rest, M - full, w, N, K, bias, out + full * ldo, ldo, accumulate);                                   \
        }                                                                                                              \
    }

VX_DEFINE_AMX_GEMM(gemm_amx_q8_0, VX_Q8_0, gemm_qp_q8_0)
VX_DEFINE_AMX_GEMM(gemm_amx_q4_0, VX_Q4_0, gemm_qp_q4_0)
VX_DEFINE_AMX_GEMM(gemm_amx_q4_k, VX_Q4_K, gemm_qp_q4_k)

const vx_qops vx_qpops_amx = {"amx", {gemm_amx_q8_0, gemm_amx_q4_0, gemm_amx_q4_k}};
#endif
