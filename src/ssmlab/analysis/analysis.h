// Analyses: what a researcher asks of a trained (or freshly initialised) model. Each is one file behind this
// interface plus one line in registry.cpp; `ssmlab analyze NAME RUN_DIR|CONFIG` runs one, and [analysis]
// after_training runs them when training ends. Layer rule (docs/ARCHITECTURE.md): an analysis sees the Model
// interface (models/model.h), Block/Mixer and the Trace names of docs/GLOSSARY.md, never a concrete mixer.
//
// Outputs go to the run folder: figures/<name>*.csv + figures/<name>*.json (figure specs that `ssmlab report`
// draws) and analysis/<name>.json (the numbers: fitted slopes, per-layer values, the options used).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssmlab/models/model.h"
#include "ssmlab/tasks/task.h"

namespace ssmlab::analysis {

struct Context {
  models::ModelImpl& model;                 // on `device`, in eval mode
  const tasks::Task& task;                  // its shape says what inputs look like
  const std::vector<tasks::Segment>& data;  // the task's test segments: where inputs are drawn from
  c10::Device device = c10::Device(c10::kCPU);
  std::filesystem::path run_dir;            // figures/ and analysis/ are written under it
  std::string label;                        // this model's legend name (run name, or "<mixer>")
  uint64_t seed = 0;                        // every random draw of the analysis (probe directions ...)
};

struct Result {
  nlohmann::json summary;                     // written to analysis/<name>.json; printed by `ssmlab analyze`
  std::vector<std::filesystem::path> files;  // what was written, for the CLI to list
};

// Draws the first `count` examples of the test segments (in order, across segments) as model inputs on the
// context's device: (n, L) tokens or (n, L, C) features; only examples of the first segment's length are
// taken, so the batch is rectangular. Errors name the task when it has no test data.
at::Tensor sample_inputs(const Context& ctx, int64_t count);

// The same examples with their targets, where the task's segments are (on the CPU for in-memory tasks).
struct Examples {
  at::Tensor inputs, targets;
};
Examples sample_examples(const Context& ctx, int64_t count);

// "a, b,,c " -> {"a", "b", "c"}: the comma-separated items, trimmed of blanks and tabs, empty ones skipped.
std::vector<std::string> split_list(const std::string& text);

// Comma-separated option lists ("32, 96"; "leading,trailing"): the items, trimmed, empty items skipped. Bad
// items (not an integer, not one of `allowed` when given, repeated) throw ConfigError naming `key`.
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& key);
std::vector<std::string> parse_name_list(const std::string& text, const std::string& key,
                                         const std::vector<std::string>& allowed = {});

// One line of an analysis' comparison with the paper it reproduces, for summary["paper"] (an array of these;
// `ssmlab report` prints them as a "paper vs ours" table): what is compared, the paper's value as it states it
// (a number, or words where the paper gives only a trend), ours, and where the paper's value comes from.
nlohmann::json paper_row(const std::string& quantity, const nlohmann::json& paper, const nlohmann::json& ours,
                         const std::string& source);

}  // namespace ssmlab::analysis
