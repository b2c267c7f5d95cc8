// GPT-2's pre-tokenisation over lenient UTF-8 (rules and decisions: pretokenize.h).
#include "ssmlab/text/pretokenize.h"

#include <unicode/uchar.h>

#include <limits>

#include "ssmlab/core/error.h"

namespace ssmlab::text {
namespace {

// Length of the well-formed UTF-8 sequence at s[i] and its code point, or 0 when s[i] starts none (RFC 3629
// table 3-7: the second byte's range depends on the first, which excludes overlongs and surrogates).
int utf8_sequence(std::string_view s, size_t i, int32_t& code) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c0 = b(i);
  if (c0 < 0x80) {
    code = c0;
    return 1;
  }
  int n = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (c0 >= 0xC2 && c0 <= 0xDF) {
    n = 2;
    code = c0 & 0x1F;
  } else if (c0 >= 0xE0 && c0 <= 0xEF) {
    n = 3;
    code = c0 & 0x0F;
    if (c0 == 0xE0) lo = 0xA0;  // no overlong 3-byte forms
    if (c0 == 0xED) hi = 0x9F;  // no surrogates U+D800..U+DFFF
  } else if (c0 >= 0xF0 && c0 <= 0xF4) {
    n = 4;
    code = c0 & 0x07;
    if (c0 == 0xF0) lo = 0x90;  // no overlong 4-byte forms
    if (c0 == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
  } else {
    return 0;
  }
  if (i + static_cast<size_t>(n) > s.size()) return 0;
  for (int k = 1; k < n; ++k) {
    const uint8_t ck = b(i + static_cast<size_t>(k));
    if (ck < (k == 1 ? lo : 0x80) || ck > (k == 1 ? hi : 0xBF)) return 0;
    code = (code << 6) | (ck & 0x3F);
  }
  return n;
}

bool is_ascii(const Char& c, char ch) { return c.code == static_cast<unsigned char>(ch); }

// Length in characters of the contraction at chars[i] ('s 't 're 've 'm 'll 'd), or 0.
size_t contraction(const std::vector<Char>& chars, size_t i) {
  if (!is_ascii(chars[i], '\'') || i + 1 >= chars.size()) return 0;
  const Char& a = chars[i + 1];
  for (char c : {'s', 't', 'm', 'd'})
    if (is_ascii(a, c)) return 2;
  if (i + 2 >= chars.size()) return 0;
  const Char& b = chars[i + 2];
  if ((is_ascii(a, 'r') && is_ascii(b, 'e')) || (is_ascii(a, 'v') && is_ascii(b, 'e')) ||
      (is_ascii(a, 'l') && is_ascii(b, 'l')))
    return 3;
  return 0;
}

// Characters matched at chars[i] by the first alternative of the pattern that matches there.
size_t match_at(const std::vector<Char>& chars, size_t i) {
  const size_t n = chars.size();
  if (size_t c = contraction(chars, i)) return c;
  const auto run = [&](size_t from, CharClass cls) {
    size_t j = from;
    while (j < n && chars[j].cls == cls) ++j;
    return j - from;
  };
  // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': the optional space is tried first, then without it.
  for (CharClass cls : {CharClass::letter, CharClass::number, CharClass::other}) {
    if (is_ascii(chars[i], ' ') && i + 1 < n && chars[i + 1].cls == cls) return 1 + run(i + 1, cls);
    if (chars[i].cls == cls) return run(i, cls);
  }
  // '\s+(?!\S)' then '\s+': chars[i] is whitespace here (every other class matched above).
  const size_t k = run(i, CharClass::space);
  if (i + k == n) return k;  // at the end nothing follows, so the lookahead holds for the whole run
  return k >= 2 ? k - 1 : 1;
}

}  // namespace

CharClass char_class(int32_t code) {
  if (code < 0) return CharClass::other;
  const auto c = static_cast<UChar32>(code);
  if (u_isUWhiteSpace(c)) return CharClass::space;
  const uint32_t mask = U_GET_GC_MASK(c);
  if (mask & U_GC_L_MASK) return CharClass::letter;
  if (mask & U_GC_N_MASK) return CharClass::number;
  return CharClass::other;
}

std::vector<Char> decode_chars(std::string_view text) {
  SSMLAB_CHECK(text.size() <= std::numeric_limits<uint32_t>::max(), "pretokenize: a text of ", text.size(),
               " bytes is longer than the 4 GiB a document may have");
  std::vector<Char> out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    Char c;
    c.begin = static_cast<uint32_t>(i);
    int32_t code = -1;
    const int len = utf8_sequence(text, i, code);
    if (len == 0) {
      c.size = 1;  // an invalid byte: one "other" character of its own
    } else {
      c.size = static_cast<uint8_t>(len);
      c.code = code;
    }
    c.cls = char_class(c.code);
    out.push_back(c);
    i += c.size;
  }
  return out;
}

std::vector<std::string_view> pretokenize(std::string_view text) {
  const std::vector<Char> chars = decode_chars(text);
  std::vector<std::string_view> pieces;
  for (size_t i = 0; i < chars.size();) {
    const size_t m = match_at(chars, i);
    const size_t begin = chars[i].begin;
    const size_t end = i + m < chars.size() ? chars[i + m].begin : text.size();
    pieces.push_back(text.substr(begin, end - begin));
    i += m;
  }
  return pieces;
}

}  // namespace ssmlab::text
