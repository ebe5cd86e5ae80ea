// Parallel loops over independent tasks. Every output element is computed by exactly one task in
// a fixed order, so results are identical for any thread count.
#pragma once
#include <cstdint>

#include "core.h"

namespace tellme {

template <class F>
void parallel_for(int64_t tasks, F&& body) {
  const int threads = static_cast<int>(tasks < num_threads() ? tasks : num_threads());
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t i = 0; i < tasks; ++i) body(i);
}

}  // namespace tellme
