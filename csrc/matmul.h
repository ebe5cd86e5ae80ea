#pragma once
#include <cstdint>

namespace tellme {

struct TlWeights {  // TLMM layout, see core.h
  const uint8_t* tiles;
  const int32_t* neg_count;  // [out_pad] negative groups per row
  int64_t out, in, out_pad, in_pad;
};

struct I2Weights {  // 2-bit code layout, see core.h
  const uint8_t* codes;
  int64_t out, in, out_pad, in_pad;
};

// Where results go: exact int32 sums, or fp32 = float(sum) * (act_scale[t] * weight_scale).
struct Output {
  int32_t* i32 = nullptr;
  float* f32 = nullptr;
  const float* act_scale = nullptr;
  float weight_scale = 1.0f;
};

// act: int8 [tokens, in], row-major. Output rows are [tokens, out].
void tl_matmul(const TlWeights& w, const int8_t* act, int64_t tokens, const Output& out);
void i2_matmul(const I2Weights& w, const int8_t* act, int64_t tokens, const Output& out);

}  // namespace tellme
