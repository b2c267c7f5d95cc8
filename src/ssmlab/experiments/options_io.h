// The visitors that make an options struct's single `visit()` (core/fields.h) drive TOML loading,
// `--set a.b=v` overrides, validation, printing the resolved config, `--help` and the run-id hash
// (docs/ARCHITECTURE.md, "Configs, runs, sweeps").
//
// Keys are dotted paths; an item of an array of tables is `model.layers[1]`, in messages, in
// `--set model.layers[1].d_state=8` and in get_field/set_field alike. Every error is an
// ssmlab::Error that names the source (file path, or "--set" for overridden keys), the key, what
// was expected and what came.
#pragma once
#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <toml++/toml.h>

#include "ssmlab/core/error.h"
#include "ssmlab/core/fields.h"
#include "ssmlab/core/rng.h"

namespace ssmlab::experiments {

// ---- Non-template helpers (options_io.cpp) ----------------------------------------------------

// "a.b=value" applied to `table`: value parsed as a TOML value (32, 1e-3, true, "x", [1, 2],
// {a = 1}); a bare word that is not TOML is taken as a string (`--set model.mixer=mamba1`).
// Creates intermediate tables. Returns the canonical dotted key ("model.layers[1].d_state").
std::string apply_override(toml::table& table, const std::string& assignment);

namespace detail {

template <class F>
concept Scalar = std::same_as<F, bool> || std::same_as<F, int64_t> || std::same_as<F, double> ||
                 std::same_as<F, std::string>;

template <class F>
struct is_visitable_vector : std::false_type {};
template <Visitable S>
struct is_visitable_vector<std::vector<S>> : std::true_type {};
template <class F>
concept VisitableVector = is_visitable_vector<F>::value;

template <class>
inline constexpr bool unsupported_field = false;

// Names and TOML text of values.
std::string join_key(const std::string& prefix, std::string_view key);  // "model" + "d_state"
std::string item_key(const std::string& prefix, size_t index);           // "model.layers[1]"
std::string format_value(bool v);
std::string format_value(int64_t v);
std::string format_value(double v);  // shortest text that parses back to the same double
std::string format_value(const std::string& v);  // TOML basic string, escaped
std::string format_key(std::string_view key);    // bare key, or quoted when it must be
std::string check_text(const Check& check);      // ">= 1", "in (0, 1]", "one of a, b"; "" if none
std::string hex16(uint64_t h);

// Throwing helpers; `source` is the file path or "--set".
const std::string& source_for(const std::string& key, const std::string& source,
                              const std::set<std::string>& overridden);
[[noreturn]] void fail_type(const std::string& source, const std::string& key, const char* expected,
                            const toml::node& got);
void check_known_keys(const toml::table& table, const std::vector<std::string>& known,
                      const std::string& prefix, const std::string& source,
                      const std::set<std::string>& overridden);
void enforce(const Check& check, bool value, const std::string& source, const std::string& key);
void enforce(const Check& check, int64_t value, const std::string& source, const std::string& key);
void enforce(const Check& check, double value, const std::string& source, const std::string& key);
void enforce(const Check& check, const std::string& value, const std::string& source,
             const std::string& key);

// toml++ behind the limits of experiments/toml_limits.h; every error is a ConfigError naming `source`.
toml::table parse_toml(const std::string& text, const std::string& source);
// An empty or comment-only file, or one of empty tables, is refused with a pointer to the examples: it
// would silently run the full default.
void check_has_options(const toml::table& table, const std::string& source);
// Deep merge: tables merge key by key; any other node of `over` (arrays included) replaces.
void merge_into(toml::table& base, const toml::table& over);
std::string read_config_file(const std::filesystem::path& file);
std::set<std::string> apply_overrides(toml::table& table, const std::vector<std::string>& overrides);
std::string apply_assignment(toml::table& table, const std::string& key, const std::string& value,
                             const std::string& error_prefix);
std::string node_text(const toml::table& root, const std::string& dotted_key);  // for get_field
// The node `dotted_key` names in `root`; an unknown key is an error that starts with `error_prefix`
// and lists the known keys at that level ("did you mean"). For sweeps (experiments/sweep.h).
const toml::node& find_node(const toml::table& root, const std::string& dotted_key, const std::string& error_prefix);
// TOML text of any node on one line (tables inline), parseable as a --set value.
std::string inline_toml(const toml::node& node);
struct HelpRow {
  std::string key, meta, help, check;
};
std::string format_help(const std::vector<HelpRow>& rows);

template <class F>
constexpr const char* type_name() {
  if constexpr (std::same_as<F, bool>) return "bool";
  else if constexpr (std::same_as<F, int64_t>) return "int";
  else if constexpr (std::same_as<F, double>) return "float";
  else return "string";
}

// visit() is one non-const member for reading and writing; the visitors of const options only
// read, so calling it through a const_cast is sound.
template <class T>
T& readonly(const T& opts) {
  return const_cast<T&>(opts);
}

template <class F>
constexpr void assert_supported() {
  static_assert(Scalar<F> || Visitable<F> || VisitableVector<F>,
                "option fields must be bool, int64_t, double, std::string, a struct with visit(), "
                "or a std::vector of such structs");
}

// ---- Visitors --------------------------------------------------------------------------------

struct KeyCollector {
  std::vector<std::string> keys;
  template <class F>
  void operator()(const char* key, F&, const char*, const Check& = {}) { keys.emplace_back(key); }
};

template <class T>
void read_struct(const toml::table& table, T& opts, const std::string& prefix,
                 const std::string& source, const std::set<std::string>& overridden);

// Reads one field from its node: type first, then its Check.
template <class F>
void read_field(const toml::node& node, F& field, const std::string& key, const Check& check,
                const std::string& file, const std::set<std::string>& overridden) {
  assert_supported<F>();
  const std::string& source = source_for(key, file, overridden);
  if constexpr (std::same_as<F, bool>) {
    if (!node.is_boolean()) fail_type(source, key, "a boolean", node);
    field = node.as_boolean()->get();
  } else if constexpr (std::same_as<F, int64_t>) {
    if (!node.is_integer()) fail_type(source, key, "an integer", node);
    field = node.as_integer()->get();
  } else if constexpr (std::same_as<F, double>) {
    if (node.is_integer()) field = static_cast<double>(node.as_integer()->get());
    else if (node.is_floating_point()) field = node.as_floating_point()->get();
    else fail_type(source, key, "a number", node);
  } else if constexpr (std::same_as<F, std::string>) {
    if (!node.is_string()) fail_type(source, key, "a string", node);
    field = node.as_string()->get();
  } else if constexpr (Visitable<F>) {
    if (!node.is_table()) fail_type(source, key, "a table", node);
    read_struct(*node.as_table(), field, key, file, overridden);
  } else {
    if (!node.is_array()) fail_type(source, key, "an array of tables", node);
    F items;
    const toml::array& array = *node.as_array();
    for (size_t i = 0; i < array.size(); ++i) {
      const std::string at = item_key(key, i);
      if (!array[i].is_table()) fail_type(source_for(at, file, overridden), at, "a table", array[i]);
      typename F::value_type item{};  // absent keys of an item take the item's defaults
      read_struct(*array[i].as_table(), item, at, file, overridden);
      items.push_back(std::move(item));
    }
    field = std::move(items);
  }
  if constexpr (Scalar<F>) enforce(check, field, source, key);
}

struct TomlReader {
  const toml::table& table;
  const std::string& prefix;
  const std::string& source;
  const std::set<std::string>& overridden;
  template <class F>
  void operator()(const char* key, F& field, const char*, const Check& check = {}) {
    if (const toml::node* node = table.get(key))
      read_field(*node, field, join_key(prefix, key), check, source, overridden);
  }
};

template <class T>
void read_struct(const toml::table& table, T& opts, const std::string& prefix,
                 const std::string& source, const std::set<std::string>& overridden) {
  KeyCollector known;
  opts.visit(known);
  check_known_keys(table, known.keys, prefix, source, overridden);
  TomlReader reader{table, prefix, source, overridden};
  opts.visit(reader);
}

struct Validator {
  std::string prefix;
  const std::string& source;
  template <class F>
  void operator()(const char* key, F& field, const char*, const Check& check = {}) {
    assert_supported<F>();
    const std::string path = join_key(prefix, key);
    if constexpr (Scalar<F>) {
      enforce(check, field, source, path);
    } else if constexpr (Visitable<F>) {
      Validator inner{path, source};
      field.visit(inner);
    } else {
      for (size_t i = 0; i < field.size(); ++i) {
        Validator inner{item_key(path, i), source};
        field[i].visit(inner);
      }
    }
  }
};

template <class T>
toml::table to_table(T& opts);

struct TableWriter {
  toml::table& table;
  template <class F>
  void operator()(const char* key, F& field, const char*, const Check& = {}) {
    assert_supported<F>();
    if constexpr (Scalar<F>) {
      table.insert_or_assign(key, field);
    } else if constexpr (Visitable<F>) {
      table.insert_or_assign(key, to_table(field));
    } else {
      toml::array array;
      for (auto& item : field) array.push_back(to_table(item));
      table.insert_or_assign(key, std::move(array));
    }
  }
};

template <class T>
toml::table to_table(T& opts) {
  toml::table table;
  TableWriter writer{table};
  opts.visit(writer);
  return table;
}

// TOML text in visit order: a struct's plain values first (TOML needs them before any [header]),
// then its tables and arrays of tables, each under its full dotted header.
template <class T>
void emit_struct(T& opts, const std::string& header, std::string& out);

struct TextEmitter {
  std::string& out;
  const std::string& header;
  bool tables_pass;
  template <class F>
  void operator()(const char* key, F& field, const char*, const Check& = {}) {
    assert_supported<F>();
    const std::string path = header.empty() ? format_key(key) : header + "." + format_key(key);
    if constexpr (Scalar<F>) {
      if (!tables_pass) out += format_key(key) + " = " + format_value(field) + "\n";
    } else if constexpr (Visitable<F>) {
      if (!tables_pass) return;
      out += (out.empty() ? "[" : "\n[") + path + "]\n";
      emit_struct(field, path, out);
    } else {
      if (!tables_pass && field.empty()) out += format_key(key) + " = []\n";
      if (!tables_pass) return;
      for (auto& item : field) {
        out += (out.empty() ? "[[" : "\n[[") + path + "]]\n";
        emit_struct(item, path, out);
      }
    }
  }
};

template <class T>
void emit_struct(T& opts, const std::string& header, std::string& out) {
  TextEmitter values{out, header, /*tables_pass=*/false};
  opts.visit(values);
  TextEmitter tables{out, header, /*tables_pass=*/true};
  opts.visit(tables);
}

struct HelpCollector {
  std::vector<HelpRow>& rows;
  std::string prefix;
  template <class F>
  void operator()(const char* key, F& field, const char* help, const Check& check = {}) {
    assert_supported<F>();
    const std::string path = join_key(prefix, key);
    if constexpr (Scalar<F>) {
      const std::string meta = str("(", type_name<F>(), ", default ", format_value(field), ")");
      const std::string bounds = check_text(check);
      rows.push_back({path, meta, help, bounds.empty() ? "" : "[" + bounds + "]"});
    } else if constexpr (Visitable<F>) {
      rows.push_back({path, "(table)", help, ""});
      HelpCollector inner{rows, path};
      field.visit(inner);
    } else {
      rows.push_back({path, str("(array of tables, default ", field.size(), " items)"), help, ""});
      typename F::value_type item{};  // an item's own defaults, shown once for all items
      HelpCollector inner{rows, path + "[]"};
      item.visit(inner);
    }
  }
};

}  // namespace detail

// ---- Public API ------------------------------------------------------------------------------

// Reads `table` into `opts`; fields absent from the table keep their current values. Checks types,
// unknown keys and each read field's Check. On error `opts` is left unchanged.
template <class T>
void from_toml(const toml::table& table, T& opts, const std::string& source,
               const std::set<std::string>& overridden_keys = {}) {
  T result = opts;
  detail::read_struct(table, result, "", source, overridden_keys);
  opts = std::move(result);
}

// Checks every field's Check on the current values (defaults included).
template <class T>
void validate(const T& opts, const std::string& source) {
  detail::Validator validator{"", source};
  detail::readonly(opts).visit(validator);
}

// The full resolved config (every field, defaults included). toml::table keeps keys sorted;
// to_toml_string keeps visit order.
template <class T>
toml::table to_toml(const T& opts) {
  return detail::to_table(detail::readonly(opts));
}

template <class T>
std::string to_toml_string(const T& opts) {
  std::string out;
  detail::emit_struct(detail::readonly(opts), "", out);
  return out;
}

template <class T>
T load_options_from_string(const std::string& text, const std::string& source,
                           const std::vector<std::string>& overrides = {}) {
  T opts{};
  toml::table table = to_toml(opts);  // the defaults, so that --set can index a default array
  detail::merge_into(table, detail::parse_toml(text, source));
  const std::set<std::string> overridden = detail::apply_overrides(table, overrides);
  from_toml(table, opts, source, overridden);
  validate(opts, source);
  return opts;
}

// Parses a TOML file, applies `--set` overrides, reads and validates. A file that sets no option is
// refused (detail::check_has_options).
template <class T>
T load_options(const std::filesystem::path& file, const std::vector<std::string>& overrides = {}) {
  const std::string text = detail::read_config_file(file);
  detail::check_has_options(detail::parse_toml(text, file.string()), file.string());
  return load_options_from_string<T>(text, file.string(), overrides);
}

// One line per field, "  model.d_state  (int, default 16)  SSM state size N  [>= 1]"; the fields
// of an array of tables are listed once, as "model.layers[].d_state".
template <class T>
std::string help_text(const T& opts) {
  std::vector<detail::HelpRow> rows;
  detail::HelpCollector collector{rows, ""};
  detail::readonly(opts).visit(collector);
  return detail::format_help(rows);
}

// Stable 16-hex-digit id of the resolved config: FNV-1a 64 of to_toml_string.
template <class T>
std::string config_hash(const T& opts) {
  return detail::hex16(fnv1a64(to_toml_string(opts)));
}

// Sets one field from TOML text (a bare word is a string); type, unknown-key and Check errors
// name `source`. Tables and arrays may be set whole with inline TOML ("{d_state = 8}").
template <class T>
void set_field(T& opts, const std::string& dotted_key, const std::string& value_toml,
               const std::string& source) {
  toml::table table = to_toml(opts);
  detail::apply_assignment(table, dotted_key, value_toml, source);
  from_toml(table, opts, source);
}

// One field as TOML text: 16, 0.001, true, "mamba1" (quoted), {d_state = 16} for a table; so
// set_field(o, k, get_field(o, k)) changes nothing.
template <class T>
std::string get_field(const T& opts, const std::string& dotted_key) {
  return detail::node_text(to_toml(opts), dotted_key);
}

}  // namespace ssmlab::experiments
