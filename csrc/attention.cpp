#include "attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "core.h"
#include "exp_approx.h"
#include "parallel.h"
#include "quantize.h"

namespace tellme {
namespace {

// exp for softmax weights (x <= 0). Weights below e^-69 (1e-30) are dropped: they cannot change
// a float sum of weights >= 1, and keeping them lets products with V become subnormal, which
// costs ~100 cycles per operation on common CPUs.
inline float softmax_exp(float x) { return x < -69.0f ? 0.0f : exp_approx(x); }

struct Partial {  // softmax state over some keys: max score, sum of exp, exp-weighted values
  float max;
  float sum;
  float* acc;  // [head_dim]
};

// op over v[0..n) in 8 lanes (lane l takes j = l mod 8), joined as ((l0 op l1) op (l2 op l3)) op
// ((l4 op l5) op (l6 op l7)): 8 independent chains that vectorise, where one chain of dependent
// adds took a third as long as the dots. The same bits on every ISA.
template <class Op>
float reduce8(const float* v, int64_t n, float init, Op op) {
  float lane[8] = {init, init, init, init, init, init, init, init};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) lane[l] = op(lane[l], v[j + l]);
  for (int l = 0; j < n; ++j, ++l) lane[l] = op(lane[l], v[j]);
  return op(op(op(lane[0], lane[1]), op(lane[2], lane[3])), op(op(lane[4], lane[5]), op(lane[6], lane[7])));
}

// Merges `part` into `state` (both over disjoint key sets).
void merge(Partial& state, const Partial& part, int64_t head_dim) {
  const float m = std::max(state.max, part.max);
  const float a = state.max == -std::numeric_limits<float>::infinity() ? 0.0f : softmax_exp(state.max - m);
  const float b = softmax_exp(part.max - m);
  state.sum = state.sum * a + part.sum * b;
  for (int64_t d = 0; d < head_dim; ++d) state.acc[d] = state.acc[d] * a + part.acc[d] * b;
  state.max = m;
}

// The backend's row arithmetic for each element type, for `h` queries at once.
void dots(const Backend& be, const float* q, int64_t h, const float* r, int64_t c, int64_t n, float* o) {
  be.dots(q, h, r, n, c, n, o);
}
void dots(const Backend& be, const float* q, int64_t h, const uint16_t* r, int64_t c, int64_t n, float* o) {
  be.dots_f16(q, h, r, n, c, n, o);
}
void axpys(const Backend& be, const float* p, int64_t h, const float* r, int64_t c, int64_t n, float* y) {
  be.axpys(p, h, r, n, c, n, y);
}
void axpys(const Backend& be, const float* p, int64_t h, const uint16_t* r, int64_t c, int64_t n, float* y) {
  be.axpys_f16(p, h, r, n, c, n, y);
}
void axpys(const Backend& be, const float* p, int64_t h, const int8_t* r, int64_t c, int64_t n, float* y) {
  be.axpys_i8(p, h, r, n, c, n, y);
}

// One head of one query token: fp32, and against a q8 cache its int8 quantization and scale; or
// the first of several consecutive heads (a GQA group's), the next head_dim further in f32 and q8
// and one further in scale.
struct QueryRow {
  const float* f32;
  const int8_t* q8;
  const float* scale;
};

// Key/value rows of one chunk of one kv head: the cache's rows read in place (decode: each row is
// read once) or a converted fp32 copy (prefill: a tile of queries shares it). Against q8 keys a
// score is the exact integer q8 . k8 times q_scale * k_scale; a q8 value row is weighted
// p * v_scale, and gives the same bits read in place or converted (exactly) to fp32 first.
template <class KE, class VE>
struct ChunkRows {
  const Backend& be;
  const KE* k;                       // the chunk's first rows
  const VE* v;
  const float *k_scale, *v_scale;    // q8: the rows' scales; null otherwise
  int64_t head_dim;
  // out: [queries][count]
  void dots(const QueryRow& q, int64_t queries, int64_t count, float* out) const {
    if constexpr (std::is_same_v<KE, int8_t>) {
      thread_local std::vector<int32_t> sums;
      sums.resize(queries * count);
      be.int8_gemm(k, count, head_dim, q.q8, queries, sums.data());
      for (int64_t h = 0; h < queries; ++h)
        for (int64_t j = 0; j < count; ++j)
          out[h * count + j] = static_cast<float>(sums[h * count + j]) * (q.scale[h] * k_scale[j]);
    } else {
      tellme::dots(be, q.f32, queries, k, count, head_dim, out);
    }
  }
  // p: [queries][count]; acc: [queries][head_dim]
  void axpys(const float* p, int64_t queries, int64_t count, float* acc) const {
    if (!v_scale) return tellme::axpys(be, p, queries, v, count, head_dim, acc);
    thread_local std::vector<float> w;
    w.resize(queries * count);
    for (int64_t h = 0; h < queries; ++h)
      for (int64_t j = 0; j < count; ++j) w[h * count + j] = p[h * count + j] * v_scale[j];
    tellme::axpys(be, w.data(), queries, v, count, head_dim, acc);
  }
};

// Rows [start, start + count) of one kv head (contiguous in the head-major cache) as fp32, exactly.
void load_chunk(const Backend& be, const uint16_t* head, int64_t start, int64_t count, int64_t head_dim, float* dst) {
  be.half_to_float(head + start * head_dim, count * head_dim, dst);
}
void load_chunk(const Backend&, const int8_t* head, int64_t start, int64_t count, int64_t head_dim, float* dst) {
  const int8_t* src = head + start * head_dim;
  for (int64_t i = 0; i < count * head_dim; ++i) dst[i] = static_cast<float>(src[i]);
}

}  // namespace

// A chunk's scores s[0..n) to softmax weights in place: s = softmax_exp(s * scale - m), m the
// max of s * scale. Returns m and the weights' sum (reduce8's lanes and order).
std::pair<float, float> softmax_weights(float* s, int64_t n, float scale) {
  for (int64_t j = 0; j < n; ++j) s[j] *= scale;
  const float m = reduce8(s, n, -std::numeric_limits<float>::infinity(), [](float a, float b) { return std::max(a, b); });
  for (int64_t j = 0; j < n; ++j) s[j] = softmax_exp(s[j] - m);
  return {m, reduce8(s, n, 0.0f, [](float a, float b) { return a + b; })};
}

#ifdef TELLME_HAVE_X86_BACKENDS
namespace {
__attribute__((target("avx2"))) inline __m256 softmax_exp8(__m256 x) {
  return _mm256_blendv_ps(exp_approx8(x), _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(-69.0f), _CMP_LT_OQ));
}

}  // namespace

// The same 8 wide where the CPU has AVX2, whatever ISA the kernels use: lane l of each vector is
// reduce8's lane l (elements j = l mod 8), max is exact in any order (scores are finite), and the
// tail adds zeros to the lanes it does not reach; the bits are the scalar function's. The scalar
// exp was a quarter of q8 decode attention's time at depth 4,096.
__attribute__((target("avx2"))) std::pair<float, float> softmax_weights_avx2(float* s, int64_t n, float scale) {
  const int64_t n8 = n / 8 * 8, tail = n - n8;
  const __m256 sc = _mm256_set1_ps(scale);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 in_tail = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(tail)), lanes));
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 mx = neg_inf;
  for (int64_t j = 0; j < n8; j += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(s + j), sc);
    _mm256_storeu_ps(s + j, v);
    mx = _mm256_max_ps(mx, v);
  }
  alignas(32) float t[8] = {};
  for (int64_t j = 0; j < tail; ++j) t[j] = s[n8 + j] * scale;
  mx = _mm256_max_ps(mx, _mm256_blendv_ps(neg_inf, _mm256_load_ps(t), in_tail));
  alignas(32) float l[8];
  _mm256_store_ps(l, mx);
  const float m = std::max(std::max(std::max(l[0], l[1]), std::max(l[2], l[3])),
                           std::max(std::max(l[4], l[5]), std::max(l[6], l[7])));
  const __m256 mv = _mm256_set1_ps(m);
  __m256 sum = _mm256_setzero_ps();
  for (int64_t j = 0; j < n8; j += 8) {
    const __m256 w = softmax_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), mv));
    _mm256_storeu_ps(s + j, w);
    sum = _mm256_add_ps(sum, w);
  }
  const __m256 w = _mm256_and_ps(softmax_exp8(_mm256_sub_ps(_mm256_load_ps(t), mv)), in_tail);
  _mm256_store_ps(t, w);
  for (int64_t j = 0; j < tail; ++j) s[n8 + j] = t[j];
  _mm256_store_ps(l, _mm256_add_ps(sum, w));
  return {m, ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))};
}
#endif

std::pair<float, float> softmax_weights_fast(float* s, int64_t n, float scale) {
#ifdef TELLME_HAVE_X86_BACKENDS
  static const bool avx2 = detect_cpu().avx2;
  if (avx2) return softmax_weights_avx2(s, n, scale);
#endif
  return softmax_weights(s, n, scale);
}

namespace {

// The partials of `queries` consecutive query heads over `count` keys of a chunk, whose rows the
// backend reads once for all of them: scores [queries][count], acc [queries][head_dim], stats
// [queries][max, sum].
template <class Rows>
void chunk_partials(const Rows& rows, const QueryRow& q, int64_t queries, int64_t count, int64_t head_dim,
                    float scale, float* scores, float* acc, float* stats) {
  rows.dots(q, queries, count, scores);
  for (int64_t h = 0; h < queries; ++h) {
    const auto [m, sum] = softmax_weights_fast(scores + h * count, count, scale);
    stats[2 * h] = m;
    stats[2 * h + 1] = sum;
  }
  std::fill(acc, acc + queries * head_dim, 0.0f);
  rows.axpys(scores, queries, count, acc);
}

// The step's queries against q8 caches, quantized per (token, head) as a linear's input is.
struct QuantizedQueries {
  std::vector<int8_t> q8;
  std::vector<float> scale;
  std::vector<int64_t> first;  // per query: its first row, or -1 (an fp16 cache)
  int64_t heads, head_dim;
  QueryRow row(const AttentionQuery& a, int64_t query, int64_t token, int64_t h) const {
    const float* f32 = a.q + (token * heads + h) * head_dim;
    if (first[query] < 0) return {f32, nullptr, nullptr};
    const int64_t r = first[query] + token * heads + h;
    return {f32, q8.data() + r * head_dim, scale.data() + r};
  }
};

// Decode: the partials of one (kv head, chunk) of a one-token query, one per query head of the
// group, all in one pass over the chunk's rows (GQA: 4 query heads per kv head in 2B-4T; a pass
// per head converted each row four times). acc: [group][head_dim], stats: [group][2].
void decode_partials(const Backend& be, const AttentionQuery& a, const QuantizedQueries& qq, int64_t query,
                     int64_t g, int64_t c, int64_t group, int64_t head_dim, float scale, float* acc, float* stats) {
  const int64_t start = c * ATTN_CHUNK, count = std::min(ATTN_CHUNK, a.first_position + 1 - start);
  thread_local std::vector<float> scores;
  scores.resize(group * ATTN_CHUNK);
  const int64_t row = g * a.capacity + start, off = row * head_dim;
  const QueryRow q = qq.row(a, query, 0, g * group);
  if (a.kv.k8)
    chunk_partials(ChunkRows<int8_t, int8_t>{be, a.kv.k8 + off, a.kv.v8 + off, a.kv.k_scale + row,
                                             a.kv.v_scale + row, head_dim}, q, group, count, head_dim, scale,
                   scores.data(), acc, stats);
  else
    chunk_partials(ChunkRows<uint16_t, uint16_t>{be, a.kv.k16 + off, a.kv.v16 + off, nullptr, nullptr, head_dim}, q,
                   group, count, head_dim, scale, scores.data(), acc, stats);
}

// Prefill: one (head, query tile); it walks its chunks diagonal first. fp16 keys and values are
// converted once per chunk for the tile; q8 keys are read in place (integer dots), q8 values converted.
void prefill_tile(const Backend& be, const AttentionQuery& a, const QuantizedQueries& qq, int64_t query, int64_t h,
                  int64_t i0, int64_t heads, int64_t group, int64_t head_dim, float scale) {
  const int64_t q_stride = heads * head_dim;
  const int64_t i1 = std::min(a.tokens, i0 + ATTN_QUERY_TILE);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  thread_local std::vector<float> kv, scores, part_acc, state_max, state_sum;
  kv.resize(2 * ATTN_CHUNK * head_dim);
  scores.resize(ATTN_CHUNK);
  part_acc.resize(head_dim);
  state_max.assign(ATTN_QUERY_TILE, neg_inf);
  state_sum.assign(ATTN_QUERY_TILE, 0.0f);
  for (int64_t i = i0; i < i1; ++i) std::fill(a.out + i * q_stride + h * head_dim, a.out + i * q_stride + (h + 1) * head_dim, 0.0f);
  const int64_t head_row = (h / group) * a.capacity, off = head_row * head_dim;
  const int64_t last = a.first_position + i1 - 1;
  float* const k32 = kv.data();
  float* const v32 = kv.data() + ATTN_CHUNK * head_dim;
  for (int64_t c = last / ATTN_CHUNK; c >= 0; --c) {
    const int64_t start = c * ATTN_CHUNK, count = std::min(ATTN_CHUNK, last + 1 - start);
    auto run = [&](const auto& rows) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t position = a.first_position + i;
        if (position < start) continue;  // this chunk is entirely in the query's future
        const int64_t visible = std::min(count, position + 1 - start);
        float stats[2];
        chunk_partials(rows, qq.row(a, query, i, h), 1, visible, head_dim, scale, scores.data(), part_acc.data(),
                       stats);
        const Partial part{stats[0], stats[1], part_acc.data()};
        Partial state{state_max[i - i0], state_sum[i - i0], a.out + i * q_stride + h * head_dim};
        merge(state, part, head_dim);
        state_max[i - i0] = state.max;
        state_sum[i - i0] = state.sum;
      }
    };
    if (a.kv.k8) {
      load_chunk(be, a.kv.v8 + off, start, count, head_dim, v32);
      run(ChunkRows<int8_t, float>{be, a.kv.k8 + off + start * head_dim, v32, a.kv.k_scale + head_row + start,
                                   a.kv.v_scale + head_row + start, head_dim});
    } else {
      load_chunk(be, a.kv.k16 + off, start, count, head_dim, k32);
      load_chunk(be, a.kv.v16 + off, start, count, head_dim, v32);
      run(ChunkRows<float, float>{be, k32, v32, nullptr, nullptr, head_dim});
    }
  }
  for (int64_t i = i0; i < i1; ++i) {
    float* o = a.out + i * q_stride + h * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) o[d] /= state_sum[i - i0];
  }
}

}  // namespace

void attention(const AttentionQuery* queries, int64_t count, int64_t heads, int64_t kv_heads,
               int64_t head_dim) {
  const int64_t group = heads / kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const Backend& be = active_backend();

  // One task list for every query of the step: (kv head, chunk) of each one-token query, whose
  // partials (one per query head of the group) are merged afterwards, and (head, query tile) of
  // each longer one.
  struct Task {
    int64_t query, h, index, slot;  // h: kv head (decode) or head; index: chunk or first token of
                                    // the tile; slot: the first of the group's partials, or -1
  };
  std::vector<Task> tasks;
  int64_t slots = 0;
  for (int64_t i = 0; i < count; ++i) {
    const AttentionQuery& a = queries[i];
    if (a.tokens == 1) {
      const int64_t chunks = a.first_position / ATTN_CHUNK + 1;
      for (int64_t g = 0; g < kv_heads; ++g)
        for (int64_t c = 0; c < chunks; ++c, slots += group) tasks.push_back({i, g, c, slots});
    } else {
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i0 = 0; i0 < a.tokens; i0 += ATTN_QUERY_TILE) tasks.push_back({i, h, i0, -1});
    }
  }
  QuantizedQueries qq{{}, {}, std::vector<int64_t>(count, -1), heads, head_dim};
  int64_t q8_rows = 0;
  for (int64_t i = 0; i < count; ++i)
    if (queries[i].kv.k8) {
      qq.first[i] = q8_rows;
      q8_rows += queries[i].tokens * heads;
    }
  qq.q8.resize(q8_rows * head_dim);
  qq.scale.resize(q8_rows);
  for (int64_t i = 0; i < count; ++i)  // q is finite: the matmul's input was checked
    if (qq.first[i] >= 0)
      quantize_rows(queries[i].q, queries[i].tokens * heads, head_dim, qq.q8.data() + qq.first[i] * head_dim,
                    qq.scale.data() + qq.first[i]);

  std::vector<float> acc(slots * head_dim), stats(slots * 2);
  parallel_for(static_cast<int64_t>(tasks.size()), [&](int64_t k) {
    const Task& t = tasks[k];
    const AttentionQuery& a = queries[t.query];
    if (t.slot < 0)
      prefill_tile(be, a, qq, t.query, t.h, t.index, heads, group, head_dim, scale);
    else
      decode_partials(be, a, qq, t.query, t.h, t.index, group, head_dim, scale, acc.data() + t.slot * head_dim,
                      stats.data() + 2 * t.slot);
  });
  if (!slots) return;

  // Each one-token query's heads: merge its chunks' partials, last chunk first (schedule order).
  std::vector<std::pair<int64_t, int64_t>> merges;  // (the kv head's chunk 0 task, query head of the group)
  for (int64_t k = 0; k < static_cast<int64_t>(tasks.size()); ++k)
    if (tasks[k].slot >= 0 && tasks[k].index == 0)
      for (int64_t j = 0; j < group; ++j) merges.push_back({k, j});
  parallel_for(static_cast<int64_t>(merges.size()), [&](int64_t m) {
    const Task& first = tasks[merges[m].first];
    const int64_t j = merges[m].second;
    const AttentionQuery& a = queries[first.query];
    const int64_t chunks = a.first_position / ATTN_CHUNK + 1;
    float* o = a.out + (first.h * group + j) * head_dim;
    std::fill(o, o + head_dim, 0.0f);
    Partial state{-std::numeric_limits<float>::infinity(), 0.0f, o};
    for (int64_t c = chunks - 1; c >= 0; --c) {
      const int64_t slot = first.slot + c * group + j;
      merge(state, Partial{stats[2 * slot], stats[2 * slot + 1], acc.data() + slot * head_dim}, head_dim);
    }
    for (int64_t d = 0; d < head_dim; ++d) o[d] /= state.sum;
  });
}

}  // namespace tellme
