// CPU feature detection (x86: cpuid + xgetbv; AArch64: what the OS reports) and the one dispatch
// point: the active backend.
#include <atomic>
#include <cstring>

#include "core.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif
#if defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

namespace tellme {

CpuFeatures detect_cpu() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29);
  if (!osxsave) return f;
  unsigned xcr0_lo, xcr0_hi;
  asm volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const bool os_avx = (xcr0_lo & 0x6) == 0x6;        // XMM and YMM state
  const bool os_avx512 = (xcr0_lo & 0xE6) == 0xE6;   // plus opmask and ZMM state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  f.avx2 = os_avx && (b & (1u << 5));
  f.fma = os_avx && fma;
  f.f16c = os_avx && f16c;
  f.avx512f = os_avx512 && (b & (1u << 16));
  f.avx512bw = os_avx512 && (b & (1u << 30));
  f.avx512vl = os_avx512 && (b & (1u << 31));
  f.avx512vbmi = os_avx512 && (c & (1u << 1));
  f.avx512vnni = os_avx512 && (c & (1u << 11));
#elif defined(__aarch64__) && defined(__linux__)
  // Bit numbers of the kernel's uapi asm/hwcap.h, spelled out so that older headers build too.
  const unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
  f.neon = hwcap & (1ul << 1);          // HWCAP_ASIMD
  f.dotprod = hwcap & (1ul << 20);      // HWCAP_ASIMDDP
  f.i8mm = hwcap2 & (1ul << 13);        // HWCAP2_I8MM
#elif defined(__aarch64__) && defined(__APPLE__)
  auto flag = [](const char* name) {
    int value = 0;
    size_t size = sizeof(value);
    return sysctlbyname(name, &value, &size, nullptr, 0) == 0 && value != 0;
  };
  f.neon = true;  // every Apple silicon CPU
  f.dotprod = flag("hw.optional.arm.FEAT_DotProd");
  f.i8mm = flag("hw.optional.arm.FEAT_I8MM");
#elif defined(__aarch64__)
  f.neon = true;  // AArch64 requires Advanced SIMD; extensions unknown without an OS interface
#endif
  return f;
}

namespace {

bool runnable(const Backend& b) {
  if (b.emulated) return true;
  const CpuFeatures f = detect_cpu();
  if (!std::strcmp(b.name, "avx512"))
    return f.avx512f && f.avx512bw && f.avx512vl && f.avx512vbmi && f.avx512vnni;
  if (!std::strcmp(b.name, "avx2")) return f.avx2 && f.fma && f.f16c;
  if (!std::strcmp(b.name, "i8mm")) return f.neon && f.dotprod && f.i8mm;
  if (!std::strcmp(b.name, "dotprod")) return f.neon && f.dotprod;
  if (!std::strcmp(b.name, "neon")) return f.neon;
  return true;
}

const Backend* const kBackends[] = {
#ifdef TELLME_HAVE_X86_BACKENDS
    &avx512_backend, &avx2_backend,
#endif
#ifdef TELLME_HAVE_ARM_BACKENDS
    &i8mm_backend, &dotprod_backend, &neon_backend,
#endif
    &scalar_backend,
};
constexpr int kBackendCount = sizeof(kBackends) / sizeof(kBackends[0]);

// Best natively supported ISA; an emulated one is never picked unless asked for by name.
const Backend* best_backend() {
  for (const Backend* b : kBackends)
    if (!b->emulated && runnable(*b)) return b;
  return &scalar_backend;
}

std::atomic<const Backend*> g_active{nullptr};

}  // namespace

const Backend* const* all_backends(int* count) {
  *count = kBackendCount;
  return kBackends;
}

const Backend* find_backend(const char* name) {
  for (const Backend* b : kBackends)
    if (!std::strcmp(b->name, name)) return runnable(*b) ? b : nullptr;
  return nullptr;
}

const Backend& active_backend() {
  const Backend* b = g_active.load(std::memory_order_acquire);
  if (!b) {
    b = best_backend();
    g_active.store(b, std::memory_order_release);
  }
  return *b;
}

void set_active_backend(const Backend& b) { g_active.store(&b, std::memory_order_release); }

}  // namespace tellme
