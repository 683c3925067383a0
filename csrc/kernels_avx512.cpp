// The stripe kernels built for AVX-512 (F, BW, DQ, VL), and, when compiled through
// kernels_avx512vbmi.cpp, again with AVX-512 VBMI's byte permutes moving 8-bit RGB pixels (Rgb8Vbmi,
// vec.hpp); dispatch.cpp chooses at run time, never assumed. The target is set by a pragma after the
// standard headers rather than by a flag on the whole file: a flag would also compile the standard
// library's inline functions used here (std::min, std::max) for AVX-512, and the linker keeps one
// copy of each for the whole module, which the baseline kernels could then call on a CPU without
// AVX-512. Only the code in the variant's namespace below is compiled for AVX-512; the compiler may
// use 512-bit vectors for the row loops too.
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
#if defined(FDJPEG_WITH_AVX512VBMI)
#pragma GCC target("avx2,avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,prefer-vector-width=512")
#define FDJPEG_VARIANT avx512vbmi
#else
#pragma GCC target("avx2,avx512f,avx512bw,avx512dq,avx512vl,prefer-vector-width=512")
#define FDJPEG_VARIANT avx512
#endif
#include "vec.hpp"

namespace fdjpeg {
namespace detail {
namespace FDJPEG_VARIANT {

using Vec = VecAvx2;
using BlockVecs = VecList<Lockstep<VecAvx512>, VecAvx512, VecAvx2>;
constexpr bool kFusedColourRead = true;
#if defined(FDJPEG_WITH_AVX512VBMI)
using Rgb8 = Rgb8Vbmi;
#else
using Rgb8 = Rgb8None;
#endif
#include "kernels_variant.inc"

}  // namespace FDJPEG_VARIANT

#if defined(FDJPEG_WITH_AVX512VBMI)
StripeKernels avx512vbmi_kernels(DType dtype) { return avx512vbmi::kernels_for(dtype); }
#else
StripeKernels avx512_kernels(DType dtype) { return avx512::kernels_for(dtype); }
#endif

}  // namespace detail
}  // namespace fdjpeg
#undef FDJPEG_VARIANT
#pragma GCC pop_options
#endif
