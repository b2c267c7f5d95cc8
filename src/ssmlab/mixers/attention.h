// Causal multi-head softmax attention, the baseline of the seed papers (spec §1.7, SB zoology/mixers/attention.py):
//   qkv = Wqkv(x) (D -> 3D, bias); per head softmax(q k^T / sqrt(P) + causal mask) v; out_proj (D -> D, bias).
// Attention dropout only in training. Learned absolute positions are the model's (ModelOptions::
// max_position_embeddings, added to the token embeddings as zoology does); RoPE is an option of the mixer.
// Decoding keeps a KV cache: state "k", "v" (B, H, T, P) grow by one position per step.
#pragma once
#include <string>

#include <torch/nn/modules/linear.h>

#include "ssmlab/core/fields.h"
#include "ssmlab/mixers/mixer.h"

namespace ssmlab::mixers {

struct AttentionOptions {
  int64_t n_heads = 1;
  double dropout = 0.0;  // attention-probability dropout, training only (the papers: 0.1)
  bool bias = true;      // Wqkv and out_proj biases
  bool rope = false;     // rotary position embedding on q and k (not in the seed papers)
  double rope_base = 10000.0;

  template <class V>
  void visit(V& v) {
    v("n_heads", n_heads, "number of heads H (d_model % H == 0)", Check::at_least(1));
    v("dropout", dropout, "dropout on the attention probabilities, training only", Check::range(0.0, 0.999));
    v("bias", bias, "Wqkv and out_proj have biases (zoology: true)");
    v("rope", rope, "rotary position embedding on q and k (head dim must be even)");
    v("rope_base", rope_base, "RoPE frequency base", Check::positive());
  }
};

class AttentionImpl : public MixerImpl {
 public:
  AttentionImpl(const AttentionOptions& opts, int64_t d_model, at::Generator& gen);

  at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr) override;
  at::Tensor step(const at::Tensor& x_t, State& state) override;
  State init_state(int64_t batch, c10::Device device) const override;
  // Per cached position: k and v, 2 D numbers (the cache grows with the sequence).
  int64_t state_size() const override { return 2 * d_model_; }
  bool state_per_token() const override { return true; }
  std::string kind() const override { return "attention"; }

  torch::nn::Linear Wqkv{nullptr}, out_proj{nullptr};

 private:
  // q, k (B, H, T, P) rotated for positions offset .. offset + T - 1.
  at::Tensor rotate(const at::Tensor& t, int64_t offset) const;
  // (B, T, D) -> q, k, v (B, H, T, P), RoPE applied from position `offset`.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> project(const at::Tensor& x, int64_t offset);

  AttentionOptions opts_;
  int64_t d_model_, head_dim_;
};

}  // namespace ssmlab::mixers
