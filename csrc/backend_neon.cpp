// NEON kernels: ARMv8.0 Advanced SIMD, which every AArch64 CPU has (Cortex-A53 up).
//
// TLMM here is the 13-entry + sign variant, as on AVX2: a group's table is two 16-byte planes
// (low and high bytes of the 14 sums |v| = 0..13), so one `tbl` looks up 16 rows. A negative
// pattern is read as the ones' complement (a byte XOR with the `cmtst` mask) and the -1 per
// negative group is given back from `neg_count`, as T-MAC and bitnet.cpp's TL1 do with `tbl`.
//
// Without the dot-product extension, int8 products go through `smull`/`smlal` (int16) and
// `sadalp` (pairwise add into int32). Every int16 partial sum here is bounded in a comment
// by the largest inputs the kernel can get; the tests feed those inputs.
#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "core.h"
#include "arm_common.h"
#include "tables.h"

namespace tellme {
namespace {

// T tokens share every index decode and sign mask. int16 sums: |s| <= 385 per group (3 * 128, or
// its ones' complement), WIDEN_EVERY_TILES * 8 = 64 groups -> |sum| <= 24640 < 2^15.
template <int T>
void tlmm_tokens(const uint8_t* tiles, const int32_t* neg_count, int64_t ktiles,
                 const uint8_t* tables, int64_t table_stride, int32_t* acc) {
  const uint8x16_t low4 = vdupq_n_u8(0x0F);
  for (int64_t k0 = 0; k0 < ktiles; k0 += WIDEN_EVERY_TILES) {
    const int64_t k1 = std::min<int64_t>(ktiles, k0 + WIDEN_EVERY_TILES);
    int16x8_t part[T][4];  // rows 0-7, 8-15, 16-23, 24-31
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < 4; ++i) part[t][i] = vdupq_n_s16(0);
    for (int64_t kt = k0; kt < k1; ++kt) {
      const uint8_t* tile = tiles + kt * TILE_BYTES;
      const uint8x16_t signs[2] = {vld1q_u8(tile + 128), vld1q_u8(tile + 144)};
      for (int c = 0; c < 4; ++c) {
        const uint8x16_t nibbles[2] = {vld1q_u8(tile + 32 * c), vld1q_u8(tile + 32 * c + 16)};
        for (int h = 0; h < 2; ++h) {
          const int j = 2 * c + h;
          const uint8x16_t bit = vdupq_n_u8(static_cast<uint8_t>(1u << j));
          uint8x16_t index[2], neg[2];
          for (int x = 0; x < 2; ++x) {  // rows 16x .. 16x+15
            index[x] = h ? vshrq_n_u8(nibbles[x], 4) : vandq_u8(nibbles[x], low4);
            neg[x] = vtstq_u8(signs[x], bit);
          }
          const int64_t g = kt * KB_GROUPS + j;
          for (int t = 0; t < T; ++t) {
            const uint8_t* tg = tables + t * table_stride + 32 * g;
            const uint8x16_t tlo = vld1q_u8(tg), thi = vld1q_u8(tg + 16);
            for (int x = 0; x < 2; ++x) {
              const uint8x16_t lo = veorq_u8(vqtbl1q_u8(tlo, index[x]), neg[x]);
              const uint8x16_t hi = veorq_u8(vqtbl1q_u8(thi, index[x]), neg[x]);
              part[t][2 * x] = vaddq_s16(part[t][2 * x], vreinterpretq_s16_u8(vzip1q_u8(lo, hi)));
              part[t][2 * x + 1] = vaddq_s16(part[t][2 * x + 1], vreinterpretq_s16_u8(vzip2q_u8(lo, hi)));
            }
          }
        }
      }
    }
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < 4; ++i) {
        int32_t* dst = acc + t * ROW_BLOCK + 8 * i;
        vst1q_s32(dst, vaddw_s16(vld1q_s32(dst), vget_low_s16(part[t][i])));
        vst1q_s32(dst + 4, vaddw_high_s16(vld1q_s32(dst + 4), part[t][i]));
      }
  }
  if (neg_count)
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < ROW_BLOCK; i += 4)
        vst1q_s32(acc + t * ROW_BLOCK + i, vaddq_s32(vld1q_s32(acc + t * ROW_BLOCK + i), vld1q_s32(neg_count + i)));
}

// int16 sums: 4 accumulators, each lane taking 4 products |code * a| <= 2 * 128 per block, so
// 15 blocks stay below 15 * 4 * 256 = 15360 < 2^15.
constexpr int64_t I2_WIDEN_BLOCKS = 15;

template <int T>
void i2_row(const uint8_t* row, int64_t blocks, const int8_t* acts, int64_t act_stride,
            const int32_t* act_sums, int32_t* out /* stride ROW_BLOCK */) {
  int32x4_t wide[T];
  for (int t = 0; t < T; ++t) wide[t] = vdupq_n_s32(0);
  for (int64_t b0 = 0; b0 < blocks; b0 += I2_WIDEN_BLOCKS) {
    const int64_t b1 = std::min(blocks, b0 + I2_WIDEN_BLOCKS);
    int16x8_t part[T][4];
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < 4; ++i) part[t][i] = vdupq_n_s16(0);
    for (int64_t b = b0; b < b1; ++b) {
      int8x16_t code[2][4];  // [x][s]: k = 32s + 16x + (0..15)
      for (int x = 0; x < 2; ++x) unpack_i2(vld1q_u8(row + 32 * b + 16 * x), code[x]);
      for (int t = 0; t < T; ++t) {
        const int8_t* a = acts + t * act_stride + I2_BLOCK * b;
        for (int s = 0; s < 4; ++s)
          for (int x = 0; x < 2; ++x) {
            const int8x16_t av = vld1q_s8(a + 32 * s + 16 * x);
            part[t][2 * x] = vmlal_s8(part[t][2 * x], vget_low_s8(code[x][s]), vget_low_s8(av));
            part[t][2 * x + 1] = vmlal_high_s8(part[t][2 * x + 1], code[x][s], av);
          }
      }
    }
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < 4; ++i) wide[t] = vpadalq_s16(wide[t], part[t][i]);
  }
  for (int t = 0; t < T; ++t) out[t * ROW_BLOCK] = vaddvq_s32(wide[t]) - act_sums[t];
}

void i2_block(const uint8_t* codes, int64_t in_pad, const int8_t* acts, int64_t act_stride,
              const int32_t* act_sums, int64_t tokens, int32_t* acc) {
  const int64_t row_bytes = in_pad / 4, blocks = in_pad / I2_BLOCK;
  for (int r = 0; r < ROW_BLOCK; ++r) {
    const uint8_t* row = codes + r * row_bytes;
    int64_t t = 0;
    for (; t + 2 <= tokens; t += 2)
      i2_row<2>(row, blocks, acts + t * act_stride, act_stride, act_sums + t, acc + t * ROW_BLOCK + r);
    for (; t < tokens; ++t)
      i2_row<1>(row, blocks, acts + t * act_stride, act_stride, act_sums + t, acc + t * ROW_BLOCK + r);
  }
}

// One head row against T tokens: `smull` products are exact in int16 (|w * x| <= 128 * 128 =
// 2^14) and `sadalp` adds pairs of them in int32, so nothing can overflow (a plain `smlal` into
// int16 would: the NEON overflow bitnet.cpp's users met).
template <int T>
void int8_row(const int8_t* w, int64_t k, const int8_t* x, int32_t* out /* stride n_rows */,
              int64_t n_rows) {
  int32x4_t acc[T][2];
  for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = vdupq_n_s32(0);
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    const int8x16_t wv = vld1q_s8(w + i);
    for (int t = 0; t < T; ++t) {
      const int8x16_t xv = vld1q_s8(x + t * k + i);
      acc[t][0] = vpadalq_s16(acc[t][0], vmull_s8(vget_low_s8(wv), vget_low_s8(xv)));
      acc[t][1] = vpadalq_s16(acc[t][1], vmull_high_s8(wv, xv));
    }
  }
  for (int t = 0; t < T; ++t) {
    int32_t sum = vaddvq_s32(vaddq_s32(acc[t][0], acc[t][1]));
    for (int64_t j = i; j < k; ++j) sum += static_cast<int32_t>(w[j]) * x[t * k + j];
    out[t * n_rows] = sum;
  }
}

void int8_gemm(const int8_t* rows, int64_t n_rows, int64_t k, const int8_t* x, int64_t tokens, int32_t* out) {
  for (int64_t r = 0; r < n_rows; ++r) {
    int64_t t = 0;
    for (; t + 4 <= tokens; t += 4) int8_row<4>(rows + r * k, k, x + t * k, out + t * n_rows + r, n_rows);
    for (; t < tokens; ++t) int8_row<1>(rows + r * k, k, x + t * k, out + t * n_rows + r, n_rows);
  }
}

// smull + sadalp: each product (at most 63 * 128) is exact in int16, pairs are added in int32.
void int6_gemm(const uint8_t* rows, int64_t n_rows, int64_t k_pad, const int8_t* x, const int32_t* x_sums,
               int64_t tokens, int32_t* out) {
  int6_gemm_with(rows, n_rows, k_pad, x, x_sums, tokens, out, [](int32x4_t acc, int8x16_t u, int8x16_t a) {
    return vpadalq_s16(vpadalq_s16(acc, vmull_s8(vget_low_s8(u), vget_low_s8(a))), vmull_high_s8(u, a));
  });
}

inline float32x4_t load4(const float* p) { return vld1q_f32(p); }
inline float32x4_t load4(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
inline float32x4_t load4(const int8_t* p) {
  int32_t four;  // 4 bytes: no read past the row
  std::memcpy(&four, p, 4);
  return vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(four))))));
}
inline float load1(const float* p) { return *p; }
inline float load1(const int8_t* p) { return static_cast<float>(*p); }
inline float load1(const uint16_t* p) { return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vld1_dup_u16(p))), 0); }

// The 8 lanes of the scalar dot as two vectors (lanes 0-3, 4-7); mul and add separate, no FMA.
template <int R, class E>
void dots_r(const float* q, const E* rows, int64_t stride, int64_t n, float* out) {
  float32x4_t acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const float32x4_t a0 = vld1q_f32(q + i), a1 = vld1q_f32(q + i + 4);
    for (int r = 0; r < R; ++r) {
      acc[r][0] = vaddq_f32(acc[r][0], vmulq_f32(a0, load4(rows + r * stride + i)));
      acc[r][1] = vaddq_f32(acc[r][1], vmulq_f32(a1, load4(rows + r * stride + i + 4)));
    }
  }
  for (int r = 0; r < R; ++r) {
    float s[8];
    vst1q_f32(s, acc[r][0]);
    vst1q_f32(s + 4, acc[r][1]);
    for (int64_t k = i, j = 0; k < n; ++k, ++j) s[j] += q[k] * load1(rows + r * stride + k);
    out[r] = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  }
}

// B vectors of y stay in registers while every row is added, in row order.
template <int B, class E>
void axpys_b(const float* p, const E* rows, int64_t stride, int64_t count, float* y) {
  float32x4_t acc[B];
  for (int b = 0; b < B; ++b) acc[b] = vld1q_f32(y + 4 * b);
  for (int64_t r = 0; r < count; ++r) {
    const float32x4_t pr = vdupq_n_f32(p[r]);
    for (int b = 0; b < B; ++b) acc[b] = vaddq_f32(acc[b], vmulq_f32(pr, load4(rows + r * stride + 4 * b)));
  }
  for (int b = 0; b < B; ++b) vst1q_f32(y + 4 * b, acc[b]);
}

template <class E>
void dots_any(const float* q, const E* rows, int64_t stride, int64_t count, int64_t n, float* out) {
  int64_t r = 0;
  for (; r + 4 <= count; r += 4) dots_r<4>(q, rows + r * stride, stride, n, out + r);
  for (; r < count; ++r) dots_r<1>(q, rows + r * stride, stride, n, out + r);
}

template <class E>
void axpys_any(const float* p, const E* rows, int64_t stride, int64_t count, int64_t n, float* y) {
  int64_t d = 0;
  // Then 4 vectors, not 4 passes of 1 (one chain of dependent adds each): as on AVX2.
  for (; d + 64 <= n; d += 64) axpys_b<16>(p, rows + d, stride, count, y + d);
  for (; d + 16 <= n; d += 16) axpys_b<4>(p, rows + d, stride, count, y + d);
  for (; d + 4 <= n; d += 4) axpys_b<1>(p, rows + d, stride, count, y + d);
  for (; d < n; ++d)
    for (int64_t r = 0; r < count; ++r) y[d] += p[r] * load1(rows + r * stride + d);
}

// smull + sadalp, as the head kernel does: 16 multiply-adds per pair of steps.
double int8_madd_loop(int64_t iterations) {
  return madd_loop(iterations, 16, [](int32x4_t acc, int8x16_t a, int8x16_t b) {
    return vpadalq_s16(vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b))), vmull_high_s8(a, b));
  });
}

}  // namespace

void tlmm_block_neon(const uint8_t* tiles, const int32_t* neg_count, int64_t ktiles,
                     const uint8_t* tables, int64_t table_stride, int64_t tokens, int32_t* acc) {
  int64_t t = 0;
  for (; t + 2 <= tokens; t += 2)
    tlmm_tokens<2>(tiles, neg_count, ktiles, tables + t * table_stride, table_stride, acc + t * ROW_BLOCK);
  if (t < tokens)
    tlmm_tokens<1>(tiles, neg_count, ktiles, tables + t * table_stride, table_stride, acc + t * ROW_BLOCK);
}

// Query by query: the rows of a GQA group's heads are read again from L1 (not yet one pass for all).
void dots_neon(const float* q, int64_t queries, const float* rows, int64_t stride, int64_t count, int64_t n, float* out) {
  for (int64_t h = 0; h < queries; ++h) dots_any(q + h * n, rows, stride, count, n, out + h * count);
}
void dots_f16_neon(const float* q, int64_t queries, const uint16_t* rows, int64_t stride, int64_t count, int64_t n,
                   float* out) {
  for (int64_t h = 0; h < queries; ++h) dots_any(q + h * n, rows, stride, count, n, out + h * count);
}
void axpys_neon(const float* p, int64_t queries, const float* rows, int64_t stride, int64_t count, int64_t n, float* y) {
  for (int64_t h = 0; h < queries; ++h) axpys_any(p + h * count, rows, stride, count, n, y + h * n);
}
void axpys_f16_neon(const float* p, int64_t queries, const uint16_t* rows, int64_t stride, int64_t count, int64_t n,
                    float* y) {
  for (int64_t h = 0; h < queries; ++h) axpys_any(p + h * count, rows, stride, count, n, y + h * n);
}
void axpys_i8_neon(const float* p, int64_t queries, const int8_t* rows, int64_t stride, int64_t count, int64_t n,
                   float* y) {
  for (int64_t h = 0; h < queries; ++h) axpys_any(p + h * count, rows, stride, count, n, y + h * n);
}

void half_to_float_neon(const uint16_t* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, load4(src + i));
  for (; i < n; ++i) dst[i] = load1(src + i);
}

// fcvtn rounds to nearest even (FPCR's default mode; no flush to zero).
void float_to_half_neon(const float* src, int64_t n, uint16_t* dst) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
  for (; i < n; ++i) dst[i] = vget_lane_u16(vreinterpret_u16_f16(vcvt_f16_f32(vdupq_n_f32(src[i]))), 0);
}

double fp32_fma_loop_neon(int64_t iterations) {
  constexpr int CHAINS = 8;
  float32x4_t a = vdupq_n_f32(0.999f), b = vdupq_n_f32(1e-3f), acc[CHAINS];
  for (int j = 0; j < CHAINS; ++j) acc[j] = vdupq_n_f32(static_cast<float>(j));
  for (int64_t i = 0; i < iterations; ++i) {
    asm volatile("" : "+w"(a));
    for (int j = 0; j < CHAINS; ++j) acc[j] = vfmaq_f32(b, a, acc[j]);
  }
  float32x4_t s = acc[0];
  for (int j = 1; j < CHAINS; ++j) s = vaddq_f32(s, acc[j]);
  volatile float sink = vaddvq_f32(s);
  (void)sink;
  return CHAINS * 4.0 * static_cast<double>(iterations);
}

uint64_t stream_read_neon(const uint8_t* data, int64_t bytes) {
  uint64x2_t s[4] = {vdupq_n_u64(0), vdupq_n_u64(0), vdupq_n_u64(0), vdupq_n_u64(0)};
  for (int64_t i = 0; i + 64 <= bytes; i += 64)
    for (int j = 0; j < 4; ++j) s[j] = vaddq_u64(s[j], vld1q_u64(reinterpret_cast<const uint64_t*>(data + i + 16 * j)));
  const uint64x2_t t = veorq_u64(veorq_u64(s[0], s[1]), veorq_u64(s[2], s[3]));
  return vgetq_lane_u64(t, 0) ^ vgetq_lane_u64(t, 1);
}

const Backend neon_backend = {
    "neon", false, 32, plane_tables, tlmm_block_neon, i2_prepare_copy, i2_block, int8_gemm, int6_gemm, dots_neon,
    dots_f16_neon, axpys_neon, axpys_f16_neon, axpys_i8_neon, half_to_float_neon, float_to_half_neon,
    int8_madd_loop, fp32_fma_loop_neon, stream_read_neon,
};

}  // namespace tellme
