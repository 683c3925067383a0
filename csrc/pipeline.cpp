// Driver of the pipeline: validation, per-image geometry, work split across threads.
#include "pipeline.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <sstream>
#include <system_error>
#include <thread>
#include <vector>

#include "dispatch.hpp"
#include "job.hpp"

namespace fdjpeg {
namespace {

using detail::ImageJob;
using detail::StripeKernels;

// Below this many pixels per thread, starting a thread costs more than it saves.
constexpr int64_t kMinPixelsPerThread = 1 << 16;

struct Factors {
  int h = 1, v = 1;
};

Factors chroma_factors(Subsampling subsampling, bool subsampled) {
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

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Runs fn(i, worker) for every i in [0, n) on up to `threads` threads, the caller being worker 0.
// Returns the first error message, if any work item threw.
template <class Fn>
std::string parallel_for(int64_t n, int threads, Fn&& fn) {
  const int workers = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
  std::atomic<int64_t> next{0};
  std::mutex error_mutex;
  std::string error;
  auto record = [&](const std::string& message) {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (error.empty()) error = message;
  };
  auto work = [&](int worker) {
    try {
      for (int64_t i = next++; i < n; i = next++) fn(i, worker);
    } catch (const std::bad_alloc&) {
      record("out of memory while processing the batch");
      next = n;
    } catch (const std::exception& e) {
      record(e.what());
      next = n;
    }
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; ++w) {
    try {
      pool.emplace_back(work, w);
    } catch (const std::system_error&) {
      break;  // fewer threads than asked for; the remaining ones take the work
    }
  }
  work(0);
  for (auto& t : pool) t.join();
  return error;
}

// A float buffer that grows on demand and is not zero-filled (every sample read is written first).
class FloatBuffer {
 public:
  float* reserve(int64_t count) {
    if (count > size_) {
      data_.reset(new float[count]);
      size_ = count;
    }
    return data_.get();
  }
  float* data() const { return data_.get(); }

 private:
  std::unique_ptr<float[]> data_;
  int64_t size_ = 0;
};

// Per-thread buffers, reused across the images a thread processes.
struct Workspace {
  FloatBuffer planes;
  FloatBuffer scratch;
};

// AAN scale factors: aan(0) = 1, aan(k) = sqrt(2) cos(k pi / 16); aan(4) is 1 exactly.
std::vector<detail::BlockTables> aan_tables(const QuantSpec& spec) {
  double aan[8];
  const double pi = 3.14159265358979323846;
  for (int k = 0; k < 8; ++k) aan[k] = k == 0 || k == 4 ? 1.0 : std::sqrt(2.0) * std::cos(k * pi / 16);
  std::vector<detail::BlockTables> out(static_cast<size_t>(spec.table_sets) * 3);
  for (size_t t = 0; t < out.size(); ++t) {
    const float* qc = spec.quant + t * 64;
    const float* qd = spec.dequant + t * 64;
    for (int u = 0; u < 8; ++u)
      for (int v = 0; v < 8; ++v) {
        const double scale = aan[u] * aan[v];
        const int natural = u * 8 + v, held = v * 8 + u;
        out[t].divisor[held] = static_cast<float>(qc[natural] * scale * 8.0);
        out[t].inv_divisor[held] = static_cast<float>(1.0 / (qc[natural] * scale * 8.0));
        out[t].dequant[held] = static_cast<float>(qd[natural] * scale / 8.0);
      }
  }
  return out;
}

class BatchRunner {
 public:
  BatchRunner(const BatchView& in, const BatchView& out, const QuantSpec& spec)
      : in_(in), out_(out), spec_(spec) {
    const int64_t H = in.shape[1], W = in.shape[2], C = in.shape[3];
    proto_.height = H;
    proto_.width = W;
    proto_.channels = C;
    proto_.components = C == 1 ? 1 : 3;
    proto_.ycbcr = spec.color == Color::ycbcr && proto_.components == 3;
    const Factors f = chroma_factors(spec.subsampling, proto_.ycbcr);
    proto_.h_factor = f.h;
    proto_.v_factor = f.v;
    proto_.mcu_height = 8 * f.v;
    proto_.padded_height = round_up(H, 8 * f.v);
    proto_.padded_width = round_up(W, 8 * f.h);
    proto_.chroma_height = (H + f.v - 1) / f.v;
    proto_.chroma_width = (W + f.h - 1) / f.h;
    proto_.shift = spec.level_shift ? 128.f : 0.f;
    proto_.integer_samples = in.dtype == DType::u8;
    proto_.block_cols = proto_.padded_width / 8;
    tables_ = aan_tables(spec);
    proto_.tables = tables_.data();
    stripes_ = proto_.padded_height / proto_.mcu_height;
    plane_floats_ = proto_.padded_height * proto_.padded_width;
    chroma_floats_ = (proto_.padded_height / f.v) * (proto_.padded_width / f.h);
  }

  std::string run(int threads) {
    const int64_t N = in_.shape[0];
    const int64_t pixels = N * proto_.height * proto_.width;
    threads = static_cast<int>(
        std::max<int64_t>(1, std::min<int64_t>(threads, pixels / kMinPixelsPerThread)));
    workspaces_.resize(threads);
    kernels_ = detail::select_kernels(in_.dtype);
    for (int pass = 0; pass < spec_.passes; ++pass) {
      const BatchView& src = pass == 0 ? in_ : out_;
      std::string error;
      if (N >= threads) {
        error = parallel_for(N, threads, [&](int64_t n, int worker) {
          ImageJob job = make_job(src, n, workspaces_[worker]);
          run_image_sequential(job, workspaces_[worker]);
        });
      } else {
        for (int64_t n = 0; n < N && error.empty(); ++n) error = run_image_parallel(src, n, threads);
      }
      if (out_of_range_) return "float input must lie in [0, 1] (and be finite); got values outside";
      if (!error.empty()) return error;
    }
    return {};
  }

 private:
  ImageJob make_job(const BatchView& src, int64_t n, Workspace& ws) {
    ImageJob job = proto_;
    const size_t elem = src.dtype == DType::u8 ? 1 : (src.dtype == DType::f32 ? 4 : 8);
    job.in = static_cast<const char*>(src.data) + n * src.stride[0] * static_cast<int64_t>(elem);
    job.out = static_cast<char*>(out_.data) + n * out_.stride[0] * static_cast<int64_t>(elem);
    for (int d = 0; d < 3; ++d) {
      job.in_stride[d] = src.stride[d + 1];
      job.out_stride[d] = out_.stride[d + 1];
    }
    const int64_t total = plane_floats_ + (job.components == 3 ? 2 * chroma_floats_ : 0);
    job.plane[0] = ws.planes.reserve(total);
    job.plane_stride[0] = job.padded_width;
    if (job.components == 3) {
      job.plane[1] = job.plane[0] + plane_floats_;
      job.plane[2] = job.plane[1] + chroma_floats_;
      job.plane_stride[1] = job.plane_stride[2] = job.padded_width / job.h_factor;
    }
    if (spec_.block_tables)
      job.block_tables = spec_.block_tables + n * spec_.block_rows * spec_.block_cols;
    return job;
  }

  void ensure_scratch(Workspace& ws) const {
    const int64_t need = (2 * proto_.mcu_height + 6) * proto_.padded_width;
    ws.scratch.reserve(need);
  }

  // One thread, one image: phase B of a stripe follows phase A of the next, so the planes are
  // read back while still in cache.
  void run_image_sequential(const ImageJob& job, Workspace& ws) {
    ensure_scratch(ws);
    float* scratch = ws.scratch.data();
    bool ok = kernels_.phase_a(job, 0, scratch);
    for (int64_t s = 1; s < stripes_; ++s) {
      ok &= kernels_.phase_a(job, s, scratch);
      kernels_.phase_b(job, s - 1, scratch);
    }
    kernels_.phase_b(job, stripes_ - 1, scratch);
    if (!ok) out_of_range_ = true;
  }

  // Several threads, one image: all stripes through phase A, then all through phase B.
  std::string run_image_parallel(const BatchView& src, int64_t n, int threads) {
    const ImageJob job = make_job(src, n, workspaces_[0]);
    for (auto& ws : workspaces_) ensure_scratch(ws);
    std::string error = parallel_for(stripes_, threads, [&](int64_t s, int worker) {
      if (!kernels_.phase_a(job, s, workspaces_[worker].scratch.data())) out_of_range_ = true;
    });
    if (!error.empty()) return error;
    return parallel_for(stripes_, threads, [&](int64_t s, int worker) {
      kernels_.phase_b(job, s, workspaces_[worker].scratch.data());
    });
  }

  const BatchView& in_;
  const BatchView& out_;
  const QuantSpec& spec_;
  ImageJob proto_;
  std::vector<detail::BlockTables> tables_;
  std::vector<Workspace> workspaces_;
  StripeKernels kernels_{};
  int64_t stripes_ = 0, plane_floats_ = 0, chroma_floats_ = 0;
  std::atomic<bool> out_of_range_{false};
};

std::string validate(const BatchView& in, const BatchView& out, const QuantSpec& spec) {
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
  const int64_t C = in.shape[3];
  if (C != 1 && C != 3 && C != 4) {
    msg << "expected 1, 3 or 4 channels, got " << C;
    return msg.str();
  }
  if (spec.passes < 1) return "passes must be at least 1";
  if (spec.table_sets < 1 || spec.table_sets > 256) return "table_sets must be in 1..256";
  if (!spec.quant || !spec.dequant) return "missing quantization tables";
  for (int64_t i = 0; i < static_cast<int64_t>(spec.table_sets) * 192; ++i) {
    const float q = spec.quant[i], d = spec.dequant[i];
    if (!(q >= 1e-3f && q <= 65535.f))
      return "quantization steps must lie in [0.001, 65535]";
    if (!(d >= 0.f && d <= 65535.f)) return "dequantization steps must lie in [0, 65535]";
  }
  if (spec.block_tables) {
    int64_t rows = 0, cols = 0;
    padded_blocks(in.shape[1], in.shape[2], spec.subsampling,
                  spec.color == Color::ycbcr && C != 1, &rows, &cols);
    if (spec.block_rows != rows || spec.block_cols != cols) {
      msg << "block table map must be " << rows << " x " << cols << " per image, got "
          << spec.block_rows << " x " << spec.block_cols;
      return msg.str();
    }
    const int64_t count = in.shape[0] * rows * cols;
    for (int64_t i = 0; i < count; ++i)
      if (spec.block_tables[i] >= spec.table_sets)
        return "block table map names a table set that does not exist";
  }
  return {};
}

}  // namespace

void padded_blocks(int64_t height, int64_t width, Subsampling subsampling, bool subsampled,
                   int64_t* block_rows, int64_t* block_cols) {
  const Factors f = chroma_factors(subsampling, subsampled);
  *block_rows = round_up(height, 8 * f.v) / 8;
  *block_cols = round_up(width, 8 * f.h) / 8;
}

std::string quantize(const BatchView& in, const BatchView& out, const QuantSpec& spec,
                     int threads) {
  std::string error = validate(in, out, spec);
  if (!error.empty()) return error;
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  try {
    BatchRunner runner(in, out, spec);
    return runner.run(threads);
  } catch (const std::bad_alloc&) {
    return "out of memory while processing the batch";
  }
}

}  // namespace fdjpeg
