#include "ssmlab/models/block.h"

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"

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

at::Tensor BlockImpl::finish(const at::Tensor& x, const at::Tensor& mixer_out, Trace* trace) {
  at::Tensor h = x + drop(mixer_out).to(x.scalar_type());  // (B, L, D)
  if (identity_) h = h + norm2(h).to(x.scalar_type());  // zoology: LN2(residual) is added to the residual again
  if (mlp) h = h + drop(mlp(norm2(h))).to(x.scalar_type());
  trace_record(trace, "block_out", h);
  return h;
}

at::Tensor BlockImpl::mixer_with_snapshots(const at::Tensor& xn, Trace& trace) {
  const int64_t K = trace.state_every, b = xn.size(0), L = xn.size(1);
  SSMLAB_CHECK(mixer->supports_stateful(), "Trace.state_every = ", K,
               " needs a mixer with forward_stateful (supports_stateful(): mamba1, mamba2 and every other "
               "recurrent mixer; not attention); mixer '", mixer->kind(),
               "' has none");
  // Each segment continues the state of the previous one from the state forward() starts from (zeros in the
  // state dtype), so the output is forward()'s; only one segment's per-channel intermediates are held at once.
  mixers::State state = mixer->init_state(b, xn.device());
  const auto st = state_dtype(xn.scalar_type());
  for (auto& [name, t] : state.tensors)
    if (at::isFloatingType(t.scalar_type())) t = t.to(st);
  std::vector<Trace> segments;
  std::vector<int64_t> lengths;
  std::vector<at::Tensor> outs, snapshots;
  for (int64_t t0 = 0; t0 < L; t0 += K) {
    const int64_t len = std::min(K, L - t0);
    segments.push_back(trace.segment({"state"}));
    lengths.push_back(len);
    outs.push_back(mixer->forward_stateful(xn.narrow(1, t0, len), state, &segments.back()));  // (B, len, D)
    snapshots.push_back(segments.back().get("state", trace.layer));                           // (B, ...)
  }
  if (outs.empty()) return mixer->forward(xn, &trace);
  trace.merge_segments(segments, lengths);
  trace.record("state", trace.layer, at::stack(snapshots, 1));  // (B, S, ...state dims)
  return outs.size() == 1 ? outs[0] : at::cat(outs, 1);         // (B, L, D)
}

at::Tensor BlockImpl::forward(const at::Tensor& x, Trace* trace) {
  SSMLAB_CHECK(trace == nullptr || trace->state_every >= 0, "Trace.state_every must be >= 0 (0 = off); got ",
               trace ? trace->state_every : 0);
  const at::Tensor xn = norm1(x);  // (B, L, D)
  trace_record(trace, "mixer_in", xn);
  if (trace != nullptr && trace->state_every > 0) return finish(x, mixer_with_snapshots(xn, *trace), trace);
  return finish(x, mixer->forward(xn, trace), trace);
}

at::Tensor BlockImpl::forward_stateful(const at::Tensor& x, mixers::State& state, Trace* trace) {
  const at::Tensor xn = norm1(x);  // (B, L, D)
  trace_record(trace, "mixer_in", xn);
  return finish(x, mixer->forward_stateful(xn, state, trace), trace);
}

at::Tensor BlockImpl::step(const at::Tensor& x_t, mixers::State& state) {
  at::Tensor h = x_t + mixer->step(norm1(x_t), state).to(x_t.scalar_type());  // (B, D)
  if (identity_) h = h + norm2(h).to(x_t.scalar_type());
  if (mlp) h = h + mlp(norm2(h)).to(x_t.scalar_type());
  return h;
}

}  // namespace ssmlab::models
