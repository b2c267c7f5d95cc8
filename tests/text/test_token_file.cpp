// Token files: layout (documents whole, train first, end-of-text after each), the by-document split, reuse and
// rebuild, uint32 ids, and the reader's errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "ssmlab/text/token_file.h"
#include "test_util.h"
#include "text/text_test_util.h"

namespace text_test_token_file {

namespace {

namespace fs = std::filesystem;
using ssmlab::text::TokenFile;
using ssmlab::text::TokenFileOptions;

// Writes n documents "doc <i>: ..." of varied lengths into dir/corpus; returns their texts in sorted order.
std::vector<std::string> write_corpus(const fs::path& dir, int n) {
  std::vector<std::string> texts;
  for (int i = 0; i < n; ++i) {
    std::string t = "doc " + std::to_string(i) + ":";
    for (int k = 0; k < 3 + 5 * i; ++k) t += " word" + std::to_string(k % 7);
    t += "\n";
    char name[32];
    std::snprintf(name, sizeof name, "d%03d.txt", i);
    ssmlab::test::write_text(dir / "corpus" / name, t);
    texts.push_back(t);
  }
  return texts;
}

TokenFileOptions options(const fs::path& dir) {
  TokenFileOptions o;
  o.corpus = {"files", (dir / "corpus").string()};
  o.cache_dir = (dir / "cache").string();
  o.validation_fraction = 0.25;
  o.split_seed = 7;
  return o;
}

// Maps bytes to ids >= 65536, so the file needs uint32.
class WideTokenizer : public ssmlab::text::Tokenizer {
 public:
  std::string kind() const override { return "wide"; }
  int64_t vocab_size() const override { return 65536 + 257; }
  std::optional<uint32_t> end_of_text() const override { return 65536 + 256; }
  std::string fingerprint() const override { return "wide"; }
  void encode_append(std::string_view text, std::vector<uint32_t>& out) const override {
    for (char c : text) out.push_back(65536 + static_cast<uint8_t>(c));
  }
  std::string decode(std::span<const uint32_t> ids) const override {
    std::string s;
    for (uint32_t id : ids) s.push_back(static_cast<char>(id - 65536));
    return s;
  }
};

TEST(TextTokenFile, DocumentsAreWholeTrainFirstEachEndedByEndOfText) {
  SSMLAB_NEED_GPT2();
  ssmlab::test::TempDir dir;
  const auto texts = write_corpus(dir.path, 8);
  const auto& tok = *ssmlab::test::gpt2();
  bool built = false;
  const fs::path manifest = ssmlab::text::ensure_token_file(options(dir.path), tok, &built);
  EXPECT_TRUE(built);
  const TokenFile tf(manifest);
  EXPECT_EQ(tf.bytes_per_token(), 2);
  EXPECT_EQ(tf.vocab_size(), 50257);
  ASSERT_EQ(tf.num_documents(), 8);
  EXPECT_EQ(tf.num_train_documents(), 6) << "round(0.25 * 8) = 2 validation documents";
  const std::vector<int64_t> val = ssmlab::text::validation_documents(8, 0.25, 7);
  ASSERT_EQ(val.size(), 2u);
  std::vector<std::string> expected_order;
  for (int pass = 0; pass < 2; ++pass)
    for (int d = 0; d < 8; ++d)
      if ((std::find(val.begin(), val.end(), d) != val.end()) == (pass == 1))
        expected_order.push_back(texts[static_cast<size_t>(d)]);
  int64_t total = 0;
  for (int64_t d = 0; d < 8; ++d) {
    const auto span = tf.document(d);
    EXPECT_EQ(span.begin, total);
    EXPECT_EQ(tok.decode(tf.tokens(span.begin, span.length)), expected_order[static_cast<size_t>(d)]) << d;
    EXPECT_EQ(tf[span.begin + span.length], 50256u) << "end-of-text after document " << d;
    EXPECT_EQ(tf.offset(d + 1), span.begin + span.length + 1);
    total += span.length + 1;
  }
  EXPECT_EQ(tf.size(), total);
  EXPECT_EQ(tf.validation_begin(), tf.offset(6));
  ASSERT_NE(tf.data16(), nullptr);
  EXPECT_EQ(tf.data32(), nullptr);
  for (int64_t i = 0; i < total; ++i) ASSERT_EQ(tf.data16()[i], tf[i]);
  // The manifest records what produced the file.
  const auto m = nlohmann::json::parse(ssmlab::test::read_text(manifest));
  EXPECT_EQ(m["tokenizer"]["kind"], "gpt2");
  EXPECT_EQ(m["tokenizer"]["end_of_text"], 50256);
  EXPECT_EQ(m["corpus"]["kind"], "files");
  EXPECT_EQ(m["split"]["validation_documents"], 2);
  EXPECT_EQ(m["dtype"], "uint16le");
  EXPECT_EQ(m["version"], ssmlab::text::kTokenFileVersion);
  EXPECT_EQ(fs::file_size(tf.tokens_path()), static_cast<uintmax_t>(2 * total));
}

TEST(TextTokenFile, SplitIsSeededByDocument) {
  const auto a = ssmlab::text::validation_documents(100, 0.1, 1);
  EXPECT_EQ(a.size(), 10u);
  EXPECT_EQ(ssmlab::text::validation_documents(100, 0.1, 1), a);
  EXPECT_NE(ssmlab::text::validation_documents(100, 0.1, 2), a);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), a.size());
  EXPECT_EQ(ssmlab::text::validation_documents(3, 0.01, 1).size(), 1u) << "at least one validation document";
  EXPECT_EQ(ssmlab::text::validation_documents(3, 0.99, 1).size(), 2u) << "at least one training document";
  ssmlab::test::expect_data_error([] { ssmlab::text::validation_documents(1, 0.5, 1); }, {"one document"});
}

TEST(TextTokenFile, ReusedWhileTheCorpusIsUnchangedRebuiltAfter) {
  ssmlab::test::TempDir dir;
  write_corpus(dir.path, 5);
  const ssmlab::text::ByteTokenizer tok;
  const auto opts = options(dir.path);
  bool built = false;
  const fs::path manifest = ssmlab::text::ensure_token_file(opts, tok, &built);
  EXPECT_TRUE(built);
  EXPECT_EQ(ssmlab::text::ensure_token_file(opts, tok, &built), manifest);
  EXPECT_FALSE(built) << "an unchanged corpus reuses the file";
  {
    const TokenFile tf(manifest);
    EXPECT_FALSE(tf.end_of_text().has_value());
    EXPECT_EQ(tf.document(0).length, tf.offset(1)) << "byte documents have no separator";
  }
  // Another split or tokenizer is another file.
  auto other = opts;
  other.split_seed = 8;
  EXPECT_NE(ssmlab::text::ensure_token_file(other, tok), manifest);
  // A changed corpus rebuilds in place.
  ssmlab::test::write_text(dir.path / "corpus" / "d999.txt", "a new document\n");
  EXPECT_EQ(ssmlab::text::ensure_token_file(opts, tok, &built), manifest);
  EXPECT_TRUE(built);
  EXPECT_EQ(TokenFile(manifest).num_documents(), 6);
  // A corrupt manifest is refused by the reader and rebuilt by ensure_token_file.
  ssmlab::test::write_text(manifest, "{\"format\": \"ssmlab-token-file\", \"version\": 1");
  ssmlab::test::expect_data_error([&] { TokenFile t(manifest); }, {manifest.string(), "not valid JSON"});
  EXPECT_EQ(ssmlab::text::ensure_token_file(opts, tok, &built), manifest);
  EXPECT_TRUE(built);
  EXPECT_EQ(TokenFile(manifest).num_documents(), 6);
}

TEST(TextTokenFile, ReaderRefusesInconsistentFiles) {
  ssmlab::test::TempDir dir;
  write_corpus(dir.path, 4);
  const ssmlab::text::ByteTokenizer tok;
  const fs::path manifest = ssmlab::text::ensure_token_file(options(dir.path), tok);
  const fs::path tokens = TokenFile(manifest).tokens_path();
  const std::string good_tokens = ssmlab::test::read_text(tokens), good_manifest = ssmlab::test::read_text(manifest);
  ssmlab::test::write_text(tokens, good_tokens.substr(0, good_tokens.size() - 2));
  ssmlab::test::expect_data_error([&] { TokenFile t(manifest); }, {tokens.string(), "promises"});
  ssmlab::test::write_text(tokens, good_tokens);
  auto m = nlohmann::json::parse(good_manifest);
  m["version"] = 99;
  ssmlab::test::write_text(manifest, m.dump());
  ssmlab::test::expect_data_error([&] { TokenFile t(manifest); }, {manifest.string(), "version 99"});
  m = nlohmann::json::parse(good_manifest);
  m["documents"]["offsets"][1] = 1000000;
  ssmlab::test::write_text(manifest, m.dump());
  ssmlab::test::expect_data_error([&] { TokenFile t(manifest); }, {manifest.string(), "offsets"});
  m = nlohmann::json::parse(good_manifest);
  m["tokenizer"]["vocab_size"] = 50;  // every byte id >= 50 is now out of range
  ssmlab::test::write_text(manifest, m.dump());
  const TokenFile small(manifest);
  ssmlab::test::expect_data_error([&] { small.tokens(0, 10); }, {tokens.string(), "outside the vocabulary of 50"});
  m = nlohmann::json::parse(good_manifest);
  m.erase("num_tokens");
  ssmlab::test::write_text(manifest, m.dump());
  ssmlab::test::expect_data_error([&] { TokenFile t(manifest); }, {manifest.string(), "num_tokens"});
  fs::remove(tokens);
  ssmlab::test::write_text(manifest, good_manifest);
  ssmlab::test::expect_data_error([&] { TokenFile t(manifest); }, {tokens.string(), "cannot open"});
  ssmlab::test::expect_data_error([&] { TokenFile t(dir.path / "none.json"); }, {"none.json", "no such file"});
}

TEST(TextTokenFile, LargeVocabulariesUseUint32) {
  ssmlab::test::TempDir dir;
  const auto texts = write_corpus(dir.path, 3);
  const WideTokenizer tok;
  const TokenFile tf(ssmlab::text::ensure_token_file(options(dir.path), tok));
  EXPECT_EQ(tf.bytes_per_token(), 4);
  EXPECT_EQ(tf.data16(), nullptr);
  ASSERT_NE(tf.data32(), nullptr);
  EXPECT_EQ(tf.data32()[0], 65536u + 'd') << "the first document starts with \"doc\"";
  std::string all;
  for (int64_t d = 0; d < tf.num_documents(); ++d) {
    const auto s = tf.document(d);
    all += tok.decode(tf.tokens(s.begin, s.length));
    EXPECT_EQ(tf[s.begin + s.length], 65536u + 256);
  }
  EXPECT_EQ(all.size(), texts[0].size() + texts[1].size() + texts[2].size());
}

}  // namespace

}  // namespace text_test_token_file
