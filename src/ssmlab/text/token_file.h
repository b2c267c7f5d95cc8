// A corpus tokenised once into a memory-mapped token file, described by a JSON manifest beside it, and reused
// while the manifest matches.
//   <stem>.tokens  the ids of every document, little-endian uint16 (vocabulary <= 65,536) or uint32; each
//                  document followed by the tokenizer's end-of-text id (gpt2: 50256; byte: none); the training
//                  documents first, then the validation ones, each group in corpus order
//   <stem>.json    the manifest: format "ssmlab-token-file" and version, the tokens file's name, dtype, token
//                  count and SHA-256; the tokenizer (kind, fingerprint = SHA-256 of its files, vocabulary size,
//                  end-of-text id); the corpus (kind, absolute path, fingerprint of its files, empty documents
//                  skipped); the split (validation fraction, seed, document counts); and per document its name,
//                  its index in corpus order and its first token (offsets[d] .. offsets[d + 1], n + 1 offsets)
// The split is by document: a seeded permutation of the corpus's documents (ssmlab::Rng, Fisher-Yates) puts
// round(fraction * n) of them (at least 1 when fraction > 0, at most n - 1) in validation.
// <stem> = <corpus kind>-<tokenizer kind>-<16 hex digits of a hash of what defines the content>, so different
// corpora, tokenizers or splits never share a file. Both files are written atomically (core/io.h), tokens first,
// under an flock on <stem>.lock, so concurrent runs build once and a crash never leaves a manifest without its
// tokens. A manifest whose corpus fingerprint (or anything else) no longer matches is rebuilt, with a log line.
// Opening a token file directly (TokenFile) refuses any inconsistency with a DataError naming the file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ssmlab/text/corpus.h"
#include "ssmlab/text/tokenizer.h"

namespace ssmlab::text {

inline constexpr int64_t kTokenFileVersion = 1;

struct TokenFileOptions {
  CorpusOptions corpus;
  std::string cache_dir = ".data/tokens";
  double validation_fraction = 0.05;
  int64_t split_seed = 123;
};

// Tokens [begin, begin + length) of one document; its end-of-text id (if any) follows at begin + length.
struct DocumentSpan {
  int64_t begin = 0, length = 0;
};

class TokenFile {
 public:
  explicit TokenFile(const std::filesystem::path& manifest);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  int64_t size() const { return num_tokens_; }
  int bytes_per_token() const { return width_; }
  uint32_t operator[](int64_t i) const {
    return width_ == 2 ? static_cast<const uint16_t*>(map_)[i] : static_cast<const uint32_t*>(map_)[i];
  }
  // Tokens [begin, begin + count) widened to int64 into out; bounds checked, and an id >= vocab_size is a
  // DataError naming the file and the position.
  void read(int64_t begin, int64_t count, int64_t* out) const;
  std::vector<uint32_t> tokens(int64_t begin, int64_t count) const;
  // The mapped ids themselves (no copy, no check): data16() when bytes_per_token() == 2, else data32(); the other
  // is nullptr. Spans of any length cost nothing until read.
  const uint16_t* data16() const { return width_ == 2 ? static_cast<const uint16_t*>(map_) : nullptr; }
  const uint32_t* data32() const { return width_ == 4 ? static_cast<const uint32_t*>(map_) : nullptr; }

  int64_t num_documents() const { return static_cast<int64_t>(names_.size()); }
  DocumentSpan document(int64_t d) const;
  // First token of document d; offset(num_documents()) == size().
  int64_t offset(int64_t d) const { return offsets_.at(static_cast<size_t>(d)); }
  const std::string& document_name(int64_t d) const { return names_.at(static_cast<size_t>(d)); }
  int64_t num_train_documents() const { return train_documents_; }
  int64_t validation_begin() const { return offset(train_documents_); }  // first validation token

  int64_t vocab_size() const { return vocab_size_; }
  std::optional<uint32_t> end_of_text() const { return end_of_text_; }
  const std::string& tokenizer_fingerprint() const { return tokenizer_fingerprint_; }
  const std::string& corpus_fingerprint() const { return corpus_fingerprint_; }
  const std::string& identity() const { return identity_; }  // the manifest's "identity" (what the stem hashes)
  const std::filesystem::path& manifest_path() const { return manifest_; }
  const std::filesystem::path& tokens_path() const { return tokens_; }

 private:
  std::filesystem::path manifest_, tokens_;
  void* map_ = nullptr;
  int64_t map_bytes_ = 0;
  int64_t num_tokens_ = 0;
  int width_ = 2;
  std::vector<int64_t> offsets_;
  std::vector<std::string> names_;
  int64_t train_documents_ = 0;
  int64_t vocab_size_ = 0;
  std::optional<uint32_t> end_of_text_;
  std::string tokenizer_fingerprint_, corpus_fingerprint_, identity_;
};

// The token file for opts and tok: its manifest path. Reused when the manifest matches (identity and corpus
// fingerprint) and opens cleanly, else built (and `built`, if given, set to true).
std::filesystem::path ensure_token_file(const TokenFileOptions& opts, const Tokenizer& tok, bool* built = nullptr);

// Which corpus documents (indices in corpus order) go to validation: sorted, as ensure_token_file splits.
std::vector<int64_t> validation_documents(int64_t num_documents, double fraction, int64_t seed);

}  // namespace ssmlab::text
