#include "ssmlab/experiments/sweep.h"

#include <algorithm>
#include <map>
#include <set>

#include "ssmlab/core/error.h"
#include "ssmlab/experiments/options_io.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/experiments/validate.h"

namespace ssmlab::experiments {
namespace {

// One list of values under a dotted key, where it stood in the file.
struct Leaf {
  std::string key;
  const toml::array* values = nullptr;
  toml::source_position at{};
};

// An axis: one grid key, or one zip group (lists walked together).
struct Axis {
  std::vector<Leaf> leaves;
  size_t size = 0;
  toml::source_position at{};
};

bool before(const toml::source_position& a, const toml::source_position& b) {
  return a.line != b.line ? a.line < b.line : a.column < b.column;
}

// Dotted keys of the lists under `table` (nested tables are walked: `model.mixer = [..]`, a quoted
// "model.mixer" and [sweep.grid.model] all give the key model.mixer). Anything else is an error.
void collect_leaves(const toml::table& table, const std::string& prefix, const std::string& where,
                    std::vector<Leaf>& out) {
  for (const auto& [k, node] : table) {
    const std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const toml::array* a = node.as_array()) {
      if (a->empty()) fail(where, ": '", key, "' has an empty list of values (give at least one)");
      out.push_back({key, a, node.source().begin});
    } else if (const toml::table* t = node.as_table()) {
      collect_leaves(*t, key, where, out);
    } else {
      fail(where, ": '", key, "' must be a list of values, e.g. ", key, " = [", detail::inline_toml(node),
           "]; got ", detail::inline_toml(node));
    }
  }
}

Axis make_axis(std::vector<Leaf> leaves, const std::string& where) {
  Axis axis;
  std::stable_sort(leaves.begin(), leaves.end(), [](const Leaf& a, const Leaf& b) { return before(a.at, b.at); });
  axis.size = leaves.front().values->size();
  axis.at = leaves.front().at;
  for (const auto& leaf : leaves) {
    if (leaf.values->size() != axis.size) {
      std::string lengths;
      for (const auto& l : leaves) lengths += str(lengths.empty() ? "" : ", ", l.key, " has ", l.values->size());
      fail(where, ": zip lists must have the same length (", lengths, ")");
    }
  }
  axis.leaves = std::move(leaves);
  return axis;
}

// "a.b" and "a.b.c" (or "a.b[0]") would set the same value twice.
bool overlaps(const std::string& a, const std::string& b) {
  const std::string& s = a.size() < b.size() ? a : b;
  const std::string& l = a.size() < b.size() ? b : a;
  return l.compare(0, s.size(), s) == 0 && (l.size() == s.size() || l[s.size()] == '.' || l[s.size()] == '[');
}

std::vector<Axis> read_axes(const toml::table& sweep, const std::string& source) {
  std::vector<Axis> axes;
  if (const toml::node* grid = sweep.get("grid")) {
    const toml::table* t = grid->as_table();
    if (!t) fail(source, ": [sweep] grid must be a table of lists, e.g. grid = { \"train.lr\" = [1e-3, 3e-3] }");
    std::vector<Leaf> leaves;
    collect_leaves(*t, "", source + ": [sweep] grid", leaves);
    for (auto& leaf : leaves) axes.push_back(make_axis({leaf}, source + ": [sweep] grid"));
  }
  if (const toml::node* zip = sweep.get("zip")) {
    std::vector<const toml::table*> groups;
    if (const toml::table* t = zip->as_table()) {
      groups.push_back(t);
    } else if (const toml::array* a = zip->as_array(); a && a->is_array_of_tables()) {
      for (const auto& g : *a) groups.push_back(g.as_table());
    } else {
      fail(source, ": [sweep] zip must be a table of lists (one group) or [[sweep.zip]] tables (several groups), "
                   "e.g. zip = { \"model.d_model\" = [32, 64], \"model.n_layers\" = [1, 2] }");
    }
    for (size_t g = 0; g < groups.size(); ++g) {
      const std::string where = source + ": [sweep] zip" + (groups.size() > 1 ? str(" group ", g + 1) : "");
      std::vector<Leaf> leaves;
      collect_leaves(*groups[g], "", where, leaves);
      if (leaves.empty()) fail(where, ": no lists (an empty zip group)");
      axes.push_back(make_axis(std::move(leaves), where));
    }
  }
  if (axes.empty())
    fail(source, ": [sweep] has no grid or zip lists; e.g. grid = { \"train.lr\" = [1e-3, 3e-3] }");
  std::stable_sort(axes.begin(), axes.end(), [](const Axis& a, const Axis& b) { return before(a.at, b.at); });
  std::vector<std::string> seen;
  for (const auto& axis : axes) {
    for (const auto& leaf : axis.leaves) {
      for (const auto& other : seen)
        if (overlaps(other, leaf.key))
          fail(source, ": [sweep] sets '", leaf.key, "' twice (also '", other, "'); sweep each key once");
      seen.push_back(leaf.key);
    }
  }
  return axes;
}

std::string get_string(const toml::table& sweep, const char* key, const std::string& source) {
  const toml::node* node = sweep.get(key);
  if (!node) return "";
  if (!node->is_string() || node->as_string()->get().empty())
    fail(source, ": [sweep] ", key, " must be a non-empty string, got ", detail::inline_toml(*node));
  return node->as_string()->get();
}

std::string display_value(const std::string& toml_text) {
  // A simple string shows without quotes; anything else as its TOML text.
  if (toml_text.size() >= 2 && toml_text.front() == '"' && toml_text.back() == '"' &&
      toml_text.find_first_of("\\ =") == std::string::npos)
    return toml_text.substr(1, toml_text.size() - 2);
  return toml_text;
}

}  // namespace

std::string SweepRun::label() const {
  std::string out;
  for (const auto& [key, value] : overrides) out += (out.empty() ? "" : " ") + key + "=" + display_value(value);
  return out;
}

Sweep load_sweep(const std::filesystem::path& file, const std::vector<std::string>& overrides) {
  return load_sweep_from_string(detail::read_config_file(file), file.string(), file.parent_path(), overrides);
}

Sweep load_sweep_from_string(const std::string& text, const std::string& source,
                             const std::filesystem::path& base_dir, const std::vector<std::string>& overrides) {
  const toml::table root = detail::parse_toml(text, source);
  const toml::node* sweep_node = root.get("sweep");
  if (!sweep_node) fail(source, ": no [sweep] table (a sweep file is a config with a [sweep] table of grid/zip lists)");
  if (!sweep_node->is_table()) fail(source, ": sweep must be a table ([sweep])");
  const toml::table& sweep_table = *sweep_node->as_table();  // not a copy: copies lose the source positions
  toml::table rest = root;
  rest.erase("sweep");
  static const std::vector<std::string> known = {"base", "name", "out_dir", "grid", "zip"};
  for (const auto& [k, node] : sweep_table)
    if (std::find(known.begin(), known.end(), k.str()) == known.end())
      fail(source, ": unknown key 'sweep.", k.str(), "' ([sweep] takes base, name, out_dir, grid, zip)");

  // The base config: defaults, then [sweep].base, then the rest of this file, then --set.
  toml::table table = to_toml(Config{});
  std::string base_source = source;
  if (const std::string base = get_string(sweep_table, "base", source); !base.empty()) {
    const std::filesystem::path base_file = base_dir / base;
    base_source = base_file.string();
    detail::merge_into(table, detail::parse_toml(detail::read_config_file(base_file), base_source));
    Config check{};
    from_toml(table, check, base_source);  // errors in the base name the base file
  }
  detail::merge_into(table, rest);
  const std::set<std::string> overridden = detail::apply_overrides(table, overrides);
  Config base_cfg{};
  from_toml(table, base_cfg, source, overridden);
  validate(base_cfg, source);
  check_config(base_cfg, source);
  validate_config(base_cfg, source);

  Sweep out;
  out.source = source;
  out.name = get_string(sweep_table, "name", source);
  if (out.name.empty()) out.name = std::filesystem::path(source).stem().string();
  const std::string out_dir = get_string(sweep_table, "out_dir", source);
  out.out_dir = out_dir.empty() ? std::filesystem::path(base_cfg.run.out_dir) / out.name : std::filesystem::path(out_dir);

  const std::vector<Axis> axes = read_axes(sweep_table, source);
  const toml::table resolved = to_toml(base_cfg);
  for (const auto& axis : axes) {
    for (const auto& leaf : axis.leaves) {
      detail::find_node(resolved, leaf.key, source + ": [sweep] key '" + leaf.key + "'");
      for (const auto& k : overridden)
        if (overlaps(k, leaf.key))
          fail("--set ", k, ": '", leaf.key, "' is swept by ", source, "; set it in [sweep] instead");
      out.keys.push_back(leaf.key);
    }
  }

  size_t total = 1;
  for (const auto& axis : axes) {
    if (total > 100000 / axis.size) fail(source, ": [sweep] expands to more than 100000 runs");
    total *= axis.size;
  }
  std::map<std::string, size_t> by_id;
  std::vector<size_t> pos(axes.size(), 0);  // mixed-radix counter, last axis fastest
  for (size_t n = 0; n < total; ++n) {
    SweepRun run;
    run.index = n;
    toml::table t = resolved;
    for (size_t a = 0; a < axes.size(); ++a) {
      for (const auto& leaf : axes[a].leaves) {
        const std::string value = detail::inline_toml(*leaf.values->get(pos[a]));
        detail::apply_assignment(t, leaf.key, value, source + ": [sweep] " + leaf.key + " = " + value);
        run.overrides.emplace_back(leaf.key, value);
      }
    }
    const std::string where = str(source, ": [sweep] run ", n + 1, " of ", total, " (", run.label(), ")");
    run.config = base_cfg;
    from_toml(t, run.config, where);
    validate(run.config, where);
    check_config(run.config, where);
    validate_config(run.config, where);
    run.id = run_id(run.config);
    run.folder = run.config.run.name + "-" + run.id.substr(0, 8);
    if (auto [it, fresh] = by_id.emplace(run.id, n); !fresh)
      fail(where, ": resolves to the same config as run ", it->second + 1, " (", out.runs[it->second].label(),
           "); remove the repeated value");
    out.runs.push_back(std::move(run));
    for (size_t a = axes.size(); a-- > 0;) {
      if (++pos[a] < axes[a].size) break;
      pos[a] = 0;
    }
  }
  return out;
}

}  // namespace ssmlab::experiments
