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
// in `spec` are host memory (copied to the device as needed). Never waits for the device.
Result quantize_on_device(const BatchView& in, const BatchView& out, const QuantSpec& spec,
                          int device, std::uintptr_t stream);

// Runs exactly the kernel's per-tile code on the CPU, one tile after another, over host memory.
// Slow; it exists so that the tiling, halo and indexing logic is tested on machines without a GPU.
Result emulate_on_host(const BatchView& in, const BatchView& out, const QuantSpec& spec);

// The CUDA runtime's own view: "" if a device is usable, else why not ("no usable GPU: ...").
std::string device_problem();

}  // namespace cuda
}  // namespace fdjpeg
