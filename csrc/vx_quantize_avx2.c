/* The AVX2 build of the block quantizers (the same body as the scalar build,
 * vectorized; contraction off, so the bytes are the same). x86-64 only. */
#if defined(__x86_64__) || defined(_M_X64)
#define VXQ_SUFFIX avx2
#include "vx_quantize_body.h"
#else
typedef int vx_quantize_avx2_unused; /* ISO C: no empty translation unit */
#endif
