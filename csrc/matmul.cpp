// Drivers shared by every backend: pad and prepare activations once per token, split the output
// into tasks of whole row blocks, run the backend's block kernel, then the epilogue.
#include "matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core.h"
#include "fp16.h"
#include "parallel.h"

namespace tellme {
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

float activate(float x, Activation a) {
  if (a == Activation::ReLU2) {
    const float r = x > 0.0f ? x : 0.0f;
    return r * r;
  }
  // SiLU. Outside [-80, 20] libm's exp would under- or overflow slowly; there the result is x
  // exactly (1 + e^-x rounds to 1) or within 1e-33 of zero.
  if (x > 20.0f) return x;
  if (x < -80.0f) return -0.0f;
  return x / (1.0f + std::exp(-x));
}

void write_rows(const Output& out, int64_t out_features, int64_t row0, int64_t t0, int64_t nt,
                const int32_t* acc /* [nt][ROW_BLOCK] */) {
  const int64_t rows = std::min<int64_t>(ROW_BLOCK, out_features - row0);
  const int64_t stride = out.row_stride ? out.row_stride : out_features;
  for (int64_t t = 0; t < nt; ++t) {
    const int32_t* a = acc + t * ROW_BLOCK;
    const int64_t base = (t0 + t) * stride + row0;
    if (out.i32) {
      std::memcpy(out.i32 + base, a, rows * sizeof(int32_t));
      continue;
    }
    const float s = out.act_scale[t0 + t] * out.weight_scale;
    float y[ROW_BLOCK];
    for (int64_t r = 0; r < rows; ++r) y[r] = static_cast<float>(a[r]) * s;
    if (out.rope.cos) {  // row blocks start at even rows and head_dim is even: pairs stay whole
      const int64_t half = out.rope.head_dim / 2;
      const int64_t at = (out.rope.first_position + t0 + t) * half;
      for (int64_t r = 0; r + 1 < rows; r += 2) {
        const int64_t j = ((row0 + r) % out.rope.head_dim) / 2;
        const float c = out.rope.cos[at + j], sn = out.rope.sin[at + j];
        const float x0 = y[r], x1 = y[r + 1];
        y[r] = x0 * c - x1 * sn;
        y[r + 1] = x1 * c + x0 * sn;
      }
    }
    if (out.f16) {
      for (int64_t r = 0; r < rows; ++r) out.f16[base + r] = float_to_half(y[r]);
      continue;
    }
    float* o = out.f32 + base;
    switch (out.epilogue) {
      case Epilogue::Store: for (int64_t r = 0; r < rows; ++r) o[r] = y[r]; break;
      case Epilogue::Add: for (int64_t r = 0; r < rows; ++r) o[r] += y[r]; break;
      case Epilogue::Activate: for (int64_t r = 0; r < rows; ++r) o[r] = activate(y[r], out.activation); break;
      case Epilogue::Multiply: for (int64_t r = 0; r < rows; ++r) o[r] *= y[r]; break;
    }
  }
}

void pad_rows(const int8_t* act, int64_t nt, int64_t in, int64_t in_pad, int8_t* dst) {
  for (int64_t t = 0; t < nt; ++t) {
    std::memcpy(dst + t * in_pad, act + t * in, in);
    std::memset(dst + t * in_pad + in, 0, in_pad - in);
  }
}

}  // namespace

void tl_matmul(const TlWeights& w, const int8_t* act, int64_t tokens, const Output& out) {
  const Backend& be = active_backend();
  const int64_t groups = w.in_pad / 3, ktiles = w.in_pad / KB_WEIGHTS;
  const int64_t row_blocks = w.out_pad / ROW_BLOCK;
  const int64_t stride = groups * be.table_bytes_per_group;
  const int64_t chunk = std::min(tokens, TOKEN_CHUNK);
  std::vector<int8_t> padded(chunk * w.in_pad);
  std::vector<uint8_t> tables(chunk * stride);
  const int64_t per_task = row_blocks_per_task(row_blocks, chunk);
  const int64_t tasks = (row_blocks + per_task - 1) / per_task;
  const int64_t pieces = (groups + TABLE_PIECE - 1) / TABLE_PIECE;

  for (int64_t t0 = 0; t0 < tokens; t0 += chunk) {
    const int64_t nt = std::min(chunk, tokens - t0);
    pad_rows(act + t0 * w.in, nt, w.in, w.in_pad, padded.data());
    parallel_for(nt * pieces, [&](int64_t i) {
      const int64_t t = i / pieces, g0 = (i % pieces) * TABLE_PIECE;
      const int64_t ng = std::min(TABLE_PIECE, groups - g0);
      be.tlmm_tables(padded.data() + t * w.in_pad + 3 * g0, ng,
                     tables.data() + t * stride + g0 * be.table_bytes_per_group);
    });
    parallel_for(tasks, [&](int64_t task) {
      const int64_t rb0 = task * per_task, rb1 = std::min(row_blocks, rb0 + per_task);
      std::vector<int32_t> acc((rb1 - rb0) * nt * ROW_BLOCK, 0);
      for (int64_t k0 = 0; k0 < ktiles; k0 += K_CHUNK_TILES) {
        const int64_t nk = std::min(K_CHUNK_TILES, ktiles - k0);
        for (int64_t rb = rb0; rb < rb1; ++rb)
          be.tlmm_block(w.tiles + (rb * ktiles + k0) * TILE_BYTES,
                        k0 == 0 ? w.neg_count + rb * ROW_BLOCK : nullptr, nk,
                        tables.data() + k0 * KB_GROUPS * be.table_bytes_per_group, stride, nt,
                        acc.data() + (rb - rb0) * nt * ROW_BLOCK);
      }
      for (int64_t rb = rb0; rb < rb1; ++rb)
        write_rows(out, w.out, rb * ROW_BLOCK, t0, nt, acc.data() + (rb - rb0) * nt * ROW_BLOCK);
    });
  }
}

void i2_matmul(const I2Weights& w, const int8_t* act, int64_t tokens, const Output& out) {
  const Backend& be = active_backend();
  const int64_t row_blocks = w.out_pad / ROW_BLOCK;
  const int64_t chunk = std::min(tokens, TOKEN_CHUNK);
  std::vector<int8_t> padded(chunk * w.in_pad), prepared(chunk * w.in_pad);
  std::vector<int32_t> sums(chunk);
  const int64_t per_task = row_blocks_per_task(row_blocks, chunk);
  const int64_t tasks = (row_blocks + per_task - 1) / per_task;

  for (int64_t t0 = 0; t0 < tokens; t0 += chunk) {
    const int64_t nt = std::min(chunk, tokens - t0);
    pad_rows(act + t0 * w.in, nt, w.in, w.in_pad, padded.data());
    for (int64_t t = 0; t < nt; ++t)
      sums[t] = be.i2_prepare(padded.data() + t * w.in_pad, w.in_pad, prepared.data() + t * w.in_pad);
    parallel_for(tasks, [&](int64_t task) {
      int32_t acc[TOKEN_CHUNK * ROW_BLOCK];
      const int64_t rb1 = std::min(row_blocks, (task + 1) * per_task);
      for (int64_t rb = task * per_task; rb < rb1; ++rb) {
        be.i2_block(w.codes + rb * ROW_BLOCK * (w.in_pad / 4), w.in_pad, prepared.data(), w.in_pad,
                    sums.data(), nt, acc);
        write_rows(out, w.out, rb * ROW_BLOCK, t0, nt, acc);
      }
    });
  }
}

}  // namespace tellme
