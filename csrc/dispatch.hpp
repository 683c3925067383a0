// Run-time choice of the stripe kernels (instruction set x sample type).
#pragma once

#include <cstdint>
#include <string>

#include "pipeline.hpp"

namespace fdjpeg {
namespace detail {

struct ImageJob;

struct StripeKernels {
  bool (*phase_a)(const ImageJob&, int64_t stripe, float* scratch);
  void (*phase_b)(const ImageJob&, int64_t stripe, float* scratch);
};

// The best instruction set this CPU runs: "avx2" or "baseline".
const char* active_isa();

// Makes active_isa() answer "baseline" whatever the CPU (to test the portable kernels).
void set_force_baseline(bool force);

// Kernels for `dtype` built for `isa` ("avx2" falls back to "baseline" on CPUs without it).
StripeKernels select_kernels(DType dtype, const char* isa);

}  // namespace detail
}  // namespace fdjpeg
