// `ssmlab sweep FILE --slurm`: the job array script (one task per unfinished run, sbatch options, the task body run
// by bash against a stand-in ssmlab), and a real submission where a Slurm controller answers on this machine.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/experiments/slurm.h"
#include "ssmlab/experiments/sweep.h"
#include "test_util.h"

namespace experiments_test_slurm {

namespace {

namespace fs = std::filesystem;

std::string slurm_sweep_text(const fs::path& out) {
  return "[sweep]\nout_dir = \"" + out.string() + R"("
grid = { "run.seed" = [1, 2, 3] }
[run]
name = "sl"
[model]
mixer = "mamba1"
d_model = 8
n_layers = 1
[model.mixers.mamba1]
d_state = 4
[task]
batch_size = 4
test_batch_size = 8
[task.mqar]
vocab_size = 16
[[task.mqar.train]]
seq_len = 8
num_kv_pairs = 1
count = 16
[[task.mqar.test]]
seq_len = 8
num_kv_pairs = 1
count = 8
[train]
max_steps = 2
threads = 1
tensorboard = false
)";
}

std::string run_cmd(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  pclose(p);
  return out;
}

TEST(SlurmScript, OneArrayTaskPerUnfinishedRunAndTheTaskBodyRuns) {
  ssmlab::test::TempDir tmp;
  const fs::path out = tmp.path / "sweep";
  std::ofstream(tmp.path / "s.toml") << slurm_sweep_text(out);
  const auto sweep = ssmlab::experiments::load_sweep(tmp.path / "s.toml");
  ASSERT_EQ(sweep.runs.size(), 3u);
  fs::create_directories(out / sweep.runs[1].folder);
  std::ofstream(out / sweep.runs[1].folder / "DONE");  // run 2 is finished: no task for it

  // A stand-in for ssmlab that prints what it was asked to do.
  const fs::path fake = tmp.path / "fake-ssmlab";
  std::ofstream(fake) << "#!/bin/sh\necho \"fake $*\"\n";
  fs::permissions(fake, fs::perms::owner_all);
  ssmlab::experiments::SlurmOptions o;
  o.exe = fake;
  o.sbatch = {"--partition=debug", "--time=0:10:00"};
  o.nproc = 2;
  const std::string script = ssmlab::experiments::slurm_array_script(sweep, o);
  EXPECT_EQ(script.rfind("#!/bin/bash\n", 0), 0u) << script;
  EXPECT_NE(script.find("#SBATCH --array=0,2\n"), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --partition=debug\n"), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --time=0:10:00\n"), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --output=" + fs::absolute(out).string() + "/slurm/%A_%a.out"), std::string::npos);
  for (const auto& r : sweep.runs) EXPECT_NE(script.find("'" + r.folder + "'"), std::string::npos) << r.folder;
  // Every #SBATCH line comes before the first command (sbatch stops reading them there).
  EXPECT_LT(script.rfind("#SBATCH"), script.find("set -euo"));

  const fs::path file = tmp.path / "job.sbatch";
  std::ofstream(file) << script;
  const std::string dir0 = fs::absolute(out / sweep.runs[0].folder).string();
  EXPECT_EQ(run_cmd("SLURM_ARRAY_TASK_ID=0 bash " + file.string()),
            "fake train " + dir0 + "/config.toml --out " + dir0 + " --nproc 2\n");
  const std::string skipped = run_cmd("SLURM_ARRAY_TASK_ID=1 bash " + file.string());
  EXPECT_NE(skipped.find("is finished (DONE): skipped"), std::string::npos) << skipped;
  EXPECT_EQ(skipped.find("fake"), std::string::npos) << skipped;

  EXPECT_EQ(ssmlab::experiments::array_ranges({0, 1, 2, 5, 7, 8}), "0-2,5,7-8");
  o.sbatch = {"partition=debug"};
  EXPECT_THROW(ssmlab::experiments::slurm_array_script(sweep, o), ssmlab::ConfigError);
}

TEST(SlurmScript, DryRunThroughTheCliPrintsTheScript) {
  ssmlab::test::TempDir tmp;
  const fs::path out = tmp.path / "sweep";
  std::ofstream(tmp.path / "s.toml") << slurm_sweep_text(out);
  const fs::path bin = fs::path(SSMLAB_BINARY_DIR) / "ssmlab";
  const std::string text = run_cmd(bin.string() + " sweep " + (tmp.path / "s.toml").string() +
                                   " --slurm --dry-run --partition=gpu --time 1:00:00 2>&1");
  EXPECT_NE(text.find("#SBATCH --array=0-2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("#SBATCH --partition=gpu\n"), std::string::npos) << text;
  EXPECT_NE(text.find("#SBATCH --time=1:00:00\n"), std::string::npos) << text;
  EXPECT_FALSE(fs::exists(out / "slurm")) << "--dry-run writes nothing";
}

// A real submission of a 3-run sweep: only where sbatch is installed and a controller answers (Debian's slurm-wlm
// with munge, started outside the test). Elsewhere the test is reported as skipped, with the reason, never passed.
// A private single-node Slurm (scripts/slurm-local.sh) for the test's lifetime, where Debian's slurmctld, slurmd,
// slurm-client and munge are installed (scripts/setup.sh installs them); stopped and SLURM_CONF restored at the end.
struct LocalSlurm {
  std::string dir;
  std::string old_conf;
  bool had_conf = false;
  bool started = false;
  std::string error;
  LocalSlurm() {
    char tmpl[] = "/tmp/ssmlab-slurm-XXXXXX";  // short: munge's socket path must fit in sun_path
    if (mkdtemp(tmpl) == nullptr) {
      error = "mkdtemp failed";
      return;
    }
    dir = tmpl;
    const std::string script = std::string(SSMLAB_SOURCE_DIR) + "/scripts/slurm-local.sh";
    const int rc = ssmlab::test::shell_status("bash '" + script + "' start '" + dir + "' > '" + dir +
                                              "/start.log' 2>&1");
    if (rc != 0) {
      std::ifstream in(dir + "/start.log");
      error = std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      return;
    }
    if (const char* c = std::getenv("SLURM_CONF")) {
      had_conf = true;
      old_conf = c;
    }
    setenv("SLURM_CONF", (dir + "/slurm.conf").c_str(), 1);
    started = true;
  }
  ~LocalSlurm() {
    if (dir.empty()) return;
    ssmlab::test::shell_status("bash '" + std::string(SSMLAB_SOURCE_DIR) + "/scripts/slurm-local.sh' stop '" + dir +
                               "' > /dev/null 2>&1; sleep 2; rm -rf '" + dir + "'");
    if (!started) return;
    if (had_conf)
      setenv("SLURM_CONF", old_conf.c_str(), 1);
    else
      unsetenv("SLURM_CONF");
  }
};

TEST(SlurmSubmit, ThreeRunSweepCompletes) {
  if (ssmlab::test::shell_status("command -v sbatch > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "not run: sbatch is not installed here (Debian's slurmctld, slurmd, slurm-client and munge, "
                    "which scripts/setup.sh installs, are needed for a real submission)";
  std::optional<LocalSlurm> local;
  if (ssmlab::test::shell_status("scontrol ping 2>/dev/null | grep -q UP") != 0) {
    local.emplace();
    // The issue asks for a real submission where a single-node Slurm can be started here; where it cannot (e.g. a
    // container that forbids the daemons), the test says why and ctest shows it as Skipped, never as Passed.
    if (!local->started)
      GTEST_SKIP() << "not run: sbatch is installed but no Slurm controller answers, and a private one "
                      "(scripts/slurm-local.sh) did not start: " << local->error;
  }
  ssmlab::test::TempDir tmp;
  const fs::path out = tmp.path / "sweep";
  std::ofstream(tmp.path / "s.toml") << slurm_sweep_text(out);
  const auto sweep = ssmlab::experiments::load_sweep(tmp.path / "s.toml");
  ssmlab::experiments::SlurmOptions o;
  o.exe = fs::path(SSMLAB_BINARY_DIR) / "ssmlab";
  const auto sub = ssmlab::experiments::submit_slurm(sweep, o);
  ASSERT_FALSE(sub.job_id.empty());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
  auto all_done = [&] {
    for (const auto& r : sweep.runs)
      if (!fs::exists(out / r.folder / "DONE")) return false;
    return true;
  };
  while (!all_done() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_TRUE(all_done()) << "job " << sub.job_id << " did not finish its 3 runs in 180 s";
}

}  // namespace

}  // namespace experiments_test_slurm
