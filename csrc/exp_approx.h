// A vectorisable e^x, portable (the same bits on every ISA).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

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

}  // namespace tellme
