// Dot-product kernels: ARMv8.2 `sdot` (FEAT_DotProd; Cortex-A55/A76 up, Neoverse, Apple M1 up).
// Compiled with +dotprod and run only after the OS reports it (cpu.cpp).
//
// `sdot` adds four int8 products into each int32 lane, so the 2-bit multiply-add and the LM
// head need no int16 stage at all and cannot overflow. TLMM, the attention arithmetic and the
// rest are the NEON backend's: `sdot` does not help a table lookup.
#include <arm_neon.h>

#include "core.h"
#include "arm_common.h"
#include "tables.h"

namespace tellme {
namespace {

template <int T>
void i2_row(const uint8_t* row, int64_t blocks, const int8_t* acts, int64_t act_stride,
            const int32_t* act_sums, int32_t* out /* stride ROW_BLOCK */) {
  int32x4_t acc[T][2];  // two independent chains per token
  for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = vdupq_n_s32(0);
  for (int64_t b = 0; b < blocks; ++b) {
    int8x16_t code[2][4];  // [x][s]: k = 32s + 16x + (0..15)
    for (int x = 0; x < 2; ++x) unpack_i2(vld1q_u8(row + 32 * b + 16 * x), code[x]);
    for (int t = 0; t < T; ++t) {
      const int8_t* a = acts + t * act_stride + I2_BLOCK * b;
      for (int s = 0; s < 4; ++s)
        for (int x = 0; x < 2; ++x) acc[t][x] = vdotq_s32(acc[t][x], code[x][s], vld1q_s8(a + 32 * s + 16 * x));
    }
  }
  for (int t = 0; t < T; ++t) out[t * ROW_BLOCK] = vaddvq_s32(vaddq_s32(acc[t][0], acc[t][1])) - act_sums[t];
}

// One head row against T tokens, each weight vector loaded once for all of them.
template <int T>
void int8_row(const int8_t* w, int64_t k, const int8_t* x, int32_t* out /* stride n_rows */,
              int64_t n_rows) {
  int32x4_t acc[T][2];
  for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = vdupq_n_s32(0);
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    const int8x16_t w0 = vld1q_s8(w + i), w1 = vld1q_s8(w + i + 16);
    for (int t = 0; t < T; ++t) {
      acc[t][0] = vdotq_s32(acc[t][0], w0, vld1q_s8(x + t * k + i));
      acc[t][1] = vdotq_s32(acc[t][1], w1, vld1q_s8(x + t * k + i + 16));
    }
  }
  for (; i + 16 <= k; i += 16)
    for (int t = 0; t < T; ++t) acc[t][0] = vdotq_s32(acc[t][0], vld1q_s8(w + i), vld1q_s8(x + t * k + i));
  for (int t = 0; t < T; ++t) {
    int32_t sum = vaddvq_s32(vaddq_s32(acc[t][0], acc[t][1]));
    for (int64_t j = i; j < k; ++j) sum += static_cast<int32_t>(w[j]) * x[t * k + j];
    out[t * n_rows] = sum;
  }
}

double int8_madd_loop(int64_t iterations) {
  return madd_loop(iterations, 16, [](int32x4_t acc, int8x16_t a, int8x16_t b) { return vdotq_s32(acc, a, b); });
}

}  // namespace

void i2_block_dotprod(const uint8_t* codes, int64_t in_pad, const int8_t* acts, int64_t act_stride,
                      const int32_t* act_sums, int64_t tokens, int32_t* acc) {
  const int64_t row_bytes = in_pad / 4, blocks = in_pad / I2_BLOCK;
  for (int r = 0; r < ROW_BLOCK; ++r) {
    const uint8_t* row = codes + r * row_bytes;
    int64_t t = 0;
    for (; t + 4 <= tokens; t += 4)
      i2_row<4>(row, blocks, acts + t * act_stride, act_stride, act_sums + t, acc + t * ROW_BLOCK + r);
    for (; t < tokens; ++t)
      i2_row<1>(row, blocks, acts + t * act_stride, act_stride, act_sums + t, acc + t * ROW_BLOCK + r);
  }
}

void int8_gemm_dotprod(const int8_t* rows, int64_t n_rows, int64_t k, const int8_t* x, int64_t tokens,
                       int32_t* out) {
  for (int64_t r = 0; r < n_rows; ++r) {
    int64_t t = 0;
    for (; t + 4 <= tokens; t += 4) int8_row<4>(rows + r * k, k, x + t * k, out + t * n_rows + r, n_rows);
    for (; t < tokens; ++t) int8_row<1>(rows + r * k, k, x + t * k, out + t * n_rows + r, n_rows);
  }
}

void int6_gemm_dotprod(const uint8_t* rows, int64_t n_rows, int64_t k_pad, const int8_t* x, const int32_t* x_sums,
                       int64_t tokens, int32_t* out) {
  int6_gemm_with(rows, n_rows, k_pad, x, x_sums, tokens, out,
                 [](int32x4_t acc, int8x16_t u, int8x16_t a) { return vdotq_s32(acc, u, a); });
}

const Backend dotprod_backend = {
    "dotprod", false, 32, plane_tables, tlmm_block_neon, i2_prepare_copy, i2_block_dotprod, int8_gemm_dotprod,
    int6_gemm_dotprod, dots_neon, dots_f16_neon, axpys_neon, axpys_f16_neon, axpys_i8_neon, half_to_float_neon,
    float_to_half_neon, int8_madd_loop, fp32_fma_loop_neon,
    stream_read_neon,
};

}  // namespace tellme
