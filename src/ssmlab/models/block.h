// Residual block: x + mixer(norm(x)) [+ mlp(norm2(.))]. This is the pre-norm form; it equals mamba_ssm's
// "add -> norm -> mixer" Block (spec §1.1), which carries the residual separately, with an fp32 residual.
// It lives in models/ (not nn/) because it holds a Mixer.
#pragma once
#include <string>

#include "ssmlab/mixers/mixer.h"
#include "ssmlab/nn/mlp.h"
#include "ssmlab/nn/norm.h"

namespace ssmlab::models {

class BlockImpl : public torch::nn::Module {
 public:
  // mlp_expand 0: no MLP (the Mamba blocks of SB/TD).
  BlockImpl(mixers::MixerPtr mixer, const std::string& norm, double eps, int64_t d_model, int64_t mlp_expand,
            const std::string& mlp_kind);
  at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr);  // (B, L, D) fp32 residual stream
  at::Tensor step(const at::Tensor& x_t, mixers::State& state);     // (B, D)

  nn::Norm norm1{nullptr}, norm2{nullptr};
  mixers::MixerPtr mixer;
  nn::Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

}  // namespace ssmlab::models
