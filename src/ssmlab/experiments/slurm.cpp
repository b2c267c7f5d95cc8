#include "ssmlab/experiments/slurm.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/experiments/identity.h"
#include "ssmlab/experiments/options_io.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/runfolder/layout.h"

namespace ssmlab::experiments {
namespace {

namespace fs = std::filesystem;

// A word for bash, in single quotes.
std::string slurm_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

fs::path slurm_exe(const SlurmOptions& o) {
  return o.exe.empty() ? fs::read_symlink("/proc/self/exe") : fs::absolute(o.exe);
}

std::string slurm_job_name(const std::string& name) {
  std::string out = "ssmlab-";
  for (char c : name) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  return out;
}

}  // namespace

std::vector<size_t> unfinished_runs(const Sweep& sweep) {
  std::vector<size_t> out;
  for (const auto& r : sweep.runs)
    if (!fs::exists(runfolder::done_marker(sweep.out_dir / r.folder))) out.push_back(r.index);
  return out;
}

std::string array_ranges(const std::vector<size_t>& idx) {
  std::string out;
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && idx[j + 1] == idx[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += j == i ? str(idx[i]) : str(idx[i], "-", idx[j]);
    i = j + 1;
  }
  return out;
}

std::string slurm_array_script(const Sweep& sweep, const SlurmOptions& o) {
  for (const auto& a : o.sbatch)
    if (a.size() < 2 || a[0] != '-' || a.find('\n') != std::string::npos)
      fail_config("--sbatch '", a, "': expected an sbatch option such as --partition=gpu or --time=4:00:00");
  SSMLAB_CHECK(o.nproc >= 1, "--slurm: nproc must be >= 1; got ", o.nproc);
  const fs::path out = fs::absolute(sweep.out_dir);
  const auto pending = unfinished_runs(sweep);
  std::string s = "#!/bin/bash\n";
  s += str("# ssmlab sweep ", sweep.name, " (", sweep.source, "): ", sweep.runs.size(), " runs, ", pending.size(),
           " unfinished; one array task per run.\n");
  s += "# Written by `ssmlab sweep FILE --slurm`; submitting it again trains what is left (finished runs exit at "
       "once, interrupted ones resume from their last checkpoint).\n";
  s += "#SBATCH --job-name=" + slurm_job_name(sweep.name) + "\n";
  s += "#SBATCH --array=" + (pending.empty() ? std::string("0-0") : array_ranges(pending)) + "\n";
  s += "#SBATCH --output=" + (out / "slurm" / "%A_%a.out").string() + "\n";
  s += "#SBATCH --ntasks=1\n";
  for (const auto& a : o.sbatch) s += "#SBATCH " + a + "\n";
  s += "set -euo pipefail\n";
  s += "runs=(\n";
  for (const auto& r : sweep.runs) s += "  " + slurm_quote(r.folder) + "  # " + str(r.index) + ": " + r.label() + "\n";
  s += ")\n";
  s += "run=" + slurm_quote(out.string()) + "/\"${runs[$SLURM_ARRAY_TASK_ID]}\"\n";
  s += "if [ -e \"$run/DONE\" ]; then echo \"ssmlab: $run is finished (DONE): skipped\"; exit 0; fi\n";
  s += "exec " + slurm_quote(slurm_exe(o).string()) + " train \"$run/config.toml\" --out \"$run\"" +
       (o.nproc > 1 ? str(" --nproc ", o.nproc) : std::string()) + "\n";
  return s;
}

SlurmSubmission submit_slurm(const Sweep& sweep, const SlurmOptions& o) {
  SlurmSubmission sub;
  const auto pending = unfinished_runs(sweep);
  sub.tasks = pending.size();
  fs::create_directories(sweep.out_dir / "slurm");
  for (size_t i : pending) {  // as the local runner writes them (runner.cpp)
    const SweepRun& run = sweep.runs[i];
    const fs::path dir = sweep.out_dir / run.folder;
    fs::create_directories(dir);
    const fs::path cfg = runfolder::config_file(dir);
    const std::string text = run_config_text(run.config);
    if (!fs::exists(cfg)) {
      write_file_atomic(cfg, text);
    } else if (read_file(cfg) != text) {
      const Config there = load_options_from_string<Config>(read_file(cfg), cfg.string());
      const std::string diff = identity_diff(run.config, there);
      if (!diff.empty())
        fail(cfg.string(), " holds a different config than this run (", diff, "); delete the folder to start it over");
    }
  }
  sub.script = sweep.out_dir / "slurm" / (sweep.name + ".sbatch");
  write_file_atomic(sub.script, slurm_array_script(sweep, o));
  if (pending.empty()) return sub;
  const std::string cmd = "sbatch --parsable " + slurm_quote(fs::absolute(sub.script).string()) + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  SSMLAB_CHECK(p != nullptr, "--slurm: cannot run sbatch");
  std::string text;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) text += buf;
  const int st = pclose(p);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
    fail("--slurm: sbatch was not found on PATH (not a Slurm login node?); the script is ", sub.script.string(),
         " (--dry-run prints it)");
  SSMLAB_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "--slurm: sbatch refused ", sub.script.string(), ": ", text);
  sub.job_id = text.substr(0, text.find(';'));  // --parsable: "jobid[;cluster]"
  return sub;
}

}  // namespace ssmlab::experiments
