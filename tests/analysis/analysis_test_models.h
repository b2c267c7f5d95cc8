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

// A stack of simplified S6 layers on 1-D tokens (spec §4.1, the token-dynamics paper's setting), input (B, L, 1):
// in each layer, with B_j = s_B x_j, C_l = s_C x_l, mu = s_C s_B (the 1 x 1 input-output matrix), the step
// Δ_j = softplus(x_j) and the decay a > 0,
//   y_l = C_l Σ_{j<=l} exp(-a Σ_{k=j+1..l} Δ_k) Δ_j B_j x_j = mu x_l Σ_{j<=l} exp(-a Σ_{k=j+1..l} Δ_k) Δ_j x_j^2,
//   x_l <- x_l + step · y_l                         (the residual update: one Euler step of the depth ODE)
// so d(x_l^2) has the sign of mu: the tokens shrink to 0 for mu < 0 and grow for mu > 0. Records mixer_out
// (step · y) and block_out per layer, as a Block does. float64.
class SimplifiedS6Stack : public models::ModelImpl {
 public:
  SimplifiedS6Stack(double mu, int64_t layers, double step, double a)
      : mu_(mu), layers_(layers), step_(step), a_(a) {}
  at::Tensor embed(const at::Tensor& x) override { return x.to(at::kDouble); }
  at::Tensor features(const at::Tensor& h, Trace* trace = nullptr) override {
    at::Tensor x = h;  // (B, L, 1)
    for (int64_t l = 0; l < layers_; ++l) {
      if (trace) trace->layer = l;
      const at::Tensor dt = at::softplus(x);  // (B, L, 1)
      at::Tensor state = at::zeros_like(x.select(1, 0));
      std::vector<at::Tensor> ys;
      for (int64_t t = 0; t < x.size(1); ++t) {
        const at::Tensor xt = x.select(1, t), dtt = dt.select(1, t);
        state = at::exp(-a_ * dtt) * state + dtt * xt * xt;  // B_t x_t = s_B x_t^2 (s_B folded into mu)
        ys.push_back(mu_ * xt * state);
      }
      const at::Tensor update = step_ * at::stack(ys, 1);
      x = x + update;
      if (trace) {
        trace_record(trace, "mixer_out", update);
        trace_record(trace, "block_out", x);
      }
    }
    return x;
  }
  at::Tensor head(const at::Tensor& f) override { return f; }
  std::string kind() const override { return "simplified_s6_stack"; }

 private:
  double mu_;
  int64_t layers_;
  double step_, a_;
};

}  // namespace ssmlab::test
