// GPT-2's tokenizer files (text/gpt2_bpe.h): an input is encoder.json, a NUL, then vocab.bpe. Files that load
// must encode the input itself and decode it back byte for byte; a mismatch escapes as a crash.
#include <filesystem>
#include <stdexcept>

#include "input_file.h"
#include "ssmlab/core/error.h"
#include "ssmlab/text/gpt2_bpe.h"
#include "targets.h"

namespace ssmlab::fuzz {

void run_gpt2_files(std::string_view input) {
  const size_t nul = input.find('\0');
  const std::string_view enc = input.substr(0, nul);
  const std::string_view bpe = nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);
  const auto enc_path = scratch_file(enc, "fuzz-encoder.json"), bpe_path = scratch_file(bpe, "fuzz-vocab.bpe");
  try {
    const text::Gpt2Bpe tok(enc_path, bpe_path);
    const auto ids = tok.encode(input);
    if (tok.decode(ids) != input) throw std::logic_error("gpt2 BPE: decode(encode(input)) differs from the input");
  } catch (const Error&) {
  }
  std::error_code ec;
  std::filesystem::remove(enc_path, ec);
  std::filesystem::remove(bpe_path, ec);
}

std::vector<std::string> seeds_gpt2_files() {
  // The 256 one-byte tokens in GPT-2's alphabet (printable bytes as themselves, the rest from U+0100), then
  // "ab", "abc" and <|endoftext|>; merges "a b" and "ab c".
  std::string enc = "{";
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const int cp = printable ? b : next++;
    std::string ch;
    if (cp == '"' || cp == '\\') ch = std::string("\\") + static_cast<char>(cp);
    else if (cp < 0x80) ch = std::string(1, static_cast<char>(cp));
    else ch = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    enc += "\"" + ch + "\": " + std::to_string(b) + ", ";
  }
  enc += "\"ab\": 256, \"abc\": 257, \"<|endoftext|>\": 258}";
  return {enc + std::string(1, '\0') + "#version: 0.2\na b\nab c\n"};
}

}  // namespace ssmlab::fuzz
