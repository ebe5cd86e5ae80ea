#include "quantize.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "parallel.h"

namespace tellme {
namespace {

// false if the row holds NaN or Inf
bool quantize_row(const float* x, int64_t cols, int8_t* q, float* scale) {
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
  const float inv = 127.0f / amax;
  // Round half to even by adding and subtracting 1.5 * 2^23 (exact for |v| < 2^22, here <= 127):
  // the same result as nearbyint, without a libm call per element, and vectorisable.
  constexpr float ROUND = 12582912.0f;
  for (int64_t i = 0; i < cols; ++i) {
    float v = (x[i] * inv + ROUND) - ROUND;
    v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
    q[i] = static_cast<int8_t>(v);
  }
  *scale = amax / 127.0f;
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
    bad[r] = !quantize_row(x + r * cols, cols, q + r * cols, scale + r);
  });
  return first_bad(bad);
}

void rmsnorm_row(const float* x, const float* gamma, double eps, int64_t cols, float* y) {
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
    bad[r] = !quantize_row(y.data(), cols, q + r * cols, scale + r);
  });
  return first_bad(bad);
}

}  // namespace tellme
