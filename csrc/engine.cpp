#include "engine.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>

#include "attention.h"
#include "core.h"
#include "parallel.h"
#include "quantize.h"

namespace tellme {
namespace {

void run_linear(const Linear& l, const int8_t* act, int64_t tokens, const Output& out) {
  MatmulJob job{&l, nullptr, out};
  matmul_group(&job, 1, act, tokens);
}

Output to_f32(float* dst, const float* act_scale, Epilogue e) {
  Output o;
  o.f32 = dst;
  o.act_scale = act_scale;
  o.epilogue = e;
  return o;
}

Output to_f16(uint16_t* dst, const float* act_scale, const Rope& rope) {
  Output o;
  o.f16 = dst;
  o.act_scale = act_scale;
  o.rope = rope;
  return o;
}

// Quantizes rows of x (after RMSNorm when gamma is given); NaN or Inf means the model diverged.
void quantize_input(const float* x, const float* gamma, double eps, int64_t rows, int64_t cols,
                    int8_t* q, float* scale, const char* where) {
  const int64_t bad = gamma ? rmsnorm_quantize_rows(x, gamma, eps, rows, cols, q, scale)
                            : quantize_rows(x, rows, cols, q, scale);
  if (bad >= 0)
    throw std::runtime_error(std::string("non-finite activations at ") + where + " (token " +
                             std::to_string(bad) + " of the chunk)");
}

// Per-head RMSNorm, then RoPE on adjacent row pairs, for `n` tokens of `heads` heads, in place.
// The order of the matmul epilogue's RoPE.
void norm_rope_heads(float* x, int64_t n, int64_t heads, int64_t head_dim, const float* gamma, double eps,
                     const Rope& rope) {
  parallel_for(n, [&](int64_t t) {
    thread_local std::vector<float> y;
    y.resize(head_dim);
    const int64_t half = head_dim / 2, at = rope.positions[t] * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* row = x + (t * heads + h) * head_dim;
      rmsnorm_row(row, gamma, eps, head_dim, y.data());
      for (int64_t j = 0; j < half; ++j) {
        const float c = rope.cos[at + j], sn = rope.sin[at + j];
        const float x0 = y[2 * j], x1 = y[2 * j + 1];
        y[2 * j] = x0 * c - x1 * sn;
        y[2 * j + 1] = x1 * c + x0 * sn;
      }
      std::copy(y.begin(), y.end(), row);
    }
  });
}

}  // namespace

KVCache::KVCache(const EngineConfig& c, int64_t capacity_)
    : format(c.kv), capacity(capacity_), layers(c.layers), kv_heads(c.kv_heads), head_dim(c.head_dim) {
  // new[] without value-initialisation: pages are only touched as the cache fills
  const size_t rows = static_cast<size_t>(layers * kv_heads * capacity), n = rows * head_dim;
  if (format == KVFormat::Q8) {
    k8.reset(new int8_t[n]);
    v8.reset(new int8_t[n]);
    k_scale.reset(new float[rows]);
    v_scale.reset(new float[rows]);
  } else {
    k16.reset(new uint16_t[n]);
    v16.reset(new uint16_t[n]);
  }
}

KVLayer KVCache::layer(int64_t l) const {
  const int64_t rows = l * kv_heads * capacity, at = rows * head_dim;
  if (format == KVFormat::Q8) return {nullptr, nullptr, k8.get() + at, v8.get() + at, k_scale.get() + rows, v_scale.get() + rows};
  return {k16.get() + at, v16.get() + at, nullptr, nullptr, nullptr, nullptr};
}

void KVCache::store(int64_t l, int64_t position, int64_t count, const NewKV& kv, int64_t first) {
  const int64_t d = head_dim;
  for (int64_t i = 0; i < count; ++i)
    for (int64_t h = 0; h < kv_heads; ++h) {
      const int64_t from = (first + i) * kv_heads + h, to = (l * kv_heads + h) * capacity + position + i;
      if (format == KVFormat::Q8) {
        std::copy(kv.k8 + from * d, kv.k8 + (from + 1) * d, k8.get() + to * d);
        std::copy(kv.v8 + from * d, kv.v8 + (from + 1) * d, v8.get() + to * d);
        k_scale[to] = kv.k_scale[from];
        v_scale[to] = kv.v_scale[from];
      } else {
        std::copy(kv.k16 + from * d, kv.k16 + (from + 1) * d, k16.get() + to * d);
        std::copy(kv.v16 + from * d, kv.v16 + (from + 1) * d, v16.get() + to * d);
      }
    }
}

void KVCache::copy_prefix(const KVCache& src, int64_t count) {
  const int64_t d = head_dim;
  for (int64_t l = 0; l < layers; ++l)
    for (int64_t h = 0; h < kv_heads; ++h) {
      const int64_t from = (l * kv_heads + h) * src.capacity, to = (l * kv_heads + h) * capacity;
      if (format == KVFormat::Q8) {
        std::copy(src.k8.get() + from * d, src.k8.get() + (from + count) * d, k8.get() + to * d);
        std::copy(src.v8.get() + from * d, src.v8.get() + (from + count) * d, v8.get() + to * d);
        std::copy(src.k_scale.get() + from, src.k_scale.get() + from + count, k_scale.get() + to);
        std::copy(src.v_scale.get() + from, src.v_scale.get() + from + count, v_scale.get() + to);
      } else {
        std::copy(src.k16.get() + from * d, src.k16.get() + (from + count) * d, k16.get() + to * d);
        std::copy(src.v16.get() + from * d, src.v16.get() + (from + count) * d, v16.get() + to * d);
      }
    }
  filled = count;
}

Engine::Engine(const EngineConfig& c, std::vector<float> rope_cos, std::vector<float> rope_sin)
    : config(c), layers(c.layers), rope_cos_(std::move(rope_cos)), rope_sin_(std::move(rope_sin)) {}

void Engine::forward(const Segment* segments, int64_t count) {
  // Steps of at most MAX_STEP_TOKENS tokens; each segment's tokens go in order, one piece a step.
  std::vector<int64_t> done(count, 0);
  std::vector<Segment> step_segments;
  for (bool more = true; more;) {
    step_segments.clear();
    int64_t budget = MAX_STEP_TOKENS;
    more = false;
    for (int64_t i = 0; i < count; ++i) {
      const Segment& s = segments[i];
      const int64_t n = std::min(s.count - done[i], budget);
      if (n <= 0) {
        more |= done[i] < s.count;
        continue;
      }
      const bool last = done[i] + n == s.count;
      float* logits = !s.logits ? nullptr : s.all_logits ? s.logits + done[i] * config.vocab : last ? s.logits : nullptr;
      step_segments.push_back({s.cache, s.tokens + done[i], n, s.position + done[i], logits, s.all_logits});
      done[i] += n;
      budget -= n;
      more |= !last;
    }
    step(step_segments.data(), static_cast<int64_t>(step_segments.size()));
  }
}

void Engine::step(const Segment* segs, int64_t nsegs) {
  const EngineConfig& c = config;
  const int64_t qd = c.heads * c.head_dim, kvd = kv_dim();
  const int64_t widest = std::max({c.hidden, c.intermediate, qd});
  int64_t n = 0;
  for (int64_t s = 0; s < nsegs; ++s) n += segs[s].count;
  x_.resize(n * c.hidden);
  q_.resize(n * qd);
  attn_.resize(n * qd);
  ffn_.resize(n * c.intermediate);
  act_q_.resize(n * widest);
  act_scale_.resize(n);
  if (c.qk_norm || c.kv == KVFormat::Q8) k_f32_.resize(n * kvd);  // k normed or quantized after the matmul
  if (c.kv == KVFormat::Q8) {
    v_f32_.resize(n * kvd);
    k8_new_.resize(n * kvd);
    v8_new_.resize(n * kvd);
    k_scale_.resize(n * c.kv_heads);
    v_scale_.resize(n * c.kv_heads);
  } else {
    k_new_.resize(n * kvd);
    v_new_.resize(n * kvd);
  }
  positions_.resize(n);
  tokens_.resize(n);
  for (int64_t s = 0, t = 0; s < nsegs; ++s)
    for (int64_t i = 0; i < segs[s].count; ++i, ++t) {
      tokens_[t] = segs[s].tokens[i];
      positions_[t] = segs[s].position + i;
    }
  float* x = x_.data();
  int8_t* aq = act_q_.data();
  float* as = act_scale_.data();

  parallel_for(n, [&](int64_t t) {  // embedding rows, dequantized
    const int64_t id = tokens_[t];
    float* dst = x + t * c.hidden;
    if (embedding.f32) {
      std::copy(embedding.f32 + id * c.hidden, embedding.f32 + (id + 1) * c.hidden, dst);
    } else if (embedding.q6) {
      const float s = embedding.row_scale[id];
      const uint8_t* row = embedding.q6 + id * int6_row_bytes(c.hidden);
      for (int64_t i = 0; i < c.hidden; ++i)
        dst[i] = static_cast<float>(int6_code(row + i / INT6_BLOCK * INT6_BLOCK_BYTES, i % INT6_BLOCK) - 32) * s;
    } else {
      const float s = embedding.row_scale[id];
      const int8_t* src = embedding.q + id * c.hidden;
      for (int64_t i = 0; i < c.hidden; ++i) dst[i] = static_cast<float>(src[i]) * s;
    }
  });

  Rope rope{rope_cos_.data(), rope_sin_.data(), c.head_dim, positions_.data()};
  for (int64_t li = 0; li < c.layers; ++li) {
    const Layer& L = layers[li];
    quantize_input(x, L.attn_norm, c.eps, n, c.hidden, aq, as, "attention input");
    // q and k leave the matmul rotated, k and v as fp16; or in fp32, to be normed per head and
    // then rotated (qk_norm), or quantized (q8), here.
    const bool q8 = c.kv == KVFormat::Q8, k_f32 = c.qk_norm || q8;
    MatmulJob qkv[3] = {{&L.q, nullptr, to_f32(q_.data(), as, Epilogue::Store)},
                        {&L.k, nullptr, to_f32(k_f32_.data(), as, Epilogue::Store)},
                        {&L.v, nullptr, to_f32(v_f32_.data(), as, Epilogue::Store)}};
    if (!c.qk_norm) qkv[0].out.rope = qkv[1].out.rope = rope;
    if (!k_f32) qkv[1].out = to_f16(k_new_.data(), as, rope);
    if (!q8) qkv[2].out = to_f16(v_new_.data(), as, Rope{});
    matmul_group(qkv, 3, aq, n);
    if (c.qk_norm) {
      norm_rope_heads(q_.data(), n, c.heads, c.head_dim, L.q_norm, c.eps, rope);
      norm_rope_heads(k_f32_.data(), n, c.kv_heads, c.head_dim, L.k_norm, c.eps, rope);
      if (!q8) active_backend().float_to_half(k_f32_.data(), n * kvd, k_new_.data());
    }
    if (q8) {  // each (token, kv head) row quantized as a linear's input is
      quantize_input(k_f32_.data(), nullptr, c.eps, n * c.kv_heads, c.head_dim, k8_new_.data(), k_scale_.data(), "keys");
      quantize_input(v_f32_.data(), nullptr, c.eps, n * c.kv_heads, c.head_dim, v8_new_.data(), v_scale_.data(), "values");
    }
    const NewKV fresh{k_new_.data(), v_new_.data(), k8_new_.data(), v8_new_.data(), k_scale_.data(), v_scale_.data()};

    queries_.clear();
    for (int64_t s = 0, t = 0; s < nsegs; t += segs[s].count, ++s) {  // each sequence: its own cache
      const Segment& g = segs[s];
      g.cache->store(li, g.position, g.count, fresh, t);
      queries_.push_back({q_.data() + t * qd, g.cache->layer(li), g.cache->capacity, g.count, g.position, attn_.data() + t * qd});
    }
    const auto start = std::chrono::steady_clock::now();
    attention(queries_.data(), nsegs, c.heads, c.kv_heads, c.head_dim);
    attention_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
    quantize_input(attn_.data(), L.attn_sub_norm, c.eps, n, qd, aq, as, "o_proj input");
    run_linear(L.o, aq, n, to_f32(x, as, Epilogue::Add));

    quantize_input(x, L.ffn_norm, c.eps, n, c.hidden, aq, as, "FFN input");
    MatmulJob gated{&L.gate, &L.up, to_f32(ffn_.data(), as, Epilogue::Gated)};
    gated.out.activation = c.activation;
    matmul_group(&gated, 1, aq, n);
    quantize_input(ffn_.data(), L.ffn_sub_norm, c.eps, n, c.intermediate, aq, as, "down_proj input");
    run_linear(L.down, aq, n, to_f32(x, as, Epilogue::Add));
  }

  // The LM head once for every row whose logits are wanted (its weights read once per step).
  int64_t rows = 0;
  for (int64_t s = 0; s < nsegs; ++s)
    if (segs[s].logits) rows += segs[s].all_logits ? segs[s].count : 1;
  if (!rows) return;
  head_in_.resize(rows * c.hidden);
  logits_.resize(rows * c.vocab);
  int64_t r = 0;
  for (int64_t s = 0, t = 0; s < nsegs; t += segs[s].count, ++s) {
    if (!segs[s].logits) continue;
    const int64_t first = segs[s].all_logits ? t : t + segs[s].count - 1, last = t + segs[s].count;
    std::copy(x + first * c.hidden, x + last * c.hidden, head_in_.data() + r * c.hidden);
    r += last - first;
  }
  head(head_in_.data(), rows, logits_.data());
  r = 0;
  for (int64_t s = 0; s < nsegs; ++s) {
    if (!segs[s].logits) continue;
    const int64_t k = segs[s].all_logits ? segs[s].count : 1;
    std::copy(logits_.data() + r * c.vocab, logits_.data() + (r + k) * c.vocab, segs[s].logits);
    r += k;
  }
}

int64_t int6_head_input(const int8_t* x, int64_t n, int64_t k, std::vector<int8_t>& padded,
                        std::vector<int32_t>& sums) {
  const int64_t k_pad = round_up(k, INT6_BLOCK);
  padded.assign(n * k_pad, 0);
  sums.assign(n, 0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < k; ++i) {
      padded[t * k_pad + i] = x[t * k + i];
      sums[t] += x[t * k + i];
    }
  return k_pad;
}

// The integer heads: blocks of rows for every token (the head is read once a step), each block's
// exact sums from `sums(r0, rows, acc)` scaled by the token's and the row's scale.
template <class Sums>
void Engine::head_rows(int64_t n, float* logits, Sums&& sums) {
  constexpr int64_t ROWS_PER_TASK = 256;
  const int64_t vocab = config.vocab, tasks = (vocab + ROWS_PER_TASK - 1) / ROWS_PER_TASK;
  parallel_for(tasks, [&](int64_t task) {
    const int64_t r0 = task * ROWS_PER_TASK, rows = std::min(ROWS_PER_TASK, vocab - r0);
    thread_local std::vector<int32_t> acc;
    acc.resize(n * rows);
    sums(r0, rows, acc.data());
    for (int64_t t = 0; t < n; ++t) {
      float* out = logits + t * vocab + r0;
      const float s = act_scale_[t];
      for (int64_t r = 0; r < rows; ++r) out[r] = static_cast<float>(acc[t * rows + r]) * (s * lm_head.row_scale[r0 + r]);
    }
  });
}

// Final RMSNorm and LM head. int8 head: the normed row is quantized like a linear's input and
// multiplied with the int8 or 6-bit rows; fp32 head: plain dot products.
void Engine::head(const float* x, int64_t n, float* logits) {
  const EngineConfig& c = config;
  const Backend& be = active_backend();
  if (lm_head.q || lm_head.q6) {
    quantize_input(x, final_norm, c.eps, n, c.hidden, act_q_.data(), act_scale_.data(), "LM head input");
    if (lm_head.q) {
      head_rows(n, logits, [&](int64_t r0, int64_t rows, int32_t* acc) {
        be.int8_gemm(lm_head.q + r0 * c.hidden, rows, c.hidden, act_q_.data(), n, acc);
      });
      return;
    }
    const int64_t k_pad = int6_head_input(act_q_.data(), n, c.hidden, head_q_, head_sums_);
    head_rows(n, logits, [&](int64_t r0, int64_t rows, int32_t* acc) {
      be.int6_gemm(lm_head.q6 + r0 * int6_row_bytes(c.hidden), rows, k_pad, head_q_.data(), head_sums_.data(), n, acc);
    });
    return;
  }
  std::vector<float> normed(n * c.hidden);
  parallel_for(n, [&](int64_t t) {
    rmsnorm_row(x + t * c.hidden, final_norm, c.eps, c.hidden, normed.data() + t * c.hidden);
  });
  const int64_t tasks = (c.vocab + 255) / 256;
  parallel_for(tasks, [&](int64_t task) {
    const int64_t r0 = task * 256, r1 = std::min(c.vocab, r0 + 256);
    for (int64_t t = 0; t < n; ++t)
      be.dots(normed.data() + t * c.hidden, 1, lm_head.f32 + r0 * c.hidden, c.hidden, r1 - r0, c.hidden,
              logits + t * c.vocab + r0);
  });
}

}  // namespace tellme
