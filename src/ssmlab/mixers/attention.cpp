#include "ssmlab/mixers/attention.h"

#include <cmath>

#include <ATen/ATen.h>

#include "ssmlab/core/error.h"

namespace ssmlab::mixers {

AttentionImpl::AttentionImpl(const AttentionOptions& opts, int64_t d_model, at::Generator& gen)
    : opts_(opts), d_model_(d_model) {
  SSMLAB_CHECK(opts.n_heads >= 1 && d_model % opts.n_heads == 0, "attention: d_model (", d_model,
               ") must be divisible by n_heads (", opts.n_heads, ")");
  head_dim_ = d_model / opts.n_heads;
  SSMLAB_CHECK(!opts.rope || head_dim_ % 2 == 0, "attention: RoPE needs an even head dim; got d_model ", d_model,
               " / n_heads ", opts.n_heads, " = ", head_dim_);
  Wqkv = register_module("Wqkv", torch::nn::Linear(torch::nn::LinearOptions(d_model, 3 * d_model).bias(opts.bias)));
  out_proj = register_module("out_proj", torch::nn::Linear(torch::nn::LinearOptions(d_model, d_model).bias(opts.bias)));
  // nn.Linear defaults U(+-1/sqrt(fan_in)), drawn from `gen`; the model's init may re-draw (zoology: N(0, 0.02)).
  at::NoGradGuard no_grad;
  const double bound = 1.0 / std::sqrt(static_cast<double>(d_model));
  for (auto* lin : {&Wqkv, &out_proj}) {
    (*lin)->weight.uniform_(-bound, bound, gen);
    if ((*lin)->bias.defined()) (*lin)->bias.uniform_(-bound, bound, gen);
  }
}

at::Tensor AttentionImpl::rotate(const at::Tensor& t, int64_t offset) const {
  // GPT-NeoX-style rotary embedding: pairs (i, i + P/2) rotated by angle pos * base^(-2i/P).
  const int64_t T = t.size(2), half = head_dim_ / 2;
  const auto opts = t.options();
  const at::Tensor inv_freq = at::pow(opts_.rope_base, -at::arange(0, half, opts) * (2.0 / head_dim_));  // (P/2)
  const at::Tensor pos = at::arange(offset, offset + T, opts);                                        // (T)
  const at::Tensor ang = pos.unsqueeze(1) * inv_freq.unsqueeze(0);                                    // (T, P/2)
  const at::Tensor cos = at::cos(ang), sin = at::sin(ang);
  const at::Tensor a = t.narrow(-1, 0, half), b = t.narrow(-1, half, half);  // (B, H, T, P/2) each
  return at::cat({a * cos - b * sin, a * sin + b * cos}, -1);                // (B, H, T, P)
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> AttentionImpl::project(const at::Tensor& x, int64_t offset) {
  const int64_t B = x.size(0), T = x.size(1), H = opts_.n_heads, P = head_dim_;
  const at::Tensor qkv = Wqkv(x).view({B, T, 3, H, P}).permute({2, 0, 3, 1, 4});  // (3, B, H, T, P)
  at::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  if (opts_.rope) {
    q = rotate(q, offset);
    k = rotate(k, offset);
  }
  return {q, k, v};
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "attention: input must be (B, L, D) with D = ", d_model_,
               "; got ", shape_str(x.sizes()));
  const int64_t B = x.size(0), L = x.size(1);
  auto [q, k, v] = project(x, 0);  // (B, H, L, P) each
  const double p = is_training() ? opts_.dropout : 0.0;
  const at::Tensor y = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/std::nullopt, /*dropout_p=*/p,
                                                        /*is_causal=*/true);  // (B, H, L, P)
  if (trace != nullptr && trace->wants("attn")) {
    const at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim_));
    const at::Tensor mask = at::ones({L, L}, x.options().dtype(at::kBool)).triu(1);
    trace_record(trace, "attn", at::softmax(scores.masked_fill(mask, -INFINITY), -1));  // (B, H, L, L)
  }
  const at::Tensor out = out_proj(y.transpose(1, 2).reshape({B, L, d_model_}));  // (B, L, D)
  trace_record(trace, "mixer_out", out);
  return out;
}

State AttentionImpl::init_state(int64_t batch, c10::Device device) const {
  State s;
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  s["k"] = at::zeros({batch, opts_.n_heads, 0, head_dim_}, f32);  // (B, H, T, P), T grows per step
  s["v"] = at::zeros({batch, opts_.n_heads, 0, head_dim_}, f32);
  return s;
}

at::Tensor AttentionImpl::step(const at::Tensor& x_t, State& state) {
  SSMLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == d_model_, "attention.step: input must be (B, D) with D = ", d_model_,
               "; got ", shape_str(x_t.sizes()));
  at::Tensor& kc = state["k"];
  at::Tensor& vc = state["v"];
  SSMLAB_CHECK(kc.defined() && kc.dim() == 4 && kc.size(0) == x_t.size(0),
               "attention.step: state k must be (B, H, T, P) with B = ", x_t.size(0), "; got ",
               kc.defined() ? shape_str(kc.sizes()) : std::string("none"));
  auto [q, k, v] = project(x_t.unsqueeze(1), kc.size(2));  // (B, H, 1, P)
  kc = at::cat({kc.to(k.scalar_type()), k}, 2);             // (B, H, T+1, P)
  vc = at::cat({vc.to(v.scalar_type()), v}, 2);
  const at::Tensor y = at::scaled_dot_product_attention(q, kc, vc);  // (B, H, 1, P): every cached position
  return out_proj(y.transpose(1, 2).reshape({x_t.size(0), d_model_}));  // (B, D)
}

}  // namespace ssmlab::mixers
