/* AVX-VNNI (VEX vpdpbusd on ymm: Alder Lake, Zen 5-class CPUs): the
 * repacked-layout kernels of qpack_avx2.c with the u8 x s8 dot product in
 * one instruction. Built with -mavxvnni -mavx2 -mfma -mf16c
 * -ffp-contract=off; run only when the CPU has it. */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(VX_HAVE_AVXVNNI)
#define VX_QP_VEX_VNNI 1
#include "qpack_avx2.c"
#endif
