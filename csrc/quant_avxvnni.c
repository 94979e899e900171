/* AVX-VNNI (256-bit vpdpbusd: Alder Lake, Zen 4-class CPUs without AVX-512):
 * the AVX2 kernels with the u8 x s8 dot product in one instruction.
 * Built with -mavxvnni -mavx2 -mfma -mf16c; run only when the CPU has it. */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(VX_HAVE_AVXVNNI)
#define VX_QUANT_AVXVNNI 1
#include "quant_avx2.c"
#endif
