// Constructed models with known answers for the analysis tests. They implement the Model interface only (no
// mixer), which is all an analysis may see.
#pragma once
#include <ATen/ATen.h>

#include "ssmlab/models/model.h"

namespace ssmlab::test {

// Input (B, L, 1) features; embed is the identity (float64); features(h)_t = Σ_{s<=t} a^(t-s) h_s, the scalar
// linear recurrence h_t = a h_{t-1} + x_t, so ∂y_t/∂x_s = a^(t-s) exactly and ln|∂y_t/∂x_s| = (t-s) ln a.
class ScalarRecurrenceModel : public models::ModelImpl {
 public:
  explicit ScalarRecurrenceModel(double a) : a_(a) {}
  at::Tensor embed(const at::Tensor& x) override { return x.to(at::kDouble); }
  at::Tensor features(const at::Tensor& h, Trace* trace = nullptr) override {
    std::vector<at::Tensor> ys;
    at::Tensor state = at::zeros_like(h.select(1, 0));  // (B, 1)
    for (int64_t t = 0; t < h.size(1); ++t) {
      state = a_ * state + h.select(1, t);
      ys.push_back(state);
    }
    at::Tensor y = at::stack(ys, 1);  // (B, L, 1)
    if (trace) {
      trace_record(trace, "mixer_out", y);
      trace_record(trace, "block_out", y);
    }
    return y;
  }
  at::Tensor head(const at::Tensor& f) override { return f; }
  std::string kind() const override { return "scalar_recurrence"; }

 private:
  double a_;
};

}  // namespace ssmlab::test
