/* The fp32 / bf16 entry points: products and attention as tasks of the
 * threaded driver (vx_tasks.h) over the active level's single-threaded
 * kernels; plus the light element-wise kernels, which are memory-bound and
 * left to the compiler's baseline vectoriser. */
#include "vx.h"
#include "vx_isa.h"
#include "vx_levels.h"
#include "vx_tasks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct bf16_gemm {
    const vx_ops *ops;
    const float *x;
    const uint16_t *w;
    const float *bias;
    float *out;
    int64_t M, N, K, rows_per_task;
    int accumulate;
} bf16_gemm;

static void bf16_gemm_task(const void *ctx, int64_t t, void *scratch) {
    const bf16_gemm *g = (const bf16_gemm *)ctx;
    const int64_t n0 = t * g->rows_per_task, nb = (g->N - n0) < g->rows_per_task ? (g->N - n0) : g->rows_per_task;
    g->ops->gemm_bf16(g->x, g->M, g->w + n0 * g->K, nb, g->K, g->bias ? g->bias + n0 : NULL, g->out + n0, g->N,
                      g->accumulate, (float *)scratch);
}

int vx_matmul_bf16(const float *x, const uint16_t *w, const float *bias, float *out, int64_t M, int64_t N, int64_t K,
                   int accumulate) {
    if (!x || !w || !out || M <= 0 || N <= 0 || K <= 0) return VX_EINVAL;
    /* Tasks of 16 W rows: enough to balance, few enough to keep W panels hot. */
    const bf16_gemm g = {vx_level_active()->ops, x, w, bias, out, M, N, K, 4 * VX_GEMM_ROWS, accumulate};
    return vx_run_tasks((N + g.rows_per_task - 1) / g.rows_per_task, vx_threads_for(M * N * K), 2,
                        (size_t)vx_gemm_scratch_floats(K) * sizeof(float), bf16_gemm_task, &g);
}

/* K/V rows of one head are Hkv*D floats apart: a stride the hardware
 * prefetchers do not follow across pages, so fetch a few rows ahead. */
#define VX_PREFETCH_ROWS 6

static inline void prefetch_row(const float *p, int64_t D) {
#if defined(__GNUC__) || defined(__clang__)
    for (int64_t d = 0; d < D; d += 16) __builtin_prefetch(p + d, 0, 1);
#else
    (void)p;
    (void)D;
#endif
}

/* One query position's heads kv0 .. kv0+nkv-1 over rows [lo, lo+n): the
 * generic path (per-ISA dot and axpy), for ISAs without a fused kernel. */
static void attend_generic(const vx_ops *ops, const float *qg, float *og, const float *k, const float *v, int64_t Hkv,
                           int64_t kv0, int64_t nkv, int64_t group, int64_t lo, int64_t n, int64_t D, float scale,
                           float *scores) {
    memset(og, 0, (size_t)(nkv * group * D) * sizeof(float));
    for (int64_t h = 0; h < nkv; h++) {
        const int64_t kvh = kv0 + h;
        const float *qh = qg + h * group * D; /* the group's query heads */
        float *oh = og + h * group * D;
        for (int64_t j = 0; j < n; j++) {
            const float *kj = k + ((lo + j) * Hkv + kvh) * D;
            if (j + VX_PREFETCH_ROWS < n) prefetch_row(kj + VX_PREFETCH_ROWS * Hkv * D, D);
            for (int64_t g = 0; g < group; g++) scores[g * n + j] = scale * ops->dot(qh + g * D, kj, D);
        }
        for (int64_t g = 0; g < group; g++) {
            float *s = scores + g * n;
            float mx = -INFINITY;
            for (int64_t j = 0; j < n; j++)
                if (s[j] > mx) mx = s[j];
            double sum = 0.0;
            for (int64_t j = 0; j < n; j++) {
                s[j] = expf(s[j] - mx);
                sum += (double)s[j]; /* in double: n can be 10^4 terms */
            }
            const float inv = (float)(1.0 / sum);
            for (int64_t j = 0; j < n; j++) s[j] *= inv;
        }
        for (int64_t j = 0; j < n; j++) {
            const float *vj = v + ((lo + j) * Hkv + kvh) * D;
            if (j + VX_PREFETCH_ROWS < n) prefetch_row(vj + VX_PREFETCH_ROWS * Hkv * D, D);
            for (int64_t g = 0; g < group; g++) ops->axpy(oh + g * D, scores[g * n + j], vj, D);
        }
    }
}

typedef struct f32_attn {
    const vx_ops *ops;
    const float *k, *v;
    int64_t Hq, Hkv, D;
    float scale;
} f32_attn;

static void attend_f32_task(const void *ctx, const vx_attn_task *t, float *scores) {
    const f32_attn *a = (const f32_attn *)ctx;
    const int64_t group = a->Hq / a->Hkv, D = a->D, off = (t->ulo * a->Hkv + t->kv0) * D;
    if (a->ops->attn && a->ops->attn(t->nq, t->q, a->Hq * D, t->rel, t->n, t->nkv, group, a->k + off, a->v + off,
                                     a->Hkv * D, t->nu, D, a->scale, scores, t->o, a->Hq * D))
        return;
    for (int64_t i = 0; i < t->nq; i++)
        attend_generic(a->ops, t->q + i * a->Hq * D, t->o + i * a->Hq * D, a->k, a->v, a->Hkv, t->kv0, t->nkv, group,
                       t->ulo + t->rel[i], t->n[i], D, a->scale, scores);
}

int vx_attention(const float *q, const float *k, const float *v, float *out, int64_t M, int64_t Hq, int64_t T,
                 int64_t Hkv, int64_t D, int64_t q_pos0, int64_t k_pos0, int64_t window, float scale) {
    if (!q || !k || !v || !out || M <= 0 || Hq <= 0 || T < 0 || Hkv <= 0 || D <= 0 || window <= 0 || Hq % Hkv)
        return VX_EINVAL;
    /* VX_ATTN_MQ consecutive positions per task: they see almost the same
     * rows, which an fp32 cache (4 bytes a value) makes worth reading once */
    const f32_attn ctx = {vx_level_active()->ops, k, v, Hq, Hkv, D, scale};
    return vx_attn_drive(M, Hq, T, Hkv, D, q_pos0, k_pos0, window, VX_ATTN_MQ, q, out, attend_f32_task, &ctx);
}

int vx_rms_norm(const float *x, const float *w, float *out, int64_t M, int64_t D, float eps) {
    if (!x || !w || !out || M <= 0 || D <= 0) return VX_EINVAL;
    const int nthreads = vx_threads_for(M * D * 8);
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1) schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *xr = x + m * D;
        float *orow = out + m * D;
        double ss = 0.0;
        for (int64_t d = 0; d < D; d++) ss += (double)xr[d] * (double)xr[d];
        const float r = (float)(1.0 / sqrt(ss / (double)D + (double)eps));
        for (int64_t d = 0; d < D; d++) orow[d] = w[d] * (xr[d] * r);
    }
    return VX_OK;
}

int vx_rope(float *x, const float *cos_t, const float *sin_t, int64_t M, int64_t H, int64_t D, int interleaved) {
    if (!x || !cos_t || !sin_t || M <= 0 || H <= 0 || D <= 0 || D % 2) return VX_EINVAL;
    const int64_t half = D / 2;
    for (int64_t m = 0; m < M; m++) {
        const float *c = cos_t + m * half, *s = sin_t + m * half;
        for (int64_t h = 0; h < H; h++) {
            float *v = x + (m * H + h) * D;
            if (interleaved) {
                for (int64_t i = 0; i < half; i++) {
                    const float a = v[2 * i], b = v[2 * i + 1];
                    v[2 * i] = a * c[i] - b * s[i];
                    v[2 * i + 1] = a * s[i] + b * c[i];
                }
            } else {
                for (int64_t i = 0; i < half; i++) {
                    const float a = v[i], b = v[i + half];
                    v[i] = a * c[i] - b * s[i];
                    v[i + half] = a * s[i] + b * c[i];
                }
            }
        }
    }
    return VX_OK;
}

int vx_gelu(const float *x, float *out, int64_t n) {
    if (!x || !out || n < 0) return VX_EINVAL;
    const int nthreads = vx_threads_for(n * 16);
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1) schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
    return VX_OK;
}

int vx_silu_mul(const float *gate, const float *up, float *out, int64_t n) {
    if (!gate || !up || !out || n < 0) return VX_EINVAL;
    const int nthreads = vx_threads_for(n * 16);
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
    return VX_OK;
}

int vx_conv1d_bf16(const float *x, const uint16_t *w, const float *bias, float *out, int64_t T_in, int64_t Cin,
                   int64_t Cout, int64_t Kw, int64_t stride) {
    if (!x || !w || !out || T_in < Kw || Cin <= 0 || Cout <= 0 || Kw <= 0 || stride <= 0) return VX_EINVAL;
    const int64_t T_out = (T_in - Kw) / stride + 1;
    const int64_t cols = Cin * Kw;
    /* im2col in the weight's [Cin, Kw] order, then one GEMM */
    float *col = (float *)malloc((size_t)(T_out * cols) * sizeof(float));
    if (!col) return VX_ENOMEM;
    for (int64_t t = 0; t < T_out; t++) {
        float *row = col + t * cols;
        const float *src = x + t * stride * Cin;
        for (int64_t c = 0; c < Cin; c++)
            for (int64_t kk = 0; kk < Kw; kk++) row[c * Kw + kk] = src[kk * Cin + c];
    }
    int status = vx_matmul_bf16(col, w, bias, out, T_out, Cout, cols, 0);
    free(col);
    return status;
}

int vx_log_mel(const float *power, const float *filters, float *out, int64_t F, int64_t n_freq, int64_t n_mels,
               float log_floor) {
    if (!power || !filters || !out || F < 0 || n_freq <= 0 || n_mels <= 0) return VX_EINVAL;
    const int nthreads = vx_threads_for(F * n_freq * n_mels);
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1) schedule(static)
    for (int64_t f = 0; f < F; f++) {
        const float *p = power + f * n_freq;
        for (int64_t m = 0; m < n_mels; m++) {
            double s = 0.0;
            for (int64_t b = 0; b < n_freq; b++) s += (double)p[b] * (double)filters[b * n_mels + m];
            double v = log10(s > 1e-10 ? s : 1e-10);
            if (v < (double)log_floor) v = (double)log_floor;
            out[f * n_mels + m] = (float)((v + 4.0) / 4.0);
        }
    }
    return VX_OK;
}
