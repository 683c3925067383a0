// Run-time choice of the stripe kernels (instruction set x sample type).
#pragma once

#include <cstdint>

#include "pipeline.hpp"

namespace fdjpeg {
namespace detail {

struct ImageJob;

struct StripeKernels {
  bool (*phase_a)(const ImageJob&, int64_t stripe, float* scratch);
  void (*phase_b)(const ImageJob&, int64_t stripe, float* scratch);
};

// The instruction set the kernels run with: "avx512", "avx2" or "baseline".
const char* active_isa();

// Makes active_isa() answer "baseline" whatever the CPU (to test the portable kernels).
void set_force_baseline(bool force);

// Kernels for `dtype` of the active instruction set.
StripeKernels select_kernels(DType dtype);

}  // namespace detail
}  // namespace fdjpeg
