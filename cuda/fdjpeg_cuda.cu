// The block-quantization pipeline as one fused CUDA kernel.
//
// A CTA owns a tile of 128 luma columns and kTileH rows of one image. It reads the tile's pixels
// once, converts colour and subsamples chroma into float planes in shared memory, runs
// DCT -> quantize -> dequantize -> IDCT on every 8x8 block there (three separable 1-D stages),
// then upsamples chroma, converts colour back, clamps, rounds and writes each pixel once.
//
// The kernel is a template on the sample type and on the kind of image (grey, planes without
// colour, YCbCr 4:4:4 / 4:2:2 / 4:2:0), so the tile's shape is a compile-time constant: index
// arithmetic is shifts and constant divisions, and each thread takes 4 neighbouring pixels of a
// row (one 4-byte load per uint8 channel where the layout allows), a warp one row of the tile.
//
// libjpeg's "fancy" chroma upsampling reads one chroma sample beyond the tile on each subsampled
// side. Each CTA therefore also transforms a ring of one block of chroma around its tile in the
// subsampled directions only (4:2:2: left and right), computing no luma for the ring. A
// two-kernel design would write and re-read the chroma planes as floats (more bytes per pixel than
// a uint8 image moves in all); the ring's pixels are those the neighbouring CTAs read at about the
// same time, so they mostly hit L2. With 4:2:0 tiles of 128 x 80 the ring makes 1.75x the chroma
// blocks (25% more transform work). Without subsampling there is no ring.
//
// The arithmetic is the CPU core's own: the functions of csrc/block_math.hpp, instantiated with
// `Rn`, a float whose operations are __fadd_rn / __fmul_rn / ... (never contracted into
// multiply-adds, whatever --fmad says), the tables scaled by csrc/spec.cpp (aan_table_set) and the
// block geometry of block_geometry() there, so both back ends give the same numbers.
//
// The per-tile code is __host__ __device__ and written as phases separated by named barriers
// (Sched below): emulate_on_host() runs it on the CPU with 256 emulated threads in a shuffled
// order within each phase, so that a missing barrier or a wrong index shows up without a GPU.
#include "fdjpeg_cuda.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <type_traits>
#include <utility>
#include <vector>

// bench/cuda_budget.py builds with FDJPEG_BUDGET to count instructions per output pixel: on the
// device a marker (NANOSLEEP k, found in the SASS) heads the body of each phase's hot loop; on the
// host the same marker counts how often that body runs. A body the compiler may not keep as a loop
// (it runs at most once per thread) also ends with a marker, NANOSLEEP k + 16.
#ifdef FDJPEG_BUDGET
namespace fdjpeg {
namespace cuda {
long long budget_hits[8];
}
}  // namespace fdjpeg
#ifdef __CUDA_ARCH__
#define FDJPEG_BUDGET_MARK(k) asm volatile("nanosleep.u32 %0;" ::"n"(k))
#define FDJPEG_BUDGET_END(k) asm volatile("nanosleep.u32 %0;" ::"n"((k) ? (k) + 16 : 0))
#else
#define FDJPEG_BUDGET_MARK(k) (++::fdjpeg::cuda::budget_hits[k])
#define FDJPEG_BUDGET_END(k) ((void)0)
#endif
#else
#define FDJPEG_BUDGET_MARK(k) ((void)0)
#define FDJPEG_BUDGET_END(k) ((void)0)
#endif

namespace fdjpeg {
namespace cuda {
namespace {

#include "block_math.hpp"

#define FDJPEG_HD FDJPEG_BLOCK_INLINE

using block::as_sample;

constexpr int kThreads = 256;  // threads per CTA
constexpr int kWarps = kThreads / 32;
constexpr int kTileW = 128;  // luma columns of a tile: 32 lanes x 4 pixels
constexpr int kLumaStride = kTileW + 4;  // floats; see Kind::kChromaStride
// One table set: per component and row u of a block, 8 scale factors (the divisor for v = 0, 4,
// else its reciprocal) and 8 dequantization factors, padded to 20 floats (read as float4s; the
// threads of a warp mostly read the same record, one broadcast).
constexpr int kRecord = 20;
constexpr int kSetFloats = 3 * 8 * kRecord;

// The kernel's float: every operation rounded to nearest (csrc/block_math.hpp's *_rn). INT: the
// image has 8-bit samples, whose results are cast to integers in the end (see round_even below).
template <bool INT>
struct RnT {
  float v;
  FDJPEG_HD static RnT all(float c) { return {c}; }
  FDJPEG_HD static RnT load(const float* p) { return {*p}; }
  // clamp255: max / min instructions on the device (they differ from the CPU's comparisons only
  // for NaN, which the GPU path does not promise to keep); the CPU's expression on the host.
  FDJPEG_HD RnT clamp(float lo, float hi) const {
#ifdef __CUDA_ARCH__
    return {fminf(fmaxf(v, lo), hi)};
#else
    return {v < lo ? lo : (v > hi ? hi : v)};
#endif
  }
};
template <bool INT>
FDJPEG_HD RnT<INT> operator+(RnT<INT> a, RnT<INT> b) { return {block::add_rn(a.v, b.v)}; }
template <bool INT>
FDJPEG_HD RnT<INT> operator-(RnT<INT> a, RnT<INT> b) { return {block::sub_rn(a.v, b.v)}; }
template <bool INT>
FDJPEG_HD RnT<INT> operator*(RnT<INT> a, RnT<INT> b) { return {block::mul_rn(a.v, b.v)}; }
FDJPEG_HD RnT<false> operator/(RnT<false> a, RnT<false> b) { return {block::div_rn(a.v, b.v)}; }
// 8-bit images: the quotient of a coefficient by a table divisor (quantize_dequantize's only
// division) through the instructions of the fast path of the compiler's own IEEE division
// (__fdiv_rn: MUFU.RCP, one Newton step, a quotient and one correction, all rounded to nearest),
// without its range check (FCHK) and the slow path it guards, which serves only operands near the
// ends of the exponent range (zero, infinite, NaN or denormal operands, quotients that would
// under- or overflow). Here none comes near them: divisors are table steps in [0.001, 65535]
// (spec.cpp's validation) times 8 aan(u) (within [2.2, 11.1]), so within [2^-9, 2^20]; the
// coefficients divided (v = 0 and 4 of the row stage) are sums and differences of the column
// stage's outputs, which are integers or products of integers with AAN constants above 1/4 and
// their sums, so multiples of 2^-25; whole samples 0..255 bound them by 64 x 255 < 2^15. So a
// coefficient is 0 or within [2^-25, 2^15] and a quotient 0 or within [2^-45, 2^24]. (A zero
// coefficient gives a zero quotient, whose sign the rounding that follows makes irrelevant: see
// round_even<RnT<true>>.) Float images keep __fdiv_rn: their samples may be denormal or huge.
FDJPEG_HD RnT<true> operator/(RnT<true> a, RnT<true> b) {
#ifdef __CUDA_ARCH__
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(b.v));
  r = __fmaf_rn(r, __fmaf_rn(-b.v, r, 1.f), r);
  const float q = __fmaf_rn(a.v, r, 0.f);
  return {__fmaf_rn(r, __fmaf_rn(-b.v, q, a.v), q)};
#else
  return {block::div_rn(a.v, b.v)};
#endif
}

}  // namespace
namespace {
namespace block {
// Round half to even in one instruction for 8-bit images: rintf(v) equals the header's
// (v + 1.5 * 2^23) - 1.5 * 2^23 for every |v| < 2^22 except that it keeps the sign of a zero
// (-0.3 -> -0, not +0). The sign of a zero never changes a non-zero result of +, -, * or a
// comparison, and 8-bit results are cast to integers, so the samples are the same. Float
// images keep the header's rounding: there a -0 could reach the output.
template <>
FDJPEG_HD RnT<true> round_even<RnT<true>>(RnT<true> x) {
#ifdef __CUDA_ARCH__
  return {rintf(x.v)};
#else
  return {std::nearbyint(x.v)};
#endif
}
}  // namespace block

template <class T>
using Rn = RnT<std::is_same<T, uint8_t>::value>;

// The shape of a tile for one kind of image. COMPS planes go through the DCT; HF x VF luma pixels
// share one chroma sample.
template <int COMPS, bool YCC, int HF, int VF, bool SHIFT>
struct Kind {
  static constexpr int kComps = COMPS;
  static constexpr bool kShift = SHIFT;  // level shift: 128 subtracted before the DCT
  static constexpr bool kYcc = YCC;
  static constexpr int kHf = HF, kVf = VF;
  static constexpr bool kSub = HF * VF > 1;
  // Luma rows: the tallest that leaves room for 2 CTAs per SM on sm_80 (the chroma ring rows
  // are a smaller share of a taller tile).
  static constexpr int kTileH = !kSub ? 32 : (VF == 2 ? 80 : 64);
  static constexpr int kRingX = HF == 2 ? 8 : 0, kRingY = VF == 2 ? 8 : 0;  // chroma samples
  // The chroma region: the tile's chroma and the ring (chroma coordinates).
  static constexpr int kChromaCols = kTileW / HF + 2 * kRingX;
  static constexpr int kChromaRows = kTileH / VF + 2 * kRingY;
  // Row strides of 4 (mod 8) floats: float4 rows at 16-byte alignment; a warp's float4 accesses
  // to a row of the tile (loads and stores) are then free of bank conflicts.
  static constexpr int kChromaStride = kChromaCols + 4;
  static constexpr int kLumaBlocks = (kTileH / 8) * (kTileW / 8);
  static constexpr int kChromaBlockCols = kChromaCols / 8;
  static constexpr int kChromaBlocks = kChromaBlockCols * (kChromaRows / 8);  // per plane
  static constexpr int kBlocks = kLumaBlocks + (COMPS == 3 ? 2 * kChromaBlocks : 0);
  static constexpr int kChromaFloats = COMPS == 3 ? kChromaRows * kChromaStride : 0;
  static constexpr size_t kSmemBytes =
      sizeof(float) * (static_cast<size_t>(kTileH) * kLumaStride + 2 * kChromaFloats + kSetFloats);
  static_assert(kLumaStride % 8 == 4 && (!kSub || kChromaStride % 8 == 4), "bank-conflict padding");
};

template <bool SHIFT>
using Grey = Kind<1, false, 1, 1, SHIFT>;
template <bool SHIFT>
using Planes = Kind<3, false, 1, 1, SHIFT>;
template <bool SHIFT>
using Ycc444 = Kind<3, true, 1, 1, SHIFT>;
template <bool SHIFT>
using Ycc422 = Kind<3, true, 2, 1, SHIFT>;
template <bool SHIFT>
using Ycc420 = Kind<3, true, 2, 2, SHIFT>;

constexpr float kLevelShift = 128.f;

struct Geometry {
  // Within an image, coordinates and element offsets are 32-bit (checked on the host): fewer
  // registers and instructions than 64-bit address arithmetic.
  int height = 0, width = 0, channels = 0;
  int padded_height = 0, padded_width = 0;
  int chroma_height = 0, chroma_width = 0;  // real chroma extent (edges of upsampling)
  int chroma_block_rows = 0, chroma_block_cols = 0;  // the padded chroma plane in blocks
  bool fancy_upsampling = true;  // false: replicate chroma (BlockGeometry::fancy_upsampling)
  int tiles_x = 0, tiles_per_image = 0;
};

struct KernelArgs {
  const void* in = nullptr;
  void* out = nullptr;
  int64_t in_image_stride = 0, out_image_stride = 0;  // elements
  int in_stride[3] = {0, 0, 0};  // elements: row, column, channel
  int out_stride[3] = {0, 0, 0};
  // Whether 4 pixels of a row may move as one aligned vector (column stride 1, every row and
  // channel start a multiple of 4 elements, the buffer aligned to 4 elements).
  bool in_vector = false, out_vector = false;
  Geometry g;
  float tables[kSetFloats];  // table set 0 (used without block_map), as kRecord describes
  const float* sets = nullptr;  // K table sets laid out as `tables`, with block_map
  const uint8_t* block_map = nullptr;  // N x block_rows x block_cols, one set per luma block
  int64_t block_rows = 0, block_cols = 0;
  int passes = 1;  // passes run inside one launch (only without a ring: tiles are independent)
};

// The tile a CTA owns, and where its planes live in shared memory.
struct Tile {
  int64_t image = 0;
  int y0 = 0, x0 = 0;    // luma origin
  int h = 0, w = 0;      // luma extent (whole MCUs of the padded image)
  int cy0 = 0, cx0 = 0;  // chroma region origin, ring included (chroma coordinates, may be < 0)
  float* luma = nullptr;
  float* chroma[2] = {nullptr, nullptr};
  float* tables = nullptr;
  const uint8_t* block_map = nullptr;  // the image's block map, if any
};

// 8-bit images: whole-number samples between stages, as libjpeg.
template <class T>
constexpr bool kIntegerSamples = std::is_same<T, uint8_t>::value;

FDJPEG_HD int imin(int a, int b) { return b < a ? b : a; }
FDJPEG_HD int imax(int a, int b) { return a < b ? b : a; }

// ---------------------------------------------------------------------------------------------
// Vectors of 4 values: global memory (4 samples of a row) and shared memory (float4).

template <class T>
struct alignas(4 * sizeof(T)) Quad {
  T v[4];
};

template <class T>
FDJPEG_HD Quad<T> load_quad(const T* p) {
#ifdef __CUDA_ARCH__
  return *reinterpret_cast<const Quad<T>*>(p);
#else
  Quad<T> q;
  std::memcpy(q.v, p, sizeof q.v);
  return q;
#endif
}

template <class T>
FDJPEG_HD void store_quad(T* p, const Quad<T>& q) {
#ifdef __CUDA_ARCH__
  *reinterpret_cast<Quad<T>*>(p) = q;
#else
  std::memcpy(p, q.v, sizeof q.v);
#endif
}

template <class V>
FDJPEG_HD void ld4(const float* p, V* v) {
  const Quad<float> q = load_quad(p);
  for (int k = 0; k < 4; ++k) v[k].v = q.v[k];
}
template <class V>
FDJPEG_HD void st4(float* p, const V* v) {
  Quad<float> q;
  for (int k = 0; k < 4; ++k) q.v[k] = v[k].v;
  store_quad(p, q);
}

// The NC channels of 4 pixels of a row from column x (may lie partly outside the image: columns
// are clamped to [0, width), as the CPU core pads), as samples 0..255. VEC: the caller knows that
// they are inside and can be read as one vector (else `vector` says whether the layout allows it).
template <class T, int NC, bool VEC>
FDJPEG_HD void fetch4(const T* row, int x, int width, const int* ss, bool vector, Rn<T> (*v)[4]) {
  if (VEC || (vector && x >= 0 && x + 3 < width)) {
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const Quad<T> q = load_quad(row + x + c * ss[2]);
#pragma unroll
      for (int k = 0; k < 4; ++k) v[c][k].v = block::load_sample(&q.v[k]);
    }
    return;
  }
  if constexpr (!VEC) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const T* p = row + imin(imax(x + k, 0), width - 1) * ss[1];
#pragma unroll
      for (int c = 0; c < NC; ++c) v[c][k].v = block::load_sample(p + c * ss[2]);
    }
  }
}

// Writes the NC channels of the pixels x..x+3 of a row that lie inside the image (x < width).
// VEC as for fetch4. WHOLE: the values are whole numbers in 0..255 already (8-bit samples straight
// from the IDCT's rounding), which store_sample's + 0.5 and truncation leave as they are.
template <class T, int NC, bool VEC, bool WHOLE = false>
FDJPEG_HD void put4(T* row, int x, int width, const int* os, bool vector, const Rn<T> (*v)[4]) {
  if (VEC || (vector && x + 3 < width)) {
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      Quad<T> q;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (WHOLE && kIntegerSamples<T>)
          q.v[k] = static_cast<T>(v[c][k].v);
        else
          block::store_sample(&q.v[k], v[c][k].v);
      }
      store_quad(row + x + c * os[2], q);
    }
    return;
  }
  if constexpr (!VEC) {
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (x + k < width)
#pragma unroll
        for (int c = 0; c < NC; ++c) block::store_sample(row + (x + k) * os[1] + c * os[2], v[c][k].v);
  }
}

// The alpha channel (channel 3) of pixels x..x+3, copied as it is.
template <class T>
FDJPEG_HD void copy_alpha(const T* src, const int* ss, bool in_vector, T* dst, const int* os,
                          bool out_vector, int x, int width) {
  if (in_vector && out_vector && x + 3 < width) {
    store_quad(dst + x + 3 * os[2], load_quad(src + x + 3 * ss[2]));
    return;
  }
  for (int k = 0; k < 4; ++k)
    if (x + k < width) dst[(x + k) * os[1] + 3 * os[2]] = src[(x + k) * ss[1] + 3 * ss[2]];
}

// The alpha channel of the lane's 4 pixels in every row of the tile, in a loop of its own (the
// colour loops stay free of it): the lane's own pixels, so no barrier is needed.
template <class T>
FDJPEG_HD void copy_alpha_rows(const KernelArgs& a, const Tile& t, const T* src, const int* ss,
                               bool in_vector, T* dst, int tid) {
  const Geometry& g = a.g;
  const int gx = t.x0 + 4 * (tid & 31);
  const int rows = imin(t.h, g.height - t.y0);
  for (int y = tid >> 5; y < rows; y += kWarps)
    copy_alpha(src + (t.y0 + y) * ss[0], ss, in_vector, dst + (t.y0 + y) * a.out_stride[0],
               a.out_stride, a.out_vector, gx, g.width);
}

// ---------------------------------------------------------------------------------------------
// The tile

template <class K>
FDJPEG_HD Tile make_tile(const KernelArgs& a, int index, float* smem) {
  const Geometry& g = a.g;
  Tile t;
  const int image = index / g.tiles_per_image;  // launches have fewer than 2^31 tiles
  t.image = image;
  const int within = index - image * g.tiles_per_image;
  const int ty = within / g.tiles_x;
  t.y0 = ty * K::kTileH;
  t.x0 = (within - ty * g.tiles_x) * kTileW;
  t.h = imin(K::kTileH, g.padded_height - t.y0);
  t.w = imin(kTileW, g.padded_width - t.x0);
  t.cy0 = t.y0 / K::kVf - K::kRingY;
  t.cx0 = t.x0 / K::kHf - K::kRingX;
  t.luma = smem;
  t.chroma[0] = smem + K::kTileH * kLumaStride;
  t.chroma[1] = t.chroma[0] + K::kChromaFloats;
  t.tables = t.chroma[1] + K::kChromaFloats;
  if (a.block_map) t.block_map = a.block_map + t.image * a.block_rows * a.block_cols;
  return t;
}

// Colour conversion of the NP pixels of v (channels x pixels) into luma and two chroma planes.
template <class T, class K, int NP>
FDJPEG_HD void to_planes(const Rn<T> (*v)[NP], Rn<T>* y, Rn<T>* c1, Rn<T>* c2) {
#pragma unroll
  for (int k = 0; k < NP; ++k) {
    if (K::kYcc) {
      block::rgb_to_ycbcr(v[0][k], v[1][k], v[2][k], kIntegerSamples<T>, y[k], c1[k], c2[k]);
    } else {
      y[k] = v[0][k];
      if (K::kComps == 3) {
        c1[k] = v[1][k];
        c2[k] = v[2][k];
      }
    }
  }
}

// Phase 1 without subsampling: a warp per tile row, 4 pixels per lane.
template <class T, class K, bool VEC>
FDJPEG_HD void load_plain_rows(const KernelArgs& a, const Tile& t, const T* src, const int* ss,
                               bool vector, int tid) {
  const int x = 4 * (tid & 31);
  for (int y = tid >> 5; y < t.h; y += kWarps) {
    FDJPEG_BUDGET_MARK(VEC ? 1 : 0);
    const T* row = src + imin(t.y0 + y, a.g.height - 1) * ss[0];
    Rn<T> v[K::kComps][4], l[4], c1[4], c2[4];
    fetch4<T, K::kComps, VEC>(row, t.x0 + x, a.g.width, ss, vector, v);
    to_planes<T, K, 4>(v, l, c1, c2);
    st4(t.luma + y * kLumaStride + x, l);
    if (K::kComps == 3) {
      st4(t.chroma[0] + y * K::kChromaStride + x, c1);
      st4(t.chroma[1] + y * K::kChromaStride + x, c2);
    }
  }
}

// A lane's 4 pixels are in the image and can move as one vector in all its rows, or in none:
// the loops are chosen once (the common one without the tests).
template <class T, class K>
FDJPEG_HD void load_plain(const KernelArgs& a, const Tile& t, const T* src, const int* ss,
                          bool vector, int tid) {
  const int x = 4 * (tid & 31);
  if (x >= t.w) return;
  if (vector && t.x0 + x + 3 < a.g.width)
    load_plain_rows<T, K, true>(a, t, src, ss, vector, tid);
  else
    load_plain_rows<T, K, false>(a, t, src, ss, vector, tid);
}

// Phase 1 with subsampling, one item: two chroma samples (columns cc, cc + 1 of chroma row cr, in
// image chroma coordinates), from their 4 x VF pixels; luma too for the tile's own cells.
template <class T, class K, bool LUMA, bool VEC>
FDJPEG_HD void load_cells(const KernelArgs& a, const Tile& t, const T* src, const int* ss,
                          bool vector, int cr, int cc) {
  constexpr int VF = K::kVf;
  Rn<T> v[VF][3][4], l[VF][4], c1[VF][4], c2[VF][4];
#pragma unroll
  for (int dy = 0; dy < VF; ++dy) {
    const T* row = src + imin(cr * VF + dy, a.g.height - 1) * ss[0];
    fetch4<T, 3, VEC>(row, 2 * cc, a.g.width, ss, vector, v[dy]);
    to_planes<T, K, 4>(v[dy], l[dy], c1[dy], c2[dy]);
    if (LUMA) st4(t.luma + (cr * VF + dy - t.y0) * kLumaStride + 2 * cc - t.x0, l[dy]);
  }
  const int at = (cr - t.cy0) * K::kChromaStride + cc - t.cx0;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    // The cell's average over rows 0 and VF - 1 (4:2:2 passes its one row twice, as the CPU core).
    t.chroma[0][at + j] = as_sample(block::downsample_cell(c1[0][2 * j], c1[0][2 * j + 1],
                                                           c1[VF - 1][2 * j], c1[VF - 1][2 * j + 1]),
                                    kIntegerSamples<T>).v;
    t.chroma[1][at + j] = as_sample(block::downsample_cell(c2[0][2 * j], c2[0][2 * j + 1],
                                                           c2[VF - 1][2 * j], c2[VF - 1][2 * j + 1]),
                                    kIntegerSamples<T>).v;
  }
}

// The ring: chroma only, and only where the padded chroma plane has it. Items of two chroma
// columns of one chroma row: bands above and below the tile across the region's width, and 4
// items each side of every chroma row of the tile.
template <class T, class K, bool VEC>
FDJPEG_HD void load_ring(const KernelArgs& a, const Tile& t, const T* src, const int* ss,
                         bool vector, int tid) {
  constexpr int VF = K::kVf;
  constexpr int kBandItems = K::kRingY * K::kChromaCols / 2;  // per band
  constexpr int kRingItems = 2 * kBandItems + (K::kTileH / VF) * K::kRingX;
  for (int i = tid; i < kRingItems; i += kThreads) {
    FDJPEG_BUDGET_MARK(VEC ? 4 : 0);
    int rr, gg;  // region row, item column (2 chroma columns each)
    if (i < 2 * kBandItems) {
      const int band = i >= kBandItems, j = i - band * kBandItems;
      rr = j / (K::kChromaCols / 2) + (band ? K::kRingY + K::kTileH / VF : 0);
      gg = j % (K::kChromaCols / 2);
    } else {
      const int j = i - 2 * kBandItems, q = j & 7;  // 4 items left, 4 right of each row
      rr = K::kRingY + (j >> 3);
      gg = q < 4 ? q : K::kChromaCols / 2 - 8 + q;
    }
    const int cr = t.cy0 + rr, cc = t.cx0 + 2 * gg;
    if (cr < 0 || cr >= a.g.chroma_block_rows * 8 || cc < 0 || cc >= a.g.chroma_block_cols * 8)
      continue;
    load_cells<T, K, false, VEC>(a, t, src, ss, vector, cr, cc);
  }
}

// The tile's own cells: a warp per chroma row, 2 chroma columns (4 pixels) per lane.
template <class T, class K, bool VEC>
FDJPEG_HD void load_tile_cells(const KernelArgs& a, const Tile& t, const T* src, const int* ss,
                               bool vector, int tid) {
  constexpr int VF = K::kVf;
  const int cc = t.x0 / 2 + 2 * (tid & 31);
  for (int r = tid >> 5; r < t.h / VF; r += kWarps) {
    FDJPEG_BUDGET_MARK(VEC ? 1 : 0);
    load_cells<T, K, true, VEC>(a, t, src, ss, vector, t.y0 / VF + r, cc);
  }
}

template <class T, class K>
FDJPEG_HD void load_subsampled(const KernelArgs& a, const Tile& t, const T* src, const int* ss,
                               bool vector, int tid) {
  constexpr int VF = K::kVf;
  const int x = 4 * (tid & 31);
  if (x < t.w) {
    if (vector && t.x0 + x + 3 < a.g.width)
      load_tile_cells<T, K, true>(a, t, src, ss, vector, tid);
    else
      load_tile_cells<T, K, false>(a, t, src, ss, vector, tid);
  }
  if (!a.g.fancy_upsampling) return;  // nearest-sample chroma reads no ring
  // Tiles whose ring lies inside the image and can move as vectors (most) take the loop without
  // the per-item tests.
  if (vector && 2 * t.cx0 >= 0 && 2 * (t.cx0 + K::kChromaCols) <= a.g.width)
    load_ring<T, K, true>(a, t, src, ss, vector, tid);
  else
    load_ring<T, K, false>(a, t, src, ss, vector, tid);
}

// One 8x8 block of the tile's planes, as the transform sees it.
// Blocks outside the padded plane (in the ring at the image's edges, or beyond a partial tile) are
// transformed all the same: their samples lie in shared memory and are never read (the emulation
// fills them with NaN, which would show), and branching around them costs more than they do.
struct BlockRef {
  float* origin;  // top-left sample in shared memory
  int stride;
  int comp;
  int set;  // table set, with a block map
};

// The table set of a block at (row, col) of its plane, with a block map: chroma blocks of a
// subsampled plane take the choice of the luma block at their corner.
template <class K, bool MAP>
FDJPEG_HD int table_set(const KernelArgs& a, const Tile& t, int comp, int row, int col, bool live) {
  if (!MAP || !live) return 0;
  const int hf = comp ? K::kHf : 1, vf = comp ? K::kVf : 1;
  return t.block_map[row * vf * static_cast<int>(a.block_cols) + col * hf];
}

// Blocks of the tile: luma first, then those of each chroma plane, row by row. Without
// subsampling all planes have the tile's geometry and lie one after another (block_ref covers
// them all); with it, chroma_ref takes the chroma blocks, from 0.
template <class K, bool MAP>
FDJPEG_HD BlockRef block_ref(const KernelArgs& a, const Tile& t, int b) {
  static_assert(K::kSub || (K::kChromaStride == kLumaStride && K::kChromaRows == K::kTileH), "plane layout");
  const int plane = b / K::kLumaBlocks, in_plane = b % K::kLumaBlocks;
  const int by = in_plane >> 4, bx = in_plane & 15;  // kTileW / 8 = 16 block columns
  BlockRef r;
  r.comp = plane;
  r.stride = kLumaStride;
  r.origin = t.luma + plane * K::kTileH * kLumaStride + by * 8 * kLumaStride + bx * 8;
  r.set = table_set<K, MAP>(a, t, plane, t.y0 / 8 + by, t.x0 / 8 + bx, by * 8 < t.h && bx * 8 < t.w);
  return r;
}

template <class K, bool MAP>
FDJPEG_HD BlockRef chroma_ref(const KernelArgs& a, const Tile& t, int b) {
  const int plane = b >= K::kChromaBlocks;
  b -= plane * K::kChromaBlocks;
  const int by = b / K::kChromaBlockCols, bx = b % K::kChromaBlockCols;
  BlockRef r;
  r.comp = 1 + plane;
  r.stride = K::kChromaStride;
  // A select, not an index: the pointers stay in registers (an indexed array goes to the stack).
  r.origin = (plane ? t.chroma[1] : t.chroma[0]) + by * 8 * K::kChromaStride + bx * 8;
  const int row = t.cy0 / 8 + by, col = t.cx0 / 8 + bx;
  r.set = table_set<K, MAP>(a, t, r.comp, row, col,
                       row >= 0 && row < a.g.chroma_block_rows && col >= 0 && col < a.g.chroma_block_cols);
  return r;
}

// The transform of one 8x8 block by one thread, the block held in registers: level shift and
// forward AAN down each column, forward AAN along each row u with round(coef / Qc) * Qd and the
// inverse AAN (block::quantize_dequantize: exact division for v = 0 and 4), inverse AAN down each
// column, undo the level shift, clamp (and round 8-bit samples). Every line sees the CPU core's
// operations in its order. A thread per block rather than a lane per line: no data passes between
// lanes (no __syncwarp, no transposes through shared memory), so shared memory is read and written
// once per sample (16 float4 loads and stores a block) instead of once per sample and stage.
template <class T, class K, bool MAP>
FDJPEG_HD void transform_block(const KernelArgs& a, const Tile& t, const BlockRef& r) {
  Rn<T> b[8][8];  // [row][column]
  // 8-bit samples are whole numbers in 0..255 (luma, chroma and reloaded samples are all rounded),
  // so the forward AAN's even part on them and on them less 128 is integer arithmetic below 2^24,
  // exact either way: the shift cancels in every difference (outputs 1..7 and all of the odd part)
  // and takes 8 x 128 from the sum (output 0). Subtracting 1024 from output 0 therefore gives the
  // same floats as subtracting 128 from each sample first (the CPU's order), in 1 operation, not 8.
  constexpr bool kShiftFirst = K::kShift && !kIntegerSamples<T>;
#pragma unroll
  for (int y = 0; y < 8; ++y) {
    ld4(r.origin + y * r.stride, b[y]);
    ld4(r.origin + y * r.stride + 4, b[y] + 4);
  }
#pragma unroll
  for (int x = 0; x < 8; ++x) {
    Rn<T> d[8];
#pragma unroll
    for (int y = 0; y < 8; ++y) d[y] = kShiftFirst ? b[y][x] - Rn<T>{kLevelShift} : b[y][x];
    block::forward_aan(d);
    if (K::kShift && !kShiftFirst) d[0] = d[0] - Rn<T>{8 * kLevelShift};
#pragma unroll
    for (int u = 0; u < 8; ++u) b[u][x] = d[u];
  }
  const float* table = (MAP ? a.sets + r.set * kSetFloats : t.tables) + r.comp * 8 * kRecord;
#pragma unroll
  for (int u = 0; u < 8; ++u) {
    const float* rec = table + u * kRecord;
    Rn<T> scale[8], dq[8];
    ld4(rec, scale);
    ld4(rec + 4, scale + 4);
    ld4(rec + 8, dq);
    ld4(rec + 12, dq + 4);
    // quantize_dequantize reads entry v at [8 v] of each table: divisor for v = 0, 4, else
    // reciprocal; the entries it does not read are left unset.
    float divisor[57], inverse[57], dequant[57];
#pragma unroll
    for (int v = 0; v < 8; ++v) {
      divisor[8 * v] = inverse[8 * v] = scale[v].v;
      dequant[8 * v] = dq[v].v;
    }
    block::forward_aan(b[u]);
    block::quantize_dequantize(b[u], divisor, inverse, dequant);
    block::inverse_aan(b[u]);
  }
#pragma unroll
  for (int x = 0; x < 8; ++x) {
    Rn<T> d[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) d[u] = b[u][x];
    block::inverse_aan(d);
#pragma unroll
    for (int y = 0; y < 8; ++y)
      b[y][x] = block::finish_sample(d[y], Rn<T>{kLevelShift}, K::kShift, kIntegerSamples<T>);
  }
#pragma unroll
  for (int y = 0; y < 8; ++y) {
    st4(r.origin + y * r.stride, b[y]);
    st4(r.origin + y * r.stride + 4, b[y] + 4);
  }
}

// Phase 3 without subsampling: a warp per tile row, 4 pixels per lane (VEC as for loads).
template <class T, class K, bool VEC>
FDJPEG_HD void store_plain_rows(const KernelArgs& a, const Tile& t, const T* src, const int* ss,
                                bool in_vector, T* dst, int tid) {
  const Geometry& g = a.g;
  const int x = 4 * (tid & 31), gx = t.x0 + x;
  const int rows = imin(t.h, g.height - t.y0);
  for (int y = tid >> 5; y < rows; y += kWarps) {
    FDJPEG_BUDGET_MARK(VEC ? 3 : 0);
    Rn<T> o[K::kComps][4];
    ld4(t.luma + y * kLumaStride + x, o[0]);
    if (K::kComps == 3) {
      Rn<T> c1[4], c2[4];
      ld4(t.chroma[0] + y * K::kChromaStride + x, c1);
      ld4(t.chroma[1] + y * K::kChromaStride + x, c2);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (K::kYcc) {
          block::ycbcr_to_rgb(o[0][k], c1[k], c2[k], o[0][k], o[1][k], o[2][k]);
        } else {
          o[1][k] = c1[k];
          o[2][k] = c2[k];
        }
      }
    }
    const int gy = t.y0 + y;
    T* row = dst + gy * a.out_stride[0];
    put4<T, K::kComps, VEC, !K::kYcc>(row, gx, g.width, a.out_stride, a.out_vector, o);
  }
}

template <class T, class K>
FDJPEG_HD void store_plain(const KernelArgs& a, const Tile& t, const T* src, const int* ss,
                           bool in_vector, T* dst, int tid) {
  const int x = 4 * (tid & 31), gx = t.x0 + x;
  if (x >= t.w || gx >= a.g.width) return;
  if (a.out_vector && gx + 3 < a.g.width)
    store_plain_rows<T, K, true>(a, t, src, ss, in_vector, dst, tid);
  else
    store_plain_rows<T, K, false>(a, t, src, ss, in_vector, dst, tid);
  if (a.g.channels == 4) copy_alpha_rows(a, t, src, ss, in_vector, dst, tid);
}

// Phase 3 with subsampling: the chroma of one lane's 4 x VF output pixels, chroma row cr and
// columns c0, c0 + 1 (image chroma coordinates). libjpeg's fancy upsampling: vertical sums once per
// chroma sample of the columns c0 - 1 .. c0 + 2, then the horizontal filter per pixel, where the
// first and the last pixel of a chroma row copy their sample (EDGE: this lane may hold one); or,
// without FANCY (chroma too narrow for it), the nearest sample.
template <class T, class K, bool FANCY, bool EDGE>
FDJPEG_HD void upsample_cells(const KernelArgs& a, const Tile& t, int cr, int c0,
                              Rn<T> (*out)[K::kVf][4]) {
  constexpr int VF = K::kVf, S = K::kChromaStride;
  const Geometry& g = a.g;
  const int col = c0 - t.cx0;
#pragma unroll
  for (int p = 0; p < 2; ++p) {
    const float* near = t.chroma[p] + (cr - t.cy0) * S + col;
    if (!FANCY) {
#pragma unroll
      for (int dy = 0; dy < VF; ++dy)
#pragma unroll
        for (int k = 0; k < 4; ++k) out[p][dy][k].v = near[k >> 1];
      continue;
    }
    Rn<T> sum[VF][4];  // columns c0 - 1 .. c0 + 2; row dy takes the far row above (0) or below (1)
    if (VF == 2) {
      const float* up = t.chroma[p] + (imax(cr - 1, 0) - t.cy0) * S + col;
      const float* down = t.chroma[p] + (imin(cr + 1, g.chroma_height - 1) - t.cy0) * S + col;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        sum[0][k] = block::upsample_vertical(Rn<T>{near[k - 1]}, Rn<T>{up[k - 1]});
        sum[VF - 1][k] = block::upsample_vertical(Rn<T>{near[k - 1]}, Rn<T>{down[k - 1]});
      }
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) sum[0][k] = block::upsample_vertical_none(Rn<T>{near[k - 1]});
    }
#pragma unroll
    for (int dy = 0; dy < VF; ++dy)
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const Rn<T> nearer = sum[dy][1 + j], farther = sum[dy][e ? 2 + j : j];
          const int f = c0 + j + (e ? 1 : -1);
          const Rn<T> v = (EDGE && (f < 0 || f >= g.chroma_width))
                           ? block::upsample_horizontal_none(nearer)
                           : block::upsample_horizontal(nearer, farther);
          out[p][dy][2 * j + e] = as_sample(v, kIntegerSamples<T>);
        }
  }
}

template <class T, class K, bool FANCY, bool EDGE, bool VEC>
FDJPEG_HD void store_subsampled_rows(const KernelArgs& a, const Tile& t, const T* src,
                                     const int* ss, bool in_vector, T* dst, int tid) {
  constexpr int VF = K::kVf;
  const Geometry& g = a.g;
  const int x = 4 * (tid & 31), gx = t.x0 + x;
  for (int r = tid >> 5; r < t.h / VF; r += kWarps) {
    const int cr = t.y0 / VF + r;
    if (cr * VF >= g.height) break;
    FDJPEG_BUDGET_MARK(FANCY && !EDGE && VEC ? 3 : 0);
    Rn<T> c[2][VF][4];
    upsample_cells<T, K, FANCY, EDGE>(a, t, cr, gx / 2, c);
#pragma unroll
    for (int dy = 0; dy < VF; ++dy) {
      const int gy = cr * VF + dy;
      if (gy >= g.height) break;
      Rn<T> o[3][4];
      ld4(t.luma + (gy - t.y0) * kLumaStride + x, o[0]);
#pragma unroll
      for (int k = 0; k < 4; ++k) block::ycbcr_to_rgb(o[0][k], c[0][dy][k], c[1][dy][k], o[0][k], o[1][k], o[2][k]);
      T* row = dst + gy * a.out_stride[0];
      put4<T, 3, VEC>(row, gx, g.width, a.out_stride, a.out_vector, o);
    }
  }
}

template <class T, class K>
FDJPEG_HD void store_subsampled(const KernelArgs& a, const Tile& t, const T* src, const int* ss,
                                bool in_vector, T* dst, int tid) {
  const int x = 4 * (tid & 31), gx = t.x0 + x;
  if (x >= t.w || gx >= a.g.width) return;
  // The lane's choice holds for all its rows: the common case runs without the edge tests.
  const int c0 = gx / 2;
  if (!a.g.fancy_upsampling)
    store_subsampled_rows<T, K, false, false, false>(a, t, src, ss, in_vector, dst, tid);
  else if (c0 == 0 || c0 + 2 >= a.g.chroma_width)
    store_subsampled_rows<T, K, true, true, false>(a, t, src, ss, in_vector, dst, tid);
  else if (a.out_vector && gx + 3 < a.g.width)
    store_subsampled_rows<T, K, true, false, true>(a, t, src, ss, in_vector, dst, tid);
  else
    store_subsampled_rows<T, K, true, false, false>(a, t, src, ss, in_vector, dst, tid);
  if (a.g.channels == 4) copy_alpha_rows(a, t, src, ss, in_vector, dst, tid);
}

// ---------------------------------------------------------------------------------------------
// The phases of a tile and their barriers. A scheduler S runs them: on the GPU each thread runs
// its share of a phase and barrier() is __syncthreads(); items() gives the blocks of the transform
// to the threads, one block to a thread (item i to thread i mod 256). HostSched (below) runs the
// same phases on the CPU.

struct DeviceSched {
#ifdef __CUDACC__
  template <class F>
  __device__ void phase(const F& f) {
    f(static_cast<int>(threadIdx.x));
  }
  __device__ void barrier(int) { __syncthreads(); }
  // Items [0, split) prepared by `first`, [split, items) by `second`, in two loops (two simple
  // index maps rather than one with a branch); MARK_*: their budget markers. The second loop
  // starts at the thread after the first one's last item (item i still goes to thread i mod 256),
  // so that threads left idle by the first take the second's items first.
  template <int MARK_FIRST, int MARK_SECOND, class P, class Q, class F>
  __device__ void items(int split, int items, const P& first, const Q& second, const F& f) {
    const int tid = threadIdx.x;
    for (int i = tid; i < split; i += kThreads) {
      FDJPEG_BUDGET_MARK(MARK_FIRST);
      f(first(i));
      FDJPEG_BUDGET_END(MARK_FIRST);
    }
    for (int i = split + ((tid - split) & (kThreads - 1)); i < items; i += kThreads) {
      FDJPEG_BUDGET_MARK(MARK_SECOND);
      f(second(i));
      FDJPEG_BUDGET_END(MARK_SECOND);
    }
  }
#endif
};

// (HostSched's member functions are host-only: run_tile<.., HostSched> is never device code.)
#pragma nv_exec_check_disable
template <class T, class K, class S>
FDJPEG_HD void run_tile(S& s, const KernelArgs& a, int index, float* smem) {
  const Tile t = make_tile<K>(a, index, smem);
  T* dst = static_cast<T*>(a.out) + t.image * a.out_image_stride;
  for (int pass = 0; pass < a.passes; ++pass) {
    // Later passes read what this CTA wrote (tiles are independent when a.passes > 1).
    const T* src = pass == 0 ? static_cast<const T*>(a.in) + t.image * a.in_image_stride : dst;
    const int* ss = pass == 0 ? a.in_stride : a.out_stride;
    const bool vec = pass == 0 ? a.in_vector : a.out_vector;
    const bool copy_tables = pass == 0 && !a.block_map;
    s.phase([&a, &t, src, ss, vec, copy_tables](int tid) {
      if (copy_tables)
        for (int i = tid; i < kSetFloats; i += kThreads) t.tables[i] = a.tables[i];
      if constexpr (K::kSub)
        load_subsampled<T, K>(a, t, src, ss, vec, tid);
      else
        load_plain<T, K>(a, t, src, ss, vec, tid);
    });
    s.barrier(0);
    // Subsampled: luma blocks, then chroma blocks in a loop of their own.
    // With a block map or without (table set 0 in shared memory): two instantiations, chosen
    // once per tile.
    constexpr int kSplit = K::kSub ? K::kLumaBlocks : K::kBlocks;
    auto transform = [&s, &a, &t](auto with_map) {
      constexpr bool MAP = decltype(with_map)::value;
      s.template items<MAP ? 0 : 2, MAP ? 0 : 5>(
          kSplit, K::kBlocks, [&a, &t](int i) { return block_ref<K, MAP>(a, t, i); },
          [&a, &t](int i) { return chroma_ref<K, MAP>(a, t, i - kSplit); },
          [&a, &t](const BlockRef& r) { transform_block<T, K, MAP>(a, t, r); });
    };
    if (a.block_map)
      transform(std::true_type{});
    else
      transform(std::false_type{});
    s.barrier(1);
    s.phase([&a, &t, src, ss, vec, dst](int tid) {
      if constexpr (K::kSub)
        store_subsampled<T, K>(a, t, src, ss, vec, dst, tid);
      else
        store_plain<T, K>(a, t, src, ss, vec, dst, tid);
    });
    // With the present mapping each thread reloads in the next pass only what it stored itself
    // (the emulation agrees without this barrier); it stays so that another mapping cannot race.
    s.barrier(2);
  }
}

#ifdef __CUDACC__
template <class T, class K>
__global__ void __launch_bounds__(kThreads, 2) pipeline_kernel(const __grid_constant__ KernelArgs a) {
  extern __shared__ Quad<float> smem[];
  DeviceSched s;
  run_tile<T, K>(s, a, blockIdx.x, smem[0].v);
}
#endif

// The GPU's freedom of order, on the CPU: the 256 threads of a phase run one after another in a
// shuffled order; a transform phase runs its blocks (a thread each) in a shuffled order. A barrier runs what was queued since the previous one; a
// barrier left out (`drop`, for tests) lets each thread run on into the next phase, as a GPU would.
class HostSched {
 public:
  HostSched(std::mt19937_64* rng, int drop) : rng_(rng), drop_(drop) {}
  template <class F>
  void phase(const F& f) {
    pending_.push_back({std::function<void(int)>(f), {}, 0, 0});
  }
  template <int, int, class P, class Q, class F>
  void items(int split, int items, const P& first, const Q& second, const F& f) {
    pending_.push_back({{}, [=](int i) { i < split ? f(first(i)) : f(second(i)); }, items, split});
  }
  void barrier(int site) {
    if (site != drop_) flush();
  }
  void flush() {
    if (pending_.size() == 1 && pending_[0].items) {
      // The transform alone: its blocks are independent, in any order.
      const Entry& e = pending_[0];
      std::vector<int> order(e.items);
      std::iota(order.begin(), order.end(), 0);
      shuffle(order);
      for (int i : order) {
        FDJPEG_BUDGET_MARK(i < e.split ? 2 : 5);
        e.item(i);
      }
    } else {
      std::vector<int> order(kThreads);
      std::iota(order.begin(), order.end(), 0);
      shuffle(order);
      for (int tid : order)
        for (const Entry& e : pending_) {
          if (!e.items) {
            e.thread(tid);
            continue;
          }
          for (int i = tid; i < e.items; i += kThreads) {
            FDJPEG_BUDGET_MARK(i < e.split ? 2 : 5);
            e.item(i);
          }
        }
    }
    pending_.clear();
  }

 private:
  struct Entry {
    std::function<void(int)> thread;
    std::function<void(int)> item;
    int items;
    int split;  // items from here on run in a second loop on the device
  };
  void shuffle(std::vector<int>& v) {
    if (rng_) std::shuffle(v.begin(), v.end(), *rng_);
  }
  std::mt19937_64* rng_;
  int drop_;
  std::vector<Entry> pending_;
};

// ---------------------------------------------------------------------------------------------
// Host side: geometry, tiling, launch.

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
int64_t ceil_div(int64_t v, int64_t m) { return (v + m - 1) / m; }

size_t element_size(DType d) { return d == DType::u8 ? 1 : (d == DType::f32 ? 4 : 8); }

enum class KindCode { grey, planes, ycc444, ycc422, ycc420 };

template <template <bool> class K>
struct KindTag {
  template <bool SHIFT>
  using With = K<SHIFT>;
};

KindCode kind_of(const BlockGeometry& bg) {
  if (bg.components == 1) return KindCode::grey;
  if (!bg.ycbcr) return KindCode::planes;
  if (bg.v_factor == 2) return KindCode::ycc420;
  return bg.h_factor == 2 ? KindCode::ycc422 : KindCode::ycc444;
}

// Calls f(T{}, K{}) with the sample type and the kind of tile of a call.
template <class F>
auto with_kernel(DType d, KindCode kind, bool shift, F&& f) {
  auto by_shift = [&](auto sample, auto kind_tag) {
    return shift ? f(sample, typename decltype(kind_tag)::template With<true>{})
                 : f(sample, typename decltype(kind_tag)::template With<false>{});
  };
  auto by_kind = [&](auto sample) {
    switch (kind) {
      case KindCode::grey:
        return by_shift(sample, KindTag<Grey>{});
      case KindCode::planes:
        return by_shift(sample, KindTag<Planes>{});
      case KindCode::ycc444:
        return by_shift(sample, KindTag<Ycc444>{});
      case KindCode::ycc422:
        return by_shift(sample, KindTag<Ycc422>{});
      default:
        return by_shift(sample, KindTag<Ycc420>{});
    }
  };
  switch (d) {
    case DType::u8:
      return by_kind(uint8_t{});
    case DType::f32:
      return by_kind(float{});
    default:
      return by_kind(double{});
  }
}

size_t smem_bytes(KindCode kind) {
  return with_kernel(DType::u8, kind, false, [](auto, auto k) { return decltype(k)::kSmemBytes; });
}

struct Plan {
  KernelArgs args;
  KindCode kind = KindCode::grey;
  bool shift = false;  // level shift
  DType dtype = DType::u8;
  int64_t tiles = 0;
  size_t smem_bytes = 0;
  bool ring = false;  // tiles read pixels of their neighbours
  int launches = 1;  // passes that need one launch each (with a ring)
  std::vector<float> sets;  // K table sets (kSetFloats each), with a block map
};

// The tables of one set as the kernel reads them (kRecord).
void pack_table_set(const float* quant, const float* dequant, float* out) {
  float aan[576];  // aan_table_set's layout: per component divisors, reciprocals, dequant factors
  aan_table_set(quant, dequant, aan);
  for (int c = 0; c < 3; ++c)
    for (int u = 0; u < 8; ++u) {
      float* rec = out + (c * 8 + u) * kRecord;
      for (int v = 0; v < 8; ++v) {
        const int at = c * 192 + v * 8 + u;
        rec[v] = (v & 3) == 0 ? aan[at] : aan[at + 64];
        rec[8 + v] = aan[at + 128];
      }
      for (int k = 16; k < kRecord; ++k) rec[k] = 0.f;
    }
}

// The byte range an image batch covers.
std::pair<uintptr_t, uintptr_t> byte_range(const BatchView& v) {
  int64_t extent = 0;
  for (int d = 0; d < 4; ++d) extent += (v.shape[d] - 1) * v.stride[d];
  const uintptr_t lo = reinterpret_cast<uintptr_t>(v.data);
  return {lo, lo + static_cast<uintptr_t>(extent + 1) * element_size(v.dtype)};
}

// Whether two elements of the view share memory (a stride of 0, or strides that interleave).
bool self_overlapping(const BatchView& v) {
  int dims[4] = {0, 1, 2, 3};
  std::sort(dims, dims + 4, [&](int x, int y) { return v.stride[x] < v.stride[y]; });
  int64_t reach = 0;  // largest offset reachable through the smaller strides
  for (int d : dims) {
    if (v.shape[d] == 1) continue;
    if (v.stride[d] <= reach) return true;
    reach += (v.shape[d] - 1) * v.stride[d];
  }
  return false;
}

// Whether 4 pixels of a row can move as one aligned vector (Quad).
bool vector_ok(const BatchView& v) {
  const int64_t e = static_cast<int64_t>(element_size(v.dtype));
  return v.stride[2] == 1 && reinterpret_cast<uintptr_t>(v.data) % (4 * e) == 0 &&
         (v.shape[0] == 1 || v.stride[0] % 4 == 0) && (v.shape[1] == 1 || v.stride[1] % 4 == 0) &&
         (v.shape[3] == 1 || v.stride[3] % 4 == 0);
}

void set_input(KernelArgs& a, const BatchView& v) {
  a.in = v.data;
  a.in_image_stride = v.stride[0];
  for (int d = 0; d < 3; ++d) a.in_stride[d] = static_cast<int>(v.stride[d + 1]);
  a.in_vector = vector_ok(v);
}

void set_output(KernelArgs& a, const BatchView& v) {
  a.out = v.data;
  a.out_image_stride = v.stride[0];
  for (int d = 0; d < 3; ++d) a.out_stride[d] = static_cast<int>(v.stride[d + 1]);
  a.out_vector = vector_ok(v);
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
  if (self_overlapping(out))
    return fail(Status::bad_input, "output elements overlap (a stride of 0, or strides that interleave)");
  KernelArgs& a = p.args;
  Geometry& g = a.g;
  // The block geometry of the CPU core, narrowed to the kernel's 32 bits (sizes checked above).
  const BlockGeometry bg =
      block_geometry(in.shape[1], in.shape[2], in.shape[3], spec.color, spec.subsampling);
  p.kind = kind_of(bg);
  p.shift = spec.level_shift;
  p.dtype = in.dtype;
  g.height = static_cast<int>(bg.height);
  g.width = static_cast<int>(bg.width);
  g.channels = static_cast<int>(bg.channels);
  g.padded_height = static_cast<int>(bg.padded_height);
  g.padded_width = static_cast<int>(bg.padded_width);
  g.chroma_height = static_cast<int>(bg.chroma_height);
  g.chroma_width = static_cast<int>(bg.chroma_width);
  g.chroma_block_rows = static_cast<int>(bg.chroma_padded_height / 8);
  g.chroma_block_cols = static_cast<int>(bg.chroma_padded_width / 8);
  g.fancy_upsampling = bg.fancy_upsampling;
  p.ring = bg.h_factor * bg.v_factor > 1 && bg.fancy_upsampling;
  const int tile_height =
      with_kernel(DType::u8, p.kind, false, [](auto, auto k) { return decltype(k)::kTileH; });
  g.tiles_x = static_cast<int>(ceil_div(g.padded_width, kTileW));
  g.tiles_per_image = static_cast<int>(ceil_div(g.padded_height, tile_height)) * g.tiles_x;
  p.smem_bytes = smem_bytes(p.kind);
  p.tiles = in.shape[0] * g.tiles_per_image;
  if (p.tiles > 0x7fffffff)
    return fail(Status::bad_input, "batch too large for one launch (more than 2^31 tiles)");

  // Input and output may be the very same view (in place: each CTA reads its tile before it
  // writes it), unless tiles read their neighbours; no other overlap.
  const auto ri = byte_range(in), ro = byte_range(out);
  if (ri.first < ro.second && ro.first < ri.second) {
    const bool same = in.data == out.data &&
                      std::equal(in.stride, in.stride + 4, out.stride);
    if (!same)
      return fail(Status::bad_input, "input and output overlap (only the very same view can be processed in place)");
    if (p.ring)
      return fail(Status::bad_input, "input and output must be different buffers with subsampling");
  }

  set_input(a, in);
  set_output(a, out);
  pack_table_set(spec.quant, spec.dequant, a.tables);
  if (spec.block_tables) {
    a.block_rows = spec.block_rows;  // checked by validate()
    a.block_cols = spec.block_cols;
    p.sets.resize(static_cast<size_t>(spec.table_sets) * kSetFloats);
    for (int k = 0; k < spec.table_sets; ++k)
      pack_table_set(spec.quant + k * 192, spec.dequant + k * 192, p.sets.data() + k * kSetFloats);
  }
  // Passes of independent tiles run in one launch; with a ring, each pass needs the whole
  // previous result, so each gets its own launch.
  if (p.ring) {
    a.passes = 1;
    p.launches = spec.passes;
  } else {
    a.passes = spec.passes;
    p.launches = 1;
  }
  return {};
}

// Bytes of device memory a call needs besides its images: the table sets and the block map, then
// (256-byte aligned) the intermediate image of multi-launch runs.
struct Workspace {
  size_t sets = 0, map = 0, scratch_at = 0, scratch = 0;
  size_t total() const { return scratch ? scratch_at + scratch : sets + map; }
};

Workspace workspace_of(const Plan& p, const BatchView& in) {
  Workspace w;
  if (p.args.block_rows) {
    w.sets = p.sets.size() * sizeof(float);
    w.map = static_cast<size_t>(in.shape[0] * p.args.block_rows * p.args.block_cols);
  }
  w.scratch_at = static_cast<size_t>(round_up(static_cast<int64_t>(w.sets + w.map), 256));
  if (p.launches > 1)
    w.scratch = static_cast<size_t>(in.shape[0] * in.shape[1] * in.shape[2] * in.shape[3]) *
                element_size(in.dtype);
  return w;
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
      return fail(Status::no_gpu, "no usable GPU: " + std::string(cudaGetErrorString(e)) +
                                      (e == cudaErrorInsufficientDriver
                                           ? " (fdjpeg's CUDA 13 runtime needs an R580 or newer driver)"
                                           : ""));
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

// The dynamic shared memory a kernel needs is allowed once per device and kernel (the setting is
// per device; launches on other threads, the GIL released, may run meanwhile).
cudaError_t allow_shared_memory(const void* kernel, int device, size_t bytes) {
  static std::mutex mutex;
  static std::set<std::pair<int, const void*>> done;
  std::lock_guard<std::mutex> lock(mutex);
  if (done.count({device, kernel})) return cudaSuccess;
  const cudaError_t e =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (e == cudaSuccess) done.insert({device, kernel});
  return e;
}

cudaError_t launch(const Plan& p, int device, cudaStream_t stream) {
  return with_kernel(p.dtype, p.kind, p.shift, [&](auto sample, auto kind) {
    using T = decltype(sample);
    using K = decltype(kind);
    const cudaError_t e = allow_shared_memory(reinterpret_cast<const void*>(pipeline_kernel<T, K>),
                                              device, K::kSmemBytes);
    if (e != cudaSuccess) return e;
    pipeline_kernel<T, K><<<static_cast<unsigned>(p.tiles), kThreads, K::kSmemBytes, stream>>>(p.args);
    return cudaGetLastError();
  });
}

void emulate_launch(const Plan& p, std::mt19937_64* rng, int drop_barrier) {
  with_kernel(p.dtype, p.kind, p.shift, [&](auto sample, auto kind) {
    using T = decltype(sample);
    using K = decltype(kind);
    std::vector<Quad<float>> smem(K::kSmemBytes / sizeof(Quad<float>));
    std::vector<int> order(static_cast<size_t>(p.tiles));
    std::iota(order.begin(), order.end(), 0);
    if (rng) std::shuffle(order.begin(), order.end(), *rng);
    for (int tile : order) {
      // Shared memory holds garbage at the start of a CTA: NaN, which no read of it survives.
      std::fill(smem[0].v, smem[0].v + smem.size() * 4, std::numeric_limits<float>::quiet_NaN());
      HostSched s(rng, drop_barrier);
      run_tile<T, K>(s, p.args, tile, smem[0].v);
      s.flush();
    }
  });
}

// Source and destination of each launch of a multi-launch run, ending in `out`: ping-pong
// through `scratch` (a dense N x H x W x C buffer) so that no launch reads what it writes.
template <class Step>
void for_each_launch(Plan& p, const BatchView& in, const BatchView& out, void* scratch, Step step) {
  BatchView dense = in;
  dense.data = scratch;
  dense.stride[3] = 1;
  for (int d = 2; d >= 0; --d) dense.stride[d] = dense.stride[d + 1] * in.shape[d + 1];
  BatchView src = in;
  for (int i = 0; i < p.launches; ++i) {
    const bool to_out = (p.launches - 1 - i) % 2 == 0;
    const BatchView& dst = to_out ? out : dense;
    set_input(p.args, src);
    set_output(p.args, dst);
    step();
    src = dst;
  }
}

// Makes `device` current for the call and gives the caller's current device back after it.
class DeviceScope {
 public:
  cudaError_t enter(int device) {
    cudaError_t e = cudaGetDevice(&previous_);
    if (e == cudaSuccess) e = cudaSetDevice(device);
    entered_ = e == cudaSuccess;
    return e;
  }
  ~DeviceScope() {
    if (entered_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
  bool entered_ = false;
};

}  // namespace

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

Result workspace_size(const BatchView& in, const BatchView& out, const QuantSpec& spec, size_t* bytes) {
  Plan p;
  Result planned = make_plan(in, out, spec, p);
  if (!planned.ok()) return planned;
  *bytes = workspace_of(p, in).total();
  return {};
}

Result occupancy(DType dtype, const BatchView& in, const QuantSpec& spec, int device, int* ctas) {
  const BlockGeometry bg =
      block_geometry(in.shape[1], in.shape[2], in.shape[3], spec.color, spec.subsampling);
  const std::string problem = device_problem();
  if (!problem.empty()) return fail(Status::no_gpu, problem);
  DeviceScope scope;
  cudaError_t e = scope.enter(device);
  if (e != cudaSuccess) return cuda_failure(e, "cudaSetDevice");
  e = with_kernel(dtype, kind_of(bg), spec.level_shift, [&](auto sample, auto kind) {
    using T = decltype(sample);
    using K = decltype(kind);
    const void* kernel = reinterpret_cast<const void*>(pipeline_kernel<T, K>);
    cudaError_t r = allow_shared_memory(kernel, device, K::kSmemBytes);
    if (r == cudaSuccess) r = cudaOccupancyMaxActiveBlocksPerMultiprocessor(ctas, kernel, kThreads, K::kSmemBytes);
    return r;
  });
  if (e != cudaSuccess) {
    cudaGetLastError();
    return cuda_failure(e, "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  }
  return {};
}

Result quantize_on_device(const BatchView& in, const BatchView& out, const QuantSpec& spec,
                          int device, std::uintptr_t stream_handle, void* workspace,
                          size_t workspace_bytes) {
  Plan p;
  Result planned = make_plan(in, out, spec, p);
  if (!planned.ok()) return planned;
  const Workspace w = workspace_of(p, in);
  if (w.total() > 0 && (!workspace || workspace_bytes < w.total())) {
    std::ostringstream msg;
    msg << "this call needs a device workspace of " << w.total() << " bytes (got " << workspace_bytes << ")";
    return fail(Status::bad_input, msg.str());
  }
  const std::string problem = device_problem();
  if (!problem.empty()) return fail(Status::no_gpu, problem);
  DeviceScope scope;
  cudaError_t e = scope.enter(device);
  if (e != cudaSuccess) return cuda_failure(e, "cudaSetDevice");
  for (const auto& [ptr, name] : {std::pair<const void*, const char*>{in.data, "input"},
                                  {out.data, "output"}, {workspace, "workspace"}}) {
    if (!ptr) continue;
    Result r = check_pointer(ptr, device, name);
    if (r.status != Status::ok) return r;
  }
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  char* buffer = static_cast<char*>(workspace);
  if (w.sets) {
    // The table sets and the block map, first copied into memory this call owns: the caller's
    // map may change once the call returns, before a stream-ordered copy has read it.
    std::vector<char> host(w.sets + w.map);
    std::memcpy(host.data(), p.sets.data(), w.sets);
    std::memcpy(host.data() + w.sets, spec.block_tables, w.map);
    p.args.sets = reinterpret_cast<const float*>(buffer);
    p.args.block_map = reinterpret_cast<const uint8_t*>(buffer + w.sets);
    // From pageable memory: returns once the bytes are staged, so `host` may go.
    e = cudaMemcpyAsync(buffer, host.data(), host.size(), cudaMemcpyHostToDevice, stream);
  }
  if (e == cudaSuccess)
    for_each_launch(p, in, out, buffer + w.scratch_at, [&] {
      if (e == cudaSuccess) e = launch(p, device, stream);
    });
  if (e != cudaSuccess) {
    cudaGetLastError();
    return cuda_failure(e, "launching the fdjpeg kernel");
  }
  return {};
}

Result emulate_on_host(const BatchView& in, const BatchView& out, const QuantSpec& spec,
                       const EmulationOrder& order) {
  Plan p;
  Result planned = make_plan(in, out, spec, p);
  if (!planned.ok()) return planned;
  if (order.drop_barrier < -1 || order.drop_barrier > 2)
    return fail(Status::bad_input, "drop_barrier must be -1 (none) or a barrier of the tile: 0, 1 or 2");
  if (spec.block_tables) {
    p.args.sets = p.sets.data();
    p.args.block_map = spec.block_tables;
  }
  std::vector<char> scratch;
  if (p.launches > 1)
    scratch.resize(static_cast<size_t>(in.shape[0] * in.shape[1] * in.shape[2] * in.shape[3]) *
                   element_size(in.dtype));
  std::mt19937_64 rng(order.seed);
  for_each_launch(p, in, out, scratch.data(),
                  [&] { emulate_launch(p, order.shuffle ? &rng : nullptr, order.drop_barrier); });
  return {};
}

}  // namespace cuda
}  // namespace fdjpeg
