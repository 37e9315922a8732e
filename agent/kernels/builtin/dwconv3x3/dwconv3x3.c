/*
 * edgetune built-in kernel: fp32 depthwise 3x3 convolution (MobileNet style: one 3x3
 * filter per channel, no channel mixing), batch 1, NHWC, zero padding 1, stride
 * STRIDE (1 or 2 in real networks; any >= 1 works):
 *
 *   output[oh][ow][c] = sum over r, s < 3 of
 *       input[oh*STRIDE - 1 + r][ow*STRIDE - 1 + s][c] * weight[r][s][c]
 *
 * with taps outside the H x W image reading as zero, and
 *   OH = (H - 1) / STRIDE + 1,  OW = (W - 1) / STRIDE + 1.
 * Layouts: input [H][W][C], weight [3][3][C] (TFLite's 1x3x3xC depthwise filter),
 * output [OH][OW][C]. No bias, no activation. The output is overwritten.
 *
 * Why NHWC: it is the layout of the edge runtimes (TFLite, CMSIS-NN, XNNPACK), and with
 * channels contiguous the SIMD lanes run over c with contiguous loads of input, weight
 * and output alike, whatever the stride (NCHW would vectorize along a row and need
 * strided gathers at stride 2, plus 9 scalar weights per vector).
 *
 * Any C, H, W, STRIDE >= 1 is valid. Tiles that do not divide an extent are cut short,
 * unroll/vector remainders run through narrower code, and border pixels clip their taps
 * to the image, so nothing outside input, weight or output is ever touched.
 *
 * Tuning macros (all set with -D; defaults below apply only when one is missing).
 * Every ORDER x VEC in {1,4,8,16} x UNROLL in {1,2,4,8} x THREADS in {1,2,4} compiles
 * warning-free (-Wall -Wextra) for -march=native (AVX-512), x86-64 and x86-64-v3; every
 * configuration kernel.toml allows was checked against the reference at the small and
 * small_s2 shapes (native), and random ones at odd shapes (STRIDE 3, 2x1 image) and for
 * x86-64 / x86-64-v3.
 *   TC, TH, TW  tile: channels x output rows x output columns (>= 1). Tiles are the unit
 *               of parallel work and of cache blocking (the input rows a tile reads,
 *               (TH*STRIDE+2) x (TW*STRIDE+2) x TC floats, are reused across its taps).
 *   UNROLL      1..16, output pixels of a row accumulated together in registers by
 *               pc and cp (each weight vector serves UNROLL pixels). tap ignores it.
 *   VEC         explicit SIMD width in floats over channels (power of two, 1..32), GCC
 *               vector extensions with unaligned loads; 1 = no explicit vector code
 *               (GCC -O3 still auto-vectorizes the channel loop of tap). VEC wider than
 *               the target's registers is split by GCC: correct but slow.
 *   ORDER_x=1   loop order inside a tile, exactly one of:
 *                 ORDER_pc   pixel blocks outer, channel vectors inner: for each block
 *                            of UNROLL pixels (interior columns; the border columns run
 *                            one pixel at a time), for each vector of VEC channels, load
 *                            the 9 weight vectors and sum the 9 taps in registers;
 *                 ORDER_cp   channel vectors outer: the 9 weight vectors of one channel
 *                            vector are loaded once and stay in registers while every
 *                            pixel block of the tile streams past (input reads stride
 *                            C floats from pixel to pixel);
 *                 ORDER_tap  the plain loop: for each output pixel, zero its channels,
 *                            then for each tap inside the image add input * weight into
 *                            the output row in memory (one pass over c per tap).
 *   THREADS     OpenMP threads over tiles (static schedule); 1, or a single tile, = no
 *               parallel region at all.
 *
 * Pointless combinations (they compile and are correct, but waste the search; kernel.toml
 * constrains them away):
 *   - tap with UNROLL > 1: identical code to UNROLL = 1.
 *   - pc/cp with VEC = 1: one scalar channel per register block, far behind VEC >= 4.
 *   - TC not a multiple of VEC leaves the vector path partly unused: TC % VEC == 0.
 *   - pc/cp with TW < UNROLL only ever run single-pixel code: TW % UNROLL == 0.
 *   - cp holds 9 weight vectors + UNROLL accumulators: UNROLL 8 spills on 16-register
 *     (SSE/AVX2) targets.
 *   - THREADS > 1 with a single tile runs on one thread.
 */
#include <stddef.h>
#include <string.h>

#ifndef TC
#define TC 64
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
#if !defined(ORDER_pc) && !defined(ORDER_cp) && !defined(ORDER_tap)
#define ORDER_tap 1
#endif

#if (TC < 1) || (TH < 1) || (TW < 1)
#error "TC, TH and TW must be >= 1"
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
#if defined(ORDER_pc) + defined(ORDER_cp) + defined(ORDER_tap) != 1
#error "define exactly one of ORDER_pc, ORDER_cp, ORDER_tap"
#endif

#define DW_MIN(a, b) ((a) < (b) ? (a) : (b))
#define DW_MAX(a, b) ((a) > (b) ? (a) : (b))
#define INLINE static inline __attribute__((always_inline))

#if VEC > 1
typedef float vf __attribute__((vector_size(VEC * sizeof(float))));
/* Unaligned load/store; macros, not functions, so no vector crosses a call ABI. */
#define vload(p) __extension__({ vf v_; memcpy(&v_, (p), sizeof v_); v_; })
#define vstore(p, v) do { vf w_ = (v); memcpy((p), &w_, sizeof w_); } while (0)
#endif

/* The problem, shared by every tile. */
typedef struct {
    int C, H, W, stride, OH, OW;
    const float *in, *wt;
    float *out;
} dw_t;

/* The taps of one output pixel (or of a block of pixels) that fall inside the image:
 * filter rows r_lo..r_lo+nr-1, filter columns s_lo..s_lo+ns-1; x = &input[first valid
 * row][first valid column][0]. nr or ns may be 0 (then x is not to be used). */
typedef struct {
    int r_lo, nr, s_lo, ns;
    const float *x;
} taps_t;

/* Rows for output row oh (the same for every pixel of the row). */
INLINE void row_taps(const dw_t *p, int oh, int *r_lo, int *nr, int *ih) {
    const int ih0 = oh * p->stride - 1;
    *r_lo = DW_MAX(0, -ih0);
    *nr = DW_MAX(0, DW_MIN(3, p->H - ih0) - *r_lo);
    *ih = ih0 + *r_lo;
}

/* Taps of pixel (oh, ow) alone, columns clipped to the image. */
INLINE taps_t pixel_taps(const dw_t *p, int r_lo, int nr, int ih, int ow) {
    taps_t t;
    const int iw0 = ow * p->stride - 1;
    t.r_lo = r_lo;
    t.s_lo = DW_MAX(0, -iw0);
    t.ns = DW_MAX(0, DW_MIN(3, p->W - iw0) - t.s_lo);
    t.nr = t.ns > 0 ? nr : 0;
    t.x = t.nr > 0 ? p->in + ((size_t)ih * p->W + iw0 + t.s_lo) * p->C : p->in;
    return t;
}

#if defined(ORDER_pc) || defined(ORDER_cp)

/*
 * Register micro-kernels: P output pixels (UNROLL or 1, consecutive in a row), one
 * vector of VEC channels (micro_v) or one channel (micro_s) at channel c. wk[9] holds
 * the 3x3 weights of those channels; t gives the taps (shared by all P pixels); pixel u
 * reads xpix floats further than pixel 0. o = &output[pixel 0][c].
 */
#if VEC > 1
INLINE void micro_v(int P, taps_t t, int c, ptrdiff_t xpix, ptrdiff_t xrow, int C,
                    const vf wk[9], float *restrict o) {
    vf acc[UNROLL];
    for (int u = 0; u < P; u++) acc[u] = (vf){0};
    for (int r = 0; r < t.nr; r++)
        for (int s = 0; s < t.ns; s++) {
            const vf w = wk[(t.r_lo + r) * 3 + t.s_lo + s];
            const float *x = t.x + r * xrow + (ptrdiff_t)s * C + c;
            for (int u = 0; u < P; u++) acc[u] += vload(x + u * xpix) * w;
        }
    for (int u = 0; u < P; u++) vstore(o + (size_t)u * C, acc[u]);
}

INLINE void load_weights_v(const dw_t *p, int c, vf wk[9]) {
    for (int i = 0; i < 9; i++) wk[i] = vload(p->wt + (size_t)i * p->C + c);
}
#endif

INLINE void micro_s(int P, taps_t t, int c, ptrdiff_t xpix, ptrdiff_t xrow, int C,
                    const float wk[9], float *restrict o) {
    float acc[UNROLL];
    for (int u = 0; u < P; u++) acc[u] = 0.0f;
    for (int r = 0; r < t.nr; r++)
        for (int s = 0; s < t.ns; s++) {
            const float w = wk[(t.r_lo + r) * 3 + t.s_lo + s];
            const float *x = t.x + r * xrow + (ptrdiff_t)s * C + c;
            for (int u = 0; u < P; u++) acc[u] += x[u * xpix] * w;
        }
    for (int u = 0; u < P; u++) o[(size_t)u * C] = acc[u];
}

INLINE void load_weights_s(const dw_t *p, int c, float wk[9]) {
    for (int i = 0; i < 9; i++) wk[i] = p->wt[(size_t)i * p->C + c];
}

/*
 * P pixels of row oh from column ow, channel (vector) c. A block whose taps all fall
 * inside the image columns runs as one call with all 3 filter columns (constant, so
 * fully unrolled); otherwise each pixel runs alone with its taps clipped.
 */
#define PIXEL_BLOCK(MICRO, P, c, wk)                                                       \
    do {                                                                                   \
        const int st_ = p->stride, C_ = p->C;                                              \
        const ptrdiff_t xrow_ = (ptrdiff_t)p->W * C_;                                      \
        float *o_ = p->out + ((size_t)oh * p->OW + ow) * C_ + (c);                         \
        const int iw0_ = ow * st_ - 1;                                                     \
        if (nr > 0 && iw0_ >= 0 && (ow + (P)-1) * st_ + 2 <= p->W) {                       \
            taps_t t_ = {r_lo, nr, 0, 3, p->in + ((size_t)ih * p->W + iw0_) * C_};         \
            MICRO(P, t_, c, (ptrdiff_t)st_ * C_, xrow_, C_, wk, o_);                       \
        } else {                                                                           \
            for (int u_ = 0; u_ < (P); u_++)                                               \
                MICRO(1, pixel_taps(p, r_lo, nr, ih, ow + u_), c, 0, xrow_, C_, wk,        \
                      o_ + (size_t)u_ * C_);                                               \
        }                                                                                  \
    } while (0)

/*
 * Split the tile's columns [ow_a, ow_b) at the image border: columns before *lo and from
 * *hi on have taps in the left/right padding and run one pixel at a time; [*lo, *hi) is
 * interior and runs in blocks of UNROLL (so the left border pixel never breaks a block).
 */
INLINE void interior_columns(const dw_t *p, int ow_a, int ow_b, int *lo, int *hi) {
    const int first = 1;                                  /* ow*st - 1 >= 0 */
    const int end = p->W < 2 ? 0 : (p->W - 2) / p->stride + 1; /* ow*st + 2 <= W below it */
    *lo = DW_MIN(DW_MAX(first, ow_a), ow_b);
    *hi = DW_MAX(DW_MIN(end, ow_b), *lo);
}

#if defined(ORDER_pc)

/* All channels of [c_a, c_b) for P pixels of row oh from column ow. */
INLINE void channels(const dw_t *p, int oh, int r_lo, int nr, int ih, int ow, int P, int c_a,
                     int c_b) {
    int c = c_a;
#if VEC > 1
    for (; c + VEC <= c_b; c += VEC) {
        vf wk[9];
        load_weights_v(p, c, wk);
        PIXEL_BLOCK(micro_v, P, c, wk);
    }
#endif
    for (; c < c_b; c++) {
        float wk[9];
        load_weights_s(p, c, wk);
        PIXEL_BLOCK(micro_s, P, c, wk);
    }
}

INLINE void tile(const dw_t *p, int oh_a, int oh_b, int ow_a, int ow_b, int c_a, int c_b) {
    int lo, hi;
    interior_columns(p, ow_a, ow_b, &lo, &hi);
    for (int oh = oh_a; oh < oh_b; oh++) {
        int r_lo, nr, ih;
        row_taps(p, oh, &r_lo, &nr, &ih);
        int ow = ow_a;
        for (; ow < lo; ow++) channels(p, oh, r_lo, nr, ih, ow, 1, c_a, c_b);
        for (; ow + UNROLL <= hi; ow += UNROLL) channels(p, oh, r_lo, nr, ih, ow, UNROLL, c_a, c_b);
        for (; ow < ow_b; ow++) channels(p, oh, r_lo, nr, ih, ow, 1, c_a, c_b);
    }
}

#else /* ORDER_cp */

/* Every pixel of the tile for channel (vector) c, weights wk kept in registers. */
#define ALL_PIXELS(MICRO, c, wk)                                                           \
    for (int oh = oh_a; oh < oh_b; oh++) {                                                 \
        int r_lo, nr, ih;                                                                  \
        row_taps(p, oh, &r_lo, &nr, &ih);                                                  \
        int ow = ow_a;                                                                     \
        for (; ow < lo; ow++) PIXEL_BLOCK(MICRO, 1, c, wk);                               \
        for (; ow + UNROLL <= hi; ow += UNROLL) PIXEL_BLOCK(MICRO, UNROLL, c, wk);        \
        for (; ow < ow_b; ow++) PIXEL_BLOCK(MICRO, 1, c, wk);                             \
    }

INLINE void tile(const dw_t *p, int oh_a, int oh_b, int ow_a, int ow_b, int c_a, int c_b) {
    int lo, hi;
    interior_columns(p, ow_a, ow_b, &lo, &hi);
    int c = c_a;
#if VEC > 1
    for (; c + VEC <= c_b; c += VEC) {
        vf wk[9];
        load_weights_v(p, c, wk);
        ALL_PIXELS(micro_v, c, wk)
    }
#endif
    for (; c < c_b; c++) {
        float wk[9];
        load_weights_s(p, c, wk);
        ALL_PIXELS(micro_s, c, wk)
    }
}

#endif

#else /* ORDER_tap */

/* o[0..n) += x[0..n) * w[0..n) */
INLINE void axpy(int n, const float *restrict x, const float *restrict w, float *restrict o) {
    int c = 0;
#if VEC > 1
    for (; c + VEC <= n; c += VEC) vstore(o + c, vload(o + c) + vload(x + c) * vload(w + c));
#endif
    for (; c < n; c++) o[c] += x[c] * w[c];
}

INLINE void tile(const dw_t *p, int oh_a, int oh_b, int ow_a, int ow_b, int c_a, int c_b) {
    const int C = p->C, nc = c_b - c_a;
    for (int oh = oh_a; oh < oh_b; oh++) {
        int r_lo, nr, ih;
        row_taps(p, oh, &r_lo, &nr, &ih);
        for (int ow = ow_a; ow < ow_b; ow++) {
            float *o = p->out + ((size_t)oh * p->OW + ow) * C + c_a;
            memset(o, 0, (size_t)nc * sizeof(float));
            const taps_t t = pixel_taps(p, r_lo, nr, ih, ow);
            for (int r = 0; r < t.nr; r++)
                for (int s = 0; s < t.ns; s++)
                    axpy(nc, t.x + ((ptrdiff_t)r * p->W + s) * C + c_a,
                         p->wt + (size_t)((t.r_lo + r) * 3 + t.s_lo + s) * C + c_a, o);
        }
    }
}

#endif /* ORDER */

/* Tile number t: channel tiles vary fastest, then column tiles, then row tiles. */
INLINE void run_tile(const dw_t *p, int t, int tiles_c, int tiles_w) {
    const int ct = t % tiles_c, wt = (t / tiles_c) % tiles_w, ht = t / tiles_c / tiles_w;
    const int oh_a = ht * TH, ow_a = wt * TW, c_a = ct * TC;
    tile(p, oh_a, DW_MIN(oh_a + TH, p->OH), ow_a, DW_MIN(ow_a + TW, p->OW), c_a,
         DW_MIN(c_a + TC, p->C));
}

void dwconv3x3(int C, int H, int W, int STRIDE, const float *restrict input,
               const float *restrict weight, float *restrict output) {
    if (C < 1 || H < 1 || W < 1 || STRIDE < 1) return;
    const dw_t p = {C, H, W, STRIDE, (H - 1) / STRIDE + 1, (W - 1) / STRIDE + 1,
                    input, weight, output};
    const int tiles_c = (C + TC - 1) / TC, tiles_w = (p.OW + TW - 1) / TW;
    const int tiles = ((p.OH + TH - 1) / TH) * tiles_w * tiles_c;
#if THREADS > 1
    /* A single tile runs without entering (or paying for) a parallel region. */
    if (tiles > 1) {
#pragma omp parallel for num_threads(THREADS) schedule(static)
        for (int t = 0; t < tiles; t++) run_tile(&p, t, tiles_c, tiles_w);
        return;
    }
#endif
    for (int t = 0; t < tiles; t++) run_tile(&p, t, tiles_c, tiles_w);
}
