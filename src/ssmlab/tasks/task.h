// Tasks are plug-ins like mixers (tasks/registry.cpp lists them): a Task owns its splits and segments,
// the kind of input (token ids, or feature vectors per position), the targets, its metrics (per-example
// accuracy per segment, loss, perplexity) and the head a model needs for it (TaskShape).
// Layer rule: tasks use core only, never models (docs/ARCHITECTURE.md).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ssmlab::tasks {

inline constexpr int64_t kIgnoreIndex = -100;  // targets that do not count (CrossEntropy ignore_index)

enum class InputKind {
  tokens,    // (M, L) int64 ids in [0, vocab_size)
  features,  // (M, L, C) floating feature vectors (e.g. pixels)
};

enum class TargetKind {
  per_position,  // (M, L) int64, kIgnoreIndex where nothing is predicted; the model emits (B, L, V)
  per_sequence,  // (M) int64 class labels; the model emits (B, classes), read at the class token (last)
};

// What a task asks of a model: its input and its head.
struct TaskShape {
  InputKind input = InputKind::tokens;
  int64_t vocab_size = 0;   // tokens: ids in [0, vocab_size)
  int64_t in_channels = 0;  // features: C values per position
  TargetKind target = TargetKind::per_position;
  int64_t num_outputs = 0;  // per_position: vocabulary of the (tied) LM head; per_sequence: classes
};

// A block of same-length examples: batches never mix segments (zoology's loader). Its name is the
// metric key suffix ("test_acc/<name>"), so a task puts its slice keys there (MQAR: "L1024_K64").
struct Segment {
  std::string name;
  at::Tensor inputs;   // (M, L) int64 tokens or (M, L, C) floating features
  at::Tensor targets;  // (M, L) int64 (per_position) or (M) int64 (per_sequence)
  int64_t seq_len = 0;
  // Truncated BPTT (spec §3.5): the trainer cuts each example into this many consecutive pieces of
  // seq_len / bptt_segments positions and runs them in order, carrying each layer's state, detached between
  // pieces (train/trainer.h batch_gradients). 1: one plain forward. Evaluation always runs the whole example.
  int64_t bptt_segments = 1;
};

// A batch: rows [begin, end) of one segment.
struct Batch {
  at::Tensor inputs;     // (B, L) int64 or (B, L, C)
  at::Tensor targets;    // (B, L) or (B) int64
  at::Tensor loss_mask;  // same shape as targets, bool: targets != kIgnoreIndex
  int64_t segment = 0;
};

struct Splits {
  std::vector<Segment> train, test;
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

// Classification: logits (M, classes), labels (M) -> (M) float64 of [argmax == label].
at::Tensor classification_accuracy(const at::Tensor& logits, const at::Tensor& labels);

// Mean cross-entropy over the counted targets, float32 (ops::cross_entropy: the logits are read in their own
// dtype, never copied to float32): per_position logits (B, L, V) with targets (B, L) (kIgnoreIndex skipped), or
// per_sequence logits (B, classes) with labels (B). NaN when no target counts (as at::cross_entropy_loss).
at::Tensor mean_cross_entropy(const at::Tensor& logits, const at::Tensor& targets);

class Task {
 public:
  virtual ~Task() = default;
  virtual std::string name() const = 0;
  virtual TaskShape shape() const = 0;
  // Train and test segments, deterministic given the task's options.
  virtual Splits make_splits() const = 0;
  // The test segments alone (analyses, eval); the default builds both splits.
  virtual std::vector<Segment> make_test() const { return make_splits().test; }
  // Training / evaluation loss: mean cross-entropy over counted targets (mean_cross_entropy).
  virtual at::Tensor loss(const at::Tensor& outputs, const at::Tensor& targets) const;
  // How many targets loss() averages over (weights of a running mean across batches).
  virtual int64_t loss_count(const at::Tensor& targets) const;
  // (B) float64 per-example accuracy; NaN for rows without a counted target.
  virtual at::Tensor accuracy(const at::Tensor& outputs, const at::Tensor& targets) const;
  // Whether eval records carry test_ppl = exp(test_loss) (language modelling tasks).
  virtual bool reports_perplexity() const { return false; }
};

using TaskPtr = std::shared_ptr<const Task>;

}  // namespace ssmlab::tasks
