// What the AArch64 backends share. `static`: each backend file compiles these with its own
// -march (see tables.h).
#pragma once
#include <arm_neon.h>

#include <cstdint>

#include "core.h"

namespace tellme {

// Byte j holds the codes of k = j, j+32, j+64, j+96 in bits 7-6, 5-4, 3-2, 1-0: code[s] gets k = j + 32s.
static inline void unpack_i2(uint8x16_t v, int8x16_t code[4]) {
  const uint8x16_t mask = vdupq_n_u8(3);
  code[0] = vreinterpretq_s8_u8(vshrq_n_u8(v, 6));
  code[1] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 4), mask));
  code[2] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 2), mask));
  code[3] = vreinterpretq_s8_u8(vandq_u8(v, mask));
}

// Half `h` (bytes 16h .. 16h + 15 of each plane) of a 96-byte block of 6-bit head rows (core.h):
// u[s] holds u = q + 32 of values 32s + 16h + 0..15.
static inline void unpack_int6(const uint8_t* p, int h, int8x16_t u[4]) {
  const uint8x16_t n0 = vld1q_u8(p + 16 * h), n1 = vld1q_u8(p + 32 + 16 * h), top = vld1q_u8(p + 64 + 16 * h);
  const uint8x16_t m15 = vdupq_n_u8(15), m3 = vdupq_n_u8(3);
  u[0] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(n0, m15), vshlq_n_u8(vandq_u8(top, m3), 4)));
  u[1] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(n1, m15), vshlq_n_u8(vandq_u8(vshrq_n_u8(top, 2), m3), 4)));
  u[2] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(n0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(top, 4), m3), 4)));
  u[3] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(n1, 4), vshlq_n_u8(vshrq_n_u8(top, 6), 4)));
}

// 6-bit head rows times `tokens` rows of x (Backend::int6_gemm): `madd(acc, u, a)` adds the
// products of 16 values into the int32 lanes of acc.
template <class Madd>
static void int6_gemm_with(const uint8_t* rows, int64_t n_rows, int64_t k_pad, const int8_t* x, const int32_t* x_sums,
                           int64_t tokens, int32_t* out, Madd madd) {
  const int64_t blocks = k_pad / INT6_BLOCK;
  for (int64_t r = 0; r < n_rows; ++r)
    for (int64_t t = 0; t < tokens; ++t) {
      int32x4_t acc = vdupq_n_s32(0);
      for (int64_t b = 0; b < blocks; ++b)
        for (int h = 0; h < 2; ++h) {
          int8x16_t u[4];
          unpack_int6(rows + (r * blocks + b) * INT6_BLOCK_BYTES, h, u);
          for (int s = 0; s < 4; ++s) acc = madd(acc, u[s], vld1q_s8(x + t * k_pad + b * INT6_BLOCK + 32 * s + 16 * h));
        }
      out[t * n_rows + r] = vaddvq_s32(acc) - 32 * x_sums[t];
    }
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
