/* Run under qemu-aarch64 by tests/test_build.py: the NEON quantized-weight
 * kernels (plain and +dotprod) against the scalar reference kernels (which
 * tests/test_qkernels.py checks against the gguf package on x86), on random
 * valid blocks, odd shapes, and the public vx_matmul_q path.
 * Prints one line per failure and exits non-zero if any. */
#include "vx.h"
#include "vx_quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float rndf(void) { return (float)(rnd() % 20001) / 10000.0f - 1.0f; }

static const int64_t VALUES[3] = {32, 32, 256}, BYTES[3] = {VX_Q8_0_BYTES, VX_Q4_0_BYTES, VX_Q4_K_BYTES};

/* random bytes with finite fp16 scales (0x2000..0x23ff: ~0.008..0.016) */
static void random_blocks(uint8_t *w, int qtype, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks * BYTES[qtype]; i++) w[i] = (uint8_t)rnd();
    for (int64_t b = 0; b < n_blocks; b++) {
        uint8_t *p = w + b * BYTES[qtype];
        const uint16_t h = (uint16_t)(0x2000 | (rnd() & 0x3ff));
        memcpy(p, &h, 2);
        if (qtype == VX_Q4_K) memcpy(p + 2, &h, 2);
    }
}

/* the documented activation rule: dx = amax/127, q = round-half-even(x/dx) */
static void quantize(const float *x, int64_t M, int64_t K, int8_t *q, float *d, int32_t *s) {
    for (int64_t b = 0; b < M * K / 32; b++) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[b * 32 + i]));
        const float dx = amax / 127.0f;
        int32_t sum = 0;
        for (int i = 0; i < 32; i++) {
            q[b * 32 + i] = dx > 0.0f ? (int8_t)nearbyintf(x[b * 32 + i] / dx) : 0;
            sum += q[b * 32 + i];
        }
        d[b] = dx;
        s[b] = sum;
    }
}

static int failures = 0;
static int levels_run = 0; /* bit per ISA level whose public path ran */

static void compare(const char *what, int qtype, int64_t M, int64_t N, int64_t K, const float *ref, const float *got) {
    double scale = 0.0, err = 0.0;
    for (int64_t i = 0; i < M * N; i++) {
        scale = fmax(scale, fabs(ref[i]));
        err = fmax(err, fabs((double)ref[i] - got[i]));
    }
    /* fp32 accumulation in a different order than the scalar kernel: ~1e-7
     * of the terms, which can cancel to far less than the largest output on a
     * one-output case; a wrong nibble, scale or block is off by ~1e-1 */
    if (!(err <= 1e-4 * scale)) {
        printf("FAIL %s qtype %d M=%lld N=%lld K=%lld: max error %.3e of %.3e\n", what, qtype, (long long)M,
               (long long)N, (long long)K, err, scale);
        failures++;
    }
}

int main(void) {
    static const int64_t Ms[] = {1, 2, 3, 5, 17}, Ns[] = {1, 7, 13}, Ks[] = {256, 768, 1024};
    for (int qtype = 0; qtype < 3; qtype++)
        for (int mi = 0; mi < 5; mi++)
            for (int ni = 0; ni < 3; ni++)
                for (int ki = 0; ki < 3; ki++) {
                    const int64_t M = Ms[mi], N = Ns[ni], K = Ks[ki];
                    const int64_t rb = K / VALUES[qtype] * BYTES[qtype];
                    uint8_t *w = malloc((size_t)(N * rb));
                    float *x = malloc((size_t)(M * K) * sizeof(float));
                    int8_t *q = malloc((size_t)(M * K));
                    float *d = malloc((size_t)(M * K / 32) * sizeof(float));
                    int32_t *s = malloc((size_t)(M * K / 32) * sizeof(int32_t));
                    float *ref = malloc((size_t)(M * N) * sizeof(float)),
                          *got = malloc((size_t)(M * N) * sizeof(float));
                    random_blocks(w, qtype, N * rb / BYTES[qtype]);
                    for (int64_t i = 0; i < M * K; i++) x[i] = rndf() * (float)(1 + (i % 7));
                    quantize(x, M, K, q, d, s);
                    const vx_qx qx = {q, d, s};
                    vx_qops_scalar.gemm[qtype](&qx, M, w, N, K, NULL, ref, N, 0);
                    vx_qops_neon.gemm[qtype](&qx, M, w, N, K, NULL, got, N, 0);
                    compare("neon", qtype, M, N, K, ref, got);
#if defined(VX_HAVE_NEON_DOTPROD)
                    vx_qops_neon_dotprod.gemm[qtype](&qx, M, w, N, K, NULL, got, N, 0);
                    compare("neon_dotprod", qtype, M, N, K, ref, got);
#endif
                    /* the public path (activation quantization in C) at each NEON level */
                    for (int isa = VX_ISA_NEON; isa <= VX_ISA_NEON_DOTPROD; isa++) {
                        if (!vx_isa_available(isa)) continue;
                        if (vx_set_isa(isa) != VX_OK || vx_matmul_q(x, w, qtype, NULL, got, M, N, K, 0) != VX_OK) {
                            printf("FAIL vx_matmul_q on %s\n", vx_isa_name(isa));
                            failures++;
                            continue;
                        }
                        compare(vx_isa_name(isa), qtype, M, N, K, ref, got);
                        levels_run |= 1 << isa;
                        /* row determinism: row by row equals the whole call, bit for bit */
                        for (int64_t m = 0; m < M; m++) {
                            float row[13];
                            vx_matmul_q(x + m * K, w, qtype, NULL, row, 1, N, K, 0);
                            if (memcmp(row, got + m * N, (size_t)N * sizeof(float))) {
                                printf("FAIL row determinism %s qtype %d M=%lld row %lld\n", vx_isa_name(isa), qtype,
                                       (long long)M, (long long)m);
                                failures++;
                            }
                        }
                    }
                    free(w), free(x), free(q), free(d), free(s), free(ref), free(got);
                }
    printf("%s: levels%s%s, %d failures\n", failures ? "FAILED" : "ok", levels_run & (1 << VX_ISA_NEON) ? " neon" : "",
           levels_run & (1 << VX_ISA_NEON_DOTPROD) ? " neon_dotprod" : "", failures);
    return failures != 0;
}
