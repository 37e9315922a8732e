/* y = x + 1, unrolled UNROLL times; its reference (wrongly) expects x + 2. */
#ifndef UNROLL
#define UNROLL 1
#endif

void disagree(int n, const float *restrict x, float *restrict y) {
    int i = 0;
    for (; i + UNROLL <= n; i += UNROLL)
        for (int u = 0; u < UNROLL; u++) y[i + u] = x[i + u] + 1.0f;
    for (; i < n; i++) y[i] = x[i] + 1.0f;
}
