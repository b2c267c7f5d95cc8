// The sweep runner: trains each run of a Sweep as its own process (`ssmlab train <run>/config.toml
// --out <run>`), several at a time, packed over GPUs (CUDA_VISIBLE_DEVICES per slot) and limited by a
// memory budget. Finished runs (DONE) are skipped, interrupted ones resume from their newest checkpoint
// (the trainer does that), a failed run is counted and reported with the end of its log, and SIGINT /
// SIGTERM stop every child (SIGTERM to its process group, SIGKILL after a grace period) so that running
// the same command again continues. POSIX only: fork/execve/waitpid, one thread.
//
// The sweep folder holds sweep.json (the manifest: every run's id, folder, swept values and last status,
// replaced atomically after each change) and one folder per run holding, besides what `ssmlab train`
// writes, train.log (the child's stdout and stderr, appended across attempts) and .lock (flock'ed while a
// runner trains it, with the child's pid; two runners never train one run at once).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ssmlab/experiments/sweep.h"

namespace ssmlab::experiments {

struct RunnerOptions {
  int64_t jobs = 0;                // concurrent runs; 0 = 1, or gpus x per_gpu when gpus are given
  std::vector<int64_t> gpus;       // one CUDA_VISIBLE_DEVICES value per slot group; empty: environment untouched
  int64_t per_gpu = 1;             // runs sharing one GPU
  double mem_per_run_gb = 0.0;     // memory one run needs; 0 = no budget
  double mem_gb = 0.0;             // memory per GPU (with gpus) or of the host; 0 = ask nvidia-smi / MemAvailable
  std::filesystem::path exe;       // the ssmlab binary; empty = this process's own (/proc/self/exe)
  int64_t tail_lines = 10;         // lines of a failed run's log shown in the report
  double grace_s = 10.0;           // after SIGTERM, seconds before SIGKILL
  bool quiet = false;              // no progress output (tests)
};

enum class RunStatus { pending, running, done, skipped, failed, stopped, busy };
const char* status_name(RunStatus s);

struct RunRecord {
  std::string id, folder, label;
  RunStatus status = RunStatus::pending;
  std::string error;   // how a failed run ended ("exit status 2", "killed by signal 9 (Killed)") + its log's last lines
  double seconds = 0;  // wall time of this attempt
  int64_t attempts = 0;
};

struct SweepReport {
  std::filesystem::path dir;
  std::vector<RunRecord> runs;  // expansion order
  bool interrupted = false;     // stopped by SIGINT / SIGTERM
  double seconds = 0;
  size_t count(RunStatus s) const;
};

// Slots of the pool: one per concurrent run, each with its GPU (-1 = none), from the options and the
// memory budget. Throws naming the option at fault.
std::vector<int64_t> plan_slots(const RunnerOptions& opts);

// Runs the sweep; returns when every run has ended or after an interruption. Writes sweep.json.
SweepReport run_sweep(const Sweep& sweep, const RunnerOptions& opts);

// "3 done (1 skipped), 1 failed, 2 stopped" and, for each failed run, its folder, values and log tail.
std::string format_report(const SweepReport& report);

}  // namespace ssmlab::experiments
