// A checkpoint's state.json (train/checkpoint.h): read, verified against checksums.json, and validated.
#pragma once
#include <filesystem>

#include "ssmlab/train/checkpoint.h"

namespace ssmlab::train {

// Every field's type and range (step and epoch integers >= 0, RNG states strings, extra an object), the
// size and nesting limits of core/json_limits.h, and "step" against the folder's name step_<N>. Errors
// name the file. torch_rng_state_b64 is returned as text; checkpoint.cpp decodes and checks it.
TrainState read_state_file(const std::filesystem::path& file);

}  // namespace ssmlab::train
