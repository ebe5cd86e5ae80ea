// Test-only: AVX-512 intrinsics through SIMDe, so the AVX-512 kernels run (slowly) and can be
// checked bit for bit on CPUs without AVX-512. The few intrinsics SIMDe 0.7 lacks are written
// here from Intel's definitions. Never used by a native build.
#pragma once
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#include <cstdint>

typedef simde__mmask32 __mmask32;
typedef simde__mmask64 __mmask64;

static inline simde__m512i _mm512_cvtepu8_epi16(simde__m256i a) {  // zero-extend 32 bytes
  return simde_mm512_and_si512(simde_mm512_cvtepi8_epi16(a), simde_mm512_set1_epi16(0xFF));
}

static inline simde__m512i _mm512_cvtepi16_epi32(simde__m256i a) {  // sign-extend 16 words
  int16_t in[16];
  int32_t out[16];
  simde_mm256_storeu_si256(in, a);
  for (int i = 0; i < 16; ++i) out[i] = in[i];
  return simde_mm512_loadu_si512(out);
}

static inline int32_t _mm512_reduce_add_epi32(simde__m512i a) {  // wraps like the hardware
  uint32_t v[16], s = 0;
  simde_mm512_storeu_si512(v, a);
  for (uint32_t x : v) s += x;
  return static_cast<int32_t>(s);
}

static inline int64_t _mm512_reduce_add_epi64(simde__m512i a) {
  uint64_t v[8], s = 0;
  simde_mm512_storeu_si512(v, a);
  for (uint64_t x : v) s += x;
  return static_cast<int64_t>(s);
}

static inline __mmask32 _mm256_test_epi8_mask(simde__m256i a, simde__m256i b) {
  uint8_t x[32], y[32];
  simde_mm256_storeu_si256(x, a);
  simde_mm256_storeu_si256(y, b);
  __mmask32 k = 0;
  for (int i = 0; i < 32; ++i) k |= static_cast<__mmask32>((x[i] & y[i]) != 0) << i;
  return k;
}

#define TELLME_KEEP(x) asm volatile("" : : "g"(&(x)) : "memory")
