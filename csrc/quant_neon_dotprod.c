/* The NEON kernels again, built with +dotprod (vdotq_s32); vx_quant.c picks
 * this table only when the CPU reports the dot product (HWCAP_ASIMDDP). */
#if defined(__aarch64__) && defined(VX_HAVE_NEON_DOTPROD)
#include "quant_neon.c"
#endif
