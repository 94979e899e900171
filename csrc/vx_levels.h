/* Internal: the one dispatch point. Each ISA level (vx.h) is one row of the
 * table in vx_cpu.c naming the kernel table every family of kernels runs at
 * that level; code that needs a kernel asks the active level's row. */
#ifndef VX_LEVELS_H
#define VX_LEVELS_H

#include "vx_isa.h"
#include "vx_kv.h"
#include "vx_quant.h"
#include "vx_quantize.h"

typedef struct vx_level {
    const char *name;               /* as VOXTRAL_ISA and the benchmarks spell it */
    const vx_ops *ops;              /* fp32 / bf16 kernels (vx_isa.h); NULL: level not built */
    const vx_qops *qops;            /* quantized weights, GGML layout (vx_quant.h) */
    const vx_qops *qpops;           /* quantized weights, repacked layout (qpack.c) */
    const vx_kv_kernels *kv;        /* attention over compact caches (vx_kv.h) */
    vx_quantize_blocks_fn quantize; /* weight quantizer's block loop (vx_quantize.h) */
} vx_level;

const vx_level *vx_level_active(void);

#endif
