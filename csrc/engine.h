// The transformer forward pass of every supported architecture (BitNet b1.58 2B-4T, 1bitLLM
// BitnetForCausalLM, LLaMA and Qwen3 with ternary linears): pre-norm decoder layers with optional
// sub-norms before o_proj and down_proj, optional per-head RMSNorm of q and k before RoPE
// (Qwen3), GQA, RoPE, SiLU or ReLU^2 gated FFN.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "attention.h"
#include "matmul.h"

namespace tellme {

struct Layer {
  const float* attn_norm = nullptr;
  const float* attn_sub_norm = nullptr;  // null when !sub_norms
  const float* ffn_norm = nullptr;
  const float* ffn_sub_norm = nullptr;
  const float* q_norm = nullptr;         // [head_dim], in the rows' RoPE-pair order; null when !qk_norm
  const float* k_norm = nullptr;
  Linear q, k, v, o, gate, up, down;     // q and k rows: RoPE pairs made adjacent per head
};

struct Rows {  // embedding table or LM head: int8 or 6-bit rows with per-row scales, or fp32 rows
  const int8_t* q = nullptr;
  const uint8_t* q6 = nullptr;  // 6-bit rows (core.h), hidden padded to INT6_BLOCK
  const float* row_scale = nullptr;
  const float* f32 = nullptr;
};

// The input of a 6-bit head (Backend::int6_gemm): n rows of k int8 values padded with zeros to
// whole blocks, and each row's sum. Returns the padded length.
int64_t int6_head_input(const int8_t* x, int64_t n, int64_t k, std::vector<int8_t>& padded,
                        std::vector<int32_t>& sums);

struct EngineConfig {
  int64_t hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t vocab = 0, context = 0;
  double eps = 1e-5;
  Activation activation = Activation::SiLU;
  bool sub_norms = true;  // RMSNorm before o_proj and down_proj (BitNet); LLaMA has none
  bool qk_norm = false;   // RMSNorm of each head of q and k before RoPE (Qwen3)
  KVFormat kv = KVFormat::F16;
};

// A step's new keys and values, [tokens, kv_heads, head_dim] in the cache's format (and q8's scales
// [tokens, kv_heads]).
struct NewKV {
  const uint16_t *k16, *v16;
  const int8_t *k8, *v8;
  const float *k_scale, *v_scale;
};

// One sequence's keys and values: [layers, kv_heads, capacity, head_dim] each, fp16 or int8 (with
// q8's scales [layers, kv_heads, capacity]). Head-major: attention reads one head's rows as one
// contiguous run, which the hardware prefetches. Allocated without being touched, so memory is
// committed only as positions fill.
struct KVCache {
  KVCache(const EngineConfig& c, int64_t capacity);
  KVFormat format;
  int64_t capacity, layers, kv_heads, head_dim;
  int64_t filled = 0;  // positions [0, filled) hold keys and values written by a completed step
  std::unique_ptr<uint16_t[]> k16, v16;
  std::unique_ptr<int8_t[]> k8, v8;
  std::unique_ptr<float[]> k_scale, v_scale;
  KVLayer layer(int64_t l) const;
  // Writes `count` rows of `kv` (from row `first` on) at positions [position, position + count) of layer l.
  void store(int64_t l, int64_t position, int64_t count, const NewKV& kv, int64_t first);
  // Positions [0, count) of every layer copied from `src` (same engine, count <= src.filled).
  void copy_prefix(const KVCache& src, int64_t count);
};

// One sequence's part of a batched step: `count` tokens at positions [position, position + count).
struct Segment {
  KVCache* cache;
  const int32_t* tokens;
  int64_t count;
  int64_t position;
  float* logits;     // [count or 1, vocab] (all_logits or the last token), or null for none
  bool all_logits;
};

// The weights (read-only, shared by every sequence) and the forward pass. Not reentrant: the
// scratch buffers are the engine's, so callers serialise forward() (the binding holds a mutex).
class Engine {
 public:
  Engine(const EngineConfig& config, std::vector<float> rope_cos, std::vector<float> rope_sin);

  EngineConfig config;
  std::vector<Layer> layers;
  Rows embedding, lm_head;
  const float* final_norm = nullptr;

  // Runs every segment's tokens through all layers in one pass: the linears see all tokens of the
  // step together (each weight is read once), attention runs per sequence against its own cache.
  // A sequence's results do not depend on what else is in the batch (per-token quantization,
  // exact integer matmuls). Long segments are cut into steps of at most MAX_STEP_TOKENS tokens.
  void forward(const Segment* segments, int64_t count);
  int64_t cache_bytes_per_position() const {
    const int64_t row = config.kv == KVFormat::Q8 ? config.head_dim + 4 : 2 * config.head_dim;
    return 2 * config.layers * config.kv_heads * row;
  }

  static constexpr int64_t MAX_STEP_TOKENS = 256;  // bounds the scratch memory for long prompts
  std::atomic<int64_t> attention_ns{0};  // wall time inside attention(), summed over every step (bench/depth.py)

 private:
  int64_t kv_dim() const { return config.kv_heads * config.head_dim; }
  void step(const Segment* segments, int64_t count);
  void head(const float* x, int64_t n, float* logits);
  template <class Sums>
  void head_rows(int64_t n, float* logits, Sums&& sums);

  std::vector<float> rope_cos_, rope_sin_;                   // [context, head_dim / 2]
  std::vector<float> x_, q_, attn_, ffn_, act_scale_, head_in_, logits_;  // scratch, grown on demand
  std::vector<uint16_t> k_new_, v_new_;  // f16 cache: the step's new rows
  std::vector<int8_t> k8_new_, v8_new_;  // q8 cache: the same quantized, with their scales
  std::vector<float> k_scale_, v_scale_;
  std::vector<float> k_f32_, v_f32_;     // k before its norm (qk_norm) or its quantization (q8); v too
  std::vector<int64_t> positions_;
  std::vector<int32_t> tokens_;
  std::vector<int8_t> act_q_, head_q_;  // head_q_: the head's input padded for 6-bit rows
  std::vector<int32_t> head_sums_;
  std::vector<AttentionQuery> queries_;
};

}  // namespace tellme
