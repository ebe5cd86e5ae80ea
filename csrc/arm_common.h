// What the AArch64 backends share. `static`: each backend file compiles these with its own
// -march (see tables.h).
#pragma once
#include <arm_neon.h>

#include <cstdint>

namespace tellme {

// Byte j holds the codes of k = j, j+32, j+64, j+96 in bits 7-6, 5-4, 3-2, 1-0: code[s] gets k = j + 32s.
static inline void unpack_i2(uint8x16_t v, int8x16_t code[4]) {
  const uint8x16_t mask = vdupq_n_u8(3);
  code[0] = vreinterpretq_s8_u8(vshrq_n_u8(v, 6));
  code[1] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 4), mask));
  code[2] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 2), mask));
  code[3] = vreinterpretq_s8_u8(vandq_u8(v, mask));
}

// The int8 peak's benchmark loop: `op(acc, a, b)` (`macs` multiply-adds of int8 pairs into int32)
// on 8 independent accumulators, with `a` made opaque so every product is recomputed.
template <class Op>
static double madd_loop(int64_t iterations, double macs, Op op) {
  int8x16_t a = vdupq_n_s8(3);
  int8x16_t b[8];
  int32x4_t acc[8];
  for (int j = 0; j < 8; ++j) {
    b[j] = vdupq_n_s8(static_cast<int8_t>(j - 4));
    acc[j] = vdupq_n_s32(0);
  }
  for (int64_t i = 0; i < iterations; ++i) {
    asm volatile("" : "+w"(a));
    for (int j = 0; j < 8; ++j) acc[j] = op(acc[j], a, b[j]);
  }
  int32x4_t s = acc[0];
  for (int j = 1; j < 8; ++j) s = vaddq_s32(s, acc[j]);
  volatile int32_t sink = vaddvq_s32(s);
  (void)sink;
  return 8.0 * macs * static_cast<double>(iterations);
}

}  // namespace tellme
