// Run-time choice of the kernel variant: the widest instruction set that both the CPU and the
// operating system support (AVX-512 with VBMI, AVX-512, AVX2, else the baseline).
//
// The environment can cap the choice, as libjpeg-turbo's JSIMD_FORCE* variables do, so that every
// variant is tested on one machine: FDJPEG_ISA=baseline, avx2, avx512 or avx512vbmi (a variant the machine
// lacks gives the widest one it has below it; other values are ignored), and FDJPEG_FORCE_PORTABLE
// set to anything but "" or "0" (as FDJPEG_ISA=baseline). Read once, at the first dispatch.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define FDJPEG_HAVE_X86_VARIANTS 1
#endif

#include "dispatch.hpp"

namespace fdjpeg {
namespace detail {

#ifdef FDJPEG_HAVE_X86_VARIANTS
StripeKernels avx2_kernels(DType dtype);
StripeKernels avx512_kernels(DType dtype);
StripeKernels avx512vbmi_kernels(DType dtype);
#endif
StripeKernels baseline_kernels(DType dtype);

namespace {

enum class Isa : int { baseline = 0, avx2 = 1, avx512 = 2, avx512vbmi = 3 };
constexpr const char* kIsaNames[] = {"baseline", "avx2", "avx512", "avx512vbmi"};
constexpr int kIsaCount = 4;

std::atomic<bool> force_baseline{false};

#ifdef FDJPEG_HAVE_X86_VARIANTS
// XCR0: the register states the OS saves on a context switch. Read only when CPUID says OSXSAVE.
uint64_t xcr0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}
#endif

// A CPU can have the instructions while the OS does not save the wider registers (an old kernel,
// a hypervisor that masks them): such code would corrupt them on a task switch, so both are checked.
Isa cpu_isa() {
#ifdef FDJPEG_HAVE_X86_VARIANTS
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return Isa::baseline;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28);
  if (!osxsave || !avx || __get_cpuid_max(0, nullptr) < 7) return Isa::baseline;
  const uint64_t xcr = xcr0();
  if ((xcr & 0x6) != 0x6) return Isa::baseline;  // SSE and AVX (YMM) state
  __cpuid_count(7, 0, a, b, c, d);
  if (!(b & (1u << 5))) return Isa::baseline;  // AVX2
  constexpr unsigned kAvx512 = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31);  // F, DQ, BW, VL
  const bool zmm_state = (xcr & 0xE0) == 0xE0;  // opmask, upper halves of ZMM0-15, ZMM16-31
  if ((b & kAvx512) != kAvx512 || !zmm_state) return Isa::avx2;
  return (c & (1u << 1)) ? Isa::avx512vbmi : Isa::avx512;  // VBMI
#else
  return Isa::baseline;
#endif
}

// The widest variant the environment allows.
Isa environment_cap() {
  const char* portable = std::getenv("FDJPEG_FORCE_PORTABLE");
  if (portable && *portable && std::strcmp(portable, "0") != 0) return Isa::baseline;
  if (const char* isa = std::getenv("FDJPEG_ISA"))
    for (int i = 0; i < kIsaCount; ++i)
      if (std::strcmp(isa, kIsaNames[i]) == 0) return static_cast<Isa>(i);
  return Isa::avx512vbmi;
}

Isa chosen_isa() {
  static const Isa isa = static_cast<Isa>(
      std::min(static_cast<int>(cpu_isa()), static_cast<int>(environment_cap())));
  return force_baseline ? Isa::baseline : isa;
}

}  // namespace

void set_force_baseline(bool force) { force_baseline = force; }

const char* active_isa() { return kIsaNames[static_cast<int>(chosen_isa())]; }

StripeKernels select_kernels(DType dtype) {
  switch (chosen_isa()) {
#ifdef FDJPEG_HAVE_X86_VARIANTS
    case Isa::avx512vbmi:
      return avx512vbmi_kernels(dtype);
    case Isa::avx512:
      return avx512_kernels(dtype);
    case Isa::avx2:
      return avx2_kernels(dtype);
#endif
    default:
      return baseline_kernels(dtype);
  }
}

}  // namespace detail
}  // namespace fdjpeg
