/* The one threaded driver (vx_tasks.h). */
#include "vx_tasks.h"
#include "vx.h"

#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

int vx_threads_for(int64_t work) { return work < VX_PARALLEL_MIN_WORK ? 1 : vx_get_num_threads(); }

int vx_run_stages(const vx_stage *stages, int n_stages, int nthreads, int64_t chunk, size_t scratch_bytes,
                  const void *ctx) {
    int64_t most = 0;
    for (int i = 0; i < n_stages; i++) most = stages[i].n_tasks > most ? stages[i].n_tasks : most;
    if (nthreads > most) nthreads = (int)most;
    if (chunk < 1) chunk = 1;
    if (nthreads <= 1) { /* no parallel region at all: a decoder step makes hundreds of small calls */
        void *scratch = scratch_bytes ? malloc(scratch_bytes) : NULL;
        if (scratch_bytes && !scratch) return VX_ENOMEM;
        for (int i = 0; i < n_stages; i++)
            for (int64_t t = 0; t < stages[i].n_tasks; t++) stages[i].fn(ctx, t, scratch);
        free(scratch);
        return VX_OK;
    }
    int status = VX_OK;
#pragma omp parallel num_threads(nthreads)
    {
        void *scratch = scratch_bytes ? malloc(scratch_bytes) : NULL;
        const int ready = scratch || !scratch_bytes;
        if (!ready) {
#pragma omp critical(vx_status)
            status = VX_ENOMEM;
        }
        /* a thread without its scratch skips the tasks it draws (the call
         * fails); every thread still meets each loop, as OpenMP requires */
        for (int i = 0; i < n_stages; i++) {
#pragma omp for schedule(dynamic, chunk)
            for (int64_t t = 0; t < stages[i].n_tasks; t++)
                if (ready) stages[i].fn(ctx, t, scratch);
        }
        free(scratch);
    }
    return status;
}

int vx_run_tasks(int64_t n_tasks, int nthreads, int64_t chunk, size_t scratch_bytes, vx_task_fn fn, const void *ctx) {
    const vx_stage stage = {n_tasks, fn};
    return vx_run_stages(&stage, 1, nthreads, chunk, scratch_bytes, ctx);
}
