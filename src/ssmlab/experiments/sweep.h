// Sweeps: a config file with a [sweep] table of `grid` (Cartesian) and `zip` (paired) lists over dotted
// config keys, expanded into one resolved Config per run (docs/ARCHITECTURE.md, "Configs, runs, sweeps").
//
//   [sweep]
//   base = "../quickstart.toml"   # optional: the config the rest of this file is merged over
//   name = "mixers-lr"            # optional: default the file name without .toml
//   out_dir = "runs/mixers-lr"    # optional: default <run.out_dir>/<name>
//   grid = { "model.mixer" = ["mamba1", "attention"], "train.lr" = [1e-3, 3e-3] }
//   zip = { "model.d_model" = [32, 64], "model.n_layers" = [1, 2] }   # or [[sweep.zip]] groups
//
// Every grid key is one axis; every zip group is one axis whose lists are walked together (they must
// have the same length). Axes are ordered as they appear in the file and runs are numbered with the
// last axis varying fastest, so the expansion order is fixed by the file alone.
#pragma once
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "ssmlab/experiments/config.h"

namespace ssmlab::experiments {

struct SweepRun {
  size_t index = 0;                                            // position in expansion order
  std::vector<std::pair<std::string, std::string>> overrides;  // (dotted key, TOML value text), axis order
  Config config;                                               // the resolved config of this run
  std::string id;                                              // run_id(config): 16 hex digits
  std::string folder;                                          // <run.name>-<first 8 of id>

  std::string label() const;  // "model.mixer=attention train.lr=0.003" (strings unquoted)
};

struct Sweep {
  std::string name;
  std::string source;                  // the sweep file, for messages
  std::filesystem::path out_dir;       // the sweep folder; each run lives in out_dir / folder
  std::vector<std::string> keys;       // swept keys in axis order
  std::vector<SweepRun> runs;
};

// Parses a sweep file and expands it. `overrides` (--set key=value) apply to the base config before the
// swept values; setting a swept key that way is an error. Errors name the file, the key and the problem:
// unknown keys, lists that are empty or not lists, zip lists of different lengths, a key swept twice,
// values of the wrong type or out of range (checked for every run before anything runs), two runs with
// the same resolved config.
Sweep load_sweep(const std::filesystem::path& file, const std::vector<std::string>& overrides = {});

// The same from text; `base_dir` resolves a relative [sweep].base, `source` names the text in errors and
// gives the default sweep name.
Sweep load_sweep_from_string(const std::string& text, const std::string& source,
                             const std::filesystem::path& base_dir, const std::vector<std::string>& overrides = {});

}  // namespace ssmlab::experiments
