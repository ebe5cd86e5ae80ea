#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>
#ifdef __linux__
#include <sched.h>
#endif

#include "core.h"
#include "parallel.h"

namespace tellme {
namespace {
std::atomic<int> g_threads{1};

// Automatic team (parallel.h): every kSampleNs the machine's busy time (/proc/stat, steal
// included) less this process's own CPU time gives the cores others used since the last sample;
// the team is the cores left, a core counting as left when at least kFreeShare of it is.
constexpr int64_t kSampleNs = 100'000'000;
constexpr double kFreeShare = 0.65;
std::atomic<bool> g_auto{false};
std::atomic<int> g_team{1 << 20};                 // the auto team's size now (capped by g_threads)
std::atomic<int64_t> g_next_sample{0};
std::atomic<int64_t> g_others_mcores{0};          // the last sample, in thousandths of a core
std::atomic<int64_t> g_test_others_mcores{-1};    // a test's stand-in for the measurement
std::mutex g_sample_mutex;                        // one sampler at a time; others use the last team
int64_t g_prev_wall = 0, g_prev_busy_ns = -1, g_prev_own_ns = 0;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time all processes have used since boot, or -1 where /proc/stat is not to be had.
int64_t machine_busy_ns() {
  std::FILE* f = std::fopen("/proc/stat", "r");
  if (!f) return -1;
  unsigned long long user, nice, system, idle, iowait, irq, softirq, steal = 0;
  const int got = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &system, &idle,
                              &iowait, &irq, &softirq, &steal);
  std::fclose(f);
  if (got < 7) return -1;
  const long tick = sysconf(_SC_CLK_TCK);
  return static_cast<int64_t>((user + nice + system + irq + softirq + steal) * (1e9 / (tick > 0 ? tick : 100)));
}

int64_t own_cpu_ns() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return (static_cast<int64_t>(u.ru_utime.tv_sec) + u.ru_stime.tv_sec) * 1'000'000'000 +
         (static_cast<int64_t>(u.ru_utime.tv_usec) + u.ru_stime.tv_usec) * 1'000;
}

int usable_cpus() {
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

void sample(int64_t now) {
  g_next_sample.store(now + kSampleNs, std::memory_order_relaxed);
  double others = -1;
  const int64_t test = g_test_others_mcores.load(std::memory_order_relaxed);
  if (test >= 0) {
    others = test / 1000.0;
  } else {
    const int64_t busy = machine_busy_ns(), own = own_cpu_ns();
    if (busy >= 0 && g_prev_busy_ns >= 0 && now > g_prev_wall) {
      others = std::max(0.0, static_cast<double>((busy - g_prev_busy_ns) - (own - g_prev_own_ns)) / (now - g_prev_wall));
    }
    g_prev_wall = now, g_prev_busy_ns = busy, g_prev_own_ns = own;
  }
  if (others < 0) return;  // no measurement (yet): keep the team
  g_others_mcores.store(static_cast<int64_t>(others * 1000), std::memory_order_relaxed);
  const double left = usable_cpus() - others;
  g_team.store(std::max(1, static_cast<int>(left + (1 - kFreeShare))), std::memory_order_relaxed);
}
}  // namespace

int team_size() {
  const int cap = g_threads.load(std::memory_order_relaxed);
  if (cap <= 1) return cap;
  // sampled with a fixed count too, so that switching to auto starts from a fresh measurement
  const int64_t now = now_ns();
  if (now >= g_next_sample.load(std::memory_order_relaxed) && g_sample_mutex.try_lock()) {
    sample(now);
    g_sample_mutex.unlock();
  }
  return g_auto.load(std::memory_order_relaxed) ? std::min(cap, g_team.load(std::memory_order_relaxed)) : cap;
}

void set_auto_threads(bool on) { g_auto.store(on, std::memory_order_relaxed); }

bool auto_threads() { return g_auto.load(std::memory_order_relaxed); }

double others_cores() { return g_others_mcores.load(std::memory_order_relaxed) / 1000.0; }

void set_others_for_test(double cores) {
  g_test_others_mcores.store(cores < 0 ? -1 : static_cast<int64_t>(cores * 1000), std::memory_order_relaxed);
  g_next_sample.store(0, std::memory_order_relaxed);  // the next loop samples
}

int num_threads() { return g_threads.load(std::memory_order_relaxed); }
void set_num_threads(int n) { g_threads.store(n < 1 ? 1 : n, std::memory_order_relaxed); }

namespace {
// The pool (parallel.h). A loop is published as a new generation in `state`: generation << 32,
// CLOSED, and the number of workers that joined it. A worker joins with a compare-and-swap that
// fails once the starter has closed the loop, so the starter never waits for a worker that was
// asleep or descheduled while the work was shared out (work stealing ran its tasks), only for
// those running a task. Spins are bounded in time: a worker sleeps after kWorkerSpinNs without a
// loop; the starter yields its core after kStarterSpinNs of waiting (to a descheduled worker
// among others).
constexpr uint64_t kClosed = 1ull << 31;
constexpr int64_t kWorkerSpinNs = 200'000;  // decode's loops follow each other within microseconds
constexpr int64_t kStarterSpinNs = 50'000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

thread_local int t_index = 0;
thread_local bool t_in_pool = false;  // a worker, or a starter inside its loop: nested loops run alone

struct Pool {
  std::mutex region;  // one loop at a time
  std::atomic<uint64_t> state{0};
  std::atomic<int> done{0};  // workers that joined the current loop and finished
  PoolJob job{};             // written before a generation is published, read after joining it
  std::mutex sleep_mutex;
  std::condition_variable wake;
  std::atomic<int> sleepers{0};
  std::vector<std::thread> workers;  // never joined: the pool lives as long as the process

  void work(int index) {
    t_index = index;
    t_in_pool = true;
    uint64_t seen = 0;  // the last generation this worker looked at
    for (;;) {
      uint64_t s = state.load(std::memory_order_acquire);
      for (int64_t start = now_ns(); (s >> 32) == seen; s = state.load(std::memory_order_acquire)) {
        cpu_relax();
        if (now_ns() - start < kWorkerSpinNs) continue;
        sleepers.fetch_add(1);
        {
          std::unique_lock<std::mutex> lock(sleep_mutex);
          wake.wait(lock, [&] { return (state.load() >> 32) != seen; });
        }
        sleepers.fetch_sub(1);
        start = now_ns();
      }
      seen = s >> 32;
      bool joined = false;
      while (!(s & kClosed) && (s >> 32) == seen)
        if (state.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
          joined = true;
          break;
        }
      if (!joined) continue;
      if (index < job.threads) job.run(job.context, index);
      done.fetch_add(1, std::memory_order_release);
    }
  }

  bool run(const PoolJob& j) {
    std::unique_lock<std::mutex> lock(region, std::try_to_lock);
    if (!lock.owns_lock()) return false;
    while (static_cast<int>(workers.size()) < j.threads - 1) {
      const int index = static_cast<int>(workers.size()) + 1;
      workers.emplace_back([this, index] { work(index); });
      workers.back().detach();
    }
    job = j;
    done.store(0, std::memory_order_relaxed);
    const uint64_t generation = (state.load(std::memory_order_relaxed) >> 32) + 1;
    state.store(generation << 32);  // seq_cst with `sleepers`: a worker going to sleep sees it, or is woken
    if (sleepers.load() > 0) {
      std::lock_guard<std::mutex> guard(sleep_mutex);
      wake.notify_all();
    }
    t_in_pool = true;
    j.run(j.context, 0);
    t_in_pool = false;
    const int joined = static_cast<int>(state.fetch_or(kClosed, std::memory_order_acq_rel) & (kClosed - 1));
    for (int64_t start = now_ns(); done.load(std::memory_order_acquire) < joined;) {
      if (now_ns() - start < kStarterSpinNs)
        cpu_relax();
      else
        std::this_thread::yield();
    }
    return true;
  }
};

// Never destroyed: its detached workers may outlive static destructors. A forked child has none
// of the parent's workers (and maybe a mutex a worker held): it starts a pool of its own.
std::atomic<Pool*> g_pool{nullptr};
std::once_flag g_pool_once;

Pool& pool() {
  std::call_once(g_pool_once, [] {
    g_pool = new Pool;
    pthread_atfork(nullptr, nullptr, [] { g_pool = new Pool; });
  });
  return *g_pool.load();
}
}  // namespace

int thread_index() { return t_index; }

bool run_on_pool(const PoolJob& job) { return !t_in_pool && pool().run(job); }
}  // namespace tellme
