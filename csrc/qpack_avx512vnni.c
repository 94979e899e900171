/* AVX-512 VNNI (EVEX vpdpbusd on ymm, with AVX-512 VL: Ice Lake, Zen 4 and
 * later): the repacked-layout kernels of qpack_avx2.c with the u8 x s8 dot
 * product in one instruction. Built with the AVX-512 flags and
 * -ffp-contract=off; run only when the CPU has it. */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(VX_HAVE_AVX512VNNI)
#define VX_QP_EVEX_VNNI 1
#include "qpack_avx2.c"
#endif
