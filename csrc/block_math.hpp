// The arithmetic of the block pipeline, written once for the CPU kernels and the CUDA kernel:
// sample conversion, RGB <-> YCbCr, chroma averaging and libjpeg's "fancy" upsampling filter, the
// 8-point AAN DCT and IDCT, quantize -> round -> dequantize, and the clamp / rounding stages.
//
// The CPU and the GPU give bit-identical results because both run these very functions: the same
// IEEE single-precision operations in the same order, never contracted into multiply-adds (the CPU
// core is built with -ffp-contract=off, the CUDA kernel with --fmad=false), with IEEE division.
// Each function is a template over the value type V, so the CPU instantiates it with its 8-lane
// vectors (csrc/vec.hpp: VecPortable, VecAvx2; lanes are independent, so a vector does for 8 values
// exactly what float does for one) and the CUDA kernel, a thread per line of a block, with float.
// V needs +, -, * and / of two V; splat() and load() below make a V from floats.
//
// The header is included INSIDE a namespace by each user (csrc/kernels_impl.inc within the
// baseline and AVX2 namespaces, cuda/fdjpeg_cuda.cu within its own), so that every instruction
// set compiles its own copy: inline functions of one name in two translation units would be
// merged by the linker, which could then run AVX2 code on a CPU without it. It therefore includes
// nothing itself (no standard headers inside a namespace).
#pragma once

#if defined(__CUDACC__)
#define FDJPEG_HOST_DEV __host__ __device__
#define FDJPEG_BLOCK_INLINE __host__ __device__ __forceinline__
#else
#define FDJPEG_HOST_DEV
#define FDJPEG_BLOCK_INLINE inline __attribute__((always_inline))
#endif

namespace block {

// ---------------------------------------------------------------------------------------------
// Constants

// Factors of the AAN (Arai, Agui, Nakajima) factorisation, as libjpeg's jfdctflt.c / jidctflt.c,
// with ck = cos(k pi / 16). The transforms' output scale aan(k) = sqrt(2) ck (aan(0) = 1) is
// folded into the quantization tables (csrc/spec.cpp: aan_table_set).
constexpr float kC4 = 0.707106781f;         // c4 = 1 / sqrt(2)
constexpr float kC6 = 0.382683433f;         // c6
constexpr float kC2MinusC6 = 0.541196100f;  // c2 - c6
constexpr float kC2PlusC6 = 1.306562965f;   // c2 + c6
constexpr float kTwoC4 = 1.414213562f;      // 2 c4 = sqrt(2)
constexpr float kTwoC2 = 1.847759065f;      // 2 c2
constexpr float kTwoC2MinusC6 = 1.082392200f;  // 2 (c2 - c6)
constexpr float kTwoC2PlusC6 = 2.613125930f;   // 2 (c2 + c6)

// JFIF colour conversion, as libjpeg's jccolor.c and jdcolor.c (ITU-R BT.601, full range).
constexpr float kYR = 0.299f, kYG = 0.587f, kYB = 0.114f;
constexpr float kCbR = 0.168735892f, kCbG = 0.331264108f, kCbB = 0.5f;  // Cb = -R -G +B
constexpr float kCrR = 0.5f, kCrG = 0.418687589f, kCrB = 0.081312411f;  // Cr = +R -G -B
constexpr float kRCr = 1.402f, kGCb = 0.344136286f, kGCr = 0.714136286f, kBCb = 1.772f;
constexpr float kChromaCenter = 128.f;  // the zero of Cb and Cr (CENTERJSAMPLE)
constexpr float kMaxSample = 255.f;     // samples are held as 0..255 (floats are scaled by it)

// 1.5 * 2^23: adding and subtracting it rounds half to even, exactly for |v| < 2^22.
constexpr float kRoundMagic = 12582912.f;

// ---------------------------------------------------------------------------------------------
// Scalar operations rounded to nearest, whatever the compiler may contract: on the device they are
// the intrinsics nvcc never fuses into multiply-adds (so the kernel is exact with or without
// --fmad=false); on the host the plain operators of a core built with -ffp-contract=off.

FDJPEG_BLOCK_INLINE float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
FDJPEG_BLOCK_INLINE float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
FDJPEG_BLOCK_INLINE float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
FDJPEG_BLOCK_INLINE float div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// ---------------------------------------------------------------------------------------------
// Values of V from floats

template <class V>
FDJPEG_BLOCK_INLINE V splat(float c) {
  return V::all(c);
}
template <>
FDJPEG_BLOCK_INLINE float splat<float>(float c) {
  return c;
}

// V from consecutive floats (8 lanes of a vector, one float).
template <class V>
FDJPEG_BLOCK_INLINE V load(const float* p) {
  return V::load(p);
}
template <>
FDJPEG_BLOCK_INLINE float load<float>(const float* p) {
  return *p;
}

// ---------------------------------------------------------------------------------------------
// Sample stages

// Round half to even, exact for |v| < 2^22 (table steps are validated so that |coef / step| is).
template <class V>
FDJPEG_BLOCK_INLINE V round_even(V v) {
  return (v + splat<V>(kRoundMagic)) - splat<V>(kRoundMagic);
}

template <class V>
FDJPEG_BLOCK_INLINE V clamp255(V v) {
  return v.clamp(0.f, kMaxSample);
}
template <>
FDJPEG_BLOCK_INLINE float clamp255<float>(float v) {
  return v < 0.f ? 0.f : (v > kMaxSample ? kMaxSample : v);
}

// 8-bit images hold whole-number samples wherever libjpeg stores JSAMPLEs (after colour
// conversion, downsampling, the IDCT and upsampling), as in a real JPEG round trip.
template <class V>
FDJPEG_BLOCK_INLINE V as_sample(V v, bool integer) {
  return integer ? round_even(v) : v;
}

// A stored sample -> 0..255.
template <class T>
FDJPEG_BLOCK_INLINE float load_sample(const T* p) {
  return mul_rn(static_cast<float>(*p), kMaxSample);
}
template <>
FDJPEG_BLOCK_INLINE float load_sample<unsigned char>(const unsigned char* p) {
  return static_cast<float>(*p);
}

// 0..255 (already clamped and, for 8 bits, whole) -> a stored sample.
template <class T>
FDJPEG_BLOCK_INLINE void store_sample(T* p, float v) {
  *p = static_cast<T>(mul_rn(v, 1.f / kMaxSample));
}
template <>
FDJPEG_BLOCK_INLINE void store_sample<unsigned char>(unsigned char* p, float v) {
  *p = static_cast<unsigned char>(add_rn(v, 0.5f));
}

// ---------------------------------------------------------------------------------------------
// Colour

template <class V>
FDJPEG_BLOCK_INLINE void rgb_to_ycbcr(V r, V g, V b, bool integer, V& y, V& cb, V& cr) {
  y = as_sample(splat<V>(kYR) * r + splat<V>(kYG) * g + splat<V>(kYB) * b, integer);
  cb = as_sample(splat<V>(-kCbR) * r - splat<V>(kCbG) * g + splat<V>(kCbB) * b +
                     splat<V>(kChromaCenter),
                 integer);
  cr = as_sample(splat<V>(kCrR) * r - splat<V>(kCrG) * g - splat<V>(kCrB) * b +
                     splat<V>(kChromaCenter),
                 integer);
}

// Before the clamp to 0..255 (which the CPU's byte writes may do as they pack).
template <class V>
FDJPEG_BLOCK_INLINE void ycbcr_to_rgb_unclamped(V y, V cb, V cr, V& r, V& g, V& b) {
  const V u = cb - splat<V>(kChromaCenter), v = cr - splat<V>(kChromaCenter);
  r = y + splat<V>(kRCr) * v;
  g = y - splat<V>(kGCb) * u - splat<V>(kGCr) * v;
  b = y + splat<V>(kBCb) * u;
}

template <class V>
FDJPEG_BLOCK_INLINE void ycbcr_to_rgb(V y, V cb, V cr, V& r, V& g, V& b) {
  ycbcr_to_rgb_unclamped(y, cb, cr, r, g, b);
  r = clamp255(r);
  g = clamp255(g);
  b = clamp255(b);
}

// ---------------------------------------------------------------------------------------------
// Chroma resampling

// Average of a 2 x 2 cell (rows a and b; 4:2:2 passes its one row as both), as libjpeg's
// h2v2 / h2v1 downsampling without its alternating bias. The caller rounds 8-bit samples.
template <class V>
FDJPEG_BLOCK_INLINE V downsample_cell(V a0, V a1, V b0, V b1) {
  return (a0 + a1 + b0 + b1) * splat<V>(0.25f);
}

// libjpeg's fancy upsampling (jdsample.c): a triangle filter, 3/4 of the nearer chroma sample and
// 1/4 of the farther one in each subsampled direction, edges replicated at the real chroma extent.
// Vertically first, the sums kept 4 x the sample so that both directions are scaled at the end.
template <class V>
FDJPEG_BLOCK_INLINE V upsample_vertical(V nearer, V farther) {
  return splat<V>(3.f) * nearer + farther;
}
// Rows not subsampled: the same scale (4 x the sample).
template <class V>
FDJPEG_BLOCK_INLINE V upsample_vertical_none(V nearer) {
  return splat<V>(4.f) * nearer;
}
// Horizontally, from two vertical sums: an output pixel between chroma columns.
template <class V>
FDJPEG_BLOCK_INLINE V upsample_horizontal(V nearer, V farther) {
  return (splat<V>(3.f) * nearer + farther) * splat<V>(0.0625f);
}
// Horizontally, from one vertical sum: columns not subsampled, and the first and last pixel of a
// subsampled row (3/4 of the sample plus 1/4 of itself).
template <class V>
FDJPEG_BLOCK_INLINE V upsample_horizontal_none(V vertical) {
  return vertical * splat<V>(0.25f);
}

// ---------------------------------------------------------------------------------------------
// The block transform, one 8-point line at a time (a vector of 8 lines on the CPU)

// Forward AAN over d[0..7]: out[k] = DCT_k * aan(k) * sqrt 8.
template <class V>
FDJPEG_BLOCK_INLINE void forward_aan(V* d) {
  const V tmp0 = d[0] + d[7], tmp7 = d[0] - d[7];
  const V tmp1 = d[1] + d[6], tmp6 = d[1] - d[6];
  const V tmp2 = d[2] + d[5], tmp5 = d[2] - d[5];
  const V tmp3 = d[3] + d[4], tmp4 = d[3] - d[4];
  // Even part: outputs 0 and 4 are plain sums, exact for whole-number samples.
  const V tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3;
  const V tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;
  d[0] = tmp10 + tmp11;
  d[4] = tmp10 - tmp11;
  const V z1 = (tmp12 + tmp13) * splat<V>(kC4);
  d[2] = tmp13 + z1;
  d[6] = tmp13 - z1;
  // Odd part.
  const V o10 = tmp4 + tmp5, o11 = tmp5 + tmp6, o12 = tmp6 + tmp7;
  const V z5 = (o10 - o12) * splat<V>(kC6);
  const V z2 = splat<V>(kC2MinusC6) * o10 + z5;
  const V z4 = splat<V>(kC2PlusC6) * o12 + z5;
  const V z3 = o11 * splat<V>(kC4);
  const V z11 = tmp7 + z3, z13 = tmp7 - z3;
  d[5] = z13 + z2;
  d[3] = z13 - z2;
  d[1] = z11 + z4;
  d[7] = z11 - z4;
}

// Inverse AAN over d[0..7]: takes DCT_k * aan(k) * sqrt 8, returns 8 x the samples (the
// dequantization factors carry the rest of the scale).
template <class V>
FDJPEG_BLOCK_INLINE void inverse_aan(V* d) {
  const V e10 = d[0] + d[4], e11 = d[0] - d[4];
  const V e13 = d[2] + d[6];
  const V e12 = (d[2] - d[6]) * splat<V>(kTwoC4) - e13;
  const V e0 = e10 + e13, e3 = e10 - e13, e1 = e11 + e12, e2 = e11 - e12;
  const V z13 = d[5] + d[3], z10 = d[5] - d[3];
  const V z11 = d[1] + d[7], z12 = d[1] - d[7];
  const V o7 = z11 + z13;
  const V o11 = (z11 - z13) * splat<V>(kTwoC4);
  const V z5 = (z10 + z12) * splat<V>(kTwoC2);
  const V o10 = z5 - z12 * splat<V>(kTwoC2MinusC6);
  const V o12 = z5 - z10 * splat<V>(kTwoC2PlusC6);
  const V o6 = o12 - o7;
  const V o5 = o11 - o6;
  const V o4 = o10 - o5;
  d[0] = e0 + o7;
  d[7] = e0 - o7;
  d[1] = e1 + o6;
  d[6] = e1 - o6;
  d[2] = e2 + o5;
  d[5] = e2 - o5;
  d[3] = e3 + o4;
  d[4] = e3 - o4;
}

// round(coef / Qc) * Qd of d[v], v = 0..7 the horizontal frequency (after both forward passes),
// with the AAN-scaled tables of csrc/job.hpp (BlockTables; entry v at [8 v] from the line's own
// column u). Coefficients with v = 0 or 4 (the rational ones among them are exact sums) are
// divided exactly, so that exact ties round the same everywhere; the others are multiplied by the
// reciprocal.
template <class V>
FDJPEG_BLOCK_INLINE void quantize_dequantize(V* d, const float* divisor, const float* inv_divisor,
                                             const float* dequant) {
  for (int v = 0; v < 8; ++v) {
    const V scaled = (v & 3) == 0 ? d[v] / load<V>(divisor + 8 * v)
                                  : d[v] * load<V>(inv_divisor + 8 * v);
    d[v] = round_even(scaled) * load<V>(dequant + 8 * v);
  }
}

// An output sample of the inverse transform: undo the level shift, clamp to 0..255 (libjpeg's
// range limit), round 8-bit samples. The CPU kernels skip adding a zero shift (`shifted` false:
// 16 vector operations a block for Feature Distillation); the CUDA kernel always adds it.
template <class V>
FDJPEG_BLOCK_INLINE V finish_sample(V x, V level, bool shifted, bool integer) {
  return as_sample(clamp255(shifted ? x + level : x), integer);
}

}  // namespace block
