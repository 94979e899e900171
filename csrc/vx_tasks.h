/* Internal: the one threaded driver. Every multi-threaded kernel call is a
 * set of independent tasks run through vx_run_stages; only element-wise maps
 * (norms, activations, the mel filter bank) and the read-bandwidth probe use
 * a plain parallel loop. */
#ifndef VX_TASKS_H
#define VX_TASKS_H

#include <stddef.h>
#include <stdint.h>

/* Below this much work (multiply-adds) a parallel region costs more than it
 * saves: one thread runs it. */
#define VX_PARALLEL_MIN_WORK (1 << 16)

/* the threads a call of `work` multiply-adds runs on */
int vx_threads_for(int64_t work);

/* Task `task` of a call, with its thread's scratch (scratch_bytes from
 * malloc; NULL when none was asked for). */
typedef void (*vx_task_fn)(const void *ctx, int64_t task, void *scratch);

/* One stage of a call: tasks 0 .. n_tasks-1 of fn. */
typedef struct vx_stage {
    int64_t n_tasks;
    vx_task_fn fn;
} vx_stage;

/* The stages in order on nthreads threads, in one parallel region (a stage
 * starts when every task of the one before has ended). Tasks are handed out
 * `chunk` at a time as threads come free: a thread that is descheduled (a
 * shared machine) does not hold up the others, and since the tasks of a
 * stage are independent, no result depends on which thread ran what.
 * Returns VX_OK, or VX_ENOMEM when a thread's scratch could not be had (its
 * tasks did not run: the outputs are incomplete, and the caller reports the
 * error). */
int vx_run_stages(const vx_stage *stages, int n_stages, int nthreads, int64_t chunk, size_t scratch_bytes,
                  const void *ctx);

/* vx_run_stages with one stage */
int vx_run_tasks(int64_t n_tasks, int nthreads, int64_t chunk, size_t scratch_bytes, vx_task_fn fn, const void *ctx);

#endif
