// ISA-specific entry points of the stripe kernels and the run-time choice between them.
// Each entry point force-inlines the whole stripe code of kernels.hpp, so the AVX2 copy is built
// with AVX2+FMA and the baseline copy with the compiler's default x86-64 (or non-x86) target.
#include "kernels.hpp"

#include <atomic>
#include <cmath>

#include "dispatch.hpp"

namespace fdjpeg {
namespace detail {

static DctBasis make_basis() {
  DctBasis b{};
  const double pi = 3.14159265358979323846;
  for (int u = 0; u < 8; ++u)
    for (int k = 0; k < 4; ++k) {
      const double scale = u == 0 ? std::sqrt(1.0 / 8.0) : 0.5;
      const float v = static_cast<float>(scale * std::cos((2 * k + 1) * u * pi / 16.0));
      if (u % 2 == 0)
        b.even[u / 2][k] = v;
      else
        b.odd[u / 2][k] = v;
    }
  return b;
}
const DctBasis kDctBasis = make_basis();

#define FDJPEG_DEFINE_VARIANT(SUFFIX, ATTR)                                          \
  template <class T>                                                                 \
  ATTR bool phase_a_##SUFFIX(const ImageJob& job, int64_t stripe, float* scratch) {  \
    return load_and_transform_stripe<T>(job, stripe, scratch);                       \
  }                                                                                  \
  template <class T>                                                                 \
  ATTR void phase_b_##SUFFIX(const ImageJob& job, int64_t stripe, float* scratch) {  \
    store_stripe<T>(job, stripe, scratch);                                           \
  }                                                                                  \
  static StripeKernels kernels_##SUFFIX(DType dtype) {                               \
    switch (dtype) {                                                                 \
      case DType::u8:                                                                \
        return {&phase_a_##SUFFIX<uint8_t>, &phase_b_##SUFFIX<uint8_t>};             \
      case DType::f32:                                                               \
        return {&phase_a_##SUFFIX<float>, &phase_b_##SUFFIX<float>};                 \
      default:                                                                       \
        return {&phase_a_##SUFFIX<double>, &phase_b_##SUFFIX<double>};               \
    }                                                                                \
  }

FDJPEG_DEFINE_VARIANT(baseline, )

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
FDJPEG_DEFINE_VARIANT(avx2, __attribute__((target("avx2,fma"))))

static bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

static std::atomic<bool> force_baseline{false};

void set_force_baseline(bool force) { force_baseline = force; }

const char* active_isa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool avx2 = cpu_has_avx2();
  return avx2 && !force_baseline ? "avx2" : "baseline";
#else
  return "baseline";
#endif
}

StripeKernels select_kernels(DType dtype, const char* isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (std::string(isa) == "avx2" && cpu_has_avx2()) return kernels_avx2(dtype);
#endif
  (void)isa;
  return kernels_baseline(dtype);
}

}  // namespace detail
}  // namespace fdjpeg
