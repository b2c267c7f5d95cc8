#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>

#include "ssmlab/experiments/options_io.h"

namespace experiments_test_options_io {

namespace {

using namespace ssmlab::experiments;
using ssmlab::Check;

// Test-only options: every field type, a nested table, an array of tables and each kind of Check.
struct LayerOpts {
  std::string kind = "mamba1";
  int64_t d_state = 16;
  template <class V>
  void visit(V& v) {
    v("kind", kind, "mixer of this layer", Check::one_of({"mamba1", "mamba2", "attention"}));
    v("d_state", d_state, "SSM state size N", Check::at_least(1));
  }
};

struct ModelOpts {
  int64_t d_model = 64, d_state = 16;
  double dt_min = 1e-3, dropout = 0.1;
  bool bias = false;
  std::string mixer = "mamba2";
  std::vector<LayerOpts> layers = {LayerOpts{}, LayerOpts{"attention", 8}};
  template <class V>
  void visit(V& v) {
    v("d_model", d_model, "model width D", Check::at_least(1));
    v("d_state", d_state, "SSM state size N", Check::at_least(1));
    v("dt_min", dt_min, "smallest initial step", Check::positive());
    v("dropout", dropout, "dropout probability", Check::unit());
    v("bias", bias, "use biases in projections");
    v("mixer", mixer, "sequence mixer", Check::one_of({"mamba1", "mamba2"}));
    v("layers", layers, "per-layer settings");
  }
};

struct TrainOpts {
  double lr = 3e-4, warmup_frac = 0.1;
  std::string precision = "fp32";
  int64_t steps = 1000;
  template <class V>
  void visit(V& v) {
    v("lr", lr, "peak learning rate", Check::positive());
    v("precision", precision, "compute precision", Check::one_of({"fp32", "bf16"}));
    v("steps", steps, "optimizer steps", Check::at_least(0));
    v("warmup_frac", warmup_frac, "share of steps spent warming up", Check{0.0, 1.0, false, /*max_open=*/true});
  }
};

struct Config {
  int64_t seed = 0;
  std::string name = "run";
  ModelOpts model;
  TrainOpts train;
  std::vector<LayerOpts> probes;  // empty by default
  template <class V>
  void visit(V& v) {
    v("seed", seed, "random seed");
    v("name", name, "run name");
    v("model", model, "the network");
    v("train", train, "the optimizer loop");
    v("probes", probes, "extra probe layers");
  }
};

struct BadDefault {
  int64_t n = 0;
  template <class V>
  void visit(V& v) { v("n", n, "must be positive", Check::at_least(1)); }
};

template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const ssmlab::Error& e) {
    return e.what();
  }
  return "(no ssmlab::Error thrown)";
}

std::string load_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return error_of([&] { load_options_from_string<Config>(text, "config.toml", overrides); });
}

::testing::AssertionResult has_all(const std::string& msg, std::initializer_list<const char*> parts) {
  for (const char* p : parts)
    if (msg.find(p) == std::string::npos) return ::testing::AssertionFailure() << "'" << p << "' not in: " << msg;
  return ::testing::AssertionSuccess();
}

TEST(OptionsIo, AbsentFieldsKeepDefaults) {
  const auto c = load_options_from_string<Config>("[model]\nd_state = 32\n", "config.toml");
  EXPECT_EQ(c.model.d_state, 32);
  Config d;
  d.model.d_state = 32;
  EXPECT_EQ(to_toml_string(c), to_toml_string(d));  // every other field, nested and arrays included
}

TEST(OptionsIo, ReadsEveryFieldType) {
  const auto c = load_options_from_string<Config>(R"(seed = 7
name = "long run"
[model]
dt_min = 1          # an integer is fine for a float field
bias = true
mixer = "mamba1"
[[model.layers]]
kind = "mamba2"
[[model.layers]]
d_state = 4
[[model.layers]]
[train]
lr = 1e-3
precision = "bf16")", "config.toml");
  EXPECT_EQ(c.seed, 7);
  EXPECT_EQ(c.name, "long run");
  EXPECT_EQ(c.model.dt_min, 1.0);
  EXPECT_TRUE(c.model.bias);
  ASSERT_EQ(c.model.layers.size(), 3u);  // the file's array replaces the default one
  EXPECT_EQ(c.model.layers[0].kind, "mamba2");
  EXPECT_EQ(c.model.layers[0].d_state, 16);  // an item's absent keys take the item defaults
  EXPECT_EQ(c.model.layers[1].d_state, 4);
  EXPECT_EQ(c.train.lr, 1e-3);
  EXPECT_EQ(c.train.precision, "bf16");
  const auto empty = load_options_from_string<Config>("[model]\nlayers = []\n", "config.toml");
  EXPECT_TRUE(empty.model.layers.empty());
}

TEST(OptionsIo, UnknownKeysNameFileKeyAndSuggestion) {
  EXPECT_TRUE(has_all(load_error("[model]\nd_stat = 3\n"),
                      {"config.toml: unknown key 'model.d_stat'", "known keys in [model]: d_model, d_state, dt_min",
                       "did you mean 'd_state'?"}));
  EXPECT_TRUE(has_all(load_error("sed = 1\n"), {"config.toml: unknown key 'sed'", "known top-level keys: seed, name",
                                               "did you mean 'seed'?"}));
  EXPECT_TRUE(has_all(load_error("[model]\n[[model.layers]]\nknd = \"x\"\n"),
                      {"unknown key 'model.layers[0].knd'", "known keys in [[model.layers]]: kind, d_state",
                       "did you mean 'kind'?"}));
  const std::string far = load_error("[optimizer]\nlr = 1\n");
  EXPECT_TRUE(has_all(far, {"unknown key 'optimizer'"}));
  EXPECT_EQ(far.find("did you mean"), std::string::npos) << far;
}

TEST(OptionsIo, WrongTypesNameKeyExpectationAndValue) {
  EXPECT_EQ(load_error("[model]\nd_state = \"16\"\n"),
            "config.toml: model.d_state must be an integer, got string \"16\"");
  EXPECT_EQ(load_error("[model]\nd_state = 16.0\n"), "config.toml: model.d_state must be an integer, got float 16.0");
  EXPECT_EQ(load_error("[model]\nbias = 1\n"), "config.toml: model.bias must be a boolean, got integer 1");
  EXPECT_EQ(load_error("[model]\ndt_min = \"small\"\n"),
            "config.toml: model.dt_min must be a number, got string \"small\"");
  EXPECT_EQ(load_error("name = 3\n"), "config.toml: name must be a string, got integer 3");
  EXPECT_TRUE(has_all(load_error("[model.d_state]\nx = 1\n"), {"model.d_state must be an integer, got table"}));
  EXPECT_EQ(load_error("model = 3\n"), "config.toml: model must be a table, got integer 3");
  EXPECT_EQ(load_error("[model]\nlayers = 3\n"), "config.toml: model.layers must be an array of tables, got integer 3");
  EXPECT_EQ(load_error("[model]\nlayers = [{ kind = \"mamba1\" }, 2]\n"),
            "config.toml: model.layers[1] must be a table, got integer 2");
  EXPECT_TRUE(has_all(load_error("[[model]]\nd_state = 1\n"), {"model must be a table, got array"}));
}

TEST(OptionsIo, ChecksNameBoundAndValue) {
  EXPECT_EQ(load_error("[model]\nd_state = 0\n"), "config.toml: model.d_state must be >= 1, got 0");
  EXPECT_EQ(load_error("[train]\nprecision = \"fp8\"\n"),
            "config.toml: train.precision must be one of fp32, bf16; got \"fp8\"");
  EXPECT_EQ(load_error("[model]\ndt_min = 0\n"), "config.toml: model.dt_min must be > 0, got 0.0");
  EXPECT_EQ(load_error("[model]\ndropout = 1.5\n"), "config.toml: model.dropout must be in [0, 1], got 1.5");
  EXPECT_EQ(load_error("[train]\nwarmup_frac = 1\n"), "config.toml: train.warmup_frac must be in [0, 1), got 1.0");
  EXPECT_EQ(load_error("[model]\ndt_min = nan\n"), "config.toml: model.dt_min must be a finite number, got nan");
  EXPECT_EQ(load_error("[[model.layers]]\n[[model.layers]]\nd_state = -2\n"),
            "config.toml: model.layers[1].d_state must be >= 1, got -2");
}

TEST(OptionsIo, ValidateChecksDefaultsToo) {
  Config c;
  EXPECT_NO_THROW(validate(c, "defaults"));
  c.model.layers[1].kind = "rnn";
  EXPECT_EQ(error_of([&] { validate(c, "defaults"); }),
            "defaults: model.layers[1].kind must be one of mamba1, mamba2, attention; got \"rnn\"");
  EXPECT_EQ(error_of([] { load_options_from_string<BadDefault>("", "empty.toml"); }),
            "empty.toml: n must be >= 1, got 0");
  EXPECT_EQ(load_options_from_string<BadDefault>("n = 2", "x.toml").n, 2);
  Config d;  // from_toml leaves the options unchanged when it fails
  EXPECT_EQ(error_of([&] { from_toml(toml::parse("seed = 5\n[model]\nd_state = 0\n"), d, "t.toml"); }),
            "t.toml: model.d_state must be >= 1, got 0");
  EXPECT_EQ(d.seed, 0);
}

TEST(OptionsIo, OverrideParsesTomlValuesAndBareWords) {
  toml::table t = toml::parse("[model]\nd_state = 16\n");
  EXPECT_EQ(apply_override(t, "model.d_state=32"), "model.d_state");
  EXPECT_EQ(apply_override(t, " a.b.c = [1, 2] "), "a.b.c");  // trimmed; creates tables a and a.b
  for (const char* o : {"train.lr=1e-3", "model.bias=true", "name=\"a = b\"", "model.mixer=mamba1", "title=my run",
                        "inline={ x = 1 }", "n=-7"})
    apply_override(t, o);
  EXPECT_EQ(t, toml::parse(R"(name = "a = b"
title = "my run"
inline = { x = 1 }
n = -7
a.b.c = [1, 2]
[model]
d_state = 32
bias = true
mixer = "mamba1"
[train]
lr = 0.001)"));
}

TEST(OptionsIo, OverrideRejectsBadSyntax) {
  toml::table t = toml::parse("[model]\nd_state = 16\n");
  EXPECT_TRUE(has_all(error_of([&] { apply_override(t, "model.d_state"); }),
                      {"--set model.d_state: expected key=value"}));
  EXPECT_TRUE(has_all(error_of([&] { apply_override(t, "=3"); }), {"--set =3: empty key"}));
  EXPECT_TRUE(has_all(error_of([&] { apply_override(t, "model..x=3"); }), {"empty segment in key 'model..x'"}));
  EXPECT_TRUE(has_all(error_of([&] { apply_override(t, "model.d_state="); }), {"missing value"}));
  EXPECT_TRUE(has_all(error_of([&] { apply_override(t, "name=\"open"); }), {"--set name=\"open: bad TOML value"}));
  EXPECT_TRUE(has_all(error_of([&] { apply_override(t, "x=[1,"); }), {"bad TOML value"}));
  EXPECT_TRUE(has_all(error_of([&] { apply_override(t, "model.d_state.x=1"); }),
                      {"'model.d_state' is integer 16, not a table"}));
  EXPECT_TRUE(has_all(error_of([&] { apply_override(t, "model[0].x=1"); }), {"'model' is table", "not an array"}));
}

TEST(OptionsIo, OverridesWinAndTheirErrorsSayDashDashSet) {
  const auto c = load_options_from_string<Config>("[model]\nd_state = 8\n", "config.toml",
                                                  {"model.d_state=32", "model.mixer=mamba1", "seed=3",
                                                   "model.layers[1].d_state=4", "train.lr=1"});
  EXPECT_EQ(c.model.d_state, 32);
  EXPECT_EQ(c.model.mixer, "mamba1");
  EXPECT_EQ(c.seed, 3);
  EXPECT_EQ(c.model.layers[1].d_state, 4);  // index into the default array (resolved by the reader)
  EXPECT_EQ(c.train.lr, 1.0);
  EXPECT_EQ(load_error("", {"model.d_state=0"}), "--set: model.d_state must be >= 1, got 0");
  EXPECT_EQ(load_error("", {"model.d_state=abc"}), "--set: model.d_state must be an integer, got string \"abc\"");
  EXPECT_TRUE(
      has_all(load_error("", {"model.d_stat=3"}), {"--set: unknown key 'model.d_stat'", "did you mean 'd_state'"}));
  EXPECT_TRUE(has_all(load_error("", {"modle.d_state=3"}), {"--set: unknown key 'modle'", "did you mean 'model'"}));
  EXPECT_EQ(load_error("[model]\nd_state = 0\n", {"seed=1"}), "config.toml: model.d_state must be >= 1, got 0");
  EXPECT_EQ(load_error("", {"model.layers=[{ d_state = 0 }]"}), "--set: model.layers[0].d_state must be >= 1, got 0");
}

Config tricky_config() {
  Config c;
  c.seed = -42;
  c.name = "quote \" back\\slash\nnewline\ttab \x01 ünïcode";
  c.model.dt_min = 0.1;
  c.model.dropout = 1.0 / 3.0;
  c.train.lr = 1e-300;
  c.train.warmup_frac = 5e-324;  // the smallest subnormal
  c.model.bias = true;
  c.model.layers.push_back(LayerOpts{"mamba2", 1});
  c.probes.push_back(LayerOpts{"attention", 3});
  return c;
}

TEST(OptionsIo, ResolvedConfigRoundTripsExactly) {
  Config c = tricky_config();
  const std::string text = to_toml_string(c);
  Config back = load_options_from_string<Config>(text, "resolved.toml");
  EXPECT_EQ(to_toml_string(back), text);
  EXPECT_EQ(config_hash(back), config_hash(c));
  EXPECT_EQ(back.name, c.name);
  EXPECT_EQ(back.train.warmup_frac, c.train.warmup_frac);
  EXPECT_EQ(back.model.layers.size(), 3u);
  Config defaults;  // an empty array of tables is written as `probes = []`
  const std::string d = to_toml_string(defaults);
  EXPECT_NE(d.find("probes = []"), std::string::npos) << d;
  EXPECT_EQ(to_toml_string(load_options_from_string<Config>(d, "d.toml")), d);
}

TEST(OptionsIo, DoublesPrintShortAndParseBackExactly) {
  using ssmlab::experiments::detail::format_value;
  const std::vector<std::pair<double, std::string>> expected = {
      {3e-4, "0.0003"}, {1000.0, "1000.0"}, {0.1, "0.1"}, {1e-8, "1e-08"}, {1e20, "1e+20"}, {-0.0, "-0.0"}};
  for (const auto& [v, text] : expected) EXPECT_EQ(format_value(v), text);
  std::vector<double> values = {1.0 / 3.0, 5e-324, std::numeric_limits<double>::max(), -123456.789, 1e15 + 0.5};
  ssmlab::Rng rng(3);
  for (int i = 0; i < 20000; ++i) {
    const uint64_t bits = rng.next_u64();
    double v;
    std::memcpy(&v, &bits, sizeof(v));
    if (std::isfinite(v)) values.push_back(v);
    values.push_back(rng.normal(0.0, 1e3));
  }
  for (double v : values) {
    const std::string text = format_value(v);
    const auto back = toml::parse("v = " + text)["v"].value<double>();
    ASSERT_TRUE(back.has_value()) << text;
    ASSERT_EQ(std::memcmp(&*back, &v, sizeof(v)), 0) << text;
  }
}

TEST(OptionsIo, ResolvedTextFollowsVisitOrder) {
  Config c;
  const std::string text = to_toml_string(c);
  const std::vector<std::string> in_order = {"seed = 0", "name = \"run\"", "probes = []", "[model]", "d_model = 64",
                                             "d_state = 16", "dt_min = 0.001", "bias = false", "[[model.layers]]",
                                             "[train]", "lr = 0.0003", "warmup_frac = 0.1"};
  size_t at = 0;
  for (const auto& s : in_order) {
    const size_t found = text.find(s, at);
    ASSERT_NE(found, std::string::npos) << "'" << s << "' missing or out of order in:\n" << text;
    at = found;
  }
  const toml::table t = to_toml(c);
  EXPECT_EQ(t["model"]["layers"][1]["kind"].value<std::string>(), "attention");
  EXPECT_TRUE(t["probes"].is_array());
}

TEST(OptionsIo, HashIsStableAndSeesEveryField) {
  Config base;
  const std::string h = config_hash(base);
  EXPECT_EQ(h.size(), 16u);
  EXPECT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(config_hash(base), h);
  const std::vector<std::function<void(Config&)>> edits = {
      [](Config& c) { c.seed = 1; },                  [](Config& c) { c.name = "run2"; },
      [](Config& c) { c.model.d_model = 65; },        [](Config& c) { c.model.d_state = 17; },
      [](Config& c) { c.model.dropout = 0.2; },       [](Config& c) { c.model.bias = true; },
      [](Config& c) { c.model.mixer = "mamba1"; },    [](Config& c) { c.model.layers[1].kind = "mamba2"; },
      [](Config& c) { c.model.layers[0].d_state = 15; }, [](Config& c) { c.model.layers.pop_back(); },
      [](Config& c) { c.train.precision = "bf16"; },  [](Config& c) { c.train.steps = 999; },
      [](Config& c) { c.train.warmup_frac = 0.0; },   [](Config& c) { c.probes.emplace_back(); },
      [](Config& c) { c.train.lr = 3.0001e-4; },      [](Config& c) { c.model.dt_min = std::nextafter(1e-3, 1.0); },
  };
  std::set<std::string> seen = {h};
  for (size_t i = 0; i < edits.size(); ++i) {
    Config c;
    edits[i](c);
    EXPECT_TRUE(seen.insert(config_hash(c)).second) << "edit " << i << " did not change the hash";
  }
}

TEST(OptionsIo, HashIgnoresKeyOrderInTheFile) {
  const auto a = load_options_from_string<Config>(
      "seed = 3\nname = \"x\"\n[model]\nd_state = 8\nbias = true\n[train]\nlr = 0.01\n", "a.toml");
  const auto b = load_options_from_string<Config>(
      "name = \"x\"\nseed = 3\n[train]\nlr = 1e-2\n[model]\nbias = true\nd_state = 8\n", "b.toml");
  const auto c = load_options_from_string<Config>("", "c.toml", {"train.lr=0.010", "model.d_state=8",
                                                                "model.bias=true", "name=x", "seed=3"});
  EXPECT_EQ(config_hash(a), config_hash(b));
  EXPECT_EQ(config_hash(a), config_hash(c));
}

TEST(OptionsIo, HelpListsEveryFieldWithDefault) {
  Config c;
  const std::string help = help_text(c);
  for (const char* s : {"seed", "name", "model", "model.d_model", "model.d_state", "model.dt_min", "model.dropout",
                        "model.bias", "model.mixer", "model.layers", "model.layers[].kind", "model.layers[].d_state",
                        "train", "train.lr", "train.precision", "train.steps", "train.warmup_frac", "probes",
                        "probes[].kind", "probes[].d_state"})
    EXPECT_NE(help.find(std::string("  ") + s + " "), std::string::npos) << s << " missing in:\n" << help;
  EXPECT_TRUE(has_all(help, {"(int, default 16)", "SSM state size N", "[>= 1]", "(float, default 0.001)", "[> 0]",
                             "(bool, default false)", "(string, default \"mamba2\")", "[one of mamba1, mamba2]",
                             "(array of tables, default 2 items)", "(array of tables, default 0 items)",
                             "[in [0, 1)]", "(table)", "the optimizer loop"}));
  const size_t line = help.find("  model.d_state ");
  const std::string model_d_state = help.substr(line, help.find('\n', line) - line);
  EXPECT_TRUE(has_all(model_d_state, {"(int, default 16)", "SSM state size N", "[>= 1]"})) << model_d_state;
  EXPECT_EQ(std::count(help.begin(), help.end(), '\n'), 20);
}

TEST(OptionsIo, SyntaxErrorReportsFileLineAndColumn) {
  const std::string msg = load_error("seed = 1\n\n[model\nd_state = 3\n");
  EXPECT_TRUE(has_all(msg, {"config.toml:3:", "TOML syntax error"})) << msg;
  EXPECT_TRUE(has_all(load_error("seed = 1\nseed = 2\n"), {"config.toml:2:"}));
}

TEST(OptionsIo, LoadsFilesAndNamesThePath) {
  const std::filesystem::path missing = std::filesystem::path(::testing::TempDir()) / "no_such_dir" / "cfg.toml";
  EXPECT_TRUE(has_all(error_of([&] { load_options<Config>(missing); }), {"not found", missing.string().c_str()}));
  const std::filesystem::path file = std::filesystem::path(::testing::TempDir()) / "ssmlab_options_io_test.toml";
  std::ofstream(file) << "[model]\nd_state = 24\n";
  const auto c = load_options<Config>(file, {"seed=9"});
  EXPECT_EQ(c.model.d_state, 24);
  EXPECT_EQ(c.seed, 9);
  std::ofstream(file) << "[model]\nd_state = true\n";
  EXPECT_EQ(error_of([&] { load_options<Config>(file); }),
            file.string() + ": model.d_state must be an integer, got boolean true");
  std::filesystem::remove(file);
}

TEST(OptionsIo, GetAndSetSingleFields) {
  Config c;
  EXPECT_EQ(get_field(c, "model.d_state"), "16");
  EXPECT_EQ(get_field(c, "model.mixer"), "\"mamba2\"");
  EXPECT_EQ(get_field(c, "train.lr"), "0.0003");
  EXPECT_EQ(get_field(c, "model.bias"), "false");
  EXPECT_EQ(get_field(c, "model.layers[1].kind"), "\"attention\"");
  EXPECT_EQ(get_field(c, "model.layers[1]"), "{ d_state = 8, kind = \"attention\" }");
  EXPECT_EQ(get_field(c, "probes"), "[]");
  EXPECT_TRUE(has_all(error_of([&] { get_field(c, "model.d_stat"); }),
                      {"unknown key 'model.d_stat'", "did you mean 'd_state'"}));
  EXPECT_TRUE(has_all(error_of([&] { get_field(c, "model.layers[5]"); }), {"has 2 items"}));

  set_field(c, "model.d_state", "32", "sweep");
  EXPECT_EQ(c.model.d_state, 32);
  set_field(c, "model.mixer", "mamba1", "sweep");  // a bare word is a string
  EXPECT_EQ(c.model.mixer, "mamba1");
  set_field(c, "model.layers[0].d_state", "4", "sweep");
  EXPECT_EQ(c.model.layers[0].d_state, 4);
  set_field(c, "train.lr", "2", "sweep");
  EXPECT_EQ(c.train.lr, 2.0);
  EXPECT_EQ(error_of([&] { set_field(c, "model.d_state", "0", "sweep"); }), "sweep: model.d_state must be >= 1, got 0");
  EXPECT_EQ(c.model.d_state, 32);  // unchanged by the failed set
  EXPECT_TRUE(has_all(error_of([&] { set_field(c, "model.d_stat", "3", "sweep"); }),
                      {"sweep: unknown key 'model.d_stat'", "did you mean 'd_state'"}));
  EXPECT_TRUE(has_all(error_of([&] { set_field(c, "train.precision", "fp8", "sweep"); }),
                      {"sweep: train.precision must be one of fp32, bf16; got \"fp8\""}));

  Config t = tricky_config();  // get_field then set_field of the same text changes nothing
  const std::string before = to_toml_string(t);
  for (const char* key : {"seed", "name", "model.dt_min", "model.dropout", "train.lr", "train.warmup_frac",
                          "model.layers[2]", "model.layers", "probes", "model"}) {
    set_field(t, key, get_field(t, key), "roundtrip");
    EXPECT_EQ(to_toml_string(t), before) << key;
  }
}

}  // namespace

}  // namespace experiments_test_options_io
