// Limits of every parser we own (TOML, --set keys, safetensors headers, metrics.jsonl) and the bounds on
// config values: each refusal is the documented error type and names the limit or the key.
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include <ATen/ATen.h>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/experiments/config.h"
#include "ssmlab/experiments/options_io.h"
#include "ssmlab/experiments/results.h"
#include "ssmlab/experiments/validate.h"
#include "ssmlab/models/safetensors.h"
#include "ssmlab/report/io.h"
#include "ssmlab/runfolder/run_folder.h"
#include "ssmlab/tasks/mqar.h"
#include "test_util.h"

namespace experiments_test_limits {

namespace fs = std::filesystem;
using namespace ssmlab;
using experiments::Config;

namespace {

// The message of the expected error type E thrown by f, or a description of what happened instead.
template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("WRONG TYPE: ") + e.what();
  }
  return "NO ERROR";
}

bool has(const std::string& msg, const std::string& part) { return msg.find(part) != std::string::npos; }

std::string config_error(const std::string& text, const std::vector<std::string>& sets = {}) {
  return error_of<ConfigError>([&] { experiments::load_options_from_string<Config>(text, "c.toml", sets); });
}

std::string repeat(const std::string& unit, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += unit;
  return s;
}

TEST(Limits, TomlDottedKeyOfManyParts) {
  const std::string msg = config_error(repeat("a.", 50000) + "b = 1\n");
  EXPECT_TRUE(has(msg, "c.toml:1:") && has(msg, "limit of 32")) << msg;
  EXPECT_TRUE(has(config_error("[" + repeat("t.", 40) + "x]\n"), "limit of 32"));
}

TEST(Limits, TomlNesting) {
  EXPECT_TRUE(has(config_error("x = " + repeat("[", 100000) + "\n"), "nested deeper than the limit of 32"));
  EXPECT_TRUE(has(config_error("x = " + repeat("{a=", 5000) + "1" + repeat("}", 5000)), "limit of 32"));
  // Within each limit, but nested past them in total: the tree check names the path.
  std::string text = "[" + repeat("a.", 20) + "b]\nc = " + repeat("{d.e.f.g.h=", 4) + "1" + repeat("}", 4) + "\n";
  EXPECT_TRUE(has(config_error(text), "nested deeper than the limit of 32")) << config_error(text);
  // Strings and comments do not count.
  EXPECT_TRUE(has(config_error("[train]\nschedule = \"" + repeat("[a.", 100) + "\" # " + repeat("{.", 99) + "\n"),
                  "train.schedule must be one of"));
}

TEST(Limits, TomlKeyLengthAndFileSize) {
  EXPECT_TRUE(has(config_error("\"" + std::string(300, 'k') + "\" = 1\n"), "above the limit of 256"));
  EXPECT_TRUE(has(config_error(std::string(5 << 20, '#')), "above the limit of 4194304"));
}

TEST(Limits, SetKeys) {
  EXPECT_TRUE(has(config_error("model.d_model = 32\n", {repeat("a.", 20000) + "b=1"}), "above the limit of 1024"));
  EXPECT_TRUE(has(config_error("model.d_model = 32\n", {repeat("a.", 40) + "b=1"}), "above the limit of 32"));
  EXPECT_TRUE(has(config_error("model.d_model = 32\n", {"task.mqar.train[99999999999999999999999].count=1"}),
                  "item index"));
  EXPECT_TRUE(has(config_error("model.d_model = 32\n", {"model.d_model=" + repeat("[", 1000)}), "limit of 32"));
}

TEST(Limits, SafetensorsHeaderDepthAndRank) {
  auto file = [](const std::string& header) {
    std::string bytes(8, '\0');
    const uint64_t n = header.size();
    std::memcpy(bytes.data(), &n, 8);
    return bytes + header;
  };
  const std::string deep = "{\"a\":" + repeat("[", 100000) + repeat("]", 100000) + "}";
  const std::string msg = error_of<DataError>([&] { models::parse_safetensors(file(deep), "deep.safetensors"); });
  EXPECT_TRUE(has(msg, "deep.safetensors") && has(msg, "limit of 64")) << msg;
  const std::string rank = "{\"a\":{\"dtype\":\"F32\",\"shape\":[" + repeat("1,", 99) + "1],\"data_offsets\":[0,4]}}";
  EXPECT_TRUE(has(error_of<DataError>([&] { models::parse_safetensors(file(rank) + "abcd", "r"); }), "limit of 64"));
  EXPECT_TRUE(has(error_of<DataError>([&] { models::parse_safetensors(file("{\"a\":"), "t"); }), "bad JSON header"));
}

TEST(Limits, MetricsJsonl) {
  const std::string ok = "{\"kind\":\"eval\",\"step\":5,\"test_acc\":0.5}\n";
  runfolder::RunFolder torn;
  runfolder::parse_metrics(ok + "{\"kind\":\"ev", "m.jsonl", torn);  // a torn last line is dropped
  EXPECT_EQ(torn.eval.size(), 1u);
  auto data = [](const std::string& text) {
    return error_of<runfolder::RunFolderError>([&] {
      runfolder::RunFolder r;
      runfolder::parse_metrics(text, "m.jsonl", r);
    });
  };
  EXPECT_TRUE(has(data(ok + "{\"kind\":3}\n" + ok), "m.jsonl:2: \"kind\" must be a string")) << data(ok);
  EXPECT_TRUE(has(data("{\"kind\":\"eval\",\"step\":\"x\"}\n" + ok), "m.jsonl:1: \"step\" must be a number"));
  EXPECT_TRUE(has(data("garbage\n" + ok), "m.jsonl:1: not a JSON object"));
  EXPECT_TRUE(has(data("{\"a\":\"" + std::string(2 << 20, 'x') + "\"}\n" + ok), "above the limit of 1048576"));
  EXPECT_TRUE(has(data("{\"a\":" + repeat("[", 1000) + "\n" + ok), "m.jsonl:1: JSON nested deeper"));
}

TEST(Limits, MqarSegmentCheckDoesNotOverflow) {
  tasks::MqarConfig cfg;
  cfg.vocab_size = 64;
  tasks::MqarSegmentSpec spec;
  spec.seq_len = 32;
  spec.num_kv_pairs = INT64_MAX / 2;  // 4 * K wraps to a negative number
  spec.count = 1;
  const std::string msg = error_of<Error>([&] { tasks::check_mqar_segment(cfg, spec); });
  EXPECT_TRUE(has(msg, "more than 2^63") && has(msg, "seq_len = 32")) << msg;
}

TEST(Bounds, ThreadsAtMostTheCores) {
  const int64_t cores = std::thread::hardware_concurrency();
  if (cores == 0) GTEST_SKIP() << "hardware_concurrency() is unknown here";
  EXPECT_TRUE(has(config_error("[train]\nthreads = 100000\n"), "train.threads must be in [0, ")) << cores;
  EXPECT_NO_THROW(experiments::load_options_from_string<Config>(str("[train]\nthreads = ", cores, "\n"), "c"));
}

TEST(Bounds, NumbersMustBeFinite) {
  EXPECT_TRUE(has(config_error("[train]\nlr = inf\n"), "train.lr must be a finite number, got inf"));
  EXPECT_TRUE(has(config_error("[train]\nlr = nan\n"), "train.lr must be a finite number"));
  EXPECT_TRUE(has(config_error("[train]\nweight_decay = 1.0\n", {"train.grad_clip=-inf"}), "finite"));
}

TEST(Bounds, RunName) {
  auto name_error = [](const std::string& name) {
    return error_of<ConfigError>([&] { experiments::check_run_name(name, "c.toml"); });
  };
  EXPECT_TRUE(has(name_error("../escape"), "run.name may hold only"));
  EXPECT_TRUE(has(name_error("a..b"), "may not contain \"..\""));
  EXPECT_TRUE(has(name_error(""), "1 to 100 characters"));
  EXPECT_TRUE(has(name_error("a b"), "run.name may hold only"));
  EXPECT_EQ(name_error("mqar-L32_v1.2"), "NO ERROR");
  Config cfg;
  cfg.run.name = "x/y";
  EXPECT_TRUE(has(error_of<ConfigError>([&] { experiments::validate_config(cfg, "c.toml"); }), "c.toml: run.name"));
}

TEST(Bounds, EmptyConfigFileIsRefused) {
  test::TempDir tmp;
  for (const std::string text : {"", "# only a comment\n", "[model]\n[train]\n"}) {
    std::ofstream(tmp.path / "c.toml") << text;
    const std::string msg = error_of<ConfigError>([&] { experiments::load_options<Config>(tmp.path / "c.toml"); });
    EXPECT_TRUE(has(msg, "sets no option") && has(msg, "configs/quickstart.toml")) << text << ": " << msg;
  }
  std::ofstream(tmp.path / "c.toml") << "[train]\nlr = 0.01\n";
  EXPECT_NO_THROW(experiments::load_options<Config>(tmp.path / "c.toml"));
}

TEST(Bounds, FilterMatchingNothingListsWhatExists) {
  test::TempDir tmp;
  for (const char* mixer : {"mamba1", "attention"}) {
    const fs::path run = tmp.path / (std::string("r-") + mixer);
    fs::create_directories(run);
    std::ofstream(run / "config.toml") << "[model]\nmixer = \"" << mixer << "\"\n";
  }
  experiments::ResultsOptions opts;
  opts.filters = {"model.mixer=mamba2"};
  const std::string msg = error_of<ConfigError>([&] { experiments::collect_results(tmp.path, opts); });
  EXPECT_TRUE(has(msg, "no run matches") && has(msg, "model.mixer has attention, mamba1")) << msg;
  opts.filters = {"model.mixer=mamba1"};
  EXPECT_EQ(experiments::collect_results(tmp.path, opts).rows.size(), 1u);
}

}  // namespace

}  // namespace experiments_test_limits
