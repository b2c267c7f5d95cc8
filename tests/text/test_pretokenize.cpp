// GPT-2's pre-tokenisation: pieces of fixed strings derived by hand from the pattern's rules (and checked once,
// while writing them, against Python's `regex` module running the pattern), and properties on arbitrary bytes.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ssmlab/core/rng.h"
#include "ssmlab/text/pretokenize.h"

namespace text_test_pretokenize {

namespace {

using ssmlab::text::pretokenize;
using Pieces = std::vector<std::string>;

Pieces pieces(const std::string& s) {
  Pieces out;
  for (auto p : pretokenize(s)) out.emplace_back(p);
  return out;
}

struct Case {
  std::string text;
  Pieces expected;
};

TEST(TextPretokenize, FixedStringsSplitAsGpt2) {
  const std::vector<Case> cases = {
      {"Hello world", {"Hello", " world"}},
      {"don't stop", {"don", "'t", " stop"}},
      {"I'm here, they'll go; we've 're",
       {"I", "'m", " here", ",", " they", "'ll", " go", ";", " we", "'ve", " '", "re"}},
      {"a  b", {"a", " ", " b"}},              // the lookahead gives the last space to the word
      {"x \ny", {"x", " ", "\n", "y"}},        // only U+0020 joins a word; "\n" stands alone
      {"end  ", {"end", "  "}},                // trailing whitespace stays whole
      {"tab\t\tx", {"tab", "\t", "\t", "x"}},
      {"'S 's", {"'", "S", " '", "s"}},        // contractions are lower case only
      {"h\xC3\xA9llo w\xC3\xB6rld 123 \xC2\xBD \xE4\xBD\xA0\xE5\xA5\xBD",  // héllo wörld 123 ½ 你好
       {"h\xC3\xA9llo", " w\xC3\xB6rld", " 123", " \xC2\xBD", " \xE4\xBD\xA0\xE5\xA5\xBD"}},
      {"x=1+2.5e3!", {"x", "=", "1", "+", "2", ".", "5", "e", "3", "!"}},
      {"   leading", {"  ", " leading"}},
      {" ?!x", {" ?!", "x"}},
      {"\xC2\xA0word \xE3\x80\x80x", {"\xC2\xA0", "word", " ", "\xE3\x80\x80", "x"}},  // NBSP, ideographic space
      {"\xE2\x85\xAB\xD9\xA3x", {"\xE2\x85\xAB\xD9\xA3", "x"}},  // Roman numeral XII (Nl), Arabic-Indic 3 (Nd)
      {"", {}},
      {"\xFF\xFE" "ab \xC3(", {"\xFF\xFE", "ab", " \xC3(", }},  // invalid bytes are "other" characters
      {"\xF0\x9F\x99\x82 hi", {"\xF0\x9F\x99\x82", " hi"}},       // an emoji (So) is "other"
  };
  for (const auto& c : cases) EXPECT_EQ(pieces(c.text), c.expected) << "text: " << c.text;
}

TEST(TextPretokenize, PiecesTileArbitraryBytes) {
  ssmlab::Rng rng(5);
  for (int trial = 0; trial < 500; ++trial) {
    std::string s;
    const int64_t n = rng.randint(0, 120);
    for (int64_t i = 0; i < n; ++i) {
      // Mix raw bytes with spaces, newlines, letters and multi-byte starts so every rule is reached.
      static const char pool[] = {' ', ' ', '\n', 'a', 'Z', '7', '\'', 's', '\xC3', '\xA9', '\xE2', '\x80', '\xFF'};
      s.push_back(rng.uniform() < 0.5 ? static_cast<char>(rng.randint(0, 256))
                                      : pool[rng.randint(0, static_cast<int64_t>(sizeof pool))]);
    }
    std::string joined;
    for (auto p : pretokenize(s)) {
      ASSERT_FALSE(p.empty()) << "an empty piece in " << trial;
      joined += p;
    }
    EXPECT_EQ(joined, s) << "trial " << trial;
  }
}

TEST(TextPretokenize, ClassesFollowUnicode) {
  using ssmlab::text::CharClass;
  using ssmlab::text::char_class;
  EXPECT_EQ(char_class('a'), CharClass::letter);
  EXPECT_EQ(char_class(0x4F60), CharClass::letter);  // 你
  EXPECT_EQ(char_class('5'), CharClass::number);
  EXPECT_EQ(char_class(0x00BD), CharClass::number);  // ½ (No)
  EXPECT_EQ(char_class(' '), CharClass::space);
  EXPECT_EQ(char_class(0x2028), CharClass::space);   // line separator
  EXPECT_EQ(char_class('_'), CharClass::other);
  EXPECT_EQ(char_class(-1), CharClass::other);       // an invalid byte
  const auto chars = ssmlab::text::decode_chars("\xE0\x80\x80\xED\xA0\x80");  // overlong NUL, a surrogate
  ASSERT_EQ(chars.size(), 6u) << "ill-formed sequences are single invalid bytes";
  for (const auto& c : chars) EXPECT_EQ(c.code, -1);
}

}  // namespace

}  // namespace text_test_pretokenize
