// [train] options: optimiser, schedule, precision, evaluation, checkpoints (spec §2.8.2 defaults).
#pragma once
#include <string>
#include <thread>

#include "ssmlab/core/fields.h"

namespace ssmlab::train {

struct TrainOptions {
  int64_t epochs = 64;
  int64_t max_steps = 0;
  double lr = 1e-3;
  double weight_decay = 0.1;
  std::string decay = "all";
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  std::string schedule = "cosine";
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;
  double wsd_decay_fraction = 0.1;
  double grad_clip = 1.0;
  std::string optimizer_impl = "fused";
  bool cuda_graph = false;
  std::string precision = "fp32";
  int64_t eval_every = 0;
  double early_stop_acc = 0.99;
  int64_t checkpoint_every = 0;
  int64_t keep_checkpoints = 2;
  int64_t log_every = 10;
  bool tensorboard = true;
  std::string device = "cpu";
  int64_t threads = 0;
  int64_t halt_after_steps = 0;
  std::string dist_backend = "auto";

  template <class V>
  void visit(V& v) {
    v("epochs", epochs, "passes over the training segments", Check::at_least(1));
    v("max_steps", max_steps, "stop after this many optimiser steps; 0 = epochs decide", Check::at_least(0));
    v("lr", lr, "peak learning rate (AdamW)", Check::positive());
    v("weight_decay", weight_decay, "AdamW decoupled weight decay", Check::at_least(0));
    v("decay", decay,
      "which parameters decay: all (the papers' code: plain AdamW over every parameter) or matrices "
      "(not biases, norms, A_log, D: mamba_ssm's _no_weight_decay)",
      Check::one_of({"all", "matrices"}));
    v("beta1", beta1, "AdamW beta1", Check::range(0, 1));
    v("beta2", beta2, "AdamW beta2", Check::range(0, 1));
    v("eps", eps, "AdamW epsilon", Check::positive());
    v("schedule", schedule,
      "cosine: linear warmup then cosine to min_lr_ratio*lr per step; cosine_epoch: zoology's "
      "CosineAnnealingLR(T_max=epochs) stepped per epoch (no warmup); constant: warmup then lr; wsd: "
      "warmup-stable-decay (spec §3.5): warmup, lr, then a linear decay to min_lr_ratio*lr over the final "
      "wsd_decay_fraction of the steps",
      Check::one_of({"cosine", "cosine_epoch", "constant", "wsd"}));
    v("warmup_steps", warmup_steps, "linear warmup steps (cosine, constant and wsd schedules)", Check::at_least(0));
    v("min_lr_ratio", min_lr_ratio, "final lr / peak lr", Check::unit());
    v("wsd_decay_fraction", wsd_decay_fraction,
      "wsd: the final fraction of the steps that decays linearly (the last ceil(fraction x steps))",
      Check{0.0, 1.0, /*min_open=*/true, /*max_open=*/false});
    v("grad_clip", grad_clip, "clip the global gradient norm to this; 0 = off", Check::at_least(0));
    v("optimizer_impl", optimizer_impl,
      "fused: AdamW through ATen's multi-tensor _fused_adamw_ and gradient clipping on the device (no host sync; "
      "torch::optim::AdamW's numbers to fp32 rounding, same checkpoints); torch: torch::optim::AdamW::step and "
      "clip_grad_norm_ (one host sync per step)",
      Check::one_of({"fused", "torch"}));
    v("cuda_graph", cuda_graph,
      "CUDA devices, optimizer_impl = fused: capture forward, loss, backward, clipping and the optimizer step of "
      "each full-batch shape (up to 8) into a CUDA graph after 3 eager warm-up steps and replay it (the loss stays "
      "on the device, read at log steps); partial batches, truncated BPTT and several ranks run eagerly; not part "
      "of the run's identity");
    v("precision", precision, "fp32, or bf16 autocast (state and residual stay fp32)",
      Check::one_of({"fp32", "bf16"}));
    v("eval_every", eval_every, "evaluate every N steps; 0 = at the end of every epoch", Check::at_least(0));
    v("early_stop_acc", early_stop_acc, "stop once test accuracy reaches this; 0 = never", Check::unit());
    v("checkpoint_every", checkpoint_every, "checkpoint every N steps; 0 = at every evaluation",
      Check::at_least(0));
    v("keep_checkpoints", keep_checkpoints, "newest checkpoints kept", Check::at_least(1));
    v("log_every", log_every, "progress line / metrics.jsonl train record every N steps", Check::at_least(1));
    v("tensorboard", tensorboard,
      "also write every metrics.jsonl record to a TensorBoard event file (events.out.tfevents.*) in the run folder");
    v("device", device, "cpu, cuda, cuda:N or auto");
    // More threads than cores only slows ATen down (100000 hangs the machine); 0 when the count is unknown.
    const double cores = std::thread::hardware_concurrency();
    v("threads", threads, "CPU threads for ATen; 0 = ATen's default; at most this machine's cores",
      cores > 0 ? Check::range(0, cores) : Check::at_least(0));
    v("dist_backend", dist_backend,
      "collectives of data-parallel training (several ranks): auto (nccl for a CUDA train.device, gloo for cpu), "
      "nccl (CUDA builds, one GPU per rank), or gloo (CUDA tensors staged through host memory); not part of the "
      "run's identity",
      Check::one_of({"auto", "gloo", "nccl"}));
    v("halt_after_steps", halt_after_steps,
      "testing aid: leave the process after this global step without finishing, as if killed; 0 = off",
      Check::at_least(0));
  }
};

}  // namespace ssmlab::train
