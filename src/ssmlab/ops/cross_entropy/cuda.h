// CUDA kernels of cross_entropy (cuda.cu; README.md beside this file): forward and backward, one thread block per
// row; no autograd here (cross_entropy.cpp wraps them). Internal to ops/cross_entropy. forward/backward are
// defined only where the CUDA kernels are linked (SSMLAB_WITH_CUDA); the poison switch always is.
//
// logits (M, V) on a CUDA device with contiguous rows (stride(1) == 1, any row stride), float32 / float64 /
// bfloat16 / float16; targets (M) int64 on the same device. The compute dtype T is float32 (float64 for float64
// logits); loss, lse and the output gradients are T. A target outside [0, V) that is not ignore_index gives a NaN
// loss (and NaN gradient row), as the blocked ATen path does: checking it would synchronise the device.
#pragma once
#include <cstdint>

#include <ATen/core/Tensor.h>

#include "ssmlab/ops/cross_entropy/cross_entropy.h"

namespace ssmlab::ops::cross_entropy_cuda {

// Tests: outputs are allocated filled with NaN instead of uninitialised, so an element a kernel misses shows.
void set_poison_outputs(bool on);
at::Tensor out_empty(at::IntArrayRef sizes, const at::TensorOptions& o);  // at::empty, NaN while poisoned

#ifdef SSMLAB_WITH_CUDA
// Whether the kernels take these tensors (CUDA, the dtypes above, rows contiguous, targets int64 on the device).
bool supports(const at::Tensor& logits, const at::Tensor& targets);

// Per row one pass over the logits: a running (max, sum of exp(x - max)) per thread, merged over the block.
// loss = log s - (x[t] - m) (m the row max, 0 for an all -inf row), lse = m + log s.
CrossEntropyOut forward(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index);

// dlogits (M, V) contiguous, in the logits' dtype: exp(x - lse) * (gl + glse) - [v == t] * gl, gl = gloss
// (0 for an ignored row, NaN for an out-of-range target); gloss, glse (M) T, either undefined = zero.
at::Tensor backward(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index, const at::Tensor& lse,
                    const at::Tensor& gloss, const at::Tensor& glse);
#endif

}  // namespace ssmlab::ops::cross_entropy_cuda
