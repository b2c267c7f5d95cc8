// Shared by the text tests: the real GPT-2 files, small file writers (a ustar archive written by hand, so the
// tar reader is tested against the format), and an expectation that a call throws a DataError.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/rng.h"
#include "ssmlab/tasks/text.h"
#include "ssmlab/text/gpt2_bpe.h"

namespace ssmlab::test {

inline std::filesystem::path gpt2_dir() { return std::filesystem::path(SSMLAB_SOURCE_DIR) / "../shared/data/gpt2-bpe"; }
inline std::filesystem::path brown_archive() {
  return std::filesystem::path(SSMLAB_SOURCE_DIR) / "../shared/data/brown/brown-corpus.tar.gz";
}

// The released GPT-2 tokenizer, loaded once for the test program (nullptr when the files are absent).
inline const text::Gpt2Bpe* gpt2() {
  static const std::unique_ptr<text::Gpt2Bpe> tok = []() -> std::unique_ptr<text::Gpt2Bpe> {
    if (!std::filesystem::exists(gpt2_dir() / "encoder.json")) return nullptr;
    return std::make_unique<text::Gpt2Bpe>(gpt2_dir() / "encoder.json", gpt2_dir() / "vocab.bpe");
  }();
  return tok.get();
}

#define SSMLAB_NEED_GPT2()                                                                         \
  if (::ssmlab::test::gpt2() == nullptr) GTEST_SKIP() << "GPT-2 files not found at "               \
                                                      << ::ssmlab::test::gpt2_dir().string()

inline void write_text(const std::filesystem::path& p, const std::string& s) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f.write(s.data(), static_cast<std::streamsize>(s.size()));
}

// A corpus of `docs` documents of seeded random letters (document d holds base + step·d of them, so no two windows
// are equal), written as dir/corpus/docNN.txt, and a byte-tokenizer text config over it: token cache in
// dir/cache, windows of 16, a quarter of the documents held out (split seed 3). Callers change what they need.
inline tasks::TextConfig random_letters_text(const std::filesystem::path& dir, int docs, int base, int step,
                                             uint64_t seed) {
  Rng rng(seed);
  for (int d = 0; d < docs; ++d) {
    std::string t;
    for (int i = 0; i < base + step * d; ++i) t.push_back(static_cast<char>('a' + rng.randint(0, 26)));
    char name[32];
    std::snprintf(name, sizeof name, "doc%02d.txt", d);
    write_text(dir / "corpus" / name, t);
  }
  tasks::TextConfig c;
  c.corpus = {"files", (dir / "corpus").string()};
  c.tokenizer.kind = "byte";
  c.cache_dir = (dir / "cache").string();
  c.seq_len = 16;
  c.validation_fraction = 0.25;
  c.seed = 3;
  return c;
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// A ustar archive of regular files (name, content), ending with two zero blocks.
inline std::string tar_archive(const std::vector<std::pair<std::string, std::string>>& files) {
  std::string out;
  for (const auto& [name, body] : files) {
    char h[512] = {};
    const auto put = [&](size_t at, const std::string& s) { std::memcpy(h + at, s.data(), s.size()); };
    const auto octal = [](uint64_t v, int digits) {
      std::string s(static_cast<size_t>(digits), '0');
      for (int i = digits - 1; i >= 0; --i, v >>= 3) s[static_cast<size_t>(i)] = static_cast<char>('0' + (v & 7));
      return s;
    };
    put(0, name);
    put(100, octal(0644, 7));
    put(108, octal(0, 7));
    put(116, octal(0, 7));
    put(124, octal(body.size(), 11));
    put(136, octal(0, 11));
    h[156] = '0';
    put(257, "ustar");
    put(263, "00");
    std::memset(h + 148, ' ', 8);
    uint64_t sum = 0;
    for (char c : h) sum += static_cast<unsigned char>(c);
    put(148, octal(sum, 6));  // six digits, NUL, space
    h[154] = '\0';
    out.append(h, sizeof h);
    out += body;
    out.append((512 - body.size() % 512) % 512, '\0');
  }
  out.append(1024, '\0');
  return out;
}

// Runs f and expects a DataError whose message contains every one of parts.
template <class F>
void expect_data_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "expected a DataError mentioning '" << *parts.begin() << "'";
  } catch (const DataError& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nlacks: " << p;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a DataError, got another exception: " << e.what();
  }
}

}  // namespace ssmlab::test
