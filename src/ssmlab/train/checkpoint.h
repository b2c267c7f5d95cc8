// Training checkpoints: one folder per save, published by a rename so that a crash never leaves a
// half-written checkpoint under the final name.
//   <root>/step_00001000/model.safetensors      named parameters and buffers of the model
//                       /optimizer.safetensors  AdamW state per parameter: "<name>.exp_avg",
//                                               "<name>.exp_avg_sq", "<name>.max_exp_avg_sq" (amsgrad),
//                                               "<name>.step" (0-d I64); metadata "param_groups" holds
//                                               lr/betas/eps/weight_decay/amsgrad and parameter names
//                       /state.json             TrainState and the torch CPU generator state (base64)
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/adamw.h>

#include "ssmlab/models/safetensors.h"

namespace ssmlab::train {

struct TrainState {
  int64_t step = 0;
  int64_t epoch = 0;
  std::string rng_state;           // ssmlab::Rng::state() of the data/run stream
  std::string torch_rng_state_b64;  // filled by load_checkpoint; save always writes the live state
  nlohmann::json extra;             // anything else the trainer wants back (scheduler, best metric...)
};

// <root>/step_XXXXXXXX (8 digits, zero-padded; more digits past 99999999).
std::filesystem::path checkpoint_dir(const std::filesystem::path& root, int64_t step);

// Writes everything into `dir` + ".tmp" (removing a stale one first), then renames it to `dir`. An
// existing `dir` is swapped out atomically and removed. Parent folders are created. The torch CPU
// generator state written is the live one (at::detail::getDefaultCPUGenerator()).
void save_checkpoint(const std::filesystem::path& dir, const torch::nn::Module& model, const torch::optim::AdamW& opt,
                     const TrainState& state);

// Loads into an already-constructed model and optimizer of the same architecture. Every parameter
// and buffer must be present with the same shape and dtype, and no unknown tensor may be there; the
// optimizer's param groups must list the same parameters. Everything is checked before anything is
// changed, so a failed load leaves model, optimizer and generator as they were. Restores parameter
// values, optimizer state (parameters without state in the file get none), param-group options and
// the torch CPU generator state.
TrainState load_checkpoint(const std::filesystem::path& dir, torch::nn::Module& model, torch::optim::AdamW& opt);

// Weights only (eval): `file` is a model.safetensors; same checks as load_checkpoint.
void load_model_weights(const std::filesystem::path& file, torch::nn::Module& model);

// The complete checkpoint folder (step_<digits> holding all three files) with the highest step
// under `root`, or an empty path when there is none. "*.tmp" folders are never returned.
std::filesystem::path latest_checkpoint(const std::filesystem::path& root);

// Removes all complete checkpoints but the newest `keep_last`, and stale "step_N.tmp"/"step_N.old"
// folders with N below the newest step. keep_last <= 0 keeps every checkpoint.
void prune_checkpoints(const std::filesystem::path& root, int64_t keep_last);

}  // namespace ssmlab::train
