/* Weight quantization: float32 or BF16 rows -> GGML blocks (q8_0, q4_0, q4_k).
 *
 * q8_0 and q4_0 follow ggml's reference quantizers bit for bit (the same
 * float32 arithmetic and rounding). q4_k runs the search of
 * voxtral.qformats (a weighted least-squares fit of scale and min per 32
 * weights over 21 candidate grids), with its float32 sums taken in a fixed
 * 8-lane order, so every build (scalar, AVX2, NEON) writes the same bytes.
 *
 * The scalar and AVX2 builds compile one body (vx_quantize_body.h) twice,
 * with floating-point contraction off: the AVX2 build only vectorizes what
 * the scalar build computes lane by lane. */
#ifndef VX_QUANTIZE_H
#define VX_QUANTIZE_H

#include <stdint.h>

/* statuses besides VX_OK / VX_EINVAL */
enum { VX_Q_ENONFINITE = -10, VX_Q_EOVERFLOW = -11 };

/* src: rows x cols values, float32 (src_bf16 = 0) or BF16 bits (src_bf16 = 1);
 * dst: rows x (cols / block * block bytes). cols must be a multiple of the
 * type's block. Threads: vx_get_num_threads(). Returns VX_OK, VX_EINVAL,
 * VX_Q_ENONFINITE (a NaN or Inf value) or VX_Q_EOVERFLOW (a block scale
 * does not fit fp16); on an error dst holds partial output. */
int vx_quantize_rows(const void *src, int src_bf16, uint8_t *dst, int qtype, int64_t rows, int64_t cols);

/* the same, with the scalar build whatever the CPU (tests compare the builds) */
int vx_quantize_rows_scalar(const void *src, int src_bf16, uint8_t *dst, int qtype, int64_t rows, int64_t cols);

/* one build's block loop: blocks [b0, b1) of the flat block array */
typedef int (*vx_quantize_blocks_fn)(const void *src, int src_bf16, uint8_t *dst, int qtype, int64_t b0, int64_t b1);
int vx_quantize_blocks_scalar(const void *src, int src_bf16, uint8_t *dst, int qtype, int64_t b0, int64_t b1);
int vx_quantize_blocks_avx2(const void *src, int src_bf16, uint8_t *dst, int qtype, int64_t b0, int64_t b1);

#endif
