/* STREAM-style triad a[i] = b[i] + s*c[i] over doubles, for edgetune's hardware probe.
 *
 * usage: triad BYTES_PER_ARRAY [REPETITIONS]
 * Prints the best bandwidth of the repetitions in GB/s (1e9 bytes), counting 24 bytes per
 * element (two loads, one store; write-allocate traffic is not counted, as in STREAM).
 * Exit status 2 on bad arguments, 3 when memory cannot be allocated, 4 on a wrong result.
 */
#define _POSIX_C_SOURCE 200112L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: triad BYTES_PER_ARRAY [REPETITIONS]\n");
        return 2;
    }
    char *end;
    long long bytes = strtoll(argv[1], &end, 10);
    long reps = argc > 2 ? strtol(argv[2], NULL, 10) : 5;
    if (*end != '\0' || bytes < 4096 || reps < 1 || reps > 1000) {
        fprintf(stderr, "triad: bad arguments\n");
        return 2;
    }
    long n = (long)(bytes / (long long)sizeof(double));
    double *a, *b, *c;
    if (posix_memalign((void **)&a, 64, (size_t)n * sizeof(double)) ||
        posix_memalign((void **)&b, 64, (size_t)n * sizeof(double)) ||
        posix_memalign((void **)&c, 64, (size_t)n * sizeof(double))) {
        fprintf(stderr, "triad: cannot allocate 3 x %lld bytes\n", bytes);
        return 3;
    }

    /* First touch in parallel, with the same static schedule as the timed loop, so each page
     * lands on the NUMA node of the thread that later streams through it. */
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        a[i] = 0.0;
        b[i] = 1.0;
        c[i] = 2.0;
    }

    const double s = 3.0;
    double best = 1e300;
    for (long r = 0; r < reps; r++) {
        double t0 = now();
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++)
            a[i] = b[i] + s * c[i];
        double t = now() - t0;
        if (t < best)
            best = t;
    }

    /* Reading the result back also keeps the compiler from dropping the timed loop. */
    if (a[0] != 7.0 || a[n / 2] != 7.0 || a[n - 1] != 7.0) {
        fprintf(stderr, "triad: wrong result\n");
        return 4;
    }
    printf("%.3f\n", 24.0 * (double)n / best / 1e9);
    free(a);
    free(b);
    free(c);
    return 0;
}
