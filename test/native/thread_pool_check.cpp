// Checks csrc/common/thread_pool.cpp on its own; built and run by test/thread-pool.test.ts.
// Prints one line per failed check and exits 1 if any failed; a loop that hangs is caught by the
// watchdog, which reports it and exits 2.
//
// The main check pauses the pool's worker (a signal handler that spins until released, as if the
// OS had not scheduled it) and runs loops: they must finish on the calling thread alone, and once
// the worker is released it must not call a finished loop's function nor disturb the next loop.
#include <dirent.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/thread_pool.h"

using sa::ThreadPool;

namespace {

int failures = 0;
void check(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what.c_str());
    failures++;
  }
}

// Runs fn on another thread and gives up on the whole program if it takes longer than `seconds`.
template <typename Fn>
void within(double seconds, const char* what, Fn fn) {
  auto done = std::async(std::launch::async, fn);
  if (done.wait_for(std::chrono::duration<double>(seconds)) != std::future_status::ready) {
    std::printf("FAIL: %s did not finish within %.0f s\n", what, seconds);
    std::fflush(stdout);
    std::_Exit(2);
  }
  done.get();
}

// Every task runs exactly once.
bool each_once(ThreadPool& pool, int64_t tasks, int64_t chunk) {
  std::vector<std::atomic<int>> runs(static_cast<size_t>(tasks));
  for (auto& r : runs) r.store(0);
  pool.parallel_for(tasks, [&](int64_t t) { runs[size_t(t)].fetch_add(1); }, chunk);
  for (auto& r : runs)
    if (r.load() != 1) return false;
  return true;
}

std::atomic<bool> paused{false}, release{false};
void hold(int) {
  paused.store(true);
  while (!release.load()) {
  }
}

// The thread ids of this process.
std::vector<pid_t> thread_ids() {
  std::vector<pid_t> ids;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ids.push_back(pid_t(std::atoi(e->d_name)));
    closedir(d);
  }
  return ids;
}

void check_basics() {
  ThreadPool pool(3);
  check(pool.size() == 3, "size() counts the caller and the workers");
  for (int64_t tasks : {1, 2, 7, 64, 1000, 100003})
    for (int64_t chunk : {0, 1, 3, 1000}) check(each_once(pool, tasks, chunk), "each task once: " + std::to_string(tasks) + " tasks, chunk " + std::to_string(chunk));

  // An exception: rethrown once the loop has ended; the tasks after it may be skipped, none runs twice.
  std::vector<std::atomic<int>> runs(5000);
  for (auto& r : runs) r.store(0);
  bool thrown = false;
  try {
    pool.parallel_for(5000, [&](int64_t t) {
      runs[size_t(t)].fetch_add(1);
      if (t == 10) throw std::runtime_error("task 10");
    }, 1);
  } catch (const std::runtime_error& e) {
    thrown = std::string(e.what()) == "task 10";
  }
  check(thrown, "the exception thrown by a task reaches the caller");
  bool at_most_once = true;
  for (auto& r : runs) at_most_once = at_most_once && r.load() <= 1;
  check(at_most_once && runs[10].load() == 1, "after an exception no task runs twice");
  check(each_once(pool, 1000, 1), "the loop after an exception runs every task");

  // A loop inside a task runs on that task's thread.
  std::atomic<int> inner{0}, elsewhere{0};
  pool.parallel_for(8, [&](int64_t) {
    const auto me = std::this_thread::get_id();
    pool.parallel_for(100, [&](int64_t) {
      inner.fetch_add(1);
      if (std::this_thread::get_id() != me) elsewhere.fetch_add(1);
    }, 1);
  }, 1);
  check(inner.load() == 800 && elsewhere.load() == 0, "a nested loop runs serially on its caller's thread");

  // Several callers take turns, while another thread resizes the pool.
  std::atomic<bool> all_ok{true};
  within(60, "loops from four threads with resizes", [&] {
    std::vector<std::thread> callers;
    for (int c = 0; c < 4; c++)
      callers.emplace_back([&, c] {
        for (int i = 0; i < 300; i++)
          if (!each_once(pool, 50 + 37 * ((i + c) % 20), (i % 3) + 0)) all_ok.store(false);
      });
    for (int i = 0; i < 20; i++) {
      pool.resize(1 + i % 4);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    for (auto& t : callers) t.join();
  });
  check(all_ok.load(), "loops from several threads, with resizes between them, each run every task once");
}

void check_paused_worker() {
  const auto before = thread_ids();
  ThreadPool pool(2);  // the caller and one worker
  std::vector<pid_t> workers;
  for (pid_t id : thread_ids())
    if (std::find(before.begin(), before.end(), id) == before.end()) workers.push_back(id);
  check(each_once(pool, 100, 1), "a loop before the pause");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the worker is asleep (mutex released)

  struct sigaction sa {};
  sa.sa_handler = hold;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);
  check(workers.size() == 1, "one worker thread to pause, found " + std::to_string(workers.size()));
  if (workers.size() != 1) return;
  syscall(SYS_tgkill, getpid(), workers[0], SIGUSR1);
  while (!paused.load()) std::this_thread::yield();

  std::atomic<bool> returned{false}, late_call{false};
  std::atomic<int64_t> calls{0};
  within(10, "a loop while the worker is paused", [&] {
    pool.parallel_for(1000, [&](int64_t) {
      if (returned.load()) late_call.store(true);
      calls.fetch_add(1);
    }, 1);
    returned.store(true);
  });
  check(calls.load() == 1000, "the caller alone runs every task of a loop while the worker is paused");

  // Released, the worker finds the finished loop; the next loops run every task exactly once.
  release.store(true);
  within(30, "loops after the worker is released", [&] {
    for (int i = 0; i < 2000; i++)
      if (!each_once(pool, 64, 1)) {
        check(false, "a loop after the release ran a task other than once");
        break;
      }
  });
  check(!late_call.load() && calls.load() == 1000, "the late worker did not call the finished loop's function");
}

}  // namespace

int main() {
  check_basics();
  check_paused_worker();
  if (failures == 0) std::printf("ok\n");
  return failures == 0 ? 0 : 1;
}
