// Hugging Face tokenizer.json of a byte-level BPE (GPT-2, GPT-NeoX and the Mamba checkpoints): model.type "BPE"
// with its vocab and merges ("a b" strings or [a, b] pairs), a ByteLevel pre-tokenizer (GPT-2's pattern, no
// prefix space; alone or inside a Sequence), an optional NFC normalizer, and added_tokens. Encoding is
// Gpt2Bpe's (the same ids as encoder.json + vocab.bpe of the same vocabulary); non-special added tokens (GPT-NeoX's
// runs of spaces) are matched in the text first, leftmost-longest, as the tokenizers library does; special ones
// (<|endoftext|>) are encoded as ordinary text, as the gpt2 tokenizer does. Anything else in the file that would
// change the ids (another model type or pre-tokenizer, add_prefix_space, byte_fallback, ignore_merges, an
// end-of-word suffix) is refused with a DataError naming the field.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "ssmlab/text/gpt2_bpe.h"

namespace ssmlab::text {

class HfTokenizer : public Gpt2Bpe {
 public:
  explicit HfTokenizer(const std::filesystem::path& tokenizer_json);
  std::string kind() const override { return "tokenizer.json"; }
  void encode_append(std::string_view text, std::vector<uint32_t>& out) const override;

 private:
  struct Added {
    std::string content;
    uint32_t id;
  };
  std::vector<Added> split_on_;  // non-special added tokens, matched before pre-tokenisation
  bool nfc_ = false;
};

}  // namespace ssmlab::text
