// Run-time choice of the kernel variant: AVX2 where the CPU has it, the baseline elsewhere.
//
// The environment can ask for the portable kernels whatever the CPU (as libjpeg-turbo's
// JSIMD_FORCENONE), so that they are tested on every machine: FDJPEG_FORCE_PORTABLE set to
// anything but "" or "0", or FDJPEG_ISA=baseline. FDJPEG_ISA=avx2 (or unset) keeps the default
// choice; other values are ignored. Read once, at the first dispatch.
#include <atomic>
#include <cstdlib>
#include <cstring>
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

static bool environment_forces_baseline() {
  const char* portable = std::getenv("FDJPEG_FORCE_PORTABLE");
  if (portable && *portable && std::strcmp(portable, "0") != 0) return true;
  const char* isa = std::getenv("FDJPEG_ISA");
  return isa && std::strcmp(isa, "baseline") == 0;
}

const char* active_isa() {
  static const bool avx2 = cpu_has_avx2() && !environment_forces_baseline();
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
