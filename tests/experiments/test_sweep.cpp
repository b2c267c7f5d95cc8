// Sweep expansion: grid, zip, both, order, errors; run-id stability.
#include <gtest/gtest.h>

#include <set>

#include "ssmlab/experiments/options_io.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/experiments/identity.h"
#include "ssmlab/experiments/sweep.h"
#include "test_util.h"

namespace experiments_test_sweep {

namespace {

using ssmlab::experiments::Config;
using ssmlab::experiments::load_options_from_string;
using ssmlab::experiments::load_sweep_from_string;
using ssmlab::experiments::run_id;
using ssmlab::experiments::Sweep;
using ssmlab::test::expect_error;

Sweep expand(const std::string& text, const std::vector<std::string>& sets = {}) {
  return load_sweep_from_string(text, "s.toml", ".", sets);
}

std::vector<std::string> labels(const Sweep& s) {
  std::vector<std::string> out;
  for (const auto& r : s.runs) out.push_back(r.label());
  return out;
}

TEST(Sweep, GridIsCartesianWithTheLastKeyFastest) {
  const Sweep s = expand(R"(
[sweep]
grid = { "model.mixer" = ["mamba1", "attention"], "train.lr" = [1e-3, 3e-3, 1e-2] }
[train]
max_steps = 5
)");
  EXPECT_EQ(s.name, "s");
  EXPECT_EQ(s.out_dir, std::filesystem::path("runs") / "s");
  EXPECT_EQ(s.keys, (std::vector<std::string>{"model.mixer", "train.lr"}));
  EXPECT_EQ(labels(s), (std::vector<std::string>{
                           "model.mixer=mamba1 train.lr=0.001", "model.mixer=mamba1 train.lr=0.003",
                           "model.mixer=mamba1 train.lr=0.01", "model.mixer=attention train.lr=0.001",
                           "model.mixer=attention train.lr=0.003", "model.mixer=attention train.lr=0.01"}));
  EXPECT_EQ(s.runs[4].config.model.mixer, "attention");
  EXPECT_DOUBLE_EQ(s.runs[4].config.train.lr, 3e-3);
  EXPECT_EQ(s.runs[4].config.train.max_steps, 5);  // the rest of the file is the base config
  std::set<std::string> ids;
  for (const auto& r : s.runs) {
    ids.insert(r.id);
    EXPECT_EQ(r.id, run_id(r.config));
    EXPECT_EQ(r.folder, "run-" + r.id.substr(0, 8));
  }
  EXPECT_EQ(ids.size(), 6u);
}

TEST(Sweep, AxesFollowTheFileOrderNotTheKeyNames) {
  // toml++ sorts keys; the expansion must not: train.lr is written first, so it is the outer loop.
  const Sweep s = expand(R"(
[sweep.grid]
"train.lr" = [1e-3, 1e-2]
"model.d_model" = [16, 32]
)");
  EXPECT_EQ(s.keys, (std::vector<std::string>{"train.lr", "model.d_model"}));
  EXPECT_EQ(labels(s)[1], "train.lr=0.001 model.d_model=32");
}

TEST(Sweep, ZipWalksListsTogetherAndCombinesWithGrid) {
  const Sweep zip = expand(R"(
[sweep]
zip = { "model.d_model" = [16, 32, 64], "model.n_layers" = [1, 2, 3] }
)");
  EXPECT_EQ(labels(zip), (std::vector<std::string>{"model.d_model=16 model.n_layers=1", "model.d_model=32 model.n_layers=2",
                                                   "model.d_model=64 model.n_layers=3"}));
  const Sweep both = expand(R"(
[sweep]
grid = { "run.seed" = [0, 1] }
zip = { "model.d_model" = [16, 32], model = { n_layers = [1, 2] } }
)");
  ASSERT_EQ(both.runs.size(), 4u);
  EXPECT_EQ(labels(both)[1], "run.seed=0 model.d_model=32 model.n_layers=2");
  EXPECT_EQ(labels(both)[2], "run.seed=1 model.d_model=16 model.n_layers=1");
  EXPECT_EQ(both.runs[3].config.model.n_layers, 2);
  EXPECT_EQ(both.runs[3].config.run.seed, 1);
  // Several zip groups: each is its own axis.
  const Sweep groups = expand(R"(
[[sweep.zip]]
"model.d_model" = [16, 32]
"model.n_layers" = [1, 2]
[[sweep.zip]]
"train.lr" = [1e-3, 1e-2]
"train.warmup_steps" = [0, 10]
)");
  EXPECT_EQ(groups.runs.size(), 4u);
}

TEST(Sweep, SweepsTablesAndArrayItems) {
  const Sweep s = expand(R"(
[sweep]
grid = { "task.mqar.train[0].seq_len" = [16, 32], "model.mixers.mamba1" = [{ d_state = 4 }, { d_state = 8 }] }
[[task.mqar.train]]
seq_len = 64
num_kv_pairs = 4
count = 100
)");
  ASSERT_EQ(s.runs.size(), 4u);
  EXPECT_EQ(s.runs[3].config.task.mqar.train.at(0).seq_len, 32);
  EXPECT_EQ(s.runs[3].config.task.mqar.train.at(0).num_kv_pairs, 4);
  EXPECT_EQ(s.runs[3].config.model.mixers.mamba1.d_state, 8);
}

TEST(Sweep, SetOverridesTheBaseAndNameAndOutDirAreRead) {
  const Sweep s = expand(R"(
[sweep]
name = "lr"
out_dir = "elsewhere/lr"
grid = { "train.lr" = [1e-3, 1e-2] }
)",
                         {"model.d_model=48"});
  EXPECT_EQ(s.name, "lr");
  EXPECT_EQ(s.out_dir, std::filesystem::path("elsewhere/lr"));
  EXPECT_EQ(s.runs[1].config.model.d_model, 48);
  expect_error([] { expand("[sweep]\ngrid = { \"train.lr\" = [1e-3, 1e-2] }\n", {"train.lr=0.1"}); },
               {"--set train.lr", "swept"});
}

TEST(Sweep, ErrorsNameTheProblem) {
  expect_error([] { expand("[model]\nd_model = 8\n"); }, {"s.toml", "no [sweep] table"});
  expect_error([] { expand("[sweep]\nname = \"x\"\n"); }, {"s.toml", "no grid or zip"});
  expect_error([] { expand("[sweep]\ngird = { \"train.lr\" = [1] }\n"); }, {"unknown key 'sweep.gird'"});
  expect_error([] { expand("[sweep]\ngrid = { \"model.d_stat\" = [8, 16] }\n"); },
               {"s.toml", "model.d_stat", "unknown key"});
  expect_error([] { expand("[sweep]\ngrid = { \"model.mixers.mamba1.d_stat\" = [8, 16] }\n"); },
               {"model.mixers.mamba1.d_stat", "did you mean 'd_state'"});
  expect_error([] { expand("[sweep]\nzip = { \"model.d_model\" = [16, 32], \"model.n_layers\" = [1, 2, 3] }\n"); },
               {"s.toml", "zip lists must have the same length", "model.d_model has 2", "model.n_layers has 3"});
  expect_error([] { expand("[sweep]\ngrid = { \"train.lr\" = [] }\n"); }, {"'train.lr'", "empty list"});
  expect_error([] { expand("[sweep]\ngrid = { \"train.lr\" = 1e-3 }\n"); }, {"'train.lr'", "must be a list"});
  expect_error([] { expand("[sweep]\ngrid = [1, 2]\n"); }, {"grid must be a table"});
  expect_error([] { expand("[sweep]\nzip = 3\n"); }, {"zip must be a table"});
  // Value types and ranges are checked for every run before anything runs, naming the run.
  expect_error([] { expand("[sweep]\ngrid = { \"train.lr\" = [1e-3, \"fast\"] }\n"); },
               {"s.toml", "run 2 of 2", "train.lr must be a number", "\"fast\""});
  expect_error([] { expand("[sweep]\ngrid = { \"model.d_model\" = [16, -1] }\n"); }, {"run 2", "model.d_model"});
  expect_error([] { expand("[sweep]\ngrid = { \"train.lr\" = [1e-3, 1e-3] }\n"); }, {"run 2", "same config as run 1"});
  expect_error([] { expand("[sweep]\ngrid = { \"train.lr\" = [1e-3] }\nzip = { \"train.lr\" = [1e-2] }\n"); },
               {"'train.lr' twice"});
  expect_error([] { expand("[sweep]\ngrid = { \"model.mixers.mamba1\" = [{d_state = 4}], \"model.mixers.mamba1.d_conv\" = [2] }\n"); },
               {"twice"});
  expect_error([] { expand("[sweep]\nbase = \"no-such-file.toml\"\ngrid = { \"train.lr\" = [1e-3] }\n"); },
               {"no-such-file.toml", "not found"});
}

TEST(RunId, StableAndSensitiveToValuesNotToKeyOrder) {
  const std::string a = "[model]\nd_model = 32\nn_layers = 2\n[train]\nlr = 0.001\n";
  const std::string b = "[train]\nlr = 1e-3\n[model]\nn_layers = 2\nd_model = 32\n";  // same values, other order
  const Config ca = load_options_from_string<Config>(a, "a"), cb = load_options_from_string<Config>(b, "b");
  EXPECT_EQ(run_id(ca), run_id(cb));
  EXPECT_EQ(run_id(ca), run_id(load_options_from_string<Config>(a, "again")));
  EXPECT_EQ(run_id(ca).size(), 16u);
  Config other = ca;
  other.train.lr = 0.002;
  EXPECT_NE(run_id(ca), run_id(other));
  other = ca;
  other.task.mqar.seed += 1;
  EXPECT_NE(run_id(ca), run_id(other));
  other = ca;
  other.train.halt_after_steps = 5;  // a per-process testing aid, not part of what the run is
  EXPECT_EQ(run_id(ca), run_id(other));
  // A sweep's run and the same config written out by hand share the id (so `ssmlab train` finds the folder).
  const Sweep s = expand("[sweep]\ngrid = { \"model.d_model\" = [32] }\n[model]\nn_layers = 2\n[train]\nlr = 0.001\n");
  EXPECT_EQ(s.runs[0].id, run_id(ca));
  // The id is a pinned function of the run's identity (experiments/identity.h), the same whether the config comes
  // from a file or from a run folder's config.toml.
  EXPECT_EQ(run_id(ca), ssmlab::experiments::identity_hash(load_options_from_string<Config>(
                            ssmlab::experiments::run_config_text(ca), "text")));
}

}  // namespace

}  // namespace experiments_test_sweep
