/*
 * edgetune built-in kernel: int8 GEMM with int32 accumulation, the core of quantized
 * inference: C = A * B^T, where A is M x K int8 (activations, row-major), BT is N x K
 * int8 (the weights, one row per output channel) and C is M x N int32 (row-major).
 * C[i][j] = sum_k A[i][k] * BT[j][k], exactly; C is overwritten, never accumulated into.
 *
 * Why B is taken pre-transposed (N x K): quantized weights are stored output-channel
 * major (a PyTorch Linear / 1x1 Conv weight is [out][in], and so are TFLite and ONNX
 * fully-connected weights), and in that layout every output is a dot product of two
 * contiguous int8 rows. That is what widening SIMD multiply-adds consume (x86 pmaddwd /
 * VNNI, Arm sdot): k runs along the vector, no int8 element is widened more than once
 * per micro-block, and no strided gather is needed.
 *
 * Any M, N, K >= 1 is valid: cache tiles are cut short at the edges, micro-blocks that
 * do not fit fall back to 1-row / 1-column blocks, and the k loop ends in scalar code,
 * so nothing outside A, BT or C is ever touched. Sums are exact while they fit in int32:
 * K <= 131072 suffices for any int8 inputs.
 *
 * Tuning macros (all set with -D; defaults below apply only when one is missing).
 * Every combination in kernel.toml's space compiles warning-free (-Wall -Wextra) for
 * -march=native (AVX-512), x86-64-v3 and x86-64 and is exact, including the full int8
 * range (-128 * -128) and the portable path (-DQGEMM_PORTABLE).
 *   MR, NR      register block (1..8 each): MR rows of A times NR rows of BT, i.e. an
 *               MR x NR block of C, accumulated over all of K in MR * NR vector
 *               accumulators; each widened vector of A is reused NR times and each
 *               widened vector of BT MR times.
 *   VEC         int8 elements per vector step along k (1, 8, 16, 32 or 64); GCC vector
 *               extensions with unaligned loads. Each step sign-extends VEC int8 to VEC
 *               int16 lanes (2 * VEC bytes) and adds the sums of adjacent product pairs
 *               into VEC / 2 int32 lanes per accumulator (2 * VEC bytes too), so
 *               VEC * 16 bits is the register width it wants. 1 = plain scalar C
 *               (GCC -O3 auto-vectorizes the 1 x 1 dot product on its own).
 *               The pairwise multiply-add is pmaddwd on x86 (SSE2 / AVX2 / AVX-512BW
 *               intrinsics on the pieces of the vector, whichever the target has: one
 *               instruction instead of five); elsewhere, or with -DQGEMM_PORTABLE, it
 *               is plain vector-extension code (int16 multiply, exact since
 *               |a * b| <= 2^14, then shifts to split the product pairs).
 *   BM, BN      cache tile of C (>= 1): BM rows of A by BN rows of BT. Tiles are the
 *               unit of parallel work; a tile sweeps its BN rows of BT once per MR rows
 *               of A, so BN * K bytes should stay in L1/L2 (this matters once N * K
 *               outgrows L2, e.g. TinyLlama's 2048 x 2048 projections).
 *   THREADS     OpenMP threads over C tiles (static schedule); 1, or a single tile,
 *               = no parallel region at all.
 *
 * Pointless combinations (they compile and are correct, but waste the search):
 *   - VEC * 16 wider than the target's vector registers is split by GCC (much slower).
 *   - MR * NR accumulators (plus NR + 1 widened operands) beyond the register file
 *     spill: 16 registers without AVX-512, 32 with it.
 *   - BN < NR or BM < MR only ever runs the remainder blocks.
 * (Widening straight to int32 lanes and multiplying in int32 was tried and dropped:
 * 3-10x slower than the pairwise int16 path on every target.)
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef MR
#define MR 1
#endif
#ifndef NR
#define NR 1
#endif
#ifndef VEC
#define VEC 1
#endif
#ifndef BM
#define BM 32
#endif
#ifndef BN
#define BN 64
#endif
#ifndef THREADS
#define THREADS 1
#endif

#if (MR < 1) || (MR > 8) || (NR < 1) || (NR > 8)
#error "MR and NR must be in 1..8"
#endif
#if (VEC != 1) && (VEC != 8) && (VEC != 16) && (VEC != 32) && (VEC != 64)
#error "VEC must be 1, 8, 16, 32 or 64"
#endif
#if (BM < 1) || (BN < 1)
#error "BM and BN must be >= 1"
#endif
#if THREADS < 1
#error "THREADS must be >= 1"
#endif

#define QG_MIN(a, b) ((a) < (b) ? (a) : (b))
#define INLINE static inline __attribute__((always_inline))

#if VEC > 1
typedef int8_t v8 __attribute__((vector_size(VEC)));
/* Unaligned load; a macro, not a function, so no vector crosses a call ABI. */
#define load8(p) __extension__({ v8 v_; memcpy(&v_, (p), sizeof v_); v_; })
typedef int16_t vw __attribute__((vector_size(2 * VEC)));  /* VEC int16 lanes */
typedef int32_t vacc __attribute__((vector_size(2 * VEC))); /* VEC/2 int32 lanes */
#if defined(__SSE2__) && !defined(QGEMM_PORTABLE)
#include <immintrin.h>
/* acc += sums of adjacent int16 product pairs, one pmaddwd per register, in pieces of
 * the widest register the target has (SSE2 16 bytes, AVX2 32, AVX-512BW 64). */
#if defined(__AVX512BW__) && VEC >= 32
#define MADD_BYTES 64
typedef __m512i madd_t;
#define MADD_OP(x, y) _mm512_madd_epi16((x), (y))
#elif defined(__AVX2__) && VEC >= 16
#define MADD_BYTES 32
typedef __m256i madd_t;
#define MADD_OP(x, y) _mm256_madd_epi16((x), (y))
#else
#define MADD_BYTES 16
typedef __m128i madd_t;
#define MADD_OP(x, y) _mm_madd_epi16((x), (y))
#endif
#define MAC(acc, x, y)                                                  \
    do {                                                                \
        vw x_ = (x), y_ = (y);                                          \
        vacc r_;                                                        \
        for (int h_ = 0; h_ < 2 * VEC; h_ += MADD_BYTES) {              \
            madd_t xp_, yp_, rp_;                                       \
            memcpy(&xp_, (char *)&x_ + h_, MADD_BYTES);                 \
            memcpy(&yp_, (char *)&y_ + h_, MADD_BYTES);                 \
            rp_ = MADD_OP(xp_, yp_);                                    \
            memcpy((char *)&r_ + h_, &rp_, MADD_BYTES);                 \
        }                                                               \
        (acc) += r_;                                                    \
    } while (0)
#else
typedef uint32_t vaccu __attribute__((vector_size(2 * VEC)));
/* Portable: multiply in int16 (exact: |a * b| <= 2^14), then reinterpret each product
 * pair as one int32 lane q = hi:lo; (q << 16) >> 16 sign-extends lo (the left shift on
 * unsigned lanes, so it is defined) and q >> 16 sign-extends hi. */
#define MAC(acc, x, y)                                                  \
    do {                                                                \
        vacc q_ = (vacc)((x) * (y));                                    \
        (acc) += ((vacc)((vaccu)q_ << 16) >> 16) + (q_ >> 16);          \
    } while (0)
#endif
#define WIDEN(v) __builtin_convertvector((v), vw) /* int8 -> int16 lanes */
typedef int32_t vi4 __attribute__((vector_size(16)));
#endif

/*
 * C block of R x W outputs (R <= MR, W <= NR): c[r][w] = sum_k a[r][k] * b[w][k].
 * a = &A[i][0], b = &BT[j][0] (both rows K long), c = &C[i][j] (row stride ldc).
 */
INLINE void micro(int R, int W, int K, const int8_t *restrict a, const int8_t *restrict b,
                  int32_t *restrict c, int ldc) {
    int k = 0;
#if VEC > 1
    vacc acc[MR][NR];
    for (int r = 0; r < R; r++)
        for (int w = 0; w < W; w++) acc[r][w] = (vacc){0};
    for (; k + VEC <= K; k += VEC) {
        vw bw[NR];
        for (int w = 0; w < W; w++) bw[w] = WIDEN(load8(b + (size_t)w * K + k));
        for (int r = 0; r < R; r++) {
            vw aw = WIDEN(load8(a + (size_t)r * K + k));
            for (int w = 0; w < W; w++) MAC(acc[r][w], aw, bw[w]);
        }
    }
#endif
    int32_t s[MR][NR];
    for (int r = 0; r < R; r++)
        for (int w = 0; w < W; w++) {
#if VEC > 1
            /* horizontal sum: add 16-byte pieces (register halves), then 4 lanes */
            vi4 t4 = {0};
            for (size_t h = 0; h < sizeof(vacc); h += sizeof(vi4)) {
                vi4 piece;
                memcpy(&piece, (char *)&acc[r][w] + h, sizeof piece);
                t4 += piece;
            }
            s[r][w] = t4[0] + t4[1] + t4[2] + t4[3];
#else
            s[r][w] = 0;
#endif
        }
    /* k tail (all of K when VEC = 1) */
    for (; k < K; k++)
        for (int r = 0; r < R; r++) {
            int32_t av = a[(size_t)r * K + k];
            for (int w = 0; w < W; w++) s[r][w] += av * (int32_t)b[(size_t)w * K + k];
        }
    for (int r = 0; r < R; r++)
        for (int w = 0; w < W; w++) c[(size_t)r * ldc + w] = s[r][w];
}

/* One BM x BN tile of C, number t in row-major tile order. */
INLINE void c_tile(int t, int tiles_n, int M, int N, int K, const int8_t *restrict A,
                   const int8_t *restrict BT, int32_t *restrict C) {
    const int i0 = (t / tiles_n) * BM, j0 = (t % tiles_n) * BN;
    const int i1 = QG_MIN(i0 + BM, M), j1 = QG_MIN(j0 + BN, N);
    int i = i0;
    for (; i + MR <= i1; i += MR) {
        const int8_t *a = A + (size_t)i * K;
        int j = j0;
        for (; j + NR <= j1; j += NR) micro(MR, NR, K, a, BT + (size_t)j * K, C + (size_t)i * N + j, N);
        for (; j < j1; j++) micro(MR, 1, K, a, BT + (size_t)j * K, C + (size_t)i * N + j, N);
    }
    for (; i < i1; i++) {
        const int8_t *a = A + (size_t)i * K;
        int j = j0;
        for (; j + NR <= j1; j += NR) micro(1, NR, K, a, BT + (size_t)j * K, C + (size_t)i * N + j, N);
        for (; j < j1; j++) micro(1, 1, K, a, BT + (size_t)j * K, C + (size_t)i * N + j, N);
    }
}

void qgemm(int M, int N, int K, const int8_t *restrict A, const int8_t *restrict BT,
           int32_t *restrict C) {
    if (M < 1 || N < 1) return;
    if (K < 1) {
        memset(C, 0, (size_t)M * N * sizeof(int32_t));
        return;
    }
    const int tiles_n = (N + BN - 1) / BN;
    const int tiles = ((M + BM - 1) / BM) * tiles_n;
#if THREADS > 1
    /* A single tile runs without entering (or paying for) a parallel region. */
    if (tiles > 1) {
#pragma omp parallel for num_threads(THREADS) schedule(static)
        for (int t = 0; t < tiles; t++) c_tile(t, tiles_n, M, N, K, A, BT, C);
        return;
    }
#endif
    for (int t = 0; t < tiles; t++) c_tile(t, tiles_n, M, N, K, A, BT, C);
}
