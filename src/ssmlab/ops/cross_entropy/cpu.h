// Fused CPU kernels of cross_entropy (README.md beside this file): forward and backward; no autograd here
// (cross_entropy.cpp wraps them). Internal to ops/cross_entropy.
//
// logits (M, V) CPU, contiguous, float32 / float64 / bfloat16 / float16; targets (M) int64 CPU contiguous,
// already checked (each is ignore_index or in [0, V)). The compute dtype T is float32 (float64 for float64
// logits); loss, lse and the output gradients are T. Rows are spread over ATen's intra-op threads; each row's
// max and sum-exp use independent lanes (vectorised, no reassociation flags) summed as a tree.
#pragma once
#include <cstdint>

#include <ATen/core/Tensor.h>

#include "ssmlab/ops/cross_entropy/cross_entropy.h"

namespace ssmlab::ops::cross_entropy_cpu {

// Tests: outputs are allocated filled with NaN instead of uninitialised, so an element a kernel misses shows.
void set_poison_outputs(bool on);

// loss (M) T, 0 for ignored rows; lse (M) T.
CrossEntropyOut forward(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index);

// dlogits (M, V) in the logits' dtype, from lse (forward's, (M) T) and the output gradients gloss, glse
// ((M) T, contiguous; either may be undefined = zero).
at::Tensor backward(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index, const at::Tensor& lse,
                    const at::Tensor& gloss, const at::Tensor& glse);

}  // namespace ssmlab::ops::cross_entropy_cpu
