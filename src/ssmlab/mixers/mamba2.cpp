#include "ssmlab/mixers/mamba2.h"

#include <cmath>
#include <numeric>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"

namespace ssmlab::mixers {

Mamba2Impl::Mamba2Impl(const Mamba2Options& opts, int64_t d_model, std::string backend, at::Generator& gen)
    : opts_(opts), d_model_(d_model), backend_(std::move(backend)) {
  d_inner_ = opts.expand * d_model;
  SSMLAB_CHECK(d_inner_ % opts.head_dim == 0, "mamba2: inner width E = expand * d_model = ", d_inner_,
               " must be a multiple of head_dim (", opts.head_dim, ")");
  n_heads_ = d_inner_ / opts.head_dim;
  SSMLAB_CHECK(n_heads_ % opts.n_groups == 0, "mamba2: heads H = ", n_heads_, " must be a multiple of n_groups (",
               opts.n_groups, ")");
  SSMLAB_CHECK(opts.dt_min <= opts.dt_max, "mamba2: dt_min (", opts.dt_min, ") must be <= dt_max (", opts.dt_max, ")");
  SSMLAB_CHECK(opts.norm_groups == "groups" || opts.norm_groups == "whole",
               "mamba2: norm_groups must be groups or whole; got '", opts.norm_groups, "'");
  SSMLAB_CHECK(opts.A_init_min <= opts.A_init_max, "mamba2: A_init_min (", opts.A_init_min,
               ") must be <= A_init_max (", opts.A_init_max, ")");
  SSMLAB_CHECK(opts.dt_limit_max == 0.0 || opts.dt_limit_min <= opts.dt_limit_max, "mamba2: dt_limit_min (",
               opts.dt_limit_min, ") must be <= dt_limit_max (", opts.dt_limit_max, ")");
  const auto& iv = opts.interventions;
  SSMLAB_CHECK(iv.state_norm_form == "min" || iv.state_norm_form == "seed",
               "mamba2: interventions.state_norm_form must be min or seed; got '", iv.state_norm_form, "'");
  SSMLAB_CHECK(iv.window % iv.segment == 0, "mamba2: interventions.window (", iv.window,
               ") must be a multiple of interventions.segment (", iv.segment, ")");
  const int64_t E = d_inner_, H = n_heads_, N = opts.d_state, G = opts.n_groups, W = opts.d_conv;
  conv_dim_ = E + 2 * G * N;
  // Names follow mamba_ssm's Mamba2 (in_proj, conv1d.{weight,bias}, dt_bias, A_log, D, norm.weight, out_proj).
  in_proj = register_module(
      "in_proj", torch::nn::Linear(torch::nn::LinearOptions(d_model, 2 * E + 2 * G * N + H).bias(opts.bias)));
  auto conv1d = register_module("conv1d", std::make_shared<torch::nn::Module>());
  conv_weight = conv1d->register_parameter("weight", at::empty({conv_dim_, W}));
  if (opts.conv_bias) conv_bias = conv1d->register_parameter("bias", at::empty({conv_dim_}));
  dt_bias = register_parameter("dt_bias", at::empty({H}));
  A_log = register_parameter("A_log", at::empty({H}));
  D = register_parameter("D", at::ones({H}));
  auto norm = register_module("norm", std::make_shared<torch::nn::Module>());
  norm_weight = norm->register_parameter("weight", at::ones({E}));
  out_proj = register_module("out_proj", torch::nn::Linear(torch::nn::LinearOptions(E, d_model).bias(opts.bias)));

  // mamba_ssm Mamba2 init (spec §1.3); nn.Linear / nn.Conv1d defaults U(+-1/sqrt(fan_in)).
  at::NoGradGuard no_grad;
  auto default_init = [&](const at::Tensor& w, const at::Tensor& b, int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    w.uniform_(-bound, bound, gen);
    if (b.defined()) b.uniform_(-bound, bound, gen);
  };
  default_init(in_proj->weight, in_proj->bias, d_model);
  default_init(conv_weight, conv_bias, W);  // depthwise: fan_in = W
  // dt ~ exp(U(log dt_min, log dt_max)) clamped >= floor; dt_bias = softplus^-1(dt) = dt + log(-expm1(-dt)).
  at::Tensor u = at::empty({H}, at::kDouble).uniform_(0.0, 1.0, gen);
  at::Tensor dt = at::exp(u * (std::log(opts.dt_max) - std::log(opts.dt_min)) + std::log(opts.dt_min));
  dt = at::clamp_min(dt, opts.dt_init_floor);
  dt_bias.copy_(dt + at::log(-at::expm1(-dt)));
  // A ~ U(A_init_min, A_init_max), A_log = log A.
  A_log.copy_(at::log(at::empty({H}, at::kDouble).uniform_(opts.A_init_min, opts.A_init_max, gen)));
  default_init(out_proj->weight, out_proj->bias, E);
}

int64_t Mamba2Impl::state_size() const {
  return n_heads_ * opts_.head_dim * opts_.d_state + conv_dim_ * (opts_.d_conv - 1);
}

State Mamba2Impl::init_state(int64_t batch, c10::Device device) const {
  State s;
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  const int64_t H = n_heads_, P = opts_.head_dim, N = opts_.d_state;
  s["conv"] = at::zeros({batch, opts_.d_conv - 1, conv_dim_}, f32);  // (B, W-1, E + 2GN)
  s["ssm"] = at::zeros({batch, H, P, N}, f32);                       // (B, H, P, N)
  // Position bookkeeping only where interventions act on absolute positions (not counted in state_size()).
  if (segmented()) s["pos"] = at::zeros({batch}, at::TensorOptions().dtype(at::kLong));
  if (opts_.interventions.window > 0) {
    s["snap_old"] = at::zeros({batch, H, P, N}, f32);
    s["snap_new"] = at::zeros({batch, H, P, N}, f32);
    s["logdecay_old"] = at::zeros({batch, H}, f32);  // Σ a since snap_old was taken
    s["logdecay_new"] = at::zeros({batch, H}, f32);
  }
  return s;
}

Mitigations Mamba2Impl::mitigations() const {
  const auto& iv = opts_.interventions;
  Mitigations m;
  m.decay_mult = iv.decay_mult;
  m.b_mult = iv.b_mult;
  m.state_norm_tau = thresholds(c10::Device(c10::kCPU), at::kDouble);
  m.state_norm_form = iv.state_norm_form;
  m.window = iv.window;
  return m;
}

void Mamba2Impl::set_mitigations(const Mitigations& m) {
  if (!(m.decay_mult > 0.0)) fail_config("mamba2 mitigations: RRI decay_mult must be > 0; got ", m.decay_mult);
  if (m.state_norm_form != "min" && m.state_norm_form != "seed")
    fail_config("mamba2 mitigations: state_norm_form must be min or seed; got '", m.state_norm_form, "'");
  if (m.window < 0) fail_config("mamba2 mitigations: window must be >= 0 tokens; got ", m.window);
  if (m.state_norm_tau.defined()) {
    if (m.state_norm_tau.dim() != 1 || m.state_norm_tau.size(0) != n_heads_)
      fail_config("mamba2 mitigations: state_norm_tau must be one threshold per head (", n_heads_, "); got ",
                  shape_str(m.state_norm_tau.sizes()));
    if (!(m.state_norm_tau.to(at::kDouble).min().item<double>() > 0.0))
      fail_config("mamba2 mitigations: state_norm_tau must be > 0 for every head");
  }
  auto& iv = opts_.interventions;
  iv.decay_mult = m.decay_mult;
  iv.b_mult = m.b_mult;
  iv.state_norm_tau = 0.0;  // the per-head tensor says it all
  state_norm_tau = m.state_norm_tau.defined() ? m.state_norm_tau.detach().clone() : at::Tensor();
  iv.state_norm_form = m.state_norm_form;
  iv.window = m.window;
  if (iv.window > 0 && iv.window % iv.segment != 0) iv.segment = std::gcd(iv.window, iv.segment);
}

ops::SsdScanOptions Mamba2Impl::scan_options() const {
  ops::SsdScanOptions o;
  o.D = D;
  o.dt_bias = dt_bias;
  o.dt_softplus = true;
  o.dt_min = opts_.dt_limit_min;
  if (opts_.dt_limit_max > 0.0) o.dt_max = opts_.dt_limit_max;
  o.chunk_size = opts_.chunk_size;
  const auto& iv = opts_.interventions;
  auto per_head = [&](double v) { return at::full({n_heads_}, v, D.options()); };
  if (iv.dt_mult != 1.0) o.dt_mult = per_head(iv.dt_mult);
  if (iv.decay_mult != 1.0) o.decay_mult = per_head(iv.decay_mult);
  if (iv.b_mult != 1.0) o.b_mult = per_head(iv.b_mult);
  return o;
}

at::Tensor Mamba2Impl::thresholds(c10::Device device, at::ScalarType dtype) const {
  if (state_norm_tau.defined()) {
    SSMLAB_CHECK(state_norm_tau.dim() == 1 && state_norm_tau.size(0) == n_heads_,
                 "mamba2: state_norm_tau must be (H) with H = ", n_heads_, "; got ", shape_str(state_norm_tau.sizes()));
    return state_norm_tau.to(device, dtype);
  }
  if (opts_.interventions.state_norm_tau > 0.0)
    return at::full({n_heads_}, opts_.interventions.state_norm_tau, at::TensorOptions().dtype(dtype).device(device));
  return at::Tensor();
}

// S <- S·min(1, τ_h/‖S‖_F) per (batch, head) (spec §3.6.2, the intended form), or with state_norm_form "seed"
// the seed code's S·‖S‖_F/τ_h where ‖S‖_F > τ_h (spec §6.9). The window snapshots are scaled alike so that the
// difference S - α·S_snap stays the windowed state of the scaled S.
void Mamba2Impl::normalise(State& state) const {
  at::Tensor& S = state["ssm"];
  const at::Tensor tau = thresholds(S.device(), S.scalar_type());
  if (!tau.defined()) return;
  const at::Tensor norm = S.flatten(2).norm(2, -1);                                   // (B, H)
  const at::Tensor scale =
      (opts_.interventions.state_norm_form == "seed" ? at::where(norm > tau, norm / tau, at::ones_like(norm))
                                                     : at::clamp_max(tau / at::clamp_min(norm, 1e-30), 1.0))
          .unsqueeze(-1)
          .unsqueeze(-1);
  S = S * scale;
  if (opts_.interventions.window > 0)
    for (const char* k : {"snap_old", "snap_new"}) state[k] = state[k] * scale;
}

at::Tensor Mamba2Impl::run_piece(const at::Tensor& x, State& state, bool decode, Trace* trace) {
  const int64_t E = d_inner_, H = n_heads_, P = opts_.head_dim, N = opts_.d_state, G = opts_.n_groups;
  const int64_t b = x.size(0), l = x.size(1);
  const bool window = opts_.interventions.window > 0;
  const at::Tensor zxbcdt = in_proj(x);                                                // (B, L, 2E + 2GN + H)
  const at::Tensor z = zxbcdt.narrow(-1, 0, E);                                        // (B, L, E)
  const at::Tensor xBC = zxbcdt.narrow(-1, E, conv_dim_);                              // (B, L, E + 2GN)
  const at::Tensor dt = zxbcdt.narrow(-1, E + conv_dim_, H);                           // (B, L, H)
  const std::optional<at::Tensor> cbias = conv_bias.defined() ? std::optional(conv_bias) : std::nullopt;
  at::Tensor xc;                                                                       // (B, L, E + 2GN)
  at::Tensor& conv_state = state["conv"];
  if (decode) {
    at::Tensor cs = conv_state.to(xBC.scalar_type());
    xc = ops::causal_conv1d_update(xBC.select(1, 0), cs, conv_weight, cbias, /*silu=*/true).unsqueeze(1);
    conv_state = cs;
  } else {
    auto conv = ops::causal_conv1d(xBC, conv_weight, cbias, /*silu=*/true, conv_state.to(xBC.scalar_type()),
                                   backend_);
    xc = conv.out;
    conv_state = conv.final_state;
  }
  const at::Tensor xs = xc.narrow(-1, 0, E).reshape({b, l, H, P});                    // (B, L, H, P)
  const auto& ivs = opts_.interventions;
  at::Tensor Bm = xc.narrow(-1, E, G * N).reshape({b, l, G, N});                       // (B, L, G, N)
  if (ivs.b_clip > 0.0) Bm = at::clamp_max(Bm, ivs.b_clip);
  const at::Tensor Cm = xc.narrow(-1, E + G * N, G * N).reshape({b, l, G, N});         // (B, L, G, N)
  at::Tensor A = -at::exp(A_log.to(state_dtype(x.scalar_type())));                    // (H)
  if (ivs.a_mult != 1.0) A = A * ivs.a_mult;
  if (ivs.a_offset != 0.0) A = A + ivs.a_offset;
  ops::SsdScanOptions so = scan_options();

  // The scan starts from the windowed state S - exp(Σa since snap_old)·snap_old (spec §3.6.3): by linearity
  // its outputs read the windowed state and its final state is the full one minus the decayed snapshot.
  at::Tensor& S = state["ssm"];
  const auto st = state_dtype(x.scalar_type());
  at::Tensor init = S.to(st);
  at::Tensor old_decay;                                                                 // (B, H, 1, 1)
  if (window) {
    old_decay = at::exp(state["logdecay_old"].to(st)).unsqueeze(-1).unsqueeze(-1);
    init = init - old_decay * state["snap_old"].to(st);
  }
  at::Tensor y, final_state;                                                            // (B, L, H, P)
  if (decode) {
    at::Tensor s = init.clone();
    y = ops::ssd_scan_update(xs.select(1, 0), dt.select(1, 0), A, Bm.select(1, 0), Cm.select(1, 0), s, so)
            .unsqueeze(1);
    final_state = s;
  } else {
    so.initial_state = init;
    auto r = ops::ssd_scan(xs, dt, A, Bm, Cm, so, backend_);
    y = r.y;
    final_state = r.final_state;
  }
  if (window || (trace != nullptr && trace->wants("decay"))) {
    const at::Tensor a = ops::ssd_detail::coefficients(dt, A, so, st).a;               // (B, L, H)
    trace_record(trace, "decay", at::exp(a));
    if (window) {
      const at::Tensor a_sum = a.sum(1);                                               // (B, H)
      final_state = final_state + old_decay * at::exp(a_sum).unsqueeze(-1).unsqueeze(-1) * state["snap_old"].to(st);
      state["logdecay_old"] = state["logdecay_old"].to(st) + a_sum;
      state["logdecay_new"] = state["logdecay_new"].to(st) + a_sum;
    }
  }
  if (trace != nullptr && trace->wants("dt")) {
    at::Tensor d = at::softplus(dt.to(st) + dt_bias.to(st));
    if (so.dt_min > 0.0 || std::isfinite(so.dt_max))
      d = at::clamp(d, so.dt_min, std::isfinite(so.dt_max) ? std::optional<at::Scalar>(so.dt_max) : std::nullopt);
    trace_record(trace, "dt", d);                                                      // (B, L, H)
  }
  trace_record(trace, "B", Bm);
  trace_record(trace, "C", Cm);
  S = final_state;
  const auto& iv = opts_.interventions;
  int64_t p = 0;
  if (segmented()) {
    at::Tensor& pos = state["pos"];
    pos = pos + l;
    p = pos[0].item<int64_t>();
  }
  if (segmented() && p % iv.segment == 0) normalise(state);
  if (window && p % iv.window == 0) {
    // Window boundary: the newer snapshot becomes the one subtracted, the current state the newer one.
    state["snap_old"] = state["snap_new"];
    state["logdecay_old"] = state["logdecay_new"];
    state["snap_new"] = state["ssm"];
    state["logdecay_new"] = at::zeros_like(state["logdecay_new"]);
  }
  trace_record(trace, "state", state["ssm"]);

  // Gated RMSNorm (norm_before_gate = False): RMSNorm(y · silu(z)) over groups of E / G channels (norm_groups
  // "groups") or all E ("whole"), in fp32+.
  const auto ft = at::promote_types(x.scalar_type(), at::kFloat);
  const int64_t norm_groups = opts_.norm_groups == "whole" ? 1 : G;
  const at::Tensor gated =
      (y.reshape({b, l, E}).to(ft) * at::silu(z.to(ft))).view({b, l, norm_groups, E / norm_groups});
  const at::Tensor normed = gated * at::rsqrt(gated.pow(2).mean(-1, /*keepdim=*/true) + opts_.norm_eps);
  const at::Tensor yn = (normed.view({b, l, E}) * norm_weight.to(ft)).to(x.scalar_type());  // (B, L, E)
  const at::Tensor out = out_proj(yn);                                                  // (B, L, D)
  trace_record(trace, "mixer_out", out);
  return out;
}

void Mamba2Impl::check_state(const State& state, int64_t batch, const char* who) const {
  std::vector<std::string> keys = {"conv", "ssm"};
  if (segmented()) keys.push_back("pos");
  if (opts_.interventions.window > 0)
    for (const char* k : {"snap_old", "snap_new", "logdecay_old", "logdecay_new"}) keys.push_back(k);
  for (const auto& k : keys)
    SSMLAB_CHECK(state.tensors.count(k) && state.at(k).defined() && state.at(k).size(0) == batch, who,
                 ": state lacks '", k, "' for batch ", batch,
                 "; make it with init_state (after changing interventions, make a new one)");
}

at::Tensor Mamba2Impl::forward_stateful(const at::Tensor& x, State& state, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "mamba2: input must be (B, L, D) with D = ", d_model_,
               "; got ", shape_str(x.sizes()));
  check_state(state, x.size(0), "mamba2");
  const auto& iv = opts_.interventions;
  const int64_t piece = segmented() ? iv.segment : iv.eval_segment;
  const int64_t l = x.size(1);
  std::vector<at::Tensor> outs;
  // Each piece records into its own Trace; merged, the records cover the whole call as one sequence's.
  std::vector<Trace> piece_traces;
  std::vector<int64_t> lengths;
  int64_t t0 = 0;
  while (t0 < l) {
    // Pieces end on multiples of `piece` in absolute position, so state norm and snapshots fall on the
    // same tokens whether the sequence comes at once, in pieces, or one step at a time.
    const int64_t pos = segmented() ? state.at("pos")[0].item<int64_t>() : 0;
    const int64_t len = std::min(l - t0, piece - pos % piece);
    Trace* piece_trace = nullptr;
    if (trace != nullptr) {
      piece_traces.push_back(trace->segment());
      lengths.push_back(len);
      piece_trace = &piece_traces.back();
    }
    outs.push_back(run_piece(x.narrow(1, t0, len), state, /*decode=*/false, piece_trace));
    t0 += len;
  }
  if (trace != nullptr) trace->merge_segments(piece_traces, lengths);
  if (outs.empty()) return out_proj(at::zeros({x.size(0), 0, d_inner_}, x.options()));
  return outs.size() == 1 ? outs[0] : at::cat(outs, 1);
}

at::Tensor Mamba2Impl::forward(const at::Tensor& x, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "mamba2: input must be (B, L, D) with D = ", d_model_,
               "; got ", shape_str(x.sizes()));
  State state = init_state(x.size(0), x.device());
  const auto st = state_dtype(x.scalar_type());
  for (auto& [name, t] : state.tensors)
    if (name != "pos") t = t.to(st);
  return forward_stateful(x, state, trace);
}

at::Tensor Mamba2Impl::step(const at::Tensor& x_t, State& state) {
  SSMLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == d_model_, "mamba2.step: input must be (B, D) with D = ", d_model_,
               "; got ", shape_str(x_t.sizes()));
  check_state(state, x_t.size(0), "mamba2.step");
  return run_piece(x_t.unsqueeze(1), state, /*decode=*/true, nullptr).squeeze(1);
}

}  // namespace ssmlab::mixers
