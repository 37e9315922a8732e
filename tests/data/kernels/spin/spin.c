void spin(int n, const float *restrict x, float *restrict y) {
    for (int r = 0; r < REPEAT; r++) {
        int i = 0;
        for (; i + UNROLL <= n; i += UNROLL)
            for (int u = 0; u < UNROLL; u++)
                y[i + u] = 2.0f * x[i + u] + (float)r * 0.0f;
        for (; i < n; i++)
            y[i] = 2.0f * x[i];
        __asm__ volatile("" ::: "memory");  /* keep every repetition */
    }
}
