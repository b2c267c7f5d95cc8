#include "ssmlab/train/launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "ssmlab/core/error.h"

extern char** environ;

namespace ssmlab::train {
namespace {

volatile sig_atomic_t g_launch_signal = 0;
void launch_on_signal(int sig) { g_launch_signal = sig; }

std::string launch_status_text(int st) {
  if (WIFEXITED(st)) return str("exited with status ", WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return str("was killed by signal ", WTERMSIG(st), " (", strsignal(WTERMSIG(st)), ")");
  return "ended";
}

int launch_exit_code(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return 1;
}

}  // namespace

int free_local_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  SSMLAB_CHECK(fd >= 0, "--nproc: cannot open a socket to find a free port: ", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  const int err = errno;
  close(fd);
  SSMLAB_CHECK(ok, "--nproc: cannot bind a loopback socket to find a free port: ", std::strerror(err));
  return ntohs(addr.sin_port);
}

int launch_local_ranks(const std::vector<std::string>& args, const LaunchOptions& opts) {
  SSMLAB_CHECK(opts.nproc >= 1 && opts.nproc <= 1024, "--nproc must be in [1, 1024]; got ", opts.nproc);
  const std::string exe = opts.exe.empty() ? std::string("/proc/self/exe") : opts.exe;
  const int port = free_local_port();
  const int n = opts.nproc;

  // Everything the children need is built before fork: between fork and exec only async-signal-safe calls.
  std::vector<std::string> argv_s{exe};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  auto is_ours = [](const char* e) {
    for (const char* k : {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "LOCAL_WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT="})
      if (std::strncmp(e, k, std::strlen(k)) == 0) return true;
    return false;
  };
  std::vector<std::vector<std::string>> envs(static_cast<size_t>(n));
  std::vector<std::vector<char*>> envps(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    auto& e = envs[static_cast<size_t>(r)];
    for (char** p = environ; *p; ++p)
      if (!is_ours(*p)) e.emplace_back(*p);
    e.push_back(str("RANK=", r));
    e.push_back(str("LOCAL_RANK=", r));
    e.push_back(str("WORLD_SIZE=", n));
    e.push_back(str("LOCAL_WORLD_SIZE=", n));
    e.push_back("MASTER_ADDR=127.0.0.1");
    e.push_back(str("MASTER_PORT=", port));
    for (auto& s : e) envps[static_cast<size_t>(r)].push_back(s.data());
    envps[static_cast<size_t>(r)].push_back(nullptr);
  }

  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = launch_on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: waitpid returns EINTR
  g_launch_signal = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<pid_t> pids(static_cast<size_t>(n), -1);
  for (int r = 0; r < n; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      execve(argv[0], argv.data(), envps[static_cast<size_t>(r)].data());
      const char msg[] = "ssmlab train --nproc: execve of the ssmlab binary failed\n";
      if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) { /* nothing left to tell */ }
      _exit(127);
    }
    if (pid < 0) {
      const int err = errno;
      for (int q = 0; q < r; ++q) kill(pids[static_cast<size_t>(q)], SIGKILL);
      for (int q = 0; q < r; ++q) waitpid(pids[static_cast<size_t>(q)], nullptr, 0);
      sigaction(SIGINT, &old_int, nullptr);
      sigaction(SIGTERM, &old_term, nullptr);
      fail("--nproc: fork of rank ", r, " failed: ", std::strerror(err));
    }
    pids[static_cast<size_t>(r)] = pid;
  }

  using Clock = std::chrono::steady_clock;
  int alive = n, first_fail_code = 0, forwarded = 0;
  bool failing = false, termed = false;
  Clock::time_point term_at{}, kill_at{};
  auto rank_of = [&](pid_t pid) {
    for (int r = 0; r < n; ++r)
      if (pids[static_cast<size_t>(r)] == pid) return r;
    return -1;
  };
  auto signal_all = [&](int sig) {
    for (int r = 0; r < n; ++r)
      if (pids[static_cast<size_t>(r)] > 0) kill(pids[static_cast<size_t>(r)], sig);
  };
  while (alive > 0) {
    if (g_launch_signal != 0 && forwarded != g_launch_signal) {
      forwarded = g_launch_signal;
      signal_all(forwarded);
      if (!failing) {
        failing = true;
        first_fail_code = 128 + forwarded;
        term_at = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(opts.grace_s * 1000));
      }
    }
    if (failing && !termed && Clock::now() >= term_at) {
      termed = true;
      signal_all(SIGTERM);
      kill_at = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(opts.kill_after_s * 1000));
    }
    if (termed && Clock::now() >= kill_at) signal_all(SIGKILL);
    int st = 0;
    const pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid == 0 || (pid < 0 && errno == EINTR)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    if (pid < 0) break;  // ECHILD: nothing left
    const int r = rank_of(pid);
    if (r < 0) continue;
    pids[static_cast<size_t>(r)] = -1;
    --alive;
    const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!ok && !failing) {
      failing = true;
      first_fail_code = launch_exit_code(st);
      std::fprintf(stderr,
                   "ssmlab train --nproc %d: rank %d (pid %d) %s; stopping the other ranks (they end on their next "
                   "collective, SIGTERM after %.0f s); run the same command again to resume from the last "
                   "checkpoint\n",
                   n, r, static_cast<int>(pid), launch_status_text(st).c_str(), opts.grace_s);
      term_at = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(opts.grace_s * 1000));
    } else if (!ok) {
      std::fprintf(stderr, "ssmlab train --nproc %d: rank %d (pid %d) %s\n", n, r, static_cast<int>(pid),
                   launch_status_text(st).c_str());
    }
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return failing ? (first_fail_code == 0 ? 1 : first_fail_code) : 0;
}

}  // namespace ssmlab::train
