// Tasks (data) yield examples as int64 token tensors grouped in segments; each has its metric.
// Layer rule: tasks use core only, never models (docs/ARCHITECTURE.md).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ssmlab::tasks {

inline constexpr int64_t kIgnoreIndex = -100;  // targets that do not count (CrossEntropy ignore_index)

// A block of same-length examples: batches never mix segments (zoology's loader).
struct Segment {
  std::string name;    // e.g. "L1024_K64": used as the metric key suffix
  at::Tensor inputs;   // (M, L) int64 tokens
  at::Tensor targets;  // (M, L) int64; kIgnoreIndex where nothing is predicted
  int64_t seq_len = 0;
  int64_t num_kv_pairs = 0;  // task-specific slice key (MQAR); 0 when not applicable
};

// A batch: rows [begin, end) of one segment.
struct Batch {
  at::Tensor inputs;     // (B, L) int64
  at::Tensor targets;    // (B, L) int64
  at::Tensor loss_mask;  // (B, L) bool: targets != kIgnoreIndex
  int64_t segment = 0;
};

Batch slice_batch(const Segment& seg, int64_t segment_index, int64_t begin, int64_t end);

// Number of batches of `batch_size` (last one partial) over all segments, in order.
int64_t count_batches(const std::vector<Segment>& segments, int64_t batch_size);

// The i-th batch of an epoch (segments in order, contiguous slices, no shuffling).
Batch batch_at(const std::vector<Segment>& segments, int64_t batch_size, int64_t index);

// Per-example accuracy (spec §2.8.1): for each row, the mean over positions whose target is not
// kIgnoreIndex of [argmax(logits) == target]. logits (M, L, V), targets (M, L) -> (M) float64.
// Rows without any counted position get NaN.
at::Tensor per_example_accuracy(const at::Tensor& logits, const at::Tensor& targets);

}  // namespace ssmlab::tasks
