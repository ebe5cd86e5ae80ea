// The 2-bit codes of 16 bytes of an `i2` row as four int8 vectors, for the AArch64 backends.
// `static`: each backend file compiles it with its own -march (see tables.h).
#pragma once
#include <arm_neon.h>

namespace tellme {

// Byte j holds the codes of k = j, j+32, j+64, j+96 in bits 7-6, 5-4, 3-2, 1-0: code[s] gets k = j + 32s.
static inline void unpack_i2(uint8x16_t v, int8x16_t code[4]) {
  const uint8x16_t mask = vdupq_n_u8(3);
  code[0] = vreinterpretq_s8_u8(vshrq_n_u8(v, 6));
  code[1] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 4), mask));
  code[2] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 2), mask));
  code[3] = vreinterpretq_s8_u8(vandq_u8(v, mask));
}

}  // namespace tellme
