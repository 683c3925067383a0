// The stripe kernels built for AVX2 (chosen at run time by dispatch.cpp, never assumed).
// Standard headers come before the target pragma, so their inline functions keep the default
// target; only the code in namespace avx2 below is compiled for AVX2.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "dispatch.hpp"
#include "job.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FDJPEG_WITH_AVX2 1
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx2")
#include "vec.hpp"

namespace fdjpeg {
namespace detail {
namespace avx2 {

using Vec = VecAvx2;
using BlockVecs = VecList<VecAvx2>;
constexpr bool kFusedColourRead = false;  // measured no faster here
using Rgb8 = Rgb8None;
#include "kernels_variant.inc"

}  // namespace avx2

StripeKernels avx2_kernels(DType dtype) { return avx2::kernels_for(dtype); }

}  // namespace detail
}  // namespace fdjpeg
#pragma GCC pop_options
#endif
