// GPT-2 byte-level BPE (Radford et al. 2019; the released encoder.py), from its two files at any path:
//   encoder.json  {"token": id, ...}: tokens written in GPT-2's byte -> unicode alphabet (gpt2_byte_to_unicode),
//                 ids 0..n-1 each once (50,257 in the release, <|endoftext|> = 50256)
//   vocab.bpe     "#version: 0.2", then one merge "a b" a line, best (rank 0) first (50,000 in the release)
// encode: pretokenize (pretokenize.h), each piece's bytes become their one-byte tokens, then, as encoder.py's
// bpe(), the adjacent pair of lowest rank is merged at every non-overlapping occurrence left to right, until no
// adjacent pair is a merge. Pieces are cached (most words repeat). decode: the tokens' bytes, concatenated.
// Loading checks what encode relies on, and a failure is a DataError naming the file (and line): JSON syntax,
// ids not 0..n-1, a token outside the alphabet, a missing one-byte token, a merge line not "a b", a merge of or
// into a token not in encoder.json, and tokens that no merge makes (a truncated vocab.bpe), bar <|...|> ones.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "ssmlab/text/tokenizer.h"

namespace ssmlab::text {

// GPT-2's bytes_to_unicode(): the printable bytes '!'..'~', '¡'..'¬', '®'..'ÿ' stand for themselves; the other
// 68 bytes, in increasing order, get U+0100, U+0101, ... Returns the code point of each byte.
const std::array<int32_t, 256>& gpt2_byte_to_unicode();

class Gpt2Bpe : public Tokenizer {
 public:
  Gpt2Bpe(const std::filesystem::path& encoder_json, const std::filesystem::path& vocab_bpe);

  std::string kind() const override { return "gpt2"; }
  int64_t vocab_size() const override { return static_cast<int64_t>(token_bytes_.size()); }
  std::optional<uint32_t> end_of_text() const override { return end_of_text_; }
  std::string fingerprint() const override { return fingerprint_; }
  void encode_append(std::string_view text, std::vector<uint32_t>& out) const override;
  std::string decode(std::span<const uint32_t> ids) const override;

  // The raw bytes of one token.
  const std::string& token_bytes(uint32_t id) const { return token_bytes_.at(id); }
  int64_t num_merges() const { return static_cast<int64_t>(merges_.size()); }

  // The BPE of one piece's bytes (no pre-tokenisation), appended to out.
  void bpe_append(std::string_view piece, std::vector<uint32_t>& out) const;

 protected:
  struct VocabEntry {
    std::string written;  // in GPT-2's byte -> unicode alphabet, or (raw) the bytes themselves
    uint32_t id;
    bool raw;             // an added token outside the BPE vocabulary: its bytes as they are, no alphabet
    bool added = false;   // an added token (tokenizer.json): exempt from the "made by a merge" check
  };
  struct MergeLine {
    std::string left, right;  // written in the alphabet
    std::string where;        // "file:line" or "file: merges[k]" for messages
  };
  Gpt2Bpe() = default;
  // Checks and indexes a vocabulary (ids 0..n-1 each once, all 256 one-byte tokens) and its merges (best first);
  // errors are DataErrors naming enc_name / the merge's place.
  void build(const std::vector<VocabEntry>& vocab, const std::string& enc_name, const std::vector<MergeLine>& merges,
             const std::string& bpe_name);
  std::string fingerprint_;

 private:
  struct Merge {
    uint32_t rank, merged;
  };
  std::vector<std::string> token_bytes_;         // id -> bytes
  std::array<uint32_t, 256> byte_token_{};        // byte -> id of its one-byte token
  std::unordered_map<uint64_t, Merge> merges_;    // (left id << 32 | right id) -> rank and merged id
  std::optional<uint32_t> end_of_text_;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<uint32_t>> cache_;  // piece -> ids
};

}  // namespace ssmlab::text
