// Eight-float vectors for the block kernel: a portable one, and AVX2 where the including
// translation unit is compiled for it. Both do the same IEEE operations in the same order, so the
// block arithmetic (block_math.hpp) instantiated with either gives bit-identical results.
#pragma once

#include <cstdint>

#if defined(FDJPEG_WITH_AVX2)
#include <immintrin.h>
#endif

namespace fdjpeg {
namespace detail {

struct VecPortable {
  float v[8];

  static inline VecPortable load(const float* p) {
    VecPortable r;
    for (int i = 0; i < 8; ++i) r.v[i] = p[i];
    return r;
  }
  inline void store(float* p) const {
    for (int i = 0; i < 8; ++i) p[i] = v[i];
  }
  static inline VecPortable all(float x) {
    VecPortable r;
    for (int i = 0; i < 8; ++i) r.v[i] = x;
    return r;
  }
#define FDJPEG_PORTABLE_OP(OP)                                           \
  inline VecPortable operator OP(const VecPortable& b) const {           \
    VecPortable r;                                                       \
    for (int i = 0; i < 8; ++i) r.v[i] = v[i] OP b.v[i];                 \
    return r;                                                            \
  }
  FDJPEG_PORTABLE_OP(+)
  FDJPEG_PORTABLE_OP(-)
  FDJPEG_PORTABLE_OP(*)
  FDJPEG_PORTABLE_OP(/)
#undef FDJPEG_PORTABLE_OP
  inline VecPortable clamp(float lo, float hi) const {
    VecPortable r;
    for (int i = 0; i < 8; ++i) r.v[i] = v[i] < lo ? lo : (v[i] > hi ? hi : v[i]);
    return r;
  }
  static inline void transpose(VecPortable* r) {
    for (int i = 0; i < 8; ++i)
      for (int j = i + 1; j < 8; ++j) {
        const float t = r[i].v[j];
        r[i].v[j] = r[j].v[i];
        r[j].v[i] = t;
      }
  }
};

#if defined(FDJPEG_WITH_AVX2)
struct VecAvx2 {
  __m256 v;

  static inline VecAvx2 load(const float* p) { return {_mm256_loadu_ps(p)}; }
  inline void store(float* p) const { _mm256_storeu_ps(p, v); }
  static inline VecAvx2 all(float x) { return {_mm256_set1_ps(x)}; }
  inline VecAvx2 operator+(const VecAvx2& b) const { return {_mm256_add_ps(v, b.v)}; }
  inline VecAvx2 operator-(const VecAvx2& b) const { return {_mm256_sub_ps(v, b.v)}; }
  inline VecAvx2 operator*(const VecAvx2& b) const { return {_mm256_mul_ps(v, b.v)}; }
  inline VecAvx2 operator/(const VecAvx2& b) const { return {_mm256_div_ps(v, b.v)}; }
  // Same result as the portable clamp for every non-NaN input.
  inline VecAvx2 clamp(float lo, float hi) const {
    return {_mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(lo)), _mm256_set1_ps(hi))};
  }
  static inline void transpose(VecAvx2* r) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0].v, r[1].v), t1 = _mm256_unpackhi_ps(r[0].v, r[1].v);
    const __m256 t2 = _mm256_unpacklo_ps(r[2].v, r[3].v), t3 = _mm256_unpackhi_ps(r[2].v, r[3].v);
    const __m256 t4 = _mm256_unpacklo_ps(r[4].v, r[5].v), t5 = _mm256_unpackhi_ps(r[4].v, r[5].v);
    const __m256 t6 = _mm256_unpacklo_ps(r[6].v, r[7].v), t7 = _mm256_unpackhi_ps(r[6].v, r[7].v);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0].v = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1].v = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2].v = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3].v = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4].v = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5].v = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6].v = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7].v = _mm256_permute2f128_ps(s3, s7, 0x31);
  }
};
#endif

}  // namespace detail
}  // namespace fdjpeg
