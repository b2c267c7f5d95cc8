// experiments/tensorboard.*: the TensorBoard run name of a sweep run (run.name and the swept values; distinct for
// distinct runs), the hparams of a run (swept keys first, then the basics, typed), and where a run's events go (its
// own folder, or <sweep>/tb/<name>/ when the parent's sweep.json lists it; a malformed manifest falls back).
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include "ssmlab/core/io.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/experiments/tensorboard.h"
#include "test_util.h"

namespace experiments_test_tensorboard {

namespace {

namespace fs = std::filesystem;
using ssmlab::experiments::Config;
using ssmlab::experiments::run_id;
using ssmlab::experiments::tb_hparams;
using ssmlab::experiments::tb_run_name;
using ssmlab::experiments::tb_session;
using ssmlab::train::HParamValue;

Config demo() {
  Config c;
  c.run.name = "demo";
  c.model.mixer = "attention";
  c.train.lr = 0.003;
  return c;
}

TEST(TbNames, RunNameAndSweptValues) {
  const Config c = demo();
  EXPECT_EQ(tb_run_name(c, {"model.mixer", "train.lr"}, run_id(c)), "demo,mixer=attention,lr=0.003");
  EXPECT_EQ(tb_run_name(c, {}, run_id(c)), "demo");
  // Two swept keys ending alike keep their whole keys.
  Config s = demo();
  s.run.seed = 3;
  s.task.mqar.seed = 7;
  EXPECT_EQ(tb_run_name(s, {"run.seed", "task.mqar.seed", "model.mixer"}, run_id(s)),
            "demo,run.seed=3,task.mqar.seed=7,mixer=attention");
}

TEST(TbNames, ReplacedCharactersAddTheRunId) {
  Config a = demo(), b = demo();
  a.run.name = "my run";
  b.run.name = "my_run";
  const std::string na = tb_run_name(a, {"model.mixer"}, run_id(a)), nb = tb_run_name(b, {"model.mixer"}, run_id(b));
  EXPECT_EQ(na, "my_run,mixer=attention~" + run_id(a).substr(0, 8));
  EXPECT_EQ(nb, "my_run,mixer=attention");
  EXPECT_NE(na, nb);
  Config dot = demo();
  dot.run.name = "..";
  EXPECT_EQ(tb_run_name(dot, {}, run_id(dot)), "_.~" + run_id(dot).substr(0, 8)) << "no hidden folder, no '..'";
  // Too long: cut to 200 bytes, ending in the id.
  Config long_name = demo();
  long_name.run.name = std::string(300, 'x');
  const std::string nl = tb_run_name(long_name, {"model.mixer"}, run_id(long_name));
  EXPECT_EQ(nl.size(), 200u);
  EXPECT_TRUE(nl.ends_with("~" + run_id(long_name).substr(0, 8))) << nl;
}

TEST(TbNames, HparamsSweptFirstThenBasicsTyped) {
  Config c = demo();
  c.train.tensorboard = true;
  const auto hp = tb_hparams(c, {"train.tensorboard", "train.lr"});
  ASSERT_GE(hp.size(), 4u);
  EXPECT_EQ(hp[0].first, "train.tensorboard");
  EXPECT_EQ(hp[0].second, HParamValue{true});
  EXPECT_EQ(hp[1].first, "train.lr");
  EXPECT_EQ(hp[1].second, HParamValue{0.003});
  std::set<std::string> names;
  for (const auto& [k, v] : hp) EXPECT_TRUE(names.insert(k).second) << "twice: " << k;
  for (const auto& k : ssmlab::experiments::tb_basic_keys()) EXPECT_TRUE(names.count(k)) << k;
  for (const auto& [k, v] : hp) {
    if (k == "model.mixer") {
      EXPECT_EQ(v, HParamValue{std::string("attention")});
    }
    if (k == "model.d_model") {
      EXPECT_EQ(v, HParamValue{static_cast<double>(c.model.d_model)});
    }
  }
  // A key holding a list of tables is one text value.
  const auto seg = tb_hparams(c, {"task.mqar.train"});
  ASSERT_TRUE(std::holds_alternative<std::string>(seg.at(0).second));
  EXPECT_NE(std::get<std::string>(seg.at(0).second).find("seq_len="), std::string::npos);
}

TEST(TbNames, SessionFolderFromTheSweepManifest) {
  ssmlab::test::TempDir tmp;
  const Config c = demo();
  const fs::path sweep = tmp.path / "sw", run = sweep / ("demo-" + run_id(c).substr(0, 8));
  fs::create_directories(run);
  // No manifest: the run's own folder, basics only.
  auto alone = tb_session(c, run);
  EXPECT_EQ(alone.dir, run);
  EXPECT_TRUE(alone.old_dirs.empty());
  EXPECT_EQ(alone.hparams.size(), ssmlab::experiments::tb_basic_keys().size());
  EXPECT_EQ(fs::path(alone.model_uri), fs::absolute(run).lexically_normal());
  // Listed in sweep.json: <sweep>/tb/<name>/, the swept keys first, the run folder as an old place.
  nlohmann::json m = {{"keys", {"model.mixer", "train.lr"}},
                      {"runs", {{{"folder", "other"}}, {{"folder", run.filename().string()}}}}};
  ssmlab::write_file_atomic(sweep / "sweep.json", m.dump());
  auto in = tb_session(c, run);
  EXPECT_EQ(in.dir, fs::absolute(sweep).lexically_normal() / "tb" / "demo,mixer=attention,lr=0.003");
  ASSERT_EQ(in.old_dirs.size(), 1u);
  EXPECT_EQ(in.old_dirs[0], run);
  EXPECT_EQ(in.hparams.at(0).first, "model.mixer");
  // Not listed there: its own folder.
  ssmlab::write_file_atomic(sweep / "sweep.json", nlohmann::json{{"keys", {"model.mixer"}}, {"runs", nlohmann::json::array()}}.dump());
  EXPECT_EQ(tb_session(c, run).dir, run);
  // A malformed manifest is a warning, not an error: its own folder.
  ssmlab::write_file_atomic(sweep / "sweep.json", "{\"keys\": 3");
  EXPECT_EQ(tb_session(c, run).dir, run);
  ssmlab::write_file_atomic(sweep / "sweep.json", R"({"keys": "model.mixer", "runs": [{"folder": 5}]})");
  EXPECT_EQ(tb_session(c, run).dir, run);
}

}  // namespace

}  // namespace experiments_test_tensorboard
