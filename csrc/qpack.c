/* Repacked ("interleaved") quantized weights: the load-time layout the SIMD
 * GEMV/GEMM kernels read without per-block shuffles, and the plain-C
 * reference kernels over it (the oracle the SIMD kernels must equal bit for
 * bit).
 *
 * Layout (q4_0, q8_0, q4_k): rows in groups of VX_QP_ROWS = 8 (the last
 * group padded with zero rows); a group holds its K/values-per-block blocks
 * in order, each block
 *   the 8 rows' block heads (the bytes before the quants: q4_0/q8_0 the fp16
 *   scale, 2 bytes; q4_k d, dmin and the 12 bytes of packed 6-bit scales and
 *   mins, 16 bytes), row after row, then the quants in chunks of 32 bytes:
 *   byte 4r + i of chunk j is byte 4j + i of row r's GGML quants.
 * So one 32-byte load gives 4 consecutive quant bytes of each of the 8 rows,
 * a broadcast of 4 activation bytes multiplies all 8 rows at once and the
 * int32 lane r ends up holding row r's dot product: no horizontal sums.
 * q4_0 chunk j: low nibbles = weights 4j..4j+3, high = 16+4j..16+4j+3;
 * q4_k chunk 8c+k: low nibbles = weights 64c+4k.., high = 64c+32+4k...
 * Bytes per row are the GGML ones (scales kept as stored: the decoder step
 * reads as many bytes as the file holds).
 *
 * Arithmetic, the same on every ISA: output (m, r) is, for q4_0 / q8_0,
 *   acc = 0; for each block b in order: acc = fma(d_r * dx_b, float(isum_b), acc)
 * with isum_b the exact int32 block dot product (q4_0: minus 8 * sum(x_b));
 * for q4_k the scalar GGML-layout kernel's sequence (quant_scalar.c
 * dot_q4_k: per super-block, acc += (d sc_j dx_j) * float(isum_j) for the 8
 * sub-blocks in order, then acc -= sum_j (dmin m_j) (dx_j sum_j(x)); no
 * fma), so repacked q4_k equals the scalar q4_k kernel bit for bit.
 * It depends on K only, never on M, tiles or threads: streaming == offline. */
#include "vx.h"
#include "vx_quant.h"

#include <math.h>
#include <string.h>

int64_t vx_qp_block_bytes(int qtype) {
    const vx_qtype_info *t = vx_qtype(qtype);
    if (!t || !t->repacked) return -1;
    return (int64_t)t->block_bytes * VX_QP_ROWS; /* the same bytes, 8 rows interleaved */
}

/* bytes of a block before its quants */
static int64_t head_bytes(int qtype) { return qtype == VX_Q4_K ? VX_Q4_K_HEAD_BYTES : VX_Q_HEAD_BYTES; }

int64_t vx_qp_bytes(int qtype, int64_t N, int64_t K) {
    const int64_t bb = vx_qp_block_bytes(qtype);
    if (bb < 0 || N <= 0 || K <= 0 || K % vx_qtype(qtype)->block_values) return -1;
    return (N + VX_QP_ROWS - 1) / VX_QP_ROWS * (K / vx_qtype(qtype)->block_values) * bb;
}

int vx_q_repack(int qtype, const uint8_t *w, int64_t N, int64_t K, uint8_t *dst) {
    const int64_t bb = vx_qp_block_bytes(qtype), size = vx_qp_bytes(qtype, N, K);
    if (!w || !dst || size < 0) return VX_EINVAL;
    const int64_t nb = K / vx_qtype(qtype)->block_values, src_bb = vx_qtype(qtype)->block_bytes;
    const int64_t hb = head_bytes(qtype), qbytes = src_bb - hb, groups = (N + VX_QP_ROWS - 1) / VX_QP_ROWS;
    memset(dst, 0, (size_t)size);
#pragma omp parallel for schedule(static) if (groups > 64)
    for (int64_t g = 0; g < groups; g++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *o = dst + (g * nb + b) * bb;
            for (int r = 0; r < VX_QP_ROWS && g * VX_QP_ROWS + r < N; r++) {
                const uint8_t *s = w + ((g * VX_QP_ROWS + r) * nb + b) * src_bb;
                memcpy(o + hb * r, s, (size_t)hb);
                for (int64_t j = 0; j < qbytes / 4; j++)
                    memcpy(o + hb * VX_QP_ROWS + 32 * j + 4 * r, s + hb + 4 * j, 4);
            }
        }
    return VX_OK;
}

int vx_q_unpack(int qtype, const uint8_t *wp, int64_t N, int64_t K, uint8_t *dst) {
    const int64_t bb = vx_qp_block_bytes(qtype);
    if (!wp || !dst || vx_qp_bytes(qtype, N, K) < 0) return VX_EINVAL;
    const int64_t nb = K / vx_qtype(qtype)->block_values, src_bb = vx_qtype(qtype)->block_bytes;
    const int64_t hb = head_bytes(qtype);
    for (int64_t n = 0; n < N; n++)
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *s = wp + ((n / VX_QP_ROWS) * nb + b) * bb;
            uint8_t *o = dst + (n * nb + b) * src_bb;
            const int r = (int)(n % VX_QP_ROWS);
            memcpy(o, s + hb * r, (size_t)hb);
            for (int64_t j = 0; j < (src_bb - hb) / 4; j++)
                memcpy(o + hb + 4 * j, s + hb * VX_QP_ROWS + 32 * j + 4 * r, 4);
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
                const uint8_t *blk = grp + b * bb, *qs = blk + VX_Q_HEAD_BYTES * VX_QP_ROWS;
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
                const float dw = vx_f16_to_f32(vx_load_u16(blk + VX_Q_HEAD_BYTES * r));
                acc = fmaf(dw * x->d[m * nb + b], (float)isum, acc);
            }
            if (bias) acc += bias[n];
            if (accumulate) out[m * ldo + n] += acc;
            else out[m * ldo + n] = acc;
        }
    }
}

/* q4_k over the layout: row r's 128 quant bytes gathered back into GGML
 * order, then the scalar kernels' own super-block dot (same float order) */
static float dot_qp_q4_k(const int8_t *xq, const float *xd, const int32_t *xs, const uint8_t *grp, int r, int64_t nsb) {
    const int64_t bb = VX_Q4_K_BYTES * VX_QP_ROWS;
    float acc = 0.0f;
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *blk = grp + sb * bb, *head = blk + VX_Q4_K_HEAD_BYTES * r,
                      *qs = blk + VX_Q4_K_HEAD_BYTES * VX_QP_ROWS;
        uint8_t row_qs[128];
        for (int j = 0; j < 128; j++) row_qs[j] = qs[32 * (j / 4) + 4 * r + j % 4];
        acc = vx_q4k_superblock_dot(acc, head, row_qs, xq + sb * 256, xd + sb * 8, xs + sb * 8);
    }
    return acc;
}

static void gemm_qp_q4_k_scalar(const vx_qx *x, int64_t M, const uint8_t *w, int64_t N, int64_t K, const float *bias,
                                float *out, int64_t ldo, int accumulate) {
    const int64_t nsb = K / VX_Q4K_SUPER, xnb = K / VX_QBLOCK;
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *grp = w + (n / VX_QP_ROWS) * nsb * VX_Q4_K_BYTES * VX_QP_ROWS;
        for (int64_t m = 0; m < M; m++) {
            float v = dot_qp_q4_k(x->q + m * K, x->d + m * xnb, x->s + m * xnb, grp, (int)(n % VX_QP_ROWS), nsb);
            if (bias) v += bias[n];
            if (accumulate) out[m * ldo + n] += v;
            else out[m * ldo + n] = v;
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

const vx_qops vx_qpops_scalar = {"scalar", {gemm_qp_q8_0_scalar, gemm_qp_q4_0_scalar, gemm_qp_q4_k_scalar}};

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
