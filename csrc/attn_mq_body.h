/* Attention of a task: up to VX_ATTN_MQ query positions x nkv KV heads,
 * over rows of fp32, bf16 or int8 (+ per-row scales), one body for every
 * x86 vector width. The including file defines the vector mapping first:
 * mq_vec and MQ_LANES (fp32 lanes), MQ_ROWS (key rows per score pass:
 * 4 * MQ_ROWS accumulators), MQ_NC (output vectors per row in the V pass),
 * mq_zero / mq_loadu / mq_storeu / mq_bcast / mq_fma, mq_load (MQ_LANES
 * elements of a row of `kind`, widened to fp32: bf16 a shift, int8 an exact
 * conversion), mq_hsum (lane i = the sum of acc[i]'s lanes, one fixed tree)
 * and mq_store_scores; and includes simd_avx2.h (softmax_rows). Users:
 * attn_mq_avx2.h (8 lanes) and kv_avx512.c (16).
 *
 * Every row is read once for all the task's positions (the encoder's live
 * push has 4 positions against the same ~750 rows; drafted decoder steps
 * up to 8), and both phases are register-blocked over "query vectors" (a
 * position's query head: nq * group of them per KV head).
 * Per query vector the arithmetic is fixed, whichever other positions share
 * the task: score_j = mul_j * (the mapping's fixed tree over the lanes of the
 * fma chain over D) with mul_j = scale (int8: scale * the row's K scale), a
 * softmax over its own rows only (int8: then times the row's V scale), and
 * o = the fma chain of weight_j * v_j over its own rows in ascending order,
 * from 0 (the accumulator leaves registers between row blocks through o,
 * which is exact). So an output does not depend on M, on how positions are
 * grouped, on T or on threads. Needs D % MQ_LANES == 0. */
#ifndef VX_ATTN_MQ_BODY_H
#define VX_ATTN_MQ_BODY_H

#include <stdlib.h>
#include <string.h>

#include "vx_isa.h"
#include "vx_kv.h"

enum { VX_ROW_F32 = 0 }; /* beside vx_kv.h's VX_KV_BF16 and VX_KV_INT8 */

#define VX_ATTN_PREFETCH 4 /* K rows ahead */
#define VX_ATTN_VBLOCK 16  /* V rows per block */

VX_INLINE int64_t row_elem_bytes(int kind) { return kind == VX_KV_BF16 ? 2 : kind == VX_KV_INT8 ? 1 : 4; }

VX_INLINE void prefetch_elems(int kind, const void *p, int64_t i, int64_t n) {
    const char *b = (const char *)p + i * row_elem_bytes(kind);
    for (int64_t o = 0; o < n * row_elem_bytes(kind); o += 64) _mm_prefetch(b + o, _MM_HINT_T0);
}

/* R (<= MQ_ROWS) key rows (element off + r*stride) x C query vectors:
 * s[c][r] = mul[r] * qv[c] . k_r */
VX_INLINE void attn_dot_mq(int kind, int R, int C, const float *const *qv, const void *k, int64_t off, int64_t stride,
                           int64_t D, const float *mul, float *const *s) {
    mq_vec acc[4 * MQ_ROWS];
    for (int i = 0; i < 4 * MQ_ROWS; i++) acc[i] = mq_zero();
    for (int64_t d = 0; d < D; d += MQ_LANES) {
        mq_vec kv[MQ_ROWS];
        for (int r = 0; r < R; r++) kv[r] = mq_load(kind, k, off + r * stride + d);
        for (int c = 0; c < C; c++) {
            const mq_vec q = mq_loadu(qv[c] + d);
            for (int r = 0; r < R; r++) acc[4 * r + c] = mq_fma(q, kv[r], acc[4 * r + c]);
        }
    }
    mq_store_scores(R, C, mul, mq_hsum(acc), s); /* lane 4r + c: row r, vector c */
}

/* o_c[0 .. MQ_LANES*NC) = fma chain of p_c[j] * v_j over rows j in [a_c, b_c),
 * in order, starting from o_c's value; row j at element off + j*stride of
 * vr, rows of `kind` (widened as they are read) */
VX_INLINE void attn_axpy_mq(int C, int NC, const float *const *p, float *const *o, const int64_t *a, const int64_t *b,
                            int kind, const void *vr, int64_t off, int64_t stride) {
    mq_vec acc[4][MQ_NC];
    int64_t lo = a[0], hi = b[0], same = 1;
    for (int c = 0; c < C; c++) {
        for (int k = 0; k < NC; k++) acc[c][k] = mq_loadu(o[c] + MQ_LANES * k);
        same &= a[c] == a[0] && b[c] == b[0];
        lo = a[c] < lo ? a[c] : lo;
        hi = b[c] > hi ? b[c] : hi;
    }
    if (same) { /* every vector over the same rows (the common case) */
        for (int64_t j = lo; j < hi; j++) {
            mq_vec vv[MQ_NC];
            for (int k = 0; k < NC; k++) vv[k] = mq_load(kind, vr, off + j * stride + MQ_LANES * k);
            for (int c = 0; c < C; c++) {
                const mq_vec pb = mq_bcast(p[c] + j);
                for (int k = 0; k < NC; k++) acc[c][k] = mq_fma(pb, vv[k], acc[c][k]);
            }
        }
    } else {
        for (int64_t j = lo; j < hi; j++) {
            mq_vec vv[MQ_NC];
            for (int k = 0; k < NC; k++) vv[k] = mq_load(kind, vr, off + j * stride + MQ_LANES * k);
            for (int c = 0; c < C; c++) {
                if (j < a[c] || j >= b[c]) continue;
                const mq_vec pb = mq_bcast(p[c] + j);
                for (int k = 0; k < NC; k++) acc[c][k] = mq_fma(pb, vv[k], acc[c][k]);
            }
        }
    }
    for (int c = 0; c < C; c++)
        for (int k = 0; k < NC; k++) mq_storeu(o[c] + MQ_LANES * k, acc[c][k]);
}

/* C (1..4) as a compile-time constant, so the accumulators stay in registers */
#define VX_C_CASES(F, ...)             \
    switch (C) {                       \
    case 1: F(1, __VA_ARGS__); break;  \
    case 2: F(2, __VA_ARGS__); break;  \
    case 3: F(3, __VA_ARGS__); break;  \
    default: F(4, __VA_ARGS__); break; \
    }
/* R (1..MQ_ROWS) as a compile-time constant too */
#if MQ_ROWS == 4
#define MQ_R_CASES(F)                \
    switch (R) {                     \
    case 4: VX_C_CASES(F, 4) break;  \
    case 3: VX_C_CASES(F, 3) break;  \
    case 2: VX_C_CASES(F, 2) break;  \
    default: VX_C_CASES(F, 1) break; \
    }
#else
#define MQ_R_CASES(F)                \
    switch (R) {                     \
    case 2: VX_C_CASES(F, 2) break;  \
    default: VX_C_CASES(F, 1) break; \
    }
#endif
#define VX_DOT_MQ(C_, R_) attn_dot_mq(kind, R_, C_, qv, k, j *stride + h * D, stride, D, mul, sv)
#define VX_AXPY_MQ(C_, NC_) attn_axpy_mq(C_, NC_, pv, od, a, b, VX_ROW_F32, vb, d, D)
#define VX_AXPY_MQ_ROWS(C_, NC_) attn_axpy_mq(C_, NC_, pv, od, a, b, kind, v, j0 *stride + h * D + d, stride)

/* The task (see vx_isa.h's attn slot): nq <= VX_ATTN_MQ positions, query i's
 * heads at q + i*qstride, D apart; rows [lo[i], lo[i] + n[i]) of the nu rows
 * at k/v (element j*stride + h*D); int8 row scales at ks/vs[j*sstride + h].
 * scores: nq*nkv*group*nu floats. Returns 0 when it cannot run (the caller's
 * generic path runs instead). */
VX_INLINE int attn_mq_body(int kind, int64_t nq, const float *q, int64_t qstride, const int64_t *lo, const int64_t *n,
                           int64_t nkv, int64_t group, const void *k, const void *v, const float *ks, const float *vs,
                           int64_t stride, int64_t sstride, int64_t nu, int64_t D, float scale, float *scores, float *o,
                           int64_t ostride) {
    if (D % MQ_LANES || nu <= 0 || nq <= 0 || nq > VX_ATTN_MQ) return 0;
    const int64_t heads = nkv * group, nvec = nq * group; /* query vectors per KV head */
    /* query vector c of KV head h is position i = c / group, head h*group + g
     * (g = c % group): its offsets, less h*group*D (h*group rows of scores),
     * worked out once here */
    int64_t *tab =
        (int64_t *)malloc((size_t)(5 * nvec) * sizeof(int64_t) + (size_t)(VX_ATTN_VBLOCK * D) * sizeof(float));
    if (!tab) return 0;
    int64_t *qoff = tab, *srow = tab + nvec, *ooff = tab + 2 * nvec, *vlo = tab + 3 * nvec, *vhi = tab + 4 * nvec;
    float *vb = (float *)(tab + 5 * nvec); /* one head's rows of a V block, fp32, contiguous */
    for (int64_t c = 0; c < nvec; c++) {
        const int64_t i = c / group, g = c % group;
        qoff[c] = i * qstride + g * D;
        srow[c] = i * heads + g;
        ooff[c] = i * ostride + g * D;
        vlo[c] = lo[i];
        vhi[c] = lo[i] + n[i];
    }
    for (int64_t j = 0; j < nu; j += MQ_ROWS) {
        const int R = (nu - j) >= MQ_ROWS ? MQ_ROWS : (int)(nu - j);
        if (stride > nkv * D) /* (contiguous rows: the hardware prefetchers do it) */
            for (int64_t r = j + VX_ATTN_PREFETCH; r < j + VX_ATTN_PREFETCH + MQ_ROWS && r < nu; r++)
                prefetch_elems(kind, k, r * stride, nkv * D);
        for (int64_t h = 0; h < nkv; h++) {
            float mul[MQ_ROWS];
            for (int r = 0; r < MQ_ROWS; r++)
                mul[r] = kind == VX_KV_INT8 && r < R ? scale * ks[(j + r) * sstride + h] : scale;
            for (int64_t c0 = 0; c0 < nvec; c0 += 4) {
                const int C = (int)((nvec - c0) < 4 ? (nvec - c0) : 4);
                const float *qv[4];
                float *sv[4];
                for (int c = 0; c < C; c++) {
                    qv[c] = q + qoff[c0 + c] + h * group * D;
                    sv[c] = scores + (srow[c0 + c] + h * group) * nu + j;
                }
                MQ_R_CASES(VX_DOT_MQ)
            }
        }
    }
    for (int64_t i = 0; i < nq; i++) {
        for (int64_t qh = 0; qh < heads && n[i] > 0; qh++) {
            float *w = scores + (i * heads + qh) * nu + lo[i];
            softmax_rows(w, 1, n[i]);
            if (kind == VX_KV_INT8) /* fold V's row scales into the weights */
                for (int64_t j = 0; j < n[i]; j++) w[j] *= vs[(lo[i] + j) * sstride + qh / group];
        }
        for (int64_t qh = 0; qh < heads; qh++) memset(o + i * ostride + qh * D, 0, (size_t)D * sizeof(float));
    }
    /* V by blocks of rows, one head at a time; the head's next block is
     * prefetched meanwhile. With more than 4 query vectors several passes
     * read the block: a head's rows are Hkv*D elements apart (8 KB in the
     * fp32 encoder cache: the same L1 sets for every row), so the block's
     * part of the head is first copied, widened to fp32, to vb (contiguous)
     * and the passes read it there. With 4 or fewer (the encoder's live
     * push) one pass reads each row once, straight from the cache: the copy
     * was a quarter of that attention's time. Either way the same values in
     * the same order: the same bits. */
    const int reuse = nvec > 4;
    for (int64_t j0 = 0; j0 < nu; j0 += VX_ATTN_VBLOCK) {
        const int64_t j1 = (nu - j0) < VX_ATTN_VBLOCK ? nu : j0 + VX_ATTN_VBLOCK;
        const int64_t npf = (nu - j1) < VX_ATTN_VBLOCK ? (nu - j1) : VX_ATTN_VBLOCK;
        for (int64_t h = 0; h < nkv; h++) {
            for (int64_t j = j0; j < j1; j++) {
                if (j - j0 < npf) prefetch_elems(kind, v, (j + VX_ATTN_VBLOCK) * stride + h * D, D);
                if (reuse)
                    for (int64_t d = 0; d < D; d += MQ_LANES)
                        mq_storeu(vb + (j - j0) * D + d, mq_load(kind, v, j * stride + h * D + d));
            }
            for (int64_t c0 = 0; c0 < nvec; c0 += 4) {
                const int C = (int)((nvec - c0) < 4 ? (nvec - c0) : 4);
                const float *pv[4];
                float *ov[4];
                int64_t a[4], b[4];
                for (int c = 0; c < C; c++) { /* the rows of this block that vector c sees, from row j0 */
                    pv[c] = scores + (srow[c0 + c] + h * group) * nu + j0;
                    ov[c] = o + ooff[c0 + c] + h * group * D;
                    a[c] = (vlo[c0 + c] > j0 ? vlo[c0 + c] : j0) - j0;
                    b[c] = (vhi[c0 + c] < j1 ? vhi[c0 + c] : j1) - j0;
                    if (b[c] < a[c]) b[c] = a[c];
                }
                for (int64_t d = 0; d < D;) {
                    float *od[4];
                    for (int c = 0; c < C; c++) od[c] = ov[c] + d;
                    const int NC = D - d >= MQ_NC * MQ_LANES ? MQ_NC : 1;
                    if (reuse && NC == MQ_NC) {
                        VX_C_CASES(VX_AXPY_MQ, MQ_NC)
                    } else if (reuse) {
                        VX_C_CASES(VX_AXPY_MQ, 1)
                    } else if (NC == MQ_NC) {
                        VX_C_CASES(VX_AXPY_MQ_ROWS, MQ_NC)
                    } else {
                        VX_C_CASES(VX_AXPY_MQ_ROWS, 1)
                    }
                    d += NC * MQ_LANES;
                }
            }
        }
    }
    free(tab);
    return 1;
}

/* A compact cache's kind as a constant in each call, so the row widening
 * folds to one instruction sequence per kind. */
VX_INLINE int attn_mq_compact(int kind, int64_t nq, const float *q, int64_t qstride, const int64_t *lo,
                              const int64_t *n, int64_t nkv, int64_t group, const void *k, const void *v,
                              const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t nu, int64_t D,
                              float scale, float *scores, float *o, int64_t ostride) {
    if (kind == VX_KV_BF16)
        return attn_mq_body(VX_KV_BF16, nq, q, qstride, lo, n, nkv, group, k, v, ks, vs, stride, sstride, nu, D, scale,
                            scores, o, ostride);
    if (kind == VX_KV_INT8)
        return attn_mq_body(VX_KV_INT8, nq, q, qstride, lo, n, nkv, group, k, v, ks, vs, stride, sstride, nu, D, scale,
                            scores, o, ostride);
    return 0;
}

#endif
