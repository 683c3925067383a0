// The CUDA kernel's tile code in GPU order (shuffled threads, warps and lanes; NaN shared memory)
// on the host under AddressSanitizer: 120 drawn cases (odd sizes 1-257, 1/3/4 channels, every
// subsampling, colour or not, 1-3 passes, block maps). Built and run by the CI step in docs/gpu.md;
// exit status 0 and "ok 120" when no access went astray. Results are compared with the CPU core by
// tests/test_cuda_emulation.py; this run looks for out-of-bounds reads and writes only.
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "fdjpeg_cuda.hpp"
using namespace fdjpeg;
int main() {
  unsigned s = 1;
  auto rnd = [&] { s = s * 1103515245u + 12345u; return (s >> 16) & 0x7fff; };
  int runs = 0;
  for (int trial = 0; trial < 120; ++trial) {
    const int h = 1 + 2 * (rnd() % 129), w = 1 + 2 * (rnd() % 129), c = (int[]){1, 3, 4}[trial % 3];
    const int sub = trial % 3, color = (trial / 3) % 2, passes = 1 + trial % 3;
    std::vector<unsigned char> in(size_t(h) * w * c), out(in.size(), 0xA5);
    for (auto& v : in) v = rnd() & 255;
    std::vector<float> q(3 * 192);
    for (size_t i = 0; i < q.size(); ++i) q[i] = 1 + (i * 7) % 60;
    BatchView a, b;
    a.data = in.data(); b.data = out.data();
    // NHWC, or N x C x H x W (column stride 1: the 4-pixel vector loads and stores)
    const bool planar = trial % 4 == 1;
    const int64_t shape[4] = {1, h, w, c};
    const int64_t stride[4] = {int64_t(h) * w * c, planar ? w : int64_t(w) * c, planar ? 1 : c,
                               planar ? int64_t(h) * w : 1};
    for (int d = 0; d < 4; ++d) { a.shape[d] = b.shape[d] = shape[d]; a.stride[d] = b.stride[d] = stride[d]; }
    QuantSpec spec;
    spec.color = Color(color); spec.subsampling = Subsampling(sub); spec.level_shift = color;
    spec.passes = passes; spec.quant = spec.dequant = q.data(); spec.table_sets = 3;
    int64_t rows = 0, cols = 0;
    padded_blocks(h, w, spec.subsampling, color == 1 && c != 1, &rows, &cols);
    std::vector<unsigned char> map(size_t(rows * cols));
    for (auto& v : map) v = rnd() % 3;
    if (trial % 2) { spec.block_tables = map.data(); spec.block_rows = rows; spec.block_cols = cols; }
    cuda::EmulationOrder order; order.shuffle = true; order.seed = trial;
    Result r = cuda::emulate_on_host(a, b, spec, order);
    if (!r.ok()) { std::printf("%s\n", r.message.c_str()); return 1; }
    ++runs;
  }
  std::printf("ok %d\n", runs);
}
