// Parallel loops over independent tasks. Every output element is computed by exactly one task in
// a fixed order, so results are identical for any thread count and whichever thread runs a task.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>

#include "core.h"

namespace tellme {

// The index of the calling thread in the loop it runs a task of: 0 for the thread that started
// the loop, 1.. for the pool's workers.
int thread_index();

// tellme's own thread pool (parallel.cpp) rather than OpenMP's. libgomp keeps a pool per calling
// thread and, once its threads outnumber the CPUs (two callers: the server's scheduler thread and
// the main thread), cuts its spinning to almost nothing: every region then woke its threads from
// sleep, and 0.73B decode from a second thread ran 1.3x slower than from the first. Here one
// pool serves every caller, one loop at a time (a caller that finds it busy, or a loop nested in
// a task, runs its loop alone); workers spin a bounded time between loops, then sleep; the loop's
// starter waits only for the workers that joined it, spinning a bounded time, then yielding.
struct PoolJob {
  void (*run)(void* context, int thread);
  void* context;
  int threads;  // the team: the starter (thread 0) and threads - 1 workers
};
bool run_on_pool(const PoolJob& job);  // false: the pool is busy, the caller runs the job alone

// A busy machine: when another program keeps a core, a helper thread there is descheduled and
// every loop waits at its end until it runs again (a time slice, milliseconds: on a 2-vCPU VM with
// one core taken, 2 threads decoded at half the 1-thread rate). With automatic threads (the
// default, `threads="auto"`) the team is the cores other programs leave free, measured every 100
// ms, at most num_threads() (parallel.cpp; docs/kernels.md, "Threads").
int team_size();
void set_auto_threads(bool on);
bool auto_threads();
double others_cores();               // cores other programs used at the last measurement
void set_others_for_test(double cores);  // a test's stand-in for the measurement (< 0: measure again)

// Each thread starts on its own contiguous share of the tasks, in order, as schedule(static) would
// (a decode thread's weights stay one forward stream); one that finishes early then takes what is
// left of the others' shares, from their front. When one core runs slower (a virtual machine's
// vCPU slowed by its host, an efficiency core) the other does not wait for it at the end of the
// loop (docs/kernels.md, "Threads").
template <class F>
void parallel_for(int64_t tasks, F&& body) {
  const int team = team_size();
  const int threads = static_cast<int>(tasks < team ? tasks : team);
  if (threads <= 1) {
    for (int64_t i = 0; i < tasks; ++i) body(i);
    return;
  }
  struct alignas(64) Share {  // a cache line each: the owner's counter is not shared with another's
    std::atomic<int64_t> next;
    int64_t end;
  };
  std::unique_ptr<Share[]> shares(new Share[threads]);
  for (int t = 0; t < threads; ++t) {
    shares[t].next.store(tasks * t / threads, std::memory_order_relaxed);
    shares[t].end = tasks * (t + 1) / threads;
  }
  auto share_out = [&](int me) {  // alone (a busy pool), thread 0 runs every share
    for (int k = 0; k < threads; ++k) {
      Share& s = shares[(me + k) % threads];
      for (int64_t i; (i = s.next.fetch_add(1, std::memory_order_relaxed)) < s.end;) body(i);
    }
  };
  using Body = decltype(share_out);
  const PoolJob job{[](void* c, int me) { (*static_cast<Body*>(c))(me); }, &share_out, threads};
  if (!run_on_pool(job)) share_out(0);
}

}  // namespace tellme
