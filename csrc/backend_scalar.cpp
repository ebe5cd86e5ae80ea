// Portable C kernels: the readable version of every SIMD kernel, and the fallback ISA.
#include <cmath>
#include <cstring>

#include "core.h"
#include "fp16.h"
#include "tables.h"

namespace tellme {
namespace {

void tlmm_block(const uint8_t* tiles, const int32_t*, int64_t ktiles, const uint8_t* tables,
                int64_t table_stride, int64_t tokens, int32_t* acc) {
  for (int64_t t = 0; t < tokens; ++t) {
    const int16_t* table = reinterpret_cast<const int16_t*>(tables + t * table_stride);
    int32_t* sum = acc + t * ROW_BLOCK;
    for (int64_t kt = 0; kt < ktiles; ++kt) {
      const uint8_t* tile = tiles + kt * TILE_BYTES;
      for (int j = 0; j < KB_GROUPS; ++j) {
        const int16_t* tg = table + 32 * (kt * KB_GROUPS + j);
        const uint8_t* nibbles = tile + 32 * (j / 2);
        const int shift = 4 * (j & 1);
        for (int r = 0; r < ROW_BLOCK; ++r) {
          int index = ((nibbles[r] >> shift) & 15) | (((tile[128 + r] >> j) & 1) << 4);
          sum[r] += tg[index];
        }
      }
    }
  }
}

void i2_block(const uint8_t* codes, int64_t in_pad, const int8_t* acts, int64_t act_stride,
              const int32_t* act_sums, int64_t tokens, int32_t* acc) {
  const int64_t row_bytes = in_pad / 4;
  for (int64_t t = 0; t < tokens; ++t) {
    const int8_t* a = acts + t * act_stride;
    for (int r = 0; r < ROW_BLOCK; ++r) {
      const uint8_t* row = codes + r * row_bytes;
      int32_t sum = 0;
      for (int64_t b = 0; b < in_pad / I2_BLOCK; ++b)
        for (int j = 0; j < 32; ++j)
          for (int s = 0; s < 4; ++s)
            sum += ((row[32 * b + j] >> (6 - 2 * s)) & 3) * a[I2_BLOCK * b + 32 * s + j];
      acc[t * ROW_BLOCK + r] = sum - act_sums[t];
    }
  }
}

void int8_gemm(const int8_t* rows, int64_t n_rows, int64_t k, const int8_t* x, int64_t tokens, int32_t* out) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const int8_t* w = rows + r * k;
    for (int64_t t = 0; t < tokens; ++t) {
      int32_t sum = 0;
      for (int64_t i = 0; i < k; ++i) sum += static_cast<int32_t>(w[i]) * x[t * k + i];
      out[t * n_rows + r] = sum;
    }
  }
}

void int6_gemm(const uint8_t* rows, int64_t n_rows, int64_t k_pad, const int8_t* x, const int32_t* x_sums,
               int64_t tokens, int32_t* out) {
  const int64_t row_bytes = int6_row_bytes(k_pad);
  for (int64_t r = 0; r < n_rows; ++r)
    for (int64_t t = 0; t < tokens; ++t) {
      int32_t sum = 0;
      for (int64_t b = 0; b < k_pad / INT6_BLOCK; ++b) {
        const uint8_t* p = rows + r * row_bytes + b * INT6_BLOCK_BYTES;
        const int8_t* a = x + t * k_pad + b * INT6_BLOCK;
        for (int i = 0; i < INT6_BLOCK; ++i) sum += int6_code(p, i) * a[i];
      }
      out[t * n_rows + r] = sum - 32 * x_sums[t];
    }
}

inline float value(float x) { return x; }
inline float value(uint16_t h) { return half_to_float(h); }
inline float value(int8_t x) { return static_cast<float>(x); }

template <class E>
void dots(const float* q, int64_t queries, const E* rows, int64_t stride, int64_t count, int64_t n, float* out) {
  for (int64_t h = 0; h < queries; ++h)
    for (int64_t r = 0; r < count; ++r) {
      const E* b = rows + r * stride;
      float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t i = 0; i < n; ++i) s[i % 8] += q[h * n + i] * value(b[i]);
      out[h * count + r] = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    }
}

template <class E>
void axpys(const float* p, int64_t queries, const E* rows, int64_t stride, int64_t count, int64_t n, float* y) {
  for (int64_t h = 0; h < queries; ++h)
    for (int64_t r = 0; r < count; ++r)
      for (int64_t i = 0; i < n; ++i) y[h * n + i] += p[h * count + r] * value(rows[r * stride + i]);
}

void half_to_float_row(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
}

void float_to_half_row(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_half(src[i]);
}

double int8_madd_loop(int64_t iterations) {
  int32_t acc[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  int8_t a = 3, b = -5;
  for (int64_t i = 0; i < iterations; ++i) {
    for (int j = 0; j < 8; ++j) acc[j] += static_cast<int32_t>(a) * (b + j);
    asm volatile("" : "+m"(acc));  // keep the loop from being folded away
  }
  volatile int32_t sink = acc[0] + acc[7];
  (void)sink;
  return 8.0 * static_cast<double>(iterations);
}

double fp32_fma_loop(int64_t iterations) {
  float acc[8] = {1, 2, 3, 4, 5, 6, 7, 8}, a = 0.999f, b = 1e-3f;
  for (int64_t i = 0; i < iterations; ++i) {
    for (int j = 0; j < 8; ++j) acc[j] = std::fma(a, acc[j], b);
    asm volatile("" : "+m"(acc));
  }
  volatile float sink = acc[0] + acc[7];
  (void)sink;
  return 8.0 * static_cast<double>(iterations);
}

uint64_t stream_read(const uint8_t* data, int64_t bytes) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  const int64_t words = bytes / 8;
  int64_t i = 0;
  for (; i + 4 <= words; i += 4) {
    uint64_t w[4];
    std::memcpy(w, data + 8 * i, sizeof(w));
    s0 += w[0]; s1 += w[1]; s2 += w[2]; s3 += w[3];
  }
  return s0 ^ s1 ^ s2 ^ s3;
}

}  // namespace

int32_t i2_prepare_copy(const int8_t* act, int64_t in_pad, int8_t* out) {
  int32_t sum = 0;
  for (int64_t k = 0; k < in_pad; ++k) {
    out[k] = act[k];
    sum += act[k];
  }
  return sum;
}


const Backend scalar_backend = {
    "scalar", false, 64, full_tables, tlmm_block, i2_prepare_copy, i2_block, int8_gemm, int6_gemm,
    dots<float>, dots<uint16_t>, axpys<float>, axpys<uint16_t>, axpys<int8_t>, half_to_float_row,
    float_to_half_row, int8_madd_loop, fp32_fma_loop,
    stream_read,
};

}  // namespace tellme
