// Run-time choice of the kernel variant: AVX2 where the CPU has it, the baseline elsewhere.
#include <atomic>
#include <string>

#include "dispatch.hpp"

namespace fdjpeg {
namespace detail {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FDJPEG_HAVE_AVX2_VARIANT 1
StripeKernels avx2_kernels(DType dtype);
#endif
StripeKernels baseline_kernels(DType dtype);

static std::atomic<bool> force_baseline{false};

void set_force_baseline(bool force) { force_baseline = force; }

static bool cpu_has_avx2() {
#ifdef FDJPEG_HAVE_AVX2_VARIANT
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

const char* active_isa() {
  static const bool avx2 = cpu_has_avx2();
  return avx2 && !force_baseline ? "avx2" : "baseline";
}

StripeKernels select_kernels(DType dtype) {
#ifdef FDJPEG_HAVE_AVX2_VARIANT
  if (std::string(active_isa()) == "avx2") return avx2_kernels(dtype);
#endif
  return baseline_kernels(dtype);
}

}  // namespace detail
}  // namespace fdjpeg
