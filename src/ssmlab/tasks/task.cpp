// Batching over segments and the per-example accuracy metric (spec §2.8.1, zoology's loader and
// metrics: batches are contiguous slices that never mix segments, no shuffling across epochs).
#include "ssmlab/tasks/task.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "ssmlab/core/error.h"
#include "ssmlab/ops/cross_entropy/cross_entropy.h"

namespace ssmlab::tasks {

Batch slice_batch(const Segment& seg, int64_t segment_index, int64_t begin, int64_t end) {
  const bool shapes_ok = seg.inputs.defined() && seg.targets.defined() && seg.inputs.dim() >= 2 &&
                         seg.inputs.dim() <= 3 && seg.targets.dim() >= 1 && seg.targets.dim() <= 2 &&
                         seg.inputs.size(0) == seg.targets.size(0) &&
                         (seg.targets.dim() == 1 || seg.inputs.size(1) == seg.targets.size(1));
  SSMLAB_CHECK(shapes_ok, "slice_batch: segment '", seg.name,
               "' needs inputs (M, L) or (M, L, C) and targets (M, L) or (M); got inputs ",
               seg.inputs.defined() ? shape_str(seg.inputs.sizes()) : "undefined", " and targets ",
               seg.targets.defined() ? shape_str(seg.targets.sizes()) : "undefined");
  const int64_t M = seg.inputs.size(0);
  SSMLAB_CHECK(begin >= 0 && begin < end && end <= M, "slice_batch: segment '", seg.name,
               "' needs rows 0 <= begin < end <= ", M, "; got [", begin, ", ", end, ")");
  Batch b;
  b.inputs = seg.inputs.slice(/*dim=*/0, begin, end);    // (B, L) or (B, L, C)
  b.targets = seg.targets.slice(/*dim=*/0, begin, end);  // (B, L) or (B)
  b.loss_mask = b.targets.ne(kIgnoreIndex);              // bool, the targets' shape
  b.segment = segment_index;
  return b;
}

int64_t count_batches(const std::vector<Segment>& segments, int64_t batch_size) {
  SSMLAB_CHECK(batch_size >= 1, "count_batches: batch_size must be >= 1; got ", batch_size);
  int64_t n = 0;
  for (const auto& seg : segments) {
    const int64_t M = seg.inputs.defined() ? seg.inputs.size(0) : 0;
    n += (M + batch_size - 1) / batch_size;  // last batch of each segment may be partial
  }
  return n;
}

Batch batch_at(const std::vector<Segment>& segments, int64_t batch_size, int64_t index) {
  SSMLAB_CHECK(batch_size >= 1, "batch_at: batch_size must be >= 1; got ", batch_size);
  SSMLAB_CHECK(index >= 0, "batch_at: index must be >= 0; got ", index);
  int64_t rest = index;
  for (size_t s = 0; s < segments.size(); ++s) {
    const int64_t M = segments[s].inputs.defined() ? segments[s].inputs.size(0) : 0;
    const int64_t nb = (M + batch_size - 1) / batch_size;
    if (rest < nb) {
      const int64_t begin = rest * batch_size;
      return slice_batch(segments[s], static_cast<int64_t>(s), begin, std::min(begin + batch_size, M));
    }
    rest -= nb;
  }
  fail("batch_at: index ", index, " is past the last batch; ", segments.size(), " segments hold ",
       count_batches(segments, batch_size), " batches of ", batch_size);
}

at::Tensor per_example_accuracy(const at::Tensor& logits, const at::Tensor& targets) {
  SSMLAB_CHECK(logits.defined() && targets.defined(), "per_example_accuracy: logits and targets must be defined");
  SSMLAB_CHECK(logits.dim() == 3 && targets.dim() == 2 && logits.size(0) == targets.size(0) &&
                   logits.size(1) == targets.size(1),
               "per_example_accuracy: expected logits (M, L, V) and targets (M, L); got logits ",
               shape_str(logits.sizes()), " and targets ", shape_str(targets.sizes()));
  SSMLAB_CHECK(at::isFloatingType(logits.scalar_type()), "per_example_accuracy: logits must be floating point; got ",
               logits.scalar_type());
  SSMLAB_CHECK(!at::isFloatingType(targets.scalar_type()) && targets.scalar_type() != at::kBool,
               "per_example_accuracy: targets must be integer token ids; got ", targets.scalar_type());
  SSMLAB_CHECK(logits.size(2) >= 1 || logits.size(0) * logits.size(1) == 0,
               "per_example_accuracy: logits need V >= 1 classes; got ", shape_str(logits.sizes()));
  const at::Tensor tgt = targets.to(logits.device(), at::kLong);  // (M, L)
  const at::Tensor mask = tgt.ne(kIgnoreIndex);                   // (M, L) bool
  const at::Tensor pred = logits.argmax(/*dim=*/-1);              // (M, L) int64
  const at::Tensor hits = pred.eq(tgt).logical_and(mask);         // (M, L) bool
  // 0 / 0 = NaN for rows without a counted position, as documented in task.h.
  return hits.sum(/*dim=*/1).to(at::kDouble) / mask.sum(/*dim=*/1).to(at::kDouble);  // (M) float64
}

at::Tensor classification_accuracy(const at::Tensor& logits, const at::Tensor& labels) {
  SSMLAB_CHECK(logits.defined() && labels.defined() && logits.dim() == 2 && labels.dim() == 1 &&
                   logits.size(0) == labels.size(0),
               "classification_accuracy: expected logits (M, classes) and labels (M); got logits ",
               logits.defined() ? shape_str(logits.sizes()) : "undefined", " and labels ",
               labels.defined() ? shape_str(labels.sizes()) : "undefined");
  const at::Tensor lab = labels.to(logits.device(), at::kLong);               // (M)
  return logits.argmax(/*dim=*/-1).eq(lab).to(at::kDouble);                 // (M) float64
}

at::Tensor mean_cross_entropy(const at::Tensor& logits, const at::Tensor& targets) {
  SSMLAB_CHECK(logits.defined() && targets.defined() && logits.dim() == targets.dim() + 1,
               "mean_cross_entropy: expected logits (..., V) with targets (...); got logits ",
               logits.defined() ? shape_str(logits.sizes()) : "undefined", " and targets ",
               targets.defined() ? shape_str(targets.sizes()) : "undefined");
  // ops::cross_entropy reads the logits in their own dtype (no float32 copy of (M, V)); the mean over counted
  // rows is at::cross_entropy_loss's (Mean, ignore_index): NaN when no row counts. float32 as before.
  const at::Tensor tg = targets.reshape({-1}).to(logits.device(), at::kLong);
  const at::Tensor loss = ops::cross_entropy(logits.reshape({-1, logits.size(-1)}), tg, kIgnoreIndex).loss;
  return (loss.sum() / tg.ne(kIgnoreIndex).sum()).to(at::kFloat);
}

at::Tensor Task::loss(const at::Tensor& outputs, const at::Tensor& targets) const {
  return mean_cross_entropy(outputs, targets);
}

int64_t Task::loss_count(const at::Tensor& targets) const { return targets.ne(kIgnoreIndex).sum().item<int64_t>(); }

at::Tensor Task::accuracy(const at::Tensor& outputs, const at::Tensor& targets) const {
  if (shape().target == TargetKind::per_sequence) return classification_accuracy(outputs, targets);
  return per_example_accuracy(outputs, targets);
}

}  // namespace ssmlab::tasks
