#include "quantize.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "core.h"
#include "parallel.h"

// The row loops are compiled twice on x86, for the baseline and for AVX2, and GCC picks one by
// cpuid when the module loads: norms and quantization were 4% of a 0.73B prefill in SSE2, 2% in
// AVX2. Every step is one IEEE operation in a fixed order (no contraction), so both give the same
// bits.
#ifdef TELLME_HAVE_X86_BACKENDS
#define ROW_LOOPS __attribute__((target_clones("avx2", "default")))
#else
#define ROW_LOOPS
#endif

namespace tellme {
namespace {

// false if the row holds NaN or Inf. code_max: 127 (int8), or 31 (the 6-bit head rows).
ROW_LOOPS bool quantize_row(const float* x, int64_t cols, int code_max, int8_t* q, float* scale) {
  // |x| as bits: non-negative floats order as their bit patterns do, and NaN and Inf are the
  // patterns from 0x7F800000 up, so one integer max (which vectorises) finds both.
  int32_t top = 0;
  for (int64_t i = 0; i < cols; ++i) {
    int32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    bits &= 0x7FFFFFFF;
    top = bits > top ? bits : top;
  }
  if (top >= 0x7F800000) return false;
  float amax;
  std::memcpy(&amax, &top, sizeof amax);
  amax = amax > 1e-5f ? amax : 1e-5f;
  const float limit = static_cast<float>(code_max);
  const float inv = limit / amax;
  // Round half to even by adding and subtracting 1.5 * 2^23 (exact for |v| < 2^22, here <= 127):
  // the same result as nearbyint, without a libm call per element, and vectorisable.
  constexpr float ROUND = 12582912.0f;
  for (int64_t i = 0; i < cols; ++i) {
    float v = (x[i] * inv + ROUND) - ROUND;
    v = v > limit ? limit : (v < -limit ? -limit : v);
    q[i] = static_cast<int8_t>(v);
  }
  *scale = amax / limit;
  return true;
}

int64_t first_bad(const std::vector<char>& bad) {
  for (size_t i = 0; i < bad.size(); ++i)
    if (bad[i]) return static_cast<int64_t>(i);
  return -1;
}

}  // namespace

int64_t quantize_rows(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scale) {
  std::vector<char> bad(rows, 0);
  parallel_for(rows, [&](int64_t r) {
    bad[r] = !quantize_row(x + r * cols, cols, 127, q + r * cols, scale + r);
  });
  return first_bad(bad);
}

bool quantize_int6_row(const float* x, int64_t cols, uint8_t* packed, float* scale) {
  thread_local std::vector<int8_t> q;
  const int64_t blocks = round_up(cols, INT6_BLOCK) / INT6_BLOCK;
  q.assign(blocks * INT6_BLOCK, 0);
  if (!quantize_row(x, cols, 31, q.data(), scale)) return false;
  for (int64_t b = 0; b < blocks; ++b) {  // core.h: two nibble planes, then the top 2 bits
    const int8_t* v = q.data() + b * INT6_BLOCK;
    uint8_t* p = packed + b * INT6_BLOCK_BYTES;
    for (int j = 0; j < 32; ++j) {
      int u[4];
      for (int s = 0; s < 4; ++s) u[s] = v[32 * s + j] + 32;
      p[j] = static_cast<uint8_t>((u[0] & 15) | (u[2] & 15) << 4);
      p[32 + j] = static_cast<uint8_t>((u[1] & 15) | (u[3] & 15) << 4);
      p[64 + j] = static_cast<uint8_t>(u[0] >> 4 | (u[1] >> 4) << 2 | (u[2] >> 4) << 4 | (u[3] >> 4) << 6);
    }
  }
  return true;
}

ROW_LOOPS void rmsnorm_row(const float* x, const float* gamma, double eps, int64_t cols, float* y) {
  // The float64 sum of squares in 8 lanes (lane l takes i = l mod 8), joined in a fixed order:
  // vector registers instead of one chain of dependent adds, and the same bits on every ISA.
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= cols; i += 8)
    for (int l = 0; l < 8; ++l) lane[l] += static_cast<double>(x[i + l]) * x[i + l];
  for (int l = 0; i < cols; ++i, ++l) lane[l] += static_cast<double>(x[i]) * x[i];
  const double ss = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  const float inv_rms = static_cast<float>(1.0 / std::sqrt(ss / cols + eps));
  for (int64_t i = 0; i < cols; ++i) y[i] = (x[i] * inv_rms) * gamma[i];
}

int64_t rmsnorm_quantize_rows(const float* x, const float* gamma, double eps, int64_t rows,
                              int64_t cols, int8_t* q, float* scale) {
  std::vector<char> bad(rows, 0);
  parallel_for(rows, [&](int64_t r) {
    thread_local std::vector<float> y;
    y.resize(cols);
    rmsnorm_row(x + r * cols, gamma, eps, cols, y.data());
    bad[r] = !quantize_row(y.data(), cols, 127, q + r * cols, scale + r);
  });
  return first_bad(bad);
}

}  // namespace tellme
