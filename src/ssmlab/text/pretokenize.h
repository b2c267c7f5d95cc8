// GPT-2's pre-tokenisation (Radford et al. 2019, encoder.py): before byte-level BPE the text is cut into pieces by
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (leftmost match, alternatives tried in this order; BPE never merges across pieces). We walk the text once
// with the same rules instead of running a regex engine:
//   - a contraction: ASCII ' followed by s t m d, or re ve ll (lower case only, as the pattern);
//   - an optional U+0020 space and then a run of letters (gc L*), or of numbers (gc N*), or of "other"
//     characters (neither White_Space nor L nor N);
//   - a run of k whitespace characters: all k at the end of the text, else k - 1 when k >= 2 (the lookahead
//     (?!\S) gives the last one back, so " word" keeps its space), else the single one.
// Unicode classes come from ICU (Debian libicu-dev): \p{L}, \p{N} are general categories, \s is White_Space.
// Text is UTF-8; GPT-2 saw only valid Unicode, so for arbitrary bytes we decide: a byte that does not start a
// well-formed UTF-8 sequence (RFC 3629: no overlongs, surrogates or values past U+10FFFF) is one character of
// class "other". Pieces are byte ranges of the input, so every byte string splits and re-joins exactly.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace ssmlab::text {

enum class CharClass : uint8_t { letter, number, space, other };

// One character of the input: its bytes [begin, begin + size), code point (-1 for an invalid byte) and class.
struct Char {
  uint32_t begin = 0;
  uint8_t size = 0;
  int32_t code = -1;
  CharClass cls = CharClass::other;
};

// The characters of `text` as above (lenient UTF-8). Text longer than 4 GiB is refused (ssmlab::Error).
std::vector<Char> decode_chars(std::string_view text);

// The class of one code point (ICU general category and White_Space).
CharClass char_class(int32_t code);

// GPT-2's pieces of `text` in order, as views into it (their concatenation is `text`).
std::vector<std::string_view> pretokenize(std::string_view text);

}  // namespace ssmlab::text
