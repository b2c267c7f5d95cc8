// Mamba-3 mixer (mixers/mamba3.*, ../shared/spec/mamba3-gdn-spec.md A.2-A.6): the layer against a float64
// re-composition written here from the spec alone (in_proj split, B/C norms and biases, decay maps, the
// exponential-trapezoidal recurrence with the rotation, adjacent pairs for SISO and halves for MIMO, gate / norm,
// the MIMO contraction) for SISO and MIMO, both decay maps, groups, rope fractions and the output norm; decode
// (a prefill of 29 tokens then 8 steps) equals the forward, including every carried tensor; chunk-size invariance;
// trapezoid weight 1 and no rotation reduce it to our Mamba-2 scan (B scaled by dt, no conv); parameter names,
// shapes and init as upstream's; decay maps' closed forms; float64 finite differences; errors.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <map>
#include <numbers>
#include <string>
#include <vector>

#include "ssmlab/core/error.h"
#include "ssmlab/mixers/mamba3.h"
#include "ssmlab/mixers/registry.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"
#include "test_util.h"
#include "tolerances.h"

namespace mixers_test_mamba3 {

namespace {

using ssmlab::mixers::Mamba3Impl;
using ssmlab::mixers::Mamba3Options;
using ssmlab::mixers::State;
using ssmlab::test::all_close;

constexpr int64_t kD = 16;
constexpr double kTwoPi = 2.0 * std::numbers::pi;

Mamba3Options small(bool mimo, int64_t rank = 2) {
  Mamba3Options o;
  o.d_state = 8;
  o.head_dim = 8;  // E = 32, H = 4
  o.mimo = mimo;
  o.mimo_rank = rank;
  o.chunk_size = 8;
  return o;
}

// fp64 model from `seed`, with the init's constants (biases, norms, MIMO factors, D) perturbed so every parameter
// matters, and larger steps (dt ~ 0.3-1) so decays and rotations act within a few tokens.
std::shared_ptr<Mamba3Impl> make(const Mamba3Options& o, uint64_t seed, const std::string& backend = "reference") {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto m = std::make_shared<Mamba3Impl>(o, kD, backend, gen);
  m->to(at::kDouble);
  at::NoGradGuard ng;
  at::manual_seed(static_cast<int64_t>(seed) + 100);
  for (auto& p : m->named_parameters()) {
    const std::string& n = p.key();
    if (n == "in_proj.weight" || n == "out_proj.weight") continue;
    if (n == "dt_bias")
      p.value().uniform_(-1.0, 0.5);
    else
      p.value().add_(at::randn_like(p.value()) * 0.3);
  }
  return m;
}

// ---- the float64 re-composition of the layer, from the spec ---------------------------------------------------

struct RefState {
  at::Tensor phase, h, k_prev, x_prev;  // (B, H, S), (B, H, P, N), (B, R, H, N) rotated, (B, H, P) raw x
};

struct Proj {
  at::Tensor z, x, q, k, A, dt, lam, theta;  // z, x (B, L, H, P); q, k (B, L, R, H, N); A, dt, lam (B, L, H); theta (B, L, S)
};

Proj project(Mamba3Impl& m, const at::Tensor& u) {
  const auto& o = m.options();
  const int64_t b = u.size(0), l = u.size(1), E = m.d_inner(), H = m.n_heads(), P = o.head_dim, N = o.d_state,
                G = o.n_groups, R = m.rank(), S = m.n_angles();
  const at::Tensor zx = at::matmul(u, m.in_proj->weight.t());
  int64_t off = 0;
  auto cut = [&](int64_t n) {
    at::Tensor t = zx.narrow(-1, off, n);
    off += n;
    return t;
  };
  Proj p;
  p.z = cut(E).reshape({b, l, H, P});
  p.x = cut(E).reshape({b, l, H, P});
  const at::Tensor Braw = cut(G * R * N).reshape({b, l, R, G, N});
  const at::Tensor Craw = cut(G * R * N).reshape({b, l, R, G, N});
  const at::Tensor dd_dt = cut(H), dd_A = cut(H), trap = cut(H), ang = cut(S);
  EXPECT_EQ(off, zx.size(-1));
  const at::Tensor f = o.a_map == "softplus" ? at::log1p(at::exp(dd_A))
                                             : at::where(dd_A >= 0, 1.0 + dd_A, 1.0 / (1.0 - dd_A));
  p.A = at::minimum(-f, at::full_like(f, -o.A_floor));
  p.dt = at::log1p(at::exp(dd_dt + m.dt_bias));
  p.lam = 1.0 / (1.0 + at::exp(-trap));
  p.theta = std::numbers::pi * at::tanh(ang);
  auto norm = [&](const at::Tensor& v, const at::Tensor& w, const at::Tensor& bias) {
    const at::Tensor n = v / at::sqrt(v.pow(2).mean(-1, true) + o.norm_eps) * w;  // (B, L, R, G, N)
    std::vector<at::Tensor> heads;
    for (int64_t h = 0; h < H; ++h) heads.push_back(n.select(3, h / (H / G)) + bias.select(0, h));  // + (R, N)
    return at::stack(heads, 3);                                                                      // (B, L, R, H, N)
  };
  p.k = norm(Braw, m.B_norm_weight, m.B_bias);
  p.q = norm(Craw, m.C_norm_weight, m.C_bias);
  return p;
}

// Rotation of v (B, R, H, N) by phi (B, H, S): pairs (2i, 2i+1) for SISO, (i, i + N/2) for MIMO.
at::Tensor rotate(const at::Tensor& v, const at::Tensor& phi, bool halves) {
  const int64_t N = v.size(-1), S = phi.size(-1);
  at::Tensor out = v.clone();
  for (int64_t i = 0; i < S; ++i) {
    const int64_t a = halves ? i : 2 * i, b = halves ? i + N / 2 : 2 * i + 1;
    const at::Tensor c = at::cos(phi.select(-1, i)).unsqueeze(1), s = at::sin(phi.select(-1, i)).unsqueeze(1);
    const at::Tensor va = v.select(-1, a), vb = v.select(-1, b);
    out.select(-1, a).copy_(va * c - vb * s);
    out.select(-1, b).copy_(va * s + vb * c);
  }
  return out;
}

RefState zero_ref(Mamba3Impl& m, int64_t b) {
  const auto d = at::kDouble;
  const int64_t H = m.n_heads(), P = m.options().head_dim, N = m.options().d_state;
  return {at::zeros({b, H, m.n_angles()}, d), at::zeros({b, H, P, N}, d), at::zeros({b, m.rank(), H, N}, d),
          at::zeros({b, H, P}, d)};
}

at::Tensor layer_ref(Mamba3Impl& m, const at::Tensor& u, RefState& st) {
  const auto& o = m.options();
  const int64_t b = u.size(0), l = u.size(1), H = m.n_heads(), P = o.head_dim, R = m.rank();
  const Proj p = project(m, u);
  const at::Tensor ones = at::ones({H, R, P}, at::kDouble);
  const at::Tensor mx = (o.mimo ? m.mimo_x : ones).permute({1, 0, 2});  // (R, H, P)
  const at::Tensor mz = (o.mimo ? m.mimo_z : ones).permute({1, 0, 2});
  const at::Tensor mo = (o.mimo ? m.mimo_o : ones).permute({1, 0, 2});
  std::vector<at::Tensor> outs;
  for (int64_t t = 0; t < l; ++t) {
    const at::Tensor dt = p.dt.select(1, t), lam = p.lam.select(1, t);                 // (B, H)
    st.phase = st.phase + dt.unsqueeze(-1) * p.theta.select(1, t).unsqueeze(1);         // (B, H, S)
    st.phase = st.phase - kTwoPi * at::floor(st.phase / kTwoPi);
    const at::Tensor kr = rotate(p.k.select(1, t), st.phase, o.mimo);                   // (B, R, H, N)
    const at::Tensor qr = rotate(p.q.select(1, t), st.phase, o.mimo);
    const at::Tensor alpha = at::exp(p.A.select(1, t) * dt);
    const at::Tensor beta = (1.0 - lam) * dt * alpha, gamma = lam * dt;
    const at::Tensor xt = p.x.select(1, t).unsqueeze(1) * mx;                           // (B, R, H, P)
    const at::Tensor xp = st.x_prev.unsqueeze(1) * mx;
    auto e = [](const at::Tensor& v) { return v.unsqueeze(-1).unsqueeze(-1); };
    st.h = e(alpha) * st.h + e(beta) * at::einsum("brhp,brhn->bhpn", {xp, st.k_prev}) +
           e(gamma) * at::einsum("brhp,brhn->bhpn", {xt, kr});
    at::Tensor y = at::einsum("bhpn,brhn->brhp", {st.h, qr}) + m.D.view({1, 1, H, 1}) * xt;  // (B, R, H, P)
    if (o.outproj_norm) y = y / at::sqrt(y.pow(2).mean(-1, true) + o.norm_eps) * m.norm_weight.view({H, P});
    const at::Tensor zr = p.z.select(1, t).unsqueeze(1) * mz;
    y = y * zr / (1.0 + at::exp(-zr));
    outs.push_back((y * mo).sum(1).reshape({b, H * P}));
    st.k_prev = kr;
    st.x_prev = p.x.select(1, t);
  }
  return at::matmul(at::stack(outs, 1), m.out_proj->weight.t());
}

State state_fp64(const Mamba3Impl& m, int64_t b) {
  State s = m.init_state(b, at::kCPU);
  for (auto& [n, t] : s.tensors) t = t.to(at::kDouble);
  return s;
}

// Phases compared modulo 2 pi (the chunked path and the decode step may land on either side of a multiple).
void expect_same_phase(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  EXPECT_TRUE(all_close(at::sin(a), at::sin(b), ssmlab::test::kFp64Forward, what + " sin"));
  EXPECT_TRUE(all_close(at::cos(a), at::cos(b), ssmlab::test::kFp64Forward, what + " cos"));
}

struct Variant {
  std::string label;
  Mamba3Options opts;
};

std::vector<Variant> variants() {
  std::vector<Variant> v;
  v.push_back({"siso", small(false)});
  v.push_back({"mimo_r2", small(true, 2)});
  Variant a{"siso_heavy_tail_rope1_groups2_norm", small(false)};
  a.opts.a_map = "heavy_tail";
  a.opts.rope_fraction = 1.0;
  a.opts.n_groups = 2;
  a.opts.outproj_norm = true;
  v.push_back(a);
  Variant b{"mimo_r3_rope1_norm_groups4", small(true, 3)};
  b.opts.rope_fraction = 1.0;
  b.opts.outproj_norm = true;
  b.opts.n_groups = 4;
  v.push_back(b);
  Variant c{"mimo_r4_heavy_tail", small(true, 4)};
  c.opts.a_map = "heavy_tail";
  v.push_back(c);
  return v;
}

TEST(Mamba3Mixer, LayerEqualsFloat64RecompositionEveryVariantAndBackend) {
  for (const auto& v : variants())
    for (const char* backend : {"reference", "chunked", "auto"}) {
      SCOPED_TRACE(v.label + " " + backend);
      auto m = make(v.opts, 3, backend);
      at::manual_seed(4);
      const at::Tensor x = at::randn({2, 21, kD}, at::kDouble);
      RefState rs = zero_ref(*m, 2);
      const at::Tensor want = layer_ref(*m, x, rs);
      EXPECT_TRUE(all_close(m->forward(x), want, ssmlab::test::kFp64Forward, "forward"));
      State s = state_fp64(*m, 2);
      EXPECT_TRUE(all_close(m->forward_stateful(x, s), want, ssmlab::test::kFp64Forward, "forward_stateful"));
      EXPECT_TRUE(all_close(s.at("state"), rs.h, ssmlab::test::kFp64Forward, "state"));
      expect_same_phase(s.at("phase"), rs.phase, "phase");
      EXPECT_TRUE(all_close(s.at("k_prev"), rs.k_prev, ssmlab::test::kFp64Forward, "k_prev"));
      EXPECT_TRUE(all_close(s.at("x_prev"), rs.x_prev, ssmlab::test::kFp64Forward, "x_prev"));
    }
}

// The re-composition can tell the pairings apart, so the test above can fail: SISO's adjacent pairs on a MIMO
// layer change the output.
TEST(Mamba3Mixer, PairingsDiffer) {
  const at::Tensor v = at::randn({1, 1, 1, 8}, at::kDouble), phi = at::full({1, 1, 2}, 0.7, at::kDouble);
  EXPECT_GT((rotate(v, phi, true) - rotate(v, phi, false)).abs().max().item<double>(), 1e-3);
  // Hand-computed: adjacent pair (0, 1) by pi/2 sends (1, 0) to (0, 1); halves pair (0, 4) sends e0 to e4.
  at::Tensor e0 = at::zeros({1, 1, 1, 8}, at::kDouble);
  e0.index_put_({0, 0, 0, 0}, 1.0);
  const at::Tensor quarter = at::full({1, 1, 1}, std::numbers::pi / 2, at::kDouble);
  EXPECT_NEAR(rotate(e0, quarter, false)[0][0][0][1].item<double>(), 1.0, 1e-15);
  EXPECT_NEAR(rotate(e0, quarter, true)[0][0][0][4].item<double>(), 1.0, 1e-15);
}

TEST(Mamba3Mixer, DecodeAfterPrefillEqualsForwardIncludingEveryCarriedTensor) {
  for (bool mimo : {false, true})
    for (const char* backend : {"auto", "reference"}) {
      SCOPED_TRACE(std::string(mimo ? "mimo " : "siso ") + backend);
      auto m = make(small(mimo, 3), 5, backend);
      at::manual_seed(6);
      const at::Tensor x = at::randn({2, 37, kD}, at::kDouble);
      const at::Tensor y = m->forward(x);
      State s = state_fp64(*m, 2);
      std::vector<at::Tensor> ys = {m->forward_stateful(x.narrow(1, 0, 29), s)};
      for (int64_t t = 29; t < 37; ++t) ys.push_back(m->step(x.select(1, t), s).unsqueeze(1));
      EXPECT_TRUE(all_close(at::cat(ys, 1), y, ssmlab::test::kFp64Forward, "outputs"));
      State whole = state_fp64(*m, 2);
      m->forward_stateful(x, whole);
      ASSERT_EQ(s.tensors.size(), 4u);
      for (const char* name : {"state", "k_prev", "x_prev"})
        EXPECT_TRUE(all_close(s.at(name), whole.at(name), ssmlab::test::kFp64Forward, name));
      expect_same_phase(s.at("phase"), whole.at("phase"), "phase");
      // Both are kept in [0, 2 pi).
      for (const State* st : {&s, &whole}) {
        EXPECT_GE(st->at("phase").min().item<double>(), 0.0);
        EXPECT_LT(st->at("phase").max().item<double>(), kTwoPi);
      }
      // x_prev is the raw x of the last token (before mimo_x), upstream's v_state.
      const at::Tensor raw = at::matmul(x.select(1, 36), m->in_proj->weight.narrow(0, m->d_inner(), m->d_inner()).t());
      EXPECT_TRUE(all_close(s.at("x_prev"), raw.view({2, m->n_heads(), -1}), ssmlab::test::kFp64Forward, "raw x"));
    }
}

TEST(Mamba3Mixer, ChunkSizeDoesNotChangeTheResult) {
  for (bool mimo : {false, true}) {
    SCOPED_TRACE(mimo ? "mimo" : "siso");
    at::manual_seed(7);
    const at::Tensor x = at::randn({2, 45, kD}, at::kDouble);
    Mamba3Options o = small(mimo);
    o.chunk_size = 64;
    const at::Tensor y = make(o, 8, "chunked")->forward(x);
    for (int64_t c : {1, 5, 16})
      for (const char* backend : {"chunked", "auto"}) {
        o.chunk_size = c;
        EXPECT_TRUE(all_close(make(o, 8, backend)->forward(x), y, ssmlab::test::kFp64Forward,
                              "chunk " + std::to_string(c) + " " + backend));
      }
  }
}

// Trapezoid weight 1 (logit 40: sigmoid rounds to exactly 1 in float64) and no rotation (angle rows of in_proj
// zero) reduce the layer to the Mamba-2 / Euler update h = exp(A dt) h + dt x k^T: our Mamba-2 scan (reference)
// with B = k, C = q (n_groups = H, so the per-head biases are per group), no conv, then y silu(z) and out_proj.
// A constant last input feature carries the logit (in_proj has no bias) and a constant A per head.
TEST(Mamba3Mixer, TrapezoidOneAndNoRotationIsMamba2) {
  Mamba3Options o = small(false);
  o.n_groups = 4;
  auto m = make(o, 9, "auto");
  const int64_t E = m->d_inner(), H = m->n_heads(), P = o.head_dim, N = o.d_state, S = m->n_angles();
  const int64_t r_trap = 2 * E + 2 * o.n_groups * N + 2 * H, r_A = r_trap - H, r_ang = r_trap + H;
  {
    at::NoGradGuard ng;
    at::Tensor w = m->in_proj->weight;
    w.narrow(0, r_trap, H).zero_();
    w.narrow(0, r_trap, H).select(1, kD - 1).fill_(40.0);
    w.narrow(0, r_A, H).zero_();
    w.narrow(0, r_A, H).select(1, kD - 1).copy_(at::linspace(-1.0, 1.5, H, at::kDouble));
    w.narrow(0, r_ang, S).zero_();
  }
  at::manual_seed(10);
  at::Tensor x = at::randn({2, 27, kD}, at::kDouble);
  x.select(2, kD - 1).fill_(1.0);
  const Proj p = project(*m, x);
  ASSERT_TRUE((p.lam == 1.0).all().item<bool>());
  ssmlab::ops::SsdScanOptions so;
  so.D = m->D;
  so.dt_softplus = false;
  so.chunk_size = 4;
  const at::Tensor A = p.A.select(1, 0).select(0, 0);  // (H), the same at every token
  ASSERT_TRUE(at::equal(p.A, A.expand_as(p.A)));
  const auto r = ssmlab::ops::ssd_scan(p.x, p.dt, A, p.k.select(2, 0), p.q.select(2, 0), so, "reference");
  const at::Tensor want =
      at::matmul((r.y * p.z * at::sigmoid(p.z)).reshape({2, 27, E}), m->out_proj->weight.t());
  EXPECT_TRUE(all_close(m->forward(x), want, ssmlab::test::kFp64Forward, "mamba3 (lambda 1, theta 0) vs mamba2"));
  State s = state_fp64(*m, 2);
  m->forward_stateful(x, s);
  EXPECT_TRUE(all_close(s.at("state"), r.final_state, ssmlab::test::kFp64Forward, "final state"));
  // With the trapezoid at its init logits (~0) the previous token's term matters: the same check fails.
  {
    at::NoGradGuard ng;
    m->in_proj->weight.narrow(0, r_trap, H).select(1, kD - 1).fill_(0.0);
  }
  EXPECT_GT((m->forward(x) - want).abs().max().item<double>(), 1e-6);
}

TEST(Mamba3Mixer, ParameterNamesShapesAndInitAsUpstream) {
  for (bool mimo : {false, true})
    for (bool norm : {false, true}) {
      SCOPED_TRACE(std::string(mimo ? "mimo" : "siso") + (norm ? " norm" : ""));
      // Upstream's defaults at d_model 256: N 128, P 64, E 512, H 8, S 32 (rope 0.5), R 4.
      Mamba3Options o;
      o.mimo = mimo;
      o.outproj_norm = norm;
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
      Mamba3Impl m(o, 256, "auto", gen);
      const int64_t R = mimo ? 4 : 1;
      ASSERT_EQ(m.n_angles(), 32);
      std::map<std::string, std::vector<int64_t>> want = {
          {"in_proj.weight", {2 * 512 + 2 * R * 128 + 3 * 8 + 32, 256}},
          {"dt_bias", {8}},
          {"B_bias", {8, R, 128}},
          {"C_bias", {8, R, 128}},
          {"B_norm.weight", {128}},
          {"C_norm.weight", {128}},
          {"D", {8}},
          {"out_proj.weight", {256, 512}}};
      if (mimo)
        for (const char* n : {"mimo_x", "mimo_z", "mimo_o"}) want[n] = {8, 4, 64};
      if (norm) want["norm.weight"] = {512};
      std::map<std::string, std::vector<int64_t>> got;
      for (const auto& p : m.named_parameters()) got[p.key()] = p.value().sizes().vec();
      EXPECT_EQ(got, want);
      // Init (spec A.5).
      EXPECT_TRUE((m.B_bias == 1).all().item<bool>() && (m.C_bias == 1).all().item<bool>());
      EXPECT_TRUE((m.D == 1).all().item<bool>() && (m.B_norm_weight == 1).all().item<bool>());
      if (mimo) {
        EXPECT_TRUE(at::allclose(m.mimo_x, at::full_like(m.mimo_x, 0.25)));
        EXPECT_TRUE((m.mimo_z == 1).all().item<bool>());
        EXPECT_TRUE(at::allclose(m.mimo_o, at::full_like(m.mimo_o, 0.25)));
      }
      const at::Tensor dt = at::softplus(m.dt_bias.to(at::kDouble));
      EXPECT_GE(dt.min().item<double>(), 1e-3 * (1 - 1e-6));
      EXPECT_LE(dt.max().item<double>(), 0.1 * (1 + 1e-6));
      const double bound = 1.0 / std::sqrt(256.0);
      EXPECT_LE(m.in_proj->weight.abs().max().item<double>(), bound);
      EXPECT_GT(m.in_proj->weight.abs().max().item<double>(), 0.9 * bound);
      EXPECT_EQ(m.state_size(), 8 * 64 * 128 + 8 * 32 + R * 8 * 128 + 8 * 64);
    }
  // rope 1.0: S = 64 at N = 128; odd products round down to even before halving (N 10, rope 0.5: 5 -> 4 -> S 2).
  Mamba3Options o;
  o.rope_fraction = 1.0;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  EXPECT_EQ(Mamba3Impl(o, 64, "auto", gen).n_angles(), 64);
  o.rope_fraction = 0.5;
  o.d_state = 10;
  o.head_dim = 16;
  EXPECT_EQ(Mamba3Impl(o, 64, "auto", gen).n_angles(), 2);
}

TEST(Mamba3Mixer, DecayMapsClosedForms) {
  for (const char* map : {"softplus", "heavy_tail"}) {
    Mamba3Options o = small(false);
    o.a_map = map;
    o.A_floor = 1e-4;
    auto m = make(o, 1);
    const at::Tensor dd = at::tensor({-1e9, -3.0, -1.0, 0.0, 2.0}, at::kDouble).requires_grad_(true);
    const at::Tensor A = m->decay_rate(dd);
    std::vector<double> want;
    if (std::string(map) == "heavy_tail")
      want = {-1e-4, -0.25, -0.5, -1.0, -3.0};  // 1/(1 - x) below 0 (clamped to -A_floor far out), 1 + x above
    else
      want = {-1e-4, -std::log1p(std::exp(-3.0)), -std::log1p(std::exp(-1.0)), -std::log(2.0), -std::log1p(std::exp(2.0))};
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(A[i].item<double>(), want[i], 1e-14) << map << " " << i;
    A.sum().backward();
    EXPECT_TRUE(at::isfinite(dd.grad()).all().item<bool>()) << map;
    EXPECT_EQ(dd.grad()[0].item<double>(), 0.0) << map << ": the clamp holds the far tail";
  }
}

// Gradients of the float64 layer against central finite differences, for a few entries of every parameter and
// of the input (reference op and the default backend).
TEST(Mamba3Mixer, GradientsMatchFiniteDifferences) {
  for (bool mimo : {false, true})
    for (const char* backend : {"reference", "auto"}) {
      SCOPED_TRACE(std::string(mimo ? "mimo " : "siso ") + backend);
      Mamba3Options o = small(mimo, 2);
      o.outproj_norm = mimo;
      o.a_map = mimo ? "heavy_tail" : "softplus";
      o.chunk_size = 4;
      auto m = make(o, 11, backend);
      at::manual_seed(12);
      at::Tensor x = at::randn({2, 9, kD}, at::kDouble).requires_grad_(true);
      const at::Tensor w = at::randn({2, 9, kD}, at::kDouble);
      auto loss = [&]() { return (m->forward(x) * w).sum(); };
      std::vector<at::Tensor> wrt = {x};
      std::vector<std::string> names = {"input"};
      for (auto& p : m->named_parameters()) {
        wrt.push_back(p.value());
        names.push_back(p.key());
      }
      const auto grads = torch::autograd::grad({loss()}, wrt);
      at::NoGradGuard ng;
      for (size_t i = 0; i < wrt.size(); ++i) {
        at::Tensor flat = wrt[i].view({-1});
        const at::Tensor g = grads[i].reshape({-1});
        for (int64_t j : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
          const double h = ssmlab::test::kFiniteDiffStep, v = flat[j].item<double>();
          flat[j].fill_(v + h);
          const double up = loss().item<double>();
          flat[j].fill_(v - h);
          const double down = loss().item<double>();
          flat[j].fill_(v);
          const double fd = (up - down) / (2 * h), ad = g[j].item<double>();
          EXPECT_LE(std::abs(fd - ad), ssmlab::test::kFiniteDiff.atol + ssmlab::test::kFiniteDiff.rtol * std::abs(fd))
              << names[i] << "[" << j << "]: autograd " << ad << " vs finite difference " << fd;
        }
      }
    }
}

TEST(Mamba3Mixer, TraceRecordsDecayDtKeysQueriesAndState) {
  for (bool mimo : {false, true}) {
    auto m = make(small(mimo, 3), 13);
    ssmlab::Trace trace;
    const at::Tensor x = at::randn({2, 9, kD}, at::kDouble);
    m->forward(x, &trace);
    const int64_t H = m->n_heads(), R = m->rank(), N = 8, P = 8;
    const at::Tensor d = trace.get("decay", 0), dt = trace.get("dt", 0);
    EXPECT_EQ(d.sizes(), (std::vector<int64_t>{2, 9, H}));
    EXPECT_TRUE((d > 0).all().item<bool>() && (d < 1).all().item<bool>());
    const Proj p = project(*m, x);
    EXPECT_TRUE(all_close(d, at::exp(p.A * p.dt), ssmlab::test::kFp64Forward, "decay = exp(A dt)"));
    EXPECT_TRUE(all_close(dt, p.dt, ssmlab::test::kFp64Forward, "dt"));
    EXPECT_TRUE(all_close(trace.get("B", 0), p.k, ssmlab::test::kFp64Forward, "B = k"));
    EXPECT_TRUE(all_close(trace.get("C", 0), p.q, ssmlab::test::kFp64Forward, "C = q"));
    EXPECT_TRUE(all_close(trace.get("trap", 0), p.lam, ssmlab::test::kFp64Forward, "trap = lambda"));
    EXPECT_TRUE(all_close(trace.get("theta", 0), p.theta, ssmlab::test::kFp64Forward, "theta"));
    EXPECT_EQ(trace.get("B", 0).sizes(), (std::vector<int64_t>{2, 9, R, H, N}));
    EXPECT_EQ(trace.get("state", 0).sizes(), (std::vector<int64_t>{2, H, P, N}));
  }
}

TEST(Mamba3Mixer, BadOptionsAndStatesAreErrors) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto bad = [&](auto edit, const char* part) {
    Mamba3Options o = small(false);
    edit(o);
    ssmlab::test::expect_error([&] { Mamba3Impl(o, kD, "auto", gen); }, {"mamba3", part});
  };
  bad([](Mamba3Options& o) { o.rope_fraction = 0.7; }, "rope_fraction");
  bad([](Mamba3Options& o) { o.head_dim = 5; }, "head_dim");
  bad([](Mamba3Options& o) { o.n_groups = 3; }, "n_groups");
  bad([](Mamba3Options& o) { o.a_map = "exp"; }, "a_map");
  bad([](Mamba3Options& o) { o.d_state = 1; }, "d_state");
  bad([](Mamba3Options& o) { o.dt_max = 1e-4; }, "dt_min");
  bad([](Mamba3Options& o) { o.A_floor = 0.0; }, "A_floor");
  auto m = make(small(true), 2);
  State s = state_fp64(*m, 2);
  ssmlab::test::expect_error([&] { m->step(at::randn({3, kD}, at::kDouble), s); }, {"mamba3.step", "batch 3"});
  ssmlab::test::expect_error([&] { m->forward(at::randn({2, 3, kD + 1}, at::kDouble)); }, {"mamba3", "(B, L, D)"});
  s["k_prev"] = at::zeros({2, 1, m->n_heads(), 8}, at::kDouble);  // a SISO cache on a MIMO layer
  ssmlab::test::expect_error([&] { m->forward_stateful(at::randn({2, 3, kD}, at::kDouble), s); }, {"k_prev"});
  State empty;
  ssmlab::test::expect_error([&] { m->forward_stateful(at::randn({2, 3, kD}, at::kDouble), empty); }, {"phase"});
}

}  // namespace

}  // namespace mixers_test_mamba3
