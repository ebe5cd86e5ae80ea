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
#include <vector>

#include "core.h"
#include "tables.h"

namespace tellme {
namespace {

// acc += a (unsigned bytes) . b (signed bytes), in place. GCC 12 copies the accumulator of the
// intrinsic to a fresh register and back (two moves per multiply-add) when many are live.
inline void dpbusd(__m512i& acc, __m512i a, __m512i b) {
#ifdef TELLME_EMULATE_AVX512
  acc = _mm512_dpbusd_epi32(acc, a, b);
#else
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
#endif
}

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
// second), so activations are interleaved to match: per 256 weights and per 2-bit plane s (bits
// 2s, the weights k = 32(3 - s) + j of each block), 32 activations of the first block then 32 of
// the second.
int32_t i2_prepare(const int8_t* act, int64_t in_pad, int8_t* out) {
  int32_t sum = 0;
  for (int64_t q = 0; q < in_pad; q += 2 * I2_BLOCK)
    for (int s = 0; s < 4; ++s)
      for (int i = 0; i < 64; ++i) {
        const int8_t a = act[q + (i < 32 ? 0 : I2_BLOCK) + 32 * (3 - s) + (i & 31)];  // bits 2s: k = 32(3-s) + j
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
// the measured best on AVX-512 (4 x 8 spills: 32 accumulators are every zmm register). GCC 12
// keeps the accumulators in registers only with every loop unrolled by pragma and vpdpbusd in
// place (dpbusd): otherwise it spills some to the stack, and small changes elsewhere in the loop
// (the prefetch) cost a fifth of the speed.
template <int R, int T, bool PREFETCH>
void i2_tile(const uint8_t* rows, int64_t row_bytes, int64_t in_pad, const int8_t* acts,
             int64_t act_stride, const int32_t* act_sums, int32_t* out /* stride ROW_BLOCK */) {
  const __m512i mask = _mm512_set1_epi8(3);
  __m512i acc[R][T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_si512();
  for (int64_t q = 0; q < in_pad; q += 2 * I2_BLOCK) {
    if (PREFETCH) {
      // The rows 16 ahead into L2, as i2_rows4, by the first tokens' pass (the others find the
      // block in cache): from DRAM, the rows' short streams otherwise halved the speed of an
      // 8-token GEMM (2B-4T shapes, 1 thread: 112-117 GMAC/s cold, 231 hot; prefetched 178-191).
      const uintptr_t ahead = reinterpret_cast<uintptr_t>(rows) + 16 * row_bytes + q;
      for (int i = 0; i < 4; ++i) _mm_prefetch(reinterpret_cast<const char*>(ahead + 64 * i), _MM_HINT_T1);
    }
    __m512i v[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
      v[r] = _mm512_loadu_si512(reinterpret_cast<const void*>(rows + r * row_bytes + q / 4));
#pragma GCC unroll 4
    for (int s = 0; s < 4; ++s) {
      __m512i code[R];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) code[r] = _mm512_and_si512(_mm512_srli_epi16(v[r], 2 * s), mask);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const __m512i a = _mm512_loadu_si512(reinterpret_cast<const void*>(acts + t * act_stride + q + 64 * s));
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) dpbusd(acc[r][t], code[r], a);
      }
    }
  }
#pragma GCC unroll 4
  for (int r0 = 0; r0 < R; r0 += 4)
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const __m128i sums = _mm_sub_epi32(sum4(acc[r0][t], acc[r0 + 1][t], acc[r0 + 2][t], acc[r0 + 3][t]),
                                         _mm_set1_epi32(act_sums[t]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + t * ROW_BLOCK + r0), sums);
    }
}

// One token (a GEMV), four rows per pass: each activation vector serves the four rows, and each
// row keeps two accumulators (planes 0, 2 and 1, 3), so eight vpdpbusd chains are in flight. One
// row with one accumulator, the kernel before, was a single chain of dependent vpdpbusd (5 cycles
// each): 45-60% of the read bandwidth on a Sapphire Rapids core, against the AVX2 kernel's 75-82%.
void i2_rows4(const uint8_t* rows, int64_t row_bytes, int64_t in_pad, const int8_t* acts, int32_t act_sum,
              int32_t* out) {
  const __m512i mask = _mm512_set1_epi8(3);
  __m512i acc[4][2];
  for (int r = 0; r < 4; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
  for (int64_t q = 0; q < in_pad; q += 2 * I2_BLOCK) {
    // Four rows side by side are four short streams the hardware prefetcher barely learns: fetch
    // 16 rows ahead in address order, 256 bytes per step (the four rows' worth over the pass),
    // into L2. On a Sapphire Rapids core the T1 hint measured 70-75% of the read bandwidth, T0
    // 54-64%, T2 the same as T1, NTA 28-43%, none 44%; 8 to 32 rows ahead were alike.
    const uintptr_t ahead = reinterpret_cast<uintptr_t>(rows) + 16 * row_bytes + q;
    for (int i = 0; i < 4; ++i) _mm_prefetch(reinterpret_cast<const char*>(ahead + 64 * i), _MM_HINT_T1);
    __m512i a[4];
    for (int s = 0; s < 4; ++s) a[s] = _mm512_loadu_si512(reinterpret_cast<const void*>(acts + q + 64 * s));
    for (int r = 0; r < 4; ++r) {
      const __m512i v = _mm512_loadu_si512(reinterpret_cast<const void*>(rows + r * row_bytes + q / 4));
      for (int s = 0; s < 4; ++s)
        dpbusd(acc[r][s & 1], _mm512_and_si512(_mm512_srli_epi16(v, 2 * s), mask), a[s]);
    }
  }
  const __m128i sums = sum4(_mm512_add_epi32(acc[0][0], acc[0][1]), _mm512_add_epi32(acc[1][0], acc[1][1]),
                            _mm512_add_epi32(acc[2][0], acc[2][1]), _mm512_add_epi32(acc[3][0], acc[3][1]));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_sub_epi32(sums, _mm_set1_epi32(act_sum)));
}

template <int R, int T>
void i2_tiles(const uint8_t* codes, int64_t row_bytes, int64_t in_pad, const int8_t* acts,
              int64_t act_stride, const int32_t* act_sums, int32_t* out, bool first) {
  for (int r = 0; r < ROW_BLOCK; r += R)
    (first ? i2_tile<R, T, true> : i2_tile<R, T, false>)(codes + r * row_bytes, row_bytes, in_pad, acts,
                                                          act_stride, act_sums, out + r);
}

void i2_block(const uint8_t* codes, int64_t in_pad, const int8_t* acts, int64_t act_stride,
              const int32_t* act_sums, int64_t tokens, int32_t* acc) {
  const int64_t row_bytes = in_pad / 4;
  if (tokens == 1) {
    for (int r = 0; r < ROW_BLOCK; r += 4)
      i2_rows4(codes + r * row_bytes, row_bytes, in_pad, acts, act_sums[0], acc + r);
    return;
  }
  int64_t t = 0;
  for (; t + 4 <= tokens; t += 4)  // four tokens' activations stay in L1 across the rows
    i2_tiles<4, 4>(codes, row_bytes, in_pad, acts + t * act_stride, act_stride, act_sums + t, acc + t * ROW_BLOCK,
                   t == 0);
  const int8_t* a = acts + t * act_stride;
  int32_t* out = acc + t * ROW_BLOCK;
  switch (tokens - t) {
    case 3: i2_tiles<4, 3>(codes, row_bytes, in_pad, a, act_stride, act_sums + t, out, t == 0); break;
    case 2: i2_tiles<4, 2>(codes, row_bytes, in_pad, a, act_stride, act_sums + t, out, t == 0); break;
    case 1: i2_tiles<4, 1>(codes, row_bytes, in_pad, a, act_stride, act_sums + t, out, t == 0); break;
    default: break;
  }
}

// The LM head, 4 rows x T tokens like i2_tile. vpdpbusd multiplies unsigned by signed bytes, so
// x is offset to x + 128 in [1, 255] and 128 * sum(w) subtracted: exact, as
// |sum| <= 65536 * 255 * 128 < 2^31 for any hidden size the configuration allows. The row sums
// are taken (a vpdpbusd with ones) by the first token tile and kept for the others.
template <int T, bool FIRST>
void int8_tile(const int8_t* rows, int64_t k, const uint8_t* xu, int64_t x_stride, int32_t* row_sums,
               int32_t* out, int64_t out_stride) {
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i acc[4][T], wsum[4];
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {
    wsum[r] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_si512();
  }
  for (int64_t i = 0; i + 64 <= k; i += 64) {
    __m512i w[4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      w[r] = _mm512_loadu_si512(reinterpret_cast<const void*>(rows + r * k + i));
      if (FIRST) dpbusd(wsum[r], ones, w[r]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const __m512i x = _mm512_loadu_si512(reinterpret_cast<const void*>(xu + t * x_stride + i));
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) dpbusd(acc[r][t], x, w[r]);
    }
  }
  if (FIRST) _mm_storeu_si128(reinterpret_cast<__m128i*>(row_sums), sum4(wsum[0], wsum[1], wsum[2], wsum[3]));
  const __m128i offset = _mm_slli_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row_sums)), 7);
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + t * out_stride),
                     _mm_sub_epi32(sum4(acc[0][t], acc[1][t], acc[2][t], acc[3][t]), offset));
}

template <bool FIRST>
void int8_tiles(const int8_t* rows, int64_t r4, int64_t k, const uint8_t* xu, int64_t x_stride,
                int64_t tokens, int32_t* row_sums, int32_t* out, int64_t out_stride) {
  for (int64_t r = 0; r < r4; r += 4) {
    const int8_t* w = rows + r * k;
    switch (tokens) {
      case 4: int8_tile<4, FIRST>(w, k, xu, x_stride, row_sums + r, out + r, out_stride); break;
      case 3: int8_tile<3, FIRST>(w, k, xu, x_stride, row_sums + r, out + r, out_stride); break;
      case 2: int8_tile<2, FIRST>(w, k, xu, x_stride, row_sums + r, out + r, out_stride); break;
      default: int8_tile<1, FIRST>(w, k, xu, x_stride, row_sums + r, out + r, out_stride); break;
    }
  }
}

// Sums over columns [k0, k) of rows [r0, r1) added to out (what the tiles leave).
void int8_rest(const int8_t* rows, int64_t r0, int64_t r1, int64_t k0, int64_t k, const int8_t* x,
               int64_t tokens, int32_t* out, int64_t out_stride) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t t = 0; t < tokens; ++t) {
      int32_t sum = 0;
      for (int64_t i = k0; i < k; ++i) sum += static_cast<int32_t>(rows[r * k + i]) * x[t * k + i];
      out[t * out_stride + r] += sum;
    }
}

// 6-bit head rows (core.h), 4 rows x T tokens like int8_tile: each block's codes are unpacked once
// for the T tokens, each block of x loaded once for the 4 rows. A 96-byte block is two zmm of
// u = q + 32 in 0..63 in natural order: the nibbles n (64 bytes: values 0-63 low, 64-127 high)
// with the 2-bit tops h (32 bytes, broadcast to both halves, shifted per half into bits 4-5).
// vpdpbusd(u, x) is exact; 32 * sum(x) is subtracted at the end.
template <int T>
void int6_tile(const uint8_t* rows, int64_t row_bytes, int64_t blocks, const int8_t* x, int64_t k_pad,
               const int32_t* x_sums, int32_t* out, int64_t out_stride) {
  const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
  const __m512i up_lo = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);  // tops of 0-31 | 32-63
  const __m512i down_hi = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);  // 64-95 | 96-127
  __m512i acc[4][T];
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_si512();
  for (int64_t b = 0; b < blocks; ++b) {
    // Into L2, 16 rows ahead in address order (as i2_rows4); a prefetch never faults.
    const uintptr_t ahead = reinterpret_cast<uintptr_t>(rows) + 16 * row_bytes + 4 * INT6_BLOCK_BYTES * b;
    for (int i = 0; i < 6; ++i) _mm_prefetch(reinterpret_cast<const char*>(ahead + 64 * i), _MM_HINT_T1);
    __m512i lo[4], hi[4];
    for (int r = 0; r < 4; ++r) {
      const uint8_t* p = rows + r * row_bytes + b * INT6_BLOCK_BYTES;
      const __m512i n = _mm512_loadu_si512(reinterpret_cast<const void*>(p));
      const __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64)));
      lo[r] = _mm512_or_si512(_mm512_and_si512(n, m4), _mm512_and_si512(_mm512_sllv_epi16(h, up_lo), m30));
      hi[r] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(n, 4), m4),
                              _mm512_and_si512(_mm512_srlv_epi16(h, down_hi), m30));
    }
    for (int t = 0; t < T; ++t) {
      const int8_t* a = x + t * k_pad + b * INT6_BLOCK;
      const __m512i a0 = _mm512_loadu_si512(reinterpret_cast<const void*>(a));
      const __m512i a1 = _mm512_loadu_si512(reinterpret_cast<const void*>(a + 64));
      for (int r = 0; r < 4; ++r) {
        dpbusd(acc[r][t], lo[r], a0);
        dpbusd(acc[r][t], hi[r], a1);
      }
    }
  }
  for (int t = 0; t < T; ++t)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + t * out_stride),
                     _mm_sub_epi32(sum4(acc[0][t], acc[1][t], acc[2][t], acc[3][t]), _mm_set1_epi32(32 * x_sums[t])));
}

// Four tokens at a time (their x stays in L1 across the rows); rows past the last four go to the
// AVX2 kernel.
void int6_gemm(const uint8_t* rows, int64_t n_rows, int64_t k_pad, const int8_t* x, const int32_t* x_sums,
               int64_t tokens, int32_t* out) {
  const int64_t blocks = k_pad / INT6_BLOCK, row_bytes = blocks * INT6_BLOCK_BYTES, r4 = n_rows / 4 * 4;
  for (int64_t t = 0; t < tokens; t += 4) {
    const int8_t* xt = x + t * k_pad;
    int32_t* o = out + t * n_rows;
    for (int64_t r = 0; r < r4; r += 4) {
      const uint8_t* w = rows + r * row_bytes;
      switch (std::min<int64_t>(4, tokens - t)) {
        case 4: int6_tile<4>(w, row_bytes, blocks, xt, k_pad, x_sums + t, o + r, n_rows); break;
        case 3: int6_tile<3>(w, row_bytes, blocks, xt, k_pad, x_sums + t, o + r, n_rows); break;
        case 2: int6_tile<2>(w, row_bytes, blocks, xt, k_pad, x_sums + t, o + r, n_rows); break;
        default: int6_tile<1>(w, row_bytes, blocks, xt, k_pad, x_sums + t, o + r, n_rows); break;
      }
    }
  }
  for (int64_t t = 0; r4 < n_rows && t < tokens; ++t)  // token by token: each writes its own row of out
    avx2_backend.int6_gemm(rows + r4 * row_bytes, n_rows - r4, k_pad, x + t * k_pad, x_sums + t, 1,
                           out + t * n_rows + r4);
}

void int8_gemm(const int8_t* rows, int64_t n_rows, int64_t k, const int8_t* x, int64_t tokens, int32_t* out) {
  // One token: the AVX2 row-by-row GEMV streams the head at twice the rate of a 4 x 1 tile here
  // (1 thread, 2B-4T head: 25 against 12 GB/s), and a decode step is bound by that stream.
  if (tokens == 1) return avx2_backend.int8_gemm(rows, n_rows, k, x, tokens, out);
  const int64_t k64 = k / 64 * 64, r4 = n_rows / 4 * 4;
  const int64_t stride = k64 + 64;  // off a power-of-two stride
  thread_local std::vector<uint8_t> xu;
  thread_local std::vector<int32_t> row_sums;
  xu.resize(tokens * stride);
  row_sums.resize(r4);
  for (int64_t t = 0; t < tokens; ++t) {
    const int8_t* src = x + t * k;
    uint8_t* dst = xu.data() + t * stride;
    for (int64_t i = 0; i + 64 <= k; i += 64)
      _mm512_storeu_si512(dst + i, _mm512_xor_si512(_mm512_loadu_si512(src + i), _mm512_set1_epi8(-128)));
  }
  for (int64_t t = 0; t < tokens; t += 4) {  // four tokens' rows of x stay in L1 across the rows
    const int64_t nt = std::min<int64_t>(4, tokens - t);
    if (t == 0)
      int8_tiles<true>(rows, r4, k, xu.data(), stride, nt, row_sums.data(), out, n_rows);
    else
      int8_tiles<false>(rows, r4, k, xu.data() + t * stride, stride, nt, row_sums.data(), out + t * n_rows, n_rows);
  }
  for (int64_t t = 0; t < tokens; ++t) std::fill(out + t * n_rows + r4, out + (t + 1) * n_rows, 0);
  int8_rest(rows, r4, n_rows, 0, k, x, tokens, out, n_rows);  // the last rows of an odd vocabulary
  int8_rest(rows, 0, r4, k64, k, x, tokens, out, n_rows);      // columns past the last whole vector
}

// Group scales: R = 4 rows x T tokens per group, as i2_tile, with the sums of each group taken
// (sum4), corrected by the group's activation sum and scaled into fp32 before the next group. A
// 128-weight group is one 32-byte block: broadcast to both halves and shifted by 6 | 4 and 2 | 0,
// its codes line up with activations k = 0..63 and 64..127 in natural order; a 64-weight group is
// half a block (planes 0 | 1 or 2 | 3).
template <int T>
void group_tile(const uint8_t* rows, int64_t row_bytes, int64_t group, int64_t groups, const float* scales,
                const int8_t* acts, const int32_t* group_sums, int64_t tokens, float* y /* stride ROW_BLOCK */) {
  const __m512i mask = _mm512_set1_epi8(3);
  const __m512i lo = _mm512_inserti64x4(_mm512_set1_epi16(6), _mm256_set1_epi16(4), 1);  // planes 0 | 1
  const __m512i hi = _mm512_inserti64x4(_mm512_set1_epi16(2), _mm256_set1_epi16(0), 1);  // planes 2 | 3
  __m128 f[T];
  for (int t = 0; t < T; ++t) f[t] = _mm_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t k0 = g * group;
    __m512i code[4][2];
    for (int r = 0; r < 4; ++r) {
      const __m512i b = _mm512_broadcast_i64x4(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + r * row_bytes + k0 / I2_BLOCK * 32)));
      if (group == 128) {
        code[r][0] = _mm512_and_si512(_mm512_srlv_epi16(b, lo), mask);
        code[r][1] = _mm512_and_si512(_mm512_srlv_epi16(b, hi), mask);
      } else {  // 64: the first or second half of the block
        code[r][0] = _mm512_and_si512(_mm512_srlv_epi16(b, k0 % I2_BLOCK ? hi : lo), mask);
      }
    }
    const __m128 sc = _mm_set_ps(scales[3 * groups + g], scales[2 * groups + g], scales[groups + g], scales[g]);
    for (int t = 0; t < T; ++t) {
      const int8_t* a = acts + (g * tokens + t) * group;
      const __m512i a0 = _mm512_loadu_si512(reinterpret_cast<const void*>(a));
      __m512i acc[4];
      for (int r = 0; r < 4; ++r) acc[r] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), code[r][0], a0);
      if (group == 128) {
        const __m512i a1 = _mm512_loadu_si512(reinterpret_cast<const void*>(a + 64));
        for (int r = 0; r < 4; ++r) acc[r] = _mm512_dpbusd_epi32(acc[r], code[r][1], a1);
      }
      const __m128i sums = _mm_sub_epi32(sum4(acc[0], acc[1], acc[2], acc[3]),
                                         _mm_set1_epi32(group_sums[g * tokens + t]));
      f[t] = _mm_add_ps(f[t], _mm_mul_ps(sc, _mm_cvtepi32_ps(sums)));
    }
  }
  for (int t = 0; t < T; ++t) _mm_storeu_ps(y + t * ROW_BLOCK, f[t]);
}

void i2_group_block(const uint8_t* codes, int64_t in_pad, int64_t group, int64_t groups, const float* scales,
                    const int8_t* acts, const int32_t* group_sums, int64_t tokens, float* y) {
  const int64_t row_bytes = in_pad / 4;
  for (int64_t t0 = 0; t0 < tokens; t0 += 4) {  // four tokens' groups stay in L1 across the rows
    const int8_t* a = acts + t0 * group;
    const int32_t* sums = group_sums + t0;
    for (int64_t r = 0; r < ROW_BLOCK; r += 4) {
      const uint8_t* rows = codes + r * row_bytes;
      const float* sc = scales + r * groups;
      float* out = y + t0 * ROW_BLOCK + r;
      switch (std::min<int64_t>(4, tokens - t0)) {
        case 4: group_tile<4>(rows, row_bytes, group, groups, sc, a, sums, tokens, out); break;
        case 3: group_tile<3>(rows, row_bytes, group, groups, sc, a, sums, tokens, out); break;
        case 2: group_tile<2>(rows, row_bytes, group, groups, sc, a, sums, tokens, out); break;
        default: group_tile<1>(rows, row_bytes, group, groups, sc, a, sums, tokens, out); break;
      }
    }
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
    64, full_tables, tlmm_block, i2_prepare, i2_block, int8_gemm, int6_gemm, dots_avx2, dots_f16_avx2,
    axpys_avx2, axpys_f16_avx2, axpys_i8_avx2, half_to_float_f16c, float_to_half_f16c, int8_madd_loop,
    fp32_fma_loop_avx2, stream_read, i2_group_block,
};

}  // namespace tellme
