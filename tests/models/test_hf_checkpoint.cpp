// Hugging Face Mamba / Mamba-2 folders (models/hf_checkpoint.h) against the committed fixtures of
// tests/fixtures/hf (scripts/make_hf_fixtures.py: transformers' save_pretrained of random weights, and an
// independent float64 time-stepped forward of the same weights, layer by layer).
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/core/trace.h"
#include "ssmlab/mixers/mamba1.h"
#include "ssmlab/models/hf_checkpoint.h"
#include "ssmlab/models/safetensors.h"
#include "test_util.h"
#include "tolerances.h"

namespace models_test_hf_checkpoint {

namespace {

namespace fs = std::filesystem;
using ssmlab::models::HfModelInfo;

fs::path hf_fixture(const std::string& name) { return fs::path(SSMLAB_SOURCE_DIR) / "tests/fixtures/hf" / name; }

// ssmlab's float64 forward of a fixture folder against its reference, the logits and every layer's output.
void expect_matches_reference(const std::string& name, const std::string& reference = "reference.safetensors",
                              const std::string& norm_groups = "") {
  SCOPED_TRACE(name + " / " + reference);
  HfModelInfo info;
  auto model = ssmlab::models::load_hf_model(hf_fixture(name), at::kDouble, &info, norm_groups);
  const auto ref = ssmlab::models::load_safetensors(hf_fixture(name) / reference).tensors;
  const at::Tensor ids = ref.at("input_ids");
  ssmlab::Trace trace({"block_out"});
  at::NoGradGuard no_grad;
  const at::Tensor h0 = model->embed(ids);
  EXPECT_TRUE(ssmlab::test::all_close(h0, ref.at("hidden.0"), ssmlab::test::kFp64Forward, "embeddings"));
  const at::Tensor feats = model->features(h0, &trace);
  const int64_t n = info.options.n_layers;
  for (int64_t i = 0; i < n; ++i)
    EXPECT_TRUE(ssmlab::test::all_close(trace.get("block_out", i), ref.at("hidden." + std::to_string(i + 1)),
                                        ssmlab::test::kFp64Forward, "block " + std::to_string(i)));
  EXPECT_TRUE(ssmlab::test::all_close(feats, ref.at("hidden." + std::to_string(n + 1)), ssmlab::test::kFp64Forward,
                                      "final norm"));
  const at::Tensor logits = model->head(feats);
  EXPECT_EQ(logits.scalar_type(), at::kDouble);
  EXPECT_TRUE(ssmlab::test::all_close(logits, ref.at("logits"), ssmlab::test::kFp64Forward, "logits"));
  std::printf("  %s %s: float64 max |logit error| %.3g (logits up to %.3g)\n", name.c_str(), reference.c_str(),
              (logits - ref.at("logits")).abs().max().item<double>(), ref.at("logits").abs().max().item<double>());
  // transformers' own float32 forward of the same weights (it groups the norm): float32 agreement.
  if (norm_groups == "whole") return;
  auto model32 = ssmlab::models::load_hf_model(hf_fixture(name), at::kFloat, nullptr, norm_groups);
  const at::Tensor logits32 = model32->forward(ids);
  EXPECT_TRUE(ssmlab::test::all_close(logits32, ref.at("logits_transformers"), ssmlab::test::kFp32Forward,
                                      "float32 logits vs transformers"));
  std::printf("  %s: float32 max |logit - transformers'| %.3g\n", name.c_str(),
              (logits32.to(at::kDouble) - ref.at("logits_transformers").to(at::kDouble)).abs().max().item<double>());
}

TEST(HfCheckpoint, Mamba1TransformersLogitsAndLayers) { expect_matches_reference("mamba1-tf"); }
TEST(HfCheckpoint, Mamba1MambaSsmLayoutPaddedVocabUntiedHead) {
  HfModelInfo info = ssmlab::models::read_hf_config(hf_fixture("mamba1-ssm"));
  EXPECT_EQ(info.layout, "mamba_ssm");
  EXPECT_EQ(info.vocab_size, 48);  // 44 padded to a multiple of 8
  EXPECT_FALSE(info.options.tie_embeddings);
  EXPECT_EQ(info.options.mixers.mamba1.dt_rank, 4);
  EXPECT_TRUE(info.options.mixers.mamba1.bias);
  expect_matches_reference("mamba1-ssm");
}
TEST(HfCheckpoint, Mamba2OneGroupShardedUntied) {
  EXPECT_TRUE(fs::exists(hf_fixture("mamba2-tf-g1") / "model.safetensors.index.json"));
  EXPECT_FALSE(ssmlab::models::read_hf_config(hf_fixture("mamba2-tf-g1")).options.tie_embeddings);
  expect_matches_reference("mamba2-tf-g1");
}
TEST(HfCheckpoint, Mamba2TwoGroupsGroupedNorm) { expect_matches_reference("mamba2-tf-g2"); }
TEST(HfCheckpoint, Mamba2TwoGroupsWholeWidthNorm) {
  expect_matches_reference("mamba2-tf-g2", "reference_whole.safetensors", "whole");
  // The two groupings really differ here (so each test can fail).
  auto grouped = ssmlab::models::load_hf_model(hf_fixture("mamba2-tf-g2"), at::kDouble);
  const auto ref = ssmlab::models::load_safetensors(hf_fixture("mamba2-tf-g2") / "reference_whole.safetensors").tensors;
  at::NoGradGuard no_grad;
  EXPECT_GT((grouped->forward(ref.at("input_ids")) - ref.at("logits")).abs().max().item<double>(), 1e-3);
}
TEST(HfCheckpoint, Mamba2MambaSsmLayout) {
  EXPECT_EQ(ssmlab::models::read_hf_config(hf_fixture("mamba2-ssm-g2")).layout, "mamba_ssm");
  expect_matches_reference("mamba2-ssm-g2");
}

// A = -exp(A_log) in the model's dtype: a float64 model's A is not float32-rounded.
TEST(HfCheckpoint, MambaAInModelDtype) {
  auto model = ssmlab::models::load_hf_model(hf_fixture("mamba1-tf"), at::kDouble);
  auto* mixer = model->blocks.at(0)->mixer->as<ssmlab::mixers::Mamba1Impl>();
  ASSERT_NE(mixer, nullptr);
  const at::Tensor A = mixer->transition->A();
  EXPECT_EQ(A.scalar_type(), at::kDouble);
  const at::Tensor A_log = mixer->transition->named_parameters()["A_log"];
  EXPECT_TRUE(at::equal(A, -at::exp(A_log)));
}

TEST(HfCheckpoint, ExportRoundTripsBitwise) {
  ssmlab::test::TempDir dir;
  for (const char* name : {"mamba1-tf", "mamba1-ssm", "mamba2-tf-g1", "mamba2-tf-g2"}) {
    SCOPED_TRACE(name);
    auto model = ssmlab::models::load_hf_model(hf_fixture(name), at::kFloat);
    const fs::path out = dir.path / name;
    ssmlab::models::export_hf(*model, out, 0);
    auto back = ssmlab::models::load_hf_model(out, at::kFloat);
    const auto a = model->named_parameters(), b = back->named_parameters();
    ASSERT_EQ(a.size(), b.size());
    for (const auto& item : a) EXPECT_TRUE(at::equal(item.value(), b[item.key()])) << item.key();
    const HfModelInfo i1 = ssmlab::models::read_hf_config(hf_fixture(name)), i2 = ssmlab::models::read_hf_config(out);
    EXPECT_EQ(i2.layout, "transformers");
    EXPECT_EQ(i1.options.tie_embeddings, i2.options.tie_embeddings);
    EXPECT_EQ(i1.vocab_size, i2.vocab_size);
    // The exported folder holds exactly the transformers names (tied: no lm_head.weight).
    const auto t = ssmlab::models::load_safetensors(out / "model.safetensors").tensors;
    EXPECT_EQ(t.count("lm_head.weight"), i1.options.tie_embeddings ? 0u : 1u);
    EXPECT_EQ(t.count("backbone.embeddings.weight"), 1u);
    EXPECT_EQ(t.at("backbone.layers.0.mixer.conv1d.weight").dim(), 3);
  }
}

// Writes a copy of a fixture folder with config.json edited by `edit`.
fs::path edited_copy(const fs::path& root, const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
  const fs::path out = root / (name + "-edited");
  fs::remove_all(out);
  fs::copy(hf_fixture(name), out, fs::copy_options::recursive);
  nlohmann::json j = nlohmann::json::parse(ssmlab::read_file(out / "config.json"));
  edit(j);
  std::ofstream(out / "config.json") << j.dump(2);
  return out;
}

void expect_refused(const fs::path& folder, const std::string& field) {
  SCOPED_TRACE(field);
  EXPECT_THROW(ssmlab::models::read_hf_config(folder), ssmlab::ConfigError);
  ssmlab::test::expect_error([&] { ssmlab::models::read_hf_config(folder); }, {"'" + field + "'"});
}

TEST(HfCheckpoint, EveryRefusedConfigFieldNamesItself) {
  ssmlab::test::TempDir dir;
  using J = nlohmann::json;
  const std::vector<std::pair<std::string, J>> tf_mamba = {
      {"hidden_act", "gelu"}, {"conv_kernel", 7}, {"intermediate_size", 40}, {"time_step_rank", "big"},
      {"some_new_field", 1}, {"hidden_size", "16"}, {"tie_word_embeddings", "yes"}, {"layer_norm_epsilon", "x"},
      {"d_model", 32}, {"n_layer", 3}, {"norm_before_gate", true}};
  for (const auto& [k, v] : tf_mamba) expect_refused(edited_copy(dir.path, "mamba1-tf", [&](J& j) { j[k] = v; }), k);
  const std::vector<std::pair<std::string, J>> tf_mamba2 = {
      {"num_heads", 3}, {"n_groups", 3}, {"rms_norm", false}, {"time_step_limit", J::array({0.5})},
      {"architectures", J::array({"MambaForCausalLM"})}, {"model_type", "jamba"}};
  for (const auto& [k, v] : tf_mamba2)
    expect_refused(edited_copy(dir.path, "mamba2-tf-g2", [&](J& j) { j[k] = v; }), k);
  const std::vector<std::pair<std::string, J>> ssm = {{"d_intermediate", 128}, {"attn_layer_idx", J::array({1})},
                                                      {"rms_norm", false}, {"unknown_top", 0}};
  for (const auto& [k, v] : ssm) expect_refused(edited_copy(dir.path, "mamba2-ssm-g2", [&](J& j) { j[k] = v; }), k);
  const std::vector<std::pair<std::string, J>> ssm_cfg = {
      {"norm_before_gate", true}, {"D_has_hdim", true}, {"d_ssm", 8}, {"layer", "Mamba3"}, {"rmsnorm", false},
      {"ngroups", 3}, {"whatever", 1}};
  for (const auto& [k, v] : ssm_cfg)
    expect_refused(edited_copy(dir.path, "mamba2-ssm-g2", [&](J& j) { j["ssm_cfg"][k] = v; }), "ssm_cfg." + k);
}

TEST(HfCheckpoint, InfinityAndIgnoredFields) {
  ssmlab::test::TempDir dir;
  // Agreeing aliases and init-only fields are accepted (Mamba-Codestral's config carries these).
  const fs::path a = edited_copy(dir.path, "mamba1-tf", [](nlohmann::json& j) {
    j["d_model"] = 16;
    j["n_layer"] = 2;
    j["norm_before_gate"] = false;
    j["torch_dtype"] = "bfloat16";
  });
  EXPECT_EQ(ssmlab::models::read_hf_config(a).options.d_model, 16);
  // Older transformers wrote bare Infinity; it must read as "no upper limit".
  const fs::path f = edited_copy(dir.path, "mamba2-tf-g1", [](nlohmann::json& j) { j.erase("time_step_limit"); });
  std::string text = ssmlab::read_file(f / "config.json");
  text.insert(text.find('{') + 1, "\n  \"time_step_limit\": [0.001, Infinity],");
  std::ofstream(f / "config.json") << text;
  const auto info = ssmlab::models::read_hf_config(f);
  EXPECT_EQ(info.options.mixers.mamba2.dt_limit_min, 0.001);
  EXPECT_EQ(info.options.mixers.mamba2.dt_limit_max, 0.0);
}

TEST(HfCheckpoint, StrictWeights) {
  ssmlab::test::TempDir dir;
  using ssmlab::models::TensorFile;
  // A missing tensor, an extra tensor, a wrong shape, an untied-looking head on a tied config: each named.
  auto with_weights = [&](const std::string& tag, const std::function<void(std::map<std::string, at::Tensor>&)>& edit) {
    const fs::path out = dir.path / tag;
    fs::create_directories(out);
    fs::copy_file(hf_fixture("mamba1-tf") / "config.json", out / "config.json", fs::copy_options::overwrite_existing);
    auto t = ssmlab::models::load_safetensors(hf_fixture("mamba1-tf") / "model.safetensors").tensors;
    edit(t);
    ssmlab::models::save_safetensors(out / "model.safetensors", t);
    return out;
  };
  auto load = [](const fs::path& p) { ssmlab::models::load_hf_model(p, at::kFloat); };
  const auto missing = with_weights("missing", [](auto& t) { t.erase("backbone.layers.1.mixer.D"); });
  EXPECT_THROW(load(missing), ssmlab::DataError);
  ssmlab::test::expect_error([&] { load(missing); }, {"backbone.layers.1.mixer.D", "missing"});
  const auto extra = with_weights("extra", [](auto& t) { t["backbone.layers.2.mixer.D"] = at::ones({32}); });
  ssmlab::test::expect_error([&] { load(extra); }, {"backbone.layers.2.mixer.D", "not part of the model"});
  const auto shape = with_weights("shape", [](auto& t) { t["backbone.layers.0.mixer.D"] = at::ones({31}); });
  ssmlab::test::expect_error([&] { load(shape); }, {"backbone.layers.0.mixer.D", "shape"});
  const auto head = with_weights("head", [](auto& t) { t["lm_head.weight"] = at::zeros({48, 16}); });
  ssmlab::test::expect_error([&] { load(head); }, {"lm_head.weight", "ties"});
  const auto same_head = with_weights("same_head", [](auto& t) { t["lm_head.weight"] = t["backbone.embeddings.weight"].clone(); });
  EXPECT_NO_THROW(load(same_head));
  // Only a pickle: refused with the way out.
  fs::create_directories(dir.path / "bin");
  fs::copy_file(hf_fixture("mamba1-tf") / "config.json", dir.path / "bin" / "config.json");
  std::ofstream(dir.path / "bin" / "pytorch_model.bin") << "x";
  ssmlab::test::expect_error([&] { load(dir.path / "bin"); }, {"pytorch_model.bin", "safetensors"});
}

TEST(HfCheckpoint, ShardedIndexIsStrict) {
  ssmlab::test::TempDir dir;
  const fs::path f = dir.path / "g1";
  fs::copy(hf_fixture("mamba2-tf-g1"), f, fs::copy_options::recursive);
  const auto all = ssmlab::models::read_hf_weights(f);
  EXPECT_EQ(all.size(), ssmlab::models::load_safetensors_index(f / "model.safetensors.index.json").tensors.size());
  auto index = nlohmann::json::parse(ssmlab::read_file(f / "model.safetensors.index.json"));
  const std::string shard = index["weight_map"]["backbone.norm_f.weight"].get<std::string>();
  auto write = [&](const nlohmann::json& j) { std::ofstream(f / "model.safetensors.index.json") << j.dump(); };
  // A tensor listed under the wrong shard.
  auto moved = index;
  std::string other;
  for (const auto& [t, file] : index["weight_map"].items())
    if (file.get<std::string>() != shard) other = file.get<std::string>();
  ASSERT_FALSE(other.empty());  // the fixture has several shards
  moved["weight_map"]["backbone.norm_f.weight"] = other;
  write(moved);
  ssmlab::test::expect_error([&] { ssmlab::models::read_hf_weights(f); }, {"backbone.norm_f.weight"});
  // A tensor missing from the index.
  auto dropped = index;
  dropped["weight_map"].erase("backbone.norm_f.weight");
  write(dropped);
  ssmlab::test::expect_error([&] { ssmlab::models::read_hf_weights(f); }, {"backbone.norm_f.weight", "not listed"});
  // A shard path that leaves the folder, and a missing shard.
  auto escape = index;
  escape["weight_map"]["backbone.norm_f.weight"] = "../x.safetensors";
  write(escape);
  ssmlab::test::expect_error([&] { ssmlab::models::read_hf_weights(f); }, {"plain file names"});
  write(index);
  fs::remove(f / shard);
  ssmlab::test::expect_error([&] { ssmlab::models::read_hf_weights(f); }, {shard, "missing"});
}

TEST(HfCheckpoint, ModelIdFromTheLocalCacheWithoutNetwork) {
  ssmlab::test::TempDir dir;
  const fs::path repo = dir.path / "hub" / "models--tiny--mamba2";
  fs::create_directories(repo / "refs");
  fs::create_directories(repo / "snapshots");
  fs::copy(hf_fixture("mamba2-tf-g2"), repo / "snapshots" / "abc123", fs::copy_options::recursive);
  std::ofstream(repo / "refs" / "main") << "abc123";
  const char* old = std::getenv("HF_HUB_CACHE");
  const std::string saved = old ? old : "";
  ::setenv("HF_HUB_CACHE", (dir.path / "hub").c_str(), 1);
  EXPECT_EQ(ssmlab::models::resolve_hf_model("tiny/mamba2"), repo / "snapshots" / "abc123");
  ssmlab::test::expect_error([] { ssmlab::models::resolve_hf_model("tiny/absent"); }, {"models--tiny--absent", "never downloads"});
  if (old) ::setenv("HF_HUB_CACHE", saved.c_str(), 1);
  else ::unsetenv("HF_HUB_CACHE");
}

TEST(HfCheckpoint, ExportRefusesWhatTransformersCannotHold) {
  ssmlab::test::TempDir dir;
  ssmlab::models::ModelOptions o;
  o.d_model = 8;
  o.n_layers = 1;
  o.norm = "rmsnorm";
  o.final_norm = "layernorm";
  ssmlab::models::LanguageModel lm(o, 16, "auto", 1);
  EXPECT_THROW(ssmlab::models::export_hf(*lm, dir.path / "x"), ssmlab::ConfigError);
  ssmlab::test::expect_error([&] { ssmlab::models::export_hf(*lm, dir.path / "x"); }, {"model.final_norm"});
  o.final_norm = "rmsnorm";
  o.mixer = "attention";
  ssmlab::models::LanguageModel att(o, 16, "auto", 1);
  ssmlab::test::expect_error([&] { ssmlab::models::export_hf(*att, dir.path / "x"); }, {"model.mixer"});
  EXPECT_FALSE(fs::exists(dir.path / "x" / "model.safetensors"));
}

// The untied head option for models trained here: its own weight, registered last (tied models keep theirs).
TEST(HfCheckpoint, UntiedHeadOption) {
  ssmlab::models::ModelOptions o;
  o.d_model = 8;
  o.n_layers = 1;
  o.mixers.mamba1.d_state = 4;
  ssmlab::models::LanguageModel tied(o, 20, "auto", 3);
  o.tie_embeddings = false;
  ssmlab::models::LanguageModel untied(o, 20, "auto", 3);
  EXPECT_EQ(untied->named_parameters().size(), tied->named_parameters().size() + 1);
  for (const auto& item : tied->named_parameters())
    EXPECT_TRUE(at::equal(item.value(), untied->named_parameters()[item.key()])) << item.key();
  at::NoGradGuard no_grad;
  const at::Tensor x = at::randn({2, 3, 8});
  EXPECT_TRUE(at::allclose(untied->head(x), at::matmul(x, untied->lm_head->weight.t())));
  EXPECT_TRUE(at::allclose(tied->head(x), at::matmul(x, tied->embedding->weight.t())));
}

}  // namespace

}  // namespace models_test_hf_checkpoint
