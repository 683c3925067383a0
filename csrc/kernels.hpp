// The per-stripe work of the pipeline, written once and compiled for several instruction sets.
//
// Everything here is force-inlined into the ISA-specific entry points of kernels.cpp, so each entry
// point gets its own copy built for its target (AVX2+FMA or the x86-64 baseline); no out-of-line
// function here can leak AVX2 code into the baseline path.
//
// Layout of the work: an image is cut into stripes of one MCU row (8 or 16 pixel rows). Phase A of
// a stripe reads the pixels (edge-replicated up to whole MCUs), converts colour, subsamples chroma
// into float planes and runs DCT -> quantize -> dequantize -> IDCT on every 8x8 block of the stripe.
// Phase B writes the stripe back: chroma upsampling (libjpeg's "fancy" triangle filter, which needs
// the chroma rows of the neighbouring stripes), colour back, clamp, round. Blocks are transformed
// eight at a time, one block per SIMD lane, so every arithmetic loop below runs over lanes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "pipeline.hpp"

#define FDJPEG_INLINE inline __attribute__((always_inline))

namespace fdjpeg {
namespace detail {

constexpr int kLanes = 8;  // blocks transformed together

// Orthonormal 8-point DCT-II basis split into its even and odd halves:
// even[m][k] = basis[2m][k], odd[m][k] = basis[2m+1][k], k < 4 (the other half follows by symmetry).
struct DctBasis {
  float even[4][4];
  float odd[4][4];
};
extern const DctBasis kDctBasis;

struct ImageJob {
  // Source and destination pixels, element strides for rows, columns and channels.
  const void* in = nullptr;
  void* out = nullptr;
  int64_t in_stride[3] = {0, 0, 0};
  int64_t out_stride[3] = {0, 0, 0};
  int64_t height = 0, width = 0, channels = 0;

  int components = 1;      // planes that go through the DCT: 1 (grey) or 3
  bool ycbcr = false;      // convert RGB <-> YCbCr around the transform
  int h_factor = 1;        // chroma subsampling factors (1 or 2)
  int v_factor = 1;
  int64_t mcu_height = 8;  // pixel rows per stripe
  int64_t padded_height = 0, padded_width = 0;
  int64_t chroma_height = 0, chroma_width = 0;  // real chroma extent (edges of upsampling)
  float shift = 0.f;       // level shift subtracted before the DCT
  // 8-bit images: component samples are whole numbers wherever libjpeg stores them as JSAMPLEs
  // (after colour conversion, downsampling, IDCT and upsampling), as in a real JPEG round trip.
  bool integer_samples = false;

  float* plane[3] = {nullptr, nullptr, nullptr};
  int64_t plane_stride[3] = {0, 0, 0};

  // Table sets, K x 3 x 64: quantization steps, their reciprocals, dequantization steps.
  const float* quant = nullptr;
  const float* inv_quant = nullptr;
  const float* dequant = nullptr;
  const uint8_t* block_tables = nullptr;  // this image's table-set index per luma block, or null
  int64_t block_cols = 0;
};

// ---------------------------------------------------------------------------------------------
// Sample conversion

template <class T>
FDJPEG_INLINE float load_sample(const T* p) {
  return static_cast<float>(*p) * 255.f;
}
template <>
FDJPEG_INLINE float load_sample<uint8_t>(const uint8_t* p) {
  return static_cast<float>(*p);
}

// Values arrive clamped to [0, 255].
template <class T>
FDJPEG_INLINE void store_sample(T* p, float v) {
  *p = static_cast<T>(v * (1.f / 255.f));
}
template <>
FDJPEG_INLINE void store_sample<uint8_t>(uint8_t* p, float v) {
  *p = static_cast<uint8_t>(v + 0.5f);
}

FDJPEG_INLINE float clamp255(float v) { return std::min(std::max(v, 0.f), 255.f); }

// Round half to even, exact for |v| < 2^22 (table steps are validated so that |coef / step| is).
FDJPEG_INLINE float round_even(float v) {
  const float magic = 12582912.f;  // 1.5 * 2^23
  return (v + magic) - magic;
}

FDJPEG_INLINE float as_sample(float v, bool integer) { return integer ? round_even(v) : v; }

// ---------------------------------------------------------------------------------------------
// 1-D transforms over 8 lane-vectors: element i of the transform lives at p + i * step.

FDJPEG_INLINE void forward_dct8(const float* src, ptrdiff_t src_step, float* dst,
                                ptrdiff_t dst_step) {
  const DctBasis& b = kDctBasis;
  float sum[4][kLanes], dif[4][kLanes];
  for (int k = 0; k < 4; ++k)
    for (int l = 0; l < kLanes; ++l) {
      const float a = src[k * src_step + l], z = src[(7 - k) * src_step + l];
      sum[k][l] = a + z;
      dif[k][l] = a - z;
    }
  for (int m = 0; m < 4; ++m) {
    float e[kLanes], o[kLanes];
    for (int l = 0; l < kLanes; ++l) {
      e[l] = b.even[m][0] * sum[0][l];
      o[l] = b.odd[m][0] * dif[0][l];
    }
    for (int k = 1; k < 4; ++k)
      for (int l = 0; l < kLanes; ++l) {
        e[l] += b.even[m][k] * sum[k][l];
        o[l] += b.odd[m][k] * dif[k][l];
      }
    for (int l = 0; l < kLanes; ++l) {
      dst[(2 * m) * dst_step + l] = e[l];
      dst[(2 * m + 1) * dst_step + l] = o[l];
    }
  }
}

FDJPEG_INLINE void inverse_dct8(const float* src, ptrdiff_t src_step, float* dst,
                                ptrdiff_t dst_step) {
  const DctBasis& b = kDctBasis;
  for (int k = 0; k < 4; ++k) {
    float e[kLanes], o[kLanes];
    for (int l = 0; l < kLanes; ++l) {
      e[l] = b.even[0][k] * src[l];
      o[l] = b.odd[0][k] * src[src_step + l];
    }
    for (int m = 1; m < 4; ++m)
      for (int l = 0; l < kLanes; ++l) {
        e[l] += b.even[m][k] * src[(2 * m) * src_step + l];
        o[l] += b.odd[m][k] * src[(2 * m + 1) * src_step + l];
      }
    for (int l = 0; l < kLanes; ++l) {
      dst[k * dst_step + l] = e[l] + o[l];
      dst[(7 - k) * dst_step + l] = e[l] - o[l];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Blocks: DCT -> quantize -> dequantize -> IDCT for one 8-row band of one plane.

// round(coef / Qc) * Qd per coefficient. Multiplying by 1/Qc is as good as dividing except on
// exact ties, which only the rational coefficients can hit: those four are divided exactly.
constexpr int kRationalIndex[4] = {0, 4, 32, 36};  // (0,0), (0,4), (4,0), (4,4)

FDJPEG_INLINE void quantize_lanes(float (*coef)[kLanes], const ImageJob& job, int comp,
                                  const uint8_t* lane_sets) {
  float exact[4][kLanes];
  if (!lane_sets) {
    const float* q = job.quant + comp * 64;
    const float* iq = job.inv_quant + comp * 64;
    const float* dq = job.dequant + comp * 64;
    for (int i = 0; i < 4; ++i) {
      const int k = kRationalIndex[i];
      for (int l = 0; l < kLanes; ++l) exact[i][l] = round_even(coef[k][l] / q[k]) * dq[k];
    }
    for (int k = 0; k < 64; ++k)
      for (int l = 0; l < kLanes; ++l) coef[k][l] = round_even(coef[k][l] * iq[k]) * dq[k];
  } else {
    float q[4][kLanes], iq[64][kLanes], dq[64][kLanes];
    for (int l = 0; l < kLanes; ++l) {
      const int64_t base = static_cast<int64_t>(lane_sets[l]) * 192 + comp * 64;
      for (int k = 0; k < 64; ++k) {
        iq[k][l] = job.inv_quant[base + k];
        dq[k][l] = job.dequant[base + k];
      }
      for (int i = 0; i < 4; ++i) q[i][l] = job.quant[base + kRationalIndex[i]];
    }
    for (int i = 0; i < 4; ++i) {
      const int k = kRationalIndex[i];
      for (int l = 0; l < kLanes; ++l) exact[i][l] = round_even(coef[k][l] / q[i][l]) * dq[k][l];
    }
    for (int k = 0; k < 64; ++k)
      for (int l = 0; l < kLanes; ++l) coef[k][l] = round_even(coef[k][l] * iq[k][l]) * dq[k][l];
  }
  for (int i = 0; i < 4; ++i)
    for (int l = 0; l < kLanes; ++l) coef[kRationalIndex[i]][l] = exact[i][l];
}

// Coefficients (0,0), (0,4), (4,0), (4,4) of each lane's block, exactly for whole-number samples:
// basis row 4 is sqrt(1/8) x (+ - - + + - - +), row 0 is sqrt(1/8) x (+ + + + + + + +).
FDJPEG_INLINE void exact_rational_coefficients(const float (*blk)[8][kLanes],
                                               float (*rational)[kLanes]) {
  constexpr float sign4[8] = {1, -1, -1, 1, 1, -1, -1, 1};
  for (int l = 0; l < kLanes; ++l) rational[0][l] = rational[1][l] = rational[2][l] = rational[3][l] = 0.f;
  for (int y = 0; y < 8; ++y) {
    float plain[kLanes] = {}, alternating[kLanes] = {};
    for (int x = 0; x < 8; ++x)
      for (int l = 0; l < kLanes; ++l) {
        plain[l] += blk[y][x][l];
        alternating[l] += sign4[x] * blk[y][x][l];
      }
    for (int l = 0; l < kLanes; ++l) {
      rational[0][l] += plain[l];
      rational[1][l] += alternating[l];
      rational[2][l] += sign4[y] * plain[l];
      rational[3][l] += sign4[y] * alternating[l];
    }
  }
  for (int k = 0; k < 4; ++k)
    for (int l = 0; l < kLanes; ++l) rational[k][l] *= 0.125f;
}

// `band` points at the first of 8 rows of a plane holding `blocks` 8x8 blocks side by side.
// `block_row` is the band's index in its plane (for per-block table choice).
FDJPEG_INLINE void transform_band(const ImageJob& job, int comp, float* band, int64_t stride,
                                  int64_t blocks, int64_t block_row) {
  alignas(64) float blk[8][8][kLanes];
  alignas(64) float tmp[8][8][kLanes];
  const float shift = job.shift;
  const bool integer = job.integer_samples;
  // Chroma blocks of a subsampled plane take the table choice of the luma block at their corner.
  const int hf = comp ? job.h_factor : 1, vf = comp ? job.v_factor : 1;
  for (int64_t b0 = 0; b0 < blocks; b0 += kLanes) {
    const int n = static_cast<int>(std::min<int64_t>(kLanes, blocks - b0));
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x) {
        const float* p = band + y * stride + b0 * 8 + x;
        for (int l = 0; l < n; ++l) blk[y][x][l] = p[l * 8] - shift;
        for (int l = n; l < kLanes; ++l) blk[y][x][l] = 0.f;
      }
    // Four coefficients are rational: (0,0), (0,4), (4,0), (4,4) equal (1/8) x a +-1-weighted
    // sum of the block. Whole-number blocks hit exact rounding ties on them (e.g. 8 x mean / 25 =
    // k + 0.5), so they are computed exactly rather than left to the transform's rounding errors.
    float rational[4][kLanes];
    exact_rational_coefficients(blk, rational);
    for (int x = 0; x < 8; ++x) forward_dct8(&blk[0][x][0], 8 * kLanes, &tmp[0][x][0], 8 * kLanes);
    for (int u = 0; u < 8; ++u) forward_dct8(&tmp[u][0][0], kLanes, &blk[u][0][0], kLanes);
    for (int l = 0; l < kLanes; ++l) {
      blk[0][0][l] = rational[0][l];
      blk[0][4][l] = rational[1][l];
      blk[4][0][l] = rational[2][l];
      blk[4][4][l] = rational[3][l];
    }

    uint8_t lane_sets[kLanes];
    const uint8_t* sets = nullptr;
    if (job.block_tables) {
      const uint8_t* row = job.block_tables + block_row * vf * job.block_cols;
      for (int l = 0; l < kLanes; ++l) lane_sets[l] = l < n ? row[(b0 + l) * hf] : 0;
      sets = lane_sets;
    }
    quantize_lanes(reinterpret_cast<float(*)[kLanes]>(&blk[0][0][0]), job, comp, sets);

    for (int u = 0; u < 8; ++u) inverse_dct8(&blk[u][0][0], kLanes, &tmp[u][0][0], kLanes);
    for (int x = 0; x < 8; ++x) inverse_dct8(&tmp[0][x][0], 8 * kLanes, &blk[0][x][0], 8 * kLanes);
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x) {
        float* p = band + y * stride + b0 * 8 + x;
        for (int l = 0; l < n; ++l) p[l * 8] = as_sample(clamp255(blk[y][x][l] + shift), integer);
      }
  }
}

// ---------------------------------------------------------------------------------------------
// Phase A: pixels -> planes -> transformed planes, for stripe `s`.
// `scratch` holds 2 x mcu_height x padded_width floats (full-resolution chroma before averaging).
// Returns false if a float sample lies outside [0, 1] (NaN and infinities included).

template <class T>
FDJPEG_INLINE bool load_and_transform_stripe(const ImageJob& job, int64_t s, float* scratch) {
  const T* in = static_cast<const T*>(job.in);
  const int64_t W = job.width, Wp = job.padded_width;
  const int64_t rs = job.in_stride[0], cs = job.in_stride[1], ks = job.in_stride[2];
  const bool subsampled = job.h_factor > 1 || job.v_factor > 1;
  bool bad = false;
  for (int64_t r = 0; r < job.mcu_height; ++r) {
    const int64_t y = s * job.mcu_height + r;
    const T* row = in + std::min(y, job.height - 1) * rs;
    float* dst[3];
    for (int c = 0; c < job.components; ++c) dst[c] = job.plane[c] + y * job.plane_stride[c];
    if (subsampled) {
      dst[1] = scratch + r * Wp;
      dst[2] = scratch + (job.mcu_height + r) * Wp;
    }
    if (job.components == 1) {
      for (int64_t x = 0; x < W; ++x) {
        const float v = load_sample(row + x * cs);
        bad |= !(v >= 0.f && v <= 255.f);
        dst[0][x] = v;
      }
    } else {
      for (int64_t x = 0; x < W; ++x) {
        const T* px = row + x * cs;
        const float r0 = load_sample(px), g0 = load_sample(px + ks), b0 = load_sample(px + 2 * ks);
        bad |= !(r0 >= 0.f && r0 <= 255.f && g0 >= 0.f && g0 <= 255.f && b0 >= 0.f &&
                 b0 <= 255.f);
        if (job.ycbcr) {
          const bool integer = job.integer_samples;
          dst[0][x] = as_sample(0.299f * r0 + 0.587f * g0 + 0.114f * b0, integer);
          dst[1][x] = as_sample(-0.168735892f * r0 - 0.331264108f * g0 + 0.5f * b0 + 128.f, integer);
          dst[2][x] = as_sample(0.5f * r0 - 0.418687589f * g0 - 0.081312411f * b0 + 128.f, integer);
        } else {
          dst[0][x] = r0;
          dst[1][x] = g0;
          dst[2][x] = b0;
        }
      }
    }
    for (int c = 0; c < job.components; ++c)
      std::fill(dst[c] + W, dst[c] + Wp, dst[c][W - 1]);
  }

  if (subsampled) {  // average h_factor x v_factor cells of full-resolution chroma
    const int64_t rows = job.mcu_height / job.v_factor, cols = Wp / job.h_factor;
    const float norm = 1.f / static_cast<float>(job.h_factor * job.v_factor);
    for (int c = 1; c < 3; ++c) {
      const float* src = scratch + (c - 1) * job.mcu_height * Wp;
      for (int64_t r = 0; r < rows; ++r) {
        float* dst = job.plane[c] + (s * rows + r) * job.plane_stride[c];
        const float* a = src + r * job.v_factor * Wp;
        const float* b = a + (job.v_factor - 1) * Wp;  // same row when not subsampled vertically
        if (job.v_factor == 2)
          for (int64_t x = 0; x < cols; ++x)
            dst[x] = as_sample((a[2 * x] + a[2 * x + 1] + b[2 * x] + b[2 * x + 1]) * norm,
                               job.integer_samples);
        else
          for (int64_t x = 0; x < cols; ++x)
            dst[x] = as_sample((a[2 * x] + a[2 * x + 1]) * norm, job.integer_samples);
      }
    }
  }

  for (int c = 0; c < job.components; ++c) {
    const int vf = c ? job.v_factor : 1, hf = c ? job.h_factor : 1;
    const int64_t bands = job.mcu_height / vf / 8;
    for (int64_t band = 0; band < bands; ++band) {
      const int64_t block_row = s * bands + band;
      transform_band(job, c, job.plane[c] + block_row * 8 * job.plane_stride[c],
                     job.plane_stride[c], Wp / hf / 8, block_row);
    }
  }
  return !bad;
}

// ---------------------------------------------------------------------------------------------
// Phase B: transformed planes -> pixels, for stripe `s`.
// `scratch` holds 3 x padded_width floats. Needs phase A done for stripes s-1, s, s+1.

// libjpeg's fancy upsampling of one output row of a chroma plane: a triangle filter, 3/4 of the
// nearer sample and 1/4 of the farther one in each direction, edges replicated at the real extent.
// libjpeg falls back to plain replication when the chroma plane is at most 2 samples wide.
FDJPEG_INLINE void upsample_row(const ImageJob& job, int comp, int64_t y, float* vertical,
                                float* out) {
  const float* plane = job.plane[comp];
  const int64_t ps = job.plane_stride[comp], cw = job.chroma_width, ch = job.chroma_height;
  const int64_t i = y / job.v_factor;
  const bool integer = job.integer_samples;
  const float* near = plane + i * ps;
  if (cw <= 2) {
    for (int64_t x = 0; x < job.width; ++x) out[x] = near[x / job.h_factor];
    return;
  }
  if (job.v_factor == 2) {
    const int64_t j = (y & 1) ? std::min(i + 1, ch - 1) : std::max<int64_t>(i - 1, 0);
    const float* far = plane + j * ps;
    for (int64_t x = 0; x < cw; ++x) vertical[x] = 3.f * near[x] + far[x];
  } else {
    for (int64_t x = 0; x < cw; ++x) vertical[x] = 4.f * near[x];
  }
  if (job.h_factor == 1) {
    for (int64_t x = 0; x < job.width; ++x) out[x] = as_sample(vertical[x] * 0.25f, integer);
    return;
  }
  for (int64_t x = 0; x < job.width; ++x) {
    const int64_t c = x >> 1;
    const int64_t f = (x & 1) ? std::min(c + 1, cw - 1) : std::max<int64_t>(c - 1, 0);
    out[x] = as_sample((3.f * vertical[c] + vertical[f]) * 0.0625f, integer);
  }
}

template <class T>
FDJPEG_INLINE void store_stripe(const ImageJob& job, int64_t s, float* scratch) {
  T* out = static_cast<T*>(job.out);
  const T* in = static_cast<const T*>(job.in);
  const int64_t W = job.width;
  const int64_t y_end = std::min((s + 1) * job.mcu_height, job.height);
  const int64_t rs = job.out_stride[0], cs = job.out_stride[1], ks = job.out_stride[2];
  const bool subsampled = job.h_factor > 1 || job.v_factor > 1;
  for (int64_t y = s * job.mcu_height; y < y_end; ++y) {
    T* row = out + y * rs;
    const float* p0 = job.plane[0] + y * job.plane_stride[0];
    if (job.components == 1) {
      for (int64_t x = 0; x < W; ++x) store_sample(row + x * cs, p0[x]);
    } else {
      const float* p1;
      const float* p2;
      if (subsampled) {
        float* cb = scratch + W;
        float* cr = scratch + 2 * W;
        upsample_row(job, 1, y, scratch, cb);
        upsample_row(job, 2, y, scratch, cr);
        p1 = cb;
        p2 = cr;
      } else {
        p1 = job.plane[1] + y * job.plane_stride[1];
        p2 = job.plane[2] + y * job.plane_stride[2];
      }
      for (int64_t x = 0; x < W; ++x) {
        T* px = row + x * cs;
        float r0 = p0[x], g0 = p1[x], b0 = p2[x];
        if (job.ycbcr) {
          const float luma = p0[x], cb = p1[x] - 128.f, cr = p2[x] - 128.f;
          r0 = clamp255(luma + 1.402f * cr);
          g0 = clamp255(luma - 0.344136286f * cb - 0.714136286f * cr);
          b0 = clamp255(luma + 1.772f * cb);
        }
        store_sample(px, r0);
        store_sample(px + ks, g0);
        store_sample(px + 2 * ks, b0);
      }
    }
    if (job.channels == 4) {  // alpha passes through untouched
      const T* src = in + y * job.in_stride[0] + 3 * job.in_stride[2];
      T* dst = row + 3 * ks;
      for (int64_t x = 0; x < W; ++x) dst[x * cs] = src[x * job.in_stride[1]];
    }
  }
}

}  // namespace detail
}  // namespace fdjpeg
