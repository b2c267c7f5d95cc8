// Limits of the TOML we read (config files, sweep files, --set values and keys). toml++ builds a table per
// dotted key part and frees nested tables recursively, so a key of 50,000 dotted parts overflows the stack;
// these checks refuse such input first, naming the limit and where it was crossed. Our configs nest 5
// levels and their keys have at most 6 parts, so the limits are far from any real config.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

#include <toml++/toml.h>

namespace ssmlab::experiments::toml_limits {

inline constexpr size_t kMaxFileBytes = size_t{4} << 20;  // a config or sweep file
inline constexpr size_t kMaxKeyParts = 32;                // dotted parts of one key or [table] header
inline constexpr size_t kMaxKeyBytes = 256;               // one key part (a quoted key may hold anything)
inline constexpr size_t kMaxDepth = 32;                   // tables and arrays inside each other

// A cheap scan of the text before toml++ sees it: size, nesting of [ and {, and dotted parts of a key
// (strings and comments skipped). Throws ConfigError "<source>:<line>: ... above the limit of N".
void check_text(std::string_view text, const std::string& source);

// The parsed tree: depth of tables and arrays, and the length of every key.
void check_tree(const toml::table& table, const std::string& source);

}  // namespace ssmlab::experiments::toml_limits
