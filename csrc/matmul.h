#pragma once
#include <cstdint>

namespace tellme {

struct TlmmWeights {  // TLMM layout, see core.h
  const uint8_t* tiles;
  const int32_t* neg_count;  // [out_pad] negative groups per row
  int64_t out, in, out_pad, in_pad;
};

struct I2Weights {  // 2-bit code layout, see core.h
  const uint8_t* codes;
  int64_t out, in, out_pad, in_pad;
};

// What the epilogue does with y = float(sum) * (act_scale[t] * weight_scale) for output row r of
// token t. The model's element-wise steps live here so that no intermediate tensor is written
// and read back: residual add (o, down), act(gate) * up, and RoPE on q and k.
enum class Epilogue { Store, Add, Gated };  // Gated: act(gate) * up, see MatmulJob
enum class Activation { SiLU, ReLU2 };

// act(gate) for n gate values, in place (the Gated epilogue's; exposed for its test).
void activate(float* x, int64_t n, Activation a);

struct Rope {               // rotates adjacent row pairs (2j, 2j+1) within each head
  const float* cos = nullptr;  // [positions, head_dim / 2]
  const float* sin = nullptr;
  int64_t head_dim = 0;
  const int64_t* positions = nullptr;  // token t sits at position positions[t]
};

// Where results go: exact int32 sums, or y through the epilogue into fp32 or fp16 rows of
// out_features elements.
struct Output {
  int32_t* i32 = nullptr;
  float* f32 = nullptr;
  uint16_t* f16 = nullptr;
  const float* act_scale = nullptr;
  float weight_scale = 1.0f;
  Epilogue epilogue = Epilogue::Store;
  Activation activation = Activation::SiLU;
  Rope rope;                 // used when rope.cos is set
};

// act: int8 [tokens, in], row-major. Output rows are [tokens, out].
void tlmm_matmul(const TlmmWeights& w, const int8_t* act, int64_t tokens, const Output& out);
// group_scale (optional, [out_pad, in / group]): grouped weights, see Linear; out.weight_scale unused.
void i2_matmul(const I2Weights& w, const int8_t* act, int64_t tokens, const Output& out,
               const float* group_scale = nullptr, int64_t group = 0);

// One packed ternary matrix in either layout: W = scale * T, or, with group scales (i2 only),
// W[r, k] = group_scale[r * (in / group) + k / group] * T[r, k] (Bonsai's Q2_0/Q1_0: one scale
// per `group` weights along a row). Grouped rows are summed exactly per group in int32, then
// scaled and added in fp32, group by group in order; `scale` is then 1.
struct Linear {
  bool is_tlmm = true;
  TlmmWeights tlmm{};
  I2Weights i2{};
  float scale = 1.0f;
  const float* group_scale = nullptr;  // [out_pad, in / group], or null for one scale
  int64_t group = 0;
  int64_t out_features() const { return is_tlmm ? tlmm.out : i2.out; }
  int64_t in_features() const { return is_tlmm ? tlmm.in : i2.in; }
};

// One output of a grouped matmul. With `up` set (same shape and layout as w), the task that
// computes a row block of w also computes it for `up` and the Gated epilogue writes
// act(w x) * (up x): the gate never goes through memory.
struct MatmulJob {
  const Linear* w;
  const Linear* up = nullptr;
  Output out;                // its weight_scale is taken from w
};

// Several matrices that read the same activations (q, k and v; gate and up) in one parallel
// region: activations are prepared once and all row blocks share one task list.
void matmul_group(const MatmulJob* jobs, int count, const int8_t* act, int64_t tokens);

}  // namespace tellme
