/*
 * edgetune built-in kernel: direct fp32 2-D convolution, batch 1, NHWC.
 *
 *   output[oh][ow][k] = sum over r < R, s < S, c < C of
 *       input[oh*STRIDE - PAD + r][ow*STRIDE - PAD + s][c] * weight[r][s][c][k]
 *
 * with input taps outside the H x W image reading as zero (zero padding), and
 *   OH = (H + 2*PAD - R) / STRIDE + 1,  OW = (W + 2*PAD - S) / STRIDE + 1.
 * Layouts: input [H][W][C] (NHWC without the batch), weight [R][S][C][K] (HWIO, the
 * TensorFlow filter layout), output [OH][OW][K]. No bias, no activation. The output is
 * overwritten, never accumulated into.
 *
 * Why NHWC / HWIO: it is the layout of the edge runtimes (TFLite, CMSIS-NN, XNNPACK).
 * Output channels are contiguous in both the weights and the output, so the SIMD
 * lanes run over k with plain contiguous loads whatever STRIDE is (NCHW would
 * vectorize over output columns and need strided gathers at stride 2), and one
 * input pixel's C channels for S consecutive taps are one contiguous run, so a whole
 * filter row is a single reduction loop of length S*C (no per-element padding test).
 *
 * Any C, H, W, K, R, S, STRIDE >= 1 and PAD >= 0 with OH, OW >= 1 is valid (PAD may
 * even be >= R: outputs that see only padding are 0). Tiles that do not divide an
 * extent are cut short, and unroll/vector remainders run through narrower code, so
 * nothing outside input, weight or output is ever touched.
 *
 * Tuning macros (all set with -D; defaults below apply only when one is missing).
 * Every ORDER x VEC in {1,4,8,16} x UNROLL in {1,2,4,8} x THREADS in {1,2,4} compiles
 * warning-free (-Wall -Wextra) for -march=native (AVX-512), x86-64 and x86-64-v3; every
 * configuration kernel.toml allows was checked against the reference at the small and
 * small_s2 shapes (native), and random ones at odd shapes (PAD >= R, STRIDE 3, 1x1
 * filters with padding) and for x86-64 / x86-64-v3.
 *   TK, TH, TW  output tile: output channels x output rows x output columns (>= 1).
 *               Tiles are the unit of parallel work and of cache blocking: in pk and
 *               kp all R*S*C*TK weights of a tile are reused by its TH*TW pixels; in
 *               rsc the TH*TW*TK output tile is the accumulator that stays in cache.
 *   UNROLL      1..16, meaning depends on ORDER:
 *                 pk, kp: register blocking, UNROLL consecutive output pixels of a
 *                     row are accumulated together (each input value loaded once per
 *                     vector of weights, each weight vector once per UNROLL pixels);
 *                 rsc: UNROLL input channels fused per pass over the output tile
 *                     (the output is loaded/stored once per UNROLL channels).
 *   VEC         explicit SIMD width in floats over output channels (power of two,
 *               1..32), GCC vector extensions with unaligned loads; 1 = no explicit
 *               vector code (GCC -O3 still auto-vectorizes the k loop of rsc, and may
 *               SLP-vectorize the 4-channel scalar block of pk/kp). VEC wider than
 *               the target's registers is split by GCC: correct but slow.
 *   ORDER_x=1   loop order inside a tile, exactly one of:
 *                 ORDER_pk  pixel blocks outer, channel groups inner: for each block of
 *                           UNROLL pixels (interior columns; pixels whose taps reach
 *                           into the left/right padding run one at a time with their
 *                           filter rows clipped), for each group of 2*VEC output channels
 *                           (4 when VEC=1), accumulate the UNROLL x group block over
 *                           all R*S*C taps in registers and store it once;
 *                 ORDER_kp  the same register micro-kernel with the channel groups
 *                           outer: one group's weights stay hot while all the tile's
 *                           pixels stream past;
 *                 ORDER_rsc reduction outer (like GEMM ikj): zero the output tile,
 *                           then for each tap (r, s, c) broadcast the input and add
 *                           input * weight row into every output pixel of the tile.
 *   THREADS     OpenMP threads over output tiles (static schedule); 1, or a single
 *               tile, = no parallel region at all.
 *
 * Pointless combinations (they compile and are correct, but waste the search; kernel.toml
 * constrains them away):
 *   - TK not a multiple of 2*VEC leaves the wide group path partly unused:
 *     TK % (2 * VEC) == 0 keeps it in use.
 *   - pk/kp with TW < UNROLL only ever run the single-pixel remainder path:
 *     TW % UNROLL == 0.
 *   - pk/kp with VEC = 1: a 4-channel scalar block, 2-3x behind VEC >= 4.
 *   - pk/kp with 2*UNROLL vector accumulators beyond the register file (UNROLL 8
 *     with VEC > 1 on 16-register AVX2/SSE targets) spill: slow but correct.
 *   - rsc with UNROLL 8: no better than 4 (the output row is already amortized).
 *   - THREADS > 1 with a single tile runs on one thread.
 */
#include <stddef.h>
#include <string.h>

#ifndef TK
#define TK 64
#endif
#ifndef TH
#define TH 4
#endif
#ifndef TW
#define TW 8
#endif
#ifndef UNROLL
#define UNROLL 1
#endif
#ifndef VEC
#define VEC 1
#endif
#ifndef THREADS
#define THREADS 1
#endif
#if !defined(ORDER_pk) && !defined(ORDER_kp) && !defined(ORDER_rsc)
#define ORDER_rsc 1
#endif

#if (TK < 1) || (TH < 1) || (TW < 1)
#error "TK, TH and TW must be >= 1"
#endif
#if (UNROLL < 1) || (UNROLL > 16)
#error "UNROLL must be in 1..16"
#endif
#if (VEC != 1) && (VEC != 2) && (VEC != 4) && (VEC != 8) && (VEC != 16) && (VEC != 32)
#error "VEC must be a power of two in 1..32"
#endif
#if THREADS < 1
#error "THREADS must be >= 1"
#endif
#if defined(ORDER_pk) + defined(ORDER_kp) + defined(ORDER_rsc) != 1
#error "define exactly one of ORDER_pk, ORDER_kp, ORDER_rsc"
#endif

#define CV_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CV_MAX(a, b) ((a) > (b) ? (a) : (b))
#define INLINE static inline __attribute__((always_inline))

#if VEC > 1
typedef float vf __attribute__((vector_size(VEC * sizeof(float))));
/* Unaligned load/store; macros, not functions, so no vector crosses a call ABI. */
#define vload(p) __extension__({ vf v_; memcpy(&v_, (p), sizeof v_); v_; })
#define vstore(p, v) do { vf w_ = (v); memcpy((p), &w_, sizeof w_); } while (0)
#define GW (2 * VEC) /* output channels per full group of the micro-kernel */
#else
#define GW 4
#endif

/* The problem, shared by every tile. */
typedef struct {
    int C, H, W, K, R, S, stride, pad, OH, OW;
    const float *in, *wt;
    float *out;
} conv_t;

/* One output row: the filter rows r_lo .. r_lo+nr-1 that land inside the image. */
typedef struct {
    int ih0;  /* input row of filter row 0 (may be negative) */
    int r_lo; /* first filter row inside the image */
    int nr;   /* number of filter rows inside the image (may be 0) */
} row_t;

INLINE row_t row_info(const conv_t *p, int oh) {
    row_t rw;
    rw.ih0 = oh * p->stride - p->pad;
    rw.r_lo = CV_MAX(0, -rw.ih0);
    int r_hi = CV_MIN(p->R, p->H - rw.ih0);
    rw.nr = CV_MAX(0, r_hi - rw.r_lo);
    return rw;
}

#if defined(ORDER_pk) || defined(ORDER_kp)

/*
 * Register micro-kernels: P output pixels (UNROLL or 1) x a group of output channels,
 * summed over nr filter rows and a run of jn = (taps in the row) * C reduction steps.
 * x points at the first valid input value of pixel 0 in the first valid row; pixel u
 * is xpix further, filter row r is xrow further. w points at the weight of that first
 * tap for the group's first channel; the next reduction step is K further, the next
 * filter row wrow further. o = &output[pixel 0][first channel]; pixel u is K further.
 */
#if VEC > 1
INLINE void micro_v(int P, int NV, int nr, int jn, const float *restrict x, ptrdiff_t xpix,
                    ptrdiff_t xrow, const float *restrict w, ptrdiff_t wrow, int K,
                    float *restrict o) {
    vf acc[UNROLL][2];
    for (int u = 0; u < P; u++)
        for (int v = 0; v < NV; v++) acc[u][v] = (vf){0};
    for (int r = 0; r < nr; r++) {
        const float *xr = x + r * xrow;
        const float *wr = w + r * wrow;
        for (int j = 0; j < jn; j++) {
            vf wv[2];
            for (int v = 0; v < NV; v++) wv[v] = vload(wr + (size_t)j * K + v * VEC);
            for (int u = 0; u < P; u++) {
                float xs = xr[u * xpix + j];
                for (int v = 0; v < NV; v++) acc[u][v] += xs * wv[v];
            }
        }
    }
    for (int u = 0; u < P; u++)
        for (int v = 0; v < NV; v++) vstore(o + (size_t)u * K + v * VEC, acc[u][v]);
}
#endif

/* The same with NC <= 4 scalar channels. */
INLINE void micro_s(int P, int NC, int nr, int jn, const float *restrict x, ptrdiff_t xpix,
                    ptrdiff_t xrow, const float *restrict w, ptrdiff_t wrow, int K,
                    float *restrict o) {
    float acc[UNROLL][4];
    for (int u = 0; u < P; u++)
        for (int v = 0; v < NC; v++) acc[u][v] = 0.0f;
    for (int r = 0; r < nr; r++) {
        const float *xr = x + r * xrow;
        const float *wr = w + r * wrow;
        for (int j = 0; j < jn; j++) {
            float wv[4];
            for (int v = 0; v < NC; v++) wv[v] = wr[(size_t)j * K + v];
            for (int u = 0; u < P; u++) {
                float xs = xr[u * xpix + j];
                for (int v = 0; v < NC; v++) acc[u][v] += xs * wv[v];
            }
        }
    }
    for (int u = 0; u < P; u++)
        for (int v = 0; v < NC; v++) o[(size_t)u * K + v] = acc[u][v];
}

/* G channels from k: G is GW, VEC (VEC > 1) or 1; constant after inlining. */
INLINE void micro(int P, int G, int nr, int jn, const float *x, ptrdiff_t xpix, ptrdiff_t xrow,
                  const float *w, ptrdiff_t wrow, int K, float *o) {
#if VEC > 1
    if (G == GW) {
        micro_v(P, 2, nr, jn, x, xpix, xrow, w, wrow, K, o);
        return;
    }
    if (G == VEC) {
        micro_v(P, 1, nr, jn, x, xpix, xrow, w, wrow, K, o);
        return;
    }
#endif
    micro_s(P, G, nr, jn, x, xpix, xrow, w, wrow, K, o);
}

/*
 * P pixels of output row oh from column ow, G channels from k. A block whose taps all
 * fall inside the image columns runs as one micro-kernel call with full filter rows;
 * otherwise each pixel runs alone with its filter rows clipped to the image.
 */
INLINE void pixels(const conv_t *p, int oh, row_t rw, int ow, int P, int k, int G) {
    const int C = p->C, S = p->S, K = p->K, W = p->W, st = p->stride;
    const ptrdiff_t xrow = (ptrdiff_t)W * C, wrow = (ptrdiff_t)S * C * K;
    float *o = p->out + ((size_t)oh * p->OW + ow) * K + k;
    const int iw0 = ow * st - p->pad;
    if (rw.nr > 0 && iw0 >= 0 && (ow + P - 1) * st - p->pad + S <= W) {
        const float *x = p->in + ((size_t)(rw.ih0 + rw.r_lo) * W + iw0) * C;
        const float *w = p->wt + (size_t)rw.r_lo * wrow + k;
        micro(P, G, rw.nr, S * C, x, (ptrdiff_t)st * C, xrow, w, wrow, K, o);
        return;
    }
    for (int u = 0; u < P; u++) {
        const int iw = iw0 + u * st;
        const int s_lo = CV_MAX(0, -iw), s_hi = CV_MIN(S, W - iw);
        const int ns = CV_MAX(0, s_hi - s_lo);
        const int nr = ns > 0 ? rw.nr : 0;
        const float *x = p->in, *w = p->wt + k;
        if (nr > 0) {
            x = p->in + ((size_t)(rw.ih0 + rw.r_lo) * W + iw + s_lo) * C;
            w = p->wt + ((size_t)rw.r_lo * S + s_lo) * C * K + k;
        }
        micro(1, G, nr, ns * C, x, 0, xrow, w, wrow, K, o + (size_t)u * K);
    }
}

/*
 * Split the tile's columns [ow_a, ow_b) at the image border: columns before *lo and from
 * *hi on have taps in the left/right padding and run one pixel at a time; [*lo, *hi) is
 * interior and runs in blocks of UNROLL (so a left border pixel never breaks a block).
 */
INLINE void interior_columns(const conv_t *p, int ow_a, int ow_b, int *lo, int *hi) {
    const int st = p->stride, reach = p->W - p->S + p->pad; /* last tap of ow: ow*st + S-1-pad */
    int first = (p->pad + st - 1) / st;                     /* smallest ow with ow*st >= pad */
    int end = reach < 0 ? 0 : reach / st + 1;               /* ow*st - pad + S <= W below it */
    *lo = CV_MIN(CV_MAX(first, ow_a), ow_b);
    *hi = CV_MAX(CV_MIN(end, ow_b), *lo);
}

/* All channel groups of [k_a, k_b) for one block of P pixels. */
INLINE void channel_groups(const conv_t *p, int oh, row_t rw, int ow, int P, int k_a, int k_b) {
    int k = k_a;
    for (; k + GW <= k_b; k += GW) pixels(p, oh, rw, ow, P, k, GW);
#if VEC > 1
    for (; k + VEC <= k_b; k += VEC) pixels(p, oh, rw, ow, P, k, VEC);
#endif
    for (; k < k_b; k++) pixels(p, oh, rw, ow, P, k, 1);
}

/* All pixels of the tile rows/columns for one group of G channels from k. */
INLINE void pixel_blocks(const conv_t *p, int oh_a, int oh_b, int ow_a, int ow_b, int k, int G) {
    int lo, hi;
    interior_columns(p, ow_a, ow_b, &lo, &hi);
    for (int oh = oh_a; oh < oh_b; oh++) {
        const row_t rw = row_info(p, oh);
        int ow = ow_a;
        for (; ow < lo; ow++) pixels(p, oh, rw, ow, 1, k, G);
        for (; ow + UNROLL <= hi; ow += UNROLL) pixels(p, oh, rw, ow, UNROLL, k, G);
        for (; ow < ow_b; ow++) pixels(p, oh, rw, ow, 1, k, G);
    }
}

INLINE void tile(const conv_t *p, int oh_a, int oh_b, int ow_a, int ow_b, int k_a, int k_b) {
#if defined(ORDER_pk)
    int lo, hi;
    interior_columns(p, ow_a, ow_b, &lo, &hi);
    for (int oh = oh_a; oh < oh_b; oh++) {
        const row_t rw = row_info(p, oh);
        int ow = ow_a;
        for (; ow < lo; ow++) channel_groups(p, oh, rw, ow, 1, k_a, k_b);
        for (; ow + UNROLL <= hi; ow += UNROLL) channel_groups(p, oh, rw, ow, UNROLL, k_a, k_b);
        for (; ow < ow_b; ow++) channel_groups(p, oh, rw, ow, 1, k_a, k_b);
    }
#else /* ORDER_kp */
    int k = k_a;
    for (; k + GW <= k_b; k += GW) pixel_blocks(p, oh_a, oh_b, ow_a, ow_b, k, GW);
#if VEC > 1
    for (; k + VEC <= k_b; k += VEC) pixel_blocks(p, oh_a, oh_b, ow_a, ow_b, k, VEC);
#endif
    for (; k < k_b; k++) pixel_blocks(p, oh_a, oh_b, ow_a, ow_b, k, 1);
#endif
}

#else /* ORDER_rsc */

/* o[0..nk) += sum over u < U of xs[u] * w[u*K + 0..nk) */
INLINE void axpy_rows(int U, int nk, const float *restrict xs, const float *restrict w, int K,
                      float *restrict o) {
    int k = 0;
#if VEC > 1
    for (; k + VEC <= nk; k += VEC) {
        vf acc = vload(o + k);
        for (int u = 0; u < U; u++) acc += xs[u] * vload(w + (size_t)u * K + k);
        vstore(o + k, acc);
    }
#endif
    for (; k < nk; k++) {
        float acc = o[k];
        for (int u = 0; u < U; u++) acc += xs[u] * w[(size_t)u * K + k];
        o[k] = acc;
    }
}

/* U input channels from c of tap (r, s), added into every output pixel of the tile. */
INLINE void tap_pass(const conv_t *p, int U, int r, int s, int c, int oh_a, int oh_b, int ow_a,
                     int ow_b, int k_a, int nk) {
    const int C = p->C, K = p->K, W = p->W, st = p->stride;
    const float *w = p->wt + (((size_t)r * p->S + s) * C + c) * K + k_a;
    for (int oh = oh_a; oh < oh_b; oh++) {
        const int ih = oh * st - p->pad + r;
        if (ih < 0 || ih >= p->H) continue;
        /* the output columns whose input column ow*st - pad + s is inside 0..W-1 */
        const int off = s - p->pad;
        int lo = off >= 0 ? 0 : (-off + st - 1) / st;
        int hi = W - 1 - off < 0 ? -1 : (W - 1 - off) / st;
        lo = CV_MAX(lo, ow_a);
        hi = CV_MIN(hi, ow_b - 1);
        for (int ow = lo; ow <= hi; ow++) {
            const float *xs = p->in + ((size_t)ih * W + (ow * st + off)) * C + c;
            float *o = p->out + ((size_t)oh * p->OW + ow) * K + k_a;
            axpy_rows(U, nk, xs, w, K, o);
        }
    }
}

INLINE void tile(const conv_t *p, int oh_a, int oh_b, int ow_a, int ow_b, int k_a, int k_b) {
    const int nk = k_b - k_a;
    for (int oh = oh_a; oh < oh_b; oh++)
        for (int ow = ow_a; ow < ow_b; ow++)
            memset(p->out + ((size_t)oh * p->OW + ow) * p->K + k_a, 0, (size_t)nk * sizeof(float));
    for (int r = 0; r < p->R; r++)
        for (int s = 0; s < p->S; s++) {
            int c = 0;
            for (; c + UNROLL <= p->C; c += UNROLL)
                tap_pass(p, UNROLL, r, s, c, oh_a, oh_b, ow_a, ow_b, k_a, nk);
            for (; c < p->C; c++) tap_pass(p, 1, r, s, c, oh_a, oh_b, ow_a, ow_b, k_a, nk);
        }
}

#endif /* ORDER */

/* Tile number t: k tiles vary fastest, then column tiles, then row tiles. */
INLINE void run_tile(const conv_t *p, int t, int tiles_k, int tiles_w) {
    const int kt = t % tiles_k, wt = (t / tiles_k) % tiles_w, ht = t / tiles_k / tiles_w;
    const int oh_a = ht * TH, ow_a = wt * TW, k_a = kt * TK;
    tile(p, oh_a, CV_MIN(oh_a + TH, p->OH), ow_a, CV_MIN(ow_a + TW, p->OW), k_a,
         CV_MIN(k_a + TK, p->K));
}

void conv2d(int C, int H, int W, int K, int R, int S, int STRIDE, int PAD,
            const float *restrict input, const float *restrict weight, float *restrict output) {
    if (C < 1 || H < 1 || W < 1 || K < 1 || R < 1 || S < 1 || STRIDE < 1 || PAD < 0) return;
    if (H + 2 * PAD < R || W + 2 * PAD < S) return;
    const conv_t p = {C, H, W, K, R, S, STRIDE, PAD,
                      (H + 2 * PAD - R) / STRIDE + 1, (W + 2 * PAD - S) / STRIDE + 1,
                      input, weight, output};
    const int tiles_k = (K + TK - 1) / TK, tiles_w = (p.OW + TW - 1) / TW;
    const int tiles = ((p.OH + TH - 1) / TH) * tiles_w * tiles_k;
#if THREADS > 1
    /* A single tile runs without entering (or paying for) a parallel region. */
    if (tiles > 1) {
#pragma omp parallel for num_threads(THREADS) schedule(static)
        for (int t = 0; t < tiles; t++) run_tile(&p, t, tiles_k, tiles_w);
        return;
    }
#endif
    for (int t = 0; t < tiles; t++) run_tile(&p, t, tiles_k, tiles_w);
}
