/*
 * edgetune built-in kernel: fp32 layer normalisation over each row of an R x C matrix
 * (row-major), as in torch.nn.LayerNorm(C):
 *     Y[i][j] = (X[i][j] - mean_i) / sqrt(var_i + eps) * gamma[j] + beta[j],
 * mean_i and var_i the mean and the population variance (divided by C) of row i.
 * Y is overwritten (every element written); X, gamma and beta are never modified.
 * Any R, C >= 1 is valid: vector and unroll remainders run through narrower code, so
 * nothing outside the arrays is ever touched.
 *
 * Tuning macros (all set with -D; defaults below apply only when one is missing).
 * Every combination of VEC in {1,4,8,16}, UNROLL in {1,2,4,8}, RB in {1,8,64}, all
 * three STATS values and THREADS in {1,2,4} compiles warning-free (-Wall -Wextra) with
 * -march=native, x86-64 and x86-64-v3, and is correct.
 *   VEC         explicit SIMD width in floats (power of two, 1..32), GCC vector
 *               extensions with unaligned loads; 1 = plain scalar code. GCC -O3 without
 *               -ffast-math cannot vectorize the float sums of the statistics on its own,
 *               so VEC is what makes them SIMD. VEC wider than the target's registers is
 *               split by GCC: correct but pointless (see the constraints).
 *   UNROLL      vectors per loop step (1..16): UNROLL independent sets of accumulators
 *               in the statistics (breaks the add latency chain), UNROLL vectors per
 *               step of the normalising pass.
 *   RB          rows per unit of parallel work (>= 1): blocks of RB rows are handed out
 *               to the THREADS threads dynamically (schedule(dynamic, 1)), so a core
 *               busy with other work takes fewer blocks. Without threads RB changes
 *               nothing.
 *   STATS_x=1   how mean and variance are computed, exactly one of:
 *                 STATS_two_pass  sum -> mean, then sum of (x - mean)^2 (X read 3 times
 *                                 in all; the textbook, most robust form);
 *                 STATS_one_pass  sum and sum of squares together, var = E[x^2] - mean^2
 *                                 clamped at 0 (X read twice; loses digits when
 *                                 |mean| >> std, fine for activations near 0);
 *                 STATS_welford   Welford's running mean / M2 per lane (X read twice,
 *                                 one reciprocal per step shared by all lanes, lanes
 *                                 merged with Chan's formula; robust and one pass).
 *   THREADS     OpenMP threads over blocks of RB rows; 1, or a single block, = no
 *               parallel region at all.
 *   eps         is an argument (the spec fixes it at 1e-5), not a macro.
 *
 * Pointless combinations (they compile and are correct, but waste the search):
 *   - VEC * 32 above the target's vector register width (VECTOR_BITS) is split into
 *     several registers by GCC: constrain "VEC * 32 <= VECTOR_BITS".
 *   - RB other than one value with THREADS == 1 (RB only shapes parallel work).
 *   - RB >= R runs a single block, i.e. on one thread (shape dependent, left in).
 */
#include <math.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#ifndef VEC
#define VEC 1
#endif
#ifndef UNROLL
#define UNROLL 1
#endif
#ifndef RB
#define RB 1
#endif
#ifndef THREADS
#define THREADS 1
#endif
#if !defined(STATS_two_pass) && !defined(STATS_one_pass) && !defined(STATS_welford)
#define STATS_two_pass 1
#endif

#if (VEC != 1) && (VEC != 2) && (VEC != 4) && (VEC != 8) && (VEC != 16) && (VEC != 32)
#error "VEC must be a power of two in 1..32"
#endif
#if (UNROLL < 1) || (UNROLL > 16)
#error "UNROLL must be in 1..16"
#endif
#if RB < 1
#error "RB must be >= 1"
#endif
#if THREADS < 1
#error "THREADS must be >= 1"
#endif
#if defined(STATS_two_pass) + defined(STATS_one_pass) + defined(STATS_welford) != 1
#error "define exactly one of STATS_two_pass, STATS_one_pass, STATS_welford"
#endif

#define INLINE static inline __attribute__((always_inline))

/*
 * vf is the unit of work: a GCC vector of VEC floats, or a plain float when VEC == 1,
 * so one body of code serves both. Vector helpers are macros, so no vector type ever
 * crosses a function ABI (-Wpsabi with narrower targets).
 */
#if VEC > 1
typedef float vf __attribute__((vector_size(VEC * sizeof(float))));
#define VLOAD(p) __extension__({ vf vl_; memcpy(&vl_, (p), sizeof vl_); vl_; })
#define VSTORE(p, v) do { vf vs_ = (v); memcpy((p), &vs_, sizeof vs_); } while (0)
#define VSPLAT(s) ((vf){0} + (float)(s))
#define LANE(v, l) ((v)[l])
#else
typedef float vf;
#define VLOAD(p) (*(p))
#define VSTORE(p, v) (*(p) = (v))
#define VSPLAT(s) ((float)(s))
#define LANE(v, l) (v) /* l runs over 0..VEC-1 = 0 only */
#endif

#define STEP (VEC * UNROLL)

/* Horizontal sum of acc[0..UNROLL-1] (all lanes). */
#define HSUM(acc) __extension__({                                    \
    for (int hu_ = 1; hu_ < UNROLL; hu_++) (acc)[0] += (acc)[hu_];   \
    float hs_ = 0.0f;                                                \
    for (int hl_ = 0; hl_ < VEC; hl_++) hs_ += LANE((acc)[0], hl_);  \
    hs_; })

/* ---- statistics of one row: *mean and *var (population) ------------------------ */

#if defined(STATS_two_pass)

INLINE void row_stats(int C, const float *restrict x, float *mean, float *var) {
    int j;
    vf acc[UNROLL];
    for (int u = 0; u < UNROLL; u++) acc[u] = VSPLAT(0.0f);
    for (j = 0; j + STEP <= C; j += STEP)
        for (int u = 0; u < UNROLL; u++) acc[u] += VLOAD(x + j + u * VEC);
    for (; j + VEC <= C; j += VEC) acc[0] += VLOAD(x + j);
    float s = HSUM(acc);
    for (; j < C; j++) s += x[j];
    const float m = s / (float)C;

    const vf mb = VSPLAT(m);
    for (int u = 0; u < UNROLL; u++) acc[u] = VSPLAT(0.0f);
    for (j = 0; j + STEP <= C; j += STEP)
        for (int u = 0; u < UNROLL; u++) {
            vf d = VLOAD(x + j + u * VEC) - mb;
            acc[u] += d * d;
        }
    for (; j + VEC <= C; j += VEC) {
        vf d = VLOAD(x + j) - mb;
        acc[0] += d * d;
    }
    float q = HSUM(acc);
    for (; j < C; j++) q += (x[j] - m) * (x[j] - m);
    *mean = m;
    *var = q / (float)C;
}

#elif defined(STATS_one_pass)

INLINE void row_stats(int C, const float *restrict x, float *mean, float *var) {
    int j;
    vf acc[UNROLL], acq[UNROLL];
    for (int u = 0; u < UNROLL; u++) acc[u] = acq[u] = VSPLAT(0.0f);
    for (j = 0; j + STEP <= C; j += STEP)
        for (int u = 0; u < UNROLL; u++) {
            vf v = VLOAD(x + j + u * VEC);
            acc[u] += v;
            acq[u] += v * v;
        }
    for (; j + VEC <= C; j += VEC) {
        vf v = VLOAD(x + j);
        acc[0] += v;
        acq[0] += v * v;
    }
    float s = HSUM(acc), q = HSUM(acq);
    for (; j < C; j++) {
        s += x[j];
        q += x[j] * x[j];
    }
    const float m = s / (float)C;
    const float v = q / (float)C - m * m;
    *mean = m;
    *var = v > 0.0f ? v : 0.0f;
}

#else /* STATS_welford */

/* Fold one value into a running (n, mean, M2). */
INLINE void welford1(float xv, float *n, float *m, float *m2) {
    *n += 1.0f;
    const float d = xv - *m;
    *m += d / *n;
    *m2 += d * (xv - *m);
}

INLINE void row_stats(int C, const float *restrict x, float *mean, float *var) {
    int j;
    /* every lane of every accumulator has seen k values after k steps */
    vf am[UNROLL], a2[UNROLL];
    for (int u = 0; u < UNROLL; u++) am[u] = a2[u] = VSPLAT(0.0f);
    int k = 0;
    for (j = 0; j + STEP <= C; j += STEP) {
        k++;
        const float rk = 1.0f / (float)k;
        for (int u = 0; u < UNROLL; u++) {
            vf v = VLOAD(x + j + u * VEC);
            vf d = v - am[u];
            am[u] += d * rk;
            a2[u] += d * (v - am[u]);
        }
    }
    /* merge the STEP lanes (k values each, Chan et al.): equal counts, so the mean is
     * the mean of the lane means, M2 the sum of lane M2 plus k * spread of the means */
    float n = 0.0f, m = 0.0f, m2 = 0.0f;
    if (k > 0) {
        float sm = 0.0f;
        for (int u = 0; u < UNROLL; u++)
            for (int l = 0; l < VEC; l++) sm += LANE(am[u], l);
        m = sm / (float)STEP;
        float sq = 0.0f, s2 = 0.0f;
        for (int u = 0; u < UNROLL; u++)
            for (int l = 0; l < VEC; l++) {
                const float d = LANE(am[u], l) - m;
                sq += d * d;
                s2 += LANE(a2[u], l);
            }
        m2 = s2 + (float)k * sq;
        n = (float)k * (float)STEP;
    }
    /* the remainder (< STEP values), one at a time */
    for (; j < C; j++) welford1(x[j], &n, &m, &m2);
    *mean = m;
    *var = m2 / (float)C;
}

#endif /* STATS */

/* ---- one row: y = (x - mean) * rstd * gamma + beta ------------------------------ */

INLINE void layernorm_row(int C, const float *restrict x, const float *restrict gamma,
                          const float *restrict beta, float eps, float *restrict y) {
    float mean, var;
    row_stats(C, x, &mean, &var);
    const float a = 1.0f / sqrtf(var + eps), b = -mean * a;
    const vf av = VSPLAT(a), bv = VSPLAT(b);
    int j;
    for (j = 0; j + STEP <= C; j += STEP)
        for (int u = 0; u < UNROLL; u++) {
            const int o = j + u * VEC;
            VSTORE(y + o, (VLOAD(x + o) * av + bv) * VLOAD(gamma + o) + VLOAD(beta + o));
        }
    for (; j + VEC <= C; j += VEC)
        VSTORE(y + j, (VLOAD(x + j) * av + bv) * VLOAD(gamma + j) + VLOAD(beta + j));
    for (; j < C; j++) y[j] = (x[j] * a + b) * gamma[j] + beta[j];
}

/* Rows r0 .. r0+RB-1 (cut at R). */
INLINE void layernorm_block(int r0, int R, int C, const float *restrict X,
                            const float *restrict gamma, const float *restrict beta, float eps,
                            float *restrict Y) {
    const int r1 = r0 + RB < R ? r0 + RB : R;
    for (int i = r0; i < r1; i++)
        layernorm_row(C, X + (size_t)i * C, gamma, beta, eps, Y + (size_t)i * C);
}

void layernorm(int R, int C, const float *restrict X, const float *restrict gamma,
               const float *restrict beta, float eps, float *restrict Y) {
    if (R < 1 || C < 1) return;
    const int blocks = (R + RB - 1) / RB;
#if THREADS > 1
    /* A single block runs without entering (or paying for) a parallel region. */
    if (blocks > 1) {
#pragma omp parallel for num_threads(THREADS) schedule(dynamic, 1)
        for (int b = 0; b < blocks; b++) layernorm_block(b * RB, R, C, X, gamma, beta, eps, Y);
        return;
    }
#endif
    for (int b = 0; b < blocks; b++) layernorm_block(b * RB, R, C, X, gamma, beta, eps, Y);
}
