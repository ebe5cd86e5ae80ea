#pragma once
#include <cstdint>
#include <utility>

namespace tellme {

// The KV cache's formats: fp16 values, or int8 values with one scale per (kv head, position):
// amax / 127 of the row, as a linear's input is quantized. A position's row is quantized once,
// when its step writes it, so later tokens never change it (a per-block scale would, or clip).
enum class KVFormat { F16, Q8 };

// One layer of a sequence's cache: values [kv_heads, capacity, head_dim] (k16/v16 or k8/v8 by
// format) and, for q8, scales [kv_heads, capacity].
struct KVLayer {
  const uint16_t *k16 = nullptr, *v16 = nullptr;
  const int8_t *k8 = nullptr, *v8 = nullptr;
  const float *k_scale = nullptr, *v_scale = nullptr;
};

// Causal attention for `tokens` new queries at positions first_position + i, over the KV cache
// rows [0, first_position + tokens) of one layer (per kv head, row = position).
// q and out are [tokens, heads * head_dim]. GQA: query head h reads kv head h / (heads / kv_heads).
//
// Keys are visited in chunks of ATTN_CHUNK positions aligned to absolute positions, diagonal
// chunk first, then backwards (TeLLMe's reversed-reordered schedule), merging per-chunk softmax
// partials (max, sum, weighted values) online: memory O(N * d), no N x N score matrix. Prefill
// parallelises over (head, query tile); decode over (kv head, chunk) and merges the partials in the
// same order, so a token's output is bit-identical whether it was decoded or prefilled.
constexpr int64_t ATTN_CHUNK = 64;
constexpr int64_t ATTN_QUERY_TILE = 32;

struct AttentionQuery {
  const float* q;                       // [tokens, heads * head_dim]
  KVLayer kv;                           // one layer of the sequence's cache
  int64_t capacity, tokens, first_position;
  float* out;                           // [tokens, heads * head_dim]
};

// A chunk's scores s[0..n) to softmax weights in place, s = e^(s * scale - m) with m the max of
// s * scale (weights below e^-69 are 0); returns m and the sum of the weights, taken in 8 lanes
// (j mod 8) joined ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)). softmax_weights is the plain loop;
// softmax_weights_fast the same bits 8 wide where the CPU has AVX2 (attention uses it).
std::pair<float, float> softmax_weights(float* s, int64_t n, float scale);
std::pair<float, float> softmax_weights_fast(float* s, int64_t n, float scale);

// The queries of one step, each against its own cache, in one parallel region (plus one to merge
// decode partials): a batched step pays for two regions per layer, not two per sequence. Each
// query's result does not depend on the others.
void attention(const AttentionQuery* queries, int64_t count, int64_t heads, int64_t kv_heads,
               int64_t head_dim);

}  // namespace tellme
