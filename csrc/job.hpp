// Data shared by the driver and the kernels: one image's geometry, buffers and tables.
#pragma once

#include <cstdint>

#include "pipeline.hpp"

namespace fdjpeg {
namespace detail {

// One component's quantization tables for one table set, scaled for the AAN transforms and
// transposed to the order the block kernel holds coefficients in (index v * 8 + u):
// `divisor` = Qc * aan(u) * aan(v) * 8 (the forward AAN output's scale), `inv_divisor` its
// reciprocal, `dequant` = Qd * aan(u) * aan(v) / 8 (the inverse AAN input's scale).
struct BlockTables {
  alignas(32) float divisor[64];
  alignas(32) float inv_divisor[64];
  alignas(32) float dequant[64];
};

// The image's block geometry (shared with the CUDA kernel; a stripe is one MCU row, mcu_height
// pixel rows), its buffers and tables.
struct ImageJob : BlockGeometry {
  // Source and destination pixels, element strides for rows, columns and channels.
  const void* in = nullptr;
  void* out = nullptr;
  int64_t in_stride[3] = {0, 0, 0};
  int64_t out_stride[3] = {0, 0, 0};

  float shift = 0.f;       // level shift subtracted before the DCT
  // 8-bit images: component samples are whole numbers wherever libjpeg stores them as JSAMPLEs
  // (after colour conversion, downsampling, IDCT and upsampling), as in a real JPEG round trip.
  bool integer_samples = false;

  // Component planes. A plane holds `plane_rows` rows and row r lives at r % plane_rows: a ring of
  // stripes, as each thread runs its stripes in order: three where phase B of stripe s reads chroma
  // rows of stripes s-1 .. s+1, else one. It bounds the memory and keeps the rows in cache.
  float* plane[3] = {nullptr, nullptr, nullptr};
  int64_t plane_stride[3] = {0, 0, 0};
  int64_t plane_rows[3] = {1, 1, 1};

  const BlockTables* tables = nullptr;    // table sets x 3 components
  const uint8_t* block_tables = nullptr;  // this image's table-set index per luma block, or null
};

}  // namespace detail
}  // namespace fdjpeg
