// The list of fuzz targets: a new reader adds its target_<name>.cpp and one line here.
#include "targets.h"

namespace ssmlab::fuzz {

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"safetensors", run_safetensors, seeds_safetensors},
      {"toml_config", run_toml_config, seeds_toml_config},
      {"metrics_jsonl", run_metrics_jsonl, seeds_metrics_jsonl},
      {"cifar10", run_cifar10, seeds_cifar10},
      {"idx", run_idx, seeds_idx},
      {"tar", run_tar, seeds_tar},
      {"gpt2_files", run_gpt2_files, seeds_gpt2_files},
  };
  return all;
}

}  // namespace ssmlab::fuzz
