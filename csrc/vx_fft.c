/* STFT power spectrum with a mixed-radix FFT in double precision.
 * n_fft = 400 (= 2^4 * 5^2) is not a power of two, so: recursive
 * decimation in time over the prime factors of n, a radix-p butterfly per
 * stage (p = 2, 3, 5, ... or any prime). Twiddles and the factorisation are
 * computed once per n_fft and cached (a few sizes; past that, per call). */
#include "vx.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

typedef struct {
    double re, im;
} cplx;

#define VX_MAX_FACTORS 64

static int factorize(int64_t n, int *factors) {
    int count = 0;
    while (n % 4 == 0 && count < VX_MAX_FACTORS) {
        factors[count++] = 4;
        n /= 4;
    }
    for (int64_t p = 2; n > 1 && count < VX_MAX_FACTORS; p++) {
        while (n % p == 0 && count < VX_MAX_FACTORS) {
            factors[count++] = (int)p;
            n /= p;
        }
        if (p * p > n && n > 1) {
            factors[count++] = (int)n;
            n = 1;
        }
    }
    return count;
}

/* out[0..n) = DFT of in[0], in[stride], ..., using tw[j] = exp(-2 pi i j / N), N = n * tw_step */
static void fft_rec(const cplx *in, cplx *out, int64_t n, int64_t stride, const int *factors, const cplx *tw,
                    int64_t tw_step, int64_t N, cplx *tmp) {
    if (n == 1) {
        out[0] = in[0];
        return;
    }
    const int p = factors[0];
    const int64_t m = n / p;
    for (int q = 0; q < p; q++)
        fft_rec(in + q * stride, out + q * m, m, stride * p, factors + 1, tw, tw_step * p, N, tmp);
    /* butterflies: X[k + s m] = sum_q W_p^{q s} t_q with t_q = W_n^{q k} Y_q[k];
     * W_n^j = tw[j tw_step] (q k < n), W_p^j = tw[j (N / p)]. */
    const int64_t root_step = tw_step * m; /* N / p */
    for (int64_t k = 0; k < m; k++) {
        tmp[0] = out[k];
        for (int q = 1; q < p; q++) {
            const cplx y = out[q * m + k], w = tw[(int64_t)q * k * tw_step];
            tmp[q].re = y.re * w.re - y.im * w.im;
            tmp[q].im = y.re * w.im + y.im * w.re;
        }
        switch (p) {
        case 2:
            out[k].re = tmp[0].re + tmp[1].re;
            out[k].im = tmp[0].im + tmp[1].im;
            out[k + m].re = tmp[0].re - tmp[1].re;
            out[k + m].im = tmp[0].im - tmp[1].im;
            break;
        case 3: {
            const double h = 0.86602540378443864676; /* sqrt(3)/2 */
            const double sr = tmp[1].re + tmp[2].re, si = tmp[1].im + tmp[2].im;
            const double dr = tmp[1].re - tmp[2].re, di = tmp[1].im - tmp[2].im;
            const double br = tmp[0].re - 0.5 * sr, bi = tmp[0].im - 0.5 * si;
            out[k].re = tmp[0].re + sr;
            out[k].im = tmp[0].im + si;
            out[k + m].re = br + h * di;
            out[k + m].im = bi - h * dr; /* b - i h d */
            out[k + 2 * m].re = br - h * di;
            out[k + 2 * m].im = bi + h * dr; /* b + i h d */
            break;
        }
        case 4: {
            const double ar = tmp[0].re + tmp[2].re, ai = tmp[0].im + tmp[2].im;
            const double br = tmp[0].re - tmp[2].re, bi = tmp[0].im - tmp[2].im;
            const double cr = tmp[1].re + tmp[3].re, ci = tmp[1].im + tmp[3].im;
            const double dr = tmp[1].re - tmp[3].re, di = tmp[1].im - tmp[3].im;
            out[k].re = ar + cr;
            out[k].im = ai + ci;
            out[k + 2 * m].re = ar - cr;
            out[k + 2 * m].im = ai - ci;
            out[k + m].re = br + di;
            out[k + m].im = bi - dr; /* b - i d */
            out[k + 3 * m].re = br - di;
            out[k + 3 * m].im = bi + dr; /* b + i d */
            break;
        }
        default: /* radix 5 and any other prime: a direct p-point DFT */
            for (int s = 0; s < p; s++) {
                double re = 0.0, im = 0.0;
                for (int q = 0; q < p; q++) {
                    const cplx w = tw[(int64_t)((q * s) % p) * root_step];
                    re += tmp[q].re * w.re - tmp[q].im * w.im;
                    im += tmp[q].re * w.im + tmp[q].im * w.re;
                }
                out[k + s * m].re = re;
                out[k + s * m].im = im;
            }
        }
    }
}

/* ---- per-n_fft plan cache: entries are immutable once published ---------- */
typedef struct {
    int64_t n;
    int nf, max_p;
    int factors[VX_MAX_FACTORS + 1];
    cplx *tw;
} fft_plan;

#define VX_PLAN_CACHE 8
static fft_plan *plan_cache[VX_PLAN_CACHE];
static volatile long plan_lock;

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
static void lock_plans(void) {
    while (_InterlockedExchange(&plan_lock, 1)) {}
}
static void unlock_plans(void) { _InterlockedExchange(&plan_lock, 0); }
#else
static void lock_plans(void) {
    while (__sync_lock_test_and_set(&plan_lock, 1)) {}
}
static void unlock_plans(void) { __sync_lock_release(&plan_lock); }
#endif

static fft_plan *plan_new(int64_t n) {
    fft_plan *p = (fft_plan *)calloc(1, sizeof(fft_plan));
    if (!p) return NULL;
    p->tw = (cplx *)malloc((size_t)n * sizeof(cplx));
    if (!p->tw) {
        free(p);
        return NULL;
    }
    p->n = n;
    p->nf = factorize(n, p->factors);
    p->max_p = 1;
    for (int i = 0; i < p->nf; i++)
        if (p->factors[i] > p->max_p) p->max_p = p->factors[i];
    for (int64_t j = 0; j < n; j++) {
        const double a = -2.0 * M_PI * (double)j / (double)n;
        p->tw[j].re = cos(a);
        p->tw[j].im = sin(a);
    }
    return p;
}

static void plan_free(fft_plan *p) {
    if (p) {
        free(p->tw);
        free(p);
    }
}

/* The cached plan for n (cached = 1), or a fresh one the caller frees (cached = 0). */
static fft_plan *plan_get(int64_t n, int *cached) {
    lock_plans();
    for (int i = 0; i < VX_PLAN_CACHE && plan_cache[i]; i++)
        if (plan_cache[i]->n == n) {
            fft_plan *p = plan_cache[i];
            unlock_plans();
            *cached = 1;
            return p;
        }
    unlock_plans();
    fft_plan *p = plan_new(n); /* outside the lock: cos/sin of n angles */
    if (!p) return NULL;
    lock_plans();
    for (int i = 0; i < VX_PLAN_CACHE; i++) {
        if (plan_cache[i] && plan_cache[i]->n == n) { /* another thread won the race */
            fft_plan *q = plan_cache[i];
            unlock_plans();
            plan_free(p);
            *cached = 1;
            return q;
        }
        if (!plan_cache[i]) {
            plan_cache[i] = p;
            unlock_plans();
            *cached = 1;
            return p;
        }
    }
    unlock_plans();
    *cached = 0; /* cache full: this call's own plan */
    return p;
}

int vx_stft_power(const float *signal, int64_t n_signal, const float *window, int64_t n_fft, int64_t hop,
                  int64_t n_frames, float *out) {
    if (!signal || !window || !out || n_fft <= 0 || hop <= 0 || n_frames < 0) return VX_EINVAL;
    if (n_frames > 0 && (n_frames - 1) * hop + n_fft > n_signal) return VX_EINVAL;
    int cached = 0;
    fft_plan *plan = plan_get(n_fft, &cached);
    if (!plan) return VX_ENOMEM;
    const int *factors = plan->factors;
    const int max_p = plan->max_p;
    const cplx *tw = plan->tw;
    const int64_t n_bins = n_fft / 2 + 1;
    int status = VX_OK;
    int nthreads = (n_frames * n_fft < 4096) ? 1 : vx_get_num_threads();
    if (nthreads > n_frames) nthreads = (int)n_frames; /* one buffer per thread: no idle ones */
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        cplx *buf = (cplx *)malloc((size_t)(2 * n_fft + max_p) * sizeof(cplx));
        if (!buf) {
#pragma omp critical(vx_status)
            status = VX_ENOMEM;
        } else {
            cplx *in = buf, *spec = buf + n_fft, *tmp = buf + 2 * n_fft;
#pragma omp for schedule(static)
            for (int64_t f = 0; f < n_frames; f++) {
                const float *seg = signal + f * hop;
                for (int64_t j = 0; j < n_fft; j++) {
                    in[j].re = (double)seg[j] * (double)window[j];
                    in[j].im = 0.0;
                }
                fft_rec(in, spec, n_fft, 1, factors, tw, 1, n_fft, tmp);
                float *o = out + f * n_bins;
                for (int64_t b = 0; b < n_bins; b++) o[b] = (float)(spec[b].re * spec[b].re + spec[b].im * spec[b].im);
            }
            free(buf);
        }
    }
    if (!cached) plan_free(plan);
    return status;
}
