// The block-quantization pipeline as one fused CUDA kernel.
//
// A CTA owns a tile of MCUs of one image. It reads the tile's pixels once, converts colour and
// subsamples chroma into float planes in shared memory, runs DCT -> quantize -> dequantize -> IDCT
// on every 8x8 block there (three separable 1-D passes, rows padded against bank conflicts), then
// upsamples chroma, converts colour back, clamps, rounds and writes each pixel once.
//
// libjpeg's "fancy" chroma upsampling reads one chroma sample beyond the tile on every side. Each
// CTA therefore also transforms a ring of one MCU of chroma around its tile (chroma only: luma needs
// no neighbours). That costs some recomputation but keeps the kernel single-pass with no global
// intermediate: a two-kernel design would write and re-read the chroma planes as floats (2 extra
// bytes per pixel each way for 4:2:0, more than the 6 bytes/pixel a uint8 image moves in all),
// while the ring's pixel reads are those the neighbouring CTAs read at about the same time, so
// they mostly hit L2. Tiles are up to 128 x 64 pixels, so the ring adds ~30% chroma work.
// Without subsampling there is no ring at all.
//
// The arithmetic is that of the CPU core (csrc/kernels.hpp), operation for operation and in the
// same order, compiled without FMA contraction (--fmad=false), so both give the same numbers.
//
// The per-tile code is __host__ __device__: emulate_on_host() runs it on the CPU, tile after tile,
// so that its logic is tested where no GPU is present.
#include "fdjpeg_cuda.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>
#include <vector>

#ifdef __CUDA_ARCH__
#define FDJPEG_BARRIER() __syncthreads()
#else
#define FDJPEG_BARRIER() ((void)0)
#endif
#define FDJPEG_HD __host__ __device__ __forceinline__

namespace fdjpeg {
namespace cuda {
namespace {

constexpr int kThreads = 256;      // threads per CTA
constexpr int kMaxTileWidth = 128;  // luma pixels
constexpr int kMaxTileHeight = 64;

// Orthonormal 8-point DCT-II basis as the CPU core holds it: even[m][k] = basis[2m][k],
// odd[m][k] = basis[2m+1][k], k < 4.
struct DctBasis {
  float even[4][4];
  float odd[4][4];
};

struct Geometry {
  int64_t height = 0, width = 0, channels = 0;
  int components = 1;  // planes through the DCT: 1 (grey) or 3
  bool ycbcr = false;
  int hf = 1, vf = 1;  // chroma subsampling factors
  int64_t padded_height = 0, padded_width = 0;
  int64_t chroma_height = 0, chroma_width = 0;  // real chroma extent (edges of upsampling)
  float shift = 0.f;
  bool integer_samples = false;  // 8-bit images: whole-number samples between stages, as libjpeg
  int ring = 0;  // chroma samples transformed around a tile on each side (0 or 8)
  int tile_height = 0, tile_width = 0;  // luma pixels, whole MCUs
  int64_t tiles_x = 0, tiles_per_image = 0;
  int luma_stride = 0, chroma_stride = 0, chroma_rows = 0;  // shared-memory planes
};

struct KernelArgs {
  const void* in = nullptr;
  void* out = nullptr;
  int64_t in_stride[4] = {0, 0, 0, 0};  // elements: image, row, column, channel
  int64_t out_stride[4] = {0, 0, 0, 0};
  Geometry g;
  DctBasis basis;
  float tables[3][192];  // table set 0 (steps, reciprocal steps, dequantization steps), no block_map
  const float* sets = nullptr;  // K x 3 x 192 (steps, reciprocals, dequantization), with block_map
  const uint8_t* block_map = nullptr;  // N x block_rows x block_cols, one set per luma block
  int64_t block_rows = 0, block_cols = 0;
  int passes = 1;  // passes run inside one launch (only without a ring: tiles are independent)
};

// The tile a CTA owns, and where its planes live in shared memory.
struct Tile {
  int64_t image = 0;
  int64_t y0 = 0, x0 = 0;   // luma origin (padded coordinates)
  int h = 0, w = 0;         // luma extent
  int64_t cy0 = 0, cx0 = 0; // chroma region origin, ring included (chroma coordinates)
  int ch = 0, cw = 0;       // chroma region extent
  float* plane[3] = {nullptr, nullptr, nullptr};
  int stride[3] = {0, 0, 0};
  float* tables = nullptr;  // 576 floats: set 0's steps, reciprocal steps, dequantization steps
  float* sums = nullptr;    // 16 floats per block in flight: row sums for the rational coefficients

  // Selects instead of indexing, so that the arrays stay in registers on the GPU.
  FDJPEG_HD float* plane_of(int comp) const {
    return comp == 0 ? plane[0] : (comp == 1 ? plane[1] : plane[2]);
  }
  FDJPEG_HD int stride_of(int comp) const { return comp == 0 ? stride[0] : stride[1]; }
};

FDJPEG_HD int64_t min64(int64_t a, int64_t b) { return b < a ? b : a; }
FDJPEG_HD int64_t max64(int64_t a, int64_t b) { return a < b ? b : a; }

// ---------------------------------------------------------------------------------------------
// Sample conversion: as csrc/kernels.hpp.

template <class T>
FDJPEG_HD float load_sample(const T* p) {
  return static_cast<float>(*p) * 255.f;
}
template <>
FDJPEG_HD float load_sample<uint8_t>(const uint8_t* p) {
  return static_cast<float>(*p);
}
template <class T>
FDJPEG_HD void store_sample(T* p, float v) {
  *p = static_cast<T>(v * (1.f / 255.f));
}
template <>
FDJPEG_HD void store_sample<uint8_t>(uint8_t* p, float v) {
  *p = static_cast<uint8_t>(v + 0.5f);
}

// std::min(std::max(v, 0.f), 255.f), NaN behaviour included.
FDJPEG_HD float clamp255(float v) {
  const float lo = v < 0.f ? 0.f : v;
  return 255.f < lo ? 255.f : lo;
}

FDJPEG_HD float round_even(float v) {
  const float magic = 12582912.f;  // 1.5 * 2^23
  return (v + magic) - magic;
}

FDJPEG_HD float as_sample(float v, bool integer) { return integer ? round_even(v) : v; }

// ---------------------------------------------------------------------------------------------
// 1-D transforms of 8 values (stride `step` in shared memory or registers).

FDJPEG_HD void forward_dct8(const DctBasis& b, const float* src, float* dst) {
  float sum[4], dif[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    sum[k] = src[k] + src[7 - k];
    dif[k] = src[k] - src[7 - k];
  }
#pragma unroll
  for (int m = 0; m < 4; ++m) {
    float e = b.even[m][0] * sum[0];
    float o = b.odd[m][0] * dif[0];
#pragma unroll
    for (int k = 1; k < 4; ++k) {
      e += b.even[m][k] * sum[k];
      o += b.odd[m][k] * dif[k];
    }
    dst[2 * m] = e;
    dst[2 * m + 1] = o;
  }
}

FDJPEG_HD void inverse_dct8(const DctBasis& b, const float* src, float* dst) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    float e = b.even[0][k] * src[0];
    float o = b.odd[0][k] * src[1];
#pragma unroll
    for (int m = 1; m < 4; ++m) {
      e += b.even[m][k] * src[2 * m];
      o += b.odd[m][k] * src[2 * m + 1];
    }
    dst[k] = e + o;
    dst[7 - k] = e - o;
  }
}

// ---------------------------------------------------------------------------------------------
// The tile.

FDJPEG_HD Tile make_tile(const KernelArgs& a, int64_t index, float* smem) {
  const Geometry& g = a.g;
  Tile t;
  t.image = index / g.tiles_per_image;
  const int64_t within = index % g.tiles_per_image;
  t.y0 = (within / g.tiles_x) * g.tile_height;
  t.x0 = (within % g.tiles_x) * g.tile_width;
  t.h = static_cast<int>(min64(g.tile_height, g.padded_height - t.y0));
  t.w = static_cast<int>(min64(g.tile_width, g.padded_width - t.x0));
  t.plane[0] = smem;
  t.stride[0] = g.luma_stride;
  float* next = smem + g.tile_height * g.luma_stride;
  if (g.components == 3) {
    t.cy0 = max64(0, t.y0 / g.vf - g.ring);
    t.cx0 = max64(0, t.x0 / g.hf - g.ring);
    t.ch = static_cast<int>(min64((t.y0 + t.h) / g.vf + g.ring, g.padded_height / g.vf) - t.cy0);
    t.cw = static_cast<int>(min64((t.x0 + t.w) / g.hf + g.ring, g.padded_width / g.hf) - t.cx0);
    for (int c = 1; c < 3; ++c) {
      t.plane[c] = next;
      t.stride[c] = g.chroma_stride;
      next += g.chroma_rows * g.chroma_stride;
    }
  } else {  // grey: the "region" loop below walks the tile's pixels
    t.cy0 = t.y0;
    t.cx0 = t.x0;
    t.ch = t.h;
    t.cw = t.w;
  }
  t.tables = next;
  t.sums = next + 576;
  return t;
}

// Phase 1, one item: the hf x vf pixels under one chroma sample of the region (one pixel without
// subsampling): read, convert colour, average chroma; luma is kept only inside the tile.
template <class T>
FDJPEG_HD void load_cell(const KernelArgs& a, const Tile& t, const T* src, const int64_t* ss,
                         int item) {
  const Geometry& g = a.g;
  const int ry = item / t.cw, rx = item % t.cw;
  if (g.components == 1) {
    const int64_t y = min64(t.cy0 + ry, g.height - 1), x = min64(t.cx0 + rx, g.width - 1);
    t.plane[0][ry * t.stride[0] + rx] = load_sample(src + y * ss[0] + x * ss[1]);
    return;
  }
  float cb_sum = 0.f, cr_sum = 0.f;
  for (int dy = 0; dy < g.vf; ++dy)
    for (int dx = 0; dx < g.hf; ++dx) {
      const int64_t y = (t.cy0 + ry) * g.vf + dy, x = (t.cx0 + rx) * g.hf + dx;
      const T* px = src + min64(y, g.height - 1) * ss[0] + min64(x, g.width - 1) * ss[1];
      const float r0 = load_sample(px), g0 = load_sample(px + ss[2]),
                  b0 = load_sample(px + 2 * ss[2]);
      float luma = r0, cb = g0, cr = b0;
      if (g.ycbcr) {
        const bool integer = g.integer_samples;
        luma = as_sample(0.299f * r0 + 0.587f * g0 + 0.114f * b0, integer);
        cb = as_sample(-0.168735892f * r0 - 0.331264108f * g0 + 0.5f * b0 + 128.f, integer);
        cr = as_sample(0.5f * r0 - 0.418687589f * g0 - 0.081312411f * b0 + 128.f, integer);
      }
      const int64_t ly = y - t.y0, lx = x - t.x0;
      if (ly >= 0 && ly < t.h && lx >= 0 && lx < t.w)
        t.plane[0][ly * t.stride[0] + lx] = luma;
      // Same summation order as the CPU: ((top-left + top-right) + bottom-left) + bottom-right.
      cb_sum = (dy | dx) ? cb_sum + cb : cb;
      cr_sum = (dy | dx) ? cr_sum + cr : cr;
    }
  if (g.hf * g.vf > 1) {
    const float norm = 1.f / static_cast<float>(g.hf * g.vf);
    cb_sum = as_sample(cb_sum * norm, g.integer_samples);
    cr_sum = as_sample(cr_sum * norm, g.integer_samples);
  }
  t.plane[1][ry * t.stride[1] + rx] = cb_sum;
  t.plane[2][ry * t.stride[2] + rx] = cr_sum;
}

// One 8x8 block of the tile's planes, as the transform stages see it.
struct BlockRef {
  float* origin;   // top-left sample in shared memory
  int stride;
  int comp;
  int64_t row, col;  // block position in its whole (padded) plane
};

// Items of the transform passes are (block, line) pairs, 8 per block: luma blocks first, then the
// blocks of each chroma plane. Eight consecutive threads work on one block.
FDJPEG_HD int block_count(const KernelArgs& a, const Tile& t) {
  const int luma = (t.h / 8) * (t.w / 8);
  return a.g.components == 3 ? luma + 2 * (t.ch / 8) * (t.cw / 8) : luma;
}

FDJPEG_HD BlockRef block_ref(const Tile& t, int b) {
  const int luma = (t.h / 8) * (t.w / 8);
  BlockRef r;
  int cols;
  int64_t row0, col0;
  if (b < luma) {
    r.comp = 0;
    cols = t.w / 8;
    row0 = t.y0 / 8;
    col0 = t.x0 / 8;
  } else {
    b -= luma;
    const int per_plane = (t.ch / 8) * (t.cw / 8);
    r.comp = 1 + b / per_plane;
    b %= per_plane;
    cols = t.cw / 8;
    row0 = t.cy0 / 8;
    col0 = t.cx0 / 8;
  }
  const int by = b / cols, bx = b % cols;
  r.stride = t.stride_of(r.comp);
  r.origin = t.plane_of(r.comp) + by * 8 * r.stride + bx * 8;
  r.row = row0 + by;
  r.col = col0 + bx;
  return r;
}

// Coefficients (0,0), (0,4), (4,0), (4,4) are (1/8) x +-1-weighted sums of the block; the CPU core
// computes them exactly that way (whole-number blocks hit exact rounding ties on them), and so do
// we, in the same order: per row first, then over the rows.
// Signs of basis row 4 (up to sqrt(1/8)): + - - + + - - +.
FDJPEG_HD float sign4(int i) { return ((i + 1) & 2) ? -1.f : 1.f; }

// Stage 1: plain and alternating sums of (level-shifted) row `y` into sums[y], sums[8 + y].
FDJPEG_HD void row_sums(const KernelArgs& a, const BlockRef& r, int y, float* sums) {
  const float* line = r.origin + y * r.stride;
  float plain = 0.f, alternating = 0.f;
  for (int x = 0; x < 8; ++x) {
    const float v = line[x] - a.g.shift;
    plain += v;
    alternating += sign4(x) * v;
  }
  sums[y] = plain;
  sums[8 + y] = alternating;
}

// Stage 2: level shift and forward DCT down column `x` of a block.
FDJPEG_HD void forward_column(const KernelArgs& a, const BlockRef& r, int x) {
  float v[8], c[8];
  for (int y = 0; y < 8; ++y) v[y] = r.origin[y * r.stride + x] - a.g.shift;
  forward_dct8(a.basis, v, c);
  for (int u = 0; u < 8; ++u) r.origin[u * r.stride + x] = c[u];
}

// Stage 3: forward DCT along row `u`, quantize / dequantize, inverse DCT along the row.
// round(coef / Qc) * Qd: multiplying by 1/Qc, except for the four rational coefficients, which
// are divided exactly (as the CPU core does).
FDJPEG_HD void quantize_row(const KernelArgs& a, const Tile& t, const BlockRef& r, int u,
                            const float* sums) {
  const float* table = t.tables;
  if (a.block_map) {
    // Chroma blocks of a subsampled plane take the choice of the luma block at their corner.
    const int hf = r.comp ? a.g.hf : 1, vf = r.comp ? a.g.vf : 1;
    const int64_t set = a.block_map[(t.image * a.block_rows + r.row * vf) * a.block_cols + r.col * hf];
    table = a.sets + set * 576;
  }
  const float* q = table + r.comp * 64 + u * 8;
  const float* iq = q + 192;
  const float* dq = q + 384;
  float* line = r.origin + u * r.stride;
  float v[8], c[8];
  for (int i = 0; i < 8; ++i) v[i] = line[i];
  forward_dct8(a.basis, v, c);
  const bool rational = (u & 3) == 0;
  if (rational) {
    float plain = 0.f, alternating = 0.f;
    for (int y = 0; y < 8; ++y) {
      const float w = u == 0 ? 1.f : sign4(y);
      plain += w * sums[y];
      alternating += w * sums[8 + y];
    }
    c[0] = plain * 0.125f;
    c[4] = alternating * 0.125f;
  }
  for (int i = 0; i < 8; ++i) {
    const bool divide = rational && (i & 3) == 0;
    c[i] = round_even(divide ? c[i] / q[i] : c[i] * iq[i]) * dq[i];
  }
  inverse_dct8(a.basis, c, v);
  for (int i = 0; i < 8; ++i) line[i] = v[i];
}

// Stage 4: inverse DCT down column `x`, undo the level shift, clamp.
FDJPEG_HD void inverse_column(const KernelArgs& a, const BlockRef& r, int x) {
  float c[8], v[8];
  for (int u = 0; u < 8; ++u) c[u] = r.origin[u * r.stride + x];
  inverse_dct8(a.basis, c, v);
  for (int y = 0; y < 8; ++y)
    r.origin[y * r.stride + x] = as_sample(clamp255(v[y] + a.g.shift), a.g.integer_samples);
}

// libjpeg's fancy upsampling at pixel (y, x) from a chroma plane held for the region of `t`
// (as upsample_row() of the CPU core: same terms, same order).
FDJPEG_HD float upsample(const Geometry& g, const Tile& t, int comp, int64_t y, int64_t x) {
  const float* p = t.plane_of(comp);
  const int s = t.stride_of(comp);
  const int64_t cw = g.chroma_width, ch = g.chroma_height;
  const int64_t i = y / g.vf;
  const float* near = p + (i - t.cy0) * s - t.cx0;  // indexed by global chroma column
  if (cw <= 2) return near[x / g.hf];
  const float* far = near;
  if (g.vf == 2) {
    const int64_t j = (y & 1) ? min64(i + 1, ch - 1) : max64(i - 1, 0);
    far = p + (j - t.cy0) * s - t.cx0;
  }
  auto vertical = [&](int64_t c) { return g.vf == 2 ? 3.f * near[c] + far[c] : 4.f * near[c]; };
  if (g.hf == 1) return as_sample(vertical(x) * 0.25f, g.integer_samples);
  const int64_t c = x >> 1;
  const int64_t f = (x & 1) ? min64(c + 1, cw - 1) : max64(c - 1, 0);
  return as_sample((3.f * vertical(c) + vertical(f)) * 0.0625f, g.integer_samples);
}

// Phase 3, one item: one pixel of the tile inside the real image.
template <class T>
FDJPEG_HD void store_pixel(const KernelArgs& a, const Tile& t, const T* src, const int64_t* ss,
                           T* dst, int item, int out_width) {
  const Geometry& g = a.g;
  const int ly = item / out_width, lx = item % out_width;
  const int64_t y = t.y0 + ly, x = t.x0 + lx;
  const int64_t* os = a.out_stride + 1;
  T* px = dst + y * os[0] + x * os[1];
  const float luma = t.plane[0][ly * t.stride[0] + lx];
  if (g.components == 1) {
    store_sample(px, luma);
    return;
  }
  float c1, c2;
  if (g.hf * g.vf > 1) {
    c1 = upsample(g, t, 1, y, x);
    c2 = upsample(g, t, 2, y, x);
  } else {
    c1 = t.plane[1][(y - t.cy0) * t.stride[1] + (x - t.cx0)];
    c2 = t.plane[2][(y - t.cy0) * t.stride[2] + (x - t.cx0)];
  }
  float r0 = luma, g0 = c1, b0 = c2;
  if (g.ycbcr) {
    const float cb = c1 - 128.f, cr = c2 - 128.f;
    r0 = clamp255(luma + 1.402f * cr);
    g0 = clamp255(luma - 0.344136286f * cb - 0.714136286f * cr);
    b0 = clamp255(luma + 1.772f * cb);
  }
  store_sample(px, r0);
  store_sample(px + os[2], g0);
  store_sample(px + 2 * os[2], b0);
  if (g.channels == 4) px[3 * os[2]] = src[y * ss[0] + x * ss[1] + 3 * ss[2]];  // alpha as is
}

// Phase 2: the transform stages 1-4 over every 8x8 block of the tile. Items are (block, line)
// pairs; a block's 8 items go to 8 consecutive lanes of one warp, so on the GPU the stages only
// need warp barriers between them, and the row sums of the blocks in flight need 16 floats per
// block (one slot per 8 threads). On the host the stages run one after the other over all items.
FDJPEG_HD void transform_blocks(const KernelArgs& a, const Tile& t, int tid, int threads) {
  const int lines = block_count(a, t) * 8;
#ifdef __CUDA_ARCH__
  float* sums = t.sums + (tid >> 3) * 16;
  const int rounded = (lines + 31) & ~31;  // whole warps take part in every __syncwarp
  for (int i = tid; i < rounded; i += threads) {
    const bool live = i < lines;
    const BlockRef r = block_ref(t, live ? i >> 3 : 0);
    const int line = i & 7;
    if (live) row_sums(a, r, line, sums);
    __syncwarp();
    if (live) forward_column(a, r, line);
    __syncwarp();
    if (live) quantize_row(a, t, r, line, sums);
    __syncwarp();
    if (live) inverse_column(a, r, line);
    __syncwarp();
  }
#else
  for (int i = tid; i < lines; i += threads) row_sums(a, block_ref(t, i >> 3), i & 7, t.sums + (i >> 3) * 16);
  for (int i = tid; i < lines; i += threads) forward_column(a, block_ref(t, i >> 3), i & 7);
  for (int i = tid; i < lines; i += threads)
    quantize_row(a, t, block_ref(t, i >> 3), i & 7, t.sums + (i >> 3) * 16);
  for (int i = tid; i < lines; i += threads) inverse_column(a, block_ref(t, i >> 3), i & 7);
#endif
}

// The whole work of one CTA. `tid` / `threads` split every phase's items; on the host the code
// runs with one "thread" (tid 0 of 1) and the barriers vanish, which gives the same result.
template <class T>
FDJPEG_HD void run_tile(const KernelArgs& a, int64_t index, float* smem, int tid, int threads) {
  const Geometry& g = a.g;
  const Tile t = make_tile(a, index, smem);
  if (!a.block_map)
    for (int i = tid; i < 576; i += threads) t.tables[i] = a.tables[i / 192][i % 192];
  T* dst = static_cast<T*>(a.out) + t.image * a.out_stride[0];
  const int cells = t.ch * t.cw;
  const int out_width = static_cast<int>(min64(t.w, g.width - t.x0));
  const int pixels = static_cast<int>(min64(t.h, g.height - t.y0)) * out_width;
  for (int pass = 0; pass < a.passes; ++pass) {
    // Later passes read what this CTA wrote (tiles are independent when a.passes > 1).
    const T* src = pass == 0 ? static_cast<const T*>(a.in) + t.image * a.in_stride[0] : dst;
    const int64_t* ss = pass == 0 ? a.in_stride + 1 : a.out_stride + 1;
    for (int i = tid; i < cells; i += threads) load_cell(a, t, src, ss, i);
    FDJPEG_BARRIER();
    transform_blocks(a, t, tid, threads);
    FDJPEG_BARRIER();
    for (int i = tid; i < pixels; i += threads) store_pixel(a, t, src, ss, dst, i, out_width);
    FDJPEG_BARRIER();
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) pipeline_kernel(const __grid_constant__ KernelArgs a) {
  extern __shared__ float smem[];
  run_tile<T>(a, blockIdx.x, smem, threadIdx.x, blockDim.x);
}

// ---------------------------------------------------------------------------------------------
// Host side: geometry, tiling, launch.

DctBasis make_basis() {  // as csrc/kernels.cpp, so both hold the same floats
  DctBasis b{};
  const double pi = 3.14159265358979323846;
  for (int u = 0; u < 8; ++u)
    for (int k = 0; k < 4; ++k) {
      const double scale = u == 0 ? std::sqrt(1.0 / 8.0) : 0.5;
      const float v = static_cast<float>(scale * std::cos((2 * k + 1) * u * pi / 16.0));
      if (u % 2 == 0)
        b.even[u / 2][k] = v;
      else
        b.odd[u / 2][k] = v;
    }
  return b;
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
int64_t ceil_div(int64_t v, int64_t m) { return (v + m - 1) / m; }

size_t element_size(DType d) { return d == DType::u8 ? 1 : (d == DType::f32 ? 4 : 8); }

// Tile extent along one axis: whole MCUs, at most `limit` pixels, tiles of even size.
int tile_extent(int64_t padded, int mcu, int limit) {
  const int64_t mcus = padded / mcu, per_tile_max = limit / mcu;
  const int64_t tiles = ceil_div(mcus, per_tile_max);
  return static_cast<int>(ceil_div(mcus, tiles) * mcu);
}

// A smem row stride of 1 (mod 32) floats: the 8 rows of a block fall in 8 different banks.
int padded_stride(int width) { return static_cast<int>(round_up(width, 32) + 1); }

struct Plan {
  KernelArgs args;
  int64_t tiles = 0;
  size_t smem_bytes = 0;
  size_t host_floats = 0;
  int launches = 1;  // passes that need one launch each (with a ring)
  std::vector<float> sets;  // K x 576 (steps, reciprocals, dequantization), with a block map
};

std::string check(const BatchView& in, const BatchView& out, const QuantSpec& spec) {
  std::ostringstream msg;
  if (!in.data || !out.data) return "null image buffer";
  if (in.dtype != out.dtype) return "input and output sample types differ";
  for (int d = 0; d < 4; ++d)
    if (in.shape[d] != out.shape[d]) return "input and output shapes differ";
  if (in.shape[0] < 1 || in.shape[1] < 1 || in.shape[2] < 1) {
    msg << "expected a non-empty batch of images, got N=" << in.shape[0] << " H=" << in.shape[1]
        << " W=" << in.shape[2];
    return msg.str();
  }
  if (in.shape[3] != 1 && in.shape[3] != 3 && in.shape[3] != 4) {
    msg << "expected 1, 3 or 4 channels, got " << in.shape[3];
    return msg.str();
  }
  if (spec.passes < 1) return "passes must be at least 1";
  if (spec.table_sets < 1 || spec.table_sets > 256) return "table_sets must be in 1..256";
  if (!spec.quant || !spec.dequant) return "missing quantization tables";
  for (int64_t i = 0; i < static_cast<int64_t>(spec.table_sets) * 192; ++i)
    if (!(spec.quant[i] >= 1e-3f && spec.quant[i] <= 65535.f) ||
        !(spec.dequant[i] >= 0.f && spec.dequant[i] <= 65535.f))
      return "quantization steps must lie in [0.001, 65535] (dequantization steps in [0, 65535])";
  return {};
}

std::string make_plan(const BatchView& in, const BatchView& out, const QuantSpec& spec, Plan& p) {
  std::string error = check(in, out, spec);
  if (!error.empty()) return error;
  KernelArgs& a = p.args;
  Geometry& g = a.g;
  g.height = in.shape[1];
  g.width = in.shape[2];
  g.channels = in.shape[3];
  g.components = g.channels == 1 ? 1 : 3;
  g.ycbcr = spec.color == Color::ycbcr && g.components == 3;
  if (g.ycbcr && spec.subsampling != Subsampling::s444) {
    g.hf = 2;
    g.vf = spec.subsampling == Subsampling::s420 ? 2 : 1;
  }
  g.padded_height = round_up(g.height, 8 * g.vf);
  g.padded_width = round_up(g.width, 8 * g.hf);
  g.chroma_height = ceil_div(g.height, g.vf);
  g.chroma_width = ceil_div(g.width, g.hf);
  g.shift = spec.level_shift ? 128.f : 0.f;
  g.integer_samples = in.dtype == DType::u8;
  g.ring = (g.hf * g.vf > 1 && g.chroma_width > 2) ? 8 : 0;
  g.tile_height = tile_extent(g.padded_height, 8 * g.vf, g.ring ? kMaxTileHeight : kMaxTileHeight / 2);
  g.tile_width = tile_extent(g.padded_width, 8 * g.hf, kMaxTileWidth);
  g.tiles_x = ceil_div(g.padded_width, g.tile_width);
  g.tiles_per_image = ceil_div(g.padded_height, g.tile_height) * g.tiles_x;
  g.luma_stride = padded_stride(g.tile_width);
  g.chroma_rows = g.tile_height / g.vf + 2 * g.ring;
  g.chroma_stride = padded_stride(g.tile_width / g.hf + 2 * g.ring);
  size_t floats = static_cast<size_t>(g.tile_height) * g.luma_stride + 576;
  int64_t blocks = (g.tile_height / 8) * (g.tile_width / 8);
  if (g.components == 3) {
    floats += 2 * static_cast<size_t>(g.chroma_rows) * g.chroma_stride;
    blocks += 2 * (g.chroma_rows / 8) * ((g.tile_width / g.hf + 2 * g.ring) / 8);
  }
  p.smem_bytes = (floats + kThreads / 8 * 16) * sizeof(float);
  p.host_floats = floats + blocks * 16;  // the host emulation keeps row sums for every block
  p.tiles = in.shape[0] * g.tiles_per_image;
  if (p.tiles > 0x7fffffff) return "batch too large for one launch (more than 2^31 tiles)";

  for (int d = 0; d < 4; ++d) {
    a.in_stride[d] = in.stride[d];
    a.out_stride[d] = out.stride[d];
  }
  a.basis = make_basis();
  for (int i = 0; i < 192; ++i) {
    a.tables[0][i] = spec.quant[i];
    a.tables[1][i] = 1.f / spec.quant[i];  // as the CPU core: reciprocal in float
    a.tables[2][i] = spec.dequant[i];
  }
  if (spec.block_tables) {
    int64_t rows = g.padded_height / 8, cols = g.padded_width / 8;
    if (spec.block_rows != rows || spec.block_cols != cols) {
      std::ostringstream msg;
      msg << "block table map must be " << rows << " x " << cols << " per image, got "
          << spec.block_rows << " x " << spec.block_cols;
      return msg.str();
    }
    for (int64_t i = 0; i < in.shape[0] * rows * cols; ++i)
      if (spec.block_tables[i] >= spec.table_sets)
        return "block table map names a table set that does not exist";
    a.block_rows = rows;
    a.block_cols = cols;
    p.sets.resize(static_cast<size_t>(spec.table_sets) * 576);
    for (int k = 0; k < spec.table_sets; ++k)
      for (int i = 0; i < 192; ++i) {
        float* set = p.sets.data() + k * 576;
        set[i] = spec.quant[k * 192 + i];
        set[192 + i] = 1.f / spec.quant[k * 192 + i];
        set[384 + i] = spec.dequant[k * 192 + i];
      }
  }
  // Passes of independent tiles run in one launch; with a ring, each pass needs the whole
  // previous result, so each gets its own launch.
  if (g.ring) {
    a.passes = 1;
    p.launches = spec.passes;
  } else {
    a.passes = spec.passes;
    p.launches = 1;
  }
  return {};
}

Result fail(Status s, const std::string& m) { return Result{s, m}; }

Result cuda_failure(cudaError_t e, const char* what) {
  std::string m = std::string(what) + ": " + cudaGetErrorString(e);
  switch (e) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInitializationError:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorDevicesUnavailable:
      return fail(Status::no_gpu, "no usable GPU: " + std::string(cudaGetErrorString(e)));
    case cudaErrorMemoryAllocation:
      return fail(Status::out_of_memory, "CUDA out of memory: " + m);
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
      return fail(Status::no_gpu, "no usable GPU: this build of fdjpeg has no kernel for it (" +
                                      std::string(cudaGetErrorString(e)) + ")");
    default:
      return fail(Status::cuda_error, m);
  }
}

// The pointer must be memory the given device can address as its own.
Result check_pointer(const void* p, int device, const char* name) {
  cudaPointerAttributes attr{};
  const cudaError_t e = cudaPointerGetAttributes(&attr, p);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return cuda_failure(e, name);
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
    return fail(Status::bad_input, std::string(name) + " is not device memory");
  }
  if (attr.type == cudaMemoryTypeDevice && attr.device != device) {
    std::ostringstream msg;
    msg << name << " lives on cuda:" << attr.device << ", the call was made for cuda:" << device;
    return fail(Status::bad_input, msg.str());
  }
  return {};
}

template <class T>
cudaError_t launch(const Plan& p, cudaStream_t stream) {
  cudaError_t e = cudaFuncSetAttribute(pipeline_kernel<T>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(p.smem_bytes));
  if (e != cudaSuccess) return e;
  pipeline_kernel<T><<<static_cast<unsigned>(p.tiles), kThreads, p.smem_bytes, stream>>>(p.args);
  return cudaGetLastError();
}

cudaError_t launch_any(DType d, const Plan& p, cudaStream_t stream) {
  switch (d) {
    case DType::u8:
      return launch<uint8_t>(p, stream);
    case DType::f32:
      return launch<float>(p, stream);
    default:
      return launch<double>(p, stream);
  }
}

template <class T>
void emulate_launch(const Plan& p) {
  std::vector<float> smem(p.host_floats);
  for (int64_t t = 0; t < p.tiles; ++t) run_tile<T>(p.args, t, smem.data(), 0, 1);
}

// Source and destination of each launch of a multi-launch run, ending in `out`: ping-pong
// through `scratch` (a dense N x H x W x C buffer) so that no launch reads what it writes.
template <class Step>
void for_each_launch(Plan& p, const BatchView& in, const BatchView& out, void* scratch, Step step) {
  const int64_t dense[4] = {in.shape[1] * in.shape[2] * in.shape[3], in.shape[2] * in.shape[3],
                            in.shape[3], 1};
  for (int i = 0; i < p.launches; ++i) {
    const bool to_out = (p.launches - 1 - i) % 2 == 0;
    KernelArgs& a = p.args;
    if (i > 0) {  // source: the previous launch's destination
      a.in = a.out;
      for (int d = 0; d < 4; ++d) a.in_stride[d] = a.out_stride[d];
    }
    a.out = to_out ? out.data : scratch;
    for (int d = 0; d < 4; ++d) a.out_stride[d] = to_out ? out.stride[d] : dense[d];
    step();
  }
}

}  // namespace

std::string device_problem() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return cuda_failure(e, "cudaGetDeviceCount").message;
  }
  if (count == 0) return "no usable GPU: no CUDA device found";
  return {};
}

Result quantize_on_device(const BatchView& in, const BatchView& out, const QuantSpec& spec,
                          int device, std::uintptr_t stream_handle) {
  Plan p;
  std::string error = make_plan(in, out, spec, p);
  if (!error.empty()) return fail(Status::bad_input, error);
  const std::string problem = device_problem();
  if (!problem.empty()) return fail(Status::no_gpu, problem);
  cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) return cuda_failure(e, "cudaSetDevice");
  for (const auto& [ptr, name] : {std::pair<const void*, const char*>{in.data, "input"},
                                  {out.data, "output"}}) {
    Result r = check_pointer(ptr, device, name);
    if (r.status != Status::ok) return r;
  }
  if (p.args.g.ring && in.data == out.data)  // tiles read their neighbours' pixels
    return fail(Status::bad_input, "input and output must be different buffers with subsampling");
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);

  // Device copies of the table sets and the block map (stream-ordered: no host synchronisation),
  // and the intermediate buffer of multi-launch runs, in one allocation.
  const size_t sets = spec.block_tables ? p.sets.size() * sizeof(float) : 0;
  const size_t map = spec.block_tables ? static_cast<size_t>(in.shape[0] * p.args.block_rows *
                                                            p.args.block_cols)
                                       : 0;
  const size_t scratch = p.launches > 1 ? static_cast<size_t>(in.shape[0] * in.shape[1] *
                                                              in.shape[2] * in.shape[3]) *
                                              element_size(in.dtype)
                                        : 0;
  const size_t scratch_at = round_up(sets + map, 256);
  char* buffer = nullptr;
  if (sets + scratch > 0) {
    e = cudaMallocAsync(reinterpret_cast<void**>(&buffer), scratch_at + scratch, stream);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return cuda_failure(e, "allocating the device work buffer");
    }
  }
  if (sets) {
    p.args.sets = reinterpret_cast<const float*>(buffer);
    p.args.block_map = reinterpret_cast<const uint8_t*>(buffer + sets);
    e = cudaMemcpyAsync(buffer, p.sets.data(), sets, cudaMemcpyHostToDevice, stream);
    if (e == cudaSuccess)
      e = cudaMemcpyAsync(buffer + sets, spec.block_tables, map, cudaMemcpyHostToDevice, stream);
  }
  p.args.in = in.data;
  if (e == cudaSuccess)
    for_each_launch(p, in, out, buffer + scratch_at, [&] {
      if (e == cudaSuccess) e = launch_any(in.dtype, p, stream);
    });
  if (buffer) cudaFreeAsync(buffer, stream);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return cuda_failure(e, "launching the fdjpeg kernel");
  }
  return {};
}

Result emulate_on_host(const BatchView& in, const BatchView& out, const QuantSpec& spec) {
  Plan p;
  std::string error = make_plan(in, out, spec, p);
  if (!error.empty()) return fail(Status::bad_input, error);
  if (spec.block_tables) {
    p.args.sets = p.sets.data();
    p.args.block_map = spec.block_tables;
  }
  std::vector<char> scratch;
  if (p.launches > 1)
    scratch.resize(static_cast<size_t>(in.shape[0] * in.shape[1] * in.shape[2] * in.shape[3]) *
                   element_size(in.dtype));
  p.args.in = in.data;
  for_each_launch(p, in, out, scratch.data(), [&] {
    switch (in.dtype) {
      case DType::u8:
        emulate_launch<uint8_t>(p);
        break;
      case DType::f32:
        emulate_launch<float>(p);
        break;
      default:
        emulate_launch<double>(p);
    }
  });
  return {};
}

}  // namespace cuda
}  // namespace fdjpeg
