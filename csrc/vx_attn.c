/* The threaded driver of both attentions (fp32 cache: vx_core.c; compact
 * caches: vx_kv.c): tasks of consecutive positions x a block of KV heads,
 * spread over the OpenMP threads, each handed to the caller's task function
 * with the rows its positions see. See vx_isa.h. */
#include "vx.h"
#include "vx_isa.h"

#include <stdlib.h>
#include <string.h>

int vx_attn_drive(int64_t M, int64_t Hq, int64_t T, int64_t Hkv, int64_t D, int64_t q_pos0, int64_t k_pos0,
                  int64_t window, int64_t per_task, const float *q, float *out, vx_attn_task_fn fn, const void *ctx) {
    const int64_t group = Hq / Hkv;
    const int nthreads = M * Hq * (T + 1) * D < VX_PARALLEL_MIN_WORK ? 1 : vx_get_num_threads();
    const int64_t q_groups = (M + per_task - 1) / per_task;
    const int64_t hb = vx_attn_head_block(q_groups, Hkv, nthreads);
    const int64_t n_blocks = (Hkv + hb - 1) / hb;
    const int64_t n_tasks = q_groups * n_blocks;
    int status = VX_OK;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        float *scores = (float *)malloc((size_t)(per_task * hb * group * (T > 0 ? T : 1)) * sizeof(float));
        if (!scores) {
#pragma omp critical(vx_status)
            status = VX_ENOMEM;
        } else {
#pragma omp for schedule(dynamic, 1)
            for (int64_t t = 0; t < n_tasks; t++) {
                const int64_t i0 = (t / n_blocks) * per_task, kv0 = (t % n_blocks) * hb;
                int64_t rel[VX_ATTN_MQ], n[VX_ATTN_MQ];
                vx_attn_task task = {.kv0 = kv0, .rel = rel, .n = n};
                task.nq = (M - i0) < per_task ? (M - i0) : per_task;
                task.nkv = (Hkv - kv0) < hb ? (Hkv - kv0) : hb;
                task.q = q + (i0 * Hq + kv0 * group) * D;
                task.o = out + (i0 * Hq + kv0 * group) * D;
                vx_attn_task_rows(task.nq, q_pos0 + i0, k_pos0, window, T, rel, n, &task.ulo, &task.nu);
                if (task.nu) fn(ctx, &task, scores);
                else /* no position sees any row */
                    for (int64_t i = 0; i < task.nq; i++)
                        memset(task.o + i * Hq * D, 0, (size_t)(task.nkv * group * D) * sizeof(float));
            }
            free(scores);
        }
    }
    return status;
}
