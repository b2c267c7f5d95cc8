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
  // mlp_expand 0: no MLP (the Mamba blocks of SB/TD). mlp_kind "identity": zoology's TransformerBlock with an
  // Identity state mixer (spec §1.8 quirk): the block adds norm2(h) itself to the residual stream.
  // resid_dropout: dropout on the mixer and MLP outputs before they join the residual (training only).
  BlockImpl(mixers::MixerPtr mixer, const std::string& norm, double eps, int64_t d_model, int64_t mlp_expand,
            const std::string& mlp_kind, double resid_dropout = 0.0);
  // (B, L, D) fp32 residual stream. Records "mixer_in" (norm1(x)) and "block_out"; with trace->state_every > 0
  // the mixer runs segment by segment (forward_stateful) and "state" holds the snapshots (core/trace.h).
  at::Tensor forward(const at::Tensor& x, Trace* trace = nullptr);
  at::Tensor step(const at::Tensor& x_t, mixers::State& state);     // (B, D)
  // (B, L, D) continuing from the mixer's `state` (updated): the segment path of long-sequence evaluation.
  // Trace::state_every does not apply here (the caller already owns the segments and the state).
  at::Tensor forward_stateful(const at::Tensor& x, mixers::State& state, Trace* trace = nullptr);

  nn::Norm norm1{nullptr}, norm2{nullptr};
  mixers::MixerPtr mixer;
  nn::Mlp mlp{nullptr};

 private:
  at::Tensor drop(const at::Tensor& x);
  // The residual add, norm2 and MLP after the mixer: x (B, L, D), mixer_out (B, L, D).
  at::Tensor finish(const at::Tensor& x, const at::Tensor& mixer_out, Trace* trace);
  // The mixer over segments of trace.state_every positions, recording the state after each: (B, L, D).
  at::Tensor mixer_with_snapshots(const at::Tensor& xn, Trace& trace);
  bool identity_ = false;
  double resid_dropout_ = 0.0;
};
TORCH_MODULE(Block);

}  // namespace ssmlab::models
