/* Stand-alone check of the active ISA's compact-KV attention kernel against
 * the scalar reference in vx_kv.c, for ISAs the test machine cannot run
 * natively (tests/test_build.py builds it for aarch64 and runs it under
 * qemu-user when available). Prints "ok" and exits 0, or names the failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "vx.h"
#include "vx_kv.h"

static float frand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return ((float)((*s >> 8) & 0xffff) / 32768.0f) - 1.0f;
}

static int check(int kind, int64_t M, int64_t Hq, int64_t Hkv, int64_t D, int64_t T, int64_t window) {
    unsigned seed = (unsigned)(kind * 7919 + D * 31 + T);
    const int64_t nq = M * Hq * D, nkv = T * Hkv * D;
    float *q = malloc(nq * sizeof(float)), *k = malloc(nkv * sizeof(float)), *v = malloc(nkv * sizeof(float));
    float *ks = malloc(T * Hkv * sizeof(float)), *vs = malloc(T * Hkv * sizeof(float));
    float *o1 = malloc(nq * sizeof(float)), *o2 = malloc(nq * sizeof(float));
    void *kc = malloc(nkv * 2), *vc = malloc(nkv * 2);
    for (int64_t i = 0; i < nq; i++) q[i] = frand(&seed);
    for (int64_t i = 0; i < nkv; i++) {
        k[i] = frand(&seed) * 3;
        v[i] = frand(&seed);
    }
    vx_kv_store(kind, k, kc, ks, T, Hkv, D);
    vx_kv_store(kind, v, vc, vs, T, Hkv, D);
    const float *pks = kind == VX_KV_INT8 ? ks : NULL, *pvs = kind == VX_KV_INT8 ? vs : NULL;
    int bad = vx_attention_kv(kind, q, kc, vc, pks, pvs, o1, M, Hq, T, Hkv, D, T - M, 0, window, 0.125f) != VX_OK;
    vx_set_isa(VX_ISA_SCALAR);
    bad |= vx_attention_kv(kind, q, kc, vc, pks, pvs, o2, M, Hq, T, Hkv, D, T - M, 0, window, 0.125f) != VX_OK;
    float err = 0, mx = 0;
    for (int64_t i = 0; i < nq; i++) {
        err = fmaxf(err, fabsf(o1[i] - o2[i]));
        mx = fmaxf(mx, fabsf(o2[i]));
    }
    if (bad || !(err <= 1e-5f * mx)) {
        printf("FAIL kind %d M %lld Hq %lld Hkv %lld D %lld T %lld: err %g (max %g)\n", kind, (long long)M,
               (long long)Hq, (long long)Hkv, (long long)D, (long long)T, err, mx);
        return 1;
    }
    free(q), free(k), free(v), free(ks), free(vs), free(o1), free(o2), free(kc), free(vc);
    return 0;
}

int main(int argc, char **argv) {
    const int isa = argc > 1 ? atoi(argv[1]) : vx_active_isa();
    int fails = 0;
    for (int kind = VX_KV_BF16; kind <= VX_KV_INT8; kind++) {
        const int64_t shapes[][6] = {{1, 32, 8, 128, 300, 8192},
                                     {3, 8, 2, 64, 50, 30},
                                     {2, 12, 2, 24, 37, 30},
                                     {1, 6, 3, 16, 11, 100},
                                     {2, 4, 4, 8, 5, 3}};
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            if (vx_set_isa(isa) != VX_OK) {
                printf("FAIL ISA %s not available\n", vx_isa_name(isa));
                return 1;
            }
            fails += check(kind, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], shapes[s][4], shapes[s][5]);
        }
    }
    if (!fails) printf("ok %s\n", vx_isa_name(isa));
    return fails != 0;
}
