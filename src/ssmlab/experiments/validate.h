// Checks of a resolved config that its sections' visit() cannot express (they need the whole value, not
// one bound): the run name becomes a folder name, so it must stay one folder inside run.out_dir.
#pragma once
#include <string>

#include "ssmlab/experiments/config.h"

namespace ssmlab::experiments {

// run.name: 1 to 100 characters of [A-Za-z0-9._-], not "." or "..", no "..", so "<out_dir>/<name>-<hash>"
// never leaves out_dir. Throws ConfigError naming `source`, the key and what came.
void check_run_name(const std::string& name, const std::string& source);

// Refuses a config whose lower bound of host memory (parameters with AdamW state, the task's token tensors)
// exceeds `available_bytes` (<= 0: no check), with the numbers and the keys that set them.
void check_memory(const Config& cfg, const std::string& source, double available_bytes);

// The machine's physical memory in bytes (0 when unknown).
double physical_memory_bytes();

// Everything above on `cfg` (memory against this machine's); load_config and the sweep call it after reading.
void validate_config(const Config& cfg, const std::string& source);

}  // namespace ssmlab::experiments
