#include "ssmlab/experiments/identity.h"

#include <map>
#include <set>
#include <sstream>

#include "ssmlab/core/rng.h"
#include "ssmlab/experiments/options_io.h"
#include "ssmlab/runfolder/run_folder.h"

namespace ssmlab::experiments {
namespace {

// The default item table of every array of tables, by its dotted path ("task.mqar.train").
struct ItemDefaults {
  std::map<std::string, toml::table>& out;
  std::string prefix;
  template <class F>
  void operator()(const char* key, F& field, const char*, const Check& = {}) {
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    if constexpr (Visitable<F>) {
      ItemDefaults inner{out, path};
      field.visit(inner);
    } else if constexpr (detail::VisitableVector<F>) {
      typename F::value_type item{};
      out[path] = to_toml(item);
      ItemDefaults inner{out, path + "[]"};
      item.visit(inner);
    }
  }
};

std::string text_of(const toml::node& node) {
  std::ostringstream os;
  node.visit([&](const auto& n) { os << n; });
  return os.str();
}

// Drops from `t` every leaf equal to the same leaf of `def`; arrays of tables equal to the default array are
// dropped, others keep each item's non-default values. Empty tables are dropped.
void prune(toml::table& t, const toml::table* def, const std::string& path,
           const std::map<std::string, toml::table>& items) {
  std::vector<std::string> keys;
  for (const auto& [k, _] : t) keys.emplace_back(k.str());
  for (const auto& k : keys) {
    toml::node* node = t.get(k);
    const toml::node* d = def ? def->get(k) : nullptr;
    const std::string here = path.empty() ? k : path + "." + k;
    if (auto* sub = node->as_table()) {
      prune(*sub, d ? d->as_table() : nullptr, here, items);
      if (sub->empty()) t.erase(k);
    } else if (auto* arr = node->as_array(); arr && arr->is_array_of_tables()) {
      if (d && text_of(*d) == text_of(*node)) {
        t.erase(k);
        continue;
      }
      auto it = items.find(here);
      for (auto& item : *arr)
        if (auto* it_table = item.as_table()) prune(*it_table, it == items.end() ? nullptr : &it->second, here + "[]", items);
    } else if (d && text_of(*d) == text_of(*node)) {
      t.erase(k);
    }
  }
}

toml::table identity_table(const Config& cfg) {
  Config c = cfg;
  c.run.name = RunOptions{}.name;
  c.run.out_dir = RunOptions{}.out_dir;
  c.train.halt_after_steps = 0;
  c.train.dist_backend = train::TrainOptions{}.dist_backend;  // how ranks talk, not what they compute
  c.train.cuda_graph = false;  // how the step is launched, not what it computes (the same numbers, tested)
  c.analysis = analysis::AnalysisOptions{};
  c.task.text.cache_dir = tasks::TextConfig{}.cache_dir;  // where token files are cached, not what they hold
  toml::table t = to_toml(c);
  const Config defaults{};
  const toml::table d = to_toml(defaults);
  // Only the chosen mixer's and the chosen task's sub-tables define the run.
  if (auto* mixers = t["model"]["mixers"].as_table()) {
    std::vector<std::string> names;
    for (const auto& [k, _] : *mixers) names.emplace_back(k.str());
    for (const auto& k : names)
      if (k != cfg.model.mixer) mixers->erase(k);
  }
  if (auto* task = t["task"].as_table()) {
    for (const auto& name : tasks::task_names())
      if (name != cfg.task.name) task->erase(name);
  }
  std::map<std::string, toml::table> items;
  ItemDefaults collect{items, ""};
  Config probe{};
  probe.visit(collect);
  prune(t, &d, "", items);
  return t;
}

}  // namespace

std::string identity_text(const Config& cfg) {
  std::ostringstream os;
  os << identity_table(cfg);
  return os.str();
}

std::string identity_hash(const Config& cfg) { return detail::hex16(fnv1a64(identity_text(cfg))); }

std::string identity_diff(const Config& here, const Config& there) {
  std::map<std::string, std::string> a, b;  // dotted key (arrays of tables item by item) -> value text
  for (auto& e : runfolder::flatten_config(identity_text(here), "identity")) a[e.key] = std::move(e.text);
  for (auto& e : runfolder::flatten_config(identity_text(there), "identity")) b[e.key] = std::move(e.text);
  std::set<std::string> keys;
  for (const auto& [k, _] : a) keys.insert(k);
  for (const auto& [k, _] : b) keys.insert(k);
  std::string out;
  for (const auto& k : keys) {
    auto ia = a.find(k), ib = b.find(k);
    const std::string va = ia == a.end() ? "(default)" : ia->second, vb = ib == b.end() ? "(default)" : ib->second;
    if (va == vb) continue;
    out += (out.empty() ? "" : "; ") + k + ": " + va + " here, " + vb + " in the folder";
  }
  return out;
}

}  // namespace ssmlab::experiments
