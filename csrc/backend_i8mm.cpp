// Int8 matrix-multiply kernels: ARMv8.6 `smmla` (FEAT_I8MM; Neoverse V1/N2, Cortex-A510/A710 up,
// Apple M2 up), with the dot product. Compiled with +dotprod+i8mm and run only when the OS
// reports both (cpu.cpp).
//
// `smmla` multiplies a 2x8 int8 matrix by the transpose of another into a 2x2 int32 tile: 32
// multiply-adds where `sdot` does 16. Its operands hold two rows of 8 bytes each, so two weight
// rows are zipped by 64-bit halves as they are read, and two tokens' activations are zipped once
// per call into a scratch copy. Only GEMMs with two tokens or more use it (prefill, batched
// decode); one token has no second operand row and keeps the `sdot` kernels, as does an odd last
// token. Everything else is the dot-product backend's.
#include <arm_neon.h>

#include <vector>

#include "core.h"
#include "arm_common.h"
#include "tables.h"

namespace tellme {
namespace {

// Token pairs interleaved by 8 bytes: pair p, chunk c (k = 8c .. 8c+7) is 16 bytes, token 2p's
// 8 then token 2p+1's. `k` must be a multiple of 16.
const int8_t* interleave_pairs(const int8_t* x, int64_t stride, int64_t pairs, int64_t k) {
  thread_local std::vector<int8_t> scratch;
  scratch.resize(pairs * 2 * k);
  for (int64_t p = 0; p < pairs; ++p) {
    const int8_t* a = x + 2 * p * stride;
    const int8_t* b = a + stride;
    int8_t* dst = scratch.data() + p * 2 * k;
    for (int64_t i = 0; i < k; i += 16) {
      const int64x2_t va = vreinterpretq_s64_s8(vld1q_s8(a + i)), vb = vreinterpretq_s64_s8(vld1q_s8(b + i));
      vst1q_s8(dst + 2 * i, vreinterpretq_s8_s64(vzip1q_s64(va, vb)));
      vst1q_s8(dst + 2 * i + 16, vreinterpretq_s8_s64(vzip2q_s64(va, vb)));
    }
  }
  return scratch.data();
}

// Rows r, r+1 of the 2-bit codes against P token pairs. acc[p] lanes: (r, 2p), (r, 2p+1),
// (r+1, 2p), (r+1, 2p+1).
template <int P>
void i2_rows(const uint8_t* row0, const uint8_t* row1, int64_t blocks, const int8_t* pairs,
             int64_t pair_bytes, int32x4_t out[P]) {
  int32x4_t acc[P][2];  // two chains per pair
  for (int p = 0; p < P; ++p) acc[p][0] = acc[p][1] = vdupq_n_s32(0);
  for (int64_t b = 0; b < blocks; ++b) {
    for (int x = 0; x < 2; ++x) {
      int8x16_t c0[4], c1[4];  // k = 32s + 16x + (0..15) of rows r, r+1
      unpack_i2(vld1q_u8(row0 + 32 * b + 16 * x), c0);
      unpack_i2(vld1q_u8(row1 + 32 * b + 16 * x), c1);
      for (int s = 0; s < 4; ++s) {
        const int64x2_t r0 = vreinterpretq_s64_s8(c0[s]), r1 = vreinterpretq_s64_s8(c1[s]);
        const int8x16_t lo = vreinterpretq_s8_s64(vzip1q_s64(r0, r1));  // k + 0..7 of both rows
        const int8x16_t hi = vreinterpretq_s8_s64(vzip2q_s64(r0, r1));  // k + 8..15
        const int64_t k = I2_BLOCK * b + 32 * s + 16 * x;
        for (int p = 0; p < P; ++p) {
          const int8_t* a = pairs + p * pair_bytes + 2 * k;
          acc[p][0] = vmmlaq_s32(acc[p][0], lo, vld1q_s8(a));
          acc[p][1] = vmmlaq_s32(acc[p][1], hi, vld1q_s8(a + 16));
        }
      }
    }
  }
  for (int p = 0; p < P; ++p) out[p] = vaddq_s32(acc[p][0], acc[p][1]);
}

void i2_block(const uint8_t* codes, int64_t in_pad, const int8_t* acts, int64_t act_stride,
              const int32_t* act_sums, int64_t tokens, int32_t* acc) {
  const int64_t pairs = tokens / 2;
  if (pairs > 0) {
    const int64_t row_bytes = in_pad / 4, blocks = in_pad / I2_BLOCK, pair_bytes = 2 * in_pad;
    const int8_t* inter = interleave_pairs(acts, act_stride, pairs, in_pad);
    for (int r = 0; r < ROW_BLOCK; r += 2) {
      const uint8_t* row0 = codes + r * row_bytes;
      for (int64_t p0 = 0; p0 < pairs;) {
        int32x4_t tile[2];
        const int n = pairs - p0 >= 2 ? 2 : 1;
        if (n == 2) i2_rows<2>(row0, row0 + row_bytes, blocks, inter + p0 * pair_bytes, pair_bytes, tile);
        else i2_rows<1>(row0, row0 + row_bytes, blocks, inter + p0 * pair_bytes, pair_bytes, tile);
        for (int p = 0; p < n; ++p) {
          const int64_t t = 2 * (p0 + p);
          int32_t v[4];
          vst1q_s32(v, tile[p]);
          acc[t * ROW_BLOCK + r] = v[0] - act_sums[t];
          acc[(t + 1) * ROW_BLOCK + r] = v[1] - act_sums[t + 1];
          acc[t * ROW_BLOCK + r + 1] = v[2] - act_sums[t];
          acc[(t + 1) * ROW_BLOCK + r + 1] = v[3] - act_sums[t + 1];
        }
        p0 += n;
      }
    }
  }
  if (tokens % 2) {
    const int64_t t = tokens - 1;
    i2_block_dotprod(codes, in_pad, acts + t * act_stride, act_stride, act_sums + t, 1, acc + t * ROW_BLOCK);
  }
}

// Head rows r, r+1 (the same row twice for an odd last one) against P token pairs over k16.
template <int P>
void int8_rows(const int8_t* w0, const int8_t* w1, int64_t k16, const int8_t* pairs, int64_t pair_bytes,
               int32x4_t out[P]) {
  int32x4_t acc[P][2];
  for (int p = 0; p < P; ++p) acc[p][0] = acc[p][1] = vdupq_n_s32(0);
  for (int64_t i = 0; i < k16; i += 16) {
    const int64x2_t r0 = vreinterpretq_s64_s8(vld1q_s8(w0 + i)), r1 = vreinterpretq_s64_s8(vld1q_s8(w1 + i));
    const int8x16_t lo = vreinterpretq_s8_s64(vzip1q_s64(r0, r1)), hi = vreinterpretq_s8_s64(vzip2q_s64(r0, r1));
    for (int p = 0; p < P; ++p) {
      const int8_t* a = pairs + p * pair_bytes + 2 * i;
      acc[p][0] = vmmlaq_s32(acc[p][0], lo, vld1q_s8(a));
      acc[p][1] = vmmlaq_s32(acc[p][1], hi, vld1q_s8(a + 16));
    }
  }
  for (int p = 0; p < P; ++p) out[p] = vaddq_s32(acc[p][0], acc[p][1]);
}

void int8_gemm(const int8_t* rows, int64_t n_rows, int64_t k, const int8_t* x, int64_t tokens, int32_t* out) {
  const int64_t pairs = tokens / 2, k16 = k / 16 * 16, pair_bytes = 2 * k16;
  if (pairs > 0) {
    // the interleaved copy covers k16; the tail k16..k is added from x itself
    const int8_t* inter = interleave_pairs(x, k, pairs, k16);
    for (int64_t r = 0; r < n_rows; r += 2) {
      const int8_t* w0 = rows + r * k;
      const int8_t* w1 = r + 1 < n_rows ? w0 + k : w0;
      for (int64_t p0 = 0; p0 < pairs;) {
        int32x4_t tile[2];
        const int n = pairs - p0 >= 2 ? 2 : 1;
        if (n == 2) int8_rows<2>(w0, w1, k16, inter + p0 * pair_bytes, pair_bytes, tile);
        else int8_rows<1>(w0, w1, k16, inter + p0 * pair_bytes, pair_bytes, tile);
        for (int p = 0; p < n; ++p) {
          int32_t v[4];
          vst1q_s32(v, tile[p]);
          for (int i = 0; i < 4; ++i) {
            const int64_t rr = r + i / 2, t = 2 * (p0 + p) + i % 2;
            if (rr >= n_rows) continue;
            int32_t sum = v[i];
            for (int64_t j = k16; j < k; ++j) sum += static_cast<int32_t>(rows[rr * k + j]) * x[t * k + j];
            out[t * n_rows + rr] = sum;
          }
        }
        p0 += n;
      }
    }
  }
  if (tokens % 2) {
    const int64_t t = tokens - 1;
    int8_gemm_dotprod(rows, n_rows, k, x + t * k, 1, out + t * n_rows);
  }
}

double int8_madd_loop(int64_t iterations) {
  return madd_loop(iterations, 32, [](int32x4_t acc, int8x16_t a, int8x16_t b) { return vmmlaq_s32(acc, a, b); });
}

}  // namespace

const Backend i8mm_backend = {
    "i8mm", false, 32, plane_tables, tlmm_block_neon, i2_prepare_copy, i2_block, int8_gemm,
    int6_gemm_dotprod, dots_neon, dots_f16_neon, axpys_neon, axpys_f16_neon, axpys_i8_neon, half_to_float_neon,
    float_to_half_neon, int8_madd_loop, fp32_fma_loop_neon,
    stream_read_neon,
};

}  // namespace tellme
