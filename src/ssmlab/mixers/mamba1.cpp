#include "ssmlab/mixers/mamba1.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/mixers/softsort.h"
#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"
#include "ssmlab/ops/selective_state_update/selective_state_update.h"

namespace ssmlab::mixers {

Mamba1Impl::Mamba1Impl(const Mamba1Options& opts, int64_t d_model, std::string backend, at::Generator& gen,
                       int64_t layer_idx)
    : opts_(opts), d_model_(d_model), backend_(std::move(backend)) {
  SSMLAB_CHECK(opts.dt_min <= opts.dt_max, "mamba1: dt_min (", opts.dt_min, ") must be <= dt_max (", opts.dt_max, ")");
  SSMLAB_CHECK(opts.reorder == "off" || opts.reorder == "first" || opts.reorder == "all",
               "mamba1: reorder must be off, first or all; got '", opts.reorder, "'");
  SSMLAB_CHECK(opts.reorder_tau > 0, "mamba1: reorder_tau must be > 0; got ", opts.reorder_tau);
  eigen_.kind = opts.eigen;
  eigen_.margin = opts.eigen_margin;
  eigen_.mixed_margin = opts.eigen_mixed_margin;
  d_inner_ = opts.expand * d_model;
  dt_rank_ = opts.dt_rank > 0 ? opts.dt_rank : (d_model + 15) / 16;
  // The transition decides the scan's N (polarized ones add constant channels); it is registered below in
  // mamba_ssm's parameter order.
  TransitionArgs targs;
  targs.one_value = opts.polar_one_value;
  targs.zero_value = opts.polar_zero_value;
  auto trans = make_transition(opts.transition, d_inner_, opts.d_state, targs);
  d_state_ = trans->state_dim();
  const int64_t E = d_inner_, N = d_state_, R = dt_rank_, W = opts.d_conv;
  in_proj = register_module("in_proj", torch::nn::Linear(torch::nn::LinearOptions(d_model, 2 * E).bias(opts.bias)));
  // A parameter holder so names read "conv1d.weight" / "conv1d.bias" as in mamba_ssm.
  auto conv1d = register_module("conv1d", std::make_shared<torch::nn::Module>());
  conv_weight = conv1d->register_parameter("weight", at::empty({E, W}));
  if (opts.conv_bias) conv_bias = conv1d->register_parameter("bias", at::empty({E}));
  x_proj = register_module("x_proj", torch::nn::Linear(torch::nn::LinearOptions(E, R + 2 * N).bias(false)));
  dt_proj = register_module("dt_proj", torch::nn::Linear(torch::nn::LinearOptions(R, E).bias(true)));
  transition = register_module("transition", std::move(trans));
  D = register_parameter("D", at::ones({E}));
  out_proj = register_module("out_proj", torch::nn::Linear(torch::nn::LinearOptions(E, d_model).bias(opts.bias)));

  // mamba_ssm init (spec §1.1). nn.Linear / nn.Conv1d defaults: U(+-1/sqrt(fan_in)) for weight and bias.
  at::NoGradGuard no_grad;
  auto default_init = [&](const at::Tensor& w, const at::Tensor& b, int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    w.uniform_(-bound, bound, gen);
    if (b.defined()) b.uniform_(-bound, bound, gen);
  };
  default_init(in_proj->weight, in_proj->bias, d_model);
  default_init(conv_weight, conv_bias, W);  // depthwise: fan_in = in_channels / groups * W = W
  default_init(x_proj->weight, at::Tensor(), E);
  const double dt_std = std::pow(static_cast<double>(R), -0.5) * opts.dt_scale;
  if (opts.dt_init == "constant") {
    dt_proj->weight.fill_(dt_std);
  } else {
    dt_proj->weight.uniform_(-dt_std, dt_std, gen);
  }
  // dt ~ exp(U(log dt_min, log dt_max)), clamped >= floor; bias = softplus^-1(dt) = dt + log(-expm1(-dt)).
  at::Tensor u = at::empty({E}, at::kDouble).uniform_(0.0, 1.0, gen);
  at::Tensor dt = at::exp(u * (std::log(opts.dt_max) - std::log(opts.dt_min)) + std::log(opts.dt_min));
  dt = at::clamp_min(dt, opts.dt_init_floor);
  dt_proj->bias.copy_(dt + at::log(-at::expm1(-dt)));
  transition->reset(gen);
  D.fill_(1.0);
  default_init(out_proj->weight, out_proj->bias, E);
  // Checks the scenario against N and E now (a bad one fails at construction, naming the scenario).
  eigen_x_proj_weight(x_proj->weight, R, N, eigen_);
  // Registered (and drawn) last, so a model without reordering keeps its parameters and init stream.
  if (opts.reorder == "all" || (opts.reorder == "first" && layer_idx == 0)) {
    importance = register_module("importance", torch::nn::Linear(torch::nn::LinearOptions(E, 1).bias(false)));
    default_init(importance->weight, at::Tensor(), E);
  }
}

at::Tensor Mamba1Impl::x_proj_weight() { return eigen_x_proj_weight(x_proj->weight, dt_rank_, d_state_, eigen_); }

std::optional<at::Tensor> Mamba1Impl::input_output_matrix() {
  // In float64, so the E - N zero eigenvalues of the rank-N product stay at float64 rounding (~1e-16 relative).
  const at::Tensor W = eigen_x_proj_weight(x_proj->weight.to(at::kDouble), dt_rank_, d_state_, eigen_);  // (R + 2N, E)
  const at::Tensor WB = W.narrow(0, dt_rank_, d_state_);     // (N, E): B_t = W_B u_t
  const at::Tensor WC = W.narrow(0, dt_rank_ + d_state_, d_state_);  // (N, E): C_t = W_C u_t
  return at::matmul(WC.t(), WB);                             // (E, E)
}

// Token reordering (spec §4.3). The seed's quirks are the option defaults (y not un-permuted, z not permuted, soft
// in training and evaluation). Its third quirk, dt_proj's bias applied twice, belongs to MambaVision's mixer, not
// to Mamba-1: the score here uses dt_proj(dt_low) with the bias once, and the scan adds it once, as for any tokens.
at::Tensor Mamba1Impl::reorder_permutation(const at::Tensor& xc) {
  SSMLAB_CHECK(reorders(), "mamba1: reorder_permutation on a layer that does not reorder");
  const int64_t R = dt_rank_;
  const at::Tensor dt_low = at::linear(xc, x_proj_weight().narrow(0, 0, R));   // (B, L, R)
  const auto dtype = dt_low.scalar_type();
  const at::Tensor dt_full =
      at::linear(dt_low, dt_proj->weight.to(dtype), dt_proj->bias.to(dtype));  // (B, L, E), bias included
  const at::Tensor score = at::linear(dt_full, importance->weight.to(dtype)).squeeze(-1);  // (B, L)
  return softsort(-score, opts_.reorder_tau, opts_.reorder_hard);              // (B, L, L)
}

int64_t Mamba1Impl::state_size() const { return d_inner_ * (d_state_ + opts_.d_conv - 1); }

State Mamba1Impl::init_state(int64_t batch, c10::Device device) const {
  State s;
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  s["conv"] = at::zeros({batch, opts_.d_conv - 1, d_inner_}, f32);     // (B, W-1, E)
  s["ssm"] = at::zeros({batch, d_inner_, d_state_}, f32);              // (B, E, N)
  return s;
}

at::Tensor Mamba1Impl::run(const at::Tensor& x, at::Tensor* conv_state, at::Tensor* ssm_state, Trace* trace) {
  const int64_t E = d_inner_, N = d_state_, R = dt_rank_;
  const at::Tensor xz = in_proj(x);                                          // (B, L, 2E)
  const at::Tensor x_in = xz.narrow(-1, 0, E);                               // (B, L, E)
  const at::Tensor z = xz.narrow(-1, E, E);                                  // (B, L, E)
  std::optional<at::Tensor> conv_in;
  if (conv_state) conv_in = conv_state->to(x_in.scalar_type());
  auto conv = ops::causal_conv1d(x_in, conv_weight, conv_bias.defined() ? std::optional(conv_bias) : std::nullopt,
                                 /*silu=*/true, conv_in, backend_);
  at::Tensor xc = conv.out;                                                  // (B, L, E)
  at::Tensor gate = z;                                                       // (B, L, E)
  at::Tensor perm;                                                           // (B, L, L) where reordering
  if (reorders()) {
    SSMLAB_CHECK(conv_state == nullptr && ssm_state == nullptr,
                 "mamba1: reorder sorts whole sequences; forward_stateful and step are not defined with it");
    perm = reorder_permutation(xc);
    xc = at::matmul(perm.to(xc.scalar_type()), xc);                          // sorted tokens (B, L, E)
    if (opts_.reorder_permute_z) gate = at::matmul(perm.to(z.scalar_type()), z);
  }
  trace_record(trace, "x_conv", xc);
  // The eigen scenarios reparametrise x_proj's weight; "none" keeps the module call (bit-identical).
  const at::Tensor x_dbl = eigen_.kind == "none" ? x_proj(xc) : at::linear(xc, x_proj_weight());  // (B, L, R + 2N)
  const at::Tensor dt_low = x_dbl.narrow(-1, 0, R);                          // (B, L, R)
  const at::Tensor Bm = x_dbl.narrow(-1, R, N);                              // (B, L, N)
  const at::Tensor Cm = x_dbl.narrow(-1, R + N, N);                          // (B, L, N)
  const at::Tensor dt = at::matmul(dt_low, dt_proj->weight.to(dt_low.scalar_type()).t());  // (B, L, E), bias in scan
  const at::Tensor A = transition->A();                                      // (E, N)
  std::optional<at::Tensor> h0;
  if (ssm_state) h0 = *ssm_state;
  // RRI (spec §3.6.1): λ_B scales B; λ_α by the rescaling S_t = λ_α^t S̃_t (mamba1.h), t = 1..L in this call.
  const auto& iv = opts_.interventions;
  const at::Tensor Bw = iv.b_mult != 1.0 ? Bm * iv.b_mult : Bm;              // (B, L, N) what writes
  at::Tensor Bscan = Bw, Cscan = Cm;
  const int64_t L = x.size(1);
  if (iv.decay_mult != 1.0) {
    SSMLAB_CHECK(!reorders(), "mamba1: interventions.decay_mult is not defined with reorder");
    const auto wt = at::promote_types(Bm.scalar_type(), at::kFloat);
    const at::Tensor w =
        at::exp(at::arange(1, L + 1, Bm.options().dtype(wt)) * std::log(iv.decay_mult)).view({1, L, 1});  // λ^t
    Bscan = (Bw.to(wt) / w).to(Bm.scalar_type());
    Cscan = (Cm.to(wt) * w).to(Cm.scalar_type());
  }
  auto scan =
      ops::selective_scan(xc, dt, A, Bscan, Cscan, D, gate, dt_proj->bias, /*delta_softplus=*/true, h0, backend_);
  at::Tensor final_state = scan.final_state;                                 // (B, E, N)
  if (iv.decay_mult != 1.0) final_state = final_state * std::pow(iv.decay_mult, static_cast<double>(L));
  if (trace != nullptr && (trace->wants("dt") || trace->wants_explicitly("decay"))) {
    const at::Tensor dt_full = at::softplus(dt.to(state_dtype(dt.scalar_type())) + dt_proj->bias);  // (B, L, E)
    trace_record(trace, "dt", dt_full);
    // The per-step multiplier exp(dt ⊗ A) is (B, L, E, N), N times the input: only when named explicitly.
    if (trace->wants_explicitly("decay"))
      trace->record("decay", trace->layer,
                    at::exp(dt_full.unsqueeze(-1) * A.to(dt_full.scalar_type())) * iv.decay_mult);  // (B, L, E, N)
  }
  trace_record(trace, "B", Bw);
  trace_record(trace, "C", Cm);
  trace_record(trace, "state", final_state);
  if (conv_state) *conv_state = conv.final_state;
  if (ssm_state) *ssm_state = final_state;
  at::Tensor y = scan.y;                                                     // (B, L, E)
  // The seed leaves y in sorted order (spec §4.3 quirk); unpermute maps it back with Π^T (exact when hard).
  if (perm.defined() && opts_.reorder_unpermute) y = at::matmul(perm.transpose(1, 2).to(y.scalar_type()), y);
  const at::Tensor out = out_proj(y);                                        // (B, L, D)
  trace_record(trace, "mixer_out", out);
  return out;
}

at::Tensor Mamba1Impl::forward(const at::Tensor& x, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "mamba1: input must be (B, L, D) with D = ", d_model_, "; got ",
               shape_str(x.sizes()));
  return run_pieces(x, nullptr, nullptr, trace);
}

at::Tensor Mamba1Impl::run_pieces(const at::Tensor& x, at::Tensor* conv_state, at::Tensor* ssm_state,
                                  Trace* trace) {
  const double lam = opts_.interventions.decay_mult;
  const int64_t L = x.size(1);
  // λ^-t stays within e^20 (a factor fp32 and fp64 hold with their full precision relative to the state).
  const int64_t piece = lam == 1.0 ? L : std::max<int64_t>(1, static_cast<int64_t>(20.0 / std::abs(std::log(lam))));
  if (L <= piece) return run(x, conv_state, ssm_state, trace);
  at::Tensor conv_local, ssm_local;
  if (conv_state == nullptr) {
    conv_local = at::zeros({x.size(0), opts_.d_conv - 1, d_inner_}, x.options());
    conv_state = &conv_local;
  }
  if (ssm_state == nullptr) {
    ssm_local = at::zeros({x.size(0), d_inner_, d_state_}, x.options().dtype(state_dtype(x.scalar_type())));
    ssm_state = &ssm_local;
  }
  std::vector<at::Tensor> outs;
  std::vector<Trace> traces;
  std::vector<int64_t> lengths;
  for (int64_t t0 = 0; t0 < L; t0 += piece) {
    const int64_t len = std::min(piece, L - t0);
    Trace* pt = nullptr;
    if (trace != nullptr) {
      traces.push_back(trace->segment());
      lengths.push_back(len);
      pt = &traces.back();
    }
    outs.push_back(run(x.narrow(1, t0, len), conv_state, ssm_state, pt));
  }
  if (trace != nullptr) trace->merge_segments(traces, lengths);
  return at::cat(outs, 1);
}

Mitigations Mamba1Impl::mitigations() const {
  Mitigations m;
  m.decay_mult = opts_.interventions.decay_mult;
  m.b_mult = opts_.interventions.b_mult;
  return m;
}

void Mamba1Impl::set_mitigations(const Mitigations& m) {
  if (m.state_norm_tau.defined())
    fail_config("mamba1 mitigations: state normalisation is implemented for mamba2 only (supported here: rri)");
  if (m.window != 0)
    fail_config("mamba1 mitigations: the state-difference window is implemented for mamba2 only (supported "
                "here: rri)");
  if (!(m.decay_mult > 0.0)) fail_config("mamba1 mitigations: RRI decay_mult must be > 0; got ", m.decay_mult);
  if (m.decay_mult != 1.0 && reorders())
    fail_config("mamba1 mitigations: RRI decay_mult is not defined with reorder");
  opts_.interventions.decay_mult = m.decay_mult;
  opts_.interventions.b_mult = m.b_mult;
}

at::Tensor Mamba1Impl::forward_stateful(const at::Tensor& x, State& state, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "mamba1: input must be (B, L, D) with D = ", d_model_,
               "; got ", shape_str(x.sizes()));
  SSMLAB_CHECK(!reorders(), "mamba1.forward_stateful: not defined with reorder (the sort needs the whole sequence)");
  for (const char* k : {"conv", "ssm"})
    SSMLAB_CHECK(state.tensors.count(k) && state.at(k).defined() && state.at(k).size(0) == x.size(0),
                 "mamba1.forward_stateful: state lacks '", k, "' for batch ", x.size(0), "; make it with init_state");
  // The scan's initial state in its state dtype, as step() keeps it; run() stores the conv state in x's dtype.
  at::Tensor& ssm_state = state["ssm"];                                      // (B, E, N)
  const auto ct = state_dtype(x.scalar_type());
  if (ssm_state.scalar_type() != ct) ssm_state = ssm_state.to(ct);
  return run_pieces(x, &state["conv"], &ssm_state, trace);
}

at::Tensor Mamba1Impl::step(const at::Tensor& x_t, State& state) {
  SSMLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == d_model_, "mamba1.step: input must be (B, D) with D = ", d_model_,
               "; got ", shape_str(x_t.sizes()));
  // One token with the decode ops (mamba_ssm's step): the conv and SSM states are updated in place. The same
  // values as run() on a length-1 sequence: the conv state is taken to x's dtype as forward's final_state is,
  // the SSM state to the scan's state dtype.
  SSMLAB_CHECK(!reorders(), "mamba1.step: not defined with reorder (the sort needs the whole sequence)");
  const int64_t E = d_inner_, R = dt_rank_;
  const at::Tensor xz = in_proj(x_t);                                        // (B, 2E)
  const at::Tensor x_in = xz.narrow(-1, 0, E);                               // (B, E)
  const at::Tensor z = xz.narrow(-1, E, E);                                  // (B, E)
  at::Tensor& conv_state = state["conv"];                                    // (B, W-1, E)
  if (conv_state.scalar_type() != x_in.scalar_type()) conv_state = conv_state.to(x_in.scalar_type());
  const at::Tensor xc = ops::causal_conv1d_update(
      x_in, conv_state, conv_weight, conv_bias.defined() ? std::optional(conv_bias) : std::nullopt, /*silu=*/true,
      backend_);                                                             // (B, E)
  const at::Tensor A = transition->A();                                      // (E, N)
  const int64_t N = A.size(1);
  const at::Tensor x_dbl = eigen_.kind == "none" ? x_proj(xc) : at::linear(xc, x_proj_weight());  // (B, R + 2N)
  const at::Tensor dt_low = x_dbl.narrow(-1, 0, R);                          // (B, R)
  at::Tensor Bm = x_dbl.narrow(-1, R, N);                                    // (B, N)
  const at::Tensor Cm = x_dbl.narrow(-1, R + N, N);                          // (B, N)
  const at::Tensor dt = at::matmul(dt_low, dt_proj->weight.to(dt_low.scalar_type()).t());  // (B, E), bias in the op
  at::Tensor& ssm_state = state["ssm"];                                      // (B, E, N)
  const auto ct = state_dtype(xc.scalar_type());
  if (ssm_state.scalar_type() != ct) ssm_state = ssm_state.to(ct);
  // RRI: λ_α·α_t·S = α_t·(λ_α·S), so the state is scaled before the plain update; λ_B scales B.
  const auto& iv = opts_.interventions;
  if (iv.decay_mult != 1.0) ssm_state.mul_(iv.decay_mult);
  if (iv.b_mult != 1.0) Bm = Bm * iv.b_mult;
  const at::Tensor y = ops::selective_state_update(ssm_state, xc, dt, A, Bm, Cm, D, z, dt_proj->bias,
                                                   /*dt_softplus=*/true, backend_);  // (B, E)
  return out_proj(y);                                                        // (B, D)
}

}  // namespace ssmlab::mixers
