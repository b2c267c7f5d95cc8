// Every shipped config loads; whole-config errors name the file and the key; the CLI reports them.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "ssmlab/core/error.h"
#include "ssmlab/experiments/options_io.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/experiments/sweep.h"

namespace experiments_test_configs {

namespace {

namespace fs = std::filesystem;

fs::path write_tmp(const std::string& name, const std::string& text) {
  const fs::path p = fs::temp_directory_path() / ("ssmlab_cfg_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(p) << text;
  return p;
}

std::string error_of(const fs::path& file, const std::vector<std::string>& sets = {}) {
  try {
    ssmlab::experiments::load_config(file, sets);
  } catch (const ssmlab::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Configs, EveryShippedConfigLoads) {
  int n = 0;
  for (const auto& entry : fs::recursive_directory_iterator(fs::path(SSMLAB_SOURCE_DIR) / "configs")) {
    if (entry.path().extension() != ".toml") continue;
    std::ifstream in(entry.path());
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.find("\n[sweep]") != std::string::npos || text.starts_with("[sweep]"))  // a config plus [sweep]
      EXPECT_NO_THROW(ssmlab::experiments::load_sweep(entry.path())) << entry.path();
    else
      EXPECT_NO_THROW(ssmlab::experiments::load_config(entry.path())) << entry.path();
    ++n;
  }
  EXPECT_GE(n, 3);
}

TEST(Configs, PaperMqarSetupIsTheSpecs) {
  auto c = ssmlab::experiments::load_config(fs::path(SSMLAB_SOURCE_DIR) / "configs/mqar/mamba-layer2.toml");
  EXPECT_EQ(c.task.mqar.vocab_size, 8192);
  EXPECT_EQ(c.model.d_model, 128);
  int64_t total = 0;
  for (const auto& s : c.task.mqar.train) total += s.count;
  EXPECT_EQ(total, 300000);
  ASSERT_EQ(c.task.mqar.test.size(), 3u);
  EXPECT_EQ(c.task.mqar.test[2].num_kv_pairs, 256);
}

TEST(Configs, ErrorsNameFileAndKey) {
  const auto good = write_tmp("good.toml", "[model]\nd_model = 32\n");
  EXPECT_EQ(error_of(good), "");
  const auto unknown = write_tmp("unknown.toml", "[model]\nd_modle = 32\n");
  std::string e = error_of(unknown);
  EXPECT_NE(e.find(unknown.string()), std::string::npos) << e;
  EXPECT_NE(e.find("d_modle"), std::string::npos) << e;
  const auto wrong_type = write_tmp("type.toml", "[model]\nd_model = \"big\"\n");
  e = error_of(wrong_type);
  EXPECT_NE(e.find("model.d_model"), std::string::npos) << e;
  const auto range = write_tmp("range.toml", "[train]\nlr = -1.0\n");
  e = error_of(range);
  EXPECT_NE(e.find("train.lr"), std::string::npos) << e;
  const auto choice = write_tmp("choice.toml", "[model]\nmixer = \"transformerx\"\n");
  e = error_of(choice);
  EXPECT_NE(e.find("model.mixer"), std::string::npos) << e;
  EXPECT_NE(e.find("mamba1"), std::string::npos) << e;
  // A task segment that breaks MQAR's rules (4K > L).
  const auto seg = write_tmp("seg.toml", "[[task.mqar.test]]\nseq_len = 16\nnum_kv_pairs = 8\ncount = 4\n");
  e = error_of(seg);
  EXPECT_NE(e.find(seg.string()), std::string::npos) << e;
  EXPECT_NE(e.find("task.mqar"), std::string::npos) << e;
  // Overrides are checked the same way.
  e = error_of(good, {"model.n_layers=0"});
  EXPECT_NE(e.find("model.n_layers"), std::string::npos) << e;
  e = error_of(good, {"train.nope=1"});
  EXPECT_NE(e.find("train.nope"), std::string::npos) << e;
  e = error_of(fs::path("/nonexistent/x.toml"));
  EXPECT_NE(e.find("/nonexistent/x.toml"), std::string::npos) << e;
  for (const auto& p : {good, unknown, wrong_type, range, choice, seg}) fs::remove(p);
}

// Runs the ssmlab binary; returns (exit code, stdout + stderr).
std::pair<int, std::string> run_cli(const std::string& args) {
  const std::string cmd = std::string(SSMLAB_BINARY_DIR) + "/ssmlab " + args + " 2>&1";
  FILE* f = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  const int status = pclose(f);
  return {WEXITSTATUS(status), out};
}

TEST(Cli, ListHelpAndErrors) {
  auto [rc, out] = run_cli("list");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("mamba1"), std::string::npos) << out;
  EXPECT_NE(out.find("selective_scan"), std::string::npos) << out;
  std::tie(rc, out) = run_cli("train --help");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("--set"), std::string::npos) << out;
  std::tie(rc, out) = run_cli("list keys");
  EXPECT_NE(out.find("model.mixers.mamba1.d_state"), std::string::npos) << out;
  const auto bad = write_tmp("cli_bad.toml", "[train]\nprecision = \"fp8\"\n");
  std::tie(rc, out) = run_cli("train " + bad.string());
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("train.precision"), std::string::npos) << out;
  std::tie(rc, out) = run_cli("config " + bad.string() + " --set train.precision=bf16");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("bf16"), std::string::npos) << out;
  fs::remove(bad);
}

}  // namespace

}  // namespace experiments_test_configs
