/* Repacked ("interleaved") quantized weights: the load-time layout the SIMD
 * GEMV/GEMM kernels read without per-block shuffles, and the plain-C
 * reference kernels over it (the oracle the SIMD kernels must equal bit for
 * bit).
 *
 * Layout (q4_0 and q8_0): rows in groups of VX_QP_ROWS = 8 (the last group
 * padded with zero rows); a group holds its K/32 blocks in order, each block
 *   8 x fp16 scales (row r at bytes 2r..2r+1), then the quants in chunks of
 *   32 bytes: byte 4r + i of chunk j is byte 4j + i of row r's GGML quants.
 * So one 32-byte load gives 4 consecutive quant bytes of each of the 8 rows,
 * a broadcast of 4 activation bytes multiplies all 8 rows at once and the
 * int32 lane r ends up holding row r's dot product: no horizontal sums.
 * q4_0 chunk j: low nibbles = weights 4j..4j+3, high = 16+4j..16+4j+3.
 * Bytes per row are the GGML ones (fp16 scales kept: one vcvtph2ps converts
 * all 8, and the decoder step reads as many bytes as the file holds).
 *
 * Arithmetic, the same on every ISA: output (m, r) is
 *   acc = 0; for each block b in order: acc = fma(d_r * dx_b, float(isum_b), acc)
 * with isum_b the exact int32 block dot product (q4_0: minus 8 * sum(x_b)).
 * It depends on K only, never on M, tiles or threads: streaming == offline. */
#include "vx.h"
#include "vx_quant.h"

#include <math.h>
#include <string.h>

int64_t vx_qp_block_bytes(int qtype) {
    const vx_qtype_info *t = vx_qtype(qtype);
    if (!t || !t->repacked) return -1;           /* q4_k keeps the GGML layout */
    return (int64_t)t->block_bytes * VX_QP_ROWS; /* the same bytes, 8 rows interleaved */
}

int64_t vx_qp_bytes(int qtype, int64_t N, int64_t K) {
    const int64_t bb = vx_qp_block_bytes(qtype);
    if (bb < 0 || N <= 0 || K <= 0 || K % VX_QBLOCK) return -1;
    return (N + VX_QP_ROWS - 1) / VX_QP_ROWS * (K / VX_QBLOCK) * bb;
}

int vx_q_repack(int qtype, const uint8_t *w, int64_t N, int64_t K, uint8_t *dst) {
    const int64_t bb = vx_qp_block_bytes(qtype), size = vx_qp_bytes(qtype, N, K);
    if (!w || !dst || size < 0) return VX_EINVAL;
    const int64_t nb = K / VX_QBLOCK, src_bb = qtype == VX_Q8_0 ? VX_Q8_0_BYTES : VX_Q4_0_BYTES;
    const int64_t qbytes = src_bb - 2, groups = (N + VX_QP_ROWS - 1) / VX_QP_ROWS;
    memset(dst, 0, (size_t)size);
#pragma omp parallel for schedule(static) if (groups > 64)
    for (int64_t g = 0; g < groups; g++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *o = dst + (g * nb + b) * bb;
            for (int r = 0; r < VX_QP_ROWS && g * VX_QP_ROWS + r < N; r++) {
                const uint8_t *s = w + ((g * VX_QP_ROWS + r) * nb + b) * src_bb;
                memcpy(o + 2 * r, s, 2);
                for (int64_t j = 0; j < qbytes / 4; j++) memcpy(o + 2 * VX_QP_ROWS + 32 * j + 4 * r, s + 2 + 4 * j, 4);
            }
        }
    return VX_OK;
}

int vx_q_unpack(int qtype, const uint8_t *wp, int64_t N, int64_t K, uint8_t *dst) {
    const int64_t bb = vx_qp_block_bytes(qtype);
    if (!wp || !dst || vx_qp_bytes(qtype, N, K) < 0) return VX_EINVAL;
    const int64_t nb = K / VX_QBLOCK, src_bb = qtype == VX_Q8_0 ? VX_Q8_0_BYTES : VX_Q4_0_BYTES;
    for (int64_t n = 0; n < N; n++)
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *s = wp + ((n / VX_QP_ROWS) * nb + b) * bb;
            uint8_t *o = dst + (n * nb + b) * src_bb;
            const int r = (int)(n % VX_QP_ROWS);
            memcpy(o, s + 2 * r, 2);
            for (int64_t j = 0; j < (src_bb - 2) / 4; j++)
                memcpy(o + 2 + 4 * j, s + 2 * VX_QP_ROWS + 32 * j + 4 * r, 4);
        }
    return VX_OK;
}

/* The reference: one output at a time, the documented fma sequence. */
static void gemm_qp_scalar(int qtype, const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K,
                           const float *bias, float *out, int64_t ldo, int accumulate) {
    const int64_t nb = K / VX_QBLOCK, bb = vx_qp_block_bytes(qtype);
    for (int64_t n = 0; n < N; n++) {
        const int r = (int)(n % VX_QP_ROWS);
        const uint8_t *grp = w + (n / VX_QP_ROWS) * nb * bb;
        for (int64_t m = 0; m < M; m++) {
            const int8_t *xq = x->q + m * K;
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = grp + b * bb, *qs = blk + 2 * VX_QP_ROWS;
                const int8_t *xb = xq + b * VX_QBLOCK;
                int32_t isum = 0;
                if (qtype == VX_Q8_0) {
                    for (int j = 0; j < 8; j++)
                        for (int i = 0; i < 4; i++) isum += (int32_t)(int8_t)qs[32 * j + 4 * r + i] * xb[4 * j + i];
                } else {
                    for (int j = 0; j < 4; j++)
                        for (int i = 0; i < 4; i++) {
                            const uint8_t q = qs[32 * j + 4 * r + i];
                            isum += (int32_t)(q & 0x0f) * xb[4 * j + i] + (int32_t)(q >> 4) * xb[16 + 4 * j + i];
                        }
                    isum -= 8 * x->s[m * nb + b];
                }
                const float dw = vx_f16_to_f32(vx_load_u16(blk + 2 * r));
                acc = fmaf(dw * x->d[m * nb + b], (float)isum, acc);
            }
            if (bias) acc += bias[n];
            if (accumulate) out[m * ldo + n] += acc;
            else out[m * ldo + n] = acc;
        }
    }
}

static void gemm_qp_q8_0_scalar(const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias,
                                float *out, int64_t ldo, int accumulate) {
    gemm_qp_scalar(VX_Q8_0, x, M, w, N, K, bias, out, ldo, accumulate);
}
static void gemm_qp_q4_0_scalar(const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias,
                                float *out, int64_t ldo, int accumulate) {
    gemm_qp_scalar(VX_Q4_0, x, M, w, N, K, bias, out, ldo, accumulate);
}

const vx_qops vx_qpops_scalar = {"scalar", {gemm_qp_q8_0_scalar, gemm_qp_q4_0_scalar, NULL}};

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#endif

/* The whole pages inside [p, p + nbytes) of a read-only file mapping leave
 * the process's resident set (they are re-read from the file if touched):
 * after repacking, the copy replaces the mapped pages instead of doubling
 * the weights' memory. A no-op where madvise is missing. */
int vx_drop_file_pages(const void *p, int64_t nbytes) {
#if (defined(__unix__) || defined(__APPLE__)) && defined(MADV_DONTNEED)
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1), hi = ((uintptr_t)p + (uintptr_t)nbytes) & ~(page - 1);
    if (!p || nbytes <= 0 || hi <= lo) return VX_OK;
    return madvise((void *)lo, hi - lo, MADV_DONTNEED) == 0 ? VX_OK : VX_EINVAL;
#else
    (void)p, (void)nbytes;
    return VX_OK;
#endif
}
