// experiments::load_options_from_string<Config>: TOML syntax, limits, types, unknown keys, checks. The input
// is split at its first byte 0x01 into the file text and `--set` overrides (one per line) so that the key
// parser is fuzzed too.
#include "ssmlab/core/error.h"
#include "ssmlab/experiments/config.h"
#include "ssmlab/experiments/options_io.h"
#include "targets.h"

namespace ssmlab::fuzz {

void run_toml_config(std::string_view input) {
  const auto split = input.find('\x01');
  const std::string text(input.substr(0, split));
  std::vector<std::string> sets;
  if (split != std::string_view::npos) {
    std::string_view rest = input.substr(split + 1);
    while (!rest.empty() && sets.size() < 8) {
      const auto nl = rest.find('\n');
      sets.emplace_back(rest.substr(0, nl));
      rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    }
  }
  try {
    experiments::load_options_from_string<experiments::Config>(text, "fuzz.toml", sets);
  } catch (const Error&) {
  }
}

std::vector<std::string> seeds_toml_config() {
  return {
      "[run]\nname = \"q\"\n[model]\nmixer = \"mamba1\"\nd_model = 64\nn_layers = 2\n[model.mixers.mamba1]\n"
      "d_state = 16\n[task.mqar]\nvocab_size = 64\n[[task.mqar.train]]\nseq_len = 32\nnum_kv_pairs = 4\n"
      "count = 100\n[train]\nlr = 1e-3\nthreads = 1\n",
      "model.d_model = 32 # comment\ntrain = { lr = 0.01, epochs = 2 }\n\x01model.n_layers=3\ntrain.lr=1e-2\n",
      "[task]\nbatch_size = 8\n[[task.mqar.test]]\nseq_len = 64\nnum_kv_pairs = 8\n\x01task.mqar.test[0].count=4\n",
      "run.name = '''multi\nline'''\n\"quoted.key\" = 1\n",
  };
}

}  // namespace ssmlab::fuzz
