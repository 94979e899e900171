/* STFT power spectrum with a mixed-radix FFT in double precision.
 * n_fft = 400 (= 2^4 * 5^2) is not a power of two, so: recursive
 * decimation in time over the prime factors of n, a radix-p butterfly per
 * stage (p = 2, 3, 5, ... or any prime). Twiddles are computed once per call. */
#include "vx.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

typedef struct { double re, im; } cplx;

#define VX_MAX_FACTORS 64

static int factorize(int64_t n, int *factors) {
    int count = 0;
    while (n % 4 == 0 && count < VX_MAX_FACTORS) { factors[count++] = 4; n /= 4; }
    for (int64_t p = 2; n > 1 && count < VX_MAX_FACTORS; p++) {
        while (n % p == 0 && count < VX_MAX_FACTORS) { factors[count++] = (int)p; n /= p; }
        if (p * p > n && n > 1) { factors[count++] = (int)n; n = 1; }
    }
    return count;
}

/* out[0..n) = DFT of in[0], in[stride], ..., using tw[j] = exp(-2 pi i j / N), N = n * tw_step */
static void fft_rec(const cplx *in, cplx *out, int64_t n, int64_t stride, const int *factors,
                    const cplx *tw, int64_t tw_step, int64_t N, cplx *tmp) {
    if (n == 1) { out[0] = in[0]; return; }
    const int p = factors[0];
    const int64_t m = n / p;
    for (int q = 0; q < p; q++)
        fft_rec(in + q * stride, out + q * m, m, stride * p, factors + 1, tw, tw_step * p, N, tmp);
    /* butterflies: X[k + s m] = sum_q W_n^{q (k + s m)} Y_q[k] */
    for (int64_t k = 0; k < m; k++) {
        for (int q = 0; q < p; q++) tmp[q] = out[q * m + k];
        for (int s = 0; s < p; s++) {
            const int64_t kk = k + s * m;
            double re = 0.0, im = 0.0;
            for (int q = 0; q < p; q++) {
                const cplx w = tw[((int64_t)q * kk * tw_step) % N];
                re += tmp[q].re * w.re - tmp[q].im * w.im;
                im += tmp[q].re * w.im + tmp[q].im * w.re;
            }
            out[kk].re = re;
            out[kk].im = im;
        }
    }
}

int vx_stft_power(const float *signal, int64_t n_signal, const float *window, int64_t n_fft,
                  int64_t hop, int64_t n_frames, float *out) {
    if (!signal || !window || !out || n_fft <= 0 || hop <= 0 || n_frames < 0) return VX_EINVAL;
    if (n_frames > 0 && (n_frames - 1) * hop + n_fft > n_signal) return VX_EINVAL;
    int factors[VX_MAX_FACTORS + 1];
    int nf = factorize(n_fft, factors);
    int max_p = 1;
    for (int i = 0; i < nf; i++) if (factors[i] > max_p) max_p = factors[i];
    cplx *tw = (cplx *)malloc((size_t)n_fft * sizeof(cplx));
    if (!tw) return VX_ENOMEM;
    for (int64_t j = 0; j < n_fft; j++) {
        const double a = -2.0 * M_PI * (double)j / (double)n_fft;
        tw[j].re = cos(a);
        tw[j].im = sin(a);
    }
    const int64_t n_bins = n_fft / 2 + 1;
    int status = VX_OK;
    const int nthreads = (n_frames * n_fft < 4096) ? 1 : vx_get_num_threads();
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        cplx *buf = (cplx *)malloc((size_t)(2 * n_fft + max_p) * sizeof(cplx));
        if (!buf) {
#pragma omp atomic write
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
    free(tw);
    return status;
}
