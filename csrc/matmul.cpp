// Drivers shared by every backend: pad and prepare activations once per token, split the output
// into tasks of whole row blocks, run the backend's block kernel, then the epilogue.
#include "matmul.h"

#ifdef TELLME_HAVE_X86_BACKENDS
#include <immintrin.h>
#endif
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core.h"
#include "exp_approx.h"
#include "parallel.h"

namespace tellme {

// SiLU, x / (1 + e^-x). Below -80 the result is within 1e-33 of zero and is -0; above 20,
// 1 + e^-x rounds to 1 and the result is x.
static inline void silu(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float s = v / (1.0f + exp_approx(-v));
    x[i] = v < -80.0f ? -0.0f : (v > 20.0f ? v : s);
  }
}

#ifdef TELLME_HAVE_X86_BACKENDS
// The same steps 8 wide where the CPU has AVX2, whatever ISA the kernels use: every step is one
// IEEE float operation (no contraction), and max/min/blend take their operands in the order that
// repeats std::max, std::min and the selects for every input, NaN included, so the bits are the
// scalar loop's. Written out because GCC's vectoriser of the scalar loop turned the clamp into
// selects and then divided twice per vector, once for the clamped inputs: 2-3x slower.
__attribute__((target("avx2"))) static void silu_avx2(float* x, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), neg_zero = _mm256_set1_ps(-0.0f);
  const __m256 below = _mm256_set1_ps(-80.0f), above = _mm256_set1_ps(20.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 s = _mm256_div_ps(v, _mm256_add_ps(one, exp_approx8(_mm256_xor_ps(v, neg_zero))));
    // v < -80 ? -0 : (v > 20 ? v : s)
    const __m256 r = _mm256_blendv_ps(s, v, _mm256_cmp_ps(v, above, _CMP_GT_OQ));
    _mm256_storeu_ps(x + i, _mm256_blendv_ps(r, neg_zero, _mm256_cmp_ps(v, below, _CMP_LT_OQ)));
  }
  silu(x + i, n - i);
}
#endif

// act(gate) for a row of gate values, in place.
void activate(float* x, int64_t n, Activation a) {
  if (a == Activation::ReLU2) {
    for (int64_t i = 0; i < n; ++i) {
      const float r = x[i] > 0.0f ? x[i] : 0.0f;
      x[i] = r * r;
    }
    return;
  }
#ifdef TELLME_HAVE_X86_BACKENDS
  static const bool avx2 = detect_cpu().avx2;
  if (avx2) return silu_avx2(x, n);
#endif
  silu(x, n);
}

namespace {

constexpr int64_t TOKEN_CHUNK = 16;   // tokens whose tables are live at once
constexpr int64_t K_CHUNK_TILES = 32; // 256 groups: a K slice of those tables stays in L2
constexpr int64_t TABLE_PIECE = 256;  // groups per table-building task

// Row blocks per task: several for GEMM (they share each K slice of the tables), but enough
// tasks to keep every thread busy.
int64_t row_blocks_per_task(int64_t row_blocks, int64_t tokens) {
  int64_t per = tokens > 1 ? 4 : 1;
  while (per > 1 && row_blocks / per < 4 * num_threads()) per /= 2;
  return per;
}

// A row block's sums for nt tokens, [nt][ROW_BLOCK]: exact int32 (one weight scale), or fp32
// already carrying the group scales (grouped weights).
struct Sums {
  const int32_t* i32 = nullptr;
  const float* f32 = nullptr;
  float weight_scale = 1.0f;
  // y = sum * (act_scale * weight_scale); a grouped sum has weight_scale 1
  void scaled(int64_t t, int64_t rows, float act_scale, float* y) const {
    const float s = act_scale * weight_scale;
    if (f32)
      for (int64_t r = 0; r < rows; ++r) y[r] = f32[t * ROW_BLOCK + r] * s;
    else
      for (int64_t r = 0; r < rows; ++r) y[r] = static_cast<float>(i32[t * ROW_BLOCK + r]) * s;
  }
};

void write_rows(const Output& out, int64_t out_features, int64_t row0, int64_t t0, int64_t nt,
                const Sums& acc, const Sums& up_acc) {
  const int64_t rows = std::min<int64_t>(ROW_BLOCK, out_features - row0);
  if (out.epilogue == Epilogue::Gated) {  // act(gate) * up; the activation once for the nt tokens
    float y[TOKEN_CHUNK * ROW_BLOCK], u[ROW_BLOCK];  // nt <= TOKEN_CHUNK: matmul_group's chunks
    for (int64_t t = 0; t < nt; ++t) acc.scaled(t, rows, out.act_scale[t0 + t], y + t * rows);
    activate(y, nt * rows, out.activation);
    for (int64_t t = 0; t < nt; ++t) {
      up_acc.scaled(t, rows, out.act_scale[t0 + t], u);
      float* o = out.f32 + (t0 + t) * out_features + row0;
      for (int64_t r = 0; r < rows; ++r) o[r] = y[t * rows + r] * u[r];
    }
    return;
  }
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t base = (t0 + t) * out_features + row0;
    if (out.i32) {
      std::memcpy(out.i32 + base, acc.i32 + t * ROW_BLOCK, rows * sizeof(int32_t));
      continue;
    }
    float y[ROW_BLOCK];
    acc.scaled(t, rows, out.act_scale[t0 + t], y);
    if (out.rope.cos) {  // row blocks start at even rows and head_dim is even: pairs stay whole
      const int64_t half = out.rope.head_dim / 2;
      const int64_t at = out.rope.positions[t0 + t] * half;
      int64_t j = (row0 % out.rope.head_dim) / 2;  // the pair's index in its head, counted (no division per pair)
      for (int64_t r = 0; r + 1 < rows; r += 2, j = j + 1 == half ? 0 : j + 1) {
        const float c = out.rope.cos[at + j], sn = out.rope.sin[at + j];
        const float x0 = y[r], x1 = y[r + 1];
        y[r] = x0 * c - x1 * sn;
        y[r + 1] = x1 * c + x0 * sn;
      }
    }
    if (out.f16) {
      active_backend().float_to_half(y, rows, out.f16 + base);
      continue;
    }
    float* o = out.f32 + base;
    if (out.epilogue == Epilogue::Add)
      for (int64_t r = 0; r < rows; ++r) o[r] += y[r];
    else
      for (int64_t r = 0; r < rows; ++r) o[r] = y[r];
  }
}

void pad_rows(const int8_t* act, int64_t nt, int64_t in, int64_t in_pad, int8_t* dst) {
  for (int64_t t = 0; t < nt; ++t) {
    std::memcpy(dst + t * in_pad, act + t * in, in);
    std::memset(dst + t * in_pad + in, 0, in_pad - in);
  }
}

struct Task {
  int job;
  int64_t rb0, rb1;  // row blocks [rb0, rb1) of that job
};

// Activations of one token chunk in the form each layout consumes; kept per calling thread and
// reused, so a decode step allocates nothing.
struct Prepared {
  std::vector<int8_t> tlmm_padded, i2_padded, i2_acts_storage;
  std::vector<int8_t> grouped;  // [in / group][tokens][group]: a group of every token, contiguous
  std::vector<int32_t> group_sums;  // [in / group][tokens]: the sum of each
  int8_t* i2_acts = nullptr;  // 64-byte aligned in i2_acts_storage: whole-cache-line vector loads
  std::vector<uint8_t> tables;
  std::vector<int32_t> i2_sums;
  int64_t table_stride = 0, i2_stride = 0;
};

void prepare(const Backend& be, const int8_t* act, int64_t nt, int64_t in, bool tlmm, bool i2,
             int64_t group, Prepared& p) {
  if (group) {
    const int64_t groups = in / group;
    p.grouped.resize(nt * in);
    p.group_sums.resize(nt * groups);
    parallel_for(groups, [&](int64_t g) {
      for (int64_t t = 0; t < nt; ++t) {
        const int8_t* src = act + t * in + g * group;
        std::memcpy(p.grouped.data() + (g * nt + t) * group, src, group);
        int32_t sum = 0;
        for (int64_t i = 0; i < group; ++i) sum += src[i];
        p.group_sums[g * nt + t] = sum;
      }
    });
  }
  if (tlmm) {
    const int64_t in_pad = round_up(in, KB_WEIGHTS), groups = in_pad / 3;
    p.table_stride = groups * be.table_bytes_per_group;
    p.tlmm_padded.resize(nt * in_pad);
    p.tables.resize(nt * p.table_stride);
    pad_rows(act, nt, in, in_pad, p.tlmm_padded.data());
    const int64_t pieces = (groups + TABLE_PIECE - 1) / TABLE_PIECE;
    parallel_for(nt * pieces, [&](int64_t i) {
      const int64_t t = i / pieces, g0 = (i % pieces) * TABLE_PIECE;
      const int64_t ng = std::min(TABLE_PIECE, groups - g0);
      be.tlmm_tables(p.tlmm_padded.data() + t * in_pad + 3 * g0, ng,
                     p.tables.data() + t * p.table_stride + g0 * be.table_bytes_per_group);
    });
  }
  if (i2) {
    // A cache line between tokens' rows: at a power-of-two stride they would share L1 sets.
    const int64_t in_pad = round_up(in, I2_K_PAD), stride = in_pad + 64;
    p.i2_stride = stride;
    p.i2_padded.resize(nt * in_pad);
    p.i2_acts_storage.resize(nt * stride + 64);
    const uintptr_t base = reinterpret_cast<uintptr_t>(p.i2_acts_storage.data());
    p.i2_acts = p.i2_acts_storage.data() + ((64 - base % 64) % 64);
    p.i2_sums.resize(nt);
    pad_rows(act, nt, in, in_pad, p.i2_padded.data());
    parallel_for(nt, [&](int64_t t) {
      p.i2_sums[t] = be.i2_prepare(p.i2_padded.data() + t * in_pad, in_pad, p.i2_acts + t * stride);
    });
  }
}

// Exact sums of row blocks [rb0, rb1) of w for nt tokens into acc[(rb - rb0) * nt * 32 + t * 32 + r].
void block_sums(const Backend& be, const Linear& w, const Prepared& p, int64_t rb0, int64_t rb1,
                int64_t nt, int32_t* acc) {
  if (w.is_tlmm) {
    const int64_t ktiles = w.tlmm.in_pad / KB_WEIGHTS;
    std::fill(acc, acc + (rb1 - rb0) * nt * ROW_BLOCK, 0);
    for (int64_t k0 = 0; k0 < ktiles; k0 += K_CHUNK_TILES) {  // a K slice of the tables stays in L2
      const int64_t nk = std::min(K_CHUNK_TILES, ktiles - k0);
      for (int64_t rb = rb0; rb < rb1; ++rb)
        be.tlmm_block(w.tlmm.tiles + (rb * ktiles + k0) * TILE_BYTES,
                      k0 == 0 ? w.tlmm.neg_count + rb * ROW_BLOCK : nullptr, nk,
                      p.tables.data() + k0 * KB_GROUPS * be.table_bytes_per_group, p.table_stride, nt,
                      acc + (rb - rb0) * nt * ROW_BLOCK);
    }
    return;
  }
  for (int64_t rb = rb0; rb < rb1; ++rb)
    be.i2_block(w.i2.codes + rb * ROW_BLOCK * (w.i2.in_pad / 4), w.i2.in_pad, p.i2_acts,
                p.i2_stride, p.i2_sums.data(), nt, acc + (rb - rb0) * nt * ROW_BLOCK);
}

// Weights k0 .. k0 + n of one row of 2-bit codes as int8 -1/0/1 (k0 and n multiples of 32: each
// run of 32 is one 2-bit field of 32 consecutive bytes).
void unpack_codes(const uint8_t* row, int64_t k0, int64_t n, int8_t* dst) {
  for (int64_t c = 0; c < n; c += 32) {
    const uint8_t* b = row + (k0 + c) / I2_BLOCK * 32;
    const int shift = 6 - 2 * static_cast<int>(((k0 + c) / 32) % 4);
    for (int j = 0; j < 32; ++j) dst[c + j] = static_cast<int8_t>(((b[j] >> shift) & 3) - 1);
  }
}

// Grouped weights: the backend's kernel where it has one (Backend::i2_group_block), else for each
// group a row block's weights are unpacked to int8 and multiplied by that group of every token
// with the backend's int8 GEMM (exact int32), then scaled by the group scales and added in fp32,
// group by group: facc[(rb - rb0) * nt * 32 + t * 32 + r]. Both give the same bits.
void grouped_sums(const Backend& be, const Linear& w, const Prepared& p, int64_t rb0, int64_t rb1,
                  int64_t nt, float* facc) {
  const int64_t g_size = w.group, groups = w.i2.in / g_size, row_bytes = w.i2.in_pad / 4;
  thread_local std::vector<int8_t> wq;
  thread_local std::vector<int32_t> sums;
  wq.resize(ROW_BLOCK * g_size);
  sums.resize(nt * ROW_BLOCK);
  const bool fast = be.i2_group_block && (g_size == 64 || g_size == 128);
  for (int64_t rb = rb0; rb < rb1; ++rb) {
    float* f = facc + (rb - rb0) * nt * ROW_BLOCK;
    const uint8_t* codes = w.i2.codes + rb * ROW_BLOCK * row_bytes;
    const float* scales = w.group_scale + rb * ROW_BLOCK * groups;
    if (fast) {
      be.i2_group_block(codes, w.i2.in_pad, g_size, groups, scales, p.grouped.data(), p.group_sums.data(), nt, f);
      continue;
    }
    std::fill(f, f + nt * ROW_BLOCK, 0.0f);
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t r = 0; r < ROW_BLOCK; ++r) unpack_codes(codes + r * row_bytes, g * g_size, g_size, wq.data() + r * g_size);
      be.int8_gemm(wq.data(), ROW_BLOCK, g_size, p.grouped.data() + g * nt * g_size, nt, sums.data());
      for (int64_t t = 0; t < nt; ++t)
        for (int64_t r = 0; r < ROW_BLOCK; ++r)
          f[t * ROW_BLOCK + r] += scales[r * groups + g] * static_cast<float>(sums[t * ROW_BLOCK + r]);
    }
  }
}

// A task's sums for one matrix, int32 or (grouped) fp32, in the calling thread's buffers.
Sums task_sums(const Backend& be, const Linear& w, const Prepared& p, int64_t rb0, int64_t rb1, int64_t nt,
               std::vector<int32_t>& i32, std::vector<float>& f32) {
  const int64_t n = (rb1 - rb0) * nt * ROW_BLOCK;
  if (w.group_scale) {
    f32.resize(n);
    grouped_sums(be, w, p, rb0, rb1, nt, f32.data());
    return {nullptr, f32.data(), 1.0f};
  }
  i32.resize(n);
  block_sums(be, w, p, rb0, rb1, nt, i32.data());
  return {i32.data(), nullptr, w.scale};
}

}  // namespace

void matmul_group(const MatmulJob* jobs, int count, const int8_t* act, int64_t tokens) {
  const Backend& be = active_backend();
  const int64_t in = jobs[0].w->in_features();
  bool any_tlmm = false, any_i2 = false;
  int64_t group = 0;  // of the grouped matrices (one size per call: bindings_engine.cpp checks)
  int64_t total_blocks = 0;
  for (int j = 0; j < count; ++j) {
    for (const Linear* l : {jobs[j].w, jobs[j].up}) {
      if (!l) continue;
      if (l->group_scale) group = l->group;
      else (l->is_tlmm ? any_tlmm : any_i2) = true;
    }
    total_blocks += (jobs[j].w->out_features() + ROW_BLOCK - 1) / ROW_BLOCK;
  }
  const int64_t chunk = std::min(tokens, TOKEN_CHUNK);
  const int64_t per_task = row_blocks_per_task(total_blocks, chunk);
  std::vector<Task> tasks;
  for (int j = 0; j < count; ++j) {
    const int64_t blocks = (jobs[j].w->out_features() + ROW_BLOCK - 1) / ROW_BLOCK;
    for (int64_t rb = 0; rb < blocks; rb += per_task) tasks.push_back({j, rb, std::min(blocks, rb + per_task)});
  }
  thread_local Prepared prepared_here;
  Prepared& p = prepared_here;  // by reference: worker threads must read the caller's instance
  for (int64_t t0 = 0; t0 < tokens; t0 += chunk) {
    const int64_t nt = std::min(chunk, tokens - t0);
    prepare(be, act + t0 * in, nt, in, any_tlmm, any_i2, group, p);
    parallel_for(static_cast<int64_t>(tasks.size()), [&](int64_t i) {
      const Task& task = tasks[i];
      const MatmulJob& job = jobs[task.job];
      thread_local std::vector<int32_t> acc, up_acc;
      thread_local std::vector<float> facc, up_facc;
      const Sums sums = task_sums(be, *job.w, p, task.rb0, task.rb1, nt, acc, facc);
      const Sums up = job.up ? task_sums(be, *job.up, p, task.rb0, task.rb1, nt, up_acc, up_facc) : Sums{};
      for (int64_t rb = task.rb0; rb < task.rb1; ++rb) {
        const int64_t off = (rb - task.rb0) * nt * ROW_BLOCK;
        const Sums at{sums.i32 ? sums.i32 + off : nullptr, sums.f32 ? sums.f32 + off : nullptr, sums.weight_scale};
        const Sums up_at{up.i32 ? up.i32 + off : nullptr, up.f32 ? up.f32 + off : nullptr, up.weight_scale};
        write_rows(job.out, job.w->out_features(), rb * ROW_BLOCK, t0, nt, at, up_at);
      }
    });
  }
}

void tlmm_matmul(const TlmmWeights& w, const int8_t* act, int64_t tokens, const Output& out) {
  Linear l;
  l.tlmm = w;
  l.scale = out.weight_scale;
  MatmulJob job{&l, nullptr, out};
  matmul_group(&job, 1, act, tokens);
}

void i2_matmul(const I2Weights& w, const int8_t* act, int64_t tokens, const Output& out,
               const float* group_scale, int64_t group) {
  Linear l;
  l.is_tlmm = false;
  l.i2 = w;
  l.scale = group_scale ? 1.0f : out.weight_scale;
  l.group_scale = group_scale;
  l.group = group;
  MatmulJob job{&l, nullptr, out};
  matmul_group(&job, 1, act, tokens);
}

}  // namespace tellme
