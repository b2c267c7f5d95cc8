// The passkey analysis (spec §3.4): the prompt is the paper's strings with the needle in the block its depth names
// and the length within one block of the target (bytes and GPT-2 BPE); depths and bins follow the paper's rules;
// the substring criterion; greedy decoding after a segmented prefill equals the argmax of the one-shot forward
// (teacher-forced with the decoded tokens); and end to end, a constructed language model that always continues
// "...passkey is" with "12345" scores exactly 1 with that key and 0 with another, in every heatmap cell.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include "analysis_test_models.h"
#include "ssmlab/analysis/passkey.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/models/language_model.h"
#include "ssmlab/tasks/needle.h"
#include "ssmlab/tasks/text.h"
#include "test_util.h"
#include "text/text_test_util.h"

namespace analysis_test_passkey {

namespace {

using namespace ssmlab;
using namespace ssmlab::analysis;

const std::string kPrefix = kPasskeyPrefix, kBlock = kPasskeyBlock, kSuffix = kPasskeySuffix;

// The prompt's checks for any tokenizer: prefix and suffix exact, n_blocks from the pieces' token counts, the
// needle exactly once and at block floor(depth (n - 1)), the rest of the haystack the block, length near L.
void check_layout(const text::Tokenizer& tok, int64_t L, double depth, const std::string& key) {
  SCOPED_TRACE("L " + std::to_string(L) + " depth " + std::to_string(depth));
  const int64_t tp = static_cast<int64_t>(tok.encode(kPrefix).size()),
                ts = static_cast<int64_t>(tok.encode(kSuffix).size()),
                tb = static_cast<int64_t>(tok.encode(kBlock).size());
  const int64_t n = (L - tp - ts) / tb;
  const PasskeyPrompt p = make_passkey_prompt(tok, L, depth, key);
  EXPECT_EQ(p.n_blocks, n);
  EXPECT_EQ(p.needle_block, static_cast<int64_t>(std::floor(depth * static_cast<double>(n - 1))));
  ASSERT_GE(p.text.size(), kPrefix.size() + kSuffix.size());
  EXPECT_EQ(p.text.substr(0, kPrefix.size()), kPrefix);
  EXPECT_EQ(p.text.substr(p.text.size() - kSuffix.size()), kSuffix);
  const std::string needle = "The passkey is " + key + ". Remember it. " + key + " is the passkey.\n";
  EXPECT_EQ(passkey_needle(key), needle);
  // Walk the haystack block by block.
  std::string hay = p.text.substr(kPrefix.size(), p.text.size() - kPrefix.size() - kSuffix.size());
  size_t at = 0;
  for (int64_t b = 0; b < n; ++b) {
    const std::string& want = b == p.needle_block ? needle : kBlock;
    ASSERT_EQ(hay.compare(at, want.size(), want), 0) << "block " << b;
    at += want.size();
  }
  EXPECT_EQ(at, hay.size());
  EXPECT_EQ(p.text.find(needle), p.text.rfind(needle));
  EXPECT_EQ(p.tokens, tok.encode(p.text));
  // Length: the pieces' haystack of n blocks is within one block of the target; the prompt differs from it by
  // the needle's difference from a block, and (BPE) by a merge or two across the pieces' joins ("\n\n").
  const int64_t tn = static_cast<int64_t>(tok.encode(needle).size());
  const int64_t pieces = tp + n * tb + ts, got = static_cast<int64_t>(p.tokens.size());
  EXPECT_LE(pieces, L);
  EXPECT_GT(pieces, L - tb);
  EXPECT_LE(std::llabs(static_cast<long long>(got - (pieces - tb + tn))), 2) << got << " tokens, pieces " << pieces;
}

TEST(Passkey, PromptLayoutInBytes) {
  const text::ByteTokenizer tok;
  // Hand-counted: prefix 93 bytes, block 90, suffix 37; L 1000 -> floor((1000 - 93 - 37) / 90) = 9 blocks.
  EXPECT_EQ(kPrefix.size(), 93u);
  EXPECT_EQ(kBlock.size(), 90u);
  EXPECT_EQ(kSuffix.size(), 37u);
  EXPECT_EQ(passkey_blocks(tok, 1000), 9);
  EXPECT_EQ(passkey_blocks(tok, 93 + 37 + 90), 1);
  for (int64_t L : {400, 1000, 4096})
    for (double d : {0.0, 0.05, 0.25, 0.5, 0.74, 0.99, 1.0}) check_layout(tok, L, d, "04217");
  // Depth 0.5 of 9 blocks: block 4; the needle's first byte is at 93 + 4 * 90.
  const PasskeyPrompt p = make_passkey_prompt(tok, 1000, 0.5, "31415");
  EXPECT_EQ(p.needle_block, 4);
  EXPECT_EQ(p.text.find("The passkey is 31415."), 93u + 4u * 90u);
  // Bytes: prefix + 8 blocks + a 57-byte needle + suffix.
  EXPECT_EQ(p.tokens.size(), 93u + 8u * 90u + 57u + 37u);
}

TEST(Passkey, PromptLayoutInGpt2Tokens) {
  SSMLAB_NEED_GPT2();
  const text::Tokenizer& tok = *test::gpt2();
  for (int64_t L : {256, 1024, 3000})
    for (double d : {0.0, 0.3, 0.5, 0.9, 1.0})
      for (const char* key : {"00000", "98765", "12000"}) check_layout(tok, L, d, key);
}

TEST(Passkey, TooShortAContextIsAConfigError) {
  const text::ByteTokenizer tok;
  test::expect_error([&] { passkey_blocks(tok, 200); }, {"200 tokens", "no haystack block", "220"});
  EXPECT_THROW(passkey_blocks(tok, 219), ConfigError);
  EXPECT_THROW(passkey_needle_block(5, 1.5), Error);
}

TEST(Passkey, DepthsAndBinsFollowThePaper) {
  const std::vector<double> d = passkey_depths(200);
  ASSERT_EQ(d.size(), 200u);
  EXPECT_DOUBLE_EQ(d[0], 0.5 / 200);
  EXPECT_DOUBLE_EQ(d[199], 199.5 / 200);
  // Bin b collects depths <= (b + 1) / 10: the boundary belongs to the lower bin.
  EXPECT_EQ(passkey_depth_bin(0.0, 10), 0);
  EXPECT_EQ(passkey_depth_bin(0.1, 10), 0);
  EXPECT_EQ(passkey_depth_bin(0.1000001, 10), 1);
  EXPECT_EQ(passkey_depth_bin(0.3, 10), 2);
  EXPECT_EQ(passkey_depth_bin(0.95, 10), 9);
  EXPECT_EQ(passkey_depth_bin(1.0, 10), 9);
  EXPECT_EQ(passkey_depth_bin(0.5, 4), 1);
  std::vector<int> per_bin(10, 0);
  for (double x : d) per_bin[static_cast<size_t>(passkey_depth_bin(x, 10))]++;
  for (int c : per_bin) EXPECT_EQ(c, 20);
  // Five samples in ten bins: depths 0.1, 0.3, 0.5, 0.7, 0.9 sit on boundaries -> bins 0, 2, 4, 6, 8.
  std::vector<int64_t> bins;
  for (double x : passkey_depths(5)) bins.push_back(passkey_depth_bin(x, 10));
  EXPECT_EQ(bins, (std::vector<int64_t>{0, 2, 4, 6, 8}));
}

TEST(Passkey, KeysAreFiveDigitsAndTheCriterionIsASubstring) {
  Rng rng(3);
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    const std::string k = random_passkey(rng);
    ASSERT_EQ(k.size(), 5u) << k;
    EXPECT_EQ(k.find_first_not_of("0123456789"), std::string::npos) << k;
    seen.insert(k);
  }
  EXPECT_GT(seen.size(), 190u);
  EXPECT_TRUE(passkey_correct("12345", " 12345."));
  EXPECT_TRUE(passkey_correct("12345", "0012345"));
  EXPECT_TRUE(passkey_correct("00042", "00042"));
  EXPECT_FALSE(passkey_correct("12345", " 1234"));
  EXPECT_FALSE(passkey_correct("12345", "1 2345"));
  EXPECT_FALSE(passkey_correct("12345", ""));
  EXPECT_FALSE(passkey_correct("", "12345"));
}

TEST(Passkey, TRecallIsTheLargestLengthAtTheThreshold) {
  EXPECT_EQ(passkey_t_recall({256, 512, 1024}, {1.0, 0.95, 0.5}, 0.95), 512);
  EXPECT_EQ(passkey_t_recall({256, 512, 1024}, {0.9, 1.0, 0.2}, 0.95), 512);
  EXPECT_EQ(passkey_t_recall({256, 512, 1024}, {1.0, 0.2, 0.96}, 0.95), 1024);
  EXPECT_FALSE(passkey_t_recall({256, 512}, {0.94, 0.0}, 0.95).has_value());
  EXPECT_FALSE(passkey_t_recall({256}, {NAN}, 0.95).has_value());
}

models::ModelOptions small_lm(const std::string& mixer) {
  models::ModelOptions o;
  o.mixer = mixer;
  o.d_model = 16;
  o.n_layers = 2;
  o.mixers.mamba1.d_state = 4;
  o.mixers.mamba2.d_state = 8;
  o.mixers.mamba2.head_dim = 8;
  o.mixers.mamba2.chunk_size = 4;
  return o;
}

// Decoding after a prefill in uneven segments continues the states exactly: the decoded tokens are the argmax of
// the one-shot forward over prompt + decoded tokens, position by position.
TEST(Passkey, StepDecodingAfterSegmentedPrefillEqualsOneShotArgmax) {
  for (const std::string mixer : {"mamba2", "mamba1"}) {
    SCOPED_TRACE(mixer);
    models::LanguageModel lm(small_lm(mixer), 23, "auto", 11);
    at::Tensor prompts = at::randint(0, 23, {3, 13}, at::TensorOptions().dtype(at::kLong));
    const at::Tensor out = greedy_continue(*lm, prompts, 5, /*segment=*/5);  // (3, 5)
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, 5}));
    at::NoGradGuard no_grad;
    lm->eval();
    const at::Tensor seq = at::cat({prompts, out.narrow(1, 0, 4)}, 1);            // (3, 17)
    const at::Tensor argmax = lm->forward(seq).argmax(-1).narrow(1, 12, 5);      // (3, 5)
    EXPECT_TRUE(at::equal(argmax, out)) << argmax << "\n" << out;
    // One segment for the whole prompt gives the same tokens.
    EXPECT_TRUE(at::equal(greedy_continue(*lm, prompts, 5, /*segment=*/100), out));
  }
}

// A Mamba-2 language model over bytes whose blocks add nothing (every block parameter zero) and whose tied
// embedding chains 's' -> '1' -> '2' -> '3' -> '4' -> '5': E[c_k] = a_k (e_k + e_{k+1}) with a_{k+1} = 4 a_k, so
// after c_k the logit of c_{k+1} beats c_k's own and c_{k-1}'s: after an RMS norm 2 a_{k+1} vs 4 a_k; after a
// mean-subtracting norm (D = 8) a_{k+1}/2 vs 3 a_k/2 (a ratio of 3 would tie there). Every prompt ends with
// "...passkey is", so greedy decoding of 5 tokens gives "12345" whatever the prompt.
models::LanguageModel fixed_continuation_model() {
  models::ModelOptions o = small_lm("mamba2");
  o.d_model = 8;
  models::LanguageModel lm(o, 256, "auto", 5);
  at::NoGradGuard no_grad;
  for (auto& p : lm->named_parameters()) {
    if (p.key().rfind("blocks.", 0) == 0) p.value().zero_();
    if (p.key().rfind("final_norm.", 0) == 0) {
      if (p.key().find("weight") != std::string::npos) p.value().fill_(1.0);
      else p.value().zero_();
    }
  }
  at::Tensor E = lm->embedding->weight;  // (256, 8)
  E.zero_();
  const char chain[] = "s12345";
  double a = 1.0;
  for (int k = 0; k < 6; ++k, a *= 4.0) {
    E[static_cast<unsigned char>(chain[k])][k] = a;
    E[static_cast<unsigned char>(chain[k])][k + 1] = a;
  }
  return lm;
}

struct PasskeyRun {
  Result result;
  nlohmann::json summary;
};

PasskeyRun run_on(models::ModelImpl& model, const tasks::Task& task, const std::filesystem::path& dir,
                  PasskeyOptions opts) {
  const std::vector<tasks::Segment> none;
  const Context ctx{model, task, none, c10::Device(c10::kCPU), dir, "fixed", 7};
  PasskeyRun r;
  r.result = run_passkey(ctx, opts);
  r.summary = r.result.summary;
  return r;
}

tasks::TextConfig byte_text() {
  tasks::TextConfig c;
  c.tokenizer.kind = "byte";
  c.seq_len = 300;
  return c;
}

TEST(Passkey, FixedContinuationModelScoresExactlyOneOrZero) {
  test::TempDir dir;
  auto lm = fixed_continuation_model();
  const tasks::TextTask task(byte_text());
  PasskeyOptions opts;
  opts.lengths = "600, 300";
  opts.samples = 10;
  opts.batch_size = 4;
  opts.segment = 128;
  opts.key = "12345";
  const PasskeyRun hit = run_on(*lm, task, dir.path, opts);
  EXPECT_EQ(hit.summary["lengths"], nlohmann::json::array({300, 600}));
  for (const auto& s : hit.summary["samples"]) {
    EXPECT_EQ(s["decoded"], "12345");
    EXPECT_TRUE(s["correct"].get<bool>());
  }
  EXPECT_EQ(hit.summary["samples"].size(), 20u);
  for (const auto& row : hit.summary["accuracy"])
    for (const auto& v : row) EXPECT_EQ(v.get<double>(), 1.0);  // 10 samples in 10 bins: one each
  EXPECT_EQ(hit.summary["t_recall"], 600);
  EXPECT_EQ(hit.summary["t_train"], 300);
  EXPECT_EQ(hit.summary["paper"].size(), 3u);
  EXPECT_EQ(hit.summary["paper"][0]["ours"], 1.0);  // lengths <= T_train
  EXPECT_EQ(hit.summary["paper"][1]["ours"], 1.0);  // lengths >= 2 T_train
  // The heatmap table: 10 depth rows, a column per length; the spec asks for the red-yellow-green palette.
  const std::string csv = test::read_text(dir.path / "figures/passkey.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "depth,300,600");
  EXPECT_NE(csv.find("0.90-1.00,1,1"), std::string::npos) << csv;
  const auto spec = nlohmann::json::parse(test::read_text(dir.path / "figures/passkey.json"));
  EXPECT_EQ(spec["kind"], "heatmap");
  EXPECT_EQ(spec["palette"], "rdylgn");
  EXPECT_TRUE(std::filesystem::exists(dir.path / "figures/passkey_curve.csv"));

  opts.key = "54321";
  const PasskeyRun miss = run_on(*lm, task, dir.path, opts);
  for (const auto& row : miss.summary["accuracy"])
    for (const auto& v : row) EXPECT_EQ(v.get<double>(), 0.0);
  EXPECT_TRUE(miss.summary["t_recall"].is_null());

  // Random keys: correct exactly where the drawn key is 12345 (never, for these draws), decoded "12345" always.
  opts.key = "";
  opts.samples = 7;
  const PasskeyRun rnd = run_on(*lm, task, dir.path, opts);
  std::set<std::string> keys;
  for (const auto& s : rnd.summary["samples"]) {
    EXPECT_EQ(s["decoded"], "12345");
    EXPECT_EQ(s["correct"].get<bool>(), s["key"] == "12345");
    keys.insert(s["key"].get<std::string>());
  }
  EXPECT_GT(keys.size(), 10u);
  // Seven samples in ten bins leave three bins empty: null, not 0.
  int empty = 0;
  for (const auto& row : rnd.summary["accuracy"]) empty += row[0].is_null();
  EXPECT_EQ(empty, 3);
}

TEST(Passkey, WrongTaskModelOrOptionsAreConfigErrors) {
  test::TempDir dir;
  auto lm = fixed_continuation_model();
  PasskeyOptions opts;
  opts.lengths = "300";
  opts.samples = 2;
  tasks::NeedleConfig nc;
  const tasks::NeedleTask needle(nc);
  test::expect_error([&] { run_on(*lm, needle, dir.path, opts); }, {"'needle'", "text"});
  const tasks::TextTask task(byte_text());
  test::ScalarRecurrenceModel scalar(0.5);
  test::expect_error([&] { run_on(scalar, task, dir.path, opts); }, {"scalar_recurrence", "language_model"});
  opts.key = "12a45";
  test::expect_error([&] { run_on(*lm, task, dir.path, opts); }, {"analysis.passkey.key", "12a45"});
  opts.key = "";
  opts.lengths = "300,100";
  test::expect_error([&] { run_on(*lm, task, dir.path, opts); }, {"100 tokens", "no haystack block"});
  opts.lengths = "300,300";
  test::expect_error([&] { run_on(*lm, task, dir.path, opts); }, {"listed twice"});
  opts.lengths = "";
  test::expect_error([&] { run_on(*lm, task, dir.path, opts); }, {"analysis.passkey.lengths"});
}

}  // namespace

}  // namespace analysis_test_passkey
