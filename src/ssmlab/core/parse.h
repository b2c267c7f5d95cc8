// Checked number parsing for command-line and key text: the whole text must be the number, and a value out
// of range is an error naming `what`, never std::out_of_range from std::stoll.
#pragma once
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

#include "ssmlab/core/error_kinds.h"

namespace ssmlab {

// A non-negative decimal integer <= `max`; throws ConfigError naming `what` otherwise.
inline int64_t parse_count(std::string_view text, int64_t max, const std::string& what) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec == std::errc::invalid_argument || end != text.data() + text.size() || v < 0)
    fail_config(what, ": expected a non-negative integer, got '", text, "'");
  if (ec == std::errc::result_out_of_range || v > max)
    fail_config(what, ": ", text.size() > 40 ? std::string(text.substr(0, 40)) + "..." : std::string(text),
                " is above the limit of ", max);
  return v;
}

}  // namespace ssmlab
