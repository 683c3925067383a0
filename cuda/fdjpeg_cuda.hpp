// Host interface of the CUDA pipeline. Plain C++ (no CUDA types), so bindings.cpp needs no nvcc.
// The batch and table descriptions, and the Status / Result of a call, are those of the CPU core
// (csrc/pipeline.hpp).
#pragma once

#include <cstdint>
#include <string>

#include "../csrc/pipeline.hpp"

namespace fdjpeg {
namespace cuda {

// Runs the pipeline on device `device`, enqueued on `stream` (a cudaStream_t as an integer; 0 is the
// legacy default stream). `in.data` / `out.data` are device pointers; the tables and the block map
// in `spec` are host memory (copied to the device, stream-ordered). `workspace` is device memory of
// at least workspace_size() bytes (may be null when that is 0), used on `stream` only. Never waits
// for the device; the caller's current device is the same afterwards.
Result quantize_on_device(const BatchView& in, const BatchView& out, const QuantSpec& spec,
                          int device, std::uintptr_t stream, void* workspace, size_t workspace_bytes);

// Device memory a call of quantize_on_device() needs besides its images (table sets, block map,
// the intermediate image of multi-pass runs with subsampling); 0 for most calls.
Result workspace_size(const BatchView& in, const BatchView& out, const QuantSpec& spec, size_t* bytes);

// CTAs of the call's kernel that fit on one multiprocessor of `device` (the CUDA occupancy API).
Result occupancy(DType dtype, const BatchView& in, const QuantSpec& spec, int device, int* ctas);

// How emulate_on_host() orders the work a GPU runs in parallel.
struct EmulationOrder {
  bool shuffle = false;    // tiles, threads of a phase, warps and lanes shuffled (else in order)
  uint64_t seed = 0;
  int drop_barrier = -1;   // a barrier of the tile left out (tests show it is needed): 0, 1 or 2
};

// Runs exactly the kernel's per-tile code on the CPU, tile after tile, with 256 emulated threads
// per tile and shared memory filled with NaN before each. Slow; it exists so that the tiling,
// halo, indexing and barrier logic is tested on machines without a GPU.
Result emulate_on_host(const BatchView& in, const BatchView& out, const QuantSpec& spec,
                       const EmulationOrder& order);

// The CUDA runtime's own view: "" if a device is usable, else why not ("no usable GPU: ...").
std::string device_problem();

}  // namespace cuda
}  // namespace fdjpeg
