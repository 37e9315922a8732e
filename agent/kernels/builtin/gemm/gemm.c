/*
 * edgetune built-in kernel: fp32 GEMM, C = A * B (row-major; A is MxK, B is KxN,
 * C is MxN). C is overwritten, never accumulated into. Any M, N, K >= 1 is valid:
 * tiles that do not divide an extent are cut short, and vector/unroll remainders
 * run through narrower code, so nothing outside A, B or C is ever touched.
 *
 * Tuning macros (all set with -D; defaults below apply only when one is missing).
 * Every combination of BM, BN, BK in {16..128}/{32..256}/{32..256} (powers of two),
 * UNROLL in {1,2,4,8}, VEC in {1,4,8,16}, PREFETCH in {0,4,16}, all three orders and
 * THREADS in {1,2} (4 spot-checked) compiles warning-free (-Wall -Wextra) and is
 * correct; so do -march=x86-64, x86-64-v2 and x86-64-v3 (spot-checked).
 *   BM, BN, BK  cache tile: rows of A/C, columns of B/C, depth (>= 1). C tiles
 *               (BM x BN) are the unit of parallel work; each walks K in BK steps.
 *   UNROLL      register blocking (1..16), meaning depends on ORDER:
 *                 ijk: UNROLL independent partial sums per dot product (k unrolled);
 *                 ikj: UNROLL k steps fused per pass over a C row (C loaded/stored
 *                      once per UNROLL rows of B);
 *                 jik: UNROLL rows of C held in registers by the micro-kernel.
 *   VEC         explicit SIMD width in floats (power of two, 1..32), GCC vector
 *               extensions with unaligned loads; 1 = no explicit vector code (GCC -O3
 *               still auto-vectorizes the contiguous j loop of ikj on its own).
 *               VEC wider than the target's vector registers is split by GCC and is
 *               correct but very slow in jik (the accumulators live in memory).
 *   PREFETCH    software prefetch distance in rows of B (k steps) ahead; 0 = none.
 *   ORDER_x=1   loop order inside a tile, exactly one of:
 *                 ORDER_ijk  dot products, strided walk down columns of B (naive);
 *                 ORDER_ikj  broadcast A[i][k], stream rows of B and C through cache;
 *                 ORDER_jik  register micro-kernel: for each strip of 2*VEC columns
 *                            (4 when VEC=1), for each block of UNROLL rows, accumulate
 *                            the UNROLL x strip block of C over k in registers.
 *   THREADS     OpenMP threads over C tiles (static schedule); 1, or a single tile,
 *               = no parallel region at all.
 *
 * Pointless combinations (they compile and are correct, but waste the search):
 *   - ORDER_ijk ignores VEC (always scalar): constrain to VEC == 1 or ORDER != 'ijk'.
 *   - UNROLL > BK (ijk, ikj) or UNROLL > BM (jik) only ever runs the remainder path:
 *     BK % UNROLL == 0 and BM % UNROLL == 0 keep the unrolled path in use.
 *   - BN < VEC (ikj) or BN < 2*VEC (jik) leaves only remainder code: BN % (2*VEC) == 0.
 *   - jik with UNROLL * 2 * VEC beyond the register file (UNROLL 8 with VEC 16 without
 *     AVX-512, or VEC above the hardware width at all) spills: slow but correct.
 *   - PREFETCH >= BK prefetches rows past the tile (still inside B: addresses are clamped).
 *   - THREADS > 1 with a single C tile (M <= BM and N <= BN) runs on one thread.
 */
#include <stddef.h>
#include <string.h>

#ifndef BM
#define BM 64
#endif
#ifndef BN
#define BN 64
#endif
#ifndef BK
#define BK 64
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

#if (BM < 1) || (BN < 1) || (BK < 1)
#error "BM, BN and BK must be >= 1"
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

#if defined(ORDER_ijk) + defined(ORDER_ikj) + defined(ORDER_jik) != 1
#error "define exactly one of ORDER_ijk, ORDER_ikj, ORDER_jik"
#endif

#define GEMM_MIN(a, b) ((a) < (b) ? (a) : (b))
#define INLINE static inline __attribute__((always_inline))

/* Prefetch row k + PREFETCH of B (clamped to the last row of B), column j. */
#if PREFETCH > 0
#define PF_B(b, ldb, k, krem, j)                                                   \
    __builtin_prefetch((b) + (size_t)GEMM_MIN((k) + PREFETCH, (krem) - 1) * (ldb) + (j), 0, 3)
#else
#define PF_B(b, ldb, k, krem, j) ((void)(krem))
#endif

#if VEC > 1
typedef float vf __attribute__((vector_size(VEC * sizeof(float))));
/* Unaligned load/store; macros, not functions, so no vector crosses a call ABI. */
#define vload(p) __extension__({ vf v_; memcpy(&v_, (p), sizeof v_); v_; })
#define vstore(p, v) do { vf w_ = (v); memcpy((p), &w_, sizeof w_); } while (0)
#endif

/*
 * A tile: a = &A[i0][k0] (row stride lda), b = &B[k0][j0] (row stride ldb),
 * c = &C[i0][j0] (row stride ldc); mi x nj outputs, kk deep. krem = rows of B left
 * from k0 to the end of B, for clamping prefetch addresses.
 */

#if defined(ORDER_ijk)

INLINE void tile(int mi, int nj, int kk, int krem, const float *restrict a, int lda,
                 const float *restrict b, int ldb, float *restrict c, int ldc) {
    for (int i = 0; i < mi; i++) {
        const float *ai = a + (size_t)i * lda;
        for (int j = 0; j < nj; j++) {
            float s[UNROLL];
            for (int u = 0; u < UNROLL; u++) s[u] = 0.0f;
            int k = 0;
            for (; k + UNROLL <= kk; k += UNROLL) {
                for (int u = 0; u < UNROLL; u++) {
                    PF_B(b, ldb, k + u, krem, j);
                    s[u] += ai[k + u] * b[(size_t)(k + u) * ldb + j];
                }
            }
            for (; k < kk; k++) {
                PF_B(b, ldb, k, krem, j);
                s[0] += ai[k] * b[(size_t)k * ldb + j];
            }
            float sum = 0.0f;
            for (int u = 0; u < UNROLL; u++) sum += s[u];
            c[(size_t)i * ldc + j] += sum;
        }
    }
}

#elif defined(ORDER_ikj)

/* C row segment += sum over R consecutive rows of B, each scaled by av[r]. */
INLINE void ikj_rows(int R, int nj, const float *av, const float *restrict b, int ldb,
                     float *restrict ci) {
    int j = 0;
#if VEC > 1
    for (; j + VEC <= nj; j += VEC) {
        vf acc = vload(ci + j);
        for (int r = 0; r < R; r++) acc += av[r] * vload(b + (size_t)r * ldb + j);
        vstore(ci + j, acc);
    }
#endif
    for (; j < nj; j++) {
        float acc = ci[j];
        for (int r = 0; r < R; r++) acc += av[r] * b[(size_t)r * ldb + j];
        ci[j] = acc;
    }
}

#if PREFETCH > 0
INLINE void prefetch_row(const float *p, int n) {
    for (int j = 0; j < n; j += 16) __builtin_prefetch(p + j, 0, 3);
}
#define PF_ROW(b, ldb, k, krem, n) \
    prefetch_row((b) + (size_t)GEMM_MIN((k) + PREFETCH, (krem) - 1) * (ldb), (n))
#else
#define PF_ROW(b, ldb, k, krem, n) ((void)(krem))
#endif

INLINE void tile(int mi, int nj, int kk, int krem, const float *restrict a, int lda,
                 const float *restrict b, int ldb, float *restrict c, int ldc) {
    for (int i = 0; i < mi; i++) {
        const float *ai = a + (size_t)i * lda;
        float *ci = c + (size_t)i * ldc;
        int k = 0;
        for (; k + UNROLL <= kk; k += UNROLL) {
            for (int u = 0; u < UNROLL; u++) PF_ROW(b, ldb, k + u, krem, nj);
            ikj_rows(UNROLL, nj, ai + k, b + (size_t)k * ldb, ldb, ci);
        }
        for (; k < kk; k++) {
            PF_ROW(b, ldb, k, krem, nj);
            ikj_rows(1, nj, ai + k, b + (size_t)k * ldb, ldb, ci);
        }
    }
}

#elif defined(ORDER_jik)

#if VEC > 1
#define JW (2 * VEC)
/* R rows x W vectors of C, accumulated over kk in registers, then added to C. */
INLINE void micro_v(int R, int W, int kk, int krem, const float *restrict a, int lda,
                    const float *restrict b, int ldb, float *restrict c, int ldc) {
    vf acc[UNROLL][2];
    for (int r = 0; r < R; r++)
        for (int w = 0; w < W; w++) acc[r][w] = (vf){0};
    for (int k = 0; k < kk; k++) {
        PF_B(b, ldb, k, krem, 0);
        PF_B(b, ldb, k, krem, W * VEC - 1);
        vf bv[2];
        for (int w = 0; w < W; w++) bv[w] = vload(b + (size_t)k * ldb + w * VEC);
        for (int r = 0; r < R; r++) {
            float av = a[(size_t)r * lda + k];
            for (int w = 0; w < W; w++) acc[r][w] += av * bv[w];
        }
    }
    for (int r = 0; r < R; r++)
        for (int w = 0; w < W; w++) {
            float *p = c + (size_t)r * ldc + w * VEC;
            vstore(p, vload(p) + acc[r][w]);
        }
}
#else
#define JW 4
#endif

/* R rows x W scalar columns of C (W <= 4), accumulated over kk in registers. */
INLINE void micro_s(int R, int W, int kk, int krem, const float *restrict a, int lda,
                    const float *restrict b, int ldb, float *restrict c, int ldc) {
    float acc[UNROLL][4];
    for (int r = 0; r < R; r++)
        for (int w = 0; w < W; w++) acc[r][w] = 0.0f;
    for (int k = 0; k < kk; k++) {
        PF_B(b, ldb, k, krem, 0);
        float bv[4];
        for (int w = 0; w < W; w++) bv[w] = b[(size_t)k * ldb + w];
        for (int r = 0; r < R; r++) {
            float av = a[(size_t)r * lda + k];
            for (int w = 0; w < W; w++) acc[r][w] += av * bv[w];
        }
    }
    for (int r = 0; r < R; r++)
        for (int w = 0; w < W; w++) c[(size_t)r * ldc + w] += acc[r][w];
}

#if VEC > 1
#define MICRO_FULL(R, kk, krem, a, lda, b, ldb, c, ldc) micro_v(R, 2, kk, krem, a, lda, b, ldb, c, ldc)
#else
#define MICRO_FULL(R, kk, krem, a, lda, b, ldb, c, ldc) micro_s(R, 4, kk, krem, a, lda, b, ldb, c, ldc)
#endif

/* All rows of the tile for one column strip, through micro-kernel MICRO. */
#define ROWS(MICRO_CALL_R)                                   \
    do {                                                     \
        int i = 0;                                           \
        for (; i + UNROLL <= mi; i += UNROLL) MICRO_CALL_R(UNROLL); \
        for (; i < mi; i++) MICRO_CALL_R(1);                 \
    } while (0)

INLINE void tile(int mi, int nj, int kk, int krem, const float *restrict a, int lda,
                 const float *restrict b, int ldb, float *restrict c, int ldc) {
    int j = 0;
    for (; j + JW <= nj; j += JW) {
#define CALL_FULL(R) \
    MICRO_FULL(R, kk, krem, a + (size_t)i * lda, lda, b + j, ldb, c + (size_t)i * ldc + j, ldc)
        ROWS(CALL_FULL);
#undef CALL_FULL
    }
#if VEC > 1
    /* one vector of columns left */
    for (; j + VEC <= nj; j += VEC) {
#define CALL_V1(R) \
    micro_v(R, 1, kk, krem, a + (size_t)i * lda, lda, b + j, ldb, c + (size_t)i * ldc + j, ldc)
        ROWS(CALL_V1);
#undef CALL_V1
    }
#endif
    /* scalar columns left, one at a time */
    for (; j < nj; j++) {
#define CALL_S1(R) \
    micro_s(R, 1, kk, krem, a + (size_t)i * lda, lda, b + j, ldb, c + (size_t)i * ldc + j, ldc)
        ROWS(CALL_S1);
#undef CALL_S1
    }
}

#endif /* ORDER */

/* One BM x BN tile of C, number t in row-major tile order: zero it, then sum over k. */
INLINE void c_tile(int t, int tiles_n, int M, int N, int K, const float *restrict A,
                   const float *restrict B, float *restrict C) {
    const int i0 = (t / tiles_n) * BM, j0 = (t % tiles_n) * BN;
    const int mi = GEMM_MIN(BM, M - i0), nj = GEMM_MIN(BN, N - j0);
    float *c = C + (size_t)i0 * N + j0;
    for (int i = 0; i < mi; i++) memset(c + (size_t)i * N, 0, (size_t)nj * sizeof(float));
    for (int k0 = 0; k0 < K; k0 += BK)
        tile(mi, nj, GEMM_MIN(BK, K - k0), K - k0, A + (size_t)i0 * K + k0, K,
             B + (size_t)k0 * N + j0, N, c, N);
}

void gemm(int M, int N, int K, const float *restrict A, const float *restrict B,
          float *restrict C) {
    if (M < 1 || N < 1) return;
    if (K < 1) {
        memset(C, 0, (size_t)M * N * sizeof(float));
        return;
    }
    const int tiles_n = (N + BN - 1) / BN;
    const int tiles = ((M + BM - 1) / BM) * tiles_n;
#if THREADS > 1
    /* A single tile runs without entering (or paying for) a parallel region. */
    if (tiles > 1) {
#pragma omp parallel for num_threads(THREADS) schedule(static)
        for (int t = 0; t < tiles; t++) c_tile(t, tiles_n, M, N, K, A, B, C);
        return;
    }
#endif
    for (int t = 0; t < tiles; t++) c_tile(t, tiles_n, M, N, K, A, B, C);
}
