#include "ssmlab/models/block.h"

#include <ATen/ATen.h>

namespace ssmlab::models {

BlockImpl::BlockImpl(mixers::MixerPtr mixer_, const std::string& norm, double eps, int64_t d_model,
                     int64_t mlp_expand, const std::string& mlp_kind, double resid_dropout)
    : identity_(mlp_kind == "identity"), resid_dropout_(resid_dropout) {
  norm1 = register_module("norm", nn::Norm(norm, d_model, eps));
  mixer = register_module("mixer", std::move(mixer_));
  if (identity_) {
    norm2 = register_module("norm2", nn::Norm(norm, d_model, eps));
  } else if (mlp_expand > 0) {
    norm2 = register_module("norm2", nn::Norm(norm, d_model, eps));
    mlp = register_module("mlp", nn::Mlp(mlp_kind, d_model, mlp_expand));
  }
}

at::Tensor BlockImpl::drop(const at::Tensor& x) {
  return resid_dropout_ > 0 ? at::dropout(x, resid_dropout_, is_training()) : x;
}

at::Tensor BlockImpl::forward(const at::Tensor& x, Trace* trace) {
  at::Tensor h = x + drop(mixer->forward(norm1(x), trace)).to(x.scalar_type());  // (B, L, D)
  if (identity_) h = h + norm2(h).to(x.scalar_type());  // zoology: LN2(residual) is added to the residual again
  if (mlp) h = h + drop(mlp(norm2(h))).to(x.scalar_type());
  trace_record(trace, "block_out", h);
  return h;
}

at::Tensor BlockImpl::forward_stateful(const at::Tensor& x, mixers::State& state, Trace* trace) {
  at::Tensor h = x + drop(mixer->forward_stateful(norm1(x), state, trace)).to(x.scalar_type());  // (B, L, D)
  if (identity_) h = h + norm2(h).to(x.scalar_type());
  if (mlp) h = h + drop(mlp(norm2(h))).to(x.scalar_type());
  trace_record(trace, "block_out", h);
  return h;
}

at::Tensor BlockImpl::step(const at::Tensor& x_t, mixers::State& state) {
  at::Tensor h = x_t + mixer->step(norm1(x_t), state).to(x_t.scalar_type());  // (B, D)
  if (identity_) h = h + norm2(h).to(x_t.scalar_type());
  if (mlp) h = h + mlp(norm2(h)).to(x_t.scalar_type());
  return h;
}

}  // namespace ssmlab::models
