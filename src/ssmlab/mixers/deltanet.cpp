#include "ssmlab/mixers/deltanet.h"

#include <cmath>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"
#include "ssmlab/ops/delta_rule/delta_rule.h"

namespace ssmlab::mixers {

namespace {
const char* delta_kind(DeltaVariant v) {
  switch (v) {
    case DeltaVariant::deltanet: return "deltanet";
    case DeltaVariant::gated: return "gated_deltanet";
    case DeltaVariant::kda: return "kda";
  }
  return "?";
}
}  // namespace

DeltaNetImpl::DeltaNetImpl(const DeltaNetOptions& opts, DeltaVariant variant, int64_t d_model, std::string backend,
                           at::Generator& gen)
    : opts_(opts), variant_(variant), d_model_(d_model), backend_(std::move(backend)) {
  const char* name = delta_kind(variant);
  h_ = opts.n_heads;
  hv_ = opts.n_v_heads > 0 ? opts.n_v_heads : h_;
  SSMLAB_CHECK(hv_ % h_ == 0, name, ": n_v_heads (", hv_, ") must be a multiple of n_heads (", h_, ")");
  if (opts.head_dim > 0) {
    dk_ = opts.head_dim;
  } else {
    SSMLAB_CHECK(d_model % h_ == 0, name, ": d_model (", d_model, ") must be divisible by n_heads (", h_,
                 ") when head_dim is 0");
    dk_ = d_model / h_;
  }
  const double dvd = static_cast<double>(dk_) * opts.expand_v;
  dv_ = static_cast<int64_t>(std::llround(dvd));
  SSMLAB_CHECK(dv_ >= 1 && std::abs(dvd - static_cast<double>(dv_)) < 1e-9, name, ": head_dim * expand_v (", dk_,
               " * ", opts.expand_v, ") must be a positive integer");
  SSMLAB_CHECK(opts.conv_size >= 1 && opts.conv_size <= 4, name, ": conv_size must be in 1..4; got ",
               opts.conv_size);
  const int64_t D = d_model, key_dim = h_ * dk_, value_dim = hv_ * dv_, W = opts.conv_size;
  auto linear = [&](torch::nn::Module& parent, const char* n, int64_t in, int64_t out, bool bias = false) {
    return parent.register_module(n, torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias)));
  };
  // Names as fla's layers (q_proj, k_proj, v_proj, a_proj, b_proj, A_log, dt_bias, {q,k,v}_conv1d, g_proj,
  // o_norm, o_proj; KDA's low-rank f_proj.{0,1} and g_proj.{0,1}).
  q_proj = linear(*this, "q_proj", D, key_dim);
  k_proj = linear(*this, "k_proj", D, key_dim);
  v_proj = linear(*this, "v_proj", D, value_dim);
  if (variant == DeltaVariant::gated) {
    a_proj = linear(*this, "a_proj", D, hv_);
    A_log = register_parameter("A_log", at::empty({hv_}));
    dt_bias = register_parameter("dt_bias", at::empty({hv_}));
  } else if (variant == DeltaVariant::kda) {
    auto f = register_module("f_proj", std::make_shared<torch::nn::Module>());
    f_proj0 = linear(*f, "0", D, dv_);
    f_proj1 = linear(*f, "1", dv_, hv_ * dk_);
    A_log = register_parameter("A_log", at::empty({hv_}));
    dt_bias = register_parameter("dt_bias", at::empty({hv_ * dk_}));
  }
  if (opts.use_beta) b_proj = linear(*this, "b_proj", D, hv_);
  if (opts.use_short_conv) {
    auto conv = [&](const char* n, int64_t c, at::Tensor& w, at::Tensor& b) {
      auto m = register_module(n, std::make_shared<torch::nn::Module>());
      w = m->register_parameter("weight", at::empty({c, W}));
      if (opts.conv_bias) b = m->register_parameter("bias", at::empty({c}));
    };
    conv("q_conv1d", key_dim, q_conv_w, q_conv_b);
    conv("k_conv1d", key_dim, k_conv_w, k_conv_b);
    conv("v_conv1d", value_dim, v_conv_w, v_conv_b);
  }
  if (variant == DeltaVariant::kda) {
    auto g = register_module("g_proj", std::make_shared<torch::nn::Module>());
    g_proj0 = linear(*g, "0", D, dv_);
    g_proj1 = linear(*g, "1", dv_, value_dim, /*bias=*/true);
  } else if (opts.use_gate) {
    g_proj = linear(*this, "g_proj", D, value_dim);
  }
  o_norm_weight = register_module("o_norm", std::make_shared<torch::nn::Module>())
                      ->register_parameter("weight", at::ones({dv_}));
  o_proj = linear(*this, "o_proj", value_dim, D);

  at::NoGradGuard no_grad;
  auto default_init = [&](const at::Tensor& w, const at::Tensor& b, int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    w.uniform_(-bound, bound, gen);
    if (b.defined()) b.uniform_(-bound, bound, gen);
  };
  for (auto* lin : {&q_proj, &k_proj, &v_proj, &a_proj, &b_proj, &f_proj0, &f_proj1, &g_proj, &g_proj0, &g_proj1,
                    &o_proj})
    if (*lin) default_init((*lin)->weight, (*lin)->bias, (*lin)->weight.size(1));
  for (auto [w, b] : {std::pair{q_conv_w, q_conv_b}, std::pair{k_conv_w, k_conv_b}, std::pair{v_conv_w, v_conv_b}})
    if (w.defined()) default_init(w, b, W);  // depthwise: fan_in = W
  if (A_log.defined()) {
    // fla: A = U(0, 16) (gated; a zero draw is clamped to 1e-4 so log A is finite), U(1, 16) (kda).
    const double lo = variant == DeltaVariant::kda ? 1.0 : 0.0;
    A_log.copy_(at::log(at::clamp_min(at::empty({hv_}, at::kDouble).uniform_(lo, 16.0, gen), 1e-4)));
    // dt = exp(U(log 1e-3, log 1e-1)) clamped >= 1e-4; dt_bias = softplus^-1(dt) = dt + log(-expm1(-dt)).
    const at::Tensor u = at::empty({dt_bias.numel()}, at::kDouble).uniform_(0.0, 1.0, gen);
    at::Tensor dt = at::exp(u * (std::log(0.1) - std::log(1e-3)) + std::log(1e-3));
    dt = at::clamp_min(dt, 1e-4);
    dt_bias.copy_(dt + at::log(-at::expm1(-dt)));
  }
}

std::string DeltaNetImpl::kind() const { return delta_kind(variant_); }

int64_t DeltaNetImpl::state_size() const {
  const int64_t conv = opts_.use_short_conv ? (opts_.conv_size - 1) * (2 * h_ * dk_ + hv_ * dv_) : 0;
  return hv_ * dk_ * dv_ + conv;
}

State DeltaNetImpl::init_state(int64_t batch, c10::Device device) const {
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  State s;
  s["state"] = at::zeros({batch, hv_, dk_, dv_}, f32);  // (B, HV, K, V)
  if (opts_.use_short_conv) {
    const int64_t w1 = opts_.conv_size - 1;
    s["conv_q"] = at::zeros({batch, w1, h_ * dk_}, f32);
    s["conv_k"] = at::zeros({batch, w1, h_ * dk_}, f32);
    s["conv_v"] = at::zeros({batch, w1, hv_ * dv_}, f32);
  }
  return s;
}

at::Tensor DeltaNetImpl::run(const at::Tensor& x, State* state, Trace* trace, bool decode) {
  const int64_t B = x.size(0), L = x.size(1);
  const auto ft = x.scalar_type();
  const auto st = state_dtype(ft);
  // Projection -> short conv (+ SiLU) with the conv cache carried in `state`, or SiLU alone.
  auto conv = [&](const at::Tensor& p, const at::Tensor& w, const at::Tensor& b, const char* cache) {
    if (!opts_.use_short_conv) return at::silu(p);
    const std::optional<at::Tensor> bias = b.defined() ? std::optional(b) : std::nullopt;
    if (!state) return ops::causal_conv1d(p, w, bias, /*silu=*/true, std::nullopt, backend_).out;
    at::Tensor& c = (*state)[cache];
    if (decode) {
      at::Tensor cs = c.to(ft);
      at::Tensor out = ops::causal_conv1d_update(p.select(1, 0), cs, w, bias, /*silu=*/true, backend_).unsqueeze(1);
      c = cs;
      return out;
    }
    auto r = ops::causal_conv1d(p, w, bias, /*silu=*/true, c.to(ft), backend_);
    c = r.final_state;
    return r.out;
  };
  at::Tensor q = conv(q_proj(x), q_conv_w, q_conv_b, "conv_q").view({B, L, h_, dk_});
  at::Tensor k = conv(k_proj(x), k_conv_w, k_conv_b, "conv_k").view({B, L, h_, dk_});
  const at::Tensor v = conv(v_proj(x), v_conv_w, v_conv_b, "conv_v").view({B, L, hv_, dv_});
  // L2 norm per head in the state dtype (eps on the sum, as fla), q scaled by K^-1/2.
  auto l2 = [&](const at::Tensor& t) {
    const at::Tensor tf = t.to(st);
    return (tf * at::rsqrt(tf.pow(2).sum(-1, /*keepdim=*/true) + 1e-6)).to(ft);
  };
  q = l2(q) * (1.0 / std::sqrt(static_cast<double>(dk_)));
  k = l2(k);
  at::Tensor beta = b_proj ? at::sigmoid(b_proj(x).to(st)) : at::ones({B, L, hv_}, x.options().dtype(st));
  if (opts_.allow_neg_eigval) beta = beta * 2.0;
  std::optional<at::Tensor> g;  // log decay
  if (variant_ == DeltaVariant::gated) {
    g = -at::exp(A_log.to(st)) * at::softplus(a_proj(x).to(st) + dt_bias.to(st));                   // (B, L, HV)
  } else if (variant_ == DeltaVariant::kda) {
    const at::Tensor f = f_proj1(f_proj0(x)).to(st).view({B, L, hv_, dk_});
    g = -at::exp(A_log.to(st)).view({hv_, 1}) * at::softplus(f + dt_bias.to(st).view({hv_, dk_}));  // (B, L, HV, K)
  }
  if (trace) {
    trace_record(trace, "decay", g ? at::exp(*g) : at::ones({B, L, hv_}, x.options().dtype(st)));
    trace_record(trace, "B", k);
    trace_record(trace, "C", q);
    trace_record(trace, "beta", beta);
  }
  at::Tensor o;  // (B, L, HV, V)
  if (decode) {
    at::Tensor& S = (*state)["state"];
    at::Tensor s = S.to(st);
    std::optional<at::Tensor> gt;
    if (g) gt = g->select(1, 0);
    o = ops::delta_rule_update(q.select(1, 0), k.select(1, 0), v.select(1, 0), beta.select(1, 0), s, gt).unsqueeze(1);
    S = s;
  } else {
    ops::DeltaRuleOptions dro;
    dro.g = g;
    dro.chunk_size = opts_.chunk_size;
    if (state) dro.initial_state = (*state)["state"].to(st);
    auto r = ops::delta_rule(q, k, v, beta.to(ft), dro, backend_);
    o = r.o;
    if (state) (*state)["state"] = r.final_state;
    trace_record(trace, "state", r.final_state);
  }
  // Per-head RMSNorm (norm before gate), then the output gate.
  const at::Tensor of = o.to(st);
  at::Tensor y = (of * at::rsqrt(of.pow(2).mean(-1, /*keepdim=*/true) + opts_.norm_eps)).to(ft) * o_norm_weight;
  y = y.reshape({B, L, hv_ * dv_});
  if (variant_ == DeltaVariant::kda)
    y = y * at::sigmoid(g_proj1(g_proj0(x)));
  else if (g_proj)
    y = y * at::silu(g_proj(x));
  const at::Tensor out = o_proj(y);
  trace_record(trace, "mixer_out", out);
  return out;
}

at::Tensor DeltaNetImpl::forward(const at::Tensor& x, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, kind(), ": input must be (B, L, D) with D = ", d_model_,
               "; got ", shape_str(x.sizes()));
  return run(x, nullptr, trace, /*decode=*/false);
}

namespace {
void check_delta_state(const State& s, const std::string& name, int64_t batch, bool conv) {
  std::vector<std::string> keys = {"state"};
  if (conv) keys.insert(keys.end(), {"conv_q", "conv_k", "conv_v"});
  for (const auto& k : keys)
    SSMLAB_CHECK(s.tensors.count(k) && s.tensors.at(k).defined() && s.tensors.at(k).size(0) == batch, name,
                 ": state lacks '", k, "' for batch ", batch, "; make it with init_state");
}
}  // namespace

at::Tensor DeltaNetImpl::forward_stateful(const at::Tensor& x, State& state, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, kind(), ".forward_stateful: input must be (B, L, D) with D = ",
               d_model_, "; got ", shape_str(x.sizes()));
  check_delta_state(state, kind() + ".forward_stateful", x.size(0), opts_.use_short_conv);
  return run(x, &state, trace, /*decode=*/false);
}

at::Tensor DeltaNetImpl::step(const at::Tensor& x_t, State& state) {
  SSMLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == d_model_, kind(), ".step: input must be (B, D) with D = ", d_model_,
               "; got ", shape_str(x_t.sizes()));
  check_delta_state(state, kind() + ".step", x_t.size(0), opts_.use_short_conv);
  return run(x_t.unsqueeze(1), &state, nullptr, /*decode=*/true).squeeze(1);
}

}  // namespace ssmlab::mixers
