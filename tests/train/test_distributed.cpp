// Data-parallel training through the ssmlab binary (train/distributed.*, train/launch.*): ranks are real processes
// (`ssmlab train --nproc N`, or RANK/WORLD_SIZE/MASTER_* set by hand as torchrun would), Gloo on CPU. Gradients
// after one step and metrics after several equal one process's on the same global batches; a killed rank stops
// the others with its name and the run resumes; a bad MASTER_PORT or a missing rank fails within a bounded time.
// CUDA ranks: the backend choice, the device of each local rank and the refusal in CPU builds run everywhere;
// DistCuda (2 ranks on GPUs, NCCL and Gloo, against one process) skips with its reason where no GPU is seen.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/models/safetensors.h"
#include "ssmlab/train/checkpoint.h"
#include "ssmlab/train/distributed.h"
#include "ssmlab/train/launch.h"
#include "cuda_test_util.h"
#include "test_util.h"
#include "tolerances.h"

namespace train_test_distributed {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kSsmlabBin = fs::path(SSMLAB_BINARY_DIR) / "ssmlab";

// A tiny MQAR model; global batches of 7 (rank shards of 4 + 3, or 3 + 2 + 2: uneven on purpose, so that a plain
// mean of the ranks' mean losses would be wrong); no dropout; no gradient clipping so that AdamW's first moment
// after one step is (1 - beta1) x the gradient itself.
std::string dist_config(int64_t max_steps, int64_t eval_every, int64_t checkpoint_every) {
  return R"(
[run]
name = "ddp"
[model]
mixer = "mamba1"
d_model = 16
n_layers = 2
[model.mixers.mamba1]
d_state = 4
[task]
batch_size = 7
test_batch_size = 5
[task.mqar]
vocab_size = 32
seed = 7
[[task.mqar.train]]
seq_len = 16
num_kv_pairs = 2
count = 70
[[task.mqar.test]]
seq_len = 16
num_kv_pairs = 2
count = 11
[train]
epochs = 1
max_steps = )" + std::to_string(max_steps) + R"(
eval_every = )" + std::to_string(eval_every) + R"(
checkpoint_every = )" + std::to_string(checkpoint_every) + R"(
keep_checkpoints = 10
grad_clip = 0.0
early_stop_acc = 0.0
log_every = 1
tensorboard = false
threads = 1
)";
}

struct DistCmd {
  int status = -1;
  std::string output;
  double seconds = 0;
};

// Runs `env ssmlab args` through the shell, stdout and stderr together.
DistCmd run_dist(const std::string& env, const std::string& args, const fs::path& log) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string cmd = env + " " + kSsmlabBin.string() + " " + args + " > " + log.string() + " 2>&1";
  const int st = std::system(cmd.c_str());
  DistCmd c;
  c.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  c.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  c.output = ssmlab::read_file(log);
  return c;
}

std::vector<json> metrics(const fs::path& run) {
  std::vector<json> out;
  std::ifstream in(run / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

// The gradient of the one step a run took: AdamW's exp_avg after step 1 is (1 - beta1) g.
std::map<std::string, at::Tensor> first_step_gradients(const fs::path& run) {
  const fs::path ckpt = ssmlab::train::latest_checkpoint(run / "checkpoints");
  EXPECT_FALSE(ckpt.empty()) << run;
  std::map<std::string, at::Tensor> g;
  for (const auto& [name, t] : ssmlab::models::load_safetensors(ckpt / "optimizer.safetensors").tensors)
    if (name.ends_with(".exp_avg")) g[name] = t / (1.0 - 0.9);
  return g;
}

// One rank of 2 set up by hand, as torchrun would, with a short rendezvous timeout.
std::string str_env(int rank, int port) {
  return "SSMLAB_DIST_TIMEOUT=1.5 RANK=" + std::to_string(rank) + " WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
         std::to_string(port);
}

class DistTest : public ::testing::Test {
 protected:
  ssmlab::test::TempDir tmp;
  fs::path config(int64_t max_steps, int64_t eval_every, int64_t checkpoint_every) {
    const fs::path f = tmp.path / "ddp.toml";
    std::ofstream(f) << dist_config(max_steps, eval_every, checkpoint_every);
    return f;
  }
};

TEST(DistShard, RowsCoverTheBatchOnceAndEvenly) {
  for (int world : {1, 2, 3, 5})
    for (int64_t rows : {0, 1, 2, 7, 10}) {
      int64_t next = 0;
      for (int r = 0; r < world; ++r) {
        const auto [b, e] = ssmlab::train::shard_rows(rows, r, world);
        EXPECT_EQ(b, next) << rows << " rows, rank " << r << " of " << world;
        EXPECT_GE(e - b, rows / world);
        EXPECT_LE(e - b, rows / world + 1);
        next = e;
      }
      EXPECT_EQ(next, rows);
    }
  EXPECT_EQ(ssmlab::train::shard_rows(7, 0, 2), (std::pair<int64_t, int64_t>{0, 4}));
  EXPECT_EQ(ssmlab::train::shard_rows(7, 2, 3), (std::pair<int64_t, int64_t>{5, 7}));
}

// Runs `f` and returns the message of the ssmlab::Error it throws (as `E`), or a failure when it throws none.
template <class E, class F>
std::string dist_error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

TEST(DistBackend, AutoIsNcclForCudaGlooForCpuAndBadChoicesAreErrors) {
  using ssmlab::train::choose_dist_backend;
  using ssmlab::train::DistBackend;
  EXPECT_EQ(choose_dist_backend("auto", false, false), DistBackend::gloo);
  EXPECT_EQ(choose_dist_backend("auto", false, true), DistBackend::gloo);
  EXPECT_EQ(choose_dist_backend("auto", true, true), DistBackend::nccl);
  EXPECT_EQ(choose_dist_backend("gloo", true, true), DistBackend::gloo);
  EXPECT_EQ(choose_dist_backend("gloo", false, false), DistBackend::gloo);
  EXPECT_EQ(choose_dist_backend("nccl", true, true), DistBackend::nccl);
  EXPECT_STREQ(ssmlab::train::dist_backend_name(DistBackend::nccl), "nccl");
  EXPECT_STREQ(ssmlab::train::dist_backend_name(DistBackend::gloo), "gloo");
  std::string m = dist_error_of<ssmlab::ConfigError>([] { choose_dist_backend("nccl", false, true); });
  EXPECT_NE(m.find("CUDA tensors only"), std::string::npos) << m;
  m = dist_error_of<ssmlab::ConfigError>([] { choose_dist_backend("mpi", false, true); });
  EXPECT_NE(m.find("train.dist_backend = 'mpi'"), std::string::npos) << m;
  // CUDA ranks in a build without CUDA: refused whatever the option, naming the reason.
  for (const char* option : {"auto", "gloo", "nccl"}) {
    m = dist_error_of<ssmlab::Error>([&] { choose_dist_backend(option, true, false); });
    EXPECT_NE(m.find("built without CUDA"), std::string::npos) << option << ": " << m;
  }
}

TEST(DistBackend, EachLocalRankTakesItsOwnGpu) {
  using ssmlab::train::rank_cuda_index;
  // (device, LOCAL_RANK, visible devices, CUDA_VISIBLE_DEVICES set, ranks may share a GPU) -> index
  EXPECT_EQ(rank_cuda_index("cuda", 0, 2, false, false), 0);
  EXPECT_EQ(rank_cuda_index("cuda", 1, 2, false, false), 1);
  EXPECT_EQ(rank_cuda_index("auto", 3, 8, false, false), 3);
  EXPECT_EQ(rank_cuda_index("cuda", 5, 8, true, false), 5);
  EXPECT_EQ(rank_cuda_index("cuda:1", 1, 2, false, false), 1);  // the index it takes anyway
  // One GPU per process through CUDA_VISIBLE_DEVICES (srun --gpus-per-task): every rank's cuda:0.
  EXPECT_EQ(rank_cuda_index("cuda", 3, 1, true, false), 0);
  EXPECT_EQ(rank_cuda_index("cuda:0", 1, 1, true, false), 0);
  // Gloo lets ranks share: they wrap around the visible devices.
  EXPECT_EQ(rank_cuda_index("cuda", 1, 1, false, true), 0);
  EXPECT_EQ(rank_cuda_index("cuda", 5, 2, false, true), 1);
  // NCCL: more local ranks than GPUs is an error naming both numbers and the way out.
  std::string m = dist_error_of<ssmlab::Error>([] { rank_cuda_index("cuda", 2, 2, false, false); });
  EXPECT_NE(m.find("LOCAL_RANK 2 but only 2 CUDA devices are visible"), std::string::npos) << m;
  EXPECT_NE(m.find("train.dist_backend = gloo"), std::string::npos) << m;
  m = dist_error_of<ssmlab::Error>([] { rank_cuda_index("cuda", 1, 1, false, false); });
  EXPECT_NE(m.find("only 1 CUDA device is visible"), std::string::npos) << m;
  m = dist_error_of<ssmlab::Error>([] { rank_cuda_index("cuda", 0, 0, false, true); });
  EXPECT_NE(m.find("no CUDA device is visible"), std::string::npos) << m;
  // A pinned cuda:K that is not the rank's own GPU would put every rank on one device.
  m = dist_error_of<ssmlab::ConfigError>([] { rank_cuda_index("cuda:0", 1, 2, false, false); });
  EXPECT_NE(m.find("would put every rank on one GPU"), std::string::npos) << m;
  EXPECT_NE(m.find("takes cuda:1"), std::string::npos) << m;
  m = dist_error_of<ssmlab::ConfigError>([] { rank_cuda_index("gpu", 0, 2, false, false); });
  EXPECT_NE(m.find("unknown device 'gpu'"), std::string::npos) << m;
}

TEST(DistBackend, CpuBuildsRefuseCudaRanks) {
  if (ssmlab::train::dist_cuda_build()) GTEST_SKIP() << "this build has CUDA (SSMLAB_WITH_CUDA): nothing to refuse";
  // In process: a group of one binds no GPU.
  ssmlab::train::DistEnv env;
  env.master_port = ssmlab::train::free_local_port();
  env.timeout = std::chrono::milliseconds(5000);
  ssmlab::train::ProcessGroup g(env);
  EXPECT_EQ(g.describe(), "Gloo");
  std::string m = dist_error_of<ssmlab::Error>([&] { g.use_cuda(0, ssmlab::train::DistBackend::nccl); });
  EXPECT_NE(m.find("built without CUDA"), std::string::npos) << m;
  m = dist_error_of<ssmlab::Error>([&] { ssmlab::train::bind_rank_device(g, "cuda", "auto"); });
  EXPECT_NE(m.find("built without CUDA"), std::string::npos) << m;
  EXPECT_EQ(ssmlab::train::bind_rank_device(g, "cpu", "auto"), c10::Device(c10::kCPU));
  EXPECT_EQ(ssmlab::train::bind_rank_device(g, "cpu", "gloo"), c10::Device(c10::kCPU));
}

TEST_F(DistTest, CpuBuildsRefuseCudaRanksFromTheCommandLine) {
  if (ssmlab::train::dist_cuda_build()) GTEST_SKIP() << "this build has CUDA (SSMLAB_WITH_CUDA): nothing to refuse";
  const fs::path cfg = config(1, 1, 1);
  const auto c = run_dist("SSMLAB_DIST_TIMEOUT=30", "train " + cfg.string() + " --out " + (tmp.path / "run").string() +
                          " --nproc 2 --set train.device=cuda", tmp.path / "cuda.log");
  EXPECT_NE(c.status, 0) << c.output;
  EXPECT_NE(c.output.find("built without CUDA"), std::string::npos) << c.output;
  const auto bad = run_dist("", "config " + cfg.string() + " --set train.dist_backend=mpi", tmp.path / "mpi.log");
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_NE(bad.output.find("dist_backend"), std::string::npos) << bad.output;
}

// GPU: 2 ranks against one process on the same global batches, gradients after one step compared. NCCL takes one
// GPU per rank (2 needed); Gloo, staging CUDA tensors through host memory, lets both ranks share one GPU.
class DistCuda : public DistTest {};

TEST_F(DistCuda, TwoRanksGradientsEqualOneProcess) {
  if (!ssmlab::train::dist_cuda_build()) GTEST_SKIP() << "a build without CUDA (SSMLAB_WITH_CUDA off)";
  SKIP_WITHOUT_CUDA();
  const int gpus = static_cast<int>(at::getNumGPUs());
  const fs::path cfg = config(/*max_steps=*/1, /*eval_every=*/1, /*checkpoint_every=*/1);
  const std::string on_gpu = " --set train.device=cuda";
  const fs::path one = tmp.path / "one";
  const auto c1 = run_dist("", "train " + cfg.string() + " --out " + one.string() + on_gpu, tmp.path / "one.log");
  ASSERT_EQ(c1.status, 0) << c1.output;
  const auto expected = first_step_gradients(one);
  ASSERT_FALSE(expected.empty());
  std::vector<std::string> backends{"gloo"};
  if (gpus >= 2) backends.push_back("nccl");
  for (const auto& backend : backends) {
    const fs::path two = tmp.path / backend;
    const auto c = run_dist("SSMLAB_DIST_TIMEOUT=60", "train " + cfg.string() + " --out " + two.string() + on_gpu +
                            " --set train.dist_backend=" + backend + " --nproc 2", tmp.path / (backend + ".log"));
    ASSERT_EQ(c.status, 0) << backend << "\n" << c.output;
    EXPECT_NE(c.output.find(backend == "nccl" ? "NCCL (cuda:1)" : "Gloo (cuda:"), std::string::npos) << c.output;
    const auto got = first_step_gradients(two);
    ASSERT_EQ(got.size(), expected.size());
    for (const auto& [name, g] : expected) {
      ASSERT_TRUE(got.count(name)) << name;
      EXPECT_GT(g.abs().max().item<double>(), 0.0) << name << ": a zero gradient proves nothing";
      EXPECT_TRUE(ssmlab::test::all_close(got.at(name), g, ssmlab::test::kFp32Grad, name + " with 2 ranks, " + backend));
    }
  }
  if (gpus < 2) GTEST_SKIP() << "Gloo on one GPU passed; NCCL needs one GPU per rank and this machine sees " << gpus;
}

TEST_F(DistTest, GradientsOfOneStepEqualOneProcessWith2And3Ranks) {
  const fs::path cfg = config(/*max_steps=*/1, /*eval_every=*/1, /*checkpoint_every=*/1);
  const fs::path one = tmp.path / "one";
  const auto c1 = run_dist("", "train " + cfg.string() + " --out " + one.string(), tmp.path / "one.log");
  ASSERT_EQ(c1.status, 0) << c1.output;
  const auto expected = first_step_gradients(one);
  ASSERT_FALSE(expected.empty());
  for (int n : {2, 3}) {
    const fs::path many = tmp.path / ("ranks" + std::to_string(n));
    const auto c = run_dist("SSMLAB_DIST_TIMEOUT=30", "train " + cfg.string() + " --out " + many.string() +
                            " --nproc " + std::to_string(n), tmp.path / "many.log");
    ASSERT_EQ(c.status, 0) << c.output;
    const auto got = first_step_gradients(many);
    ASSERT_EQ(got.size(), expected.size());
    for (const auto& [name, g] : expected) {
      ASSERT_TRUE(got.count(name)) << name;
      EXPECT_GT(g.abs().max().item<double>(), 0.0) << name << ": a zero gradient proves nothing";
      EXPECT_TRUE(ssmlab::test::all_close(got.at(name), g, ssmlab::test::kFp32Grad, name + " with " + std::to_string(n) + " ranks"));
    }
  }
}

TEST_F(DistTest, TwoRanksGiveOneRanksMetricsAndResumeAfterARankIsKilled) {
  const fs::path cfg = config(/*max_steps=*/6, /*eval_every=*/3, /*checkpoint_every=*/2);
  const fs::path one = tmp.path / "one", two = tmp.path / "two";
  const auto c1 = run_dist("", "train " + cfg.string() + " --out " + one.string(), tmp.path / "one.log");
  ASSERT_EQ(c1.status, 0) << c1.output;

  // Rank 1 dies (as a SIGKILL leaves it) before step 5: rank 0 has checkpointed step 4; the launcher names rank 1
  // and ends rank 0, whose next all-reduce fails, within a bounded time.
  const auto killed = run_dist("SSMLAB_DIST_TIMEOUT=20 SSMLAB_FAULT_AT=rank1_before_step_5",
                               "train " + cfg.string() + " --out " + two.string() + " --nproc 2", tmp.path / "k.log");
  EXPECT_NE(killed.status, 0) << killed.output;
  EXPECT_NE(killed.output.find("rank 1 (pid"), std::string::npos) << killed.output;
  EXPECT_NE(killed.output.find("exited with status 137"), std::string::npos) << killed.output;
  EXPECT_LT(killed.seconds, 15.0) << "the surviving rank must stop on its own failed collective, not a timeout\n"
                                  << killed.output;
  EXPECT_FALSE(fs::exists(two / "DONE"));
  ASSERT_FALSE(ssmlab::train::latest_checkpoint(two / "checkpoints").empty()) << killed.output;
  EXPECT_EQ(ssmlab::train::latest_checkpoint(two / "checkpoints").filename(), "step_00000004");

  const auto resumed = run_dist("SSMLAB_DIST_TIMEOUT=30", "train " + cfg.string() + " --out " + two.string() +
                                " --nproc 2", tmp.path / "r.log");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  EXPECT_TRUE(fs::exists(two / "DONE"));

  const auto m1 = metrics(one), m2 = metrics(two);
  ASSERT_EQ(m1.size(), m2.size()) << "the resumed 2-rank run's metrics.jsonl must read as an uninterrupted run's";
  size_t compared = 0;
  for (size_t i = 0; i < m1.size(); ++i) {
    ASSERT_EQ(m1[i]["kind"], m2[i]["kind"]) << i;
    ASSERT_EQ(m1[i]["step"], m2[i]["step"]) << i;
    for (const char* key : {"train_loss", "test_loss", "test_acc"}) {
      if (!m1[i].contains(key)) continue;
      const double a = m2[i][key].get<double>(), e = m1[i][key].get<double>();
      const auto tol = ssmlab::test::kFp32Grad;
      EXPECT_LE(std::abs(a - e), tol.atol + tol.rtol * std::abs(e)) << key << " at step " << m1[i]["step"];
      ++compared;
    }
  }
  EXPECT_GE(compared, 6u + 2u * 2u);
  const json r1 = json::parse(ssmlab::read_file(one / "results.json"));
  const json r2 = json::parse(ssmlab::read_file(two / "results.json"));
  EXPECT_NEAR(r2["test_loss"].get<double>(), r1["test_loss"].get<double>(),
              ssmlab::test::kFp32Grad.atol + ssmlab::test::kFp32Grad.rtol * std::abs(r1["test_loss"].get<double>()));
}

TEST_F(DistTest, BadMasterPortAndMissingRankFailClearlyInBoundedTime) {
  const fs::path cfg = config(2, 1, 1);
  const int port = ssmlab::train::free_local_port();
  const std::string base = "train " + cfg.string() + " --out " + (tmp.path / "run").string();
  // Not a port at all: a config error naming the variable, at once.
  const auto bad = run_dist("RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=http", base, tmp.path / "a.log");
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_NE(bad.output.find("MASTER_PORT='http'"), std::string::npos) << bad.output;
  // Rank 1 with nobody serving the rendezvous at MASTER_PORT.
  const auto lonely = run_dist(str_env(1, port), base, tmp.path / "b.log");
  EXPECT_NE(lonely.status, 0) << lonely.output;
  EXPECT_NE(lonely.output.find("rank 0 does not serve it there"), std::string::npos) << lonely.output;
  EXPECT_NE(lonely.output.find(":" + std::to_string(port)), std::string::npos) << lonely.output;
  EXPECT_LT(lonely.seconds, 12.0) << lonely.output;
  // Rank 0 of 2 whose rank 1 never comes.
  const auto missing = run_dist(str_env(0, port), base, tmp.path / "c.log");
  EXPECT_NE(missing.status, 0) << missing.output;
  EXPECT_NE(missing.output.find("not every rank joined"), std::string::npos) << missing.output;
  EXPECT_LT(missing.seconds, 12.0) << missing.output;
}

}  // namespace

}  // namespace train_test_distributed
