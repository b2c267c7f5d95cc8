// Hugging Face folders where ssmlab takes a run (experiments/interop.h): a Mamba-2 checkpoint (exported from a
// model built here, byte vocabulary) runs the passkey and loss-vs-position analyses; the analysed model is the
// folder's (its logits equal the exported model's).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ssmlab/core/io.h"
#include "ssmlab/experiments/analyze.h"
#include "ssmlab/experiments/interop.h"
#include "ssmlab/models/hf_checkpoint.h"
#include "test_util.h"
#include "text/text_test_util.h"

namespace experiments_test_hf_interop {

namespace {

namespace fs = std::filesystem;

ssmlab::models::ModelOptions tiny_mamba2() {
  ssmlab::models::ModelOptions o;
  o.mixer = "mamba2";
  o.d_model = 16;
  o.n_layers = 2;
  o.norm = "rmsnorm";
  o.final_norm = "rmsnorm";
  o.mixers.mamba2.d_state = 8;
  o.mixers.mamba2.head_dim = 8;
  o.mixers.mamba2.chunk_size = 16;
  return o;
}

TEST(HfInterop, Mamba2FolderRunsPasskeyAndLossPosition) {
  ssmlab::test::TempDir dir;
  ssmlab::models::LanguageModel lm(tiny_mamba2(), 256, "auto", 5);
  ssmlab::models::export_hf(*lm, dir.path / "hf");
  ssmlab::experiments::Config cfg = ssmlab::experiments::hf_analysis_config(dir.path / "hf", {});
  EXPECT_EQ(cfg.model.mixer, "mamba2");
  EXPECT_EQ(cfg.task.name, "text");
  cfg.task.text = ssmlab::test::random_letters_text(dir.path, 8, 600, 20, 4);
  cfg.analysis.loss_position.samples = 1;
  cfg.analysis.loss_position.max_len = 64;
  cfg.analysis.loss_position.bucket = 8;
  cfg.analysis.loss_position.segment = 32;
  cfg.analysis.passkey.lengths = "256,320";  // byte tokens: the prompt text alone is 220
  cfg.analysis.passkey.samples = 2;
  cfg.analysis.passkey.segment = 32;
  cfg.analysis.passkey.bins = 2;
  const auto runs = ssmlab::experiments::analyze({"loss_position", "passkey"}, cfg, dir.path / "out", dir.path / "hf");
  ASSERT_EQ(runs.size(), 2u);
  for (const auto& r : runs) {
    SCOPED_TRACE(r.name);
    const auto j = nlohmann::json::parse(ssmlab::read_file(r.summary_file));
    EXPECT_NE(j["model"].get<std::string>().find("Hugging Face folder"), std::string::npos);
  }
  EXPECT_FALSE(runs[0].result.summary["buckets"].empty());
  EXPECT_TRUE(runs[1].result.summary.contains("t_recall") || runs[1].result.summary.contains("accuracy"))
      << runs[1].result.summary.dump().substr(0, 300);
}

TEST(HfInterop, LoadLanguageModelFromAFolder) {
  ssmlab::test::TempDir dir;
  ssmlab::models::LanguageModel lm(tiny_mamba2(), 64, "auto", 9);
  ssmlab::models::export_hf(*lm, dir.path / "hf", 3);
  auto loaded = ssmlab::experiments::load_language_model((dir.path / "hf").string(), at::kFloat, "cpu");
  EXPECT_EQ(loaded.eos_token_id, 3);
  EXPECT_EQ(loaded.tokenizer, nullptr);  // the folder has no tokenizer.json
  at::NoGradGuard no_grad;
  const at::Tensor ids = at::randint(0, 64, {2, 9}, at::kLong);
  lm->eval();
  EXPECT_TRUE(at::equal(loaded.model->forward(ids), lm->forward(ids)));
  ssmlab::test::expect_error([&] { ssmlab::experiments::load_language_model((dir.path / "none").string(), at::kFloat, "cpu"); },
                             {"none"});
}

}  // namespace

}  // namespace experiments_test_hf_interop
