// Learning-rate schedules (train.schedule).
#pragma once
#include <cstdint>

#include "ssmlab/train/options.h"

namespace ssmlab::train {

// Learning rate for optimiser step `step` (0-based) of `total_steps`, in epoch `epoch` of `opts.epochs`.
double learning_rate(const TrainOptions& opts, int64_t step, int64_t total_steps, int64_t epoch);

}  // namespace ssmlab::train
