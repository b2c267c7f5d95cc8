#include "ssmlab/train/schedule.h"

#include <algorithm>
#include <cmath>

namespace ssmlab::train {

double learning_rate(const TrainOptions& o, int64_t step, int64_t total_steps, int64_t epoch) {
  const double floor_lr = o.lr * o.min_lr_ratio;
  if (step < o.warmup_steps && o.schedule != "cosine_epoch")
    return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  if (o.schedule == "constant") return o.lr;
  if (o.schedule == "wsd") {
    // Warmup (above), stable at lr, then linear decay over the last D = ceil(fraction x total) steps:
    // lr(s) = floor + (lr - floor) (total - s) / D for s >= total - D, reaching floor at s = total.
    const auto D = std::max<int64_t>(
        1, static_cast<int64_t>(std::ceil(o.wsd_decay_fraction * static_cast<double>(total_steps) - 1e-9)));
    if (step < total_steps - D) return o.lr;
    const double left = static_cast<double>(std::max<int64_t>(0, total_steps - step));
    return floor_lr + (o.lr - floor_lr) * std::min(1.0, left / static_cast<double>(D));
  }
  if (o.schedule == "cosine_epoch") {
    // torch CosineAnnealingLR(T_max = epochs, eta_min = floor) stepped once per epoch (zoology, spec §2.8.2).
    const double t = static_cast<double>(epoch) / static_cast<double>(std::max<int64_t>(1, o.epochs));
    return floor_lr + (o.lr - floor_lr) * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, t)));
  }
  const int64_t span = std::max<int64_t>(1, total_steps - o.warmup_steps);
  const double t = std::min(1.0, static_cast<double>(step - o.warmup_steps) / static_cast<double>(span));
  return floor_lr + (o.lr - floor_lr) * 0.5 * (1.0 + std::cos(M_PI * t));
}

}  // namespace ssmlab::train
