// Non-template helpers of options_io.h: key paths, TOML text of values, messages ("did you mean"),
// --set parsing.
#include "ssmlab/experiments/options_io.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "ssmlab/core/parse.h"
#include "ssmlab/experiments/toml_limits.h"

namespace ssmlab::experiments {
namespace {

// Every error of this file is about a config, a --set or a key (exit code 2, core/exit_codes.h); this
// shadows ssmlab::fail for the calls below.
template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  throw ConfigError(str(args...));
}

// A --set or sweep key: "model.layers[1].d_state" is 24 bytes; these bound what parse_key walks.
constexpr size_t kMaxKeyTextBytes = 1024;
constexpr int64_t kMaxItemIndex = 1'000'000;

const std::string kSetSource = "--set";

bool is_bare_key_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

std::string trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return "";
  const auto last = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(first, last - first + 1));
}

// Shortest decimal text that reads back as `v`: plain digits for 1e-5 <= |v| < 1e16 ("0.0003",
// "1000"), else scientific ("1e-08").
std::string shortest(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  const std::string sci(buf, res.ptr);
  const auto e = sci.find('e');
  const int exponent = e == std::string::npos ? 0 : std::stoi(sci.substr(e + 1));
  if (exponent < -5 || exponent >= 16) return sci;
  res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  return std::string(buf, res.ptr);
}

// Optimal-string-alignment distance: edits, with a swap of neighbours counting as one.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

// TOML text of any node, on one line (tables inline).
std::string inline_text(const toml::node& node) {
  if (auto* v = node.as_string()) return detail::format_value(v->get());
  if (auto* v = node.as_integer()) return detail::format_value(v->get());
  if (auto* v = node.as_floating_point()) return detail::format_value(v->get());
  if (auto* v = node.as_boolean()) return detail::format_value(v->get());
  if (auto* t = node.as_table()) {
    std::vector<std::string> items;
    for (const auto& [key, value] : *t) items.push_back(detail::format_key(key.str()) + " = " + inline_text(value));
    return items.empty() ? "{}" : "{ " + join(items, ", ") + " }";
  }
  if (auto* a = node.as_array()) {
    std::vector<std::string> items;
    for (const auto& value : *a) items.push_back(inline_text(value));
    return "[" + join(items, ", ") + "]";
  }
  std::ostringstream os;  // dates and times
  if (auto* v = node.as_date()) os << *v;
  if (auto* v = node.as_time()) os << *v;
  if (auto* v = node.as_date_time()) os << *v;
  return os.str();
}

// `string "16"`, `integer 3`, `table { a = 1 }`: what came, for messages.
std::string describe(const toml::node& node) {
  static const char* names[] = {"nothing", "table", "array", "string", "integer", "float",
                                "boolean", "date", "time", "date-time"};
  std::string text = inline_text(node);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return std::string(names[static_cast<int>(node.type())]) + " " + text;
}

std::string unknown_key_message(const std::string& key, const std::string& prefix,
                                const std::vector<std::string>& known) {
  const std::string name = key.substr(prefix.empty() ? 0 : prefix.size() + 1);
  std::string where = "known top-level keys";
  if (!prefix.empty() && prefix.back() == ']') where = "known keys in [[" + prefix.substr(0, prefix.rfind('[')) + "]]";
  else if (!prefix.empty()) where = "known keys in [" + prefix + "]";
  std::string msg = "unknown key '" + key + "' (" + where + ": " + (known.empty() ? "none" : join(known, ", "));
  std::string best;
  size_t best_d = std::max<size_t>(1, name.size() / 3) + 1;
  for (const auto& k : known) {
    const size_t d = edit_distance(name, k);
    if (d < best_d) best_d = d, best = k;
  }
  if (!best.empty()) msg += "; did you mean '" + best + "'?";
  return msg + ")";
}

struct KeySegment {
  std::string name;  // empty for an index
  size_t index = 0;
};

// "model.layers[1].d_state" -> model, layers, [1], d_state.
std::vector<KeySegment> parse_key(const std::string& key, const std::string& error_prefix) {
  std::vector<KeySegment> segments;
  if (key.size() > kMaxKeyTextBytes)
    fail(error_prefix, ": a key of ", key.size(), " bytes is above the limit of ", kMaxKeyTextBytes);
  size_t i = 0;
  const size_t n = key.size();
  while (true) {
    const size_t start = i;
    while (i < n && key[i] != '.' && key[i] != '[') ++i;
    const std::string name = key.substr(start, i - start);
    if (name.empty()) fail(error_prefix, key.empty() ? ": empty key" : ": empty segment in key '" + key + "'");
    if (!std::all_of(name.begin(), name.end(), is_bare_key_char))
      fail(error_prefix, ": key segment '", name, "' may hold only letters, digits, '_' and '-'");
    segments.push_back({name});
    if (segments.size() > toml_limits::kMaxKeyParts)
      fail(error_prefix, ": key '", key.substr(0, 60), "...' has more than ", toml_limits::kMaxKeyParts,
           " parts, above the limit of ", toml_limits::kMaxKeyParts);
    while (i < n && key[i] == '[') {
      const size_t close = key.find(']', i);
      const std::string digits = close == std::string::npos ? "" : key.substr(i + 1, close - i - 1);
      if (digits.empty() || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        fail(error_prefix, ": bad item index in key '", key, "' (expected name[0])");
      segments.push_back({"", static_cast<size_t>(parse_count(digits, kMaxItemIndex, error_prefix + ": item index"))});
      i = close + 1;
    }
    if (i == n) break;
    if (key[i] != '.') fail(error_prefix, ": expected '.' or '[' after '", key.substr(0, i), "' in key '", key, "'");
    ++i;
  }
  return segments;
}

// The value text of a --set: TOML if it parses as one value, else (a bare word) a string.
toml::table parse_value(const std::string& text, const std::string& error_prefix) {
  if (text.empty()) fail(error_prefix, ": missing value after '=' (write \"\" for an empty string)");
  toml_limits::check_text(text, error_prefix);
  try {
    toml::table parsed = toml::parse("v = " + text);
    if (parsed.size() == 1 && parsed.contains("v")) return parsed;
  } catch (const toml::parse_error& e) {
    if (std::string_view("\"'[{").find(text[0]) != std::string_view::npos)
      fail(error_prefix, ": bad TOML value: ", e.description());
  }
  toml::table as_string;
  as_string.insert("v", text);
  return as_string;
}

}  // namespace

namespace detail {

std::string join_key(const std::string& prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : prefix + "." + std::string(key);
}

std::string item_key(const std::string& prefix, size_t index) { return str(prefix, "[", index, "]"); }

std::string format_value(bool v) { return v ? "true" : "false"; }
std::string format_value(int64_t v) { return std::to_string(v); }

std::string format_value(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::string text = shortest(v);
  if (text.find_first_of(".e") == std::string::npos) text += ".0";  // keep it a TOML float
  return text;
}

std::string format_value(const std::string& v) {
  std::string out = "\"";
  for (unsigned char c : v) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\f': out += "\\f"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04X", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string format_key(std::string_view key) {
  if (!key.empty() && std::all_of(key.begin(), key.end(), is_bare_key_char)) return std::string(key);
  return format_value(std::string(key));
}

std::string check_text(const Check& check) {
  std::vector<std::string> parts;
  if (check.min && check.max) {
    parts.push_back(str("in ", check.min_open ? "(" : "[", shortest(*check.min), ", ", shortest(*check.max),
                        check.max_open ? ")" : "]"));
  } else if (check.min) {
    parts.push_back(str(check.min_open ? "> " : ">= ", shortest(*check.min)));
  } else if (check.max) {
    parts.push_back(str(check.max_open ? "< " : "<= ", shortest(*check.max)));
  }
  if (!check.choices.empty()) parts.push_back("one of " + join(check.choices, ", "));
  return join(parts, "; ");
}

std::string hex16(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// "--set" when the key, a table holding it, or a key inside it came from an override.
const std::string& source_for(const std::string& key, const std::string& source,
                              const std::set<std::string>& overridden) {
  auto within = [](const std::string& inner, const std::string& outer) {
    return inner.size() > outer.size() && inner.compare(0, outer.size(), outer) == 0 &&
           (inner[outer.size()] == '.' || inner[outer.size()] == '[');
  };
  for (const auto& k : overridden)
    if (k == key || within(key, k) || within(k, key)) return kSetSource;
  return source;
}

void fail_type(const std::string& source, const std::string& key, const char* expected, const toml::node& got) {
  fail(source, ": ", key, " must be ", expected, ", got ", describe(got));
}

void check_known_keys(const toml::table& table, const std::vector<std::string>& known, const std::string& prefix,
                      const std::string& source, const std::set<std::string>& overridden) {
  for (const auto& [k, node] : table) {
    if (std::find(known.begin(), known.end(), k.str()) != known.end()) continue;
    const std::string key = join_key(prefix, k.str());
    fail(source_for(key, source, overridden), ": ", unknown_key_message(key, prefix, known));
  }
}

void enforce(const Check&, bool, const std::string&, const std::string&) {}

void enforce(const Check& check, double value, const std::string& source, const std::string& key) {
  // nan passes every comparison below, and an inf lr or eps trains NaN. No option means either today; one
  // that ever does needs a flag in Check for it.
  if (!std::isfinite(value))
    fail(source, ": ", key, " must be a finite number, got ", format_value(value));
  const bool ok_min = !check.min || (check.min_open ? value > *check.min : value >= *check.min);
  const bool ok_max = !check.max || (check.max_open ? value < *check.max : value <= *check.max);
  if (!ok_min || !ok_max) fail(source, ": ", key, " must be ", check_text(check), ", got ", format_value(value));
}

void enforce(const Check& check, int64_t value, const std::string& source, const std::string& key) {
  const double v = static_cast<double>(value);
  const bool ok_min = !check.min || (check.min_open ? v > *check.min : v >= *check.min);
  const bool ok_max = !check.max || (check.max_open ? v < *check.max : v <= *check.max);
  if (!ok_min || !ok_max) fail(source, ": ", key, " must be ", check_text(check), ", got ", value);
}

void enforce(const Check& check, const std::string& value, const std::string& source, const std::string& key) {
  if (check.choices.empty()) return;
  if (std::find(check.choices.begin(), check.choices.end(), value) != check.choices.end()) return;
  fail(source, ": ", key, " must be one of ", join(check.choices, ", "), "; got ", format_value(value));
}

void merge_into(toml::table& base, const toml::table& over) {
  for (const auto& [key, node] : over) {
    toml::table* inner = base[key.str()].as_table();
    if (inner && node.is_table()) merge_into(*inner, *node.as_table());
    else base.insert_or_assign(key, node);
  }
}

std::set<std::string> apply_overrides(toml::table& table, const std::vector<std::string>& overrides) {
  std::set<std::string> keys;
  for (const auto& assignment : overrides) keys.insert(apply_override(table, assignment));
  return keys;
}

std::string apply_assignment(toml::table& table, const std::string& key, const std::string& value,
                             const std::string& error_prefix) {
  const std::vector<KeySegment> segments = parse_key(key, error_prefix);
  toml::table parsed = parse_value(value, error_prefix);
  toml::node& new_value = *parsed.get("v");
  toml::node* cur = &table;
  std::string path;
  for (size_t s = 0; s < segments.size(); ++s) {
    const KeySegment& seg = segments[s];
    const bool last = s + 1 == segments.size();
    if (!seg.name.empty()) {
      toml::table* t = cur->as_table();
      if (!t) fail(error_prefix, ": '", path, "' is ", describe(*cur), ", not a table");
      path = join_key(path, seg.name);
      if (last) {
        t->insert_or_assign(seg.name, std::move(new_value));
      } else {
        if (!t->contains(seg.name)) t->insert(seg.name, toml::table{});
        cur = t->get(seg.name);
      }
    } else {
      toml::array* a = cur->as_array();
      if (!a) fail(error_prefix, ": '", path, "' is ", describe(*cur), ", not an array");
      if (seg.index >= a->size()) fail(error_prefix, ": '", path, "' has ", a->size(), " items, no [", seg.index, "]");
      path = item_key(path, seg.index);
      if (last) a->replace(a->cbegin() + static_cast<std::ptrdiff_t>(seg.index), std::move(new_value));
      else cur = a->get(seg.index);
    }
  }
  return path;
}

std::string node_text(const toml::table& root, const std::string& dotted_key) {
  return inline_text(find_node(root, dotted_key, "get_field '" + dotted_key + "'"));
}

std::string inline_toml(const toml::node& node) { return inline_text(node); }

const toml::node& find_node(const toml::table& root, const std::string& dotted_key, const std::string& prefix) {
  const toml::node* cur = &root;
  std::string path;
  for (const KeySegment& seg : parse_key(dotted_key, prefix)) {
    if (!seg.name.empty()) {
      const toml::table* t = cur->as_table();
      if (!t) fail(prefix, ": '", path, "' is ", describe(*cur), ", not a table");
      const std::string key = join_key(path, seg.name);
      if (!t->contains(seg.name)) {
        std::vector<std::string> known;
        for (const auto& [k, v] : *t) known.push_back(std::string(k.str()));
        fail(prefix, ": ", unknown_key_message(key, path, known));
      }
      cur = t->get(seg.name);
      path = key;
    } else {
      const toml::array* a = cur->as_array();
      if (!a) fail(prefix, ": '", path, "' is ", describe(*cur), ", not an array");
      if (seg.index >= a->size()) fail(prefix, ": '", path, "' has ", a->size(), " items, no [", seg.index, "]");
      cur = a->get(seg.index);
      path = item_key(path, seg.index);
    }
  }
  return *cur;
}

std::string format_help(const std::vector<HelpRow>& rows) {
  size_t key_w = 0, meta_w = 0;
  for (const auto& r : rows) key_w = std::max(key_w, r.key.size()), meta_w = std::max(meta_w, r.meta.size());
  std::string out;
  for (const auto& r : rows) {
    std::string line = "  " + r.key + std::string(key_w - r.key.size() + 2, ' ') + r.meta +
                       std::string(meta_w - r.meta.size() + 2, ' ') + r.help;
    if (!r.check.empty()) line += "  " + r.check;
    out += trim(line).empty() ? "\n" : line.substr(0, line.find_last_not_of(' ') + 1) + "\n";
  }
  return out;
}

}  // namespace detail

std::string apply_override(toml::table& table, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos) fail("--set ", assignment, ": expected key=value (e.g. --set model.mixers.mamba1.d_state=32)");
  return detail::apply_assignment(table, trim(std::string_view(assignment).substr(0, eq)),
                                  trim(std::string_view(assignment).substr(eq + 1)), "--set " + assignment);
}

}  // namespace ssmlab::experiments
