/* CPU features, detected once; the levels table (the one dispatch point)
 * and the active level; the thread count. */
#include "vx.h"
#include "vx_levels.h"

#include <string.h>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
#endif

#if defined(__linux__) && defined(__x86_64__) && defined(VX_HAVE_AMX)
#include <sys/syscall.h>
#include <unistd.h>
#define VX_ARCH_REQ_XCOMP_PERM 0x1023 /* <asm/prctl.h>, Linux 5.16 and later */
#define VX_XFEATURE_XTILEDATA 18
#endif

#if defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <immintrin.h>
#include <intrin.h>
#endif

typedef struct {
    int detected;
    int avx2, fma, f16c, avx512f, avx512bw, avx512dq, avx512vl, avx512bf16, avx512vnni, avxvnni, amx, neon,
        neon_dotprod;
} vx_features;

static vx_features features;
static int active_isa = -1;
static int num_threads = 1;

/* AMX tiles with int8 products: CPUID.7.0:EDX bits 24 (AMX-TILE) and 25
 * (AMX-INT8), the OS enabling the tile state in XCR0 (bits 17, 18), and on
 * Linux the process's permission for it (arch_prctl; refused before 5.16
 * or by policy: then the level is not available). Only builds with the AMX
 * kernels ask, so the request is made only where it can be used. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
static int amx_usable(unsigned int cpuid7_edx) {
#if defined(__linux__) && defined(VX_HAVE_AMX)
    if (!((cpuid7_edx >> 24) & 1) || !((cpuid7_edx >> 25) & 1)) return 0;
    unsigned int xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    (void)xcr0_hi;
    if (((xcr0_lo >> 17) & 3) != 3) return 0;
    return syscall(SYS_arch_prctl, VX_ARCH_REQ_XCOMP_PERM, VX_XFEATURE_XTILEDATA) == 0;
#else
    (void)cpuid7_edx;
    return 0;
#endif
}
#endif

static void detect(void) {
    if (features.detected) return;
#if defined(__x86_64__) || defined(_M_X64)
#if defined(__GNUC__) || defined(__clang__)
    __builtin_cpu_init();
    /* libgcc/compiler-rt also check that the OS saves the YMM/ZMM state */
    features.avx2 = __builtin_cpu_supports("avx2") != 0;
    features.fma = __builtin_cpu_supports("fma") != 0;
    features.avx512f = __builtin_cpu_supports("avx512f") != 0;
    features.avx512bw = __builtin_cpu_supports("avx512bw") != 0;
    features.avx512dq = __builtin_cpu_supports("avx512dq") != 0;
    features.avx512vl = __builtin_cpu_supports("avx512vl") != 0;
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 11)
    features.avx512bf16 = __builtin_cpu_supports("avx512bf16") != 0;
#endif
    {
        /* CPUID.1:ECX bit 29 (older clang has no "f16c" for
         * __builtin_cpu_supports); usable only with the OS's YMM support,
         * which the avx2 check above includes. */
        unsigned int eax, ebx, ecx, edx;
        __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1), "c"(0));
        (void)eax, (void)ebx, (void)edx;
        features.f16c = features.avx2 && ((ecx >> 29) & 1);
        /* VNNI: CPUID.7.0:ECX bit 11 (AVX512_VNNI, needs the ZMM state the
         * avx512f check includes); CPUID.7.1:EAX bit 4 (AVX-VNNI, YMM state). */
        unsigned int max_leaf;
        __asm__ volatile("cpuid" : "=a"(max_leaf), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(0), "c"(0));
        if (max_leaf >= 7) {
            __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(7), "c"(0));
            features.avx512vnni = features.avx512f && ((ecx >> 11) & 1);
            features.amx = amx_usable(edx);
            __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(7), "c"(1));
            features.avxvnni = features.avx2 && ((eax >> 4) & 1);
        }
    }
#elif defined(_MSC_VER)
    int r[4];
    __cpuid(r, 1);
    int osxsave = (r[2] >> 27) & 1;
    unsigned long long xcr0 = osxsave ? _xgetbv(0) : 0;
    int ymm = (xcr0 & 6) == 6, zmm = (xcr0 & 0xe6) == 0xe6;
    features.fma = ymm && ((r[2] >> 12) & 1);
    features.f16c = ymm && ((r[2] >> 29) & 1);
    __cpuidex(r, 7, 0);
    features.avx2 = ymm && ((r[1] >> 5) & 1);
    features.avx512f = zmm && ((r[1] >> 16) & 1);
    features.avx512bw = zmm && ((r[1] >> 30) & 1);
    features.avx512dq = zmm && ((r[1] >> 17) & 1);
    features.avx512vl = zmm && ((r[1] >> 31) & 1);
    features.avx512vnni = zmm && ((r[2] >> 11) & 1);
    __cpuidex(r, 7, 1);
    features.avxvnni = ymm && ((r[0] >> 4) & 1);
#endif
#endif
#if defined(__aarch64__)
    features.neon = 1;
#if defined(__linux__)
    features.neon_dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    features.neon_dotprod = 1; /* every Apple arm64 core has the dot product */
#endif
#endif
    features.detected = 1;
}

int vx_cpu_feature(const char *name) {
    detect();
    if (!name) return 0;
    if (!strcmp(name, "avx2")) return features.avx2;
    if (!strcmp(name, "fma")) return features.fma;
    if (!strcmp(name, "f16c")) return features.f16c;
    if (!strcmp(name, "avx512f")) return features.avx512f;
    if (!strcmp(name, "avx512bw")) return features.avx512bw;
    if (!strcmp(name, "avx512dq")) return features.avx512dq;
    if (!strcmp(name, "avx512vl")) return features.avx512vl;
    if (!strcmp(name, "avx512bf16")) return features.avx512bf16;
    if (!strcmp(name, "avx512vnni")) return features.avx512vnni;
    if (!strcmp(name, "avxvnni")) return features.avxvnni;
    if (!strcmp(name, "amx")) return features.amx;
    if (!strcmp(name, "neon")) return features.neon;
    if (!strcmp(name, "neon_dotprod")) return features.neon_dotprod;
    return 0;
}

/* The levels table: the one place that says which kernels each level runs.
 * A level whose kernels this build lacks (another architecture, an older
 * compiler) keeps its name and has NULL tables. */
#define VX_NOT_BUILT , NULL, NULL, NULL, NULL, NULL
#if defined(__aarch64__)
#define VX_ON_ARM(...) __VA_ARGS__
#else
#define VX_ON_ARM(...) VX_NOT_BUILT
#endif
#if defined(__aarch64__) && defined(VX_HAVE_NEON_DOTPROD)
#define VX_ON_DOTPROD(...) __VA_ARGS__
#else
#define VX_ON_DOTPROD(...) VX_NOT_BUILT
#endif
#if defined(__x86_64__) || defined(_M_X64)
#define VX_ON_X86(...) __VA_ARGS__
#else
#define VX_ON_X86(...) VX_NOT_BUILT
#endif
#if (defined(__x86_64__) || defined(_M_X64)) && defined(VX_HAVE_AVXVNNI)
#define VX_ON_AVXVNNI(...) __VA_ARGS__
#else
#define VX_ON_AVXVNNI(...) VX_NOT_BUILT
#endif
#if (defined(__x86_64__) || defined(_M_X64)) && defined(VX_HAVE_AVX512)
#define VX_ON_AVX512(...) __VA_ARGS__
#else
#define VX_ON_AVX512(...) VX_NOT_BUILT
#endif
#if (defined(__x86_64__) || defined(_M_X64)) && defined(VX_HAVE_AVX512VNNI)
#define VX_ON_AVX512VNNI(...) __VA_ARGS__
#else
#define VX_ON_AVX512VNNI(...) VX_NOT_BUILT
#endif
#if (defined(__x86_64__) || defined(_M_X64)) && defined(VX_HAVE_AMX)
#define VX_ON_AMX(...) __VA_ARGS__
#else
#define VX_ON_AMX(...) VX_NOT_BUILT
#endif
#if defined(VX_HAVE_QUANTIZE_AVX2)
#define VX_QUANTIZE_X86 vx_quantize_blocks_avx2
#else
#define VX_QUANTIZE_X86 vx_quantize_blocks_scalar
#endif

static const vx_level levels[VX_ISA_COUNT] = {
    [VX_ISA_SCALAR] = {"scalar", &vx_ops_scalar, &vx_qops_scalar, &vx_qpops_scalar, &vx_kv_scalar,
                       vx_quantize_blocks_scalar},
    /* NEON: no repacked kernels yet (the GGML-layout ones serve) */
    [VX_ISA_NEON] = {"neon" VX_ON_ARM(, &vx_ops_neon, &vx_qops_neon, &vx_qpops_scalar, &vx_kv_neon,
                                      vx_quantize_blocks_scalar)},
    [VX_ISA_NEON_DOTPROD] = {"neon_dotprod" VX_ON_DOTPROD(, &vx_ops_neon, &vx_qops_neon_dotprod, &vx_qpops_scalar,
                                                          &vx_kv_neon, vx_quantize_blocks_scalar)},
    [VX_ISA_AVX2] = {"avx2" VX_ON_X86(, &vx_ops_avx2, &vx_qops_avx2, &vx_qpops_avx2, &vx_kv_avx2, VX_QUANTIZE_X86)},
    [VX_ISA_AVXVNNI] = {"avxvnni" VX_ON_AVXVNNI(, &vx_ops_avx2, &vx_qops_avxvnni, &vx_qpops_avxvnni, &vx_kv_avx2,
                                                VX_QUANTIZE_X86)},
    /* AVX-512 without VNNI: the 256-bit maddubs kernels for quantized weights */
    [VX_ISA_AVX512] = {"avx512" VX_ON_AVX512(, &vx_ops_avx512, &vx_qops_avx2, &vx_qpops_avx2, &vx_kv_avx512,
                                             VX_QUANTIZE_X86)},
    [VX_ISA_AVX512VNNI] = {"avx512vnni" VX_ON_AVX512VNNI(, &vx_ops_avx512, &vx_qops_avx512vnni, &vx_qpops_avx512vnni,
                                                         &vx_kv_avx512, VX_QUANTIZE_X86)},
    /* AMX: int8 tile products for repacked weights at M >= 4, else as avx512vnni */
    [VX_ISA_AMX] = {"amx" VX_ON_AMX(, &vx_ops_avx512, &vx_qops_avx512vnni, &vx_qpops_amx, &vx_kv_avx512,
                                    VX_QUANTIZE_X86)},
};

const char *vx_isa_name(int isa) { return isa < 0 || isa >= VX_ISA_COUNT ? "unknown" : levels[isa].name; }

/* built (its tables are in this build) and the CPU has every feature its
 * files are compiled for */
int vx_isa_available(int isa) {
    if (isa < 0 || isa >= VX_ISA_COUNT || !levels[isa].ops) return 0;
    detect();
    switch (isa) {
    case VX_ISA_SCALAR: return 1;
    case VX_ISA_NEON: return features.neon;
    case VX_ISA_NEON_DOTPROD: return features.neon && features.neon_dotprod;
    case VX_ISA_AVX2: return features.avx2 && features.fma && features.f16c;
    case VX_ISA_AVXVNNI: return vx_isa_available(VX_ISA_AVX2) && features.avxvnni;
    case VX_ISA_AVX512: /* the files are built with -mavx512{f,bw,dq,vl}: ask for all four */
        return features.avx512f && features.avx512bw && features.avx512dq && features.avx512vl &&
               vx_isa_available(VX_ISA_AVX2);
    case VX_ISA_AVX512VNNI: return vx_isa_available(VX_ISA_AVX512) && features.avx512vnni;
    case VX_ISA_AMX: return vx_isa_available(VX_ISA_AVX512VNNI) && features.amx;
    default: return 0;
    }
}

static int best_isa(void) {
    for (int isa = VX_ISA_COUNT - 1; isa > 0; isa--)
        if (vx_isa_available(isa)) return isa;
    return VX_ISA_SCALAR;
}

int vx_active_isa(void) {
    if (active_isa < 0) active_isa = best_isa();
    return active_isa;
}

int vx_set_isa(int isa) {
    if (isa < 0 || isa >= VX_ISA_COUNT || !vx_isa_available(isa)) return VX_EINVAL;
    active_isa = isa;
    return VX_OK;
}

const vx_level *vx_level_active(void) { return &levels[vx_active_isa()]; }

/* Clamped: a huge count makes OpenMP fail to create threads (abort/segfault). */
void vx_set_num_threads(int n) { num_threads = n < 1 ? 1 : (n > VX_MAX_THREADS ? VX_MAX_THREADS : n); }
int vx_get_num_threads(void) { return num_threads; }
