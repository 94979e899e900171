/* aarch64 build of the weight quantizer, run under qemu by tests/test_build.py:
 *   quantize_check IN.f32 OUT.bin QTYPE ROWS COLS
 * quantizes ROWS x COLS float32 values (QTYPE: 0 q8_0, 1 q4_0, 2 q4_k) and
 * writes the blocks, which the test compares with the x86-64 build's. */
#include <stdio.h>
#include <stdlib.h>

#include "vx.h"
#include "vx_quantize.h"

int main(int argc, char **argv) {
    if (argc != 6) return 2;
    int qtype = atoi(argv[3]);
    long rows = atol(argv[4]), cols = atol(argv[5]);
    long per = qtype == VX_Q4_K ? 256 : 32, nbytes = qtype == VX_Q8_0 ? 34 : (qtype == VX_Q4_0 ? 18 : 144);
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    size_t out_n = (size_t)(rows * (cols / per) * nbytes);
    unsigned char *out = malloc(out_n);
    FILE *f = fopen(argv[1], "rb");
    if (!x || !out || !f || fread(x, sizeof *x, (size_t)(rows * cols), f) != (size_t)(rows * cols)) return 3;
    fclose(f);
    int status = vx_quantize_rows(x, 0, out, qtype, rows, cols);
    if (status != VX_OK) return 4;
    f = fopen(argv[2], "wb");
    if (!f || fwrite(out, 1, out_n, f) != out_n) return 5;
    fclose(f);
    free(x);
    free(out);
    return 0;
}
