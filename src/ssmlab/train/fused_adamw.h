// The sync-free optimizer step (train.optimizer_impl = "fused"): torch::optim::AdamW keeps the param groups and
// the per-parameter state (so checkpoints are unchanged), the update runs through ATen's multi-tensor
// at::_fused_adamw_ with per-parameter float32 step tensors on the parameter's device, and gradient clipping
// computes the global norm and the clip coefficient on the device. Nothing here waits for the device, so the
// whole step can be captured into a CUDA graph (train/cuda_graph.h).
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include <ATen/ATen.h>
#include <torch/optim/adamw.h>

namespace ssmlab::train {

class FusedAdamW {
 public:
  // `opt` must outlive this object; its param groups and state are the ones stepped.
  explicit FusedAdamW(torch::optim::AdamW& opt);

  // One AdamW step of every parameter that has a gradient, exactly what opt.step() does (lazy zero state,
  // decoupled weight decay p *= 1 - lr wd, bias corrections of the incremented step, amsgrad when a group asks),
  // one fused multi-tensor kernel per (group, device, dtype). lr comes from each group's options.
  void step();
  // The same, lr taken from `lr` (a 0-d tensor on the parameters' device; float32 on CUDA) for every group: the
  // capturable form (a graph replays the kernel reading whatever lr holds then).
  void step(const at::Tensor& lr);

  // The device step counters -> AdamWParamState::step() (one device-to-host copy). Call before a checkpoint is
  // written: graph replays advance only the device counters (eager step() calls also advance the host ones).
  void sync_host_steps();
  // Forgets the device step counters: the next step() starts them from AdamWParamState::step(). Call after the
  // state was replaced (load_checkpoint).
  void reset_device_steps() { steps_.clear(); }

  // The device step counter of parameter `p` (undefined before its first step): for tests.
  at::Tensor device_step(const at::Tensor& p) const;

 private:
  void step_impl(const at::Tensor* lr);
  torch::optim::AdamW& opt_;
  std::unordered_map<const void*, at::Tensor> steps_;  // TensorImpl* -> 0-d float32 step on the parameter's device
};

// clip_grad_norm_(params, max_norm) without a host sync: the total 2-norm of the defined gradients from
// _foreach_norm, stacked and normed on the device, then every gradient multiplied in place by
// clamp(max_norm / (norm + 1e-6), max 1). Returns the total norm (0-d, on the gradients' device); an undefined
// tensor when no parameter has a gradient.
at::Tensor clip_grad_norm_nosync(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace ssmlab::train
