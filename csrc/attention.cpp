#include "attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core.h"
#include "parallel.h"

namespace tellme {
namespace {

// exp for softmax weights (x <= 0). Weights below e^-69 (1e-30) are dropped: they cannot change
// a float sum of weights >= 1, and keeping them lets products with V become subnormal, which
// costs ~100 cycles per operation on common CPUs.
inline float softmax_exp(float x) { return x < -69.0f ? 0.0f : std::exp(x); }

struct Partial {  // softmax state over some keys: max score, sum of exp, exp-weighted values
  float max;
  float sum;
  float* acc;  // [head_dim]
};

// Merges `part` into `state` (both over disjoint key sets).
void merge(Partial& state, const Partial& part, int64_t head_dim) {
  const float m = std::max(state.max, part.max);
  const float a = state.max == -std::numeric_limits<float>::infinity() ? 0.0f : softmax_exp(state.max - m);
  const float b = softmax_exp(part.max - m);
  state.sum = state.sum * a + part.sum * b;
  for (int64_t d = 0; d < head_dim; ++d) state.acc[d] = state.acc[d] * a + part.acc[d] * b;
  state.max = m;
}

// Converts rows [start, start + count) of one kv head to fp32.
void load_chunk(const Backend& be, const uint16_t* cache, int64_t row_stride, int64_t start,
                int64_t count, int64_t head_dim, float* dst) {
  for (int64_t j = 0; j < count; ++j)
    be.half_to_float(cache + (start + j) * row_stride, head_dim, dst + j * head_dim);
}

// Key/value rows of one chunk: converted fp32 rows (prefill: a tile of queries shares them) or
// the fp16 cache rows read in place (decode: each row is read once).
struct F32Rows {
  const Backend& be;
  const float *k, *v;
  int64_t head_dim;
  float dot(const float* q, int64_t j) const { return be.dot(q, k + j * head_dim, head_dim); }
  void axpy(float p, int64_t j, float* acc) const { be.axpy(p, v + j * head_dim, head_dim, acc); }
};
struct F16Rows {
  const Backend& be;
  const uint16_t *k, *v;  // first row of the chunk
  int64_t stride, head_dim;
  float dot(const float* q, int64_t j) const { return be.dot_f16(q, k + j * stride, head_dim); }
  void axpy(float p, int64_t j, float* acc) const { be.axpy_f16(p, v + j * stride, head_dim, acc); }
};

// The partial of one query over `count` keys of a chunk.
template <class Rows>
void chunk_partial(const Rows& rows, const float* q, int64_t count, int64_t head_dim, float scale,
                   float* scores, Partial& part) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < count; ++j) {
    scores[j] = rows.dot(q, j) * scale;
    m = std::max(m, scores[j]);
  }
  float sum = 0.0f;
  std::fill(part.acc, part.acc + head_dim, 0.0f);
  for (int64_t j = 0; j < count; ++j) {
    const float p = softmax_exp(scores[j] - m);
    sum += p;
    rows.axpy(p, j, part.acc);
  }
  part.max = m;
  part.sum = sum;
}

}  // namespace

void attention(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t tokens,
               int64_t first_position, int64_t heads, int64_t kv_heads, int64_t head_dim, float* out) {
  const int64_t q_stride = heads * head_dim, kv_stride = kv_heads * head_dim;
  const int64_t group = heads / kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const Backend& be = active_backend();

  if (tokens == 1) {  // decode: one task per (head, chunk), merged per head in schedule order
    const int64_t position = first_position;
    const int64_t chunks = position / ATTN_CHUNK + 1;
    std::vector<float> acc(heads * chunks * head_dim), stats(heads * chunks * 2);
    parallel_for(heads * chunks, [&](int64_t task) {
      const int64_t h = task / chunks, c = task % chunks;
      const int64_t start = c * ATTN_CHUNK, count = std::min(ATTN_CHUNK, position + 1 - start);
      float scores[ATTN_CHUNK];
      const int64_t off = (h / group) * head_dim + start * kv_stride;
      Partial part{0, 0, acc.data() + task * head_dim};
      chunk_partial(F16Rows{be, k_cache + off, v_cache + off, kv_stride, head_dim}, q + h * head_dim,
                    count, head_dim, scale, scores, part);
      stats[2 * task] = part.max;
      stats[2 * task + 1] = part.sum;
    });
    parallel_for(heads, [&](int64_t h) {
      float* o = out + h * head_dim;
      std::fill(o, o + head_dim, 0.0f);
      Partial state{neg_inf, 0.0f, o};
      for (int64_t c = chunks - 1; c >= 0; --c) {
        const int64_t task = h * chunks + c;
        merge(state, Partial{stats[2 * task], stats[2 * task + 1], acc.data() + task * head_dim}, head_dim);
      }
      for (int64_t d = 0; d < head_dim; ++d) o[d] /= state.sum;
    });
    return;
  }

  // prefill: one task per (head, query tile); each walks its chunks diagonal first
  const int64_t tiles = (tokens + ATTN_QUERY_TILE - 1) / ATTN_QUERY_TILE;
  parallel_for(heads * tiles, [&](int64_t task) {
    const int64_t h = task / tiles, i0 = (task % tiles) * ATTN_QUERY_TILE;
    const int64_t i1 = std::min(tokens, i0 + ATTN_QUERY_TILE);
    thread_local std::vector<float> kv, scores, part_acc, state_max, state_sum;
    kv.resize(2 * ATTN_CHUNK * head_dim);
    scores.resize(ATTN_CHUNK);
    part_acc.resize(head_dim);
    state_max.assign(ATTN_QUERY_TILE, neg_inf);
    state_sum.assign(ATTN_QUERY_TILE, 0.0f);
    for (int64_t i = i0; i < i1; ++i) std::fill(out + i * q_stride + h * head_dim, out + i * q_stride + (h + 1) * head_dim, 0.0f);
    const int64_t off = (h / group) * head_dim;
    const int64_t last = first_position + i1 - 1;
    for (int64_t c = last / ATTN_CHUNK; c >= 0; --c) {
      const int64_t start = c * ATTN_CHUNK, count = std::min(ATTN_CHUNK, last + 1 - start);
      load_chunk(be, k_cache + off, kv_stride, start, count, head_dim, kv.data());
      load_chunk(be, v_cache + off, kv_stride, start, count, head_dim, kv.data() + ATTN_CHUNK * head_dim);
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t position = first_position + i;
        if (position < start) continue;  // this chunk is entirely in the query's future
        const int64_t visible = std::min(count, position + 1 - start);
        Partial part{0, 0, part_acc.data()};
        chunk_partial(F32Rows{be, kv.data(), kv.data() + ATTN_CHUNK * head_dim, head_dim},
                      q + i * q_stride + h * head_dim, visible, head_dim, scale, scores.data(), part);
        Partial state{state_max[i - i0], state_sum[i - i0], out + i * q_stride + h * head_dim};
        merge(state, part, head_dim);
        state_max[i - i0] = state.max;
        state_sum[i - i0] = state.sum;
      }
    }
    for (int64_t i = i0; i < i1; ++i) {
      float* o = out + i * q_stride + h * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) o[d] /= state_sum[i - i0];
    }
  });
}

}  // namespace tellme
