// Vectors of block lines for the block kernel: eight floats (one block: a portable one, and AVX2
// where the including translation unit is compiled for it), and sixteen (two adjacent blocks side
// by side, AVX-512). All do the same IEEE operations in the same order, so the block arithmetic
// (block_math.hpp) instantiated with any of them gives bit-identical results.
//
// kBlocks: how many adjacent blocks a vector holds; load_lines / store_lines move one row of them
// (8 x kBlocks consecutive floats). load and all give every block the same 8 values (block_math's
// table rows, shared by the blocks of a vector).
#pragma once

#include <cstdint>

#if defined(FDJPEG_WITH_AVX2) || defined(FDJPEG_WITH_AVX512)
#include <immintrin.h>
#endif

namespace fdjpeg {
namespace detail {
// Internal linkage: each kernel translation unit keeps its own copy, compiled for its own
// instruction set (VecAvx2 serves both the AVX2 and the AVX-512 kernels); one merged copy of an
// inline member could otherwise run AVX-512 code on a CPU without it.
namespace {

// The vector types a kernel variant runs the block transform with, widest first.
template <class... V>
struct VecList {};

struct VecPortable {
  static constexpr int kBlocks = 1;
  float v[8];

  static inline VecPortable load(const float* p) {
    VecPortable r;
    for (int i = 0; i < 8; ++i) r.v[i] = p[i];
    return r;
  }
  inline void store(float* p) const {
    for (int i = 0; i < 8; ++i) p[i] = v[i];
  }
  static inline VecPortable load_lines(const float* p) { return load(p); }
  inline void store_lines(float* p) const { store(p); }
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

#if defined(FDJPEG_WITH_AVX2) || defined(FDJPEG_WITH_AVX512)
// The steps of an 8 x 8 transpose within each 256-bit half of a register (one block each):
// unpacks and shuffles within 128-bit lanes, then one step across the two lanes of a half.
inline __m256 unpack_lo(__m256 a, __m256 b) { return _mm256_unpacklo_ps(a, b); }
inline __m256 unpack_hi(__m256 a, __m256 b) { return _mm256_unpackhi_ps(a, b); }
template <int kImm>
inline __m256 shuffle(__m256 a, __m256 b) { return _mm256_shuffle_ps(a, b, kImm); }
inline __m256 lanes_lo(__m256 a, __m256 b) { return _mm256_permute2f128_ps(a, b, 0x20); }
inline __m256 lanes_hi(__m256 a, __m256 b) { return _mm256_permute2f128_ps(a, b, 0x31); }

#if defined(FDJPEG_WITH_AVX512)
inline __m512 unpack_lo(__m512 a, __m512 b) { return _mm512_unpacklo_ps(a, b); }
inline __m512 unpack_hi(__m512 a, __m512 b) { return _mm512_unpackhi_ps(a, b); }
template <int kImm>
inline __m512 shuffle(__m512 a, __m512 b) { return _mm512_shuffle_ps(a, b, kImm); }
// permute2f128 within each 256-bit half: a two-source permute.
inline __m512 lanes_lo(__m512 a, __m512 b) {
  return _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27), b);
}
inline __m512 lanes_hi(__m512 a, __m512 b) {
  return _mm512_permutex2var_ps(a, _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31), b);
}
#endif

template <class V>
inline void transpose8x8(V* r) {
  using M = decltype(r->v);
  const M t0 = unpack_lo(r[0].v, r[1].v), t1 = unpack_hi(r[0].v, r[1].v);
  const M t2 = unpack_lo(r[2].v, r[3].v), t3 = unpack_hi(r[2].v, r[3].v);
  const M t4 = unpack_lo(r[4].v, r[5].v), t5 = unpack_hi(r[4].v, r[5].v);
  const M t6 = unpack_lo(r[6].v, r[7].v), t7 = unpack_hi(r[6].v, r[7].v);
  const M s0 = shuffle<0x44>(t0, t2), s1 = shuffle<0xEE>(t0, t2);
  const M s2 = shuffle<0x44>(t1, t3), s3 = shuffle<0xEE>(t1, t3);
  const M s4 = shuffle<0x44>(t4, t6), s5 = shuffle<0xEE>(t4, t6);
  const M s6 = shuffle<0x44>(t5, t7), s7 = shuffle<0xEE>(t5, t7);
  r[0].v = lanes_lo(s0, s4);
  r[1].v = lanes_lo(s1, s5);
  r[2].v = lanes_lo(s2, s6);
  r[3].v = lanes_lo(s3, s7);
  r[4].v = lanes_hi(s0, s4);
  r[5].v = lanes_hi(s1, s5);
  r[6].v = lanes_hi(s2, s6);
  r[7].v = lanes_hi(s3, s7);
}

struct VecAvx2 {
  static constexpr int kBlocks = 1;
  __m256 v;

  static inline VecAvx2 load(const float* p) { return {_mm256_loadu_ps(p)}; }
  inline void store(float* p) const { _mm256_storeu_ps(p, v); }
  static inline VecAvx2 load_lines(const float* p) { return load(p); }
  inline void store_lines(float* p) const { store(p); }
  static inline VecAvx2 all(float x) { return {_mm256_set1_ps(x)}; }
  inline VecAvx2 operator+(const VecAvx2& b) const { return {_mm256_add_ps(v, b.v)}; }
  inline VecAvx2 operator-(const VecAvx2& b) const { return {_mm256_sub_ps(v, b.v)}; }
  inline VecAvx2 operator*(const VecAvx2& b) const { return {_mm256_mul_ps(v, b.v)}; }
  inline VecAvx2 operator/(const VecAvx2& b) const { return {_mm256_div_ps(v, b.v)}; }
  // Same result as the portable clamp for every non-NaN input.
  inline VecAvx2 clamp(float lo, float hi) const {
    return {_mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(lo)), _mm256_set1_ps(hi))};
  }
  static inline void transpose(VecAvx2* r) { transpose8x8(r); }
};
#endif

#if defined(FDJPEG_WITH_AVX512)
// Two blocks per vector halve the instructions of the block transform; lanes 0-7 hold a line of
// the left block, lanes 8-15 the same line of the right one.
struct VecAvx512 {
  static constexpr int kBlocks = 2;
  __m512 v;

  static inline VecAvx512 load(const float* p) { return {_mm512_broadcast_f32x8(_mm256_loadu_ps(p))}; }
  static inline VecAvx512 load_lines(const float* p) { return {_mm512_loadu_ps(p)}; }
  inline void store_lines(float* p) const { _mm512_storeu_ps(p, v); }
  static inline VecAvx512 all(float x) { return {_mm512_set1_ps(x)}; }
  inline VecAvx512 operator+(const VecAvx512& b) const { return {_mm512_add_ps(v, b.v)}; }
  inline VecAvx512 operator-(const VecAvx512& b) const { return {_mm512_sub_ps(v, b.v)}; }
  inline VecAvx512 operator*(const VecAvx512& b) const { return {_mm512_mul_ps(v, b.v)}; }
  inline VecAvx512 operator/(const VecAvx512& b) const { return {_mm512_div_ps(v, b.v)}; }
  // Same result as the portable clamp for every non-NaN input.
  inline VecAvx512 clamp(float lo, float hi) const {
    return {_mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(lo)), _mm512_set1_ps(hi))};
  }
  static inline void transpose(VecAvx512* r) { transpose8x8(r); }
};

#endif

// 8-bit RGB pixels <-> three 16-lane float vectors, 16 pixels (48 bytes) at a time, with the byte
// permutes of AVX-512 VBMI: one masked load and a permute per channel in; out, three saturating packs
// (which also clamp) and one permute before one masked store (the compiler's vectorisation of the
// interleaved loops takes three to four times the shuffles). Made once before a row loop (it holds
// the permutes' indices). Rgb8None: the variant moves pixels with its plain loops.
struct Rgb8None {
  static constexpr int kPixels = 0;
};

#if defined(FDJPEG_WITH_AVX512VBMI)
struct Rgb8Vbmi {
  static constexpr int kPixels = 16;
  using V = VecAvx512;
  static constexpr __mmask64 kBytes = 0xFFFFFFFFFFFFull;  // the 48 bytes of 16 pixels

  // Channel c of pixel j (byte 3 j + c) into the low byte of 32-bit lane j; the mask zeroes the rest.
  static inline __m512i channel_index(int c) {
    alignas(64) uint8_t idx[64] = {};
    for (int j = 0; j < 16; ++j) idx[4 * j] = static_cast<uint8_t>(3 * j + c);
    return _mm512_load_si512(idx);
  }
  __m512i red, green, blue, packed_to_rgb;

  Rgb8Vbmi()
      : red(channel_index(0)), green(channel_index(1)), blue(channel_index(2)), packed_to_rgb(rgb_index()) {}

  inline void read(const uint8_t* p, V& r, V& g, V& b) const {
    constexpr __mmask64 kLow = 0x1111111111111111ull;  // byte 0 of each 32-bit lane
    const __m512i bytes = _mm512_maskz_loadu_epi8(kBytes, p);
    r.v = _mm512_cvtepi32_ps(_mm512_maskz_permutexvar_epi8(kLow, red, bytes));
    g.v = _mm512_cvtepi32_ps(_mm512_maskz_permutexvar_epi8(kLow, green, bytes));
    b.v = _mm512_cvtepi32_ps(_mm512_maskz_permutexvar_epi8(kLow, blue, bytes));
  }

  // The saturating packs below leave, in 128-bit lane L, the bytes of R, G, B of pixels 4 L .. 4 L + 3
  // at 16 L + 0..3, 4..7 and 8..11: byte 3 j + c of the output takes byte 16 (j / 4) + 4 c + j % 4.
  static inline __m512i rgb_index() {
    alignas(64) uint8_t idx[64] = {};
    for (int j = 0; j < 16; ++j)
      for (int c = 0; c < 3; ++c) idx[3 * j + c] = static_cast<uint8_t>(16 * (j / 4) + 4 * c + j % 4);
    return _mm512_load_si512(idx);
  }
  // Samples not yet clamped (any value a few thousand either side of 0..255) -> bytes, clamped by
  // the packs' saturation: (v + 0.5) truncated, as block::store_sample does after the clamp; or
  // (kUnfinished: the transform's own output, Finish::in_write) rounded half to even, as
  // block::finish_sample does (the conversion's own rounding, whatever MXCSR says). Either way the
  // bytes of clamping first.
  template <bool kUnfinished>
  inline void write(const V& r, const V& g, const V& b, uint8_t* p) const {
    const __m512i ri = to_int<kUnfinished>(r.v), gi = to_int<kUnfinished>(g.v), bi = to_int<kUnfinished>(b.v);
    const __m512i bytes = _mm512_packus_epi16(_mm512_packs_epi32(ri, gi), _mm512_packs_epi32(bi, bi));
    _mm512_mask_storeu_epi8(p, kBytes, _mm512_permutexvar_epi8(packed_to_rgb, bytes));
  }

  template <bool kUnfinished>
  static inline __m512i to_int(__m512 v) {
    if (kUnfinished) return _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_cvttps_epi32(_mm512_add_ps(v, _mm512_set1_ps(0.5f)));
  }
};
#endif

// Two vectors of V in lockstep, twice the blocks: the long dependency chain of one block transform
// (two AAN passes, a division, two more passes) leaves the out-of-order window short of
// independent work; two chains interleaved fill it (AVX-512: 1.03-1.12x pipeline, measured).
template <class V>
struct Lockstep {
  static constexpr int kBlocks = 2 * V::kBlocks;
  V a, b;

  static inline Lockstep load(const float* p) {
    const V x = V::load(p);
    return {x, x};
  }
  static inline Lockstep load_lines(const float* p) { return {V::load_lines(p), V::load_lines(p + 8 * V::kBlocks)}; }
  inline void store_lines(float* p) const {
    a.store_lines(p);
    b.store_lines(p + 8 * V::kBlocks);
  }
  static inline Lockstep all(float x) { return {V::all(x), V::all(x)}; }
  inline Lockstep operator+(const Lockstep& o) const { return {a + o.a, b + o.b}; }
  inline Lockstep operator-(const Lockstep& o) const { return {a - o.a, b - o.b}; }
  inline Lockstep operator*(const Lockstep& o) const { return {a * o.a, b * o.b}; }
  inline Lockstep operator/(const Lockstep& o) const { return {a / o.a, b / o.b}; }
  inline Lockstep clamp(float lo, float hi) const { return {a.clamp(lo, hi), b.clamp(lo, hi)}; }
  static inline void transpose(Lockstep* r) {
    V x[8], y[8];
    for (int i = 0; i < 8; ++i) {
      x[i] = r[i].a;
      y[i] = r[i].b;
    }
    V::transpose(x);
    V::transpose(y);
    for (int i = 0; i < 8; ++i) r[i] = {x[i], y[i]};
  }
};

}  // namespace
}  // namespace detail
}  // namespace fdjpeg
