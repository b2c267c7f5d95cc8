// S4D: the diagonal LTI SSM baseline of the theory (spec §1.5; Gu et al. 2022, "On the Parameterization and
// Initialization of Diagonal State Space Models", the standalone S4D layer): per channel of D
//   y = K * u + D_skip u (FFT convolution, K from the diagonal SSM, ZOH or bilinear) -> GELU -> Linear D -> 2D -> GLU.
// The recurrent step runs the same SSM mode by mode.
#pragma once
#include <string>

#include <torch/nn/modules/linear.h>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/diag_ssm.h"
#include "ssmlab/mixers/mixer.h"

namespace ssmlab::mixers {

struct S4dOptions {
  int64_t d_state = 64;
  std::string discretization = "zoh";
  double dt_min = 1e-3;
  double dt_max = 0.1;
  int64_t l_max = 0;

  template <class V>
  void visit(V& v) {
    v("d_state", d_state, "state size N per channel (N/2 complex modes; even)", Check::at_least(2));
    v("discretization", discretization, "zoh (S4D default) or bilinear", Check::one_of({"zoh", "bilinear"}));
    v("dt_min", dt_min, "smallest initial dt (log-uniform)", Check::positive());
    v("dt_max", dt_max, "largest initial dt (log-uniform)", Check::positive());
    v("l_max", l_max, "kernel length cap (taps); 0 = the sequence length", Check::at_least(0));
  }
};

class S4dImpl : public MixerImpl {
 public:
  S4dImpl(const S4dOptions& opts, int64_t d_model, at::Generator& gen);

  at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr) override;
  at::Tensor step(const at::Tensor& x_t, State& state) override;
  // The segment form of step(): FFT convolution of the segment plus the carried modes' contribution
  // (DiagSsmImpl::scan_segment), not a time loop.
  at::Tensor forward_stateful(const at::Tensor& x, State& state, Trace* trace = nullptr) override;
  bool supports_stateful() const override { return true; }
  State init_state(int64_t batch, c10::Device device) const override;
  // D N (the modes as real pairs) + D l_max (the input window of a truncated kernel).
  int64_t state_size() const override { return d_model_ * (opts_.d_state + opts_.l_max); }
  std::string kind() const override { return "s4d"; }

  std::shared_ptr<DiagSsmImpl> ssm;
  at::Tensor D;  // (D) skip
  torch::nn::Linear output_linear{nullptr};

 private:
  at::Tensor finish(const at::Tensor& y);  // GELU -> Linear -> GLU

  S4dOptions opts_;
  int64_t d_model_;
};

}  // namespace ssmlab::mixers
