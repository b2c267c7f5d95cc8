// Sweeps on a Slurm cluster (`ssmlab sweep FILE --slurm`): ONE job array, one task per run that is not finished
// (no DONE), each task `ssmlab train <run>/config.toml --out <run>` (which resumes from the run's newest
// checkpoint); a task whose run finished meanwhile exits at once. The runs' folders and config.toml are those of
// the local runner (experiments/runner.h), so `ssmlab results` / `ssmlab report` read them alike.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "ssmlab/experiments/sweep.h"

namespace ssmlab::experiments {

struct SlurmOptions {
  std::vector<std::string> sbatch;  // options for sbatch, each one "#SBATCH" line ("--partition=gpu", "--time=4:00:00")
  std::filesystem::path exe;        // the ssmlab binary the tasks run; empty = this process's own
  int nproc = 1;                    // data-parallel ranks per run (ssmlab train --nproc)
};

// Sweep indices of the runs without DONE, in order.
std::vector<size_t> unfinished_runs(const Sweep& sweep);

// "0-2,5,7-8" from sorted indices (Slurm's --array syntax).
std::string array_ranges(const std::vector<size_t>& indices);

// The job array script for the unfinished runs (an empty array when none is left: see submit_slurm).
// Options that are not "-x..." / "--name[=value]" are ConfigErrors naming them.
std::string slurm_array_script(const Sweep& sweep, const SlurmOptions& opts);

struct SlurmSubmission {
  std::filesystem::path script;  // <sweep folder>/slurm/<name>.sbatch
  std::string job_id;            // empty when every run was finished (nothing submitted)
  size_t tasks = 0;
};

// Writes every unfinished run's config.toml (as the local runner would), the script, and submits it with
// `sbatch --parsable`. Errors name what failed: a missing sbatch, its output when it refuses.
SlurmSubmission submit_slurm(const Sweep& sweep, const SlurmOptions& opts);

}  // namespace ssmlab::experiments
