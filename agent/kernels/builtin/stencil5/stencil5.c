/*
 * edgetune built-in kernel: one Jacobi step of the 2-D 5-point stencil on an H x W fp32
 * grid (row-major):
 *     out[i][j] = 0.2 * (in[i][j] + in[i-1][j] + in[i+1][j] + in[i][j-1] + in[i][j+1])
 * for interior points (0 < i < H-1, 0 < j < W-1); boundary points are copied from in.
 * out is overwritten (every element written), in is never modified. Any H, W >= 1 is
 * valid (a grid without interior is a plain copy): tiles that do not divide the
 * interior are cut short, vector and unroll remainders run through narrower code, so
 * nothing outside in or out is ever touched.
 *
 * What to expect: one Jacobi step does 5 flops per 8 bytes moved, so on grids beyond
 * L2 (and always when caches are flushed between runs) it is bound by memory
 * bandwidth. GCC already auto-vectorizes the plain loop, so on one core the explicit
 * parameters mostly decide how much slower than the bandwidth limit a candidate is;
 * more threads (more memory-level parallelism) and streaming stores are what can beat
 * the plain loop there. VEC and UNROLL matter more when the grid sits in cache.
 *
 * Tuning macros (all set with -D; defaults below apply only when one is missing).
 * Every combination of TI in {4,16,64}, TJ in {0,64,256}, VEC in {1,4,8,16}, UNROLL in
 * {1,2,4}, PREFETCH in {0,4}, both STORE values and THREADS in {1,2,4} compiles
 * warning-free (-Wall -Wextra) with -march=native, x86-64 and x86-64-v3, and is correct.
 *   TI          interior rows per tile (>= 1). Tiles (TI x TJ) are the unit of parallel
 *               work; with TJ = 0 and one thread TI changes nothing but where the
 *               UNROLL remainder falls.
 *   TJ          interior columns per tile (>= 0); 0 = whole rows (no column tiling).
 *               A tile sweeps its rows top to bottom, so narrow tiles keep the three
 *               input rows a sweep needs in L1 when rows are long.
 *   VEC         explicit SIMD width in floats (power of two, 1..32), GCC vector
 *               extensions with unaligned loads; 1 = plain scalar code, which GCC -O3
 *               auto-vectorizes at its preferred width. VEC wider than the target's
 *               registers is split by GCC: correct but pointless (see the constraints).
 *   UNROLL      output rows per sweep (1..8), register blocking in i: a sweep loads the
 *               UNROLL + 2 input rows once for UNROLL outputs (3 row loads per output
 *               at UNROLL 1, (UNROLL + 2) / UNROLL at larger UNROLL).
 *   PREFETCH    software prefetch distance in rows (>= 0): each sweep prefetches the
 *               input row PREFETCH rows below the lowest one it reads, at the same
 *               columns (clamped to the last row); 0 = none.
 *   STORE_x=1   how the vector loop stores the output, exactly one of:
 *                 STORE_cached  ordinary (unaligned) stores;
 *                 STORE_stream  non-temporal stores (x86 MOVNTPS family): no read for
 *                               ownership of the output lines and no cache pollution,
 *                               at the price of a few scalar columns per row to reach
 *                               vector alignment (and one row per sweep when W is not
 *                               a multiple of VEC). Needs VEC >= 4; off x86 it is an
 *                               ordinary store.
 *   THREADS     OpenMP threads over tiles (static schedule: contiguous runs of tiles
 *               per thread); 1, or a single tile, = no parallel region at all.
 *
 * Pointless combinations (they compile and are correct, but waste the search):
 *   - VEC * 32 above the target's vector register width (VECTOR_BITS) is split into
 *     several registers by GCC: constrain "VEC * 32 <= VECTOR_BITS".
 *   - TI other than one value with TJ == 0 and THREADS == 1 (the tiles run in the same
 *     order as one big tile).
 *   - TJ >= W - 2 is the same as TJ = 0, TI >= H - 2 is one row of tiles (shape
 *     dependent, left in).
 *   - TJ < VEC leaves only scalar remainder code (keep TJ == 0 or TJ >= 4 * VEC).
 *   - STORE_stream with VEC == 1 is STORE_cached (no vector stores to stream).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef TI
#define TI 16
#endif
#ifndef TJ
#define TJ 0
#endif
#ifndef VEC
#define VEC 1
#endif
#ifndef UNROLL
#define UNROLL 1
#endif
#ifndef PREFETCH
#define PREFETCH 0
#endif
#ifndef THREADS
#define THREADS 1
#endif

#if !defined(STORE_cached) && !defined(STORE_stream)
#define STORE_cached 1
#endif

#if TI < 1
#error "TI must be >= 1"
#endif
#if TJ < 0
#error "TJ must be >= 0 (0 = whole rows)"
#endif
#if (VEC != 1) && (VEC != 2) && (VEC != 4) && (VEC != 8) && (VEC != 16) && (VEC != 32)
#error "VEC must be a power of two in 1..32"
#endif
#if (UNROLL < 1) || (UNROLL > 8)
#error "UNROLL must be in 1..8"
#endif
#if PREFETCH < 0
#error "PREFETCH must be >= 0"
#endif
#if THREADS < 1
#error "THREADS must be >= 1"
#endif
#if defined(STORE_cached) + defined(STORE_stream) != 1
#error "define exactly one of STORE_cached, STORE_stream"
#endif

#define INLINE static inline __attribute__((always_inline))
#define ST_MIN(a, b) ((a) < (b) ? (a) : (b))

/*
 * vf is the unit of work: a GCC vector of VEC floats, or a plain float when VEC == 1,
 * so one body of code serves both. Loads and stores are macros, so no vector type ever
 * crosses a function ABI (-Wpsabi with narrower targets).
 */
#if VEC > 1
typedef float vf __attribute__((vector_size(VEC * sizeof(float))));
#define VLOAD(p) __extension__({ vf vl_; memcpy(&vl_, (p), sizeof vl_); vl_; })
#define VSTORE(p, v) do { vf vs_ = (v); memcpy((p), &vs_, sizeof vs_); } while (0)
#else
typedef float vf;
#define VLOAD(p) (*(p))
#define VSTORE(p, v) (*(p) = (v))
#endif

/*
 * Stores of the vector loop. STORE_stream: non-temporal stores (MOVNTPS: no read for
 * ownership of the output line, no cache pollution), which need aligned addresses, so
 * the caller peels scalar columns until the output is aligned to a whole vector.
 * Done with the widest intrinsic the target has for VEC (AVX-512, AVX, else 4-float
 * SSE chunks); off x86 STORE_stream falls back to ordinary stores.
 */
#if defined(STORE_stream) && VEC >= 4 && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define NT_ALIGN (VEC * 4) /* bytes; the preprocessor has no sizeof */
#if VEC == 16 && defined(__AVX512F__)
#define VSTORE_OUT(p, v) _mm512_stream_ps((p), (__m512)(v))
#elif VEC == 8 && defined(__AVX__)
#define VSTORE_OUT(p, v) _mm256_stream_ps((p), (__m256)(v))
#else
#define VSTORE_OUT(p, v) do {                                                  \
        vf nt_ = (v);                                                          \
        for (int k_ = 0; k_ < VEC; k_ += 4) {                                  \
            __m128 c_;                                                         \
            memcpy(&c_, (const float *)&nt_ + k_, sizeof c_);                  \
            _mm_stream_ps((p) + k_, c_);                                       \
        }                                                                      \
    } while (0)
#endif
#define NT_FENCE() _mm_sfence()
#else
#define NT_ALIGN 0
#define VSTORE_OUT(p, v) VSTORE((p), (v))
#define NT_FENCE() ((void)0)
#endif

#if PREFETCH > 0
/* Prefetch in[min(row, H-1)][j]. */
#define PF(in, W, H, row, j) \
    __builtin_prefetch((in) + (size_t)ST_MIN((row), (H) - 1) * (W) + (j), 0, 3)
#else
#define PF(in, W, H, row, j) ((void)0)
#endif

/*
 * R (<= UNROLL) output rows i .. i+R-1, columns j0 .. j1-1 (all interior). W is the row
 * stride; input rows i-1 .. i+R are read.
 */
INLINE void sweep(int R, int i, int j0, int j1, int H, int W, const float *restrict in,
                  float *restrict out) {
    const float *p = in + (size_t)(i - 1) * W; /* input row i-1 */
    float *q = out + (size_t)i * W;             /* output row i */
    int j = j0;
    (void)H;
#if NT_ALIGN > 0
    /* scalar columns until output row i is aligned for streaming stores; row i+r is
     * then aligned too only if W is a multiple of VEC, so otherwise R is 1 here */
    for (; j < j1 && ((uintptr_t)(q + j) % NT_ALIGN) != 0; j++)
        for (int r = 0; r < R; r++) {
            const float *row = p + (size_t)(r + 1) * W + j;
            out[(size_t)(i + r) * W + j] = (row[0] + row[-(ptrdiff_t)W] + row[W] + row[-1] + row[1]) * 0.2f;
        }
#endif
    for (; j + VEC <= j1; j += VEC) {
        PF(in, W, H, i + R + PREFETCH, j);
        vf c[UNROLL + 2];
        for (int r = 0; r < R + 2; r++) c[r] = VLOAD(p + (size_t)r * W + j);
        for (int r = 0; r < R; r++) {
            const float *row = p + (size_t)(r + 1) * W + j;
            vf s = c[r + 1] + c[r] + c[r + 2] + VLOAD(row - 1) + VLOAD(row + 1);
            VSTORE(q + (size_t)r * W + j, s * 0.2f);
        }
    }
    for (; j < j1; j++) {
        for (int r = 0; r < R; r++) {
            const float *row = p + (size_t)(r + 1) * W + j;
            out[(size_t)(i + r) * W + j] = (row[0] + row[-(ptrdiff_t)W] + row[W] + row[-1] + row[1]) * 0.2f;
        }
    }
}

/* Tile number t of the interior (rows 1 .. H-2, columns 1 .. W-2). */
INLINE void tile(int t, int tiles_j, int H, int W, const float *restrict in,
                 float *restrict out) {
#if TJ > 0
    const int tj = TJ;
#else
    const int tj = W - 2;
#endif
    const int i0 = 1 + (t / tiles_j) * TI, j0 = 1 + (t % tiles_j) * tj;
    const int i1 = ST_MIN(i0 + TI, H - 1), j1 = ST_MIN(j0 + tj, W - 1);
    int i = i0;
#if NT_ALIGN > 0
    if (W % VEC == 0) /* else rows below i are not aligned alike: one row per sweep */
#endif
        for (; i + UNROLL <= i1; i += UNROLL) sweep(UNROLL, i, j0, j1, H, W, in, out);
    for (; i < i1; i++) sweep(1, i, j0, j1, H, W, in, out);
    NT_FENCE(); /* streamed stores are visible before the tile counts as done */
}

void stencil5(int H, int W, const float *restrict in, float *restrict out) {
    if (H < 1 || W < 1) return;
    if (H < 3 || W < 3) { /* no interior: all boundary */
        memcpy(out, in, (size_t)H * W * sizeof(float));
        return;
    }
    /* boundary: first and last rows, first and last columns */
    memcpy(out, in, (size_t)W * sizeof(float));
    memcpy(out + (size_t)(H - 1) * W, in + (size_t)(H - 1) * W, (size_t)W * sizeof(float));
    for (int i = 1; i < H - 1; i++) {
        out[(size_t)i * W] = in[(size_t)i * W];
        out[(size_t)i * W + W - 1] = in[(size_t)i * W + W - 1];
    }
    const int tiles_i = (H - 2 + TI - 1) / TI;
#if TJ > 0
    const int tiles_j = (W - 2 + TJ - 1) / TJ;
#else
    const int tiles_j = 1;
#endif
    const int tiles = tiles_i * tiles_j;
#if THREADS > 1
    /* A single tile runs without entering (or paying for) a parallel region. */
    if (tiles > 1) {
#pragma omp parallel for num_threads(THREADS) schedule(static)
        for (int t = 0; t < tiles; t++) tile(t, tiles_j, H, W, in, out);
        return;
    }
#endif
    for (int t = 0; t < tiles; t++) tile(t, tiles_j, H, W, in, out);
}
