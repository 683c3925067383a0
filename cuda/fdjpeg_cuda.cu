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
// they mostly hit L2. With 4:2:0 tiles of up to 128 x 64 pixels, the ring nearly doubles the
// chroma blocks (about 30% more transform work in all) and reads ~1.9x the pixels, mostly from L2.
// Without subsampling there is no ring at all.
//
// The arithmetic is the CPU core's own: the functions of csrc/block_math.hpp (sample conversion,
// colour, chroma resampling, AAN transforms, quantization and rounding), instantiated here with
// float, the tables scaled by csrc/spec.cpp (aan_table_set) and the block geometry computed by
// block_geometry() there, compiled without FMA contraction (--fmad=false), so both back ends
// give the same numbers.
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

// bench/cuda_budget.py builds with FDJPEG_BUDGET to count instructions per output pixel: on the
// device a marker (NANOSLEEP k, found in the SASS) heads the body of each phase's hot loop; on the
// host the same marker counts how often that body runs.
#ifdef FDJPEG_BUDGET
namespace fdjpeg {
namespace cuda {
long long budget_hits[4];
}
}  // namespace fdjpeg
#ifdef __CUDA_ARCH__
#define FDJPEG_BUDGET_MARK(k) asm volatile("nanosleep.u32 %0;" ::"n"(k))
#else
#define FDJPEG_BUDGET_MARK(k) (++::fdjpeg::cuda::budget_hits[k])
#endif
#else
#define FDJPEG_BUDGET_MARK(k) ((void)0)
#endif

namespace fdjpeg {
namespace cuda {
namespace {

#include "block_math.hpp"

#define FDJPEG_HD FDJPEG_BLOCK_INLINE

using block::as_sample;
using block::load_sample;
using block::store_sample;

constexpr int kThreads = 256;      // threads per CTA
constexpr int kMaxTileWidth = 128;  // luma pixels
constexpr int kMaxTileHeight = 64;
constexpr int kSetFloats = 3 * 192;  // one table set: 3 components x (divisor, 1/divisor, dequant)

struct Geometry {
  // Within an image, coordinates and element offsets are 32-bit (checked on the host): fewer
  // registers and instructions than 64-bit address arithmetic.
  int height = 0, width = 0, channels = 0;
  int components = 1;  // planes through the DCT: 1 (grey) or 3
  bool ycbcr = false;
  int hf = 1, vf = 1;  // chroma subsampling factors
  int padded_height = 0, padded_width = 0;
  int chroma_height = 0, chroma_width = 0;  // real chroma extent (edges of upsampling)
  bool fancy_upsampling = true;  // false: replicate chroma (BlockGeometry::fancy_upsampling)
  float shift = 0.f;
  bool integer_samples = false;  // 8-bit images: whole-number samples between stages, as libjpeg
  int ring = 0;  // chroma samples transformed around a tile on each side (0 or 8)
  int tile_height = 0, tile_width = 0;  // luma pixels, whole MCUs
  int tiles_x = 0, tiles_per_image = 0;
  int luma_stride = 0, chroma_stride = 0, chroma_rows = 0;  // shared-memory planes
};

struct KernelArgs {
  const void* in = nullptr;
  void* out = nullptr;
  int64_t in_image_stride = 0, out_image_stride = 0;  // elements
  int in_stride[3] = {0, 0, 0};  // elements: row, column, channel
  int out_stride[3] = {0, 0, 0};
  Geometry g;
  // Table set 0 (used without block_map): per component, 64 divisors, 64 reciprocal divisors,
  // 64 dequantization factors, AAN-scaled and in the transform's order (index v * 8 + u).
  float tables[kSetFloats];
  const float* sets = nullptr;  // K table sets laid out as `tables`, with block_map
  const uint8_t* block_map = nullptr;  // N x block_rows x block_cols, one set per luma block
  int64_t block_rows = 0, block_cols = 0;
  int passes = 1;  // passes run inside one launch (only without a ring: tiles are independent)
};

// The tile a CTA owns, and where its planes live in shared memory.
struct Tile {
  int64_t image = 0;
  int y0 = 0, x0 = 0;       // luma origin (padded coordinates)
  int h = 0, w = 0;         // luma extent
  int cy0 = 0, cx0 = 0;     // chroma region origin, ring included (chroma coordinates)
  int ch = 0, cw = 0;       // chroma region extent
  float* plane[3] = {nullptr, nullptr, nullptr};
  int stride[3] = {0, 0, 0};
  float* tables = nullptr;  // table set 0 (kSetFloats)

  // Selects instead of indexing, so that the arrays stay in registers on the GPU.
  FDJPEG_HD float* plane_of(int comp) const {
    return comp == 0 ? plane[0] : (comp == 1 ? plane[1] : plane[2]);
  }
  FDJPEG_HD int stride_of(int comp) const { return comp == 0 ? stride[0] : stride[1]; }
};

FDJPEG_HD int imin(int a, int b) { return b < a ? b : a; }
FDJPEG_HD int imax(int a, int b) { return a < b ? b : a; }

// ---------------------------------------------------------------------------------------------
// The tile.

FDJPEG_HD Tile make_tile(const KernelArgs& a, int64_t index, float* smem) {
  const Geometry& g = a.g;
  Tile t;
  t.image = index / g.tiles_per_image;
  const int within = static_cast<int>(index % g.tiles_per_image);
  t.y0 = (within / g.tiles_x) * g.tile_height;
  t.x0 = (within % g.tiles_x) * g.tile_width;
  t.h = static_cast<int>(imin(g.tile_height, g.padded_height - t.y0));
  t.w = static_cast<int>(imin(g.tile_width, g.padded_width - t.x0));
  t.plane[0] = smem;
  t.stride[0] = g.luma_stride;
  float* next = smem + g.tile_height * g.luma_stride;
  if (g.components == 3) {
    t.cy0 = imax(0, t.y0 / g.vf - g.ring);
    t.cx0 = imax(0, t.x0 / g.hf - g.ring);
    t.ch = static_cast<int>(imin((t.y0 + t.h) / g.vf + g.ring, g.padded_height / g.vf) - t.cy0);
    t.cw = static_cast<int>(imin((t.x0 + t.w) / g.hf + g.ring, g.padded_width / g.hf) - t.cx0);
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
  return t;
}

// Phase 1: read the pixels, convert colour, average chroma. Items are the chroma samples of the
// region (the pixels, without subsampling), each covering HF x VF pixels; luma is kept only inside
// the tile. Each thread first fetches the pixels of several items (4 pixels, 12 samples) and only
// then converts them, so that more loads are in flight at once (more would cost registers, and
// with them CTAs per SM: 80 registers x 256 threads leave room for 3).
template <int HF, int VF>
struct Cells {
  static constexpr int kPixels = HF * VF;
  static constexpr int kPerThread = 4 / kPixels;  // items fetched together: 4 pixels
};

template <class T, int HF, int VF>
FDJPEG_HD void fetch_cell(const KernelArgs& a, const Tile& t, const T* src, const int* ss,
                          int item, float (*px)[3]) {
  const Geometry& g = a.g;
  const int ry = item / t.cw, rx = item % t.cw;
#pragma unroll
  for (int dy = 0; dy < VF; ++dy)
#pragma unroll
    for (int dx = 0; dx < HF; ++dx) {
      const int y = imin((t.cy0 + ry) * VF + dy, g.height - 1);
      const int x = imin((t.cx0 + rx) * HF + dx, g.width - 1);
      const T* p = src + y * ss[0] + x * ss[1];
      float* v = px[dy * HF + dx];
      v[0] = load_sample(p);
      if (g.components == 3) {
        v[1] = load_sample(p + ss[2]);
        v[2] = load_sample(p + 2 * ss[2]);
      }
    }
}

template <int HF, int VF>
FDJPEG_HD void convert_cell(const KernelArgs& a, const Tile& t, int item, const float (*px)[3]) {
  const Geometry& g = a.g;
  const int ry = item / t.cw, rx = item % t.cw;
  if (g.components == 1) {
    t.plane[0][ry * t.stride[0] + rx] = px[0][0];
    return;
  }
  float cb[Cells<HF, VF>::kPixels], cr[Cells<HF, VF>::kPixels];
#pragma unroll
  for (int k = 0; k < Cells<HF, VF>::kPixels; ++k) {
    const float r0 = px[k][0], g0 = px[k][1], b0 = px[k][2];
    float luma = r0;
    cb[k] = g0;
    cr[k] = b0;
    if (g.ycbcr) block::rgb_to_ycbcr(r0, g0, b0, g.integer_samples, luma, cb[k], cr[k]);
    const int ly = (t.cy0 + ry) * VF + k / HF - t.y0, lx = (t.cx0 + rx) * HF + k % HF - t.x0;
    if (ly >= 0 && ly < t.h && lx >= 0 && lx < t.w) t.plane[0][ly * t.stride[0] + lx] = luma;
  }
  float c1 = cb[0], c2 = cr[0];
  // The cell's average, rows a and b (4:2:2 passes its one row twice, as the CPU core).
  if (VF == 2) {
    c1 = as_sample(block::downsample_cell(cb[0], cb[1], cb[HF * VF - 2], cb[HF * VF - 1]), g.integer_samples);
    c2 = as_sample(block::downsample_cell(cr[0], cr[1], cr[HF * VF - 2], cr[HF * VF - 1]), g.integer_samples);
  } else if (HF == 2) {
    c1 = as_sample(block::downsample_cell(cb[0], cb[HF - 1], cb[0], cb[HF - 1]), g.integer_samples);
    c2 = as_sample(block::downsample_cell(cr[0], cr[HF - 1], cr[0], cr[HF - 1]), g.integer_samples);
  }
  t.plane[1][ry * t.stride[1] + rx] = c1;
  t.plane[2][ry * t.stride[2] + rx] = c2;
}

template <class T, int HF, int VF>
FDJPEG_HD void load_region(const KernelArgs& a, const Tile& t, const T* src, const int* ss,
                           int tid, int threads) {
  constexpr int kPer = Cells<HF, VF>::kPerThread, kPixels = Cells<HF, VF>::kPixels;
  const int cells = t.ch * t.cw;
  for (int base = tid; base < cells; base += kPer * threads) {
    FDJPEG_BUDGET_MARK(1);
    float px[kPer][kPixels][3];
#pragma unroll
    for (int k = 0; k < kPer; ++k)
      if (base + k * threads < cells) fetch_cell<T, HF, VF>(a, t, src, ss, base + k * threads, px[k]);
#pragma unroll
    for (int k = 0; k < kPer; ++k)
      if (base + k * threads < cells) convert_cell<HF, VF>(a, t, base + k * threads, px[k]);
  }
}

template <class T>
FDJPEG_HD void load_tile(const KernelArgs& a, const Tile& t, const T* src, const int* ss,
                         int tid, int threads) {
  if (a.g.vf == 2)
    load_region<T, 2, 2>(a, t, src, ss, tid, threads);
  else if (a.g.hf == 2)
    load_region<T, 2, 1>(a, t, src, ss, tid, threads);
  else
    load_region<T, 1, 1>(a, t, src, ss, tid, threads);
}

// One 8x8 block of the tile's planes, as the transform stages see it.
struct BlockRef {
  float* origin;   // top-left sample in shared memory
  int stride;
  int comp;
  int row, col;  // block position in its whole (padded) plane
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
  int row0, col0;
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

// Stage 1: level shift and forward AAN down column `x` of a block.
FDJPEG_HD void forward_column(const KernelArgs& a, const BlockRef& r, int x) {
  float d[8];
  for (int y = 0; y < 8; ++y) d[y] = r.origin[y * r.stride + x] - a.g.shift;
  block::forward_aan(d);
  for (int u = 0; u < 8; ++u) r.origin[u * r.stride + x] = d[u];
}

// Stage 2: forward AAN along row `u`, round(coef / Qc) * Qd with the AAN-scaled tables, inverse
// AAN along the row. Coefficients with v = 0 or 4 (the rational ones among them are exact sums)
// are divided exactly, the others multiplied by the reciprocal, as the CPU core does.
FDJPEG_HD void quantize_row(const KernelArgs& a, const Tile& t, const BlockRef& r, int u) {
  const float* table = t.tables;
  if (a.block_map) {
    // Chroma blocks of a subsampled plane take the choice of the luma block at their corner.
    const int hf = r.comp ? a.g.hf : 1, vf = r.comp ? a.g.vf : 1;
    const int set = a.block_map[(t.image * a.block_rows + r.row * vf) * a.block_cols + r.col * hf];
    table = a.sets + set * kSetFloats;
  }
  const float* divisor = table + r.comp * 192 + u;  // entry v at [8 * v]
  const float* inv_divisor = divisor + 64;
  const float* dequant = divisor + 128;
  float* line = r.origin + u * r.stride;
  float d[8];
  for (int i = 0; i < 8; ++i) d[i] = line[i];
  block::forward_aan(d);
  block::quantize_dequantize(d, divisor, inv_divisor, dequant);
  block::inverse_aan(d);
  for (int i = 0; i < 8; ++i) line[i] = d[i];
}

// Stage 3: inverse AAN down column `x`, undo the level shift, clamp (and round 8-bit samples).
FDJPEG_HD void inverse_column(const KernelArgs& a, const BlockRef& r, int x) {
  float d[8];
  for (int u = 0; u < 8; ++u) d[u] = r.origin[u * r.stride + x];
  block::inverse_aan(d);
  for (int y = 0; y < 8; ++y)
    r.origin[y * r.stride + x] = block::finish_sample(d[y], a.g.shift, true, a.g.integer_samples);
}

// libjpeg's fancy upsampling (block_math.hpp) at pixel (y, x) from a chroma plane held for the
// region of `t`, or replication where the chroma plane is too narrow for it.
FDJPEG_HD float upsample(const Geometry& g, const Tile& t, int comp, int y, int x) {
  const float* p = t.plane_of(comp);
  const int s = t.stride_of(comp);
  const int cw = g.chroma_width, ch = g.chroma_height;
  const int i = y / g.vf;
  const float* near = p + (i - t.cy0) * s - t.cx0;  // indexed by global chroma column
  if (!g.fancy_upsampling) return near[x / g.hf];
  const float* far = near;
  if (g.vf == 2) {
    const int j = (y & 1) ? imin(i + 1, ch - 1) : imax(i - 1, 0);
    far = p + (j - t.cy0) * s - t.cx0;
  }
  auto vertical = [&](int c) {
    return g.vf == 2 ? block::upsample_vertical(near[c], far[c]) : block::upsample_vertical_none(near[c]);
  };
  if (g.hf == 1) return as_sample(block::upsample_horizontal_none(vertical(x)), g.integer_samples);
  // Output pixels 2c and 2c+1 lie at 1/4 and 3/4 between chroma samples; the first and the last
  // output pixel of the row copy their sample (3/4 of it plus 1/4 of itself).
  const int c = x >> 1;
  const int f = (x & 1) ? c + 1 : c - 1;
  const float value = (f < 0 || f >= cw) ? block::upsample_horizontal_none(vertical(c))
                                         : block::upsample_horizontal(vertical(c), vertical(f));
  return as_sample(value, g.integer_samples);
}

// Phase 3, one item: one pixel of the tile inside the real image.
template <class T>
FDJPEG_HD void store_pixel(const KernelArgs& a, const Tile& t, const T* src, const int* ss,
                           T* dst, int item, int out_width) {
  const Geometry& g = a.g;
  const int ly = item / out_width, lx = item % out_width;
  const int y = t.y0 + ly, x = t.x0 + lx;
  const int* os = a.out_stride;
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
  if (g.ycbcr) block::ycbcr_to_rgb(luma, c1, c2, r0, g0, b0);
  store_sample(px, r0);
  store_sample(px + os[2], g0);
  store_sample(px + 2 * os[2], b0);
  if (g.channels == 4) px[3 * os[2]] = src[y * ss[0] + x * ss[1] + 3 * ss[2]];  // alpha as is
}

// Phase 2: the transform stages 1-3 over every 8x8 block of the tile. Items are (block, line)
// pairs; a block's 8 items go to 8 consecutive lanes of one warp, so on the GPU the stages only
// need warp barriers between them. On the host the stages run one after the other over all items.
FDJPEG_HD void transform_blocks(const KernelArgs& a, const Tile& t, int tid, int threads) {
  const int lines = block_count(a, t) * 8;
#ifdef __CUDA_ARCH__
  const int rounded = (lines + 31) & ~31;  // whole warps take part in every __syncwarp
  for (int i = tid; i < rounded; i += threads) {
    FDJPEG_BUDGET_MARK(2);
    const bool live = i < lines;
    const BlockRef r = block_ref(t, live ? i >> 3 : 0);
    const int line = i & 7;
    if (live) forward_column(a, r, line);
    __syncwarp();
    if (live) quantize_row(a, t, r, line);
    __syncwarp();
    if (live) inverse_column(a, r, line);
    __syncwarp();
  }
#else
  for (int i = tid; i < lines; i += threads) {
    FDJPEG_BUDGET_MARK(2);
    forward_column(a, block_ref(t, i >> 3), i & 7);
  }
  for (int i = tid; i < lines; i += threads) quantize_row(a, t, block_ref(t, i >> 3), i & 7);
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
    for (int i = tid; i < kSetFloats; i += threads) t.tables[i] = a.tables[i];
  T* dst = static_cast<T*>(a.out) + t.image * a.out_image_stride;
  const int out_width = static_cast<int>(imin(t.w, g.width - t.x0));
  const int pixels = static_cast<int>(imin(t.h, g.height - t.y0)) * out_width;
  for (int pass = 0; pass < a.passes; ++pass) {
    // Later passes read what this CTA wrote (tiles are independent when a.passes > 1).
    const T* src = pass == 0 ? static_cast<const T*>(a.in) + t.image * a.in_image_stride : dst;
    const int* ss = pass == 0 ? a.in_stride : a.out_stride;
    load_tile(a, t, src, ss, tid, threads);
    FDJPEG_BARRIER();
    transform_blocks(a, t, tid, threads);
    FDJPEG_BARRIER();
    for (int i = tid; i < pixels; i += threads) {
      FDJPEG_BUDGET_MARK(3);
      store_pixel(a, t, src, ss, dst, i, out_width);
    }
    FDJPEG_BARRIER();
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads, 3) pipeline_kernel(const __grid_constant__ KernelArgs a) {
  extern __shared__ float smem[];
  run_tile<T>(a, blockIdx.x, smem, threadIdx.x, blockDim.x);
}

// ---------------------------------------------------------------------------------------------
// Host side: geometry, tiling, launch.

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
  int launches = 1;  // passes that need one launch each (with a ring)
  std::vector<float> sets;  // K table sets (kSetFloats each), with a block map
};

void set_strides(const BatchView& v, int64_t& image_stride, int* stride) {
  image_stride = v.stride[0];
  for (int d = 0; d < 3; ++d) stride[d] = static_cast<int>(v.stride[d + 1]);
}

Result make_plan(const BatchView& in, const BatchView& out, const QuantSpec& spec, Plan& p) {
  Result checked = validate(in, out, spec);
  if (!checked.ok()) return checked;
  // Element offsets within one image (and padded sizes) must fit the kernel's 32-bit arithmetic.
  for (const BatchView* v : {&in, &out}) {
    int64_t extent = 0;
    for (int d = 1; d < 4; ++d) extent += (v->shape[d] - 1) * std::abs(v->stride[d]);
    if (extent >= (int64_t{1} << 31) || v->shape[1] > (1 << 28) || v->shape[2] > (1 << 28))
      return fail(Status::bad_input,
                  "image too large for the CUDA kernel (more than 2^31 samples in one image)");
  }
  KernelArgs& a = p.args;
  Geometry& g = a.g;
  // The block geometry of the CPU core, narrowed to the kernel's 32 bits (sizes checked above).
  const BlockGeometry bg =
      block_geometry(in.shape[1], in.shape[2], in.shape[3], spec.color, spec.subsampling);
  g.height = static_cast<int>(bg.height);
  g.width = static_cast<int>(bg.width);
  g.channels = static_cast<int>(bg.channels);
  g.components = bg.components;
  g.ycbcr = bg.ycbcr;
  g.hf = bg.h_factor;
  g.vf = bg.v_factor;
  g.padded_height = static_cast<int>(bg.padded_height);
  g.padded_width = static_cast<int>(bg.padded_width);
  g.chroma_height = static_cast<int>(bg.chroma_height);
  g.chroma_width = static_cast<int>(bg.chroma_width);
  g.fancy_upsampling = bg.fancy_upsampling;
  g.shift = spec.level_shift ? 128.f : 0.f;
  g.integer_samples = in.dtype == DType::u8;
  g.ring = (g.hf * g.vf > 1 && g.fancy_upsampling) ? 8 : 0;
  g.tile_height = tile_extent(bg.padded_height, static_cast<int>(bg.mcu_height),
                              g.ring ? kMaxTileHeight : kMaxTileHeight / 2);
  g.tile_width = tile_extent(bg.padded_width, static_cast<int>(bg.mcu_width), kMaxTileWidth);
  g.tiles_x = ceil_div(g.padded_width, g.tile_width);
  g.tiles_per_image = ceil_div(g.padded_height, g.tile_height) * g.tiles_x;
  g.luma_stride = padded_stride(g.tile_width);
  g.chroma_rows = g.tile_height / g.vf + 2 * g.ring;
  g.chroma_stride = padded_stride(g.tile_width / g.hf + 2 * g.ring);
  size_t floats = static_cast<size_t>(g.tile_height) * g.luma_stride + kSetFloats;
  if (g.components == 3) floats += 2 * static_cast<size_t>(g.chroma_rows) * g.chroma_stride;
  p.smem_bytes = floats * sizeof(float);
  p.tiles = in.shape[0] * g.tiles_per_image;
  if (p.tiles > 0x7fffffff)
    return fail(Status::bad_input, "batch too large for one launch (more than 2^31 tiles)");

  set_strides(in, a.in_image_stride, a.in_stride);
  set_strides(out, a.out_image_stride, a.out_stride);
  aan_table_set(spec.quant, spec.dequant, a.tables);
  if (spec.block_tables) {
    a.block_rows = spec.block_rows;  // checked by validate()
    a.block_cols = spec.block_cols;
    p.sets.resize(static_cast<size_t>(spec.table_sets) * kSetFloats);
    for (int k = 0; k < spec.table_sets; ++k)
      aan_table_set(spec.quant + k * 192, spec.dequant + k * 192, p.sets.data() + k * kSetFloats);
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
      return fail(Status::device_error, m);
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
  std::vector<float> smem(p.smem_bytes / sizeof(float));
  for (int64_t t = 0; t < p.tiles; ++t) run_tile<T>(p.args, t, smem.data(), 0, 1);
}

// Source and destination of each launch of a multi-launch run, ending in `out`: ping-pong
// through `scratch` (a dense N x H x W x C buffer) so that no launch reads what it writes.
template <class Step>
void for_each_launch(Plan& p, const BatchView& in, const BatchView& out, void* scratch, Step step) {
  BatchView dense = in;
  dense.data = scratch;
  dense.stride[3] = 1;
  for (int d = 2; d >= 0; --d) dense.stride[d] = dense.stride[d + 1] * in.shape[d + 1];
  for (int i = 0; i < p.launches; ++i) {
    const bool to_out = (p.launches - 1 - i) % 2 == 0;
    KernelArgs& a = p.args;
    if (i > 0) {  // source: the previous launch's destination
      a.in = a.out;
      a.in_image_stride = a.out_image_stride;
      for (int d = 0; d < 3; ++d) a.in_stride[d] = a.out_stride[d];
    }
    const BatchView& dst = to_out ? out : dense;
    a.out = dst.data;
    set_strides(dst, a.out_image_stride, a.out_stride);
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
  Result planned = make_plan(in, out, spec, p);
  if (!planned.ok()) return planned;
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

#ifdef FDJPEG_BUDGET
// What bench/cuda_budget.py needs of a plan: dynamic shared memory per CTA, and the CTAs.
Result budget_plan(const BatchView& in, const BatchView& out, const QuantSpec& spec,
                   size_t* smem_bytes, int64_t* tiles) {
  Plan p;
  Result planned = make_plan(in, out, spec, p);
  *smem_bytes = p.smem_bytes;
  *tiles = p.tiles * p.launches;
  return planned;
}
#endif

Result emulate_on_host(const BatchView& in, const BatchView& out, const QuantSpec& spec) {
  Plan p;
  Result planned = make_plan(in, out, spec, p);
  if (!planned.ok()) return planned;
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
