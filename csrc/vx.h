/* voxtral C core: the entry points the Cython layer calls.
 *
 * Every pointer and size is validated by the Cython layer before these run;
 * the C side re-checks only what is cheap (NULL, non-positive sizes) and
 * returns a negative error code instead of touching memory it was not given.
 */
#ifndef VX_H
#define VX_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { VX_OK = 0, VX_EINVAL = -1, VX_ENOMEM = -2 };

/* ISA selection: detected once; can be capped (env VOXTRAL_ISA or vx_set_isa). */
/* Levels, slowest first; a cap keeps the best available level not above it.
 * neon_dotprod / avxvnni / avx512vnni run the same float kernels as neon /
 * avx2 / avx512 and add the integer-dot kernels for quantized weights; amx
 * adds int8 tile products for repacked weights at M >= 4 (the levels table
 * in vx_cpu.c says which kernels each level runs). */
enum {
    VX_ISA_SCALAR = 0,
    VX_ISA_NEON = 1,
    VX_ISA_NEON_DOTPROD = 2,
    VX_ISA_AVX2 = 3,
    VX_ISA_AVXVNNI = 4,
    VX_ISA_AVX512 = 5,
    VX_ISA_AVX512VNNI = 6,
    VX_ISA_AMX = 7,
    VX_ISA_COUNT = 8
};
const char *vx_isa_name(int isa);
int vx_isa_available(int isa); /* CPU supports it and it was compiled in */
int vx_active_isa(void);
int vx_set_isa(int isa);              /* VX_EINVAL if not available */
int vx_cpu_feature(const char *name); /* "avx2", "fma", "f16c", "avx512f", "avx512bw",
                                      "avx512dq", "avx512vl", "avx512bf16", "avx512vnni",
                                      "avxvnni", "amx", "neon", "neon_dotprod" */

#define VX_MAX_THREADS 1024 /* = voxtral.threads.MAX_THREADS */
void vx_set_num_threads(int n);
int vx_get_num_threads(void);

/* out[M,N] (+)= x[M,K] @ bf16(w[N,K])^T (+ bias[N]); fp32 accumulation. */
int vx_matmul_bf16(const float *x, const uint16_t *w, const float *bias, float *out, int64_t M, int64_t N, int64_t K,
                   int accumulate);

/* GGML quantized weights: w holds N rows of GGML blocks (vx_q_row_bytes(qtype, K)
 * bytes each). Each row of x is quantized to int8 per 32 values on the fly
 * (scale amax/127); products are int32 per block, scaled in fp32.
 * out[M,N] (+)= x[M,K] @ dequant(w)^T (+ bias[N]). Row-deterministic. */
enum { VX_Q8_0 = 0, VX_Q4_0 = 1, VX_Q4_K = 2, VX_QTYPE_COUNT = 3 };
int64_t vx_q_row_bytes(int qtype, int64_t K); /* -1: unknown qtype or K not a multiple of the block */
/* The one table of weight-type facts (Python reads it through the binding). */
typedef struct vx_qtype_info {
    const char *name; /* "q8_0", "q4_0", "q4_k" (GGML's names, lower case) */
    int block_values; /* weights per block */
    int block_bytes;  /* bytes per block (GGML layout) */
    int repacked;     /* 1: has the load-time interleaved layout (qpack.c) */
} vx_qtype_info;
const vx_qtype_info *vx_qtype(int qtype); /* NULL outside [0, VX_QTYPE_COUNT) */
int vx_matmul_q(const float *x, const uint8_t *w, int qtype, const float *bias, float *out, int64_t M, int64_t N,
                int64_t K, int accumulate);
const char *vx_q_kernels_name(void); /* which quantized-kernel table the active ISA uses */

/* Load-time repacking (q8_0, q4_0, q4_k): 8 rows' blocks interleaved for the SIMD
 * kernels (layout in qpack.c); results bit-equal to the scalar kernel over
 * the same layout on every ISA, independent of M, tiles and threads. */
int64_t vx_qp_bytes(int qtype, int64_t N, int64_t K); /* -1: qtype not repacked or bad K */
int vx_q_repack(int qtype, const uint8_t *w, int64_t N, int64_t K, uint8_t *dst);
int vx_q_unpack(int qtype, const uint8_t *wp, int64_t N, int64_t K, uint8_t *dst);
int vx_matmul_qp(const float *x, const uint8_t *wp, int qtype, const float *bias, float *out, int64_t M, int64_t N,
                 int64_t K, int accumulate);
/* Several repacked products of one x [M, K] in one call: x quantized once,
 * every product's tasks in one parallel region (the attention's q, k, v; the
 * FFN's gate and up). Each out[M, N] is the same bits as vx_matmul_qp's. */
typedef struct vx_qp_product {
    const uint8_t *wp;
    int qtype;
    int64_t N;
    const float *bias; /* NULL: none */
    float *out;
} vx_qp_product;
#define VX_QP_MANY_MAX 4
int vx_matmul_qp_many(const float *x, int64_t M, int64_t K, const vx_qp_product *products, int count, int accumulate);
const char *vx_qp_kernels_name(void); /* "avx2" or "scalar" */
int vx_drop_file_pages(const void *p,
                       int64_t nbytes); /* madvise(DONTNEED) the whole pages of a read-only file mapping */

/* Read nbytes (a multiple of 64) with all threads; returns a checksum so the
 * reads cannot be optimised away. For measuring read-only memory bandwidth. */
uint64_t vx_stream_read(const void *buf, int64_t nbytes);

/* Causal sliding-window GQA attention over a KV cache (see _kernels.pyx). */
int vx_attention(const float *q, const float *k, const float *v, float *out, int64_t M, int64_t Hq, int64_t T,
                 int64_t Hkv, int64_t D, int64_t q_pos0, int64_t k_pos0, int64_t window, float scale);

int vx_rms_norm(const float *x, const float *w, float *out, int64_t M, int64_t D, float eps);
int vx_rope(float *x, const float *cos_t, const float *sin_t, int64_t M, int64_t H, int64_t D, int interleaved);
int vx_gelu(const float *x, float *out, int64_t n);
int vx_silu_mul(const float *gate, const float *up, float *out, int64_t n);

/* x[T_in, Cin] time-major, w[Cout, Cin, Kw]; out[T_out, Cout]. */
int vx_conv1d_bf16(const float *x, const uint16_t *w, const float *bias, float *out, int64_t T_in, int64_t Cin,
                   int64_t Cout, int64_t Kw, int64_t stride);

/* |rfft(window * signal[f*hop : f*hop + n_fft])|^2 for f < n_frames: out[n_frames, n_fft/2+1]. */
int vx_stft_power(const float *signal, int64_t n_signal, const float *window, int64_t n_fft, int64_t hop,
                  int64_t n_frames, float *out);

/* out[F, n_mels] = (max(log10(max(power @ filters, 1e-10)), floor) + 4) / 4 */
int vx_log_mel(const float *power, const float *filters, float *out, int64_t F, int64_t n_freq, int64_t n_mels,
               float log_floor);

#ifdef __cplusplus
}
#endif
#endif
