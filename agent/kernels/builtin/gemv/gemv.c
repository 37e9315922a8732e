/*
 * edgetune built-in kernel: fp32 matrix-vector product y = A * x (A is M x N,
 * row-major; x has N elements, y has M). y is overwritten. This is the decode step of
 * a small language model: every weight is read once per token, so the kernel is bound
 * by memory bandwidth as soon as the inner loop is vectorized and has enough
 * independent sums in flight. Any M, N >= 1 is valid: row blocks and vector/unroll
 * chunks that do not divide an extent fall back to narrower code, and prefetch
 * addresses are clamped to the last element of A, so nothing outside A, x or y is
 * ever touched.
 *
 * Note: candidates are built with -O3 but without -ffast-math, so GCC may not reorder
 * the floating-point sum of a plain loop (VEC=1, UNROLL=1): that loop runs at one
 * element per FMA latency. Explicit vectors and several accumulators reassociate the
 * sum on purpose; results differ from the sequential sum only by rounding.
 *
 * Tuning macros (all set with -D; defaults below apply only when one is missing).
 * Every combination in kernel.toml's space compiles warning-free (-Wall -Wextra) for
 * -march=native (AVX-512), x86-64-v3 and x86-64 and is correct at the odd "small" shape.
 *   RB          row blocking (1..16): rows of A walked together, so every vector of x
 *               is loaded once per RB rows and RB streams of A are in flight.
 *   UNROLL      k unroll (1..16): independent accumulators per row, UNROLL vectors of
 *               VEC floats consumed per step of the inner loop (hides FMA latency).
 *   VEC         explicit SIMD width in floats (power of two, 1..32), GCC vector
 *               extensions with unaligned loads; 1 = plain scalar code.
 *   PREFETCH    software prefetch distance in floats ahead along each row of A
 *               (0 = none; the hardware prefetcher alone). One prefetch per 64-byte
 *               line of a step (at least one per step), clamped to the end of A.
 *   THREADS     OpenMP threads over blocks of RB rows (static schedule); 1, or a
 *               single row block, = no parallel region at all.
 *
 * Pointless combinations (they compile and are correct, but waste the search):
 *   - RB * UNROLL accumulators beyond the register file spill: keep RB * UNROLL <= 16.
 *   - VEC wider than the target's vector registers is split by GCC (slow).
 *   - VEC * UNROLL > N only ever runs the remainder code.
 */
#include <stddef.h>
#include <string.h>

#ifndef RB
#define RB 1
#endif
#ifndef UNROLL
#define UNROLL 1
#endif
#ifndef VEC
#define VEC 1
#endif
#ifndef PREFETCH
#define PREFETCH 0
#endif
#ifndef THREADS
#define THREADS 1
#endif

#if (RB < 1) || (RB > 16)
#error "RB must be in 1..16"
#endif
#if (UNROLL < 1) || (UNROLL > 16)
#error "UNROLL must be in 1..16"
#endif
#if (VEC != 1) && (VEC != 2) && (VEC != 4) && (VEC != 8) && (VEC != 16) && (VEC != 32)
#error "VEC must be a power of two in 1..32"
#endif
#if PREFETCH < 0
#error "PREFETCH must be >= 0"
#endif
#if THREADS < 1
#error "THREADS must be >= 1"
#endif

#define INLINE static inline __attribute__((always_inline))

#if VEC > 1
typedef float vf __attribute__((vector_size(VEC * sizeof(float))));
/* Unaligned load; a macro, not a function, so no vector crosses a call ABI. */
#define vload(p) __extension__({ vf v_; memcpy(&v_, (p), sizeof v_); v_; })
#define VZERO ((vf){0})
#else
typedef float vf;
#define vload(p) (*(p))
#define VZERO 0.0f
#endif

#define STEP (VEC * UNROLL) /* floats of a row consumed per unrolled step */

#if PREFETCH > 0
/* Prefetch the lines of row a that the step at column j will need PREFETCH floats
 * later; addresses never pass the last element of A (last). */
INLINE void prefetch_step(const float *a, int j, const float *last) {
    for (int p = 0; p < STEP; p += 16) {
        const float *q = a + j + p + PREFETCH;
        __builtin_prefetch(q < last ? q : last, 0, 3);
    }
}
#endif

/* y[r] = A[r] . x for R consecutive rows (R <= RB) starting at a (row stride N). */
INLINE void rows(int R, int N, const float *restrict a, const float *restrict x,
                 float *restrict y, const float *last) {
    vf acc[RB][UNROLL];
    for (int r = 0; r < R; r++)
        for (int u = 0; u < UNROLL; u++) acc[r][u] = VZERO;
    int j = 0;
    for (; j + STEP <= N; j += STEP) {
#if PREFETCH > 0
        for (int r = 0; r < R; r++) prefetch_step(a + (size_t)r * N, j, last);
#endif
        for (int u = 0; u < UNROLL; u++) {
            vf xv = vload(x + j + u * VEC);
            for (int r = 0; r < R; r++) acc[r][u] += vload(a + (size_t)r * N + j + u * VEC) * xv;
        }
    }
#if VEC > 1
    /* whole vectors left (fewer than UNROLL of them) */
    for (; j + VEC <= N; j += VEC) {
        vf xv = vload(x + j);
        for (int r = 0; r < R; r++) acc[r][0] += vload(a + (size_t)r * N + j) * xv;
    }
#endif
    (void)last;
    for (int r = 0; r < R; r++) {
        vf t = acc[r][0];
        for (int u = 1; u < UNROLL; u++) t += acc[r][u];
#if VEC > 1
        float s = 0.0f;
        for (int l = 0; l < VEC; l++) s += t[l];
#else
        float s = t;
#endif
        const float *ar = a + (size_t)r * N;
        for (int jj = j; jj < N; jj++) s += ar[jj] * x[jj];
        y[r] = s;
    }
}

/* Row block b: rows b*RB .. min(b*RB + RB, M) - 1. */
INLINE void row_block(int b, int M, int N, const float *restrict A, const float *restrict x,
                      float *restrict y, const float *last) {
    const int i = b * RB;
    if (i + RB <= M)
        rows(RB, N, A + (size_t)i * N, x, y + i, last);
    else
        for (int r = i; r < M; r++) rows(1, N, A + (size_t)r * N, x, y + r, last);
}

void gemv(int M, int N, const float *restrict A, const float *restrict x, float *restrict y) {
    if (M < 1) return;
    if (N < 1) {
        memset(y, 0, (size_t)M * sizeof(float));
        return;
    }
    const float *last = A + (size_t)M * N - 1;
    const int blocks = (M + RB - 1) / RB;
#if THREADS > 1
    /* A single row block runs without entering (or paying for) a parallel region. */
    if (blocks > 1) {
#pragma omp parallel for num_threads(THREADS) schedule(static)
        for (int b = 0; b < blocks; b++) row_block(b, M, N, A, x, y, last);
        return;
    }
#endif
    for (int b = 0; b < blocks; b++) row_block(b, M, N, A, x, y, last);
}
