// Python boundary of the engine (class tellme._core.Engine). Every tensor is checked against the
// engine's configuration when it is attached; forward() refuses until all of them are present.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>

#include "bindings.h"
#include "engine.h"
#include "exp_approx.h"

namespace tellme::bind {
namespace {

// The integer heads take quantized activations, in [-127, 127] (the int8 head's `sign` trick
// cannot negate -128).
void check_head_input(const int8_t* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (x[i] == -128) throw nb::value_error("x must be in [-127, 127]");
}

struct BoundEngine;

// One sequence's KV cache (class tellme._core.KVCache), made for one engine.
struct BoundCache {
  const BoundEngine* owner;
  std::unique_ptr<KVCache> cache;
};

struct BoundEngine {
  Engine engine;
  std::mutex busy;                     // forward() uses the engine's scratch: one call at a time
  std::vector<nb::object> keep_alive;  // the arrays the engine points into (often memory-mapped)
  std::vector<std::string> missing;    // names not attached yet
  int64_t group = 0;                   // group size of grouped linears (one per engine)

  BoundEngine(const EngineConfig& c, std::vector<float> cos, std::vector<float> sin)
      : engine(c, std::move(cos), std::move(sin)) {
    for (int64_t l = 0; l < c.layers; ++l) {
      for (const char* n : {"attn_norm", "ffn_norm", "q", "k", "v", "o", "gate", "up", "down"})
        missing.push_back("layer " + std::to_string(l) + " " + n);
      if (c.sub_norms)
        for (const char* n : {"attn_sub_norm", "ffn_sub_norm"})
          missing.push_back("layer " + std::to_string(l) + " " + n);
      if (c.qk_norm)
        for (const char* n : {"q_norm", "k_norm"}) missing.push_back("layer " + std::to_string(l) + " " + n);
    }
    for (const char* n : {"embedding", "lm_head", "final_norm"}) missing.push_back(n);
  }

  void attached(const std::string& what, const Array& a) {
    keep_alive.push_back(nb::cast(a));
    for (size_t i = 0; i < missing.size(); ++i)
      if (missing[i] == what) { missing.erase(missing.begin() + i); break; }
  }

  // A checked segment: the cache is this engine's, the ids in the vocabulary, the positions in the cache.
  Segment segment(BoundCache& cache, const Array& tokens, int64_t position, const char* what) {
    const EngineConfig& c = engine.config;
    if (cache.owner != this) throw nb::value_error("this KV cache belongs to another engine");
    const int32_t* ids = checked<int32_t>(tokens, what, {-1});
    const int64_t n = static_cast<int64_t>(tokens.shape(0));
    if (n < 1) throw nb::value_error((std::string(what) + " must hold at least one token").c_str());
    for (int64_t i = 0; i < n; ++i)
      if (ids[i] < 0 || ids[i] >= c.vocab)
        throw nb::value_error(("token id " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                               " is outside the vocabulary [0, " + std::to_string(c.vocab) + ")").c_str());
    if (position < 0 || position + n > cache.cache->capacity)
      throw nb::value_error(("positions " + std::to_string(position) + ".." + std::to_string(position + n) +
                             " exceed the context of " + std::to_string(cache.cache->capacity) + " tokens").c_str());
    const int64_t filled = cache.cache->filled;  // attention would read the positions in between
    if (position > filled)
      throw nb::value_error(("position " + std::to_string(position) + " would leave positions " +
                             std::to_string(filled) + ".." + std::to_string(position - 1) +
                             " of this sequence unwritten (its cache holds [0, " + std::to_string(filled) +
                             ")): run them first").c_str());
    return {cache.cache.get(), ids, n, position, nullptr, false};
  }

  void run(const Segment* segs, int64_t n) {
    if (!missing.empty())
      throw nb::value_error(("model incomplete: " + missing.front() + " was not set").c_str());
    nb::gil_scoped_release release;     // then wait for the engine: never hold the GIL while waiting
    std::lock_guard<std::mutex> lock(busy);
    // What a step leaves valid: [0, position) while it runs (a failure may stop it midway), then
    // [0, position + count); later positions of a rewound sequence are stale.
    for (int64_t i = 0; i < n; ++i) segs[i].cache->filled = std::min(segs[i].cache->filled, segs[i].position);
    engine.forward(segs, n);            // runtime_error -> RuntimeError
    for (int64_t i = 0; i < n; ++i) segs[i].cache->filled = segs[i].position + segs[i].count;
  }

  Layer& layer(int64_t l) {
    if (l < 0 || l >= engine.config.layers)
      throw nb::index_error(("layer " + std::to_string(l) + " out of range").c_str());
    return engine.layers[l];
  }
};

KVFormat parse_kv_format(const std::string& kv) {
  if (kv == "q8") return KVFormat::Q8;
  if (kv != "f16") throw nb::value_error(("unsupported KV cache format '" + kv + "' (expected f16 or q8)").c_str());
  return KVFormat::F16;
}

Activation parse_activation(const std::string& activation) {
  if (activation == "relu2") return Activation::ReLU2;
  if (activation != "silu")
    throw nb::value_error(("unsupported activation '" + activation + "' (expected silu or relu2)").c_str());
  return Activation::SiLU;
}

EngineConfig make_config(int64_t hidden, int64_t intermediate, int64_t layers, int64_t heads,
                         int64_t kv_heads, int64_t head_dim, int64_t vocab, int64_t context,
                         double eps, const std::string& activation, bool sub_norms, bool qk_norm) {
  EngineConfig c{hidden, intermediate, layers, heads, kv_heads, head_dim, vocab, context, eps,
                 parse_activation(activation), sub_norms, qk_norm};
  for (auto [v, n] : {std::pair{hidden, "hidden"}, {intermediate, "intermediate"}, {layers, "layers"},
                      {heads, "heads"}, {kv_heads, "kv_heads"}, {head_dim, "head_dim"},
                      {vocab, "vocab"}, {context, "context"}})
    if (v < 1) throw nb::value_error((std::string(n) + " must be positive").c_str());
  if (heads % kv_heads) throw nb::value_error("heads must be a multiple of kv_heads");
  if (head_dim % 2) throw nb::value_error("head_dim must be even (RoPE rotates pairs)");
  if (!(eps > 0.0)) throw nb::value_error("eps must be positive");
  return c;
}

}  // namespace

void bind_engine(nb::module_& m) {
  nb::class_<BoundCache>(m, "KVCache", "One sequence's keys and values, for positions [0, capacity).")
      .def("__init__", [](BoundCache* self, const BoundEngine& e, int64_t capacity) {
        if (capacity < 1 || capacity > e.engine.config.context)
          throw nb::value_error(("KV cache capacity " + std::to_string(capacity) + " must be in [1, " +
                                 std::to_string(e.engine.config.context) + "] (the engine's context)").c_str());
        new (self) BoundCache{&e, std::make_unique<KVCache>(e.engine.config, capacity)};
      }, nb::arg("engine"), nb::arg("capacity"), nb::keep_alive<1, 2>())  // the cache keeps its engine
      .def_prop_ro("capacity", [](const BoundCache& c) { return c.cache->capacity; })
      .def("copy_prefix", [](BoundCache& self, const BoundCache& src, int64_t count) {
        if (src.owner != self.owner) throw nb::value_error("the source KV cache belongs to another engine");
        if (&src == &self) throw nb::value_error("a KV cache cannot copy from itself");
        if (count < 0 || count > src.cache->filled || count > self.cache->capacity)
          throw nb::value_error(("cannot copy " + std::to_string(count) + " positions: the source holds [0, " +
                                 std::to_string(src.cache->filled) + "), this cache has room for " +
                                 std::to_string(self.cache->capacity)).c_str());
        nb::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(const_cast<BoundEngine*>(self.owner)->busy);  // no step is writing either
        self.cache->copy_prefix(*src.cache, count);
      }, nb::arg("src"), nb::arg("count"),
         "Positions [0, count) of `src` (a cache of the same engine holding them) copied here: a shared prefix "
         "without running it again.");


  nb::class_<BoundEngine>(m, "Engine", "Native transformer: weights, KV cache and the forward pass.")
      .def("__init__", [](BoundEngine* self, int64_t hidden, int64_t intermediate, int64_t layers,
                          int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t vocab,
                          int64_t context, double eps, const std::string& activation,
                          bool sub_norms, const Array& rope_cos, const Array& rope_sin, bool qk_norm,
                          const std::string& kv) {
        EngineConfig c = make_config(hidden, intermediate, layers, heads, kv_heads, head_dim,
                                     vocab, context, eps, activation, sub_norms, qk_norm);
        c.kv = parse_kv_format(kv);
        const float* cp = checked<float>(rope_cos, "rope_cos", {context, head_dim / 2});
        const float* sp = checked<float>(rope_sin, "rope_sin", {context, head_dim / 2});
        const size_t n = static_cast<size_t>(context * head_dim / 2);
        new (self) BoundEngine(c, std::vector<float>(cp, cp + n), std::vector<float>(sp, sp + n));
      }, nb::arg("hidden"), nb::arg("intermediate"), nb::arg("layers"), nb::arg("heads"),
         nb::arg("kv_heads"), nb::arg("head_dim"), nb::arg("vocab"), nb::arg("context"),
         nb::arg("eps"), nb::arg("activation"), nb::arg("sub_norms"), nb::arg("rope_cos"), nb::arg("rope_sin"),
         nb::arg("qk_norm") = false, nb::arg("kv") = "f16")
      .def("set_linear", [](BoundEngine& e, int64_t l, const std::string& name, const std::string& kernel,
                            const Array& data, std::optional<Array> neg_count, float scale,
                            std::optional<Array> group_scale, int64_t group) {
        const EngineConfig& c = e.engine.config;
        Layer& L = e.layer(l);
        const int64_t qd = c.heads * c.head_dim, kvd = c.kv_heads * c.head_dim;
        struct Slot { const char* name; Linear* lin; int64_t out, in; };
        const Slot slots[] = {{"q", &L.q, qd, c.hidden}, {"k", &L.k, kvd, c.hidden},
                              {"v", &L.v, kvd, c.hidden}, {"o", &L.o, c.hidden, qd},
                              {"gate", &L.gate, c.intermediate, c.hidden},
                              {"up", &L.up, c.intermediate, c.hidden},
                              {"down", &L.down, c.hidden, c.intermediate}};
        const Slot* slot = nullptr;
        for (const Slot& s : slots) if (name == s.name) slot = &s;
        if (!slot) throw nb::value_error(("unknown linear '" + name + "'").c_str());
        const std::string what = "layer " + std::to_string(l) + " " + name;
        const int64_t out_f = slot->out, in_f = slot->in;  // the layout is checked against these
        if (!std::isfinite(scale)) throw nb::value_error((what + " has a non-finite scale").c_str());
        Linear lin;
        lin.scale = scale;
        if (kernel == "tlmm") {
          if (!neg_count) throw nb::value_error((what + ": tlmm weights need neg_count").c_str());
          lin.tlmm = check_tlmm(data, *neg_count, out_f, in_f);
          e.keep_alive.push_back(nb::cast(*neg_count));
        } else if (kernel == "i2") {
          lin.is_tlmm = false;
          lin.i2 = check_i2(data, out_f, in_f);
          if (group_scale) {  // one group size per engine: matmul_group prepares one grouping per call
            if (e.group && group != e.group)
              throw nb::value_error((what + ": group size " + std::to_string(group) + " differs from the model's " +
                                     std::to_string(e.group)).c_str());
            lin.group_scale = check_group_scale(*group_scale, group, lin.i2);
            lin.group = e.group = group;
            lin.scale = 1.0f;
            e.keep_alive.push_back(nb::cast(*group_scale));
          }
        } else {
          throw nb::value_error(("unknown kernel '" + kernel + "'").c_str());
        }
        *slot->lin = lin;
        e.attached(what, data);
      }, nb::arg("layer"), nb::arg("name"), nb::arg("kernel"), nb::arg("data"),
         nb::arg("neg_count").none(), nb::arg("scale"), nb::arg("group_scale").none() = nb::none(),
         nb::arg("group") = 0)
      .def("weight_address", [](BoundEngine& e, int64_t l, const std::string& name) {
        Layer& L = e.layer(l);
        const std::pair<const char*, const Linear*> all[] = {{"q", &L.q}, {"k", &L.k}, {"v", &L.v}, {"o", &L.o},
                                                             {"gate", &L.gate}, {"up", &L.up}, {"down", &L.down}};
        for (auto [n, lin] : all)
          if (name == n)
            return reinterpret_cast<uintptr_t>(lin->is_tlmm ? static_cast<const void*>(lin->tlmm.tiles)
                                                             : static_cast<const void*>(lin->i2.codes));
        throw nb::value_error(("unknown linear '" + name + "'").c_str());
      }, nb::arg("layer"), nb::arg("name"),
         "Where the engine reads linear `name` of `layer` from (a test shows mapped weights are used in place).")
      .def("set_norm", [](BoundEngine& e, int64_t l, const std::string& name, const Array& gamma) {
        const EngineConfig& c = e.engine.config;
        if (name == "final_norm") {
          e.engine.final_norm = checked<float>(gamma, "final_norm", {c.hidden});
          e.attached(name, gamma);
          return;
        }
        Layer& L = e.layer(l);
        const std::string what = "layer " + std::to_string(l) + " " + name;
        const float** slot;
        int64_t dim = c.hidden;
        if (name == "attn_norm") slot = &L.attn_norm;
        else if (name == "ffn_norm") slot = &L.ffn_norm;
        else if (name == "attn_sub_norm") { slot = &L.attn_sub_norm; dim = c.heads * c.head_dim; }
        else if (name == "ffn_sub_norm") { slot = &L.ffn_sub_norm; dim = c.intermediate; }
        else if (name == "q_norm") { slot = &L.q_norm; dim = c.head_dim; }
        else if (name == "k_norm") { slot = &L.k_norm; dim = c.head_dim; }
        else throw nb::value_error(("unknown norm '" + name + "'").c_str());
        if (!c.sub_norms && (slot == &L.attn_sub_norm || slot == &L.ffn_sub_norm))
          throw nb::value_error((what + ": this architecture has no sub-norms").c_str());
        if (!c.qk_norm && (slot == &L.q_norm || slot == &L.k_norm))
          throw nb::value_error((what + ": this architecture has no q/k norms").c_str());
        *slot = checked<float>(gamma, what.c_str(), {dim});
        e.attached(what, gamma);
      }, nb::arg("layer"), nb::arg("name"), nb::arg("gamma"))
      .def("set_rows", [](BoundEngine& e, const std::string& name, std::optional<Array> q,
                          std::optional<Array> row_scale, std::optional<Array> f32, std::optional<Array> q6) {
        const EngineConfig& c = e.engine.config;
        Rows* rows;
        if (name == "embedding") rows = &e.engine.embedding;
        else if (name == "lm_head") rows = &e.engine.lm_head;
        else throw nb::value_error(("unknown table '" + name + "'").c_str());
        Rows r;
        if (f32) {
          r.f32 = checked<float>(*f32, name.c_str(), {c.vocab, c.hidden});
          e.attached(name, *f32);
        } else {
          if (!(q || q6) || !row_scale) throw nb::value_error((name + ": give f32, or q (or q6) and row_scale").c_str());
          if (q6) r.q6 = checked<uint8_t>(*q6, name.c_str(), {c.vocab, int6_row_bytes(c.hidden)});
          else r.q = checked<int8_t>(*q, name.c_str(), {c.vocab, c.hidden});
          r.row_scale = checked<float>(*row_scale, (name + " row_scale").c_str(), {c.vocab});
          e.keep_alive.push_back(nb::cast(*row_scale));
          e.attached(name, q6 ? *q6 : *q);
        }
        *rows = r;
      }, nb::arg("name"), nb::arg("q").none(), nb::arg("row_scale").none(), nb::arg("f32").none(),
         nb::arg("q6").none() = nb::none())
      .def("forward", [](BoundEngine& e, BoundCache& cache, const Array& tokens, int64_t position,
                         bool all_logits) {
        Segment seg = e.segment(cache, tokens, position, "tokens");
        float* out;
        auto logits = new_array<float>({size_t(all_logits ? seg.count : 1), size_t(e.engine.config.vocab)}, &out);
        seg.logits = out;
        seg.all_logits = all_logits;
        e.run(&seg, 1);
        return logits;
      }, nb::arg("cache"), nb::arg("tokens"), nb::arg("position"), nb::arg("all_logits") = false,
         "Runs tokens at positions [position, position + len) of the sequence whose cache is given, "
         "writing their K/V there, and returns float32 logits [1 or len, vocab].")
      .def("forward_batch", [](BoundEngine& e, const std::vector<std::tuple<BoundCache*, Array, int64_t, bool>>& items) {
        std::vector<Segment> segs;
        std::vector<nb::object> outs;
        for (size_t i = 0; i < items.size(); ++i) {
          auto& [cache, tokens, position, want] = items[i];
          if (!cache) throw nb::value_error("forward_batch: a cache is None");
          for (const Segment& s : segs)
            if (s.cache == cache->cache.get())
              throw nb::value_error("forward_batch: one sequence appears twice in the batch");
          segs.push_back(e.segment(*cache, tokens, position, ("item " + std::to_string(i) + " tokens").c_str()));
          if (want) {
            float* out;
            outs.push_back(nb::cast(new_array<float>({size_t(e.engine.config.vocab)}, &out)));
            segs.back().logits = out;
          } else {
            outs.push_back(nb::none());
          }
        }
        e.run(segs.data(), static_cast<int64_t>(segs.size()));
        return outs;
      }, nb::arg("items"),
         "One batched step over several sequences: items are (cache, tokens, position, want_logits); "
         "returns the last token's float32 logits [vocab] per item (None where not wanted). Each "
         "sequence's results are bit-identical to running it alone.")
      .def_prop_ro("cache_bytes_per_position", [](const BoundEngine& e) { return e.engine.cache_bytes_per_position(); })
      .def_prop_ro("context", [](const BoundEngine& e) { return e.engine.config.context; })
      .def_prop_ro("attention_seconds", [](const BoundEngine& e) { return 1e-9 * static_cast<double>(e.engine.attention_ns); },
                   "Wall seconds spent in attention, summed over every step so far (for benchmarks).")
      .def_prop_ro("kv", [](const BoundEngine& e) { return e.engine.config.kv == KVFormat::Q8 ? "q8" : "f16"; },
                   "The KV cache format of this engine's sequences: f16 or q8.")
      .def_prop_ro("missing", [](const BoundEngine& e) { return e.missing; },
                   "What forward() still needs, e.g. 'layer 0 attn_sub_norm'.");

  // The engine's small kernels, exposed so that tests can hold them against the NumPy references
  // in tellme/kernels/reference.py at every ISA.
  m.def("float_to_half", [](const Array& x) {
    const float* p = checked<float>(x, "x", {-1});
    uint16_t* out;
    auto a = new_array<uint16_t>({x.shape(0)}, &out);
    active_backend().float_to_half(p, static_cast<int64_t>(x.shape(0)), out);
    return a;
  }, nb::arg("x"), "fp16 bits of each float: the KV cache's conversion (the active ISA's).");
  m.def("half_to_float", [](const Array& h) {
    const uint16_t* p = checked<uint16_t>(h, "h", {-1});
    float* out;
    auto a = new_array<float>({h.shape(0)}, &out);
    active_backend().half_to_float(p, static_cast<int64_t>(h.shape(0)), out);
    return a;
  }, nb::arg("h"), "fp16 bits to float (the active backend's conversion).");
  m.def("activate", [](const Array& x, const std::string& activation) {
    const Activation a = parse_activation(activation);
    const float* px = checked<float>(x, "x", {-1});
    const int64_t n = static_cast<int64_t>(x.shape(0));
    float* out;
    auto r = new_array<float>({size_t(n)}, &out);
    std::copy(px, px + n, out);
    activate(out, n, a);
    return r;
  }, nb::arg("x"), nb::arg("activation"), "The FFN activation of the Gated epilogue: silu or relu2.");
  m.def("exp_approx", [](const Array& x) {
    const float* px = checked<float>(x, "x", {-1});
    const size_t n = x.shape(0);
    float* out;
    auto r = new_array<float>({n}, &out);
    for (size_t i = 0; i < n; ++i) out[i] = exp_approx(px[i]);
    return r;
  }, nb::arg("x"), "The e^x of SiLU and of the softmax weights (exp_approx.h).");
  m.def("softmax_weights", [](const Array& scores, float scale, bool fast) {
    const float* p = checked<float>(scores, "scores", {-1});
    const int64_t n = static_cast<int64_t>(scores.shape(0));
    float* out;
    auto r = new_array<float>({size_t(n)}, &out);
    std::copy(p, p + n, out);
    const auto [m, sum] = (fast ? softmax_weights_fast : softmax_weights)(out, n, scale);
    return std::make_tuple(r, m, sum);
  }, nb::arg("scores"), nb::arg("scale"), nb::arg("fast") = true,
     "A chunk's softmax weights, their max score and sum (attention.h): the plain loop, or the one attention runs.");
  m.def("dots", [](const Array& q, const Array& rows) {
    const float* pq = checked<float>(q, "q", {-1, -1});
    const int64_t queries = static_cast<int64_t>(q.shape(0)), n = static_cast<int64_t>(q.shape(1));
    const int64_t count = rows.ndim() == 2 ? static_cast<int64_t>(rows.shape(0)) : 0;
    const bool f16 = rows.dtype() == nb::dtype<uint16_t>();
    const void* pr = f16 ? static_cast<const void*>(checked<uint16_t>(rows, "rows", {-1, n}))
                         : static_cast<const void*>(checked<float>(rows, "rows", {-1, n}));
    float* out;
    auto r = new_array<float>({size_t(queries), size_t(count)}, &out);
    if (f16)
      active_backend().dots_f16(pq, queries, static_cast<const uint16_t*>(pr), n, count, n, out);
    else
      active_backend().dots(pq, queries, static_cast<const float*>(pr), n, count, n, out);
    return r;
  }, nb::arg("q"), nb::arg("rows"),
     "8-lane float32 dots: out[h, j] = q[h] . rows[j]; q [queries, n], rows float32 or fp16 bits (uint16).");
  m.def("axpys", [](const Array& p, const Array& rows, const Array& y) {
    const float* pp = checked<float>(p, "p", {-1, -1});
    const int64_t queries = static_cast<int64_t>(p.shape(0)), count = static_cast<int64_t>(p.shape(1));
    const float* py = checked<float>(y, "y", {queries, -1});
    const int64_t n = static_cast<int64_t>(y.shape(1));
    const auto dt = rows.dtype();
    const void* pr = dt == nb::dtype<uint16_t>() ? static_cast<const void*>(checked<uint16_t>(rows, "rows", {count, n}))
                     : dt == nb::dtype<int8_t>() ? static_cast<const void*>(checked<int8_t>(rows, "rows", {count, n}))
                                                 : static_cast<const void*>(checked<float>(rows, "rows", {count, n}));
    float* out;
    auto r = new_array<float>({size_t(queries), size_t(n)}, &out);
    std::copy(py, py + queries * n, out);
    if (dt == nb::dtype<uint16_t>())
      active_backend().axpys_f16(pp, queries, static_cast<const uint16_t*>(pr), n, count, n, out);
    else if (dt == nb::dtype<int8_t>())
      active_backend().axpys_i8(pp, queries, static_cast<const int8_t*>(pr), n, count, n, out);
    else
      active_backend().axpys(pp, queries, static_cast<const float*>(pr), n, count, n, out);
    return r;
  }, nb::arg("p"), nb::arg("rows"), nb::arg("y"),
     "y[h] + p[h, 0] * rows[0] + p[h, 1] * rows[1] + ..., added in order; p [queries, count], y [queries, n]; "
     "rows float32, fp16 bits (uint16) or int8.");
  m.def("int8_gemm", [](const Array& rows, const Array& x) {
    const int8_t* px = checked<int8_t>(x, "x", {-1, -1});
    const int64_t k = static_cast<int64_t>(x.shape(1)), tokens = static_cast<int64_t>(x.shape(0));
    const int8_t* pr = checked<int8_t>(rows, "rows", {-1, k});
    check_head_input(px, tokens * k);
    int32_t* out;
    auto a = new_array<int32_t>({size_t(tokens), rows.shape(0)}, &out);
    active_backend().int8_gemm(pr, static_cast<int64_t>(rows.shape(0)), k, px, tokens, out);
    return a;
  }, nb::arg("rows"), nb::arg("x"), "int32 x @ rows.T (the int8 LM head); x [tokens, k] in [-127, 127].");
  m.def("int6_gemm", [](const Array& rows, const Array& x) {
    const int8_t* px = checked<int8_t>(x, "x", {-1, -1});
    const int64_t k = static_cast<int64_t>(x.shape(1)), tokens = static_cast<int64_t>(x.shape(0));
    const uint8_t* pr = checked<uint8_t>(rows, "rows", {-1, int6_row_bytes(k)});
    check_head_input(px, tokens * k);
    std::vector<int8_t> padded;
    std::vector<int32_t> sums;
    const int64_t k_pad = int6_head_input(px, tokens, k, padded, sums);
    int32_t* out;
    auto a = new_array<int32_t>({size_t(tokens), rows.shape(0)}, &out);
    active_backend().int6_gemm(pr, static_cast<int64_t>(rows.shape(0)), k_pad, padded.data(), sums.data(), tokens, out);
    return a;
  }, nb::arg("rows"), nb::arg("x"),
     "int32 x @ rows.T for 6-bit head rows (layout.pack_int6); x [tokens, k] in [-127, 127].");
}

}  // namespace tellme::bind
