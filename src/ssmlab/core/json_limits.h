// Limits for the JSON we read (safetensors headers, state.json, checksums.json, metrics.jsonl). nlohmann's
// parser copes with depth, but printing or walking a value recurses, and a corrupt file should be refused by
// a check that names the limit rather than by a stack overflow. No LibTorch and no exceptions here, so the
// report layer can use it with its own error type.
#pragma once
#include <cstddef>
#include <string_view>

namespace ssmlab::json_limits {

// Our files nest 3 levels at most; 64 leaves room for hand-written extras.
inline constexpr size_t kMaxDepth = 64;
// One metrics.jsonl record is a few hundred bytes; a megabyte is a corrupt or foreign file.
inline constexpr size_t kMaxLineBytes = size_t{1} << 20;
// state.json and checksums.json hold a few kilobytes (the torch generator state is ~7 KB in base64).
inline constexpr size_t kMaxSmallFileBytes = size_t{16} << 20;

// The deepest nesting of arrays and objects in `text` (string contents skipped). Scanning stops once the
// depth exceeds `limit`, so the answer is at most limit + 1.
inline size_t depth(std::string_view text, size_t limit = kMaxDepth) {
  size_t cur = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++cur > deepest) deepest = cur;
      if (deepest > limit) return deepest;
    } else if ((c == ']' || c == '}') && cur > 0) {
      --cur;
    }
  }
  return deepest;
}

}  // namespace ssmlab::json_limits
