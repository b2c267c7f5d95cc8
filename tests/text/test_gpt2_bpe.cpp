// GPT-2 byte-level BPE and the byte tokenizer. The ids of fixed strings are computed here independently of
// ssmlab's tokenizer: GPT-2's bytes_to_unicode rewritten from its definition, and a plain string BPE over the
// real vocab.bpe (the encoder.py loop: merge the lowest-ranked pair everywhere, repeat) on pieces split by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssmlab/core/rng.h"
#include "ssmlab/text/pretokenize.h"
#include "test_util.h"
#include "fuzz/targets.h"
#include "text/text_test_util.h"

namespace text_test_gpt2_bpe {

namespace {

namespace fs = std::filesystem;
using ssmlab::test::gpt2;
using ssmlab::test::gpt2_dir;
using Ids = std::vector<uint32_t>;

std::string utf8(int32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// bytes_to_unicode() as GPT-2 defines it: bs = printable ranges, cs = bs, then the other bytes appended to bs
// in order with code points 256, 257, ... appended to cs.
std::vector<std::string> byte_chars() {
  std::vector<int> bs, cs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b)
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  std::vector<std::string> out(256);
  for (size_t i = 0; i < bs.size(); ++i) out[static_cast<size_t>(bs[i])] = utf8(cs[i]);
  return out;
}

// A plain string BPE over the files, in the shape of encoder.py's bpe().
struct ReferenceBpe {
  std::map<std::pair<std::string, std::string>, int> ranks;
  nlohmann::json encoder;
  std::vector<std::string> chars = byte_chars();

  explicit ReferenceBpe(const fs::path& dir) {
    encoder = nlohmann::json::parse(ssmlab::test::read_text(dir / "encoder.json"));
    std::istringstream lines(ssmlab::test::read_text(dir / "vocab.bpe"));
    std::string line;
    std::getline(lines, line);  // "#version: 0.2"
    int rank = 0;
    while (std::getline(lines, line)) {
      if (line.empty()) continue;
      const size_t sp = line.find(' ');
      ranks[{line.substr(0, sp), line.substr(sp + 1)}] = rank++;
    }
  }

  Ids piece(const std::string& bytes) const {
    std::vector<std::string> word;
    for (unsigned char b : bytes) word.push_back(chars[b]);
    while (word.size() > 1) {
      int best = INT_MAX;
      std::pair<std::string, std::string> bigram;
      for (size_t i = 0; i + 1 < word.size(); ++i) {
        const auto it = ranks.find({word[i], word[i + 1]});
        if (it != ranks.end() && it->second < best) {
          best = it->second;
          bigram = it->first;
        }
      }
      if (best == INT_MAX) break;
      std::vector<std::string> merged;
      for (size_t i = 0; i < word.size();) {
        if (i + 1 < word.size() && word[i] == bigram.first && word[i + 1] == bigram.second) {
          merged.push_back(bigram.first + bigram.second);
          i += 2;
        } else {
          merged.push_back(word[i++]);
        }
      }
      word = merged;
    }
    Ids ids;
    for (const auto& w : word) ids.push_back(encoder.at(w).get<uint32_t>());
    return ids;
  }

  Ids pieces(const std::vector<std::string>& ps) const {
    Ids ids;
    for (const auto& p : ps) {
      const Ids one = piece(p);
      ids.insert(ids.end(), one.begin(), one.end());
    }
    return ids;
  }
};

const ReferenceBpe& reference() {
  static const ReferenceBpe ref(gpt2_dir());
  return ref;
}

TEST(TokenizerGpt2, WellKnownIds) {
  SSMLAB_NEED_GPT2();
  EXPECT_EQ(gpt2()->encode("Hello world"), (Ids{15496, 995}));
  EXPECT_EQ(gpt2()->encode(" the"), (Ids{262}));
  EXPECT_EQ(gpt2()->vocab_size(), 50257);
  EXPECT_EQ(gpt2()->num_merges(), 50000);
  ASSERT_TRUE(gpt2()->end_of_text().has_value());
  EXPECT_EQ(*gpt2()->end_of_text(), 50256u);
  EXPECT_EQ(gpt2()->decode(Ids{50256}), "<|endoftext|>");
  // Plain text "<|endoftext|>" is ordinary characters, never the special id.
  const Ids plain = gpt2()->encode("<|endoftext|>");
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 50256u), 0);
}

TEST(TokenizerGpt2, FixedStringsMatchAnIndependentBpe) {
  SSMLAB_NEED_GPT2();
  struct Case {
    std::string text;
    std::vector<std::string> pieces;  // split by hand from the pattern's rules
  };
  const std::vector<Case> cases = {
      {"Hello world", {"Hello", " world"}},
      {"The quick brown fox jumps over the lazy dog.",
       {"The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."}},
      {"I'm antidisestablishmentarianism's", {"I", "'m", " antidisestablishmentarianism", "'s"}},
      {"tokenization  of\n\nGPT-2 12345678",  // "\n\n" before a word gives one "\n" back
       {"tokenization", " ", " of", "\n", "\n", "GPT", "-", "2", " 12345678"}},
      {"  indented\tcode(x) { return x+1; }",
       {" ", " indented", "\t", "code", "(", "x", ")", " {", " return", " x", "+", "1", ";", " }"}},
      {"na\xC3\xAFve caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x99\x82!!",
       {"na\xC3\xAFve", " caf\xC3\xA9", " \xE4\xBD\xA0\xE5\xA5\xBD", " \xF0\x9F\x99\x82!!"}},
      {"aaaaaaaaaaaaaaaa ====== ......", {"aaaaaaaaaaaaaaaa", " ======", " ......"}},
      {"\xFF\xFE bytes", {"\xFF\xFE", " bytes"}},
  };
  for (const auto& c : cases) {
    const Ids want = reference().pieces(c.pieces);
    EXPECT_EQ(gpt2()->encode(c.text), want) << "text: " << c.text;
    EXPECT_EQ(gpt2()->decode(want), c.text);
  }
}

// Random words and bytes: ssmlab's BPE equals the reference piece by piece (pieces from pretokenize, which the
// fixed strings above and test_pretokenize.cpp check by hand).
TEST(TokenizerGpt2, RandomTextMatchesTheIndependentBpe) {
  SSMLAB_NEED_GPT2();
  ssmlab::Rng rng(17);
  static const std::vector<std::string> words = {"the", "state", "collapse", "Mamba", "forget", "threshold",
                                                 "recurrent", "passkey", "x", "00", "1", "--", "...", "\n",
                                                 "\xC3\xA9t\xC3\xA9", "\xE2\x80\x94", "ing", "Ġ", "'s", "'ll"};
  for (int trial = 0; trial < 200; ++trial) {
    std::string s;
    const int64_t n = rng.randint(1, 30);
    for (int64_t i = 0; i < n; ++i) {
      const double u = rng.uniform();
      if (u < 0.1) s.push_back(static_cast<char>(rng.randint(0, 256)));
      else s += (u < 0.6 ? " " : "") + words[static_cast<size_t>(rng.randint(0, static_cast<int64_t>(words.size())))];
    }
    std::vector<std::string> ps;
    for (auto p : ssmlab::text::pretokenize(s)) ps.emplace_back(p);
    EXPECT_EQ(gpt2()->encode(s), reference().pieces(ps)) << "trial " << trial << ": " << s;
  }
}

std::string random_bytes(ssmlab::Rng& rng, int64_t max_len) {
  std::string s;
  const int64_t n = rng.randint(0, max_len + 1);
  const bool text_like = rng.uniform() < 0.5;
  for (int64_t i = 0; i < n; ++i) {
    if (text_like && rng.uniform() < 0.7) s.push_back(" aeiou\nst'\t."[rng.randint(0, 12)]);
    else s.push_back(static_cast<char>(rng.randint(0, 256)));
  }
  return s;
}

TEST(TokenizerGpt2, RoundTripsArbitraryBytes) {
  SSMLAB_NEED_GPT2();
  ssmlab::Rng rng(3);
  for (int trial = 0; trial < 300; ++trial) {
    const std::string s = random_bytes(rng, 300);
    const Ids ids = gpt2()->encode(s);
    for (uint32_t id : ids) ASSERT_LT(id, 50257u);
    EXPECT_EQ(gpt2()->decode(ids), s) << "trial " << trial;
  }
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(gpt2()->decode(gpt2()->encode(all)), all);
  EXPECT_EQ(gpt2()->encode(""), Ids{});
}

TEST(TokenizerByte, IdsAreTheBytesAndRoundTrip) {
  ssmlab::text::ByteTokenizer tok;
  EXPECT_EQ(tok.vocab_size(), 256);
  EXPECT_FALSE(tok.end_of_text().has_value());
  EXPECT_EQ(tok.encode("A\xFF\n"), (Ids{65, 255, 10}));
  ssmlab::Rng rng(4);
  for (int trial = 0; trial < 100; ++trial) {
    const std::string s = random_bytes(rng, 200);
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
  }
  ssmlab::test::expect_error([&] { tok.decode(Ids{256}); }, {"256", "vocabulary of 256"});
}

// ---- small hand-made files: the merge loop's rules, and every malformed-file error ------------------------

struct TinyBpe {
  ssmlab::test::TempDir dir;
  fs::path enc = dir.path / "encoder.json", bpe = dir.path / "vocab.bpe";
  // The 256 one-byte tokens (ids 0..255 in byte order), then `extra` tokens; merges one a line.
  void write(const std::vector<std::string>& extra, const std::vector<std::string>& merges) {
    const auto chars = byte_chars();
    nlohmann::json j = nlohmann::json::object();
    for (int b = 0; b < 256; ++b) j[chars[static_cast<size_t>(b)]] = b;
    for (size_t i = 0; i < extra.size(); ++i) j[extra[i]] = 256 + i;
    ssmlab::test::write_text(enc, j.dump());
    std::string m = "#version: 0.2\n";
    for (const auto& line : merges) m += line + "\n";
    ssmlab::test::write_text(bpe, m);
  }
  ssmlab::text::Gpt2Bpe load() const { return ssmlab::text::Gpt2Bpe(enc, bpe); }
};

TEST(TokenizerGpt2, MergesTheBestPairEverywhereThenRepeats) {
  TinyBpe t;
  t.write({"aa", "aaaa", "bc", "ab"}, {"a a", "aa aa", "b c", "a b"});
  const auto tok = t.load();
  // "aaaaa": (a a) everywhere left to right -> aa aa a; then (aa aa) -> aaaa a.
  EXPECT_EQ(tok.encode("aaaaa"), (Ids{257, 'a'}));
  // "abc": (b c) ranks before (a b), so a + bc, not ab + c.
  EXPECT_EQ(tok.encode("abc"), (Ids{'a', 258}));
  EXPECT_EQ(tok.encode("ab"), (Ids{259}));
  EXPECT_EQ(tok.vocab_size(), 260);
  EXPECT_FALSE(tok.end_of_text().has_value());
}

TEST(TokenizerGpt2, MissingOrMalformedFilesAreDataErrorsNamingTheFile) {
  using ssmlab::test::expect_data_error;
  TinyBpe t;
  t.write({"ab"}, {"a b"});
  EXPECT_NO_THROW(t.load());
  const fs::path missing = t.dir.path / "nope.json";
  expect_data_error([&] { ssmlab::text::Gpt2Bpe(missing, t.bpe); }, {missing.string(), "no such file"});
  expect_data_error([&] { ssmlab::text::Gpt2Bpe(t.dir.path, t.bpe); }, {t.dir.path.string(), "folder"});

  const std::string good_enc = ssmlab::test::read_text(t.enc);
  ssmlab::test::write_text(t.enc, good_enc.substr(0, good_enc.size() / 2));  // truncated JSON
  expect_data_error([&] { t.load(); }, {t.enc.string(), "not valid JSON"});
  ssmlab::test::write_text(t.enc, "[1, 2]");
  expect_data_error([&] { t.load(); }, {t.enc.string(), "JSON object"});
  ssmlab::test::write_text(t.enc, "{\"a\": 0, \"b\": 7}");
  expect_data_error([&] { t.load(); }, {t.enc.string(), "ids must be the integers 0..1"});
  ssmlab::test::write_text(t.enc, "{\"a\": 0, \"b\": \"one\"}");
  expect_data_error([&] { t.load(); }, {t.enc.string(), "'b'"});
  ssmlab::test::write_text(t.enc, "{\"a\": 0, \"b\": 1}");
  expect_data_error([&] { t.load(); }, {t.enc.string(), "one-byte token of byte 0"});

  t.write({"ab"}, {"a b", "ab"});  // a line that is not "a b"
  expect_data_error([&] { t.load(); }, {t.bpe.string() + ":3", "expected a merge"});
  t.write({"ab"}, {"a b", "a c"});  // makes "ac", which encoder.json lacks
  expect_data_error([&] { t.load(); }, {t.bpe.string() + ":3", "does not have"});
  t.write({"ab", "abc"}, {"a b"});  // "abc" made by no merge: vocab.bpe cut at a line
  expect_data_error([&] { t.load(); }, {t.bpe.string(), "made by no merge", "truncated"});
  t.write({"ab"}, {});
  expect_data_error([&] { t.load(); }, {t.bpe.string(), "no merges"});
}

TEST(TokenizerGpt2, TruncatedReleasedFilesAreRefused) {
  SSMLAB_NEED_GPT2();
  ssmlab::test::TempDir dir;
  const std::string enc = ssmlab::test::read_text(gpt2_dir() / "encoder.json");
  const std::string bpe = ssmlab::test::read_text(gpt2_dir() / "vocab.bpe");
  const fs::path e = dir.path / "encoder.json", b = dir.path / "vocab.bpe";
  ssmlab::test::write_text(e, enc);
  ssmlab::test::write_text(b, bpe.substr(0, bpe.size() * 2 / 3 + 1));  // cut inside a line
  ssmlab::test::expect_data_error([&] { ssmlab::text::Gpt2Bpe(e, b); }, {b.string()});
  ssmlab::test::write_text(b, bpe);
  ssmlab::test::write_text(e, enc.substr(0, enc.size() - 100));
  ssmlab::test::expect_data_error([&] { ssmlab::text::Gpt2Bpe(e, b); }, {e.string(), "not valid JSON"});
}

}  // namespace

namespace {

// The fuzz target's seed (fuzz/target_gpt2_files.cpp) must be files that load, or the target tests errors only.
TEST(TokenizerGpt2, FuzzSeedFilesLoad) {
  ssmlab::test::TempDir dir;
  const std::string seed = ssmlab::fuzz::seeds_gpt2_files().at(0);
  const size_t nul = seed.find('\0');
  ASSERT_NE(nul, std::string::npos);
  ssmlab::test::write_text(dir.path / "encoder.json", seed.substr(0, nul));
  ssmlab::test::write_text(dir.path / "vocab.bpe", seed.substr(nul + 1));
  const ssmlab::text::Gpt2Bpe tok(dir.path / "encoder.json", dir.path / "vocab.bpe");
  EXPECT_EQ(tok.vocab_size(), 259);
  EXPECT_EQ(tok.encode("abc ab"), (Ids{257, ' ', 256}));
  EXPECT_EQ(tok.end_of_text(), std::optional<uint32_t>(258));
}

}  // namespace

}  // namespace text_test_gpt2_bpe
