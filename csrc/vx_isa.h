/* Internal: the per-ISA kernels (one file each, like ggml-cpu) and the table
 * the dispatcher picks once. Each kernel is single-threaded; threading lives
 * in vx_core.c. */
#ifndef VX_ISA_H
#define VX_ISA_H

#include <stdint.h>

typedef struct vx_ops {
    /* out[m*ldo + n] for m < M, n < N, from rows w + n*K (bf16 bits).
     * Row-deterministic: the result for one row of x does not depend on M,
     * so any chunking of a stream gives bit-identical activations.
     * scratch: at least vx_gemm_scratch_floats(K) floats. */
    void (*gemm_bf16)(const float *x, int64_t M, const uint16_t *w, int64_t N, int64_t K,
                      const float *bias, float *out, int64_t ldo, int accumulate, float *scratch);
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n); /* y += a * x */
} vx_ops;

/* W rows processed per gemm task; scratch holds their fp32 copy (padded). */
#define VX_GEMM_ROWS 4
static inline int64_t vx_gemm_scratch_floats(int64_t K) { return VX_GEMM_ROWS * (K + 16) + 64; }

extern const vx_ops vx_ops_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const vx_ops vx_ops_avx2;
#if defined(VX_HAVE_AVX512)
extern const vx_ops vx_ops_avx512;
#endif
#endif
#if defined(__aarch64__)
extern const vx_ops vx_ops_neon;
#endif

const vx_ops *vx_ops_active(void);

#endif
