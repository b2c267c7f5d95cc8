// RWKV-4 time mixer as used in SB's attack models (spec §1.6; SB zoology/mixers/rwkv.py, rwkv/v4):
//   xx = x_{t-1} (0 at t = 0);  x_k = x mu_k + xx (1 - mu_k), likewise x_v, x_r
//   k, v, r = key(x_k), value(x_v), receptance(x_r)   (no bias)
//   out = output(sigmoid(r) * wkv(w = -exp(time_decay), u = time_first, k, v))   (ops/wkv)
// The paper's init quirks: the init reads n_layer = 12 whatever the model depth (spec §6.5).
#pragma once
#include <string>

#include <torch/nn/modules/linear.h>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/mixer.h"

namespace ssmlab::mixers {

struct Rwkv4Options {
  int64_t init_n_layers = 12;

  template <class V>
  void visit(V& v) {
    v("init_n_layers", init_n_layers,
      "n_layer the init formulas use (SB never passes it, so 12 even for 3-layer models, spec §6.5); 0 = the "
      "model's depth",
      Check::at_least(0));
  }
};

class Rwkv4Impl : public MixerImpl {
 public:
  // layer_idx and n_layers place the layer in the init formulas (spec §1.6).
  Rwkv4Impl(const Rwkv4Options& opts, int64_t d_model, int64_t layer_idx, int64_t n_layers, std::string backend,
            at::Generator& gen);

  at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr) override;
  at::Tensor step(const at::Tensor& x_t, State& state) override;
  // The WKV op from the carried (aa, bb, pp), the token shift from the carried previous token.
  at::Tensor forward_stateful(const at::Tensor& x, State& state, Trace* trace = nullptr) override;
  bool supports_stateful() const override { return true; }
  State init_state(int64_t batch, c10::Device device) const override;
  // The previous token (D) + the WKV state (aa, bb, pp) (3 D).
  int64_t state_size() const override { return 4 * d_model_; }
  std::string kind() const override { return "rwkv4"; }

  torch::nn::Linear key{nullptr}, value{nullptr}, receptance{nullptr}, output{nullptr};
  at::Tensor time_decay, time_first, time_mix_k, time_mix_v, time_mix_r;  // (D) each

 private:
  // x (B, L, D), xx the shifted x; state in/out optional. stateful: a forward_stateful call, which does not
  // record the time-invariant `decay` (its records are per position besides `state`, mixer.h).
  at::Tensor run(const at::Tensor& x, const at::Tensor& xx, at::Tensor* wkv_state, Trace* trace,
                 bool stateful = false);

  int64_t d_model_;
  std::string backend_;
};

}  // namespace ssmlab::mixers
