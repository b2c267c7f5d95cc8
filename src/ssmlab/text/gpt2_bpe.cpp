// GPT-2 byte-level BPE: loading and checking the two files, encode and decode (rules: gpt2_bpe.h).
#include "ssmlab/text/gpt2_bpe.h"
#include "ssmlab/text/hf_tokenizer.h"

#include <algorithm>
#include <queue>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/json_limits.h"
#include "ssmlab/core/sha256.h"
#include "ssmlab/data/input_file.h"
#include "ssmlab/text/pretokenize.h"

namespace ssmlab::text {
namespace {

constexpr int64_t kMaxBpeFileBytes = int64_t{256} << 20;  // the released files are 1.0 MB and 0.46 MB
constexpr size_t kMaxCachedPieces = size_t{1} << 20;

std::string read_tokenizer_file(const std::filesystem::path& path) {
  std::vector<uint8_t> bytes;
  try {
    bytes = data::read_all_bytes(path, kMaxBpeFileBytes);
  } catch (const DataError&) {
    throw;
  } catch (const Error& e) {
    fail_data(e.what());  // missing, a folder, unreadable, corrupt gzip: the message names the file
  }
  return std::string(bytes.begin(), bytes.end());
}

// Code point of each byte's stand-in, inverted: stand-in code point -> byte (-1 when none).
const std::unordered_map<int32_t, uint8_t>& unicode_to_byte() {
  static const std::unordered_map<int32_t, uint8_t> inverse = [] {
    std::unordered_map<int32_t, uint8_t> m;
    for (int b = 0; b < 256; ++b) m[gpt2_byte_to_unicode()[static_cast<size_t>(b)]] = static_cast<uint8_t>(b);
    return m;
  }();
  return inverse;
}

// A token as written in the files (UTF-8 of stand-in characters) -> its raw bytes; false if a character is
// not a stand-in (or the UTF-8 is malformed).
bool alphabet_to_bytes(std::string_view written, std::string& bytes) {
  bytes.clear();
  for (const Char& c : decode_chars(written)) {
    const auto it = unicode_to_byte().find(c.code);
    if (c.code < 0 || it == unicode_to_byte().end()) return false;
    bytes.push_back(static_cast<char>(it->second));
  }
  return true;
}

uint64_t pair_key(uint32_t a, uint32_t b) { return (static_cast<uint64_t>(a) << 32) | b; }

bool is_special(const std::string& bytes) {
  return bytes.size() > 4 && bytes.starts_with("<|") && bytes.ends_with("|>");
}

}  // namespace

const std::array<int32_t, 256>& gpt2_byte_to_unicode() {
  static const std::array<int32_t, 256> table = [] {
    std::array<int32_t, 256> t{};
    const auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; };
    int next = 256;
    for (int b = 0; b < 256; ++b) t[static_cast<size_t>(b)] = printable(b) ? b : next++;
    return t;
  }();
  return table;
}

Gpt2Bpe::Gpt2Bpe(const std::filesystem::path& encoder_json, const std::filesystem::path& vocab_bpe) {
  const std::string enc_name = encoder_json.string(), bpe_name = vocab_bpe.string();
  // encoder.json: token -> id.
  const std::string enc_text = read_tokenizer_file(encoder_json);
  if (json_limits::depth(enc_text) > json_limits::kMaxDepth)
    fail_data(enc_name, ": nested deeper than ", json_limits::kMaxDepth, " levels; expected GPT-2's encoder.json");
  nlohmann::json enc;
  try {
    enc = nlohmann::json::parse(enc_text);
  } catch (const nlohmann::json::exception& e) {
    fail_data(enc_name, ": not valid JSON, so not GPT-2's encoder.json (", e.what(), ")");
  }
  if (!enc.is_object() || enc.empty())
    fail_data(enc_name, ": expected a JSON object {\"token\": id, ...} (GPT-2's encoder.json); got ", enc.type_name());
  std::vector<VocabEntry> vocab;
  for (const auto& [written, value] : enc.items()) {
    if (!value.is_number_unsigned() || value.get<uint64_t>() >= enc.size())
      fail_data(enc_name, ": token '", written, "' has id ", value.dump(), "; ids must be the integers 0..",
                enc.size() - 1);
    vocab.push_back({written, value.get<uint32_t>(), false});
  }
  // vocab.bpe: one merge a line, best first.
  const std::string bpe_text = read_tokenizer_file(vocab_bpe);
  std::vector<MergeLine> merges;
  size_t line_no = 0;
  for (size_t pos = 0; pos < bpe_text.size();) {
    size_t end = bpe_text.find('\n', pos);
    if (end == std::string::npos) end = bpe_text.size();
    std::string_view line(bpe_text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    const size_t sp = line.find(' ');
    if (sp == 0 || sp == std::string_view::npos || sp + 1 == line.size() ||
        line.find(' ', sp + 1) != std::string_view::npos)
      fail_data(bpe_name, ":", line_no, ": expected a merge 'a b' (two tokens and one space); got '", line, "'");
    merges.push_back({std::string(line.substr(0, sp)), std::string(line.substr(sp + 1)), str(bpe_name, ":", line_no)});
  }
  build(vocab, enc_name, merges, bpe_name);
  fingerprint_ = "gpt2 encoder.json sha256:" + sha256_hex(enc_text) + " vocab.bpe sha256:" + sha256_hex(bpe_text);
}

void Gpt2Bpe::build(const std::vector<VocabEntry>& vocab, const std::string& enc_name,
                    const std::vector<MergeLine>& merges, const std::string& bpe_name) {
  const size_t n = vocab.size();
  token_bytes_.assign(n, std::string());
  std::vector<bool> seen(n, false), exempt(n, false);
  std::unordered_map<std::string, uint32_t> id_of;  // raw bytes -> id
  std::string bytes;
  for (const auto& v : vocab) {
    const uint32_t id = v.id;
    if (id >= n) fail_data(enc_name, ": token '", v.written, "' has id ", id, "; ids must be the integers 0..", n - 1);
    if (seen[id]) fail_data(enc_name, ": id ", id, " is given to more than one token");
    seen[id] = true;
    exempt[id] = v.raw || v.added;
    if (v.raw) {
      bytes = v.written;  // an added token outside the vocabulary: its content as it is
    } else if (!alphabet_to_bytes(v.written, bytes)) {
      fail_data(enc_name, ": token '", v.written, "' (id ", id, ") has a character outside GPT-2's byte-to-unicode alphabet");
    }
    token_bytes_[id] = bytes;
    if (!v.raw || !id_of.count(bytes)) id_of[bytes] = id;
    if (bytes == "<|endoftext|>") end_of_text_ = id;
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = id_of.find(std::string(1, static_cast<char>(b)));
    if (it == id_of.end())
      fail_data(enc_name, ": lacks the one-byte token of byte ", b, "; byte-level BPE needs all 256");
    byte_token_[static_cast<size_t>(b)] = it->second;
  }
  std::vector<bool> made(n, false);
  for (int b = 0; b < 256; ++b) made[byte_token_[static_cast<size_t>(b)]] = true;
  uint32_t rank = 0;
  std::string left, right, joined;
  for (const auto& m : merges) {
    const std::string line = m.left + " " + m.right;
    if (!alphabet_to_bytes(m.left, left) || !alphabet_to_bytes(m.right, right))
      fail_data(m.where, ": '", line, "' has a character outside GPT-2's byte-to-unicode alphabet");
    joined = left + right;
    const auto l = id_of.find(left), r = id_of.find(right), mm = id_of.find(joined);
    if (l == id_of.end() || r == id_of.end() || mm == id_of.end())
      fail_data(m.where, ": the merge '", line, "' uses or makes a token that ", enc_name,
                " does not have; the two files do not belong together");
    merges_[pair_key(l->second, r->second)] = Merge{rank++, mm->second};  // a repeated pair keeps its last rank
    made[mm->second] = true;                                                // (encoder.py's dict does the same)
  }
  if (merges_.empty()) fail_data(bpe_name, ": holds no merges; expected a byte-level BPE's merges");
  int64_t unmade = 0;
  std::string example;
  for (size_t id = 0; id < n; ++id)
    if (!made[id] && !exempt[id] && !is_special(token_bytes_[id])) {
      if (unmade++ == 0) example = token_bytes_[id];
    }
  if (unmade > 0)
    fail_data(bpe_name, ": ", unmade, " tokens of ", enc_name, " (e.g. '", example,
              "') are made by no merge: the file is truncated or belongs to another vocabulary");
}

void Gpt2Bpe::bpe_append(std::string_view piece, std::vector<uint32_t>& out) const {
  // Symbols in a linked list; a min-heap of candidate pairs by (rank, position). Each round takes every pair
  // of the lowest rank and merges its still-valid occurrences left to right, as encoder.py's bpe() does.
  struct Sym {
    uint32_t id;
    int32_t prev, next;
  };
  struct Cand {
    uint32_t rank;
    int32_t pos;
    uint32_t left, right;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const auto n = static_cast<int32_t>(piece.size());
  if (n == 0) return;
  std::vector<Sym> sym(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i)
    sym[static_cast<size_t>(i)] = {byte_token_[static_cast<uint8_t>(piece[static_cast<size_t>(i)])], i - 1,
                                   i + 1 < n ? i + 1 : -1};
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  const auto push = [&](int32_t pos) {
    if (pos < 0) return;
    const int32_t nx = sym[static_cast<size_t>(pos)].next;
    if (nx < 0) return;
    const uint32_t a = sym[static_cast<size_t>(pos)].id, b = sym[static_cast<size_t>(nx)].id;
    const auto it = merges_.find(pair_key(a, b));
    if (it != merges_.end()) heap.push({it->second.rank, pos, a, b});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  std::vector<bool> alive(static_cast<size_t>(n), true);
  std::vector<Cand> round;
  while (!heap.empty()) {
    const uint32_t r = heap.top().rank;
    round.clear();
    while (!heap.empty() && heap.top().rank == r) {
      round.push_back(heap.top());
      heap.pop();
    }
    for (const Cand& c : round) {  // in position order
      Sym& s = sym[static_cast<size_t>(c.pos)];
      if (!alive[static_cast<size_t>(c.pos)] || s.id != c.left || s.next < 0 ||
          sym[static_cast<size_t>(s.next)].id != c.right)
        continue;  // an earlier merge of this round (or before) took one of its symbols
      const int32_t gone = s.next;
      s.id = merges_.at(pair_key(c.left, c.right)).merged;
      s.next = sym[static_cast<size_t>(gone)].next;
      if (s.next >= 0) sym[static_cast<size_t>(s.next)].prev = c.pos;
      alive[static_cast<size_t>(gone)] = false;
      push(s.prev);
      push(c.pos);
    }
  }
  for (int32_t i = 0; i >= 0; i = sym[static_cast<size_t>(i)].next) out.push_back(sym[static_cast<size_t>(i)].id);
}

void Gpt2Bpe::encode_append(std::string_view text, std::vector<uint32_t>& out) const {
  std::vector<uint32_t> ids;
  for (std::string_view piece : pretokenize(text)) {
    const std::string key(piece);
    {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      const auto it = cache_.find(key);
      if (it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    ids.clear();
    bpe_append(piece, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCachedPieces) cache_.clear();
    cache_.emplace(key, ids);
  }
}

std::string Gpt2Bpe::decode(std::span<const uint32_t> ids) const {
  std::string out;
  for (uint32_t id : ids) {
    SSMLAB_CHECK(id < token_bytes_.size(), "gpt2 decode: token id ", id, " is outside the vocabulary of ",
                 token_bytes_.size());
    out += token_bytes_[id];
  }
  return out;
}

void ByteTokenizer::encode_append(std::string_view text, std::vector<uint32_t>& out) const {
  for (char c : text) out.push_back(static_cast<uint8_t>(c));
}

std::string ByteTokenizer::decode(std::span<const uint32_t> ids) const {
  std::string out;
  out.reserve(ids.size());
  for (uint32_t id : ids) {
    SSMLAB_CHECK(id < 256, "byte decode: token id ", id, " is outside the vocabulary of 256");
    out.push_back(static_cast<char>(id));
  }
  return out;
}

TokenizerPtr make_tokenizer(const TokenizerOptions& opts) {
  if (opts.kind == "byte") return std::make_shared<ByteTokenizer>();
  if (opts.kind == "gpt2") return std::make_shared<Gpt2Bpe>(opts.bpe_encoder, opts.bpe_merges);
  if (opts.kind == "tokenizer_json") {
    if (opts.tokenizer_json.empty()) fail_config("tokenizer = tokenizer_json needs the path tokenizer_json");
    return std::make_shared<HfTokenizer>(opts.tokenizer_json);
  }
  fail_config("unknown tokenizer '", opts.kind, "'; known: gpt2, byte, tokenizer_json");
}

}  // namespace ssmlab::text
