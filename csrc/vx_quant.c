/* Threaded driver for the quantized-weight kernels: one pass quantizes every
 * row of x to int8 blocks (in parallel over rows), then tasks of weight rows
 * (x rows too, for large M) run the active ISA's kernel. Also the read-only
 * streaming kernel the benchmarks use as the bandwidth roofline. */
#include "vx.h"
#include "vx_isa.h"
#include "vx_levels.h"
#include "vx_tasks.h"
#include "vx_quant.h"

#include <math.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static const vx_qtype_info qtypes[VX_QTYPE_COUNT] = {
    [VX_Q8_0] = {"q8_0", 32, VX_Q8_0_BYTES, 1},
    [VX_Q4_0] = {"q4_0", 32, VX_Q4_0_BYTES, 1},
    [VX_Q4_K] = {"q4_k", VX_Q4K_SUPER, VX_Q4_K_BYTES, 1},
};

const vx_qtype_info *vx_qtype(int qtype) { return qtype < 0 || qtype >= VX_QTYPE_COUNT ? NULL : &qtypes[qtype]; }

int64_t vx_q_row_bytes(int qtype, int64_t K) {
    const vx_qtype_info *t = vx_qtype(qtype);
    if (!t || K <= 0 || K % t->block_values) return -1;
    return K / t->block_values * t->block_bytes;
}

const char *vx_q_kernels_name(void) { return vx_level_active()->qops->name; }
const char *vx_qp_kernels_name(void) { return vx_level_active()->qpops->name; }

/* One row of x -> int8 blocks: dx = amax/127, q = round-half-even(x/dx).
 * A block holding inf/NaN gets dx = NaN and q = 0, so its outputs are NaN
 * (never an out-of-range float -> int conversion). */
static void quantize_row(const float *x, int64_t K, int8_t *q, float *d, int32_t *s) {
    /* adding and subtracting 1.5 * 2^23 rounds |v| < 2^22 to the nearest
     * integer, ties to even, in the default rounding mode: no libm call */
    const float magic = 12582912.0f;
    for (int64_t b = 0; b < K / VX_QBLOCK; b++) {
        const float *xb = x + b * VX_QBLOCK;
        float amax = 0.0f;
        int finite = 1;
        for (int i = 0; i < VX_QBLOCK; i++) {
            const float a = fabsf(xb[i]);
            finite &= a <= 3.4028234663852886e38f; /* false for inf and NaN */
            amax = a > amax ? a : amax;
        }
        int8_t *qb = q + b * VX_QBLOCK;
        int32_t sum = 0;
        if (!finite || amax == 0.0f) {
            for (int i = 0; i < VX_QBLOCK; i++) qb[i] = 0;
            d[b] = finite ? 0.0f : NAN;
        } else {
            const float dx = amax / 127.0f;
            for (int i = 0; i < VX_QBLOCK; i++) {
                float v = (xb[i] / dx + magic) - magic;
                v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
                qb[i] = (int8_t)v;
                sum += qb[i];
            }
            d[b] = dx;
        }
        s[b] = sum;
    }
}

/* Task sizes: up to VX_Q_TASK_N weight rows x VX_Q_TASK_M rows of x; a
 * task's x panel (64 x K int8) stays in L2 while its weight rows stream
 * through L1. Long tasks keep each stream of weights contiguous for the
 * hardware prefetchers (the 512-bit kernels pair a task's group i with group
 * i + half: two long runs): on a Zen 4 the two together, against 16-row
 * tasks pairing groups g and g + 1, made a Q4_0 decoder-shaped GEMV 1.2x
 * faster at 2 threads, and Q4_K 1.5x. */
#define VX_Q_TASK_N 128
#define VX_Q_TASK_M 64
#define VX_Q_SERIAL_QUANT (1 << 15)

/* Weight rows per task: VX_Q_TASK_N, fewer (a multiple of 16) where a
 * thread would get under 4 tasks, so many threads still share small N. */
static int64_t task_rows(int64_t N, int nthreads) {
    const int64_t rows = (N / (4 * (int64_t)nthreads) + 15) / 16 * 16;
    return rows < 16 ? 16 : rows > VX_Q_TASK_N ? VX_Q_TASK_N : rows;
}

/* One product of a call: w (N rows of rb bytes: the GGML layout, or the
 * repacked one, which has as many bytes per row in groups of VX_QP_ROWS,
 * a divisor of a task's rows) and its kernel; its tasks are task_n weight
 * rows x VX_Q_TASK_M rows of x, numbered from `first` in the call. */
typedef struct q_product {
    const uint8_t *w;
    vx_qgemm_fn gemm;
    int64_t rb, N, task_n, tasks_n, first;
    const float *bias;
    float *out;
} q_product;

/* A call: x quantized once (int8 values, block scales, block sums), then
 * the tasks of every product in one stage. */
typedef struct q_gemm {
    const float *x;
    int8_t *xq;
    float *xd;
    int32_t *xs;
    int64_t M, K, xnb;
    int count;
    const q_product *p;
    int accumulate;
} q_gemm;

static void quantize_task(const void *ctx, int64_t m, void *scratch) {
    const q_gemm *g = (const q_gemm *)ctx;
    (void)scratch;
    quantize_row(g->x + m * g->K, g->K, g->xq + m * g->K, g->xd + m * g->xnb, g->xs + m * g->xnb);
}

static void gemm_task(const void *ctx, int64_t t, void *scratch) {
    const q_gemm *g = (const q_gemm *)ctx;
    (void)scratch;
    int i = g->count - 1;
    while (i > 0 && t < g->p[i].first) i--;
    const q_product *p = &g->p[i];
    t -= p->first;
    const int64_t n0 = (t % p->tasks_n) * p->task_n, m0 = (t / p->tasks_n) * VX_Q_TASK_M;
    const int64_t nb = (p->N - n0) < p->task_n ? (p->N - n0) : p->task_n;
    const int64_t mb = (g->M - m0) < VX_Q_TASK_M ? (g->M - m0) : VX_Q_TASK_M;
    const vx_qx xt = {g->xq + m0 * g->K, g->xd + m0 * g->xnb, g->xs + m0 * g->xnb};
    p->gemm(&xt, mb, p->w + n0 * p->rb, nb, g->K, p->bias ? p->bias + n0 : NULL, p->out + m0 * p->N + n0, p->N,
            g->accumulate);
}

/* The products p[0 .. count) of one x [M, K]: x is quantized once and the
 * tasks of all of them share one parallel region, so a product's last
 * tasks overlap the next one's (each output the same bits as alone). Fills
 * each product's task fields. */
static int matmul_q_driver(const float *x, int64_t M, int64_t K, q_product *p, int count, int accumulate) {
    const int64_t xnb = K / VX_QBLOCK;
    /* one allocation: int8 values, then scales, then sums (64-byte aligned parts) */
    const size_t q_bytes = ((size_t)(M * K) + 63) & ~(size_t)63;
    const size_t d_bytes = ((size_t)(M * xnb) * sizeof(float) + 63) & ~(size_t)63;
    char *scratch = (char *)malloc(q_bytes + 2 * d_bytes + 64);
    if (!scratch) return VX_ENOMEM;
    char *base = (char *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    int64_t N_all = 0;
    for (int i = 0; i < count; i++) N_all += p[i].N;
    const int nthreads = vx_threads_for(M * N_all * K);
    const int64_t tasks_m = (M + VX_Q_TASK_M - 1) / VX_Q_TASK_M;
    int64_t n_tasks = 0;
    for (int i = 0; i < count; i++) {
        p[i].task_n = task_rows(p[i].N, nthreads);
        p[i].tasks_n = (p[i].N + p[i].task_n - 1) / p[i].task_n;
        p[i].first = n_tasks;
        n_tasks += p[i].tasks_n * tasks_m;
    }
    const q_gemm g = {
        x, (int8_t *)base, (float *)(base + q_bytes), (int32_t *)(base + q_bytes + d_bytes), M, K, xnb, count,
        p, accumulate};
    /* A few rows (a decoder step, a live push) are quantized before the
     * threads start: a microsecond, and no barrier that a descheduled
     * thread (shared machine) could hold up. */
    const int quantize_first = M * K <= VX_Q_SERIAL_QUANT;
    if (quantize_first)
        for (int64_t m = 0; m < M; m++) quantize_task(&g, m, NULL);
    const vx_stage stages[2] = {{quantize_first ? 0 : M, quantize_task}, {n_tasks, gemm_task}};
    const int status = vx_run_stages(stages, 2, nthreads, 1, 0, &g);
    free(scratch);
    return status;
}

int vx_matmul_q(const float *x, const uint8_t *w, int qtype, const float *bias, float *out, int64_t M, int64_t N,
                int64_t K, int accumulate) {
    const int64_t rb = vx_q_row_bytes(qtype, K);
    if (!x || !w || !out || M <= 0 || N <= 0 || rb <= 0) return VX_EINVAL;
    q_product p = {.w = w, .gemm = vx_level_active()->qops->gemm[qtype], .rb = rb, .N = N, .bias = bias, .out = out};
    return matmul_q_driver(x, M, K, &p, 1, accumulate);
}

int vx_matmul_qp(const float *x, const uint8_t *wp, int qtype, const float *bias, float *out, int64_t M, int64_t N,
                 int64_t K, int accumulate) {
    const vx_qp_product one = {wp, qtype, N, bias, out};
    return vx_matmul_qp_many(x, M, K, &one, 1, accumulate);
}

int vx_matmul_qp_many(const float *x, int64_t M, int64_t K, const vx_qp_product *products, int count, int accumulate) {
    if (!x || !products || M <= 0 || count <= 0 || count > VX_QP_MANY_MAX) return VX_EINVAL;
    q_product p[VX_QP_MANY_MAX];
    for (int i = 0; i < count; i++) {
        const vx_qp_product *q = &products[i];
        if (!q->wp || !q->out || q->N <= 0 || vx_qp_bytes(q->qtype, q->N, K) < 0) return VX_EINVAL;
        p[i] = (q_product){.w = q->wp,
                           .gemm = vx_level_active()->qpops->gemm[q->qtype],
                           .rb = vx_q_row_bytes(q->qtype, K), /* as many bytes per row as the GGML layout */
                           .N = q->N,
                           .bias = q->bias,
                           .out = q->out};
    }
    return matmul_q_driver(x, M, K, p, count, accumulate);
}

/* Read-only streaming of lines [lo, hi) of buf, 64 bytes at a time. The
 * widest loads the CPU has (whatever the ISA cap: this measures the machine)
 * keep the most lines in flight per load-queue entry. */
static uint64_t read_lines_generic(const uint64_t *p, int64_t lo, int64_t hi) {
    const int64_t len = (hi - lo) / VX_READ_STREAMS;
    uint64_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t i = 0; i < len; i++)
        for (int s = 0; s < VX_READ_STREAMS; s++)
            for (int j = 0; j < 8; j++) acc[j] ^= p[(lo + s * len + i) * 8 + j];
    for (int64_t i = lo + VX_READ_STREAMS * len; i < hi; i++)
        for (int j = 0; j < 8; j++) acc[j] ^= p[i * 8 + j];
    return acc[0] ^ acc[1] ^ acc[2] ^ acc[3] ^ acc[4] ^ acc[5] ^ acc[6] ^ acc[7];
}

typedef uint64_t (*vx_read_fn)(const uint64_t *p, int64_t lo, int64_t hi);

static vx_read_fn read_lines(void) {
#if defined(__x86_64__) || defined(_M_X64)
#if defined(VX_HAVE_AVX512VNNI)
    if (vx_isa_available(VX_ISA_AVX512)) return vx_read_lines_avx512;
#endif
    if (vx_isa_available(VX_ISA_AVX2)) return vx_read_lines_avx2;
#endif
    return read_lines_generic;
}

/* Lines per dynamically scheduled chunk (4 MiB): a thread that is
 * descheduled on a shared machine leaves its chunks to the other threads,
 * as the dynamically scheduled GEMV tasks do, so the two are comparable. */
#define VX_READ_CHUNK_LINES 65536

uint64_t vx_stream_read(const void *buf, int64_t nbytes) {
    if (!buf || nbytes <= 0) return 0;
    const uint64_t *p = (const uint64_t *)buf;
    const int64_t n_lines = nbytes / 64;
    const int64_t n_chunks = (n_lines + VX_READ_CHUNK_LINES - 1) / VX_READ_CHUNK_LINES;
    const vx_read_fn fn = read_lines();
    uint64_t total = 0;
    const int nthreads = vx_get_num_threads();
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1) schedule(dynamic, 1) reduction(^ : total)
    for (int64_t c = 0; c < n_chunks; c++) {
        const int64_t lo = c * VX_READ_CHUNK_LINES;
        const int64_t hi = lo + VX_READ_CHUNK_LINES < n_lines ? lo + VX_READ_CHUNK_LINES : n_lines;
        total ^= fn(p, lo, hi);
    }
    return total;
}
