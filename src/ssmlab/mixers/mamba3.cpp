#include "ssmlab/mixers/mamba3.h"

#include <cmath>
#include <numbers>

#include <ATen/ATen.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/ops/mamba3/mamba3.h"

namespace ssmlab::mixers {

Mamba3Impl::Mamba3Impl(const Mamba3Options& opts, int64_t d_model, std::string backend, at::Generator& gen)
    : opts_(opts), d_model_(d_model), backend_(std::move(backend)) {
  const int64_t N = opts.d_state, P = opts.head_dim, G = opts.n_groups;
  if (d_model < 1) fail_config("mamba3: d_model must be >= 1; got ", d_model);
  if (opts.expand < 1) fail_config("mamba3: expand must be >= 1; got ", opts.expand);
  if (N < 2) fail_config("mamba3: d_state must be >= 2 (the rotation turns pairs of state dims); got ", N);
  if (P < 1) fail_config("mamba3: head_dim must be >= 1; got ", P);
  if (G < 1) fail_config("mamba3: n_groups must be >= 1; got ", G);
  if (opts.rope_fraction != 0.5 && opts.rope_fraction != 1.0)
    fail_config("mamba3: rope_fraction must be 0.5 or 1.0 (as mamba_ssm's Mamba3); got ", opts.rope_fraction);
  if (opts.a_map != "softplus" && opts.a_map != "heavy_tail")
    fail_config("mamba3: a_map must be softplus or heavy_tail; got '", opts.a_map, "'");
  if (opts.mimo && opts.mimo_rank < 1) fail_config("mamba3: mimo_rank must be >= 1; got ", opts.mimo_rank);
  if (opts.chunk_size < 1) fail_config("mamba3: chunk_size must be >= 1; got ", opts.chunk_size);
  if (!(opts.dt_min > 0.0 && opts.dt_max >= opts.dt_min))
    fail_config("mamba3: need 0 < dt_min <= dt_max; got dt_min ", opts.dt_min, ", dt_max ", opts.dt_max);
  if (!(opts.dt_init_floor > 0.0)) fail_config("mamba3: dt_init_floor must be > 0; got ", opts.dt_init_floor);
  if (!(opts.A_floor > 0.0)) fail_config("mamba3: A_floor must be > 0 (the decay must stay < 1); got ", opts.A_floor);
  d_inner_ = opts.expand * d_model;
  if (d_inner_ % P != 0)
    fail_config("mamba3: d_inner = expand * d_model = ", d_inner_, " must be divisible by head_dim ", P);
  n_heads_ = d_inner_ / P;
  const int64_t H = n_heads_;
  if (H % G != 0) fail_config("mamba3: heads H = ", H, " must be divisible by n_groups ", G);
  rank_ = opts.mimo ? opts.mimo_rank : 1;
  const int64_t R = rank_;
  // upstream: S = floor(N rope_fraction) rounded down to even, halved.
  const int64_t rot = static_cast<int64_t>(std::floor(static_cast<double>(N) * opts.rope_fraction));
  n_angles_ = (rot - rot % 2) / 2;
  const int64_t S = n_angles_;
  const int64_t E = d_inner_;

  const int64_t proj = 2 * E + 2 * G * R * N + 3 * H + S;
  in_proj = register_module("in_proj", torch::nn::Linear(torch::nn::LinearOptions(d_model, proj).bias(false)));
  dt_bias = register_parameter("dt_bias", at::empty({H}));
  B_bias = register_parameter("B_bias", at::ones({H, R, N}));
  C_bias = register_parameter("C_bias", at::ones({H, R, N}));
  B_norm_weight = register_module("B_norm", std::make_shared<torch::nn::Module>())
                      ->register_parameter("weight", at::ones({N}));
  C_norm_weight = register_module("C_norm", std::make_shared<torch::nn::Module>())
                      ->register_parameter("weight", at::ones({N}));
  if (opts.mimo) {
    mimo_x = register_parameter("mimo_x", at::full({H, R, P}, 1.0 / static_cast<double>(R)));
    mimo_z = register_parameter("mimo_z", at::ones({H, R, P}));
    mimo_o = register_parameter("mimo_o", at::full({H, R, P}, 1.0 / static_cast<double>(R)));
  }
  D = register_parameter("D", at::ones({H}));
  if (opts.outproj_norm)
    norm_weight = register_module("norm", std::make_shared<torch::nn::Module>())
                      ->register_parameter("weight", at::ones({E}));
  out_proj = register_module("out_proj", torch::nn::Linear(torch::nn::LinearOptions(E, d_model).bias(false)));

  // mamba_ssm Mamba3 init (spec A.5): nn.Linear's default U(+-1/sqrt(fan_in)); dt ~ exp(U(log dt_min,
  // log dt_max)) clamped >= floor, dt_bias = softplus^-1(dt) = dt + log(-expm1(-dt)); biases, norms, D ones.
  at::NoGradGuard no_grad;
  in_proj->weight.uniform_(-1.0 / std::sqrt(static_cast<double>(d_model)),
                           1.0 / std::sqrt(static_cast<double>(d_model)), gen);
  out_proj->weight.uniform_(-1.0 / std::sqrt(static_cast<double>(E)), 1.0 / std::sqrt(static_cast<double>(E)), gen);
  const at::Tensor u = at::empty({H}, at::kDouble).uniform_(0.0, 1.0, gen);
  at::Tensor dt = at::exp(u * (std::log(opts.dt_max) - std::log(opts.dt_min)) + std::log(opts.dt_min));
  dt = at::clamp_min(dt, opts.dt_init_floor);
  dt_bias.copy_(dt + at::log(-at::expm1(-dt)));
}

int64_t Mamba3Impl::state_size() const {
  const int64_t H = n_heads_, P = opts_.head_dim, N = opts_.d_state;
  return H * P * N + H * n_angles_ + rank_ * H * N + H * P;
}

State Mamba3Impl::init_state(int64_t batch, c10::Device device) const {
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  const int64_t H = n_heads_, P = opts_.head_dim, N = opts_.d_state;
  State s;
  s["phase"] = at::zeros({batch, H, n_angles_}, f32);  // (B, H, S)
  s["state"] = at::zeros({batch, H, P, N}, f32);       // (B, H, P, N)
  s["k_prev"] = at::zeros({batch, rank_, H, N}, f32);  // (B, R, H, N)
  s["x_prev"] = at::zeros({batch, H, P}, f32);         // (B, H, P), raw x (before mimo_x)
  return s;
}

at::Tensor Mamba3Impl::decay_rate(const at::Tensor& dd_A) const {
  at::Tensor f;
  if (opts_.a_map == "heavy_tail") {
    // 1 + x for x >= 0, 1 / (1 - x) below; each branch sees only its own side, so neither makes inf or NaN
    // (nor a NaN gradient through the branch `where` does not take).
    f = at::where(dd_A >= 0, 1.0 + at::clamp_min(dd_A, 0.0), 1.0 / (1.0 - at::clamp_max(dd_A, 0.0)));
  } else {
    f = at::softplus(dd_A);
  }
  // Negate, then clamp (spec A.2 step 1).
  return at::clamp_max(-f, -opts_.A_floor);
}

namespace {
// Floor-mod into [0, 2 pi), the chunked path's convention (spec A.3), also applied after decode steps so that
// the carried phase does not depend on which path produced it.
at::Tensor mamba3_wrap_phase(const at::Tensor& phi) {
  constexpr double two_pi = 2.0 * std::numbers::pi;
  return phi - two_pi * at::floor(phi / two_pi).detach();
}

// RMSNorm over the last dim, in the dtype of `v` (the caller picks fp32+).
at::Tensor mamba3_rms(const at::Tensor& v, double eps) {
  return v * at::rsqrt(v.pow(2).mean(-1, /*keepdim=*/true) + eps);
}
}  // namespace

at::Tensor Mamba3Impl::run(const at::Tensor& x, State* state, Trace* trace, bool decode) {
  const int64_t E = d_inner_, H = n_heads_, P = opts_.head_dim, N = opts_.d_state, G = opts_.n_groups,
                R = rank_, S = n_angles_;
  const int64_t b = x.size(0), l = x.size(1);
  const auto ft = x.scalar_type();
  const auto st = state_dtype(ft);
  const auto gt = at::promote_types(ft, at::kFloat);  // gate / norm dtype

  const at::Tensor zx = in_proj(x);  // (B, L, 2E + 2GRN + 3H + S)
  int64_t off = 0;
  auto take = [&](int64_t n) {
    at::Tensor t = zx.narrow(-1, off, n);
    off += n;
    return t;
  };
  const at::Tensor z = take(E).view({b, l, H, P});
  const at::Tensor xr = take(E).view({b, l, H, P});
  const at::Tensor Bp = take(G * R * N).view({b, l, R, G, N});  // (r, g, n) layout
  const at::Tensor Cp = take(G * R * N).view({b, l, R, G, N});
  const at::Tensor dd_dt = take(H).to(st);
  const at::Tensor dd_A = take(H).to(st);
  const at::Tensor trap = take(H).to(st);                    // pre-sigmoid logit
  const at::Tensor angles = take(S).to(st);                  // (B, L, S)

  const at::Tensor A = decay_rate(dd_A);                     // (B, L, H)
  const at::Tensor dt = at::softplus(dd_dt + dt_bias.to(st));
  const at::Tensor adt = A * dt;
  const at::Tensor theta = (std::numbers::pi * at::tanh(angles)).unsqueeze(2).expand({b, l, H, S});

  // B/C RMSNorm per (r, g) vector, groups expanded to heads, per-head (per-rank) bias.
  auto qk = [&](const at::Tensor& raw, const at::Tensor& w, const at::Tensor& bias) {
    at::Tensor v = mamba3_rms(raw.to(st), opts_.norm_eps) * w.to(st);  // (B, L, R, G, N)
    if (G != H) v = v.repeat_interleave(H / G, /*dim=*/3);              // (B, L, R, H, N): head h -> group h / (H/G)
    return (v + bias.to(st).permute({1, 0, 2})).to(ft);
  };
  const at::Tensor k = qk(Bp, B_norm_weight, B_bias);  // (B, L, R, H, N)
  const at::Tensor q = qk(Cp, C_norm_weight, C_bias);
  const at::Tensor mx = opts_.mimo ? mimo_x.permute({1, 0, 2}).to(ft) : at::Tensor();  // (R, H, P)
  const at::Tensor xin = opts_.mimo ? xr.unsqueeze(2) * mx : xr.unsqueeze(2);         // (B, L, R, H, P)
  const auto pairing = opts_.mimo ? ops::Mamba3Pairing::halves : ops::Mamba3Pairing::adjacent;

  if (trace != nullptr) {
    trace_record(trace, "dt", dt);
    trace_record(trace, "decay", at::exp(adt));
    trace_record(trace, "B", k);
    trace_record(trace, "C", q);
    trace_record(trace, "trap", at::sigmoid(trap));
    trace_record(trace, "theta", theta.select(2, 0));
  }

  std::optional<ops::Mamba3State> init;
  if (state != nullptr) {
    State& s = *state;
    ops::Mamba3State in;
    in.phase = s["phase"].to(st);
    in.state = s["state"].to(st);
    in.k_prev = s["k_prev"].to(ft);
    const at::Tensor xp = s["x_prev"].to(ft).unsqueeze(1);  // (B, 1, H, P)
    in.x_prev = opts_.mimo ? xp * mx : xp;                   // (B, R, H, P)
    init = std::move(in);
  }

  at::Tensor y;  // (B, L, R, H, P), pre-gate, D included
  ops::Mamba3State fin;
  if (decode) {
    auto [yt, next] = ops::mamba3_step(q.select(1, 0), k.select(1, 0), xin.select(1, 0), adt.select(1, 0),
                                       dt.select(1, 0), trap.select(1, 0), theta.select(1, 0), *init, pairing,
                                       std::optional<at::Tensor>(D));
    y = yt.unsqueeze(1);
    fin = std::move(next);
  } else {
    ops::Mamba3Options o;
    o.pairing = pairing;
    o.D = D;
    o.initial = init;
    o.chunk_size = opts_.chunk_size;
    auto r = ops::mamba3_scan(q, k, xin, adt, dt, trap, theta, o, backend_);
    y = r.y;
    fin = std::move(r.final);
  }
  if (state != nullptr) {
    State& s = *state;
    s["phase"] = mamba3_wrap_phase(fin.phase);
    s["state"] = fin.state;
    s["k_prev"] = fin.k_prev;
    s["x_prev"] = xr.select(1, l - 1);
  }
  trace_record(trace, "state", fin.state);

  // Gate / norm per rank (spec A.2 step 7), then the MIMO contraction with mimo_o.
  at::Tensor yg = y.to(gt);
  if (opts_.outproj_norm) yg = mamba3_rms(yg, opts_.norm_eps) * norm_weight.to(gt).view({H, P});
  at::Tensor zr = z.to(gt).unsqueeze(2);                                   // (B, L, 1, H, P)
  if (opts_.mimo) zr = zr * mimo_z.permute({1, 0, 2}).to(gt);             // (B, L, R, H, P)
  yg = yg * at::silu(zr);
  const at::Tensor yo =
      opts_.mimo ? (yg * mimo_o.permute({1, 0, 2}).to(gt)).sum(2) : yg.squeeze(2);  // (B, L, H, P)
  const at::Tensor out = out_proj(yo.reshape({b, l, E}).to(ft));
  trace_record(trace, "mixer_out", out);
  return out;
}

void Mamba3Impl::check_state(const State& s, int64_t batch, const char* who) const {
  for (const char* k : {"phase", "state", "k_prev", "x_prev"})
    SSMLAB_CHECK(s.tensors.count(k) && s.tensors.at(k).defined() && s.tensors.at(k).size(0) == batch, who,
                 ": state lacks '", k, "' for batch ", batch, "; make it with init_state");
  const int64_t H = n_heads_, P = opts_.head_dim, N = opts_.d_state;
  auto shape = [&](const char* k, std::vector<int64_t> want) {
    SSMLAB_CHECK(s.at(k).sizes() == at::IntArrayRef(want), who, ": state '", k, "' must be ", shape_str(want),
                 "; got ", shape_str(s.at(k).sizes()));
  };
  shape("phase", {batch, H, n_angles_});
  shape("state", {batch, H, P, N});
  shape("k_prev", {batch, rank_, H, N});
  shape("x_prev", {batch, H, P});
}

at::Tensor Mamba3Impl::forward(const at::Tensor& x, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "mamba3: input must be (B, L, D) with D = ", d_model_,
               "; got ", shape_str(x.sizes()));
  if (x.size(1) == 0) return out_proj(at::zeros({x.size(0), 0, d_inner_}, x.options()));
  return run(x, nullptr, trace, /*decode=*/false);
}

at::Tensor Mamba3Impl::forward_stateful(const at::Tensor& x, State& state, Trace* trace) {
  SSMLAB_CHECK(x.dim() == 3 && x.size(2) == d_model_, "mamba3.forward_stateful: input must be (B, L, D) with D = ",
               d_model_, "; got ", shape_str(x.sizes()));
  check_state(state, x.size(0), "mamba3.forward_stateful");
  if (x.size(1) == 0) return out_proj(at::zeros({x.size(0), 0, d_inner_}, x.options()));
  return run(x, &state, trace, /*decode=*/false);
}

at::Tensor Mamba3Impl::step(const at::Tensor& x_t, State& state) {
  SSMLAB_CHECK(x_t.dim() == 2 && x_t.size(1) == d_model_, "mamba3.step: input must be (B, D) with D = ", d_model_,
               "; got ", shape_str(x_t.sizes()));
  check_state(state, x_t.size(0), "mamba3.step");
  return run(x_t.unsqueeze(1), &state, nullptr, /*decode=*/true).squeeze(1);
}

}  // namespace ssmlab::mixers
