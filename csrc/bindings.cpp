// Python boundary of the native core (module tellme._core). Every array argument is checked here
// for dtype, shape, C-contiguity and device, with an error naming the argument; kernels below
// this point trust their inputs. Kernels use unaligned loads, so no alignment is required.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bindings.h"
#include "core.h"
#include "fp16.h"
#include "matmul.h"
#include "parallel.h"
#include "quantize.h"

namespace nb = nanobind;
using namespace tellme;

namespace {

using namespace tellme::bind;

struct Activations {
  const int8_t* data;
  int64_t tokens;
  const float* scale;
};

Activations check_activations(const Array& act, int64_t in_features, const Array* act_scale) {
  const int8_t* a = checked<int8_t>(act, "activations", {-1, in_features});
  const int64_t tokens = static_cast<int64_t>(act.shape(0));
  if (tokens < 1) throw nb::value_error("activations must hold at least one token");
  const float* s = act_scale ? checked<float>(*act_scale, "act_scale", {tokens}) : nullptr;
  return {a, tokens, s};
}

template <class W, class F>
nb::object run_matmul(const W& w, const Array& act, const Array* act_scale, float weight_scale,
                      F matmul) {
  const Activations a = check_activations(act, w.in, act_scale);
  Output out;
  nb::object result;
  if (act_scale) {
    result = nb::cast(new_array<float>({size_t(a.tokens), size_t(w.out)}, &out.f32));
    out.act_scale = a.scale;
    out.weight_scale = weight_scale;
  } else {
    result = nb::cast(new_array<int32_t>({size_t(a.tokens), size_t(w.out)}, &out.i32));
  }
  nb::gil_scoped_release release;
  matmul(w, a.data, a.tokens, out);
  return result;
}

// The rows of an embedding table as stored, float32 or fp16 (uint16 bits, each widened into a
// per-thread row), quantized row by row in parallel by `quantize_row(x, cols, out, scale)`
// (false on NaN or Inf) into `row_bytes` elements of Out each.
template <class Out, class RowFn>
std::tuple<nb::object, nb::object> quantize_table(const Array& x, int64_t row_bytes, RowFn quantize_row) {
  const bool f16 = x.dtype() == nb::dtype<uint16_t>();
  const void* xp = f16 ? static_cast<const void*>(checked<uint16_t>(x, "x", {-1, -1}))
                       : static_cast<const void*>(checked<float>(x, "x", {-1, -1}));
  const int64_t rows = x.shape(0), cols = x.shape(1);
  if (cols < 1) throw nb::value_error("x must have at least one column");
  Out* q;
  float* s;
  auto qa = new_array<Out>({size_t(rows), size_t(row_bytes)}, &q);
  auto sa = new_array<float>({size_t(rows)}, &s);
  std::vector<char> bad(rows, 0);
  {
    nb::gil_scoped_release release;
    parallel_for(rows, [&](int64_t r) {
      thread_local std::vector<float> row;
      const float* src = static_cast<const float*>(xp) + r * cols;
      if (f16) {
        row.resize(cols);
        active_backend().half_to_float(static_cast<const uint16_t*>(xp) + r * cols, cols, row.data());
        src = row.data();
      }
      bad[r] = !quantize_row(src, cols, q + r * row_bytes, s + r);
    });
  }
  for (int64_t r = 0; r < rows; ++r)
    if (bad[r]) throw nb::value_error(("x row " + std::to_string(r) + " contains NaN or Inf").c_str());
  return {nb::cast(qa), nb::cast(sa)};
}

std::tuple<nb::object, nb::object> quantize_impl(const Array& x, const Array* gamma, double eps) {
  if (!gamma && x.dtype() == nb::dtype<uint16_t>())
    return quantize_table<int8_t>(x, x.shape(1), [](const float* row, int64_t cols, int8_t* q, float* s) {
      return quantize_rows(row, 1, cols, q, s) < 0;
    });
  const float* xp = checked<float>(x, "x", {-1, -1});
  const int64_t rows = x.shape(0), cols = x.shape(1);
  if (cols < 1) throw nb::value_error("x must have at least one column");
  const float* g = gamma ? checked<float>(*gamma, "gamma", {cols}) : nullptr;
  if (gamma && !(eps >= 0.0)) throw nb::value_error("eps must be >= 0");
  int8_t* q;
  float* s;
  auto qa = new_array<int8_t>({size_t(rows), size_t(cols)}, &q);
  auto sa = new_array<float>({size_t(rows)}, &s);
  int64_t bad;
  {
    nb::gil_scoped_release release;
    bad = g ? rmsnorm_quantize_rows(xp, g, eps, rows, cols, q, s) : quantize_rows(xp, rows, cols, q, s);
  }
  if (bad >= 0)
    throw nb::value_error(("x row " + std::to_string(bad) + " contains NaN or Inf").c_str());
  return {nb::cast(qa), nb::cast(sa)};
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "tellme native core: CPU dispatch, quantization, ternary matmul kernels and the model";
  tellme::bind::bind_engine(m);

  m.def("cpu_features", [] {
    const CpuFeatures f = detect_cpu();
    nb::dict d;
#if defined(__x86_64__) || defined(__i386__)
    d["avx2"] = f.avx2; d["fma"] = f.fma; d["f16c"] = f.f16c;
    d["avx512f"] = f.avx512f; d["avx512bw"] = f.avx512bw; d["avx512vl"] = f.avx512vl;
    d["avx512vbmi"] = f.avx512vbmi; d["avx512vnni"] = f.avx512vnni;
#else
    d["neon"] = f.neon; d["dotprod"] = f.dotprod; d["i8mm"] = f.i8mm;
#endif
    return d;
  });
  m.def("isas", [] {
    int n;
    const Backend* const* all = all_backends(&n);
    nb::list out;
    for (int i = 0; i < n; ++i) {
      nb::dict d;
      d["name"] = all[i]->name;
      d["runnable"] = find_backend(all[i]->name) != nullptr;
      d["emulated"] = all[i]->emulated;
      out.append(d);
    }
    return out;
  }, "ISAs compiled in (one kernel backend each), best first, with whether each can run here.");
  m.def("get_isa", [] { return std::string(active_backend().name); });
  m.def("set_isa", [](const std::string& name) {
    const Backend* b = find_backend(name.c_str());
    if (!b) throw nb::value_error(("instruction set '" + name + "' is not available on this CPU or build").c_str());
    set_active_backend(*b);
  }, nb::arg("name"));
  m.def("get_num_threads", &num_threads);
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw nb::value_error("number of threads must be >= 1");
    set_num_threads(n);
  }, nb::arg("n"));

  m.def("parallel_for_trace", [](int64_t tasks, int64_t slow_task, int slow_ms) {
    if (tasks < 0 || tasks > (1 << 20)) throw nb::value_error("tasks must be in [0, 2^20]");
    if (slow_ms < 0 || slow_ms > 1000) throw nb::value_error("slow_ms must be in [0, 1000]");
    std::vector<std::atomic<int32_t>> runs(tasks);
    std::vector<int32_t> by(tasks, -1);
    {
      nb::gil_scoped_release release;
      parallel_for(tasks, [&](int64_t i) {
        if (i == slow_task) std::this_thread::sleep_for(std::chrono::milliseconds(slow_ms));
        runs[i].fetch_add(1);
        by[i] = thread_index();
      });
    }
    std::vector<int32_t> counts(tasks);
    for (int64_t i = 0; i < tasks; ++i) counts[i] = runs[i].load();
    return nb::make_tuple(counts, by);
  }, nb::arg("tasks"), nb::arg("slow_task") = -1, nb::arg("slow_ms") = 0,
  "Test hook: runs parallel_for over `tasks` (task `slow_task` sleeping `slow_ms` ms first) and "
  "returns how often each task ran and which thread ran it.");
  m.def("set_auto_threads", &set_auto_threads, nb::arg("on"),
        "Automatic threads: each parallel loop's team is the cores other programs leave free (at most "
        "get_num_threads()).");
  m.def("team", [] { return nb::make_tuple(auto_threads(), team_size(), others_cores()); },
        "(automatic threads on, the team a loop would use now, cores other programs used at the last "
        "measurement).");
  m.def("set_others_for_test", &set_others_for_test, nb::arg("cores"),
        "Test hook: automatic threads see `cores` used by other programs (< 0: measure again).");
  m.def("has_code_3", [](const Array& codes) {
    if (codes.dtype() != nb::dtype<uint8_t>()) throw nb::type_error("codes must be uint8");
    const uint8_t* p = checked<uint8_t>(codes, "codes", {-1, -1});
    const int64_t n = static_cast<int64_t>(codes.shape(0) * codes.shape(1));
    constexpr int64_t CHUNK = 1 << 20;
    const int64_t chunks = (n + CHUNK - 1) / CHUNK;
    std::vector<uint8_t> seen(chunks, 0);
    {
      nb::gil_scoped_release release;
      parallel_for(chunks, [&](int64_t c) {
        uint8_t any = 0;
        for (int64_t i = c * CHUNK, end = std::min(n, i + CHUNK); i < end; ++i) any |= p[i] & (p[i] >> 1);
        seen[c] = any & 0x55;
      });
    }
    for (uint8_t s : seen)
      if (s) return true;
    return false;
  }, nb::arg("codes"), "Whether any 2-bit code of a [rows, bytes] uint8 array is 3 (never a ternary weight).");
  // The file readers' bulk conversions, native and parallel: the NumPy versions (formats/) took
  // 2-31 s of a 2B-4T load (docs/benchmarks.md, "Loading").
  m.def("bf16_to_float", [](const Array& bits) {
    const uint16_t* p = checked<uint16_t>(bits, "bits", {-1, -1});
    const int64_t rows = bits.shape(0), cols = bits.shape(1);
    float* out;
    auto a = new_array<float>({size_t(rows), size_t(cols)}, &out);
    {
      nb::gil_scoped_release release;
      parallel_for(rows, [&](int64_t r) {
        for (int64_t i = r * cols; i < (r + 1) * cols; ++i) {
          const uint32_t w = static_cast<uint32_t>(p[i]) << 16;
          std::memcpy(out + i, &w, 4);
        }
      });
    }
    return a;
  }, nb::arg("bits"), "bfloat16 rows (uint16 bits [rows, cols]) to float32, exactly.");
  m.def("tq2_0_blocks", [](const Array& blocks) {
    // TQ2_0: per 256 weights, 64 bytes of 2-bit codes (code = w + 1) and an fp16 d
    const uint8_t* p = checked<uint8_t>(blocks, "blocks", {-1, 66});
    const int64_t n = blocks.shape(0);
    float* d;
    uint8_t* live;
    auto da = new_array<float>({size_t(n)}, &d);
    auto la = new_array<uint8_t>({size_t(n)}, &live);
    std::atomic<bool> code_3{false};
    {
      nb::gil_scoped_release release;
      parallel_for((n + 1023) / 1024, [&](int64_t c) {
        uint8_t three = 0;
        for (int64_t b = c * 1024; b < std::min(n, (c + 1) * 1024); ++b) {
          const uint8_t* q = p + b * 66;
          uint8_t nonzero = 0;
          for (int i = 0; i < 64; ++i) {
            three |= q[i] & (q[i] >> 1);
            nonzero |= q[i] ^ 0x55;
          }
          uint16_t h;
          std::memcpy(&h, q + 64, 2);
          d[b] = half_to_float(h);
          live[b] = nonzero != 0 && d[b] != 0.0f;
        }
        if (three & 0x55) code_3 = true;
      });
    }
    return nb::make_tuple(da, la, code_3.load());
  }, nb::arg("blocks"), "TQ2_0 blocks [n, 66] -> (d float32 [n], live: any nonzero weight and d != 0, any code 3).");
  m.def("tq1_0_blocks", [](const Array& blocks) {
    // TQ1_0 (ggml): per 256 weights, 48 bytes of 5 trits each and 4 of 4 (a trit t of byte q at
    // power p: ((uint8)(q * 3^p) * 3) >> 8; weights [0,160) from bytes 0-31, [160,240) from 32-47,
    // [240,256) from 48-51, power-major), then an fp16 d. Out: the weights as i2 codes (code =
    // trit, I2_S bit order: two 32-byte blocks of 128), d, and live (a weight != 0 and d != 0).
    const uint8_t* p = checked<uint8_t>(blocks, "blocks", {-1, 54});
    const int64_t n = blocks.shape(0);
    static const auto tables = [] {  // each byte's 5 trits, and its first 4 as one byte of codes
      std::pair<std::array<std::array<uint8_t, 5>, 256>, std::array<uint8_t, 256>> t{};
      for (int byte = 0; byte < 256; ++byte) {
        for (int k = 0, power = 1; k < 5; ++k, power *= 3)
          t.first[byte][k] = static_cast<uint8_t>((static_cast<uint8_t>(byte * power) * 3) >> 8);
        const auto& f = t.first[byte];
        t.second[byte] = static_cast<uint8_t>(f[0] << 6 | f[1] << 4 | f[2] << 2 | f[3]);
      }
      return t;
    }();
    const auto& trits = tables.first;
    const auto& first4 = tables.second;
    uint8_t *codes, *live;
    float* d;
    auto ca = new_array<uint8_t>({size_t(n), size_t(64)}, &codes);
    auto da = new_array<float>({size_t(n)}, &d);
    auto la = new_array<uint8_t>({size_t(n)}, &live);
    {
      nb::gil_scoped_release release;
      parallel_for((n + 1023) / 1024, [&](int64_t c) {
        for (int64_t b = c * 1024; b < std::min(n, (c + 1) * 1024); ++b) {
          const uint8_t* q = p + b * 54;
          auto w = [&](int i) {  // weight i's trit
            return i < 160 ? trits[q[i % 32]][i / 32]
                 : i < 240 ? trits[q[32 + (i - 160) % 16]][(i - 160) / 16] : trits[q[48 + (i - 240) % 4]][(i - 240) / 4];
          };
          uint8_t* out = codes + b * 64;
          uint8_t nonzero = 0;
          for (int j = 0; j < 32; ++j) {  // weights j, j+32, j+64, j+96: powers 0-3 of byte j
            out[j] = first4[q[j]];
            nonzero |= out[j] ^ 0x55;
          }
          for (int j = 0; j < 32; ++j) {
            out[32 + j] = static_cast<uint8_t>(w(128 + j) << 6 | w(160 + j) << 4 | w(192 + j) << 2 | w(224 + j));
            nonzero |= out[32 + j] ^ 0x55;
          }
          uint16_t h;
          std::memcpy(&h, q + 52, 2);
          d[b] = half_to_float(h);
          live[b] = nonzero != 0 && d[b] != 0.0f;
        }
      });
    }  // the GIL again: the tuple is a Python object
    return nb::make_tuple(ca, da, la);
  }, nb::arg("blocks"), "TQ1_0 blocks [n, 54] -> (i2 codes uint8 [n, 64], d float32 [n], live uint8 [n]).");
  m.def("remap_codes", [](const Array& blocks, const Array& lut, const Array& live, int64_t code_bytes, uint8_t dead,
                          std::optional<nb::ndarray<uint8_t, nb::c_contig, nb::device::cpu>> into) {
    const int64_t stride = blocks.ndim() == 2 ? static_cast<int64_t>(blocks.shape(1)) : 0;
    if (code_bytes < 1 || code_bytes > stride) throw nb::value_error("code_bytes must be in [1, the blocks' width]");
    const uint8_t* p = checked<uint8_t>(blocks, "blocks", {-1, stride});
    const uint8_t* table = checked<uint8_t>(lut, "lut", {256});
    const int64_t n = blocks.shape(0);
    const uint8_t* keep = checked<uint8_t>(live, "live", {n});
    uint8_t* out;
    nb::object result;
    if (into) {  // straight into the caller's array (a loader's rows): no second copy
      if (into->size() != size_t(n * code_bytes)) throw nb::value_error("into must hold n * code_bytes bytes");
      out = into->data();
      result = nb::none();
    } else {
      result = nb::cast(new_array<uint8_t>({size_t(n), size_t(code_bytes)}, &out));
    }
    {
      nb::gil_scoped_release release;
      parallel_for((n + 1023) / 1024, [&](int64_t c) {
        for (int64_t b = c * 1024; b < std::min(n, (c + 1) * 1024); ++b)
          for (int64_t i = 0; i < code_bytes; ++i) out[b * code_bytes + i] = keep[b] ? table[p[b * stride + i]] : dead;
      });
    }
    return result;
  }, nb::arg("blocks"), nb::arg("lut"), nb::arg("live"), nb::arg("code_bytes"), nb::arg("dead"), nb::arg("into").noconvert() = nb::none(),
     "lut[byte] for the first code_bytes bytes of each live block, `dead` for every byte of the others: "
     "a new [n, code_bytes] array, or written into `into` (then None).");
  m.def("quantize", [](const Array& x) { return quantize_impl(x, nullptr, 0.0); }, nb::arg("x"),
        "Per-row absmax int8 quantization of float32 rows, or of fp16 rows given as uint16 bits: "
        "returns (q int8 [rows, cols], scale float32 [rows]).");
  m.def("quantize_int6", [](const Array& x) {
    const int64_t cols = x.ndim() == 2 ? static_cast<int64_t>(x.shape(1)) : 0;
    return quantize_table<uint8_t>(x, int6_row_bytes(cols), quantize_int6_row);
  }, nb::arg("x"),
        "Per-row absmax to 6-bit head rows (layout.quantize_int6) of float32 rows, or of fp16 rows "
        "given as uint16 bits: returns (packed uint8 [rows, row bytes], scale float32 [rows]).");
  m.def("rmsnorm_quantize",
        [](const Array& x, const Array& gamma, double eps) { return quantize_impl(x, &gamma, eps); },
        nb::arg("x"), nb::arg("gamma"), nb::arg("eps"),
        "RMSNorm then absmax int8 quantization in one pass per row.");

  m.def("tlmm_matmul_int", [](const Array& tiles, const Array& neg, int64_t out_f, int64_t in_f, const Array& act) {
    return run_matmul(check_tlmm(tiles, neg, out_f, in_f), act, nullptr, 1.0f, tlmm_matmul);
  }, nb::arg("tiles"), nb::arg("neg_count"), nb::arg("out_features"), nb::arg("in_features"), nb::arg("activations"));
  m.def("tlmm_matmul", [](const Array& tiles, const Array& neg, int64_t out_f, int64_t in_f, const Array& act,
                        const Array& act_scale, float weight_scale) {
    return run_matmul(check_tlmm(tiles, neg, out_f, in_f), act, &act_scale, weight_scale, tlmm_matmul);
  }, nb::arg("tiles"), nb::arg("neg_count"), nb::arg("out_features"), nb::arg("in_features"),
     nb::arg("activations"), nb::arg("act_scale"), nb::arg("weight_scale"));
  m.def("i2_matmul_int", [](const Array& codes, int64_t out_f, int64_t in_f, const Array& act) {
    return run_matmul(check_i2(codes, out_f, in_f), act, nullptr, 1.0f,
                      [](const I2Weights& w, const int8_t* a, int64_t n, const Output& o) { i2_matmul(w, a, n, o); });
  }, nb::arg("codes"), nb::arg("out_features"), nb::arg("in_features"), nb::arg("activations"));
  m.def("i2_matmul", [](const Array& codes, int64_t out_f, int64_t in_f, const Array& act,
                        const Array& act_scale, float weight_scale) {
    return run_matmul(check_i2(codes, out_f, in_f), act, &act_scale, weight_scale,
                      [](const I2Weights& w, const int8_t* a, int64_t n, const Output& o) { i2_matmul(w, a, n, o); });
  }, nb::arg("codes"), nb::arg("out_features"), nb::arg("in_features"), nb::arg("activations"),
     nb::arg("act_scale"), nb::arg("weight_scale"));
  m.def("i2_matmul_grouped", [](const Array& codes, const Array& group_scale, int64_t group, int64_t out_f,
                                int64_t in_f, const Array& act, const Array& act_scale) {
    const I2Weights w = check_i2(codes, out_f, in_f);
    const float* gs = check_group_scale(group_scale, group, w);
    return run_matmul(w, act, &act_scale, 1.0f, [&](const I2Weights& w, const int8_t* a, int64_t n, const Output& o) {
      i2_matmul(w, a, n, o, gs, group);
    });
  }, nb::arg("codes"), nb::arg("group_scale"), nb::arg("group"), nb::arg("out_features"), nb::arg("in_features"),
     nb::arg("activations"), nb::arg("act_scale"),
     "i2 weights with one scale per `group` weights along each row (float32 [out_pad, in / group]).");

  m.def("time_matmul", [](const std::string& kernel, const std::vector<Array>& weights,
                          const Array& neg_count, int64_t out_f, int64_t in_f, const Array& act,
                          int64_t repeats, const std::vector<Array>& group_scales, int64_t group) {
    if (weights.empty() || repeats < 1) throw nb::value_error("need at least one weight copy and one repeat");
    if (kernel != "tlmm" && kernel != "i2") throw nb::value_error(("unknown kernel '" + kernel + "'").c_str());
    if (!group_scales.empty() && (kernel != "i2" || group_scales.size() != weights.size()))
      throw nb::value_error("group scales go with i2 weights, one array per weight copy");
    std::vector<TlmmWeights> tlmm;
    std::vector<I2Weights> i2;
    std::vector<const float*> scales;
    for (size_t c = 0; c < weights.size(); ++c) {
      if (kernel == "tlmm") tlmm.push_back(check_tlmm(weights[c], neg_count, out_f, in_f));
      else i2.push_back(check_i2(weights[c], out_f, in_f));
      if (!group_scales.empty()) scales.push_back(check_group_scale(group_scales[c], group, i2.back()));
    }
    const Activations a = check_activations(act, in_f, nullptr);
    std::vector<int32_t> result(a.tokens * out_f);
    std::vector<float> result_f32(a.tokens * out_f), ones(a.tokens, 1.0f);
    Output out;
    if (scales.empty()) {
      out.i32 = result.data();
    } else {  // grouped sums are fp32
      out.f32 = result_f32.data();
      out.act_scale = ones.data();
    }
    nb::gil_scoped_release release;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t r = 0; r < repeats; ++r)
      for (size_t c = 0; c < weights.size(); ++c) {
        if (kernel == "tlmm") tlmm_matmul(tlmm[c], a.data, a.tokens, out);
        else i2_matmul(i2[c], a.data, a.tokens, out, scales.empty() ? nullptr : scales[c], group);
      }
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    return took.count() / static_cast<double>(repeats * weights.size());
  }, nb::arg("kernel"), nb::arg("weights"), nb::arg("neg_count"), nb::arg("out_features"),
     nb::arg("in_features"), nb::arg("activations"), nb::arg("repeats"),
     nb::arg("group_scales") = std::vector<Array>(), nb::arg("group") = 0,
     "Seconds per matmul, cycling through copies of the packed weights (native loop, no Python in the timing).");
  // A backend's register loop on every thread at once; the operations done, summed.
  auto on_every_thread = [](double (*loop)(int64_t), int64_t iterations) {
    if (iterations < 1) throw nb::value_error("iterations must be >= 1");
    nb::gil_scoped_release release;
    std::vector<double> done(num_threads());
    parallel_for(num_threads(), [&](int64_t i) { done[i] = loop(iterations); });
    double total = 0;
    for (double d : done) total += d;
    return total;
  };
  m.def("int8_madd_loop", [=](int64_t n) { return on_every_thread(active_backend().int8_madd_loop, n); },
        nb::arg("iterations"), "Runs the int8 multiply-add loop on every thread; returns the multiply-adds done.");
  m.def("fp32_fma_loop", [=](int64_t n) { return on_every_thread(active_backend().fp32_fma_loop, n); },
        nb::arg("iterations"), "Runs the fp32 FMA loop on every thread; returns the FMAs done.");
  m.def("stream_read", [](const Array& buffer) {
    const uint8_t* p = checked<uint8_t>(buffer, "buffer", {-1});
    const int64_t bytes = buffer.shape(0);
    nb::gil_scoped_release release;
    const Backend& be = active_backend();
    const int64_t parts = num_threads(), part = bytes / parts / 4096 * 4096;
    std::vector<uint64_t> sums(parts);
    parallel_for(parts, [&](int64_t i) { sums[i] = be.stream_read(p + i * part, part); });
    uint64_t s = 0;
    for (uint64_t v : sums) s ^= v;
    return s;
  }, nb::arg("buffer"), "Reads the buffer once, split across threads; returns a checksum.");
}
