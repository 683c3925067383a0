// Time of each stage of the AVX-512 VBMI stripe kernels alone, on one 512-pixel row of 8-bit RGB
// kept in the first level of cache: where a pixel's time goes, stage by stage, without the rest of
// the pipeline around it. Needs a CPU with AVX-512 VBMI.
//
//   g++ -O3 -std=c++17 -fno-math-errno -fno-trapping-math -ffp-contract=off -Icsrc \
//       bench/kernel_stages.cpp -o /tmp/kernel_stages && /tmp/kernel_stages
//
// (the flags of the module's kernels, CMakeLists.txt). Each line: the best of 15 rounds of 20,000
// calls, per 512-pixel row, and per 512x512 image at the number of rows the stage runs for one
// (chroma resampling: two planes, downsampling every second row; the transform: blocks of the
// image's planes, 3 x 4096 for FD, 4096 + 2 x 1024 for jpeg 4:2:0).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

// The VBMI variant as the module builds it (its namespace fdjpeg::detail::avx512vbmi, its vector
// types and options), so that the stages timed here are the shipped ones.
#include "../csrc/kernels_avx512vbmi.cpp"

#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,prefer-vector-width=512")
namespace stages {
using namespace fdjpeg::detail;
using namespace fdjpeg::detail::avx512vbmi;

// The widest of the variant's block vector types (the one whole bands take).
template <class W, class... Narrower>
W widest(VecList<W, Narrower...>);

__attribute__((noinline)) void transform_band8(float* band, int64_t stride, int64_t blocks, const BlockTables& t,
                                               float shift, Finish finish) {
  using W = decltype(widest(BlockVecs{}));
  for (int64_t b = 0; b + W::kBlocks <= blocks; b += W::kBlocks) transform_blocks<W>(band + b * 8, stride, t, shift, finish);
}
__attribute__((noinline)) void read_ycbcr(const uint8_t* src, int64_t w, float* p0, float* p1, float* p2) {
  read_rgb8<Colour::ycbcr_integer>(src, w, p0, p1, p2);
}
__attribute__((noinline)) void read_plain(const uint8_t* src, int64_t w, float* p0, float* p1, float* p2) {
  read_rgb8<Colour::none>(src, w, p0, p1, p2);
}
__attribute__((noinline)) void write_ycbcr(const float* p0, const float* p1, const float* p2, int64_t w,
                                           float* const* rgb, uint8_t* dst) {
  write_rgb8<true>(p0, p1, p2, w, rgb, dst);
}
__attribute__((noinline)) void write_plain(const float* p0, const float* p1, const float* p2, int64_t w,
                                           float* const* rgb, uint8_t* dst) {
  write_rgb8<false>(p0, p1, p2, w, rgb, dst);
}
__attribute__((noinline)) void downsample(const float* a, const float* b, int64_t cols, float* dst) {
  downsample_row<true>(a, b, cols, dst);
}
__attribute__((noinline)) void upsample(const ImageJob& job, float* vertical, float* out) {
  upsample_row<true>(job, 1, 5, vertical, out);
}
}  // namespace stages
#pragma GCC pop_options

using namespace fdjpeg::detail;

namespace {
constexpr int64_t kWidth = 512;

float* floats(int64_t n, int mod) {
  float* p = static_cast<float*>(std::aligned_alloc(64, (n + 64) * sizeof(float)));
  for (int64_t i = 0; i < n + 64; ++i) p[i] = static_cast<float>((i * 37) % mod);
  return p;
}

template <class F>
void report(const char* name, double rows_per_image, F&& fn) {
  double best = 1e30;
  for (int round = 0; round < 15; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int k = 0; k < 20000; ++k) fn();
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / 20000;
    best = std::min(best, ns);
  }
  std::printf("%-44s %8.1f ns a row   %7.1f us a 512x512 image\n", name, best, best * rows_per_image / 1000);
}
}  // namespace

int main() {
  uint8_t* pixels = static_cast<uint8_t*>(std::aligned_alloc(64, 3 * kWidth + 64));
  for (int64_t i = 0; i < 3 * kWidth; ++i) pixels[i] = static_cast<uint8_t>((i * 37) % 256);
  float *y = floats(kWidth, 256), *cb = floats(kWidth, 255), *cr = floats(kWidth, 254), *half = floats(kWidth, 256);
  float* rgb[3] = {floats(kWidth, 256), floats(kWidth, 256), floats(kWidth, 256)};
  float* vertical = floats(kWidth + 32, 256);
  float* upsampled = floats(kWidth, 256);

  ImageJob job{};  // one 4:2:0 chroma plane of 24 rows for upsample_row
  job.width = job.padded_width = kWidth;
  job.height = 512;
  job.h_factor = job.v_factor = 2;
  job.chroma_width = kWidth / 2;
  job.chroma_height = 256;
  job.fancy_upsampling = true;
  job.plane[1] = floats(kWidth / 2 * 24, 256);
  job.plane_stride[1] = kWidth / 2;
  job.plane_rows[1] = 24;

  BlockTables tables;  // steps of a plausible table; the time does not depend on their values
  for (int i = 0; i < 64; ++i) {
    tables.divisor[i] = 16.f + i;
    tables.inv_divisor[i] = 1.f / tables.divisor[i];
    tables.dequant[i] = tables.divisor[i] / 64;
  }
  float* band = floats(8 * kWidth, 256);

  std::printf("one thread; stages of the avx512vbmi kernels on one %lld-pixel row\n", static_cast<long long>(kWidth));
  report("read RGB (FD)", 512, [&] { stages::read_plain(pixels, kWidth, y, cb, cr); });
  report("read RGB -> YCbCr (jpeg)", 512, [&] { stages::read_ycbcr(pixels, kWidth, y, cb, cr); });
  report("downsample a chroma row (4:2:0)", 2 * 256, [&] { stages::downsample(cb, cr, kWidth / 2, half); });
  report("transform a band of 64 blocks (FD)", 3 * 64, [&] { stages::transform_band8(band, kWidth, kWidth / 8, tables, 0.f, stages::Finish::in_write); });
  report("transform a band of 64 blocks (jpeg 4:2:0)", 64 + 2 * 16,
         [&] { stages::transform_band8(band, kWidth, kWidth / 8, tables, 128.f, stages::Finish::clamp_round); });
  report("upsample a chroma row (4:2:0)", 2 * 512, [&] { stages::upsample(job, vertical + 16, upsampled); });
  report("write RGB (FD)", 512, [&] { stages::write_plain(y, cb, cr, kWidth, rgb, pixels); });
  report("YCbCr -> write RGB (jpeg)", 512, [&] { stages::write_ycbcr(y, cb, cr, kWidth, rgb, pixels); });
  return 0;
}
