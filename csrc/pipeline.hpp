// Public C++ interface of the fdjpeg core: one call runs the whole block-quantization pipeline
// (colour conversion, level shift, chroma subsampling, 8x8 DCT, quantize/dequantize, inverse DCT,
// upsampling, colour back, clamp/round) over a batch of strided images. No Python types here.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

namespace fdjpeg {

enum class Color : int { none = 0, ycbcr = 1 };
enum class Subsampling : int { s444 = 0, s422 = 1, s420 = 2 };
enum class DType : int { u8 = 0, f32 = 1, f64 = 2 };

// Limits of a call, checked by validate() and the bindings. A call cannot be interrupted, so the
// number of passes is capped; more threads than this only cost start-up time.
constexpr int kMaxPasses = 64;
constexpr int kMaxThreads = 1024;

// How a call ended, for both back ends (CPU core and CUDA module); the bindings map each kind to
// one Python exception class (csrc/py_status.hpp), so no caller has to read message text.
enum class Status : int {
  ok = 0,
  bad_input,      // the arguments describe something the pipeline cannot take (ValueError)
  input_range,    // float samples outside [0, 1], NaN or infinite (InputRangeError, a ValueError)
  out_of_memory,  // host or device memory could not be had (MemoryError)
  no_gpu,         // no device, no driver, or a driver too old for this build (RuntimeError)
  device_error,   // anything else the CUDA runtime reported (RuntimeError)
};

struct Result {
  Status status = Status::ok;
  std::string message;
  bool ok() const { return status == Status::ok; }
};

inline Result fail(Status status, std::string message) { return Result{status, std::move(message)}; }

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

// Where the blocks of one H x W x C image lie, for both back ends: the planes that go through the
// DCT, the MCU, the padded (whole-MCU) plane sizes and the real chroma extent that upsampling
// replicates at its edges.
struct BlockGeometry {
  int64_t height = 0, width = 0, channels = 0;
  int components = 1;  // planes through the DCT: 1 (grey) or 3
  bool ycbcr = false;  // RGB <-> YCbCr around the transform
  int h_factor = 1, v_factor = 1;           // chroma subsampling factors (1 or 2)
  int64_t mcu_height = 8, mcu_width = 8;    // luma pixels per MCU
  int64_t padded_height = 0, padded_width = 0;  // luma plane, whole MCUs
  int64_t block_rows = 0, block_cols = 0;   // luma plane in 8x8 blocks
  int64_t chroma_padded_height = 0, chroma_padded_width = 0;  // chroma planes (whole blocks)
  int64_t chroma_height = 0, chroma_width = 0;  // real chroma extent (edges of upsampling)
  // libjpeg's triangle filter needs a chroma plane over 2 samples wide; narrower ones are
  // replicated (as libjpeg does).
  bool fancy_upsampling = true;
};
BlockGeometry block_geometry(int64_t height, int64_t width, int64_t channels, Color color,
                             Subsampling subsampling);

// Geometry the caller needs to build a block-table map: padded luma size in 8x8 blocks.
void padded_blocks(int64_t height, int64_t width, Subsampling subsampling, bool subsampled,
                   int64_t* block_rows, int64_t* block_cols);

// Status::ok if `in`, `out` and `spec` make a well-formed call, else what is wrong (both back ends).
Result validate(const BatchView& in, const BatchView& out, const QuantSpec& spec);

// One table set (3 components x 64 steps of Qc and Qd, natural order) scaled for the AAN
// transforms, as the kernels hold it: per component 64 divisors Qc aan(u) aan(v) 8, their 64
// reciprocals, 64 dequantizers Qd aan(u) aan(v) / 8, each at index v * 8 + u (576 floats).
void aan_table_set(const float* quant, const float* dequant, float* out);

// Runs the pipeline from `in` into `out` (same shape; `out` may alias `in` exactly) on up to
// `threads` threads (0: one per core). Float samples must lie in [0, 1] in their own type;
// otherwise the result is Status::input_range with the complete message (NaN / infinite values,
// smallest and largest finite sample) and `out` is unspecified.
Result quantize(const BatchView& in, const BatchView& out, const QuantSpec& spec, int threads);

}  // namespace fdjpeg
