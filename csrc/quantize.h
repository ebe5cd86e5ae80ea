#pragma once
#include <cstdint>

namespace tellme {

// Per-token absmax quantization (BitNet b1.58): amax = max(max|x|, 1e-5),
// q = round_half_even(x * (127 / amax)) in [-127, 127], scale = amax / 127 (the dequant factor).
// Returns the index of the first row holding NaN or Inf, or -1.
int64_t quantize_rows(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scale);

// One row to 6-bit head values (the same quantizer with 31 for 127: q in [-31, 31], scale =
// amax / 31), packed as core.h's 6-bit rows (cols padded to INT6_BLOCK). false on NaN or Inf.
bool quantize_int6_row(const float* x, int64_t cols, uint8_t* packed, float* scale);

// The same after RMSNorm, in one pass per row: y = (x * inv_rms) * gamma with
// inv_rms = float(1 / sqrt(sum(x^2) / cols + eps)), the sum taken in double.
// y = RMSNorm(x) * gamma for one row of `cols` (the sum of squares in double).
void rmsnorm_row(const float* x, const float* gamma, double eps, int64_t cols, float* y);

int64_t rmsnorm_quantize_rows(const float* x, const float* gamma, double eps, int64_t rows,
                              int64_t cols, int8_t* q, float* scale);

}  // namespace tellme
