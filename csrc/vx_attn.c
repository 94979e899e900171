/* The threaded driver of both attentions (fp32 cache: vx_core.c; compact
 * caches: vx_kv.c): tasks of consecutive positions x a block of KV heads,
 * run by the threaded driver (vx_tasks.h), each handed to the caller's task
 * function with the rows its positions see. See vx_isa.h. */
#include "vx.h"
#include "vx_isa.h"
#include "vx_tasks.h"

#include <string.h>

typedef struct attn_drive {
    int64_t M, Hq, T, Hkv, D, q_pos0, k_pos0, window, per_task, group, hb, n_blocks;
    const float *q;
    float *out;
    vx_attn_task_fn fn;
    const void *ctx;
} attn_drive;

static void attn_drive_task(const void *ctx, int64_t t, void *scratch) {
    const attn_drive *a = (const attn_drive *)ctx;
    const int64_t i0 = (t / a->n_blocks) * a->per_task, kv0 = (t % a->n_blocks) * a->hb;
    int64_t rel[VX_ATTN_MQ], n[VX_ATTN_MQ];
    vx_attn_task task = {.kv0 = kv0, .rel = rel, .n = n};
    task.nq = (a->M - i0) < a->per_task ? (a->M - i0) : a->per_task;
    task.nkv = (a->Hkv - kv0) < a->hb ? (a->Hkv - kv0) : a->hb;
    task.q = a->q + (i0 * a->Hq + kv0 * a->group) * a->D;
    task.o = a->out + (i0 * a->Hq + kv0 * a->group) * a->D;
    vx_attn_task_rows(task.nq, a->q_pos0 + i0, a->k_pos0, a->window, a->T, rel, n, &task.ulo, &task.nu);
    if (task.nu) a->fn(a->ctx, &task, (float *)scratch);
    else /* no position sees any row */
        for (int64_t i = 0; i < task.nq; i++)
            memset(task.o + i * a->Hq * a->D, 0, (size_t)(task.nkv * a->group * a->D) * sizeof(float));
}

int vx_attn_drive(int64_t M, int64_t Hq, int64_t T, int64_t Hkv, int64_t D, int64_t q_pos0, int64_t k_pos0,
                  int64_t window, int64_t per_task, const float *q, float *out, vx_attn_task_fn fn, const void *ctx) {
    const int64_t group = Hq / Hkv;
    const int nthreads = vx_threads_for(M * Hq * (T + 1) * D);
    const int64_t q_groups = (M + per_task - 1) / per_task;
    const int64_t hb = vx_attn_head_block(q_groups, Hkv, nthreads);
    const int64_t n_blocks = (Hkv + hb - 1) / hb;
    const attn_drive a = {M, Hq, T, Hkv, D, q_pos0, k_pos0, window, per_task, group, hb, n_blocks, q, out, fn, ctx};
    const size_t scores = (size_t)(per_task * hb * group * (T > 0 ? T : 1)) * sizeof(float);
    return vx_run_tasks(q_groups * n_blocks, nthreads, 1, scores, attn_drive_task, &a);
}
