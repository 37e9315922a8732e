/*
 * edgetune built-in kernel: fp32 out-of-place transpose, B = A^T (A is M x N row-major,
 * B is N x M row-major): B[j][i] = A[i][j]. Pure data movement: one side of the copy is
 * always strided, so the speed is all cache lines, TLB entries and store bandwidth.
 * Any M, N >= 1 is valid: tiles are cut short at the edges and micro-tiles that do not
 * fit run as scalar copies, so nothing outside A or B is ever touched.
 * (Software prefetching was tried and dropped: the hardware prefetchers already follow
 * both sides here, and it made no measurable difference on an AVX-512 Zen 4.)
 *
 * Tuning macros (all set with -D; defaults below apply only when one is missing).
 * Every combination in kernel.toml's space compiles warning-free (-Wall -Wextra) for
 * -march=native (AVX-512), x86-64-v3 and x86-64 and is correct at the odd "small" shape.
 *   TR, TC      cache tile (>= 1): TR rows by TC columns of A, i.e. TC rows by TR
 *               columns of B. A tile reads TR row segments of A and writes TC row
 *               segments of B; tiles are the unit of parallel work and are walked in
 *               row-major order over A.
 *   VEC         micro-tile (power of two, 1..16): VEC x VEC blocks are loaded as VEC
 *               row vectors of A (GCC vector extensions, unaligned), transposed in
 *               registers by log2(VEC) rounds of lane interleaves, and stored as VEC
 *               row vectors of B. 1 = plain scalar element copies.
 *   ORDER_x=1   order of the micro-tiles inside a tile, exactly one of:
 *                 ORDER_row  along rows of A (reads of A contiguous, writes of B spread
 *                            over VEC-row strips);
 *                 ORDER_col  down columns of A (writes of B contiguous, reads spread).
 *   THREADS     OpenMP threads over tiles (static schedule); 1, or a single tile, =
 *               no parallel region at all.
 *
 * Pointless combinations (they compile and are correct, but waste the search):
 *   - TR or TC smaller than VEC (or not a multiple of it) leaves only scalar code.
 *   - VEC wider than the target's vector registers is split by GCC (slow).
 *   - ORDER with TR == VEC (row) or TC == VEC (col) has a single micro-tile per line.
 */
#include <stddef.h>
#include <string.h>

#ifndef TR
#define TR 32
#endif
#ifndef TC
#define TC 32
#endif
#ifndef VEC
#define VEC 1
#endif
#ifndef THREADS
#define THREADS 1
#endif
#if !defined(ORDER_row) && !defined(ORDER_col)
#define ORDER_row 1
#endif

#if (TR < 1) || (TC < 1)
#error "TR and TC must be >= 1"
#endif
#if (VEC != 1) && (VEC != 2) && (VEC != 4) && (VEC != 8) && (VEC != 16)
#error "VEC must be a power of two in 1..16"
#endif
#if THREADS < 1
#error "THREADS must be >= 1"
#endif
#if defined(ORDER_row) + defined(ORDER_col) != 1
#error "define exactly one of ORDER_row, ORDER_col"
#endif

#define TP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define INLINE static inline __attribute__((always_inline))

#if VEC > 1
typedef float vf __attribute__((vector_size(VEC * sizeof(float))));
/* Unaligned load/store; macros, not functions, so no vector crosses a call ABI. */
#define vload(p) __extension__({ vf v_; memcpy(&v_, (p), sizeof v_); v_; })
#define vstore(p, v) do { vf w_ = (v); memcpy((p), &w_, sizeof w_); } while (0)

/* Interleave the low halves (LO) and the high halves (HI) of two vectors:
 * LO(a, b) = a0 b0 a1 b1 ..., HI(a, b) = a[VEC/2] b[VEC/2] ... */
#if VEC == 2
#define LO(a, b) __builtin_shufflevector(a, b, 0, 2)
#define HI(a, b) __builtin_shufflevector(a, b, 1, 3)
#elif VEC == 4
#define LO(a, b) __builtin_shufflevector(a, b, 0, 4, 1, 5)
#define HI(a, b) __builtin_shufflevector(a, b, 2, 6, 3, 7)
#elif VEC == 8
#define LO(a, b) __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11)
#define HI(a, b) __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15)
#else
#define LO(a, b) __builtin_shufflevector(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)
#define HI(a, b) __builtin_shufflevector(a, b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)
#endif

/* One VEC x VEC block: a = &A[i][j] (row stride lda), b = &B[j][i] (row stride ldb).
 * Each round maps rows (r, r + VEC/2) to (LO, HI) at (2r, 2r + 1); log2(VEC) rounds
 * turn rows into columns. */
INLINE void block(const float *restrict a, size_t lda, float *restrict b, size_t ldb) {
    vf r[VEC], t[VEC];
    for (int i = 0; i < VEC; i++) r[i] = vload(a + i * lda);
    for (int round = 1; round < VEC; round *= 2) {
        for (int i = 0; i < VEC / 2; i++) {
            t[2 * i] = LO(r[i], r[i + VEC / 2]);
            t[2 * i + 1] = HI(r[i], r[i + VEC / 2]);
        }
        for (int i = 0; i < VEC; i++) r[i] = t[i];
    }
    for (int i = 0; i < VEC; i++) vstore(b + i * ldb, r[i]);
}
#endif

/* Scalar copy of an h x w piece: a = &A[i][j], b = &B[j][i]. */
INLINE void scalar_piece(int h, int w, const float *restrict a, size_t lda, float *restrict b,
                         size_t ldb) {
#if defined(ORDER_row)
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) b[j * ldb + i] = a[i * lda + j];
#else
    for (int j = 0; j < w; j++)
        for (int i = 0; i < h; i++) b[j * ldb + i] = a[i * lda + j];
#endif
}

/* Tile number t (row-major over the tiles of A). */
INLINE void tile(int t, int tiles_n, int M, int N, const float *restrict A, float *restrict B) {
    const int i0 = (t / tiles_n) * TR, j0 = (t % tiles_n) * TC;
    const int h = TP_MIN(TR, M - i0), w = TP_MIN(TC, N - j0);
    const float *a = A + (size_t)i0 * N + j0; /* &A[i0][j0] */
    float *b = B + (size_t)j0 * M + i0;       /* &B[j0][i0] */
#if VEC > 1
    const int hv = h - h % VEC, wv = w - w % VEC; /* extent covered by whole blocks */
#if defined(ORDER_row)
    for (int i = 0; i < hv; i += VEC)
        for (int j = 0; j < wv; j += VEC)
            block(a + (size_t)i * N + j, N, b + (size_t)j * M + i, M);
#else
    for (int j = 0; j < wv; j += VEC)
        for (int i = 0; i < hv; i += VEC)
            block(a + (size_t)i * N + j, N, b + (size_t)j * M + i, M);
#endif
    /* right edge (columns wv..w of the first hv rows), then the bottom rows */
    if (wv < w) scalar_piece(hv, w - wv, a + wv, N, b + (size_t)wv * M, M);
    if (hv < h) scalar_piece(h - hv, w, a + (size_t)hv * N, N, b + hv, M);
#else
    scalar_piece(h, w, a, N, b, M);
#endif
}

void transpose(int M, int N, const float *restrict A, float *restrict B) {
    if (M < 1 || N < 1) return;
    const int tiles_n = (N + TC - 1) / TC;
    const int tiles = ((M + TR - 1) / TR) * tiles_n;
#if THREADS > 1
    /* A single tile runs without entering (or paying for) a parallel region. */
    if (tiles > 1) {
#pragma omp parallel for num_threads(THREADS) schedule(static)
        for (int t = 0; t < tiles; t++) tile(t, tiles_n, M, N, A, B);
        return;
    }
#endif
    for (int t = 0; t < tiles; t++) tile(t, tiles_n, M, N, A, B);
}
