// Public C++ interface of the fdjpeg core: one call runs the whole block-quantization pipeline
// (colour conversion, level shift, chroma subsampling, 8x8 DCT, quantize/dequantize, inverse DCT,
// upsampling, colour back, clamp/round) over a batch of strided images. No Python types here.
#pragma once

#include <cstdint>
#include <string>

namespace fdjpeg {

enum class Color : int { none = 0, ycbcr = 1 };
enum class Subsampling : int { s444 = 0, s422 = 1, s420 = 2 };
enum class DType : int { u8 = 0, f32 = 1, f64 = 2 };

// A batch of N images, H x W x C, addressed through element strides (any layout: NHWC, NCHW, views).
struct BatchView {
  void* data = nullptr;
  DType dtype = DType::u8;
  int64_t shape[4] = {0, 0, 0, 0};   // N, H, W, C
  int64_t stride[4] = {0, 0, 0, 0};  // in elements, same order
};

struct QuantSpec {
  Color color = Color::none;
  Subsampling subsampling = Subsampling::s444;
  bool level_shift = false;
  int passes = 1;
  // K table sets, each 3 components x 64 entries in natural (row-major, u*8+v) order.
  // Component 0 is luma (or the first channel), 1 and 2 chroma (or the other channels).
  int table_sets = 1;
  const float* quant = nullptr;    // Qc: coefficients are rounded to multiples of these steps
  const float* dequant = nullptr;  // Qd: rounded indices are multiplied by these
  // Optional per-block choice of table set (stochastic local quantization): N x rows x cols,
  // one entry per 8x8 block of the padded luma plane; nullptr means table set 0 everywhere.
  const uint8_t* block_tables = nullptr;
  int64_t block_rows = 0, block_cols = 0;
};

// Chroma subsampling factors (1 or 2 each way); none unless the image is YCbCr with chroma.
struct ChromaFactors {
  int h = 1, v = 1;
};
ChromaFactors chroma_factors(Subsampling subsampling, bool subsampled);

// Geometry the caller needs to build a block-table map: padded luma size in 8x8 blocks.
void padded_blocks(int64_t height, int64_t width, Subsampling subsampling, bool subsampled,
                   int64_t* block_rows, int64_t* block_cols);

// Empty if `in`, `out` and `spec` make a well-formed call, else what is wrong (both back ends).
std::string validate(const BatchView& in, const BatchView& out, const QuantSpec& spec);

// One table set (3 components x 64 steps of Qc and Qd, natural order) scaled for the AAN
// transforms, as the kernels hold it: per component 64 divisors Qc aan(u) aan(v) 8, their 64
// reciprocals, 64 dequantizers Qd aan(u) aan(v) / 8, each at index v * 8 + u (576 floats).
void aan_table_set(const float* quant, const float* dequant, float* out);

// Runs the pipeline from `in` into `out` (same shape; `out` may alias `in` exactly).
// Returns an empty string on success, else a message describing the bad input.
std::string quantize(const BatchView& in, const BatchView& out, const QuantSpec& spec,
                     int threads);

}  // namespace fdjpeg
