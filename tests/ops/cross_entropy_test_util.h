// What the cross_entropy tests share (tests/ops/test_cross_entropy.cpp on CPU, test_cross_entropy_cuda.cpp on a
// GPU): a path under test, running it for loss, lse and d/dlogits, and the float64 oracle on the same values.
#pragma once
#include <functional>
#include <string>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include "ssmlab/ops/cross_entropy/cross_entropy.h"

namespace ssmlab::test {

using CePath = std::function<ops::CrossEntropyOut(const at::Tensor&, const at::Tensor&)>;

struct CeNamedPath {
  std::string name;
  CePath run;
};

struct CeResult {
  at::Tensor loss, lse, dx;  // on the CPU
};

// loss, lse and the gradient of sum(gloss * loss + glse * lse) w.r.t. a leaf copy of x (on x's device); results
// brought to the CPU.
inline CeResult ce_run(const CePath& path, const at::Tensor& x, const at::Tensor& targets, const at::Tensor& gloss,
                       const at::Tensor& glse) {
  const at::Tensor leaf = x.detach().clone().requires_grad_(true);
  const auto out = path(leaf, targets);
  const at::Tensor obj =
      (out.loss * gloss.to(out.loss.options())).sum() + (out.lse * glse.to(out.lse.options())).sum();
  obj.backward();
  return {out.loss.detach().cpu(), out.lse.detach().cpu(), leaf.grad().cpu()};
}

// The oracle on the CPU, on a float64 copy of the same (rounded) logits, so a tolerance budgets only the path's
// error.
inline CeResult ce_oracle(const at::Tensor& x, const at::Tensor& targets, const at::Tensor& gloss,
                          const at::Tensor& glse, int64_t ignore_index = ops::kCrossEntropyIgnoreIndex) {
  return ce_run([ignore_index](const at::Tensor& a, const at::Tensor& t) {
                  return ops::cross_entropy_reference(a, t, ignore_index);
                },
                x.cpu().to(at::kDouble), targets.cpu(), gloss.cpu().to(at::kDouble), glse.cpu().to(at::kDouble));
}

}  // namespace ssmlab::test
