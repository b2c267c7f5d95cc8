// Gradients of a float64 scalar loss by autograd against central finite differences (step kFiniteDiffStep,
// tolerance kFiniteDiff), on the first, middle and last element of each input. Shared by the op tests whose
// inputs are plain tensors (the loss reads them through the pointers, so a perturbed copy can be put in place).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "ssmlab/core/error.h"
#include "tolerances.h"

namespace ssmlab::test {

// `loss` computes the scalar from the tensors behind `inputs`; names[i] labels inputs[i] in failures. The inputs
// are left as detached copies of their values.
inline void expect_grads_match_finite_differences(const std::function<at::Tensor()>& loss,
                                                  const std::vector<at::Tensor*>& inputs,
                                                  const std::vector<std::string>& names) {
  ASSERT_EQ(inputs.size(), names.size());
  std::vector<at::Tensor> leaves;
  for (at::Tensor* t : inputs) {
    *t = t->clone().requires_grad_();
    leaves.push_back(*t);
  }
  const auto grads = torch::autograd::grad({loss()}, leaves);
  at::NoGradGuard ng;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const at::Tensor base = inputs[i]->detach().clone();
    const int64_t n = base.numel();
    for (int64_t j : {int64_t{0}, n / 2, n - 1}) {
      auto at_value = [&](double delta) {
        at::Tensor v = base.clone();
        v.view(-1)[j] += delta;
        *inputs[i] = v;
        return loss().item<double>();
      };
      const double h = kFiniteDiffStep;
      const double numeric = (at_value(h) - at_value(-h)) / (2 * h);
      *inputs[i] = base;
      EXPECT_TRUE(all_close(grads[i].reshape(-1)[j], at::scalar_tensor(numeric, at::kDouble), kFiniteDiff,
                            str(names[i], " element ", j)));
    }
  }
}

}  // namespace ssmlab::test
