#include <atomic>

#include "core.h"

namespace tellme {
namespace {
std::atomic<int> g_threads{1};
}
int num_threads() { return g_threads.load(std::memory_order_relaxed); }
#ifdef _OPENMP
void set_num_threads(int n) { g_threads.store(n < 1 ? 1 : n, std::memory_order_relaxed); }
#else
void set_num_threads(int) {}  // built without OpenMP (CMakeLists.txt warns): one thread, said so
#endif
}  // namespace tellme
