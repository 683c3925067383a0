// The AVX-512 stripe kernels with AVX-512 VBMI's byte permutes for 8-bit RGB pixels (Ice Lake,
// Zen 4 and later): 1.25x the AVX-512 kernels on jpeg() 4:2:0 of 8-bit photos, bit-identical.
#define FDJPEG_WITH_AVX512VBMI 1
#include "kernels_avx512.cpp"
