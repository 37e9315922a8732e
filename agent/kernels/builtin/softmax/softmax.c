/*
 * edgetune built-in kernel: fp32 softmax over each row of an R x C matrix (row-major),
 *     Y[i][j] = exp(X[i][j] - max_j X[i][:]) / sum_j exp(X[i][j] - max_j X[i][:]).
 * Subtracting the row maximum keeps every exp argument <= 0, so nothing overflows.
 * Y is overwritten (every element written), X is never modified. Any R, C >= 1 is
 * valid: vector and unroll remainders run through narrower code, so nothing outside
 * X or Y is ever touched.
 *
 * Tuning macros (all set with -D; defaults below apply only when one is missing).
 * Every combination of VEC in {1,4,8,16}, UNROLL in {1,2,4,8}, RB in {1,8,64}, both
 * EXP and both ALGO values and THREADS in {1,2,4} compiles warning-free (-Wall -Wextra)
 * with -march=native, x86-64 and x86-64-v3, and is correct.
 *   VEC         explicit SIMD width in floats (power of two, 1..32), GCC vector
 *               extensions with unaligned loads; 1 = plain scalar code. GCC -O3 without
 *               -ffast-math cannot vectorize the float max/sum reductions on its own, so
 *               VEC is what makes the reductions SIMD. VEC wider than the target's
 *               registers is split by GCC: correct but pointless (see the constraints).
 *   UNROLL      vectors processed per loop step (1..16):
 *                 three_pass: UNROLL independent max / sum accumulators (breaks the
 *                             add/max latency chain of the reductions);
 *                 online:     UNROLL vectors share one rescale of the running sum, so
 *                             the pass costs 1 + 1/UNROLL exps per element.
 *   RB          rows per unit of parallel work (>= 1): blocks of RB rows are handed out
 *               to the THREADS threads dynamically (schedule(dynamic, 1)), so a core
 *               that is busy with other work takes fewer blocks. Without threads RB
 *               changes nothing.
 *   EXP_x=1     the exponential, exactly one of:
 *                 EXP_libm  libm expf, one call per element (exact to < 1 ulp; the
 *                           calls are never vectorized without -ffast-math);
 *                 EXP_poly  inline Cephes-style expf: round(x*log2 e) splits off 2^n,
 *                           a degree-6 polynomial on |r| <= ln2/2, 2^n built in the
 *                           exponent bits. Max relative error ~2e-7 (a few ulp) for
 *                           x in [-87, 88]; below -87 it returns ~1.6e-38 instead of
 *                           0 (the argument is clamped). Vectorizes with VEC.
 *   ALGO_x=1    the algorithm, exactly one of:
 *                 ALGO_three_pass  max pass; exp + store + sum pass; scale-by-1/sum pass
 *                                  (one exp per element, Y written twice);
 *                 ALGO_online      "online softmax" (Milakov & Gimelshein 2018): one
 *                                  pass keeps a running max and a running sum rescaled
 *                                  by exp(old max - new max) per lane, then one pass
 *                                  writes exp(x - max) / sum (X read twice, Y written
 *                                  once, but 2 + 1/UNROLL exps per element).
 *   THREADS     OpenMP threads over blocks of RB rows; 1, or a single block, = no
 *               parallel region at all.
 *
 * Pointless combinations (they compile and are correct, but waste the search):
 *   - VEC * 32 above the target's vector register width (VECTOR_BITS) is split into
 *     several registers by GCC: constrain "VEC * 32 <= VECTOR_BITS".
 *   - RB other than one value with THREADS == 1 (RB only shapes parallel work).
 *   - RB >= R runs a single block, i.e. on one thread (shape dependent, left in).
 */
#include <float.h>
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
#if !defined(EXP_libm) && !defined(EXP_poly)
#define EXP_libm 1
#endif
#if !defined(ALGO_three_pass) && !defined(ALGO_online)
#define ALGO_three_pass 1
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
#if defined(EXP_libm) + defined(EXP_poly) != 1
#error "define exactly one of EXP_libm, EXP_poly"
#endif
#if defined(ALGO_three_pass) + defined(ALGO_online) != 1
#error "define exactly one of ALGO_three_pass, ALGO_online"
#endif

#define INLINE static inline __attribute__((always_inline))

/*
 * vf is the unit of work: a GCC vector of VEC floats, or a plain float when VEC == 1,
 * so one body of code serves both. Vector helpers are macros or take pointers, so no
 * vector type ever crosses a function ABI (-Wpsabi with narrower targets).
 */
#if VEC > 1
typedef float vf __attribute__((vector_size(VEC * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VEC * sizeof(int32_t))));
#define VLOAD(p) __extension__({ vf vl_; memcpy(&vl_, (p), sizeof vl_); vl_; })
#define VSTORE(p, v) do { vf vs_ = (v); memcpy((p), &vs_, sizeof vs_); } while (0)
#define VSPLAT(s) ((vf){0} + (float)(s))
/* Lane-wise max / min through a compare mask (C has no vector ?: operator). */
#define VMAX(a, b) __extension__({ vf mxa_ = (a), mxb_ = (b); vi mxm_ = mxa_ > mxb_; \
                                   (vf)(((vi)mxa_ & mxm_) | ((vi)mxb_ & ~mxm_)); })
#define VMIN(a, b) __extension__({ vf mna_ = (a), mnb_ = (b); vi mnm_ = mna_ < mnb_; \
                                   (vf)(((vi)mna_ & mnm_) | ((vi)mnb_ & ~mnm_)); })
#define VTOINT(v) __builtin_convertvector((v), vi)
#define LANE(v, l) ((v)[l])
#else
typedef float vf;
typedef int32_t vi;
#define VLOAD(p) (*(p))
#define VSTORE(p, v) (*(p) = (v))
#define VSPLAT(s) ((float)(s))
#define VMAX(a, b) __extension__({ float mxa_ = (a), mxb_ = (b); mxa_ > mxb_ ? mxa_ : mxb_; })
#define VMIN(a, b) __extension__({ float mna_ = (a), mnb_ = (b); mna_ < mnb_ ? mna_ : mnb_; })
#define VTOINT(v) ((int32_t)(v))
#define LANE(v, l) (v) /* l runs over 0..VEC-1 = 0 only */
#endif

/* ---- exp ---------------------------------------------------------------------- */

#if defined(EXP_poly)
#define EXP_LO (-87.0f) /* 2^n stays a normal float: n >= -126 */
#define EXP_HI 88.0f    /* n <= 127 */
#define EXP_LOG2E 1.44269504088896341f
#define EXP_MAGIC 12582912.0f /* 1.5 * 2^23: (t + M) - M rounds t to an integer */
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO (-2.12194440e-4f)
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

/* The whole computation on one vf, in place (vector or scalar alike). */
INLINE void exp_vf(vf *v) {
    vf x = VMIN(VMAX(*v, VSPLAT(EXP_LO)), VSPLAT(EXP_HI));
    vf n = (x * EXP_LOG2E + EXP_MAGIC) - EXP_MAGIC;
    vf r = x - n * EXP_LN2_HI;
    r = r - n * EXP_LN2_LO;
    vf p = VSPLAT(EXP_P0);
    p = p * r + EXP_P1;
    p = p * r + EXP_P2;
    p = p * r + EXP_P3;
    p = p * r + EXP_P4;
    p = p * r + EXP_P5;
    p = p * (r * r) + r + 1.0f;
    vi e = (VTOINT(n) + 127) << 23;
    vf scale;
    memcpy(&scale, &e, sizeof scale);
    *v = p * scale;
}

/* The same on one float (remainders when VEC > 1). */
INLINE float exp_1(float x) {
    x = x < EXP_LO ? EXP_LO : x;
    x = x > EXP_HI ? EXP_HI : x;
    float n = (x * EXP_LOG2E + EXP_MAGIC) - EXP_MAGIC;
    float r = x - n * EXP_LN2_HI;
    r = r - n * EXP_LN2_LO;
    float p = EXP_P0;
    p = p * r + EXP_P1;
    p = p * r + EXP_P2;
    p = p * r + EXP_P3;
    p = p * r + EXP_P4;
    p = p * r + EXP_P5;
    p = p * (r * r) + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, sizeof scale);
    return p * scale;
}
#else /* EXP_libm */
INLINE void exp_vf(vf *v) {
    for (int l = 0; l < VEC; l++) LANE(*v, l) = expf(LANE(*v, l));
}
INLINE float exp_1(float x) { return expf(x); }
#endif

/* ---- one row ------------------------------------------------------------------- */

#define STEP (VEC * UNROLL)

#if defined(ALGO_three_pass)

INLINE void softmax_row(int C, const float *restrict x, float *restrict y) {
    int j;
    /* pass 1: row maximum, UNROLL independent accumulators */
    vf mv[UNROLL];
    for (int u = 0; u < UNROLL; u++) mv[u] = VSPLAT(-FLT_MAX);
    for (j = 0; j + STEP <= C; j += STEP)
        for (int u = 0; u < UNROLL; u++) mv[u] = VMAX(mv[u], VLOAD(x + j + u * VEC));
    for (; j + VEC <= C; j += VEC) mv[0] = VMAX(mv[0], VLOAD(x + j));
    for (int u = 1; u < UNROLL; u++) mv[0] = VMAX(mv[0], mv[u]);
    float m = -FLT_MAX;
    for (int l = 0; l < VEC; l++) m = LANE(mv[0], l) > m ? LANE(mv[0], l) : m;
    for (; j < C; j++) m = x[j] > m ? x[j] : m;

    /* pass 2: y = exp(x - m), summed */
    const vf mb = VSPLAT(m);
    vf sv[UNROLL];
    for (int u = 0; u < UNROLL; u++) sv[u] = VSPLAT(0.0f);
    for (j = 0; j + STEP <= C; j += STEP)
        for (int u = 0; u < UNROLL; u++) {
            vf e = VLOAD(x + j + u * VEC) - mb;
            exp_vf(&e);
            VSTORE(y + j + u * VEC, e);
            sv[u] += e;
        }
    for (; j + VEC <= C; j += VEC) {
        vf e = VLOAD(x + j) - mb;
        exp_vf(&e);
        VSTORE(y + j, e);
        sv[0] += e;
    }
    for (int u = 1; u < UNROLL; u++) sv[0] += sv[u];
    float s = 0.0f;
    for (int l = 0; l < VEC; l++) s += LANE(sv[0], l);
    for (; j < C; j++) {
        float e = exp_1(x[j] - m);
        y[j] = e;
        s += e;
    }

    /* pass 3: scale by 1 / sum (s >= 1: the maximum contributes exp(0)) */
    const float inv = 1.0f / s;
    for (j = 0; j + STEP <= C; j += STEP)
        for (int u = 0; u < UNROLL; u++)
            VSTORE(y + j + u * VEC, VLOAD(y + j + u * VEC) * inv);
    for (; j + VEC <= C; j += VEC) VSTORE(y + j, VLOAD(y + j) * inv);
    for (; j < C; j++) y[j] *= inv;
}

#else /* ALGO_online */

INLINE void softmax_row(int C, const float *restrict x, float *restrict y) {
    int j;
    /* pass 1: per lane running max mv and sum sv of exp(x - mv). -FLT_MAX, not -inf,
     * so (old max - new max) is never inf - inf. */
    vf mv = VSPLAT(-FLT_MAX), sv = VSPLAT(0.0f);
    for (j = 0; j + STEP <= C; j += STEP) {
        vf xv[UNROLL];
        for (int u = 0; u < UNROLL; u++) xv[u] = VLOAD(x + j + u * VEC);
        vf cm = xv[0];
        for (int u = 1; u < UNROLL; u++) cm = VMAX(cm, xv[u]);
        vf mn = VMAX(mv, cm);
        vf rescale = mv - mn;
        exp_vf(&rescale);
        vf t = VSPLAT(0.0f);
        for (int u = 0; u < UNROLL; u++) {
            vf e = xv[u] - mn;
            exp_vf(&e);
            t += e;
        }
        sv = sv * rescale + t;
        mv = mn;
    }
    for (; j + VEC <= C; j += VEC) {
        vf xv = VLOAD(x + j);
        vf mn = VMAX(mv, xv);
        vf rescale = mv - mn, e = xv - mn;
        exp_vf(&rescale);
        exp_vf(&e);
        sv = sv * rescale + e;
        mv = mn;
    }
    /* merge the lanes, then the scalar remainder, in the same online form */
    float m = -FLT_MAX;
    for (int l = 0; l < VEC; l++) m = LANE(mv, l) > m ? LANE(mv, l) : m;
    float s = 0.0f;
    for (int l = 0; l < VEC; l++) s += LANE(sv, l) * exp_1(LANE(mv, l) - m);
    for (; j < C; j++) {
        if (x[j] > m) {
            s = s * exp_1(m - x[j]) + 1.0f;
            m = x[j];
        } else {
            s += exp_1(x[j] - m);
        }
    }

    /* pass 2: y = exp(x - m) / s */
    const float inv = 1.0f / s;
    const vf mb = VSPLAT(m);
    for (j = 0; j + STEP <= C; j += STEP)
        for (int u = 0; u < UNROLL; u++) {
            vf e = VLOAD(x + j + u * VEC) - mb;
            exp_vf(&e);
            VSTORE(y + j + u * VEC, e * inv);
        }
    for (; j + VEC <= C; j += VEC) {
        vf e = VLOAD(x + j) - mb;
        exp_vf(&e);
        VSTORE(y + j, e * inv);
    }
    for (; j < C; j++) y[j] = exp_1(x[j] - m) * inv;
}

#endif /* ALGO */

/* ---- all rows ------------------------------------------------------------------ */

/* Rows r0 .. r0+RB-1 (cut at R). */
INLINE void softmax_block(int r0, int R, int C, const float *restrict X, float *restrict Y) {
    const int r1 = r0 + RB < R ? r0 + RB : R;
    for (int i = r0; i < r1; i++) softmax_row(C, X + (size_t)i * C, Y + (size_t)i * C);
}

void softmax(int R, int C, const float *restrict X, float *restrict Y) {
    if (R < 1 || C < 1) return;
    const int blocks = (R + RB - 1) / RB;
#if THREADS > 1
    /* A single block runs without entering (or paying for) a parallel region. */
    if (blocks > 1) {
#pragma omp parallel for num_threads(THREADS) schedule(dynamic, 1)
        for (int b = 0; b < blocks; b++) softmax_block(b * RB, R, C, X, Y);
        return;
    }
#endif
    for (int b = 0; b < blocks; b++) softmax_block(b * RB, R, C, X, Y);
}
