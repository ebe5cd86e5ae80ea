// A vectorisable e^x, portable (the same bits on every ISA).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace tellme {

// e^x for x in [-87, 88] (clamped outside): x = n ln2 + f, e^f by a degree-6 polynomial on
// |f| <= ln2 / 2, times 2^n built in the exponent bits. SiLU through it stays within 4 ulp of
// float64 math (tests/test_engine_kernels.py). Branch-free, so a loop of them vectorises, where
// libm's expf does not: SiLU (matmul.cpp) and the softmax weights (attention.cpp).
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  constexpr float ROUND = 12582912.0f;  // 1.5 * 2^23: adding and subtracting rounds to an integer
  const float n = (x * 1.44269504f + ROUND) - ROUND;
  const float f = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // ln2 in two parts: f exact
  const float p = ((((1.9875691500e-4f * f + 1.3981999507e-3f) * f + 8.3334519073e-3f) * f +
                    4.1665795894e-2f) * f + 1.6666665459e-1f) * f + 5.0000001201e-1f;
  const float e = p * (f * f) + f + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return e * scale;
}

#if defined(__x86_64__) || defined(_M_X64)
// exp_approx 8 wide where the CPU has AVX2, step for step: every step is one IEEE float operation
// (no contraction: the callers are compiled without FMA), so the bits are the scalar function's.
__attribute__((target("avx2"))) inline __m256 exp_approx8(__m256 x) {
  const __m256 round = _mm256_set1_ps(12582912.0f);
  const __m256 a = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), x));
  const __m256 n = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(a, _mm256_set1_ps(1.44269504f)), round), round);
  const __m256 f = _mm256_sub_ps(_mm256_sub_ps(a, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f))),
                                 _mm256_mul_ps(n, _mm256_set1_ps(-2.12194440e-4f)));
  __m256 p = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(1.9875691500e-4f), f), _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_add_ps(_mm256_mul_ps(p, f), _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_add_ps(_mm256_mul_ps(p, f), _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_add_ps(_mm256_mul_ps(p, f), _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, f), _mm256_set1_ps(5.0000001201e-1f));
  const __m256 e = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(f, f)), f), _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(e, _mm256_castsi256_ps(bits));
}
#endif

}  // namespace tellme
