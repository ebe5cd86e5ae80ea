#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>

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
#ifdef _OPENMP
void set_num_threads(int n) { g_threads.store(n < 1 ? 1 : n, std::memory_order_relaxed); }
#else
void set_num_threads(int) {}  // built without OpenMP (CMakeLists.txt warns): one thread, said so
#endif
}  // namespace tellme
