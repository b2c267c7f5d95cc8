#include "ssmlab/experiments/tensorboard.h"

#include <algorithm>
#include <chrono>
#include <cctype>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "ssmlab/core/error.h"
#include "ssmlab/core/io.h"
#include "ssmlab/core/log.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/runfolder/layout.h"
#include "ssmlab/runfolder/run_folder.h"

namespace ssmlab::experiments {
namespace {

namespace fs = std::filesystem;
using train::HParamValue;

constexpr size_t kMaxNameBytes = 200;

std::string last_part(const std::string& key) {
  const auto dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

struct KeyValue {
  HParamValue value;
  std::string text;  // as config.toml spells it (strings unquoted, reals in the shortest form)
};

// A config key's value from the flattened config: the entry itself, else the entries below it ("key[0].sub",
// "key.sub") as "sub=value;..." text; nullopt when the config has neither.
std::optional<KeyValue> config_value(const std::vector<runfolder::ConfigEntry>& entries, const std::string& key) {
  std::string joined;
  bool below = false;
  for (const auto& e : entries) {
    if (e.key == key) {
      switch (e.kind) {
        case runfolder::ValueKind::boolean: return KeyValue{HParamValue{e.text == "true"}, e.text};
        case runfolder::ValueKind::integer:
        case runfolder::ValueKind::real: {
          try {
            return KeyValue{HParamValue{std::stod(e.text)}, e.text};
          } catch (const std::exception&) {  // inf / nan spelled the TOML way: keep the text
            return KeyValue{HParamValue{e.text}, e.text};
          }
        }
        default: return KeyValue{HParamValue{e.text}, e.text};
      }
    }
    if (e.key.size() > key.size() && e.key.starts_with(key) && (e.key[key.size()] == '[' || e.key[key.size()] == '.')) {
      if (below) joined += ';';
      joined += e.key.substr(key.size() + (e.key[key.size()] == '.' ? 1 : 0)) + "=" + e.text;
      below = true;
    }
  }
  if (below) return KeyValue{HParamValue{joined}, joined};
  return std::nullopt;
}

std::vector<runfolder::ConfigEntry> flat_config(const Config& cfg) {
  return runfolder::flatten_config(run_config_text(cfg), "the resolved config of run '" + cfg.run.name + "'");
}

bool same_value(const HParamValue& a, const HParamValue& b) { return a == b; }

// `s` with every character outside the letters, digits and `extra` as '_' (and a leading '.' too: no hidden
// folder, no "." or ".."); `changed` is set when a character was replaced.
std::string sanitize(const std::string& s, std::string_view extra, bool& changed) {
  std::string out = s;
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (!std::isalnum(u) && extra.find(c) == std::string_view::npos) {
      c = '_';
      changed = true;
    }
  }
  if (!out.empty() && out[0] == '.') {
    out[0] = '_';
    changed = true;
  }
  return out;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

const std::vector<std::string>& tb_basic_keys() {
  static const std::vector<std::string> keys = {"task.name",  "model.mixer",      "model.d_model", "model.n_layers",
                                                "train.lr",   "train.epochs",     "train.schedule", "task.batch_size",
                                                "run.seed"};
  return keys;
}

train::HParams tb_hparams(const Config& cfg, const std::vector<std::string>& swept) {
  const auto entries = flat_config(cfg);
  train::HParams out;
  std::set<std::string> seen;
  auto add = [&](const std::string& key) {
    if (!seen.insert(key).second) return;
    if (auto v = config_value(entries, key)) out.emplace_back(key, std::move(v->value));
  };
  for (const auto& k : swept) add(k);
  for (const auto& k : tb_basic_keys()) add(k);
  return out;
}

std::string tb_run_name(const Config& cfg, const std::vector<std::string>& swept, const std::string& id) {
  const auto entries = flat_config(cfg);
  std::map<std::string, int> parts;
  for (const auto& k : swept) ++parts[last_part(k)];
  // A replaced character could make two runs' names equal ("a b" and "a_b"), and a value holding ',' or '='
  // could shift the key=value pairs: either adds ~<run id>, so no two runs of a sweep share a folder.
  bool changed = false;
  std::string name = sanitize(cfg.run.name, "._+-@%", changed);
  for (const auto& k : swept) {
    const auto v = config_value(entries, k);
    if (!v) changed = true;  // "none" is no value of the config
    name.append(1, ',').append(sanitize(parts[last_part(k)] > 1 ? k : last_part(k), "._+-@%", changed));
    name.append(1, '=').append(sanitize(v ? v->text : std::string("none"), "._+-@%", changed));
  }
  std::string tail = "~";
  tail.append(id, 0, 8);
  if (name.size() > kMaxNameBytes) name = name.substr(0, kMaxNameBytes - tail.size()) + tail;
  else if (changed) name += tail;
  return name;
}

train::TbSession tb_session(const Config& cfg, const fs::path& run_dir) {
  train::TbSession s;
  s.dir = run_dir;
  s.model_uri = fs::absolute(run_dir).lexically_normal().string();
  std::vector<std::string> swept;
  bool in_sweep = false;
  const fs::path sweep_dir = fs::absolute(run_dir).lexically_normal().parent_path();
  const fs::path manifest = runfolder::sweep_manifest(sweep_dir);
  if (fs::exists(manifest)) {
    try {
      const auto m = nlohmann::json::parse(read_file(manifest));
      const std::string folder = fs::absolute(run_dir).lexically_normal().filename().string();
      for (const auto& r : m.at("runs"))
        if (r.at("folder").get<std::string>() == folder) in_sweep = true;
      if (in_sweep) swept = m.at("keys").get<std::vector<std::string>>();
    } catch (const std::exception& e) {
      log::warn(str("TensorBoard: cannot read the sweep manifest ", manifest.string(), " (", e.what(),
                    "); the run's events go into its own folder"));
      in_sweep = false;
      swept.clear();
    }
  }
  s.hparams = tb_hparams(cfg, swept);
  if (in_sweep) {
    s.dir = sweep_dir / std::string(kTbDir) / tb_run_name(cfg, swept, run_id(cfg));
    s.old_dirs = {run_dir};  // where events went before sweep runs moved to <sweep>/tb/
  }
  return s;
}

void write_tb_experiment(const Sweep& sweep) {
  if (std::none_of(sweep.runs.begin(), sweep.runs.end(), [](const SweepRun& r) { return r.config.train.tensorboard; }))
    return;
  train::Experiment e;
  e.name = sweep.name;
  e.description = "ssmlab sweep " + sweep.name + " (" + sweep.source + ")";
  e.time_created_secs = now_seconds();
  // hparams: the union over the runs, in order of first appearance, each with the values the runs take.
  std::vector<std::string> order;
  std::map<std::string, std::vector<HParamValue>> domain;
  std::map<std::string, size_t> present;
  for (const auto& r : sweep.runs)
    for (auto& [k, v] : tb_hparams(r.config, sweep.keys)) {
      auto& d = domain[k];
      if (d.empty() && !present.count(k)) order.push_back(k);
      ++present[k];
      if (std::none_of(d.begin(), d.end(), [&](const HParamValue& x) { return same_value(x, v); })) d.push_back(v);
    }
  for (const auto& k : order) {
    train::HParamInfo info{k, domain[k], domain[k].size() > 1 || present[k] < sweep.runs.size()};
    // Numbers in increasing order, as TensorBoard lists a discrete domain's values for filtering.
    if (std::all_of(info.domain.begin(), info.domain.end(), [](const HParamValue& v) { return std::holds_alternative<double>(v); }))
      std::sort(info.domain.begin(), info.domain.end(),
                [](const HParamValue& a, const HParamValue& b) { return std::get<double>(a) < std::get<double>(b); });
    e.hparams.push_back(std::move(info));
  }
  // metrics: train/loss, then the eval keys of the runs' newest eval records, in results-table order.
  std::vector<nlohmann::json> evals;
  for (const auto& r : sweep.runs) {
    const fs::path dir = sweep.out_dir / r.folder;
    if (!fs::exists(runfolder::metrics_file(dir))) continue;
    try {
      const auto folder = runfolder::read_run_folder(dir, sweep.out_dir);
      if (const auto* ev = folder.newest_eval()) evals.push_back(*ev);
    } catch (const std::exception& ex) {
      log::warn(str("TensorBoard: ", ex.what(), " (its metrics are left out of the hparams experiment)"));
    }
  }
  if (evals.empty()) evals.push_back({{"test_acc", 0}, {"test_loss", 0}});
  e.metrics.push_back({"train/loss", "", train::DatasetType::training});
  for (const auto& key : runfolder::metric_order(evals)) {
    if (key == "kind" || key == "step" || key == "epoch") continue;
    e.metrics.push_back({train::tb_tag("eval", key), "", train::DatasetType::validation});
  }
  const fs::path dir = sweep.out_dir / std::string(kTbDir);
  fs::create_directories(dir);
  const std::string bytes = train::tfrecord(train::file_version_event(e.time_created_secs)) +
                            train::tfrecord(train::hparams_event(e.time_created_secs, 0, train::kExperimentTag,
                                                                 train::experiment_plugin_data(e)));
  const fs::path file = dir / (std::string(runfolder::kEventsPrefix) + "0.experiment");
  write_file_atomic(file, bytes);
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(dir, ec))
    if (f.is_regular_file() && f.path() != file && f.path().filename().string().starts_with(runfolder::kEventsPrefix))
      fs::remove(f.path(), ec);
}

}  // namespace ssmlab::experiments
