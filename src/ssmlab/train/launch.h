// `ssmlab train ... --nproc N`: starts N local ranks of this same binary (fork + execve) under torchrun's
// environment contract (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT = a free
// port), waits for them, and when one fails names it, gives the others a bounded time to stop on their own (their
// next collective fails), then SIGTERM and SIGKILL. POSIX only.
#pragma once
#include <string>
#include <vector>

namespace ssmlab::train {

struct LaunchOptions {
  int nproc = 2;
  std::string exe;          // the binary; empty = /proc/self/exe
  double grace_s = 10.0;    // after a rank fails: seconds the others get to end by themselves, then SIGTERM
  double kill_after_s = 5;  // after SIGTERM: seconds before SIGKILL
};

// A free TCP port on the loopback (bound, read, released).
int free_local_port();

// Runs `args` (argv without the program name) as nproc ranks; returns 0 when all succeed, else the first failing
// rank's exit status (128 + signal when killed), after printing "rank R (pid P) ..." to stderr. SIGINT / SIGTERM
// to the launcher are passed on to every rank.
int launch_local_ranks(const std::vector<std::string>& args, const LaunchOptions& opts);

}  // namespace ssmlab::train
