// Long-sequence evaluation (issue 4, spec §3: loss beyond the training length at 10^5-10^6 tokens): a
// LanguageModel runs over a long input segment by segment, each layer's recurrent state carried across
// segments (LanguageModel::forward_stateful), so working memory is that of one segment whatever L is.
// The segmented result equals the one-shot forward (tests/models/test_long_eval.cpp).
#pragma once
#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "ssmlab/models/language_model.h"

namespace ssmlab::models {

// Called once per segment, in order: `offset` is the segment's first position in the sequence, `logits`
// (B, l, V) its logits on the model's device (valid for the call only; copy what must outlive it).
using SegmentFn = std::function<void(int64_t offset, const at::Tensor& logits)>;

// Runs tokens (B, L) int64 (on any device; each segment is moved to the model's) through `model` `segment`
// tokens at a time under NoGradGuard, in eval mode (the module's mode is restored afterwards). `states`
// continues a sequence and is updated (e.g. to decode after a long prefix with step()); null starts a
// fresh one. Every mixer must support forward_stateful (every recurrent mixer; not attention); the error
// names the one that does not. Memory: one segment's activations and logits (B·segment·V) plus the states, independent of L.
void run_segments(LanguageModelImpl& model, const at::Tensor& tokens, int64_t segment, const SegmentFn& on_segment,
                  std::vector<mixers::State>* states = nullptr);

// Next-token loss at every position of tokens (B, L): (B, L-1) float32 on CPU with
// loss[b, t] = -log softmax(logits[b, t])[tokens[b, t+1]], computed by run_segments (loss vs position).
at::Tensor next_token_losses(LanguageModelImpl& model, const at::Tensor& tokens, int64_t segment);

}  // namespace ssmlab::models
