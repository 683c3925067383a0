// Driver of the pipeline: validation, per-image geometry, work split across threads.
#include "pipeline.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <sstream>
#include <string>
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

// Runs fn(i, worker) for every i in [0, n) on up to `threads` threads, the caller being worker 0.
// Returns the first failure, if any work item threw.
template <class Fn>
Result parallel_for(int64_t n, int threads, Fn&& fn) {
  const int workers = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
  std::atomic<int64_t> next{0};
  std::mutex error_mutex;
  Result error;
  auto record = [&](Status status, const std::string& message) {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (error.ok()) error = fail(status, message);
  };
  auto work = [&](int worker) {
    try {
      for (int64_t i = next++; i < n; i = next++) fn(i, worker);
    } catch (const std::bad_alloc&) {
      record(Status::out_of_memory, "out of memory while processing the batch");
      next = n;
    } catch (const std::exception& e) {
      record(Status::bad_input, e.what());
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
// Aligned to a cache line, as are the plane rows in it (kRowAlign), so that no 512-bit load or
// store of the kernels straddles two lines (operator new alone aligns to 16 bytes).
constexpr std::align_val_t kBufferAlign{64};
constexpr int64_t kRowAlign = 16;  // floats

class FloatBuffer {
 public:
  float* reserve(int64_t count) {
    if (count > size_) {
      data_.reset(static_cast<float*>(::operator new[](count * sizeof(float), kBufferAlign)));
      size_ = count;
    }
    return data_.get();
  }
  float* data() const { return data_.get(); }

 private:
  struct Free {
    void operator()(float* p) const { ::operator delete[](p, kBufferAlign); }
  };
  std::unique_ptr<float, Free> data_;
  int64_t size_ = 0;
};

int64_t aligned_row(int64_t floats) { return (floats + kRowAlign - 1) / kRowAlign * kRowAlign; }

// Shortest text that reads back as the same value of T (as numpy prints it).
template <class T>
std::string shortest(T v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

template <class T>
std::string range_message_of(const BatchView& in, int components) {
  const T* base = static_cast<const T*>(in.data);
  bool nonfinite = false, any_finite = false;
  T lo = 0, hi = 0;
  for (int64_t n = 0; n < in.shape[0]; ++n)
    for (int64_t y = 0; y < in.shape[1]; ++y)
      for (int64_t x = 0; x < in.shape[2]; ++x)
        for (int c = 0; c < components; ++c) {
          const T v = base[n * in.stride[0] + y * in.stride[1] + x * in.stride[2] + c * in.stride[3]];
          if (!std::isfinite(v)) {
            nonfinite = true;
          } else if (!any_finite) {
            any_finite = true;
            lo = hi = v;
          } else {
            lo = std::min(lo, v);
            hi = std::max(hi, v);
          }
        }
  if (!nonfinite && lo >= 0 && hi <= 1) return {};
  std::string m = "float images must hold values in [0, 1]; got ";
  if (nonfinite) m += any_finite ? "NaN or infinite values, " : "NaN or infinite values";
  if (any_finite) m += "min " + shortest(lo) + ", max " + shortest(hi);
  return m;
}

// The complete message for a float batch with samples outside [0, 1], from the samples as they
// are (in their own type; alpha, which passes through untouched, is not checked), or "" if all
// lie inside. Run when the kernels found such a sample, and before an in-place call (which
// overwrites the samples the message describes).
std::string range_message(const BatchView& in, int components) {
  return in.dtype == DType::f64 ? range_message_of<double>(in, components)
                                : range_message_of<float>(in, components);
}

// Per-thread buffers, reused across the images a thread processes.
struct Workspace {
  FloatBuffer planes;
  FloatBuffer scratch;
};

// The table sets scaled for the AAN transforms, 3 components each.
std::vector<detail::BlockTables> aan_tables(const QuantSpec& spec) {
  std::vector<detail::BlockTables> out(static_cast<size_t>(spec.table_sets) * 3);
  for (int t = 0; t < spec.table_sets; ++t)
    aan_table_set(spec.quant + t * 192, spec.dequant + t * 192, out[t * 3].divisor);
  return out;
}

class BatchRunner {
 public:
  BatchRunner(const BatchView& in, const BatchView& out, const QuantSpec& spec)
      : in_(in), out_(out), spec_(spec) {
    static_cast<BlockGeometry&>(proto_) =
        block_geometry(in.shape[1], in.shape[2], in.shape[3], spec.color, spec.subsampling);
    proto_.shift = spec.level_shift ? 128.f : 0.f;
    proto_.integer_samples = in.dtype == DType::u8;
    tables_ = aan_tables(spec);
    proto_.tables = tables_.data();
    stripes_ = proto_.padded_height / proto_.mcu_height;
  }

  Result run(int threads) {
    const int64_t N = in_.shape[0];
    const int64_t pixels = N * proto_.height * proto_.width;
    threads = static_cast<int>(
        std::max<int64_t>(1, std::min<int64_t>(threads, pixels / kMinPixelsPerThread)));
    workspaces_.resize(threads);
    kernels_ = detail::select_kernels(in_.dtype);
    for (int pass = 0; pass < spec_.passes; ++pass) {
      const BatchView& src = pass == 0 ? in_ : out_;
      Result error;
      if (N >= threads) {
        error = parallel_for(N, threads, [&](int64_t n, int worker) {
          ImageJob job = make_job(src, n, workspaces_[worker], ring_stripes());
          run_image_sequential(job, workspaces_[worker]);
        });
      } else {
        for (int64_t n = 0; n < N && error.ok(); ++n) error = run_image_bands(src, n, threads);
      }
      if (out_of_range_) return fail(Status::input_range, range_message(in_, proto_.components));
      if (!error.ok()) return error;
    }
    return {};
  }

 private:
  // `ring_stripes`: how many stripes of rows the planes hold (a ring: row r lives at r modulo).
  ImageJob make_job(const BatchView& src, int64_t n, Workspace& ws, int64_t ring_stripes) {
    ImageJob job = proto_;
    const size_t elem = src.dtype == DType::u8 ? 1 : (src.dtype == DType::f32 ? 4 : 8);
    job.in = static_cast<const char*>(src.data) + n * src.stride[0] * static_cast<int64_t>(elem);
    job.out = static_cast<char*>(out_.data) + n * out_.stride[0] * static_cast<int64_t>(elem);
    for (int d = 0; d < 3; ++d) {
      job.in_stride[d] = src.stride[d + 1];
      job.out_stride[d] = out_.stride[d + 1];
    }
    const int64_t luma_rows = ring_stripes * job.mcu_height, chroma_rows = luma_rows / job.v_factor;
    const int64_t luma_stride = aligned_row(job.padded_width), chroma_stride = aligned_row(job.padded_width / job.h_factor);
    const int64_t luma_floats = luma_rows * luma_stride, chroma_floats = chroma_rows * chroma_stride;
    job.plane[0] = ws.planes.reserve(luma_floats + (job.components == 3 ? 2 * chroma_floats : 0));
    job.plane_stride[0] = luma_stride;
    job.plane_rows[0] = luma_rows;
    if (job.components == 3) {
      job.plane[1] = job.plane[0] + luma_floats;
      job.plane[2] = job.plane[1] + chroma_floats;
      job.plane_stride[1] = job.plane_stride[2] = chroma_stride;
      job.plane_rows[1] = job.plane_rows[2] = chroma_rows;
    }
    if (spec_.block_tables)
      job.block_tables = spec_.block_tables + n * spec_.block_rows * spec_.block_cols;
    return job;
  }

  void ensure_scratch(Workspace& ws) const {
    const int64_t need = (2 * proto_.mcu_height + 6) * proto_.padded_width;
    ws.scratch.reserve(need);
  }

  // Without subsampled chroma a stripe depends on no other and its planes need hold only itself;
  // upsampling reads the chroma rows of the stripes on either side: a ring of three.
  bool independent_stripes() const { return proto_.h_factor == 1 && proto_.v_factor == 1; }
  int64_t ring_stripes() const { return independent_stripes() ? 1 : std::min<int64_t>(3, stripes_); }

  // Stripes s0 .. s1 - 1 of one image on this thread, each written as soon as what it reads is
  // transformed, so that the planes are read back while still in cache: an independent stripe at
  // once (a third of the plane memory; uint8 FD 1.01-1.10x over the order below, float32 0.92-1.20x
  // in different runs: bench/bench_core_ab.py), else phase B of a stripe after phase A of the next.
  // `before_last_write` runs between the last phase A and the last phase B (where a band brings in
  // the chroma rows of the stripe after it). Returns false if a float sample lies outside [0, 1].
  template <class Hook>
  bool run_stripes(const ImageJob& job, float* scratch, int64_t s0, int64_t s1, Hook&& before_last_write) {
    bool ok = true;
    if (independent_stripes()) {
      for (int64_t s = s0; s < s1; ++s) {
        ok &= kernels_.phase_a(job, s, scratch);
        if (s + 1 == s1) before_last_write();
        kernels_.phase_b(job, s, scratch);
      }
      return ok;
    }
    ok &= kernels_.phase_a(job, s0, scratch);
    for (int64_t s = s0 + 1; s < s1; ++s) {
      ok &= kernels_.phase_a(job, s, scratch);
      kernels_.phase_b(job, s - 1, scratch);
    }
    before_last_write();
    kernels_.phase_b(job, s1 - 1, scratch);
    return ok;
  }

  // One thread, one image.
  void run_image_sequential(const ImageJob& job, Workspace& ws) {
    ensure_scratch(ws);
    if (!run_stripes(job, ws.scratch.data(), 0, stripes_, [] {})) out_of_range_ = true;
  }

  // Several threads, one image: each thread runs a band of consecutive stripes as
  // run_image_sequential does, in its own ring of stripes, so the planes take a few stripes per
  // thread whatever the image size. Where upsampling reads the chroma rows of the stripes on
  // either side (4:2:0), those of the stripes at each band boundary are made first, before any
  // thread writes a pixel (the output may be the input), and each band copies them into its ring.
  Result run_image_bands(const BatchView& src, int64_t n, int threads) {
    const int64_t bands = std::min<int64_t>(threads, stripes_);
    auto band_start = [&](int64_t b) { return stripes_ * b / bands; };
    const bool halo = proto_.components == 3 && proto_.v_factor == 2 && proto_.fancy_upsampling;
    std::vector<Workspace> edges(halo ? bands - 1 : 0);  // stripes e-1 and e of boundary e
    std::vector<ImageJob> edge_jobs;
    for (auto& edge : edges) edge_jobs.push_back(make_job(src, n, edge, 2));
    for (auto& ws : workspaces_) ensure_scratch(ws);
    Result error = parallel_for(2 * static_cast<int64_t>(edges.size()), threads, [&](int64_t i, int worker) {
      const int64_t e = band_start(i / 2 + 1) - 1 + i % 2;
      if (!kernels_.phase_a(edge_jobs[i / 2], e, workspaces_[worker].scratch.data())) out_of_range_ = true;
    });
    if (!error.ok()) return error;
    return parallel_for(bands, threads, [&](int64_t b, int worker) {
      Workspace& ws = workspaces_[worker];
      const ImageJob job = make_job(src, n, ws, halo ? 3 : ring_stripes());
      const int64_t s0 = band_start(b), s1 = band_start(b + 1);
      if (halo && b > 0) copy_chroma_stripe(edge_jobs[b - 1], job, s0 - 1);
      const bool ok = run_stripes(job, ws.scratch.data(), s0, s1, [&] {
        if (halo && b + 1 < bands) copy_chroma_stripe(edge_jobs[b], job, s1);
      });
      if (!ok) out_of_range_ = true;
    });
  }

  // The chroma rows of stripe `s` from the planes of `from` to those of `to`.
  void copy_chroma_stripe(const ImageJob& from, const ImageJob& to, int64_t s) const {
    const int64_t rows = proto_.mcu_height / proto_.v_factor;
    for (int c = 1; c < 3; ++c)
      for (int64_t row = s * rows; row < (s + 1) * rows; ++row)
        std::copy_n(from.plane[c] + (row % from.plane_rows[c]) * from.plane_stride[c], from.plane_stride[c],
                    to.plane[c] + (row % to.plane_rows[c]) * to.plane_stride[c]);
  }

  const BatchView& in_;
  const BatchView& out_;
  const QuantSpec& spec_;
  ImageJob proto_;
  std::vector<detail::BlockTables> tables_;
  std::vector<Workspace> workspaces_;
  StripeKernels kernels_{};
  int64_t stripes_ = 0;
  std::atomic<bool> out_of_range_{false};
};

}  // namespace

Result quantize(const BatchView& in, const BatchView& out, const QuantSpec& spec, int threads) {
  Result r = validate(in, out, spec);
  if (!r.ok()) return r;
  if (threads < 0 || threads > kMaxThreads) {
    std::ostringstream msg;
    msg << "threads must be in [0, " << kMaxThreads << "] (0: one per core), got " << threads;
    return fail(Status::bad_input, msg.str());
  }
  if (threads == 0) {
    // hardware_concurrency() reads the system's CPU list on every call: once per process is enough
    static const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    threads = static_cast<int>(cores);
    threads = std::min(threads, kMaxThreads);
  }
  if (in.data == out.data && in.dtype != DType::u8) {
    std::string message = range_message(in, in.shape[3] == 1 ? 1 : 3);
    if (!message.empty()) return fail(Status::input_range, message);
  }
  try {
    BatchRunner runner(in, out, spec);
    return runner.run(threads);
  } catch (const std::bad_alloc&) {
    return fail(Status::out_of_memory, "out of memory while processing the batch");
  }
}

}  // namespace fdjpeg
