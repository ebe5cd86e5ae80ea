// AVX-512 kernels (F + BW + VL + VBMI + VNNI). Compiled with those -m flags and run only after
// cpuid says so; or, with TELLME_EMULATE_AVX512, compiled against SIMDe's portable versions of
// the same intrinsics so the kernels can be tested on machines without AVX-512.
//
// TLMM here is the full-table variant: a group's table is 32 int16 entries (the 27 signed
// pattern sums, addressed by |v| | sign << 4), one zmm register, and `vpermw` looks up 32 rows
// at once with no sign logic after the read.
#ifdef TELLME_EMULATE_AVX512
#include "avx512_emulation.h"
#else
#include <immintrin.h>
#define TELLME_KEEP(x) asm volatile("" : "+v"(x))
#endif

#include <algorithm>

#include "core.h"
#include "tables.h"

namespace tellme {
namespace {

template <int T>
void tlmm_tokens(const uint8_t* tiles, int64_t ktiles, const uint8_t* tables,
                 int64_t table_stride, int32_t* acc) {
  const __m512i low4 = _mm512_set1_epi16(0x0F);
  const __m512i sign_bit = _mm512_set1_epi16(16);
  __m512i wide[T][2];  // int32 sums of rows 0-15 and 16-31
  for (int t = 0; t < T; ++t) wide[t][0] = wide[t][1] = _mm512_setzero_si512();

  for (int64_t k0 = 0; k0 < ktiles; k0 += WIDEN_EVERY_TILES) {
    const int64_t k1 = std::min<int64_t>(ktiles, k0 + WIDEN_EVERY_TILES);
    __m512i part[T];  // int16 sums of rows 0-31
    for (int t = 0; t < T; ++t) part[t] = _mm512_setzero_si512();
    for (int64_t kt = k0; kt < k1; ++kt) {
      const uint8_t* tile = tiles + kt * TILE_BYTES;
      const __m256i signs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + 128));
      for (int c = 0; c < 4; ++c) {
        const __m512i nibbles = _mm512_cvtepu8_epi16(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + 32 * c)));
        const __m512i magnitude[2] = {_mm512_and_si512(nibbles, low4),
                                      _mm512_srli_epi16(nibbles, 4)};
        for (int h = 0; h < 2; ++h) {
          const int j = 2 * c + h;
          const __mmask32 negative =
              _mm256_test_epi8_mask(signs, _mm256_set1_epi8(static_cast<char>(1 << j)));
          const __m512i index = _mm512_mask_add_epi16(magnitude[h], negative, magnitude[h], sign_bit);
          const int64_t g = kt * KB_GROUPS + j;
          for (int t = 0; t < T; ++t) {
            const __m512i table =
                _mm512_loadu_si512(reinterpret_cast<const void*>(tables + t * table_stride + 64 * g));
            part[t] = _mm512_add_epi16(part[t], _mm512_permutexvar_epi16(index, table));
          }
        }
      }
    }
    for (int t = 0; t < T; ++t) {
      wide[t][0] = _mm512_add_epi32(wide[t][0], _mm512_cvtepi16_epi32(_mm512_castsi512_si256(part[t])));
      wide[t][1] = _mm512_add_epi32(wide[t][1], _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(part[t], 1)));
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < 2; ++i) {
      void* dst = acc + t * ROW_BLOCK + 16 * i;
      _mm512_storeu_si512(dst, _mm512_add_epi32(_mm512_loadu_si512(dst), wide[t][i]));
    }
  }
}

void tlmm_block(const uint8_t* tiles, const int32_t*, int64_t ktiles, const uint8_t* tables,
                int64_t table_stride, int64_t tokens, int32_t* acc) {
  int64_t t = 0;
  for (; t + 2 <= tokens; t += 2)
    tlmm_tokens<2>(tiles, ktiles, tables + t * table_stride, table_stride, acc + t * ROW_BLOCK);
  if (t < tokens) tlmm_tokens<1>(tiles, ktiles, tables + t * table_stride, table_stride, acc + t * ROW_BLOCK);
}

// A zmm of codes covers two 128-weight blocks (bytes 0-31 from the first, 32-63 from the
// second), so activations are interleaved to match: per 256 weights and per 2-bit plane s,
// 32 activations of the first block then 32 of the second.
int32_t i2_prepare(const int8_t* act, int64_t in_pad, int8_t* out) {
  int32_t sum = 0;
  for (int64_t q = 0; q < in_pad; q += 2 * I2_BLOCK)
    for (int s = 0; s < 4; ++s)
      for (int i = 0; i < 64; ++i) {
        const int8_t a = act[q + (i < 32 ? 0 : I2_BLOCK) + 32 * s + (i & 31)];
        out[q + 64 * s + i] = a;
        sum += a;
      }
  return sum;
}

// The horizontal sums of four int32 vectors, in order.
inline __m128i sum4(__m512i a0, __m512i a1, __m512i a2, __m512i a3) {
  auto fold = [](__m512i a) {
    return _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1));
  };
  const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(fold(a0), fold(a1)),
                                      _mm256_hadd_epi32(fold(a2), fold(a3)));
  return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

// R rows times T tokens: each code vector is unpacked once for T tokens and each activation
// vector loaded once for R rows; the R*T sums stay in registers for the whole of K. 4 x 4 is
// the measured best on AVX-512 (4 x 8 spills: 32 accumulators are every zmm register).
template <int R, int T>
void i2_tile(const uint8_t* rows, int64_t row_bytes, int64_t in_pad, const int8_t* acts,
             int64_t act_stride, const int32_t* act_sums, int32_t* out /* stride ROW_BLOCK */) {
  const __m512i mask = _mm512_set1_epi8(3);
  __m512i acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_si512();
  for (int64_t q = 0; q < in_pad; q += 2 * I2_BLOCK) {
    __m512i v[R];
    for (int r = 0; r < R; ++r)
      v[r] = _mm512_loadu_si512(reinterpret_cast<const void*>(rows + r * row_bytes + q / 4));
    for (int s = 0; s < 4; ++s) {
      __m512i code[R];
      for (int r = 0; r < R; ++r) code[r] = _mm512_and_si512(_mm512_srli_epi16(v[r], 2 * s), mask);
      for (int t = 0; t < T; ++t) {
        const __m512i a = _mm512_loadu_si512(reinterpret_cast<const void*>(acts + t * act_stride + q + 64 * s));
        for (int r = 0; r < R; ++r) acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], code[r], a);
      }
    }
  }
  for (int r0 = 0; r0 < R; r0 += 4)
    for (int t = 0; t < T; ++t) {
      const __m128i sums = _mm_sub_epi32(sum4(acc[r0][t], acc[r0 + 1][t], acc[r0 + 2][t], acc[r0 + 3][t]),
                                         _mm_set1_epi32(act_sums[t]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + t * ROW_BLOCK + r0), sums);
    }
}

template <int R, int T>
void i2_tiles(const uint8_t* codes, int64_t row_bytes, int64_t in_pad, const int8_t* acts,
              int64_t act_stride, const int32_t* act_sums, int32_t* out) {
  for (int r = 0; r < ROW_BLOCK; r += R)
    i2_tile<R, T>(codes + r * row_bytes, row_bytes, in_pad, acts, act_stride, act_sums, out + r);
}

void i2_block(const uint8_t* codes, int64_t in_pad, const int8_t* acts, int64_t act_stride,
              const int32_t* act_sums, int64_t tokens, int32_t* acc) {
  const int64_t row_bytes = in_pad / 4;
  int64_t t = 0;
  for (; t + 4 <= tokens; t += 4)  // four tokens' activations stay in L1 across the rows
    i2_tiles<4, 4>(codes, row_bytes, in_pad, acts + t * act_stride, act_stride, act_sums + t, acc + t * ROW_BLOCK);
  const int8_t* a = acts + t * act_stride;
  int32_t* out = acc + t * ROW_BLOCK;
  switch (tokens - t) {
    case 3: i2_tiles<4, 3>(codes, row_bytes, in_pad, a, act_stride, act_sums + t, out); break;
    case 2: i2_tiles<4, 2>(codes, row_bytes, in_pad, a, act_stride, act_sums + t, out); break;
    case 1: i2_tiles<4, 1>(codes, row_bytes, in_pad, a, act_stride, act_sums + t, out); break;
    default: break;
  }
}

double int8_madd_loop(int64_t iterations) {
  __m512i a = _mm512_set1_epi8(3);
  __m512i b[8], acc[8];
  for (int j = 0; j < 8; ++j) {
    b[j] = _mm512_set1_epi8(static_cast<char>(j - 4));
    acc[j] = _mm512_setzero_si512();
  }
  for (int64_t i = 0; i < iterations; ++i) {
    TELLME_KEEP(a);  // the products must be recomputed every iteration
    for (int j = 0; j < 8; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b[j]);
  }
  __m512i s = acc[0];
  for (int j = 1; j < 8; ++j) s = _mm512_add_epi32(s, acc[j]);
  volatile int32_t sink = _mm512_reduce_add_epi32(s);
  (void)sink;
  return 8.0 * 64.0 * static_cast<double>(iterations);
}

uint64_t stream_read(const uint8_t* data, int64_t bytes) {
  __m512i s[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                  _mm512_setzero_si512()};
  for (int64_t i = 0; i + 256 <= bytes; i += 256)
    for (int j = 0; j < 4; ++j)
      s[j] = _mm512_add_epi64(s[j], _mm512_loadu_si512(reinterpret_cast<const void*>(data + i + 64 * j)));
  const __m512i t = _mm512_xor_si512(_mm512_xor_si512(s[0], s[1]), _mm512_xor_si512(s[2], s[3]));
  return static_cast<uint64_t>(_mm512_reduce_add_epi64(t));
}

}  // namespace

const Backend avx512_backend = {
#ifdef TELLME_EMULATE_AVX512
    "avx512", true,
#else
    "avx512", false,
#endif
    64, full_tables, tlmm_block, i2_prepare, i2_block, int8_gemv_avx2, dot_avx2, axpy_avx2,
    half_to_float_f16c, dot_f16_avx2, axpy_f16_avx2, int8_madd_loop, stream_read,
};

}  // namespace tellme
