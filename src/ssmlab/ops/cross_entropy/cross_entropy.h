// Token cross-entropy over a vocabulary without an (M, V) float32 copy of the logits (README.md beside this
// file). Shapes:
//   logits : (M, V), any float dtype (float32, float64, bfloat16, float16), read in its own dtype
//   targets: (M) int64; a row whose target is ignore_index counts for nothing (loss 0, no loss gradient)
//   loss   : (M), loss[r] = lse[r] - logits[r, targets[r]] (0 for an ignored row)
//   lse    : (M), lse[r] = log sum_v exp(logits[r, v]) (every row, ignored ones included)
// loss and lse are float32 (float64 for float64 logits). Both are differentiable w.r.t. logits:
//   dlogits[r, v] = softmax[r, v] * (gloss[r] + glse[r]) - [v == targets[r]] * gloss[r]   (gloss[r] = 0 if ignored)
// returned in the logits' dtype. The backward needs only the logits, the targets and lse (saved, (M)).
#pragma once
#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

namespace ssmlab::ops {

inline constexpr int64_t kCrossEntropyIgnoreIndex = -100;

struct CrossEntropyOut {
  at::Tensor loss;  // (M), float32 (float64 for float64 logits); 0 where the row is ignored
  at::Tensor lse;   // (M), same dtype: the log-sum-exp of each row
};

// backend "auto": the fused kernels on CPU and (CUDA builds) CUDA, the row-blocked ATen path on any other device;
// "reference": the float64 oracle. A target outside [0, V) that is not ignore_index is an ssmlab::Error
// naming the row on CPU; on other devices the row's loss is NaN instead (checking there would synchronise the
// device every step and break CUDA graph capture).
CrossEntropyOut cross_entropy(const at::Tensor& logits, const at::Tensor& targets,
                              int64_t ignore_index = kCrossEntropyIgnoreIndex, const std::string& backend = "auto");

// The oracle: log_softmax in float64 and a gather, differentiable by autograd, any device; results cast to the
// output dtype above. Expects checked inputs.
CrossEntropyOut cross_entropy_reference(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index);

// The fused kernels, CPU (cpu.cpp) and CUDA (cuda.cu) (autograd Function in cross_entropy.cpp): per row a max pass and a sum-exp
// pass in float32 (float64 for float64 logits) over the logits in their own dtype; the backward writes the
// gradient row by row in the logits' dtype. Throws unless cross_entropy_fused_supports(...). Expects checked
// inputs.
CrossEntropyOut cross_entropy_fused(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index);
// True for CPU logits of dtype float32/float64/bfloat16/float16 and CPU targets.
bool cross_entropy_cpu_supports(const at::Tensor& logits, const at::Tensor& targets);
// What cross_entropy_fused takes: the CPU case above, or (CUDA builds) the same dtypes on one CUDA device with
// contiguous rows (the CUDA kernels, cuda.h: one block per row, no float32 copy).
bool cross_entropy_fused_supports(const at::Tensor& logits, const at::Tensor& targets);

// Plain ATen on any device (what "auto" runs where no fused kernel does): row blocks of `block_rows` rows (0: as many as fit
// kCrossEntropyBlockElements elements) are widened to the compute dtype one at a time, for logsumexp and the
// gather forward and softmax - onehot backward, so the extra memory is one block, never (M, V). An autograd
// Function that saves lse. Expects checked inputs.
CrossEntropyOut cross_entropy_blocked(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index,
                                      int64_t block_rows = 0);
inline constexpr int64_t kCrossEntropyBlockElements = int64_t{1} << 26;  // 256 MB of float32 per block
// The row count cross_entropy_blocked uses for a (M, V) input when block_rows is 0.
int64_t cross_entropy_block_rows(int64_t m, int64_t v);

// Shapes, dtypes and devices only (the Meta kernel runs it too): logits (M, V) floating point with V >= 1,
// targets (M) int64 on the logits' device.
void check_cross_entropy_inputs(const at::Tensor& logits, const at::Tensor& targets);
// The targets' values (CPU tensors only: reads them): each is ignore_index or in [0, V); throws naming the
// first bad row otherwise.
void check_cross_entropy_targets(const at::Tensor& targets, int64_t vocab, int64_t ignore_index);

}  // namespace ssmlab::ops
