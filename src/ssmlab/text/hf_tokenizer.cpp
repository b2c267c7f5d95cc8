// tokenizer.json (rules: hf_tokenizer.h).
#include "ssmlab/text/hf_tokenizer.h"

#include <algorithm>

#include <nlohmann/json.hpp>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/json_limits.h"
#include "ssmlab/core/sha256.h"
#include "ssmlab/data/input_file.h"

namespace ssmlab::text {
namespace {

using json = nlohmann::json;

constexpr int64_t kMaxTokenizerJsonBytes = int64_t{256} << 20;

std::string hf_tok_read(const std::filesystem::path& path) {
  std::vector<uint8_t> bytes;
  try {
    bytes = data::read_all_bytes(path, kMaxTokenizerJsonBytes);
  } catch (const DataError&) {
    throw;
  } catch (const Error& e) {
    fail_data(e.what());
  }
  return std::string(bytes.begin(), bytes.end());
}

// The pre-tokenizer must be GPT-2's ByteLevel without a prefix space (alone or the only step of a Sequence).
void hf_tok_check_pretokenizer(const json& p, const std::string& name) {
  if (p.is_object() && p.value("type", "") == "Sequence" && p.contains("pretokenizers") &&
      p["pretokenizers"].is_array() && p["pretokenizers"].size() == 1)
    return hf_tok_check_pretokenizer(p["pretokenizers"][0], name);
  if (!p.is_object() || p.value("type", "") != "ByteLevel")
    fail_data(name, ": pre_tokenizer ", p.dump().substr(0, 120), " is not supported (ByteLevel only)");
  if (p.value("add_prefix_space", false))
    fail_data(name, ": pre_tokenizer.add_prefix_space = true is not supported");
  if (!p.value("use_regex", true)) fail_data(name, ": pre_tokenizer.use_regex = false is not supported");
}

}  // namespace

HfTokenizer::HfTokenizer(const std::filesystem::path& tokenizer_json) {
  const std::string name = tokenizer_json.string();
  const std::string text = hf_tok_read(tokenizer_json);
  if (json_limits::depth(text) > json_limits::kMaxDepth)
    fail_data(name, ": nested deeper than ", json_limits::kMaxDepth, " levels; expected a tokenizer.json");
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail_data(name, ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    fail_data(name, ": expected a tokenizer.json object with a \"model\"");
  const json& m = j["model"];
  if (m.value("type", "") != "BPE") fail_data(name, ": model.type ", m.value("type", std::string("(none)")), " is not supported (BPE only)");
  if (m.contains("byte_fallback") && m["byte_fallback"].is_boolean() && m["byte_fallback"].get<bool>())
    fail_data(name, ": model.byte_fallback = true is not supported");
  if (m.contains("ignore_merges") && m["ignore_merges"].is_boolean() && m["ignore_merges"].get<bool>())
    fail_data(name, ": model.ignore_merges = true is not supported");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(k) && !m[k].is_null() && !(m[k].is_string() && m[k].get<std::string>().empty()))
      fail_data(name, ": model.", k, " = ", m[k].dump(), " is not supported");
  if (m.contains("dropout") && !m["dropout"].is_null() && !(m["dropout"].is_number() && m["dropout"].get<double>() == 0.0))
    fail_data(name, ": model.dropout = ", m["dropout"].dump(), " is not supported (encoding would be random)");
  if (!j.contains("pre_tokenizer") || j["pre_tokenizer"].is_null())
    fail_data(name, ": pre_tokenizer is missing (ByteLevel expected)");
  hf_tok_check_pretokenizer(j["pre_tokenizer"], name);
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    if (!j["normalizer"].is_object() || j["normalizer"].value("type", "") != "NFC")
      fail_data(name, ": normalizer ", j["normalizer"].dump().substr(0, 120), " is not supported (none or NFC)");
    nfc_ = true;
  }
  if (!m.contains("vocab") || !m["vocab"].is_object() || m["vocab"].empty())
    fail_data(name, ": model.vocab must be a non-empty object {\"token\": id}");
  std::vector<VocabEntry> vocab;
  std::vector<bool> in_vocab;
  for (const auto& [written, value] : m["vocab"].items()) {
    if (!value.is_number_unsigned()) fail_data(name, ": model.vocab token '", written, "' has id ", value.dump());
    vocab.push_back({written, value.get<uint32_t>(), false});
  }
  std::vector<std::pair<uint32_t, std::string>> ids_in_vocab;
  for (const auto& v : vocab) ids_in_vocab.emplace_back(v.id, v.written);
  std::sort(ids_in_vocab.begin(), ids_in_vocab.end());
  auto vocab_has_id = [&](uint32_t id) {
    return std::binary_search(ids_in_vocab.begin(), ids_in_vocab.end(), std::pair<uint32_t, std::string>(id, ""),
                              [](const auto& a, const auto& b) { return a.first < b.first; });
  };
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    if (!j["added_tokens"].is_array()) fail_data(name, ": added_tokens must be an array");
    for (const auto& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_unsigned() || !a.contains("content") ||
          !a["content"].is_string())
        fail_data(name, ": added_tokens entry ", a.dump().substr(0, 120), " lacks an id or content");
      const auto id = a["id"].get<uint32_t>();
      const std::string content = a["content"].get<std::string>();
      const bool special = a.value("special", false);
      for (const char* k : {"single_word", "lstrip", "rstrip"})
        if (!special && a.value(k, false))
          fail_data(name, ": added token '", content, "' sets ", k, " = true, which is not supported");
      if (!vocab_has_id(id)) {
        vocab.push_back({content, id, true, true});
      } else {
        for (auto& v : vocab)
          if (v.id == id) v.added = true;  // e.g. GPT-NeoX's runs of spaces: in the vocabulary, made by no merge
      }
      if (!special) split_on_.push_back({content, id});
    }
  }
  const json& jm = m.contains("merges") ? m["merges"] : json::array();
  if (!jm.is_array()) fail_data(name, ": model.merges must be an array");
  std::vector<MergeLine> merges;
  for (size_t k = 0; k < jm.size(); ++k) {
    const std::string where = str(name, ": model.merges[", k, "]");
    const json& e = jm[k];
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == 0 || sp == std::string::npos || sp + 1 == s.size() || s.find(' ', sp + 1) != std::string::npos)
        fail_data(where, ": expected a merge 'a b' (two tokens and one space); got '", s, "'");
      merges.push_back({s.substr(0, sp), s.substr(sp + 1), where});
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      merges.push_back({e[0].get<std::string>(), e[1].get<std::string>(), where});
    } else {
      fail_data(where, ": expected \"a b\" or [\"a\", \"b\"]; got ", e.dump().substr(0, 80));
    }
  }
  build(vocab, name, merges, name);
  // Longest first, so that the first match at a position is the longest one.
  std::stable_sort(split_on_.begin(), split_on_.end(),
                   [](const Added& a, const Added& b) { return a.content.size() > b.content.size(); });
  fingerprint_ = "tokenizer.json sha256:" + sha256_hex(text);
}

void HfTokenizer::encode_append(std::string_view text, std::vector<uint32_t>& out) const {
  std::string normalized;
  if (nfc_) {
    UErrorCode st = U_ZERO_ERROR;
    const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(st);
    if (U_SUCCESS(st)) {
      const icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
      if (!nfc->isNormalized(u, st)) {
        st = U_ZERO_ERROR;
        const icu::UnicodeString n = nfc->normalize(u, st);
        if (U_SUCCESS(st)) {
          n.toUTF8String(normalized);
          text = normalized;
        }
      }
    }
  }
  size_t start = 0, pos = 0;
  while (pos < text.size() && !split_on_.empty()) {
    const Added* hit = nullptr;
    for (const auto& a : split_on_)
      if (!a.content.empty() && text.compare(pos, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    if (!hit) {
      ++pos;
      continue;
    }
    if (pos > start) Gpt2Bpe::encode_append(text.substr(start, pos - start), out);
    out.push_back(hit->id);
    pos += hit->content.size();
    start = pos;
  }
  if (start < text.size()) Gpt2Bpe::encode_append(text.substr(start), out);
}

}  // namespace ssmlab::text
