// The stripe kernels built for AVX-512 (F, BW, DQ, VL; chosen at run time by dispatch.cpp, never
// assumed). The target is set by a pragma after the standard headers rather than by a flag on the
// whole file: a flag would also compile the standard library's inline functions used here (std::min,
// std::max) for AVX-512, and the linker keeps one copy of each for the whole module, which the
// baseline kernels could then call on a CPU without AVX-512. Only the code in namespace avx512 below
// is compiled for AVX-512; the compiler may use 512-bit vectors for the row loops too.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "dispatch.hpp"
#include "job.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FDJPEG_WITH_AVX512 1
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512dq,avx512vl,prefer-vector-width=512")
#include "vec.hpp"

namespace fdjpeg {
namespace detail {
namespace avx512 {

using Vec = VecAvx2;
using BlockVecs = VecList<Lockstep<VecAvx512>, VecAvx512, VecAvx2>;
constexpr bool kFusedColourRead = true;
#include "kernels_variant.inc"

}  // namespace avx512

StripeKernels avx512_kernels(DType dtype) { return avx512::kernels_for(dtype); }

}  // namespace detail
}  // namespace fdjpeg
#pragma GCC pop_options
#endif
