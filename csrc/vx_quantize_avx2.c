/* The AVX2 build of the block quantizers (the same body as the scalar build,
 * vectorized by the compiler; contraction off, so the bytes are the same). */
#define VXQ_SUFFIX avx2
#include "vx_quantize_body.h"
