/* Attention of one query position per task over a compact (bf16 / int8)
 * cache, one body for every x86 vector width: the decoder's tasks (GQA
 * groups of 4 or more, where sharing rows between positions saves no
 * conversion; see vx_kv.c). The including file defines the vector mapping
 * of attn_mq_body.h (mq_vec, MQ_LANES, MQ_ROWS key rows per score pass,
 * MQ_NC output vectors per row in the V pass, mq_zero / mq_loadu /
 * mq_storeu / mq_bcast / mq_fma / mq_load / mq_hsum) and includes that body
 * first, plus mq_add, MQ_ONE_PREFETCH (K rows fetched ahead) and
 * mq_softmax(scores, rows, n). Users: kv_avx2.c (8 lanes), kv_avx512.c (16).
 *
 * Both phases are register-blocked over the group's query heads:
 *  - scores: MQ_ROWS rows x up to 4 query heads per pass (each q load serves
 *    every row, each K load 4 heads), reduced together by one mq_hsum;
 *  - output: per block of rows, MQ_NC vectors x 4 heads stay in registers
 *    across the block (no load/store of the output per row).
 * Per output the arithmetic is fixed by the width alone: score_j = mul_j *
 * (mq_hsum's tree over the lanes of the fma chain over D), mul_j = scale
 * (int8: times the row's K scale); a softmax over the task's rows (int8:
 * then times the row's V scale); o = the fma chain of weight_j * v_j in row
 * order per lane. INT8 folds each row's scale into its score and into its
 * softmax weight. */
#ifndef VX_ATTN_ONE_BODY_H
#define VX_ATTN_ONE_BODY_H

#include <string.h>

#include "vx_kv.h"

/* Scores of R rows (R <= MQ_ROWS; row r at element off + r*stride) x G
 * query heads (q, D apart): s[g*lds + r] = mul[r] * q_g . k_r, by the
 * multi-position body's score pass (a head is one of its query vectors) */
VX_INLINE void one_dot_rows(int kind, int R, int G, const float *q, const void *k, int64_t off, int64_t stride,
                            int64_t D, const float *mul, float *s, int64_t lds) {
    const float *qv[4];
    float *sv[4];
    for (int g = 0; g < G; g++) {
        qv[g] = q + g * D;
        sv[g] = s + g * lds;
    }
    attn_dot_mq(kind, R, G, qv, k, off, stride, D, mul, sv);
}

#define VX_ONE_V_BLOCK 64 /* rows whose V stays in L1 while every head/lane chunk passes over them */

/* o_g[0 .. MQ_LANES*NC) += sum_j w_g[j] * v_j over rows j < nb (row j at
 * element off + j*stride), G heads; w_g at w + g*ldw. */
VX_INLINE void one_axpy_rows(int kind, int NC, int G, const float *w, int64_t ldw, const void *v, int64_t off,
                             int64_t stride, int64_t nb, int64_t ahead, int64_t D, float *o) {
    mq_vec acc[4][MQ_NC];
    for (int g = 0; g < G; g++)
        for (int c = 0; c < NC; c++) acc[g][c] = mq_zero();
    for (int64_t j = 0; j < nb; j++) {
        if (j < ahead) /* the same lanes of the next block's row j */
            prefetch_elems(kind, v, off + (j + VX_ONE_V_BLOCK) * stride, MQ_LANES * NC);
        mq_vec vv[MQ_NC];
        for (int c = 0; c < NC; c++) vv[c] = mq_load(kind, v, off + j * stride + MQ_LANES * c);
        for (int g = 0; g < G; g++) {
            const mq_vec p = mq_bcast(w + g * ldw + j);
            for (int c = 0; c < NC; c++) acc[g][c] = mq_fma(p, vv[c], acc[g][c]);
        }
    }
    for (int g = 0; g < G; g++)
        for (int c = 0; c < NC; c++)
            mq_storeu(o + g * D + MQ_LANES * c, mq_add(mq_loadu(o + g * D + MQ_LANES * c), acc[g][c]));
}

/* G (the heads of a pass, 1..4) and R / NC as compile-time constants in
 * each call, so the accumulators stay in registers (VX_C_CASES and
 * MQ_R_CASES switch on variables named C and R) */
#define VX_ONE_DOT(G_, R_) one_dot_rows(kind, R_, G_, q, k, off, stride, D, mul, s, n)
#define VX_ONE_AXPY(G_, NC_) one_axpy_rows(kind, NC_, G_, w, n, v, off, stride, nb, ahead, D, o)

VX_INLINE void attn_one_body(int kind, const float *qg, int64_t nkv, int64_t group, const void *k, const void *v,
                             const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t n, int64_t D,
                             float scale, float *scores, float *og) {
    const int64_t heads = nkv * group;
    /* scores[(h*group + g)*n + j] */
    for (int64_t j = 0; j < n; j += MQ_ROWS) {
        const int R = (n - j) >= MQ_ROWS ? MQ_ROWS : (int)(n - j);
        for (int64_t r = j + MQ_ONE_PREFETCH; r < j + MQ_ONE_PREFETCH + MQ_ROWS && r < n; r++)
            prefetch_elems(kind, k, r * stride, nkv * D);
        for (int64_t h = 0; h < nkv; h++) {
            float mul[MQ_ROWS];
            for (int r = 0; r < MQ_ROWS; r++) /* (every entry set: the compiler cannot see that only R are read) */
                mul[r] = kind == VX_KV_INT8 && r < R ? scale * ks[(j + r) * sstride + h] : scale;
            for (int64_t g0 = 0; g0 < group; g0 += 4) {
                const int C = (int)((group - g0) < 4 ? (group - g0) : 4);
                const int64_t qh = h * group + g0;
                const float *q = qg + qh * D;
                float *s = scores + qh * n + j;
                const int64_t off = j * stride + h * D;
                MQ_R_CASES(VX_ONE_DOT)
            }
        }
    }
    mq_softmax(scores, heads, n);
    if (kind == VX_KV_INT8) /* fold V's row scales into the weights */
        for (int64_t h = 0; h < nkv; h++)
            for (int64_t g = 0; g < group; g++) {
                float *w = scores + (h * group + g) * n;
                for (int64_t j = 0; j < n; j++) w[j] *= vs[j * sstride + h];
            }
    memset(og, 0, (size_t)(heads * D) * sizeof(float));
    for (int64_t j0 = 0; j0 < n; j0 += VX_ONE_V_BLOCK) {
        const int64_t nb = (n - j0) < VX_ONE_V_BLOCK ? (n - j0) : VX_ONE_V_BLOCK;
        const int64_t ahead = (n - j0 - nb) < VX_ONE_V_BLOCK ? (n - j0 - nb) : VX_ONE_V_BLOCK; /* next block's rows */
        if (j0 == 0) /* later blocks were prefetched while the previous one ran */
            for (int64_t j = 0; j < nb; j++) prefetch_elems(kind, v, j * stride, nkv * D);
        for (int64_t h = 0; h < nkv; h++) {
            for (int64_t g0 = 0; g0 < group; g0 += 4) {
                const int C = (int)((group - g0) < 4 ? (group - g0) : 4);
                const int64_t qh = h * group + g0;
                const float *w = scores + qh * n + j0;
                for (int64_t d = 0; d < D;) {
                    const int64_t off = j0 * stride + h * D + d;
                    float *o = og + qh * D + d;
                    if (D - d >= MQ_NC * MQ_LANES) {
                        VX_C_CASES(VX_ONE_AXPY, MQ_NC)
                        d += MQ_NC * MQ_LANES;
                    } else {
                        VX_C_CASES(VX_ONE_AXPY, 1)
                        d += MQ_LANES;
                    }
                }
            }
        }
    }
}

/* The compact kind as a constant in each call (one widening sequence per kind). */
VX_INLINE void attn_one_compact(int kind, const float *qg, int64_t nkv, int64_t group, const void *k, const void *v,
                                const float *ks, const float *vs, int64_t stride, int64_t sstride, int64_t n, int64_t D,
                                float scale, float *scores, float *og) {
    if (kind == VX_KV_BF16)
        attn_one_body(VX_KV_BF16, qg, nkv, group, k, v, ks, vs, stride, sstride, n, D, scale, scores, og);
    else attn_one_body(VX_KV_INT8, qg, nkv, group, k, v, ks, vs, stride, sstride, n, D, scale, scores, og);
}

#endif
