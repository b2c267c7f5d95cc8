// What RWKV-5 and RWKV-6 share (spec §1.6): the r / k / v / g / output projections (no bias), the bonus u
// (time_faaaa, (H, K)), the per-head GroupNorm of the output (ln_x), the token-shift + matrix-state decode
// state, and the recurrence with its output:
//   o = linear_attention(r, k, v, log w, u);  out = output(GroupNorm_H(o) * g)
// A subclass registers its own parameters, then the shared ones (register_shared, keeping RWKV-LM's parameter
// order), and supplies mix(): the token-shift mixing of x with the previous token into r, k, v, the gate g and
// the log-decay. The init schedule of RWKV-LM (v5 and v6 alike) is init_schedule / init_shared.
#pragma once
#include <torch/nn/modules/linear.h>

#include <string>

#include "ssmlab/mixers/mixer.h"

namespace ssmlab::mixers {

class RwkvHeadsImpl : public MixerImpl {
 public:
  at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr) override;
  at::Tensor step(const at::Tensor& x_t, State& state) override;
  // The chunked recurrence (linear_attention) from the carried matrix state, the token shift from the carried
  // previous token.
  at::Tensor forward_stateful(const at::Tensor& x, State& state, Trace* trace = nullptr) override;
  bool supports_stateful() const override { return true; }
  State init_state(int64_t batch, c10::Device device) const override;
  // The previous token (D) + one K x K matrix per head (H K^2 = D K).
  int64_t state_size() const override { return d_model_ + d_model_ * head_size_; }

  torch::nn::Linear receptance{nullptr}, key{nullptr}, value{nullptr}, gate{nullptr}, output{nullptr};
  at::Tensor time_faaaa;          // (H, K) bonus u
  at::Tensor ln_weight, ln_bias;  // (D) GroupNorm affine

 protected:
  // Checks d_model against head_size (errors name `kind`); registers nothing.
  RwkvHeadsImpl(const std::string& kind, int64_t d_model, int64_t head_size, double norm_eps);

  // Registers time_faaaa, the five projections and ln_x, in that order.
  void register_shared();

  // RWKV-LM's depth schedule: r0 = l / (n - 1), r1 = 1 - l / n (n at least 2), c = 0..D-1 and ddd = c / D
  // (float64), and the decay every channel starts from: -6 + 5 (c / (D - 1))^(0.7 + 1.3 r0), (D).
  struct InitSchedule {
    double r0, r1;
    at::Tensor c, ddd, decay;
  };
  InitSchedule init_schedule(int64_t layer_idx, int64_t n_layers) const;
  // u[c] = r0 (1 - c / (D - 1)) + 0.1 ((c + 1) % 3 - 1), and the projections ~ U(±1/sqrt(D)) from gen.
  void init_shared(const InitSchedule& s, at::Generator& gen);

  // r, k, v (B, L, H, K), the gate g = silu(gate(x_g)) (B, L, D) and the log-decay (B, L, H, K) of x (B, L, D)
  // with prev (B, L, D) the previous tokens.
  struct Mixed {
    at::Tensor r, k, v, g, log_w;
  };
  // `trace` is null on the stateful path when the mixer's decay is time-invariant (RWKV-5).
  virtual Mixed mix(const at::Tensor& x, const at::Tensor& prev, Trace* trace) = 0;
  // Whether mix() records a per-position `decay` (RWKV-6) rather than a time-invariant one (RWKV-5).
  virtual bool decay_per_position() const { return false; }

  int64_t d_model_, head_size_, heads_;
  double norm_eps_;

 private:
  // wkv_state: in/out, or null (zeros, forward). stateful: a forward_stateful call, which records only the
  // per-position names and `state` (a time-invariant `decay` is forward()'s alone, mixer.h).
  at::Tensor run(const at::Tensor& x, const at::Tensor& prev, at::Tensor* wkv_state, Trace* trace,
                 bool stateful = false);
};

}  // namespace ssmlab::mixers
