// The list of fuzz targets: a new reader (CIFAR, IDX...) adds its target_<name>.cpp and one line here.
#include "targets.h"

namespace ssmlab::fuzz {

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"safetensors", run_safetensors, seeds_safetensors},
      {"toml_config", run_toml_config, seeds_toml_config},
      {"metrics_jsonl", run_metrics_jsonl, seeds_metrics_jsonl},
  };
  return all;
}

}  // namespace ssmlab::fuzz
