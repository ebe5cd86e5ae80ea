#pragma once
#include <cstdint>

namespace tellme {

// Causal attention for `tokens` new queries at positions first_position + i, over the fp16 KV
// cache rows [0, first_position + tokens) of one layer (row = position, kv_heads * head_dim wide).
// q and out are [tokens, heads * head_dim]. GQA: query head h reads kv head h / (heads / kv_heads).
//
// Keys are visited in chunks of ATTN_CHUNK positions aligned to absolute positions, diagonal
// chunk first, then backwards (TeLLMe's reversed-reordered schedule), merging per-chunk softmax
// partials (max, sum, weighted values) online: memory O(N * d), no N x N score matrix. Prefill
// parallelises over (head, query tile); decode over (head, chunk) and merges the partials in the
// same order, so a token's output is bit-identical whether it was decoded or prefilled.
constexpr int64_t ATTN_CHUNK = 64;
constexpr int64_t ATTN_QUERY_TILE = 32;

void attention(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t tokens,
               int64_t first_position, int64_t heads, int64_t kv_heads, int64_t head_dim, float* out);

}  // namespace tellme
