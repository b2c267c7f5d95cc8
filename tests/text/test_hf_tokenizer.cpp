// tokenizer.json (text/hf_tokenizer.h) against the GPT-2 files of the same vocabulary and the tokenizers
// library's ids (tests/fixtures/hf/tokenizer, written by scripts/make_hf_fixtures.py).
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/text/gpt2_bpe.h"
#include "ssmlab/text/hf_tokenizer.h"
#include "test_util.h"

namespace text_test_hf_tokenizer {

namespace {

namespace fs = std::filesystem;

fs::path tok_fixture() { return fs::path(SSMLAB_SOURCE_DIR) / "tests/fixtures/hf/tokenizer"; }

TEST(HfTokenizer, SameIdsAsTheGpt2FilesAndTheTokenizersLibrary) {
  const ssmlab::text::HfTokenizer hf(tok_fixture() / "tokenizer.json");
  const ssmlab::text::Gpt2Bpe gpt2(tok_fixture() / "encoder.json", tok_fixture() / "vocab.bpe");
  EXPECT_EQ(hf.vocab_size(), gpt2.vocab_size());
  EXPECT_EQ(hf.end_of_text(), gpt2.end_of_text());
  const auto expected = nlohmann::json::parse(ssmlab::read_file(tok_fixture() / "ids.json"));
  ASSERT_GE(expected.size(), 5u);
  int64_t merged = 0;
  for (const auto& [text, ids] : expected.items()) {
    SCOPED_TRACE(text);
    const auto got = hf.encode(text);
    EXPECT_EQ(got, gpt2.encode(text));
    EXPECT_EQ(got, ids.get<std::vector<uint32_t>>());
    EXPECT_EQ(hf.decode(got), text);
    for (uint32_t id : got) merged += id >= 256;
  }
  EXPECT_GT(merged, 5);  // the merges are exercised, not only byte tokens
}

TEST(HfTokenizer, NonSpecialAddedTokensSplitFirst) {
  ssmlab::test::TempDir dir;
  auto j = nlohmann::json::parse(ssmlab::read_file(tok_fixture() / "tokenizer.json"));
  const int64_t n = static_cast<int64_t>(j["model"]["vocab"].size());
  // GPT-NeoX style: runs of spaces as non-special added tokens beyond the BPE vocabulary.
  j["added_tokens"].push_back({{"id", n}, {"content", "   "}, {"special", false}, {"single_word", false},
                               {"lstrip", false}, {"rstrip", false}, {"normalized", true}});
  j["added_tokens"].push_back({{"id", n + 1}, {"content", "  "}, {"special", false}, {"single_word", false},
                               {"lstrip", false}, {"rstrip", false}, {"normalized", true}});
  std::ofstream(dir.path / "t.json") << j.dump();
  const ssmlab::text::HfTokenizer hf(dir.path / "t.json");
  const ssmlab::text::Gpt2Bpe gpt2(tok_fixture() / "encoder.json", tok_fixture() / "vocab.bpe");
  EXPECT_EQ(hf.vocab_size(), n + 2);
  const auto ids = hf.encode("a     b");  // 5 spaces: "   " (longest first) then "  "
  std::vector<uint32_t> want = gpt2.encode("a");
  want.push_back(static_cast<uint32_t>(n));
  want.push_back(static_cast<uint32_t>(n + 1));
  for (uint32_t id : gpt2.encode("b")) want.push_back(id);
  EXPECT_EQ(ids, want);
  EXPECT_EQ(hf.decode(ids), "a     b");
  // A special token in plain text stays text (as the gpt2 tokenizer does).
  EXPECT_EQ(hf.encode("<|endoftext|>"), gpt2.encode("<|endoftext|>"));
}

TEST(HfTokenizer, AddedTokenInsideTheVocabularyNeedsNoMerge) {
  ssmlab::test::TempDir dir;
  auto j = nlohmann::json::parse(ssmlab::read_file(tok_fixture() / "tokenizer.json"));
  const int64_t n = static_cast<int64_t>(j["model"]["vocab"].size());
  // GPT-NeoX writes its space runs in model.vocab too (in the byte alphabet: U+0120 for a space), made by no merge.
  j["model"]["vocab"]["\u0120\u0120\u0120\u0120"] = n;
  std::ofstream(dir.path / "plain.json") << j.dump();
  EXPECT_THROW(ssmlab::text::HfTokenizer(dir.path / "plain.json"), ssmlab::DataError);  // an unmade BPE token
  j["added_tokens"].push_back({{"id", n}, {"content", "    "}, {"special", false}});
  std::ofstream(dir.path / "added.json") << j.dump();
  const ssmlab::text::HfTokenizer hf(dir.path / "added.json");
  EXPECT_EQ(hf.vocab_size(), n + 1);
  const auto ids = hf.encode("x    y");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[1], static_cast<uint32_t>(n));
  EXPECT_EQ(hf.decode(ids), "x    y");
}

TEST(HfTokenizer, RefusesWhatWouldChangeTheIds) {
  ssmlab::test::TempDir dir;
  const auto base = nlohmann::json::parse(ssmlab::read_file(tok_fixture() / "tokenizer.json"));
  auto refused = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& field) {
    SCOPED_TRACE(field);
    auto j = base;
    edit(j);
    std::ofstream(dir.path / "t.json") << j.dump();
    EXPECT_THROW(ssmlab::text::HfTokenizer(dir.path / "t.json"), ssmlab::DataError);
    ssmlab::test::expect_error([&] { ssmlab::text::HfTokenizer(dir.path / "t.json"); }, {field});
  };
  refused([](auto& j) { j["model"]["type"] = "WordPiece"; }, "model.type");
  refused([](auto& j) { j["model"]["byte_fallback"] = true; }, "byte_fallback");
  refused([](auto& j) { j["model"]["end_of_word_suffix"] = "</w>"; }, "end_of_word_suffix");
  refused([](auto& j) { j["pre_tokenizer"]["add_prefix_space"] = true; }, "add_prefix_space");
  refused([](auto& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }, "pre_tokenizer");
  refused([](auto& j) { j["normalizer"] = {{"type", "Lowercase"}}; }, "normalizer");
  refused([](auto& j) { j["model"]["merges"][3] = "nonsense"; }, "model.merges[3]");
  refused([](auto& j) { j["model"]["merges"].push_back("zz qq"); }, "does not have");
}

}  // namespace

}  // namespace text_test_hf_tokenizer
