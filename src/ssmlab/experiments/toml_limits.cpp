#include "ssmlab/experiments/toml_limits.h"

#include <fstream>
#include <sstream>

#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/experiments/options_io.h"

namespace ssmlab::experiments::toml_limits {
namespace {

// Index just past the string that starts at text[i] (a quote), counting the newlines inside it; an
// unterminated string runs to the end (toml++ then reports the syntax error).
size_t skip_string(std::string_view text, size_t i, size_t& line) {
  const char q = text[i];
  const bool triple = text.substr(i, 3) == std::string(3, q);
  const bool escapes = q == '"';
  size_t j = i + (triple ? 3 : 1);
  for (; j < text.size(); ++j) {
    const char c = text[j];
    if (c == '\n') {
      ++line;
      if (!triple) return j;  // a newline ends a one-line string (a syntax error toml++ reports)
    }
    if (escapes && c == '\\') {
      ++j;
      if (j < text.size() && text[j] == '\n') ++line;
      continue;
    }
    if (c != q) continue;
    if (!triple) return j + 1;
    if (text.substr(j, 3) == std::string(3, q)) {
      j += 3;
      while (j < text.size() && text[j] == q) ++j;  // """a"""" ends with a quote inside the string
      return j;
    }
  }
  return j;
}

void walk(const toml::node& node, size_t depth, const std::string& path, const std::string& source) {
  if (depth > kMaxDepth)
    fail_config(source, ": ", path, ": tables and arrays nested deeper than the limit of ", kMaxDepth, " levels");
  if (const auto* t = node.as_table()) {
    for (const auto& [key, value] : *t) {
      if (key.str().size() > kMaxKeyBytes)
        fail_config(source, ": a key of ", key.str().size(), " bytes under '", path, "' is above the limit of ",
                    kMaxKeyBytes);
      walk(value, depth + 1, path.empty() ? std::string(key.str()) : path + "." + std::string(key.str()), source);
    }
  } else if (const auto* a = node.as_array()) {
    for (size_t i = 0; i < a->size(); ++i) walk(*a->get(i), depth + 1, str(path, "[", i, "]"), source);
  }
}

}  // namespace

void check_text(std::string_view text, const std::string& source) {
  if (text.size() > kMaxFileBytes)
    fail_config(source, ": ", text.size(), " bytes is above the limit of ", kMaxFileBytes, " for a TOML file");
  size_t line = 1, depth = 0, dots = 0;
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (c == '"' || c == '\'') {
      i = skip_string(text, i, line);
      continue;
    }
    if (c == '#') {
      while (i < text.size() && text[i] != '\n') ++i;
      continue;
    }
    if (c == '\n') ++line;
    if (c == '[' || c == '{') {
      if (++depth > kMaxDepth)
        fail_config(source, ":", line, ": brackets nested deeper than the limit of ", kMaxDepth, " levels");
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
    // A key's parts are separated by dots with nothing structural between them; values have at most one
    // dot outside strings (1.5, 07:32:00.999), so counting dots between these characters bounds the parts.
    if (c == '=' || c == ',' || c == '\n' || c == '[' || c == ']' || c == '{' || c == '}') dots = 0;
    if (c == '.' && ++dots >= kMaxKeyParts)
      fail_config(source, ":", line, ": a key of more than ", kMaxKeyParts, " dotted parts is above the limit of ",
                  kMaxKeyParts);
    ++i;
  }
}

void check_tree(const toml::table& table, const std::string& source) { walk(table, 0, "", source); }

}  // namespace ssmlab::experiments::toml_limits

// The readers of options_io.h that the limits guard.
namespace ssmlab::experiments::detail {
using toml_limits::kMaxFileBytes;

toml::table parse_toml(const std::string& text, const std::string& source) {
  toml_limits::check_text(text, source);
  toml::table table;
  try {
    table = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    fail_config(source, ":", e.source().begin.line, ":", e.source().begin.column,
                ": TOML syntax error: ", e.description());
  }
  toml_limits::check_tree(table, source);
  return table;
}

// Whether any key below `t` holds a value (not only empty tables); depth is bounded by check_tree.
static bool has_value(const toml::table& t) {
  for (const auto& [k, v] : t)
    if (!v.is_table() || has_value(*v.as_table())) return true;
  return false;
}

void check_has_options(const toml::table& table, const std::string& source) {
  if (!has_value(table))
    fail_config(source, ": the config sets no option; a run needs at least its model and task (start from "
                "configs/quickstart.toml, or see `ssmlab list keys`)");
}

std::string read_config_file(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) fail_config("config file not found: ", file.string());
  if (std::filesystem::is_directory(file, ec)) fail_config("config file is a directory: ", file.string());
  const auto size = std::filesystem::file_size(file, ec);
  if (!ec && size > kMaxFileBytes)
    fail_config(file.string(), ": ", size, " bytes is above the limit of ", kMaxFileBytes, " for a TOML file");
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) fail_config("cannot read config file: ", file.string());
  return text.str();
}

}  // namespace ssmlab::experiments::detail
