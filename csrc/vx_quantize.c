/* Weight quantization driver: blocks split over threads, the build chosen at run time. */
#define VXQ_SUFFIX scalar
#include "vx_quantize_body.h"
#include "vx_levels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static int64_t block_values(int qtype) { return vx_qtype(qtype)->block_values; }

static int run(vx_quantize_blocks_fn fn, const void *src, int src_bf16, uint8_t *dst, int qtype, int64_t rows,
               int64_t cols) {
    if (!src || !dst || rows < 0 || cols <= 0 || (src_bf16 != 0 && src_bf16 != 1)) return VX_EINVAL;
    if (qtype != VX_Q8_0 && qtype != VX_Q4_0 && qtype != VX_Q4_K) return VX_EINVAL;
    int64_t per = block_values(qtype);
    if (cols % per) return VX_EINVAL;
    int64_t nblocks = rows * (cols / per);
    /* a task is a run of blocks big enough to amortize the scheduling (q4_k costs ~30x q8_0 per value) */
    int64_t task = qtype == VX_Q4_K ? 16 : 1024;
    int64_t ntasks = (nblocks + task - 1) / task;
    int nthreads = vx_get_num_threads();
    if (ntasks < nthreads) nthreads = (int)(ntasks > 0 ? ntasks : 1);
    int flags = 0;
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1) schedule(dynamic, 4) reduction(| : flags)
    for (int64_t t = 0; t < ntasks; t++) {
        int64_t b0 = t * task, b1 = b0 + task < nblocks ? b0 + task : nblocks;
        flags |= fn(src, src_bf16, dst, qtype, b0, b1);
    }
    if (flags & VXQ_F_NONFINITE) return VX_Q_ENONFINITE;
    if (flags & VXQ_F_OVERFLOW) return VX_Q_EOVERFLOW;
    return VX_OK;
}

int vx_quantize_rows_scalar(const void *src, int src_bf16, uint8_t *dst, int qtype, int64_t rows, int64_t cols) {
    return run(vx_quantize_blocks_scalar, src, src_bf16, dst, qtype, rows, cols);
}

int vx_quantize_rows(const void *src, int src_bf16, uint8_t *dst, int qtype, int64_t rows, int64_t cols) {
    return run(vx_level_active()->quantize, src, src_bf16, dst, qtype, rows, cols);
}
