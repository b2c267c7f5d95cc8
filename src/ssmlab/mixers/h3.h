// H3 (spec §1.4; Fu et al. 2023, SB zoology/mixers/h3/h3.py): q, k, v = Linear(u) (D -> D, bias);
//   k' = shift SSM (causal FIR with taps C_shift (D, N), kernel length min(N, L)) + D_shift k
//   kv[h, i, j] = k'[h d_h + i] v[h d_h + j]                        (per head outer product, d_h x d_h)
//   s  = S4D kernel of head h (bilinear, FFT conv, length min(L, l_max)) * kv + D_diag[h] kv
//   y[h d_h + j] = sum_i q[h d_h + i] s[h, i, j];  out = output_linear(y) (D -> D, bias).
// The recurrent step keeps the last N-1 k values, the diagonal SSM's modes and, when l_max caps the kernel,
// the last l_max kv products (so the step reproduces the truncated kernel exactly).
#pragma once
#include <string>

#include <torch/nn/modules/linear.h>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/diag_ssm.h"
#include "ssmlab/mixers/mixer.h"

namespace ssmlab::mixers {

struct H3Options {
  int64_t d_state = 64;
  int64_t head_dim = 1;
  int64_t l_max = 0;
  double dt_min = 1e-3;
  double dt_max = 0.1;

  template <class V>
  void visit(V& v) {
    v("d_state", d_state, "N: shift-SSM taps and diagonal-SSM state (N/2 complex modes; even)", Check::at_least(2));
    v("head_dim", head_dim, "d_h; H = d_model / d_h heads", Check::at_least(1));
    v("l_max", l_max,
      "diagonal kernel length cap (taps); 0 = the sequence length (SB MQAR: 256 with L = 1024, spec §6.7)",
      Check::at_least(0));
    v("dt_min", dt_min, "smallest initial dt (log-uniform, per head)", Check::positive());
    v("dt_max", dt_max, "largest initial dt (log-uniform, per head)", Check::positive());
  }
};

class H3Impl : public MixerImpl {
 public:
  H3Impl(const H3Options& opts, int64_t d_model, at::Generator& gen);

  at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr) override;
  at::Tensor step(const at::Tensor& x_t, State& state) override;
  // The segment form of step(): the shift FIR over the carried N-1 keys and the segment, then the diagonal SSM
  // as an FFT convolution plus the carried modes' contribution (DiagSsmImpl::scan_segment), not a time loop.
  at::Tensor forward_stateful(const at::Tensor& x, State& state, Trace* trace = nullptr) override;
  bool supports_stateful() const override { return true; }
  State init_state(int64_t batch, c10::Device device) const override;
  // D (N - 1) shift taps + H d_h^2 N diagonal modes (real pairs) + l_max H d_h^2 window of kv.
  int64_t state_size() const override;
  std::string kind() const override { return "h3"; }

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, output_linear{nullptr};
  at::Tensor shift_C;  // (D, N) FIR taps of the shift SSM
  at::Tensor shift_D;  // (D)
  std::shared_ptr<DiagSsmImpl> ssm;  // H channels
  at::Tensor D;        // (H) skip of the diagonal SSM

 private:
  // q (B, L, H, d_h), kv (B, L, H, d_h, d_h), s the same -> y (B, L, D) -> output_linear.
  at::Tensor finish(const at::Tensor& q, const at::Tensor& s, int64_t B, int64_t L);

  H3Options opts_;
  int64_t d_model_, heads_;
};

}  // namespace ssmlab::mixers
