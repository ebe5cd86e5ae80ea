#include "attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core.h"
#include "exp_approx.h"
#include "parallel.h"

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

// The backend's row arithmetic for each element type.
void dots(const Backend& be, const float* q, const float* r, int64_t c, int64_t n, float* o) { be.dots(q, r, n, c, n, o); }
void dots(const Backend& be, const float* q, const uint16_t* r, int64_t c, int64_t n, float* o) { be.dots_f16(q, r, n, c, n, o); }
void dots(const Backend& be, const float* q, const int8_t* r, int64_t c, int64_t n, float* o) { be.dots_i8(q, r, n, c, n, o); }
void axpys(const Backend& be, const float* p, const float* r, int64_t c, int64_t n, float* y) { be.axpys(p, r, n, c, n, y); }
void axpys(const Backend& be, const float* p, const uint16_t* r, int64_t c, int64_t n, float* y) { be.axpys_f16(p, r, n, c, n, y); }
void axpys(const Backend& be, const float* p, const int8_t* r, int64_t c, int64_t n, float* y) { be.axpys_i8(p, r, n, c, n, y); }

// Key/value rows of one chunk of one kv head: the cache's rows read in place (decode: each row is
// read once) or a converted fp32 copy (prefill: a tile of queries shares it). With q8 scales a
// score is dot(q, k8) * k_scale and a value row is weighted p * v_scale: the same bits whether the
// int8 rows are read in place or converted (exactly) first.
template <class E>
struct ChunkRows {
  const Backend& be;
  const E *k, *v;                    // the chunk's first row
  const float *k_scale, *v_scale;    // q8: the rows' scales; null otherwise
  int64_t head_dim;
  void dots(const float* q, int64_t count, float* out) const {
    tellme::dots(be, q, k, count, head_dim, out);
    if (k_scale)
      for (int64_t j = 0; j < count; ++j) out[j] *= k_scale[j];
  }
  void axpys(const float* p, int64_t count, float* acc) const {
    if (!v_scale) return tellme::axpys(be, p, v, count, head_dim, acc);
    float w[ATTN_CHUNK];
    for (int64_t j = 0; j < count; ++j) w[j] = p[j] * v_scale[j];
    tellme::axpys(be, w, v, count, head_dim, acc);
  }
};

// Converts rows [start, start + count) of one kv head (contiguous in the head-major cache) to fp32.
void load_chunk(const Backend& be, const uint16_t* head, int64_t start, int64_t count, int64_t head_dim, float* dst) {
  be.half_to_float(head + start * head_dim, count * head_dim, dst);
}
void load_chunk(const Backend&, const int8_t* head, int64_t start, int64_t count, int64_t head_dim, float* dst) {
  const int8_t* src = head + start * head_dim;
  for (int64_t i = 0; i < count * head_dim; ++i) dst[i] = static_cast<float>(src[i]);
}

// The partial of one query over `count` keys of a chunk.
template <class Rows>
void chunk_partial(const Rows& rows, const float* q, int64_t count, int64_t head_dim, float scale,
                   float* scores, Partial& part) {
  rows.dots(q, count, scores);
  for (int64_t j = 0; j < count; ++j) scores[j] *= scale;
  const float m = reduce8(scores, count, -std::numeric_limits<float>::infinity(),
                          [](float a, float b) { return std::max(a, b); });
  for (int64_t j = 0; j < count; ++j) scores[j] = softmax_exp(scores[j] - m);  // the softmax weights
  const float sum = reduce8(scores, count, 0.0f, [](float a, float b) { return a + b; });
  std::fill(part.acc, part.acc + head_dim, 0.0f);
  rows.axpys(scores, count, part.acc);
  part.max = m;
  part.sum = sum;
}

// Decode: the partial of one (head, chunk) of a one-token query.
void decode_partial(const Backend& be, const AttentionQuery& a, int64_t h, int64_t c, int64_t group,
                    int64_t head_dim, float scale, float* acc, float* stats) {
  const int64_t start = c * ATTN_CHUNK, count = std::min(ATTN_CHUNK, a.first_position + 1 - start);
  float scores[ATTN_CHUNK];
  const int64_t row = (h / group) * a.capacity + start, off = row * head_dim;
  Partial part{0, 0, acc};
  const float* q = a.q + h * head_dim;
  if (a.kv.k8)
    chunk_partial(ChunkRows<int8_t>{be, a.kv.k8 + off, a.kv.v8 + off, a.kv.k_scale + row, a.kv.v_scale + row, head_dim},
                  q, count, head_dim, scale, scores, part);
  else
    chunk_partial(ChunkRows<uint16_t>{be, a.kv.k16 + off, a.kv.v16 + off, nullptr, nullptr, head_dim}, q, count,
                  head_dim, scale, scores, part);
  stats[0] = part.max;
  stats[1] = part.sum;
}

// Prefill: one (head, query tile); it walks its chunks diagonal first.
void prefill_tile(const Backend& be, const AttentionQuery& a, int64_t h, int64_t i0, int64_t heads,
                  int64_t group, int64_t head_dim, float scale) {
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
  for (int64_t c = last / ATTN_CHUNK; c >= 0; --c) {
    const int64_t start = c * ATTN_CHUNK, count = std::min(ATTN_CHUNK, last + 1 - start);
    const bool q8 = a.kv.k8;
    if (q8) {
      load_chunk(be, a.kv.k8 + off, start, count, head_dim, kv.data());
      load_chunk(be, a.kv.v8 + off, start, count, head_dim, kv.data() + ATTN_CHUNK * head_dim);
    } else {
      load_chunk(be, a.kv.k16 + off, start, count, head_dim, kv.data());
      load_chunk(be, a.kv.v16 + off, start, count, head_dim, kv.data() + ATTN_CHUNK * head_dim);
    }
    const ChunkRows<float> rows{be, kv.data(), kv.data() + ATTN_CHUNK * head_dim,
                                q8 ? a.kv.k_scale + head_row + start : nullptr,
                                q8 ? a.kv.v_scale + head_row + start : nullptr, head_dim};
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t position = a.first_position + i;
      if (position < start) continue;  // this chunk is entirely in the query's future
      const int64_t visible = std::min(count, position + 1 - start);
      Partial part{0, 0, part_acc.data()};
      chunk_partial(rows, a.q + i * q_stride + h * head_dim, visible, head_dim, scale, scores.data(), part);
      Partial state{state_max[i - i0], state_sum[i - i0], a.out + i * q_stride + h * head_dim};
      merge(state, part, head_dim);
      state_max[i - i0] = state.max;
      state_sum[i - i0] = state.sum;
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

  // One task list for every query of the step: (head, chunk) of each one-token query, whose
  // partials are merged afterwards, and (head, query tile) of each longer one.
  struct Task {
    int64_t query, h, index, slot;  // index: chunk or first token of the tile; slot: partial, or -1
  };
  std::vector<Task> tasks;
  int64_t slots = 0;
  for (int64_t i = 0; i < count; ++i) {
    const AttentionQuery& a = queries[i];
    if (a.tokens == 1) {
      const int64_t chunks = a.first_position / ATTN_CHUNK + 1;
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t c = 0; c < chunks; ++c) tasks.push_back({i, h, c, slots++});
    } else {
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i0 = 0; i0 < a.tokens; i0 += ATTN_QUERY_TILE) tasks.push_back({i, h, i0, -1});
    }
  }
  std::vector<float> acc(slots * head_dim), stats(slots * 2);
  parallel_for(static_cast<int64_t>(tasks.size()), [&](int64_t k) {
    const Task& t = tasks[k];
    const AttentionQuery& a = queries[t.query];
    if (t.slot < 0)
      prefill_tile(be, a, t.h, t.index, heads, group, head_dim, scale);
    else
      decode_partial(be, a, t.h, t.index, group, head_dim, scale, acc.data() + t.slot * head_dim,
                     stats.data() + 2 * t.slot);
  });
  if (!slots) return;

  // Each one-token query's heads: merge its chunks' partials, last chunk first (schedule order).
  std::vector<int64_t> merges;  // index of the (query, head)'s chunk 0 task
  for (int64_t k = 0; k < static_cast<int64_t>(tasks.size()); ++k)
    if (tasks[k].slot >= 0 && tasks[k].index == 0) merges.push_back(k);
  parallel_for(static_cast<int64_t>(merges.size()), [&](int64_t m) {
    const Task& first = tasks[merges[m]];
    const AttentionQuery& a = queries[first.query];
    const int64_t chunks = a.first_position / ATTN_CHUNK + 1;
    float* o = a.out + first.h * head_dim;
    std::fill(o, o + head_dim, 0.0f);
    Partial state{-std::numeric_limits<float>::infinity(), 0.0f, o};
    for (int64_t c = chunks - 1; c >= 0; --c) {
      const int64_t slot = first.slot + c;
      merge(state, Partial{stats[2 * slot], stats[2 * slot + 1], acc.data() + slot * head_dim}, head_dim);
    }
    for (int64_t d = 0; d < head_dim; ++d) o[d] /= state.sum;
  });
}

}  // namespace tellme
