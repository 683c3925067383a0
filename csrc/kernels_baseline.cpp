// The stripe kernels for any CPU (the compiler's default target; SSE2 on x86-64).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "dispatch.hpp"
#include "job.hpp"
#include "vec.hpp"

namespace fdjpeg {
namespace detail {
namespace baseline {

using Vec = VecPortable;
using BlockVecs = VecList<VecPortable>;
constexpr bool kFusedColourRead = false;  // measured slower here
using Rgb8 = Rgb8None;
#include "kernels_variant.inc"

}  // namespace baseline

StripeKernels baseline_kernels(DType dtype) { return baseline::kernels_for(dtype); }

}  // namespace detail
}  // namespace fdjpeg
