// tellme native core: shared layout constants and the per-ISA backend interface.
//
// Weight layouts (built by src/tellme/kernels/layout.py; the math is in reference.py):
//
//  TLMM ("tlmm"): rows padded to ROW_BLOCK, `in` padded to KB_WEIGHTS. Each group of 3 weights is
//    one of 27 patterns; its balanced-ternary value v = 9*w0 + 3*w1 + w2 in [-13, 13] is stored as
//    magnitude |v| (a 4-bit nibble) and sign (v < 0, one bit). A tile (32 rows x 8 groups) is
//    160 bytes: 4 x 32 bytes of nibble pairs (byte r of chunk c = |v(r,2c)| | |v(r,2c+1)| << 4)
//    then 32 sign bytes (bit j of byte r = sign of group j of row r). Tiles are stored row-block
//    major, so a GEMV streams memory linearly. 5 bits per 3 weights = 1.667 bits/weight.
//
//  2-bit codes ("i2"): code = w + 1 in {0,1,2}; rows padded to ROW_BLOCK, `in` to I2_K_PAD.
//    Each 128-weight block of a row is 32 bytes: byte j holds the codes of k = j, j+32, j+64,
//    j+96 in bits 6-7, 4-5, 2-3, 0-1 (bitnet.cpp's I2_S order). Rows are stored one after another.
//
//  6-bit LM head rows ("int6"): values q in [-31, 31] stored as u = q + 32; `in` padded to
//    INT6_BLOCK with zeros (u = 32). Each 128-value block of a row is 96 bytes: bytes 0-31 hold the
//    low 4 bits of u[j] (low nibble) and u[j+64] (high nibble), bytes 32-63 those of u[32+j] and
//    u[96+j], bytes 64-95 the top 2 bits of u[j], u[j+32], u[j+64], u[j+96] in bits 0-1, 2-3, 4-5,
//    6-7 (layout.pack_int6).
#pragma once
#include <cstddef>
#include <cstdint>

namespace tellme {

constexpr int64_t ROW_BLOCK = 32;      // output rows per tile (both layouts)
constexpr int64_t KB_GROUPS = 8;       // groups of 3 weights per TLMM tile
constexpr int64_t KB_WEIGHTS = 24;     // weights per TLMM tile along `in`
constexpr int64_t TILE_BYTES = 160;    // bytes per TLMM tile (128 nibble + 32 sign bytes)
constexpr int64_t I2_BLOCK = 128;      // weights per 32-byte block of 2-bit codes
constexpr int64_t I2_K_PAD = 256;      // `in` padding of the 2-bit layout (AVX-512 takes 2 blocks)
constexpr int64_t INT6_BLOCK = 128;    // values per 96-byte block of 6-bit head rows
constexpr int64_t INT6_BLOCK_BYTES = 96;
constexpr int WIDEN_EVERY_TILES = 8;   // int16 partial sums are widened to int32 every 64 groups

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
inline int64_t int6_row_bytes(int64_t k) { return round_up(k, INT6_BLOCK) / INT6_BLOCK * INT6_BLOCK_BYTES; }
// u = q + 32 of value i (0..127) of a 96-byte block of 6-bit rows: the layout above, one value.
inline int int6_code(const uint8_t* block, int i) {
  const int j = i % 32, s = i / 32;
  return ((s & 1 ? block[32 + j] : block[j]) >> (s & 2 ? 4 : 0) & 15) | (block[64 + j] >> (2 * s) & 3) << 4;
}

// The kernels of one instruction set (ISA). Each backend_*.cpp file fills one of these; cpu.cpp picks one.
struct Backend {
  const char* name;
  bool emulated;  // built against SIMDe (portable emulation) rather than native instructions

  // TLMM: per-token tables, `table_bytes_per_group` bytes for each group of 3 activations.
  int64_t table_bytes_per_group;
  void (*tlmm_tables)(const int8_t* act, int64_t groups, uint8_t* tables);
  // Adds the exact int32 dot products of one 32-row block over `ktiles` tiles with `tokens`
  // tokens to acc[t*32 + r]. `neg_count` (may be null) is the sign correction of the plane-table
  // kernels (AVX2, NEON), passed with the first K slice only.
  void (*tlmm_block)(const uint8_t* tiles, const int32_t* neg_count, int64_t ktiles,
                     const uint8_t* tables, int64_t table_stride, int64_t tokens, int32_t* acc);

  // Multiply-add baseline on 2-bit codes. Activations are first rearranged (`i2_prepare`,
  // same byte count) into the order the kernel consumes; their sum is returned because
  // sum(w*a) = sum(code*a) - sum(a).
  int32_t (*i2_prepare)(const int8_t* act, int64_t in_pad, int8_t* out);
  void (*i2_block)(const uint8_t* codes, int64_t in_pad, const int8_t* acts, int64_t act_stride,
                   const int32_t* act_sums, int64_t tokens, int32_t* acc);

  // int8 GEMM for the LM head: out[t*n_rows + r] = sum_i rows[r*k + i] * x[t*k + i] for `tokens`
  // rows of x in [-127, 127]; each head row is read once for all of them.
  void (*int8_gemm)(const int8_t* rows, int64_t n_rows, int64_t k, const int8_t* x, int64_t tokens,
                    int32_t* out);
  // The same for 6-bit head rows of k_pad values (a multiple of INT6_BLOCK): x is [tokens][k_pad],
  // zero past the hidden size, and x_sums[t] its sum (sum(q*x) = sum(u*x) - 32 * sum(x)).
  void (*int6_gemm)(const uint8_t* rows, int64_t n_rows, int64_t k_pad, const int8_t* x,
                    const int32_t* x_sums, int64_t tokens, int32_t* out);

  // Attention arithmetic (fp32) of `queries` vectors against the same `count` rows of n elements,
  // `stride` apart: fp32 rows (a converted chunk) or fp16 rows (the KV cache, read in place;
  // bit-identical to converting first). Several queries per call (the query heads of a GQA group)
  // let a backend load and convert each row once for all of them. `dots`: out[h][j] = q[h] . row
  // j (q: [queries][n], out: [queries][count]), summed in 8 lanes (lane l takes elements i = l mod
  // 8) joined as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)), with no fused multiply-add, so every ISA
  // gives the same bits. `axpys`: y[h] += p[h][j] * row j, for j in order (p: [queries][count], y:
  // [queries][n]). Several rows per call let a backend overlap them. `half_to_float`: exact
  // conversion of fp16; `float_to_half`: to the nearest fp16, ties to even (the KV cache's values;
  // the same bits on every ISA for non-NaN input).
  void (*dots)(const float* q, int64_t queries, const float* rows, int64_t stride, int64_t count, int64_t n, float* out);
  void (*dots_f16)(const float* q, int64_t queries, const uint16_t* rows, int64_t stride, int64_t count, int64_t n,
                   float* out);
  void (*axpys)(const float* p, int64_t queries, const float* rows, int64_t stride, int64_t count, int64_t n, float* y);
  void (*axpys_f16)(const float* p, int64_t queries, const uint16_t* rows, int64_t stride, int64_t count, int64_t n,
                    float* y);
  // axpys over int8 rows (the q8 KV cache's values, read in place), each converted exactly to fp32.
  void (*axpys_i8)(const float* p, int64_t queries, const int8_t* rows, int64_t stride, int64_t count, int64_t n,
                   float* y);
  void (*half_to_float)(const uint16_t* src, int64_t n, float* dst);
  void (*float_to_half)(const float* src, int64_t n, uint16_t* dst);

  // Benchmark loops: int8 multiply-adds with int32 accumulation on registers (returns the
  // number of multiply-adds done) and a streaming read of `bytes` bytes (returns a checksum).
  double (*int8_madd_loop)(int64_t iterations);
  // fp32 fused multiply-adds on registers, at the vector width attention uses (returns the FMAs done).
  double (*fp32_fma_loop)(int64_t iterations);
  uint64_t (*stream_read)(const uint8_t* data, int64_t bytes);

  // Optional: weights with a scale per `group` (64 or 128) weights along a row, for one 32-row
  // block of 2-bit codes. y[t*32 + r] = sum over groups g in order, from 0 in fp32, of
  // scales[r*groups + g] * (exact integer sum of group g), each product rounded before the add.
  // acts: [groups][tokens][group] in natural order; group_sums: [groups][tokens], their sums.
  // Null: the generic path in matmul.cpp (each group through int8_gemm) computes the same bits.
  void (*i2_group_block)(const uint8_t* codes, int64_t in_pad, int64_t group, int64_t groups,
                         const float* scales, const int8_t* acts, const int32_t* group_sums, int64_t tokens,
                         float* y) = nullptr;
};

extern const Backend scalar_backend;
// i2_prepare of the ISAs whose kernel reads activations in stored order: a copy and the sum.
int32_t i2_prepare_copy(const int8_t* act, int64_t in_pad, int8_t* out);
#ifdef TELLME_HAVE_X86_BACKENDS
// The fp32 and fp16 attention arithmetic AVX-512 machines share with AVX2.
void dots_avx2(const float* q, int64_t queries, const float* rows, int64_t stride, int64_t count, int64_t n, float* out);
void dots_f16_avx2(const float* q, int64_t queries, const uint16_t* rows, int64_t stride, int64_t count, int64_t n, float* out);
void axpys_avx2(const float* p, int64_t queries, const float* rows, int64_t stride, int64_t count, int64_t n, float* y);
void axpys_f16_avx2(const float* p, int64_t queries, const uint16_t* rows, int64_t stride, int64_t count, int64_t n, float* y);
void axpys_i8_avx2(const float* p, int64_t queries, const int8_t* rows, int64_t stride, int64_t count, int64_t n, float* y);
void half_to_float_f16c(const uint16_t* src, int64_t n, float* dst);
void float_to_half_f16c(const float* src, int64_t n, uint16_t* dst);
double fp32_fma_loop_avx2(int64_t iterations);
extern const Backend avx2_backend;
extern const Backend avx512_backend;
#endif
#ifdef TELLME_HAVE_ARM_BACKENDS
// What the dot-product backend shares with the NEON one.
void tlmm_block_neon(const uint8_t* tiles, const int32_t* neg_count, int64_t ktiles,
                     const uint8_t* tables, int64_t table_stride, int64_t tokens, int32_t* acc);
void dots_neon(const float* q, int64_t queries, const float* rows, int64_t stride, int64_t count, int64_t n, float* out);
void dots_f16_neon(const float* q, int64_t queries, const uint16_t* rows, int64_t stride, int64_t count, int64_t n, float* out);
void axpys_neon(const float* p, int64_t queries, const float* rows, int64_t stride, int64_t count, int64_t n, float* y);
void axpys_f16_neon(const float* p, int64_t queries, const uint16_t* rows, int64_t stride, int64_t count, int64_t n, float* y);
void axpys_i8_neon(const float* p, int64_t queries, const int8_t* rows, int64_t stride, int64_t count, int64_t n, float* y);
void half_to_float_neon(const uint16_t* src, int64_t n, float* dst);
void float_to_half_neon(const float* src, int64_t n, uint16_t* dst);
uint64_t stream_read_neon(const uint8_t* data, int64_t bytes);
double fp32_fma_loop_neon(int64_t iterations);
// What the i8mm backend shares with the dot-product one.
void i2_block_dotprod(const uint8_t* codes, int64_t in_pad, const int8_t* acts, int64_t act_stride,
                      const int32_t* act_sums, int64_t tokens, int32_t* acc);
void int8_gemm_dotprod(const int8_t* rows, int64_t n_rows, int64_t k, const int8_t* x, int64_t tokens,
                       int32_t* out);
void int6_gemm_dotprod(const uint8_t* rows, int64_t n_rows, int64_t k_pad, const int8_t* x, const int32_t* x_sums,
                       int64_t tokens, int32_t* out);
extern const Backend i8mm_backend;
extern const Backend dotprod_backend;
extern const Backend neon_backend;
#endif

// cpu.cpp: detection and the one dispatch point.
struct CpuFeatures {
  // x86-64 (cpuid + xgetbv)
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512vbmi = false,
       avx512vnni = false;
  // AArch64 (what the OS reports: getauxval on Linux, sysctl on macOS)
  bool neon = false, dotprod = false, i8mm = false;
};
CpuFeatures detect_cpu();
const Backend* find_backend(const char* name);  // nullptr if unknown or not runnable here
const Backend& active_backend();
void set_active_backend(const Backend& b);
const Backend* const* all_backends(int* count);  // compiled in, best first

// parallel.cpp: thread count for every parallel region.
int num_threads();
void set_num_threads(int n);

}  // namespace tellme
