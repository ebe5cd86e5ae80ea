// Building TLMM tables: for one group of 3 int8 activations (a0, a1, a2), the partial sum
// w0*a0 + w1*a1 + w2*a2 of every ternary pattern. Patterns are named by their balanced-ternary
// value v = 9*w0 + 3*w1 + w2; v and -v give opposite sums, so only |v| = 0..13 need adds.
#pragma once
#include <cstdint>
#include <cstring>

namespace tellme {
// The functions here are `static`: each backend file compiles them with its own instruction set,
// and one linker-chosen copy would otherwise serve them all (an AVX-512 or +dotprod copy in the
// portable backends included).

constexpr int TL_MAGNITUDES = 14;  // |v| = 0..13

struct TernaryDigits { int8_t w[TL_MAGNITUDES][3]; };

constexpr TernaryDigits make_digits() {
  TernaryDigits d{};
  for (int m = 0; m < TL_MAGNITUDES; ++m) {
    int v = m;
    for (int i = 2; i >= 0; --i) {
      int r = ((v % 3) + 3) % 3;
      if (r == 2) r = -1;
      d.w[m][i] = static_cast<int8_t>(r);
      v = (v - r) / 3;
    }
  }
  return d;
}
inline constexpr TernaryDigits kDigits = make_digits();

// sums[m] = partial sum of the pattern with value +m, m = 0..13 (|sums| <= 3 * 128).
static inline void group_sums(const int8_t* a, int16_t sums[TL_MAGNITUDES]) {
  for (int m = 0; m < TL_MAGNITUDES; ++m)
    sums[m] = static_cast<int16_t>(kDigits.w[m][0] * a[0] + kDigits.w[m][1] * a[1] +
                                   kDigits.w[m][2] * a[2]);
}

// The "full table" of one group: 32 int16 entries indexed by |v| | (v < 0) << 4, so the sign is
// part of the index and the read path has no sign logic (TeLLMe's full-storage variant).
static inline void full_tables(const int8_t* act, int64_t groups, uint8_t* tables) {
  for (int64_t g = 0; g < groups; ++g) {
    int16_t s[TL_MAGNITUDES];
    group_sums(act + 3 * g, s);
    int16_t* t = reinterpret_cast<int16_t*>(tables) + 32 * g;
    for (int i = 0; i < 32; ++i) t[i] = 0;
    for (int m = 0; m < TL_MAGNITUDES; ++m) {
      t[m] = s[m];
      t[16 + m] = static_cast<int16_t>(-s[m]);
    }
  }
}

// The "plane tables" of one group, for 16-entry byte lookups (`pshufb`, `tbl`): the 14 sums of
// |v| = 0..13 split into a low-byte and a high-byte plane of 16 bytes each. The kernel reads a
// negative pattern as the ones' complement of the positive one (-s - 1) and gives the -1 back
// per row at the end (`neg_count`).
static inline void plane_tables(const int8_t* act, int64_t groups, uint8_t* tables) {
  for (int64_t g = 0; g < groups; ++g) {
    int16_t s[TL_MAGNITUDES];
    group_sums(act + 3 * g, s);
    uint8_t* lo = tables + 32 * g;
    uint8_t* hi = lo + 16;
    std::memset(lo, 0, 32);
    for (int m = 0; m < TL_MAGNITUDES; ++m) {
      lo[m] = static_cast<uint8_t>(s[m] & 0xFF);
      hi[m] = static_cast<uint8_t>((s[m] >> 8) & 0xFF);
    }
  }
}

}  // namespace tellme
