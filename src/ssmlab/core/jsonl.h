// Reading JSON-lines files (metrics.jsonl) that people edit by hand and that a kill may leave with a
// half-written last line. Every problem is an error of the caller's type `E` (ssmlab::DataError, or the
// report layer's ReportError) naming the file and line, never an nlohmann exception. Header-only and
// free of LibTorch so the report layer can use it.
#pragma once
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssmlab/core/json_limits.h"

namespace ssmlab::jsonl {

struct Record {
  size_t line = 0;  // 1-based line number in the file
  nlohmann::json value;  // always an object
};

template <class E, class... Args>
[[noreturn]] void fail_at(const std::string& file, size_t line, const Args&... args) {
  std::ostringstream os;
  os << file << ":" << line << ": ";
  (os << ... << args);
  throw E(os.str());
}

inline std::string excerpt(std::string_view s) {
  return s.size() > 80 ? std::string(s.substr(0, 77)) + "..." : std::string(s);
}

inline std::string excerpt_json(const nlohmann::json& v) {
  return excerpt(std::string_view(v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
}

// Every non-empty line of `text` as a JSON object. A last line that is not one is dropped (a run killed
// mid-append); anywhere else it is an error. Lines above json_limits::kMaxLineBytes or nested deeper than
// json_limits::kMaxDepth are errors that name the limit.
template <class E>
std::vector<Record> parse(std::string_view text, const std::string& file) {
  std::vector<Record> out;
  size_t line_no = 0, pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    const bool last = end == std::string_view::npos || end + 1 >= text.size();
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    if (line.size() > json_limits::kMaxLineBytes)
      fail_at<E>(file, line_no, "line of ", line.size(), " bytes is above the limit of ", json_limits::kMaxLineBytes);
    if (json_limits::depth(line) > json_limits::kMaxDepth)
      fail_at<E>(file, line_no, "JSON nested deeper than the limit of ", json_limits::kMaxDepth, " levels");
    nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      if (last) break;
      fail_at<E>(file, line_no, "not a JSON object: ", excerpt(line));
    }
    out.push_back({line_no, std::move(j)});
  }
  return out;
}

// The record's "kind" ("train", "eval"); "" when absent. Any other type is an error.
template <class E>
std::string kind(const Record& r, const std::string& file) {
  const auto it = r.value.find("kind");
  if (it == r.value.end()) return "";
  if (!it->is_string()) fail_at<E>(file, r.line, "\"kind\" must be a string, found ", excerpt_json(*it));
  return it->template get<std::string>();
}

// The number under `key`; nullopt when absent or null. Any other type is an error naming the key.
template <class E>
std::optional<double> number(const Record& r, const char* key, const std::string& file) {
  const auto it = r.value.find(key);
  if (it == r.value.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) fail_at<E>(file, r.line, "\"", key, "\" must be a number, found ", excerpt_json(*it));
  return it->template get<double>();
}

}  // namespace ssmlab::jsonl
