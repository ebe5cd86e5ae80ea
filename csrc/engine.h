// The transformer forward pass of every supported architecture (BitNet b1.58 2B-4T, 1bitLLM
// BitnetForCausalLM, LLaMA with ternary linears): pre-norm decoder layers with optional
// sub-norms before o_proj and down_proj, GQA, RoPE, SiLU or ReLU^2 gated FFN.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "matmul.h"

namespace tellme {

struct Layer {
  const float* attn_norm = nullptr;
  const float* attn_sub_norm = nullptr;  // null when !sub_norms
  const float* ffn_norm = nullptr;
  const float* ffn_sub_norm = nullptr;
  Linear q, k, v, o, gate, up, down;     // q and k rows: RoPE pairs made adjacent per head
};

struct Rows {  // embedding table or LM head: int8 rows with per-row scales, or fp32 rows
  const int8_t* q = nullptr;
  const float* row_scale = nullptr;
  const float* f32 = nullptr;
};

struct EngineConfig {
  int64_t hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t vocab = 0, context = 0;
  double eps = 1e-5;
  Activation activation = Activation::SiLU;
  bool sub_norms = true;  // RMSNorm before o_proj and down_proj (BitNet); LLaMA has none
};

class Engine {
 public:
  Engine(const EngineConfig& config, std::vector<float> rope_cos, std::vector<float> rope_sin);

  EngineConfig config;
  std::vector<Layer> layers;
  Rows embedding, lm_head;
  const float* final_norm = nullptr;

  // Runs `tokens` at positions [position, position + count), writing their K/V to the cache, and
  // the logits of the last token (or of every token when all_logits) to logits [*, vocab].
  void forward(const int32_t* tokens, int64_t count, int64_t position, bool all_logits, float* logits);
  int64_t cache_bytes() const { return 2 * config.layers * config.context * kv_dim() * 2; }

 private:
  static constexpr int64_t PREFILL_CHUNK = 256;  // bounds the scratch memory for long prompts
  int64_t kv_dim() const { return config.kv_heads * config.head_dim; }
  void forward_chunk(const int32_t* tokens, int64_t count, int64_t position, bool all_logits, float* logits);
  void head(const float* x, int64_t count, float* logits);

  std::vector<float> rope_cos_, rope_sin_;                   // [context, head_dim / 2]
  std::unique_ptr<uint16_t[]> k_cache_, v_cache_;            // fp16 [layers, context, kv_dim]
  std::vector<float> x_, q_, attn_, ffn_, act_scale_;        // scratch, grown on demand
  std::vector<int8_t> act_q_;
};

}  // namespace tellme
