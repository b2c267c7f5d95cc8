// The sweep runner end to end, through the ssmlab binary: tiny CPU runs where one fails at run time and
// others are stopped mid-way; a re-run finishes them, skips what was finished, reports the failure, and
// the results table matches the run folders.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "ssmlab/core/io.h"
#include "ssmlab/experiments/runner.h"
#include "ssmlab/experiments/sweep.h"
#include "test_util.h"

namespace experiments_test_runner {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kSsmlab = fs::path(SSMLAB_BINARY_DIR) / "ssmlab";

// A model and task small enough that a step takes a few milliseconds; checkpoints every 5 steps.
std::string tiny_config(int64_t test_count = 16) {
  return R"(
[run]
name = "tiny"
[model]
mixer = "mamba1"
d_model = 16
n_layers = 1
[model.mixers.mamba1]
d_state = 4
[task]
batch_size = 4
test_batch_size = 16
[task.mqar]
vocab_size = 32
seed = 7
[[task.mqar.train]]
seq_len = 16
num_kv_pairs = 2
count = 4000
[[task.mqar.test]]
seq_len = 16
num_kv_pairs = 2
count = )" + std::to_string(test_count) + R"(
[train]
epochs = 1
eval_every = 5
early_stop_acc = 0.0
log_every = 5
threads = 1
)";
}

struct Cmd {
  int status = -1;
  std::string output;
};

// Runs the ssmlab binary with `args`, its stdout and stderr in one string.
Cmd run_ssmlab(const std::string& args, const fs::path& out_file) {
  const std::string cmd = kSsmlab.string() + " " + args + " > " + out_file.string() + " 2>&1";
  const int st = std::system(cmd.c_str());
  Cmd c;
  c.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  c.output = ssmlab::read_file(out_file);
  return c;
}

fs::file_time_type mtime(const fs::path& p) { return fs::last_write_time(p); }

std::vector<std::map<std::string, std::string>> read_csv(const fs::path& file) {
  std::istringstream in(ssmlab::read_file(file));
  std::string line;
  auto split = [](const std::string& l) {  // the test's own RFC 4180 reader (quoted cells, "" for a quote)
    std::vector<std::string> out(1);
    bool quoted = false;
    for (size_t i = 0; i < l.size(); ++i) {
      const char ch = l[i];
      if (quoted && ch == '"' && i + 1 < l.size() && l[i + 1] == '"') out.back() += '"', ++i;
      else if (ch == '"') quoted = !quoted;
      else if (ch == ',' && !quoted) out.emplace_back();
      else out.back() += ch;
    }
    return out;
  };
  std::getline(in, line);
  const auto header = split(line);
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    const auto cells = split(line);
    EXPECT_EQ(cells.size(), header.size()) << line;
    std::map<std::string, std::string> row;
    for (size_t i = 0; i < header.size() && i < cells.size(); ++i) row[header[i]] = cells[i];
    rows.push_back(row);
  }
  return rows;
}

int64_t last_step(const fs::path& metrics) {
  std::istringstream in(ssmlab::read_file(metrics));
  std::string line;
  int64_t step = 0;
  while (std::getline(in, line))
    if (!line.empty()) step = json::parse(line).value("step", step);
  return step;
}

TEST(Runner, FailureHaltAndRerunFinishEverythingOnce) {
  ssmlab::test::TempDir tmp;
  const fs::path sweep_file = tmp.path / "tiny.toml";
  // Three runs walked together: one short (finishes in the first pass), one long (stopped at step 10 by
  // train.halt_after_steps, as if killed), one on a device that does not exist (fails at run time only).
  std::ofstream(sweep_file) << "[sweep]\nzip = { \"run.seed\" = [1, 2, 3], \"train.max_steps\" = [6, 30, 6], "
                               "\"train.device\" = [\"cpu\", \"cpu\", \"bogus\"] }\n"
                            << tiny_config();
  const fs::path out = tmp.path / "sweep";
  const auto sweep = ssmlab::experiments::load_sweep(sweep_file);
  ASSERT_EQ(sweep.runs.size(), 3u);
  const fs::path a = out / sweep.runs[0].folder, b = out / sweep.runs[1].folder, c = out / sweep.runs[2].folder;

  const Cmd first = run_ssmlab("sweep " + sweep_file.string() + " --jobs 2 --out " + out.string() +
                                   " --set train.halt_after_steps=10",
                               tmp.path / "first.txt");
  EXPECT_EQ(first.status, 1) << first.output;  // a run failed
  EXPECT_TRUE(fs::exists(a / "DONE")) << first.output;
  EXPECT_FALSE(fs::exists(b / "DONE")) << first.output;
  EXPECT_EQ(last_step(b / "metrics.jsonl"), 10);
  EXPECT_FALSE(fs::exists(c / "DONE"));
  EXPECT_NE(first.output.find("FAILED " + c.string()), std::string::npos) << first.output;
  EXPECT_NE(first.output.find("unknown device 'bogus'"), std::string::npos) << first.output;  // the log's tail
  EXPECT_NE(first.output.find("1 stopped before the end"), std::string::npos) << first.output;
  const auto a_done = mtime(a / "DONE"), a_results = mtime(a / "results.json");
  const auto a_log = fs::file_size(a / "train.log");
  const json m1 = json::parse(ssmlab::read_file(out / "sweep.json"));
  EXPECT_EQ(m1["runs"][0]["status"], "done");
  EXPECT_EQ(m1["runs"][1]["status"], "stopped");
  EXPECT_EQ(m1["runs"][2]["status"], "failed");
  EXPECT_EQ(m1["runs"][1]["values"]["train.max_steps"], 30);

  const Cmd second = run_ssmlab("sweep " + sweep_file.string() + " --jobs 2 --out " + out.string(),
                                tmp.path / "second.txt");
  EXPECT_EQ(second.status, 1) << second.output;  // the bad device still fails, and is reported again
  EXPECT_NE(second.output.find("FAILED " + c.string()), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("2/3 done (1 skipped as already done), 1 failed"), std::string::npos) << second.output;
  EXPECT_TRUE(fs::exists(b / "DONE")) << second.output;
  EXPECT_NE(ssmlab::read_file(b / "train.log").find("resumed from"), std::string::npos);  // not restarted
  EXPECT_EQ(last_step(b / "metrics.jsonl"), 30);
  // The finished run was not touched: no new attempt in its log, same DONE and results.json.
  EXPECT_EQ(mtime(a / "DONE"), a_done);
  EXPECT_EQ(mtime(a / "results.json"), a_results);
  EXPECT_EQ(fs::file_size(a / "train.log"), a_log);
  const json m2 = json::parse(ssmlab::read_file(out / "sweep.json"));
  EXPECT_EQ(m2["runs"][0]["status"], "done-before");
  EXPECT_EQ(m2["runs"][1]["status"], "done");
  EXPECT_EQ(m2["runs"][2]["status"], "failed");
  EXPECT_EQ(m2["runs"][2]["attempts"], 1);  // attempts count this runner's tries
  EXPECT_NE(m2["runs"][2]["error"].get<std::string>().find("exit status 2"), std::string::npos);

  // The results table: one row per run folder, the differing keys, the metrics of results.json.
  const Cmd res = run_ssmlab("results " + out.string() + " --csv " + (tmp.path / "r.csv").string() + " --sqlite " +
                                 (tmp.path / "r.sqlite").string(),
                             tmp.path / "results.txt");
  ASSERT_EQ(res.status, 0) << res.output;
  const auto rows = read_csv(tmp.path / "r.csv");
  ASSERT_EQ(rows.size(), 3u);
  const fs::path dirs[] = {a, b, c};
  for (size_t i = 0; i < 3; ++i) {
    const auto& row = rows[i];
    EXPECT_EQ(row.at("run"), dirs[i].filename().string());
    EXPECT_EQ(row.at("run.seed"), std::to_string(i + 1));
    EXPECT_TRUE(row.count("train.max_steps") && row.count("train.device"));
    EXPECT_EQ(row.count("model.d_model"), 0u);  // the same in every run: not a column
    if (i < 2) {
      const json r = json::parse(ssmlab::read_file(dirs[i] / "results.json"));
      EXPECT_EQ(row.at("status"), "done");
      EXPECT_EQ(row.at("steps"), std::to_string(r["steps"].get<int64_t>()));
      EXPECT_DOUBLE_EQ(std::stod(row.at("test_acc")), r["test_acc"].get<double>());
      EXPECT_DOUBLE_EQ(std::stod(row.at("test_loss")), r["test_loss"].get<double>());
    } else {
      EXPECT_EQ(row.at("status"), "failed");
      EXPECT_EQ(row.at("test_acc"), "");
      EXPECT_NE(row.at("error").find("exit status 2: ssmlab train "), std::string::npos) << row.at("error");
      EXPECT_NE(row.at("error").find("error: unknown device 'bogus'"), std::string::npos) << row.at("error");
    }
  }
  EXPECT_EQ(rows[1].at("steps"), "30");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2((tmp.path / "r.sqlite").c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT run_seed, steps, test_acc FROM runs WHERE status = 'done' ORDER BY 1",
                               -1, &st, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  int n = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    EXPECT_EQ(sqlite3_column_int64(st, 0), n + 1);
    EXPECT_EQ(sqlite3_column_int64(st, 1), n == 0 ? 6 : 30);
    EXPECT_DOUBLE_EQ(sqlite3_column_double(st, 2), std::stod(rows[static_cast<size_t>(n)].at("test_acc")));
    ++n;
  }
  EXPECT_EQ(n, 2);
  sqlite3_finalize(st);
  sqlite3_close(db);
  // A filter keeps matching rows only, and by default writes nothing.
  const Cmd filtered = run_ssmlab("results " + out.string() + " --filter train.device=cpu --filter \"steps>=10\"",
                                  tmp.path / "filtered.txt");
  ASSERT_EQ(filtered.status, 0) << filtered.output;
  EXPECT_NE(filtered.output.find(b.filename().string()), std::string::npos) << filtered.output;
  EXPECT_EQ(filtered.output.find(a.filename().string()), std::string::npos) << filtered.output;
  EXPECT_FALSE(fs::exists(out / "results.csv.tmp"));
  const Cmd bad = run_ssmlab("results " + out.string() + " --filter train.dvice=cpu", tmp.path / "bad.txt");
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.output.find("train.dvice"), std::string::npos) << bad.output;
}

// A complete checkpoint (the trainer writes step_N.tmp and renames it to step_N).
bool has_checkpoint(const fs::path& run) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run / "checkpoints", ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step_", 0) == 0 && name.find('.') == std::string::npos) return true;
  }
  return false;
}

bool alive(pid_t pid) { return kill(pid, 0) == 0; }

// The run's process from its lock text, "pid <n> on <host> since ... (ssmlab sweep pid <m>)" (run_lock.h).
pid_t read_pid(const fs::path& lock) {
  try {
    const std::string text = ssmlab::read_file(lock);
    if (text.rfind("pid ", 0) != 0) return -1;
    return static_cast<pid_t>(std::stol(text.substr(4)));
  } catch (const std::exception&) {
    return -1;
  }
}

// Waits (up to 20 s) until `pred` holds.
template <class F>
bool wait_for(F pred) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST(Runner, KilledChildAndInterruptedRunnerResume) {
  ssmlab::test::TempDir tmp;
  const fs::path sweep_file = tmp.path / "long.toml";
  std::ofstream(sweep_file) << "[sweep]\ngrid = { \"run.seed\" = [1, 2] }\n" << tiny_config() << "max_steps = 400\n";
  const fs::path out = tmp.path / "sweep";
  const auto sweep = ssmlab::experiments::load_sweep(sweep_file);
  const fs::path a = out / sweep.runs[0].folder, b = out / sweep.runs[1].folder;
  const fs::path log = tmp.path / "first.txt";

  const pid_t runner = fork();
  ASSERT_GE(runner, 0);
  if (runner == 0) {
    const std::string cmd = kSsmlab.string() + " sweep " + sweep_file.string() + " --jobs 1 --out " + out.string() +
                            " > " + log.string() + " 2>&1";
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Run 1 gets a SIGKILL once it has a checkpoint (an OOM kill, say): the runner counts it failed, goes on.
  ASSERT_TRUE(wait_for([&] { return has_checkpoint(a); }));
  const pid_t child_a = read_pid(a / ".lock");
  ASSERT_GT(child_a, 0);
  kill(child_a, SIGKILL);
  // Then Ctrl-C (SIGINT to the runner) while run 2 trains: the runner stops it and leaves.
  ASSERT_TRUE(wait_for([&] { return has_checkpoint(b); }));
  const pid_t child_b = read_pid(b / ".lock");
  ASSERT_GT(child_b, 0);
  kill(runner, SIGINT);
  int st = 0;
  ASSERT_EQ(waitpid(runner, &st, 0), runner);
  const std::string first = ssmlab::read_file(log);
  ASSERT_TRUE(WIFEXITED(st)) << first;
  EXPECT_EQ(WEXITSTATUS(st), 130) << first;
  EXPECT_FALSE(alive(child_b)) << "the runner left its run behind";
  EXPECT_NE(first.find("killed by signal 9"), std::string::npos) << first;
  EXPECT_NE(first.find("interrupted"), std::string::npos) << first;
  EXPECT_FALSE(fs::exists(a / "DONE"));
  EXPECT_FALSE(fs::exists(b / "DONE"));

  const Cmd again = run_ssmlab("sweep " + sweep_file.string() + " --jobs 2 --out " + out.string(), tmp.path / "2.txt");
  EXPECT_EQ(again.status, 0) << again.output;
  EXPECT_NE(again.output.find("2/2 done (0 skipped as already done), 0 failed"), std::string::npos) << again.output;
  for (const auto& d : {a, b}) {
    EXPECT_TRUE(fs::exists(d / "DONE"));
    EXPECT_EQ(last_step(d / "metrics.jsonl"), 400);
    EXPECT_NE(ssmlab::read_file(d / "train.log").find("resumed from"), std::string::npos) << d;
  }
}

}  // namespace

namespace {

using ssmlab::experiments::plan_slots;
using ssmlab::experiments::RunnerOptions;

TEST(Runner, SlotsPackRunsOverGpusWithinTheMemoryBudget) {
  RunnerOptions o;
  EXPECT_EQ(plan_slots(o), (std::vector<int64_t>{-1}));
  o.jobs = 3;
  EXPECT_EQ(plan_slots(o), (std::vector<int64_t>{-1, -1, -1}));
  o.mem_per_run_gb = 10, o.mem_gb = 25;  // host memory: 2 runs fit
  EXPECT_EQ(plan_slots(o), (std::vector<int64_t>{-1, -1}));
  o = RunnerOptions{};
  o.gpus = {0, 1};
  o.per_gpu = 2;
  EXPECT_EQ(plan_slots(o), (std::vector<int64_t>{0, 0, 1, 1}));
  o.jobs = 3;  // spread first: both GPUs get runs
  EXPECT_EQ(plan_slots(o), (std::vector<int64_t>{0, 0, 1}));
  o.jobs = 0;
  o.per_gpu = 4;
  o.mem_per_run_gb = 30, o.mem_gb = 80;  // 2 of 30 GB fit in 80 GB
  EXPECT_EQ(plan_slots(o), (std::vector<int64_t>{0, 0, 1, 1}));
  o.mem_per_run_gb = 90;
  ssmlab::test::expect_error([&] { plan_slots(o); }, {"--mem-per-run 90", "does not fit on GPU 0"});
  o = RunnerOptions{};
  o.gpus = {1, 1};
  ssmlab::test::expect_error([&] { plan_slots(o); }, {"--gpus lists GPU 1 twice"});
}

// The runner with a stand-in for the ssmlab binary that records the GPU it was given: each run sees exactly
// one GPU of --gpus through CUDA_VISIBLE_DEVICES, and both GPUs are used.
TEST(Runner, EachRunSeesOneGpu) {
  ssmlab::test::TempDir tmp;
  const fs::path fake = tmp.path / "fake-ssmlab";
  std::ofstream(fake) << "#!/bin/sh\n# args: train CONFIG --out DIR\nsleep 0.3\n"
                         "echo \"$CUDA_VISIBLE_DEVICES\" > \"$4/gpu\"\necho '{\"test_acc\": 1.0}' > \"$4/results.json\"\n"
                         "touch \"$4/DONE\"\n";
  fs::permissions(fake, fs::perms::owner_all);
  std::ofstream(tmp.path / "s.toml") << "[sweep]\ngrid = { \"run.seed\" = [1, 2, 3, 4] }\n" << tiny_config();
  auto sweep = ssmlab::experiments::load_sweep(tmp.path / "s.toml");
  sweep.out_dir = tmp.path / "out";
  RunnerOptions o;
  o.gpus = {3, 5};
  o.exe = fake;
  o.quiet = true;
  setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5", 1);  // replaced per run, not appended to
  const auto report = ssmlab::experiments::run_sweep(sweep, o);
  unsetenv("CUDA_VISIBLE_DEVICES");
  EXPECT_EQ(report.count(ssmlab::experiments::RunStatus::done), 4u);
  std::set<std::string> seen;
  for (const auto& run : sweep.runs) {
    const std::string gpu = ssmlab::read_file(sweep.out_dir / run.folder / "gpu");
    EXPECT_TRUE(gpu == "3\n" || gpu == "5\n") << gpu;
    seen.insert(gpu);
  }
  EXPECT_EQ(seen.size(), 2u);
}

}  // namespace

}  // namespace experiments_test_runner
