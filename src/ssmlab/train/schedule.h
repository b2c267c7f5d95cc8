// Learning-rate schedules (train.schedule): cosine, cosine_epoch, constant and wsd (warmup-stable-decay,
// spec §3.5: linear warmup over warmup_steps, lr, then linear decay to min_lr_ratio x lr over the final
// ceil(wsd_decay_fraction x total_steps) steps).
#pragma once
#include <cstdint>

#include "ssmlab/train/options.h"

namespace ssmlab::train {

// Learning rate for optimiser step `step` (0-based) of `total_steps`, in epoch `epoch` of `opts.epochs`.
double learning_rate(const TrainOptions& opts, int64_t step, int64_t total_steps, int64_t epoch);

}  // namespace ssmlab::train
