// DeltaNet, Gated DeltaNet and KDA (../shared/spec/mamba3-gdn-spec.md B.2, B.7): one layer with a variant, laid
// out as fla's DeltaNet / GatedDeltaNet / KDA layers (parameter names as theirs):
//   q = silu(conv4(q_proj x)), k, v likewise (depthwise causal short convs; without them silu(proj x))
//   q, k L2-normalised per head (q / sqrt(sum q^2 + 1e-6)), q scaled by K^-1/2;  beta = sigmoid(b_proj x) (x 2
//   with allow_neg_eigval: beta in (0, 2); 1 without use_beta)
//   decay: deltanet none; gated_deltanet g = -exp(A_log) softplus(a_proj x + dt_bias) per value head;
//          kda g = -exp(A_log[h]) softplus(f_proj x + dt_bias) per key channel (f_proj low rank D -> V -> HV K)
//   o = delta_rule(q, k, v, beta, g) (ops/delta_rule), per head RMSNorm(o) o_norm.weight, then
//   x silu(g_proj x) (deltanet with use_gate, gated_deltanet) or x sigmoid(g_proj x) (kda, low-rank g_proj)
//   out = o_proj(o)
// Decode state: "state" (B, HV, K, V) and the conv caches "conv_q", "conv_k" (B, W-1, H K), "conv_v"
// (B, W-1, HV V) (the last W-1 pre-conv inputs). Init as fla: A_log = log U(0, 16) (kda U(1, 16)), dt_bias the
// inverse softplus of exp(U(log 1e-3, log 0.1)) clamped >= 1e-4, norms 1, projections and convs PyTorch's default
// (Kaiming-uniform; models' `init` may redraw them).
#pragma once
#include <string>

#include <torch/nn/modules/linear.h>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/mixer.h"

namespace ssmlab::mixers {

enum class DeltaVariant { deltanet, gated, kda };

struct DeltaNetOptions {
  int64_t n_heads = 4;      // H (query/key heads)
  int64_t n_v_heads = 0;    // HV (value heads), a multiple of H; 0: H
  int64_t head_dim = 0;     // K per head; 0: d_model / n_heads
  double expand_v = 1.0;    // V = K expand_v
  bool use_short_conv = true;
  int64_t conv_size = 4;
  bool conv_bias = false;
  bool use_beta = true;
  bool allow_neg_eigval = false;
  bool use_gate = false;    // output gate (kda always has its sigmoid gate)
  double norm_eps = 1e-5;
  int64_t chunk_size = 64;  // chunk of the chunked algorithm off the CPU

  template <class V>
  void visit(V& v) {
    v("n_heads", n_heads, "query/key heads H", Check::at_least(1));
    v("n_v_heads", n_v_heads, "value heads HV (a multiple of n_heads: grouped value heads); 0 = n_heads",
      Check::at_least(0));
    v("head_dim", head_dim, "key dim K per head; 0 = d_model / n_heads", Check::at_least(0));
    v("expand_v", expand_v, "value dim per head V = head_dim * expand_v", Check::positive());
    v("use_short_conv", use_short_conv, "depthwise causal convolutions on q, k, v (SiLU after)");
    v("conv_size", conv_size, "short conv width W (1-4)", Check::range(1, 4));
    v("conv_bias", conv_bias, "short convs have a bias");
    v("use_beta", use_beta, "beta = sigmoid(b_proj x); false: beta = 1");
    v("allow_neg_eigval", allow_neg_eigval, "beta in (0, 2) (negative eigenvalues of I - beta k k^T)");
    v("use_gate", use_gate, "output gate silu(g_proj x) after the per-head RMSNorm (kda: always, sigmoid)");
    v("norm_eps", norm_eps, "epsilon of the output RMSNorm", Check::positive());
    v("chunk_size", chunk_size, "chunk of the chunked delta rule (results do not depend on it)",
      Check::at_least(1));
  }
};

// fla's GatedDeltaNet defaults: output gate on, V = 2 K.
struct GatedDeltaNetOptions : DeltaNetOptions {
  GatedDeltaNetOptions() {
    use_gate = true;
    expand_v = 2.0;
  }
};

// fla's KDA: the sigmoid output gate is part of the layer.
struct KdaOptions : DeltaNetOptions {
  KdaOptions() { use_gate = true; }
};

class DeltaNetImpl : public MixerImpl {
 public:
  DeltaNetImpl(const DeltaNetOptions& opts, DeltaVariant variant, int64_t d_model, std::string backend,
               at::Generator& gen);

  at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr) override;
  at::Tensor step(const at::Tensor& x_t, State& state) override;
  at::Tensor forward_stateful(const at::Tensor& x, State& state, Trace* trace = nullptr) override;
  bool supports_stateful() const override { return true; }
  State init_state(int64_t batch, c10::Device device) const override;
  int64_t state_size() const override;
  std::string kind() const override;

  DeltaVariant variant() const { return variant_; }
  int64_t n_heads() const { return h_; }
  int64_t n_v_heads() const { return hv_; }
  int64_t head_k() const { return dk_; }
  int64_t head_v() const { return dv_; }

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, b_proj{nullptr}, a_proj{nullptr},
      g_proj{nullptr}, o_proj{nullptr};
  torch::nn::Linear f_proj0{nullptr}, f_proj1{nullptr}, g_proj0{nullptr}, g_proj1{nullptr};  // kda (low rank)
  at::Tensor q_conv_w, k_conv_w, v_conv_w, q_conv_b, k_conv_b, v_conv_b;  // (C, W), (C)
  at::Tensor A_log, dt_bias;  // gated: (HV), (HV); kda: (HV), (HV K)
  at::Tensor o_norm_weight;   // (V)

 private:
  // x (B, L, D); state null: from zeros, nothing kept. decode: one token through the decode ops.
  at::Tensor run(const at::Tensor& x, State* state, Trace* trace, bool decode);

  DeltaNetOptions opts_;
  DeltaVariant variant_;
  int64_t d_model_, h_, hv_, dk_, dv_;
  std::string backend_;
};

}  // namespace ssmlab::mixers
