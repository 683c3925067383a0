// What the CPU and CUDA back ends share: validation of a call, block geometry, and the
// quantization tables scaled for the AAN transforms.
#include <cmath>
#include <sstream>
#include <string>
#include <utility>

#include "pipeline.hpp"

namespace fdjpeg {

ChromaFactors chroma_factors(Subsampling subsampling, bool subsampled) {
  if (!subsampled) return {};
  switch (subsampling) {
    case Subsampling::s422:
      return {2, 1};
    case Subsampling::s420:
      return {2, 2};
    default:
      return {};
  }
}

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
static int64_t ceil_div(int64_t v, int64_t m) { return (v + m - 1) / m; }

BlockGeometry block_geometry(int64_t height, int64_t width, int64_t channels, Color color,
                             Subsampling subsampling) {
  BlockGeometry g;
  g.height = height;
  g.width = width;
  g.channels = channels;
  g.components = channels == 1 ? 1 : 3;
  g.ycbcr = color == Color::ycbcr && g.components == 3;
  const ChromaFactors f = chroma_factors(subsampling, g.ycbcr);
  g.h_factor = f.h;
  g.v_factor = f.v;
  g.mcu_height = 8 * f.v;
  g.mcu_width = 8 * f.h;
  g.padded_height = round_up(height, g.mcu_height);
  g.padded_width = round_up(width, g.mcu_width);
  g.block_rows = g.padded_height / 8;
  g.block_cols = g.padded_width / 8;
  g.chroma_padded_height = g.padded_height / f.v;
  g.chroma_padded_width = g.padded_width / f.h;
  g.chroma_height = ceil_div(height, f.v);
  g.chroma_width = ceil_div(width, f.h);
  g.fancy_upsampling = g.chroma_width > 2;
  return g;
}

void padded_blocks(int64_t height, int64_t width, Subsampling subsampling, bool subsampled,
                   int64_t* block_rows, int64_t* block_cols) {
  // Three channels stand for "has chroma"; whether it is subsampled is the caller's word.
  const BlockGeometry g = block_geometry(height, width, subsampled ? 3 : 1,
                                         subsampled ? Color::ycbcr : Color::none, subsampling);
  *block_rows = g.block_rows;
  *block_cols = g.block_cols;
}

void aan_table_set(const float* quant, const float* dequant, float* out) {
  double aan[8];  // aan(0) = 1, aan(k) = sqrt(2) cos(k pi / 16); aan(4) is 1 exactly
  const double pi = 3.14159265358979323846;
  for (int k = 0; k < 8; ++k) aan[k] = k == 0 || k == 4 ? 1.0 : std::sqrt(2.0) * std::cos(k * pi / 16);
  for (int c = 0; c < 3; ++c)
    for (int u = 0; u < 8; ++u)
      for (int v = 0; v < 8; ++v) {
        const double scale = aan[u] * aan[v];
        const int natural = c * 64 + u * 8 + v, held = c * 192 + v * 8 + u;
        out[held] = static_cast<float>(quant[natural] * scale * 8.0);
        out[held + 64] = static_cast<float>(1.0 / (quant[natural] * scale * 8.0));
        out[held + 128] = static_cast<float>(dequant[natural] * scale / 8.0);
      }
}

Result validate(const BatchView& in, const BatchView& out, const QuantSpec& spec) {
  const Result ok;
  auto bad = [](std::string m) { return fail(Status::bad_input, std::move(m)); };
  std::ostringstream msg;
  if (!in.data || !out.data) return bad("null image buffer");
  if (in.dtype != out.dtype) return bad("input and output sample types differ");
  for (int d = 0; d < 4; ++d)
    if (in.shape[d] != out.shape[d]) return bad("input and output shapes differ");
  if (in.shape[0] < 1 || in.shape[1] < 1 || in.shape[2] < 1) {
    msg << "expected a non-empty batch of images, got N=" << in.shape[0] << " H=" << in.shape[1]
        << " W=" << in.shape[2];
    return bad(msg.str());
  }
  const int64_t C = in.shape[3];
  if (C != 1 && C != 3 && C != 4) {
    msg << "expected 1, 3 or 4 channels, got " << C;
    return bad(msg.str());
  }
  if (spec.passes < 1 || spec.passes > kMaxPasses) {
    msg << "passes must be in [1, " << kMaxPasses << "], got " << spec.passes;
    return bad(msg.str());
  }
  if (spec.table_sets < 1 || spec.table_sets > 256) return bad("table_sets must be in 1..256");
  if (!spec.quant || !spec.dequant) return bad("missing quantization tables");
  for (int64_t i = 0; i < static_cast<int64_t>(spec.table_sets) * 192; ++i) {
    const float q = spec.quant[i], d = spec.dequant[i];
    if (!(q >= 1e-3f && q <= 65535.f)) return bad("quantization steps must lie in [0.001, 65535]");
    if (!(d >= 0.f && d <= 65535.f)) return bad("dequantization steps must lie in [0, 65535]");
  }
  if (spec.block_tables) {
    int64_t rows = 0, cols = 0;
    padded_blocks(in.shape[1], in.shape[2], spec.subsampling,
                  spec.color == Color::ycbcr && C != 1, &rows, &cols);
    if (spec.block_rows != rows || spec.block_cols != cols) {
      msg << "block table map must be " << rows << " x " << cols << " per image, got "
          << spec.block_rows << " x " << spec.block_cols;
      return bad(msg.str());
    }
    const int64_t count = in.shape[0] * rows * cols;
    for (int64_t i = 0; i < count; ++i)
      if (spec.block_tables[i] >= spec.table_sets)
        return bad("block table map names a table set that does not exist");
  }
  return ok;
}

}  // namespace fdjpeg
