// Tokenizers: text (bytes) <-> token ids. Two kinds (make_tokenizer):
//   byte   the 256 byte values are the ids; no end-of-text id.
//   gpt2   GPT-2's byte-level BPE read from encoder.json + vocab.bpe at any path (gpt2_bpe.h); 50,257 ids with
//          the released files, <|endoftext|> = 50256.
//   tokenizer_json  a Hugging Face tokenizer.json of a byte-level BPE (GPT-NeoX, the Mamba checkpoints;
//          hf_tokenizer.h).
// Both encode every byte string (invalid UTF-8 included) and decode(encode(s)) == s. Torch-free: ids are uint32.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ssmlab/core/fields.h"

namespace ssmlab::text {

inline constexpr const char* kDefaultBpeEncoder = "../shared/data/gpt2-bpe/encoder.json";
inline constexpr const char* kDefaultBpeMerges = "../shared/data/gpt2-bpe/vocab.bpe";

struct TokenizerOptions {
  std::string kind = "gpt2";
  std::string bpe_encoder = kDefaultBpeEncoder;
  std::string bpe_merges = kDefaultBpeMerges;
  std::string tokenizer_json;

  template <class V>
  void visit(V& v) {
    v("tokenizer", kind,
      "gpt2: GPT-2 byte-level BPE (encoder.json + vocab.bpe); byte: the 256 byte values; tokenizer_json: a Hugging "
      "Face tokenizer.json (byte-level BPE)",
      Check::one_of({"gpt2", "byte", "tokenizer_json"}));
    v("bpe_encoder", bpe_encoder, "gpt2: path of GPT-2's encoder.json (token -> id)");
    v("bpe_merges", bpe_merges, "gpt2: path of GPT-2's vocab.bpe (the merges, best first)");
    v("tokenizer_json", tokenizer_json, "tokenizer_json: path of the tokenizer.json");
  }
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;
  virtual int64_t vocab_size() const = 0;
  // The id that ends a document in a token file (GPT-2's <|endoftext|>); none for byte.
  virtual std::optional<uint32_t> end_of_text() const = 0;
  // What identifies the tokenizer's behaviour: its kind and the SHA-256 of its files (token file manifests).
  virtual std::string fingerprint() const = 0;
  // Appends the ids of `text` to `out`. Plain text: "<|endoftext|>" inside it is encoded as ordinary characters.
  virtual void encode_append(std::string_view text, std::vector<uint32_t>& out) const = 0;
  // The bytes of ids; an id outside [0, vocab_size) is an ssmlab::Error naming it.
  virtual std::string decode(std::span<const uint32_t> ids) const = 0;

  std::vector<uint32_t> encode(std::string_view text) const {
    std::vector<uint32_t> out;
    encode_append(text, out);
    return out;
  }
};

using TokenizerPtr = std::shared_ptr<const Tokenizer>;

class ByteTokenizer : public Tokenizer {
 public:
  std::string kind() const override { return "byte"; }
  int64_t vocab_size() const override { return 256; }
  std::optional<uint32_t> end_of_text() const override { return std::nullopt; }
  std::string fingerprint() const override { return "byte"; }
  void encode_append(std::string_view text, std::vector<uint32_t>& out) const override;
  std::string decode(std::span<const uint32_t> ids) const override;
};

// The tokenizer the options name; gpt2 reads its two files (DataError naming a missing or malformed one).
TokenizerPtr make_tokenizer(const TokenizerOptions& opts);

}  // namespace ssmlab::text
