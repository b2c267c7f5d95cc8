// The Mamba-3 scan's CUDA path (ops/mamba3/ssd_kernels.cpp): the fused path's preparation and finish around
// ops/ssd_scan's fused kernels running the look-ahead SSD core (MIMO as T R rows plus the in-token term).
// - Mamba3SsdKernels (runs everywhere): the same mapping with ssd_scan's fused CPU kernels as the core and the
//   ATen twin of the rotation kernels (whose hand-written backward is checked against autograd),
//   output, all four carried tensors and the gradient of every input against the time-stepped float64 reference,
//   SISO and MIMO (R 2, 4), both pairings, initial states, T from 1 to past several kernel chunks, NaN-poisoned
//   kernel outputs; float32; the SSMLAB_MAMBA3_CUDA values.
// - Mamba3Cuda (skipped without a usable CUDA device): "auto" on CUDA takes the kernels; the kernels against the
//   float64 reference on CPU copies, forward and every gradient, float64 (time-stepped SSD kernels), float32
//   (chunked tensor-core kernels, and the time-stepped ones by SSMLAB_SSD_CUDA=sequential), bfloat16 q/k/x (bf16
//   tensor-core products, and split tf32 by SSMLAB_MAMBA3_CUDA=fp32), odd T, P and N, initial states, MIMO, the
//   target head (N 128, P 64, S 32), on a NaN-poisoned allocator; the SSMLAB_MAMBA3_CUDA=chunked bypass; the
//   rotation kernels against their ATen twin.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cuda_test_util.h"
#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/mamba3/detail.h"
#include "ssmlab/ops/mamba3/mamba3.h"
#include "ssmlab/ops/ssd_scan/cpu.h"
#include "tolerances.h"

namespace ops_test_mamba3_cuda {

namespace {

using at::Tensor;
using ssmlab::ops::Mamba3Options;
using ssmlab::ops::Mamba3Out;
using ssmlab::ops::Mamba3Pairing;
using ssmlab::ops::Mamba3State;
using ssmlab::test::all_close;
using ssmlab::test::Tol;

struct Spec {
  int64_t b, t, r, h, n, p, s;
  Mamba3Pairing pairing;
  bool h0;
};
std::string label(const Spec& c) {
  return ssmlab::str("B ", c.b, " T ", c.t, " R ", c.r, " H ", c.h, " N ", c.n, " P ", c.p, " S ", c.s, " ",
                     ssmlab::ops::to_string(c.pairing), " h0 ", c.h0);
}

// Every input of one case; init present when the case has an initial state.
struct In {
  Tensor q, k, x, adt, dt, trap, theta, D;
  std::optional<Mamba3State> init;
  Mamba3Pairing pairing = Mamba3Pairing::adjacent;
};

// float64 CPU masters: q, k ~ (0.5 N(0, 1) + 0.5) N^-1/4 (q.k of order one, as normalised keys); x ~ N(0, 1);
// dt log-uniform in [1e-3, 0.2]; adt = -U(0.1, 3) dt; trap ~ N(0, 1); theta = pi tanh(N(0, 1)); D ~ N(0, 1);
// initial phase U(0, 2pi), state, k_prev, x_prev ~ 0.5 N(0, 1).
In masters(const Spec& c, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto r = [&](std::vector<int64_t> sz) { return at::randn(sz, gen, at::kDouble); };
  auto u = [&](std::vector<int64_t> sz) { return at::rand(sz, gen, at::kDouble); };
  const double qk_scale = std::pow(static_cast<double>(c.n), -0.25);
  In in;
  in.q = (r({c.b, c.t, c.r, c.h, c.n}) * 0.5 + 0.5) * qk_scale;
  in.k = (r({c.b, c.t, c.r, c.h, c.n}) * 0.5 + 0.5) * qk_scale;
  in.x = r({c.b, c.t, c.r, c.h, c.p});
  in.dt = at::exp(std::log(1e-3) + u({c.b, c.t, c.h}) * (std::log(0.2) - std::log(1e-3)));
  in.adt = -(u({c.b, c.t, c.h}) * 2.9 + 0.1) * in.dt;
  in.trap = r({c.b, c.t, c.h});
  in.theta = M_PI * at::tanh(r({c.b, c.t, c.h, c.s}));
  in.D = r({c.h});
  in.pairing = c.pairing;
  if (c.h0)
    in.init = Mamba3State{u({c.b, c.h, c.s}) * 2 * M_PI, r({c.b, c.h, c.p, c.n}) * 0.5, r({c.b, c.r, c.h, c.n}) * 0.5,
                          r({c.b, c.r, c.h, c.p}) * 0.5};
  return in;
}

// The case on `dev`: q, k, x (and k_prev, x_prev) in `dtype`; the rest in float32 for 16-bit dtypes (the op's
// contract: adt, dt, trap, theta, the phase and the state are fp32), else in `dtype`. Fresh leaves.
In cast(const In& m, at::Device dev, at::ScalarType dtype) {
  const bool narrow = dtype == at::kBFloat16 || dtype == at::kHalf;
  const auto wide = narrow ? at::kFloat : dtype;
  auto as = [&](const Tensor& t, at::ScalarType st) { return t.to(dev, st).detach().requires_grad_(true); };
  In o;
  o.q = as(m.q, dtype), o.k = as(m.k, dtype), o.x = as(m.x, dtype);
  o.adt = as(m.adt, wide), o.dt = as(m.dt, wide), o.trap = as(m.trap, wide), o.theta = as(m.theta, wide);
  o.D = as(m.D, wide);
  o.pairing = m.pairing;
  if (m.init)
    o.init = Mamba3State{as(m.init->phase, wide), as(m.init->state, wide), as(m.init->k_prev, dtype),
                         as(m.init->x_prev, dtype)};
  return o;
}

// The values `in` holds, as float64 CPU leaves (the oracle's inputs: the same rounded values).
In as_double(const In& in) {
  auto d = [](const Tensor& t) { return t.detach().to(at::kCPU, at::kDouble).requires_grad_(true); };
  In o;
  o.q = d(in.q), o.k = d(in.k), o.x = d(in.x), o.adt = d(in.adt), o.dt = d(in.dt), o.trap = d(in.trap);
  o.theta = d(in.theta), o.D = d(in.D);
  o.pairing = in.pairing;
  if (in.init) o.init = Mamba3State{d(in.init->phase), d(in.init->state), d(in.init->k_prev), d(in.init->x_prev)};
  return o;
}

std::vector<Tensor> leaves(const In& in) {
  std::vector<Tensor> v = {in.q, in.k, in.x, in.adt, in.dt, in.trap, in.theta, in.D};
  if (in.init)
    for (const Tensor& t : {in.init->phase, in.init->state, in.init->k_prev, in.init->x_prev}) v.push_back(t);
  return v;
}
const char* kNames[] = {"y",  "phase", "state", "k_prev", "x_prev", "dq", "dk", "dx", "dadt", "ddt", "dtrap",
                        "dtheta", "dD", "dphase0", "dstate0", "dk_prev0", "dx_prev0"};

Mamba3Options options_of(const In& in, int64_t chunk = 64) {
  Mamba3Options o;
  o.pairing = in.pairing;
  o.D = in.D;
  o.initial = in.init;
  o.chunk_size = chunk;
  return o;
}

using Runner = std::function<Mamba3Out(const In&)>;
Mamba3Out run_scan(const In& in, const std::string& backend) {
  return ssmlab::ops::mamba3_scan(in.q, in.k, in.x, in.adt, in.dt, in.trap, in.theta, options_of(in), backend);
}
// The SSD-kernel path called directly (the CPU twin on CPU tensors).
Mamba3Out run_kernels(const In& in) {
  const Mamba3Options o = options_of(in);
  ssmlab::ops::check_mamba3_inputs(in.q, in.k, in.x, in.adt, in.dt, in.trap, in.theta, o);
  return ssmlab::ops::mamba3_ssd_kernels(in.q, in.k, in.x, in.adt, in.dt, in.trap, in.theta, o);
}

// Cotangents for y and the four carried tensors, rounded to each output's dtype (what the op receives).
std::vector<Tensor> cotangents(const Mamba3Out& like, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<Tensor> c;
  for (const Tensor& t : {like.y, like.final.phase, like.final.state, like.final.k_prev, like.final.x_prev})
    c.push_back(at::randn(t.sizes(), gen, at::kDouble).to(t.scalar_type()).to(at::kDouble));
  return c;
}

// y, phase, state, k_prev, x_prev, then the gradient of sum <output, cotangent> w.r.t. every leaf; float64 CPU.
std::vector<Tensor> results(const In& in, const Runner& f, const std::vector<Tensor>& cot) {
  const Mamba3Out o = f(in);
  const std::vector<Tensor> outs = {o.y, o.final.phase, o.final.state, o.final.k_prev, o.final.x_prev};
  Tensor loss;
  for (size_t i = 0; i < outs.size(); ++i) {
    const Tensor term = (outs[i].to(at::kDouble) * cot[i].to(outs[i].device())).sum();
    loss = loss.defined() ? loss + term : term;
  }
  auto r = torch::autograd::grad({loss}, leaves(in), {}, false, false, /*allow_unused=*/true);
  r.insert(r.begin(), outs.begin(), outs.end());
  for (auto& t : r)
    if (t.defined()) t = t.detach().to(at::kCPU, at::kDouble);
  return r;
}

// The run under test against the float64 reference on the same values: every output finite and close
// (the phase modulo 2pi), every gradient defined, finite and close.
void check(const In& in, const Runner& f, Tol ftol, Tol gtol, uint64_t seed) {
  const In ref_in = as_double(in);
  const Runner ref = [](const In& i) { return run_scan(i, "reference"); };
  const Mamba3Out probe = f(in);
  const auto cot = cotangents(probe, seed);
  const auto want = results(ref_in, ref, cot);
  const auto got = results(in, f, cot);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const std::string name = kNames[i];
    ASSERT_TRUE(got[i].defined()) << name;
    EXPECT_TRUE(ssmlab::test::all_finite(got[i], name));
    const bool grad = i >= 5;
    const Tol tol = grad ? gtol : ftol;
    if (name == "phase") {
      const Tensor d = at::remainder(got[i] - want[i] + M_PI, 2 * M_PI) - M_PI;
      EXPECT_TRUE(all_close(d, at::zeros_like(d), tol, name + " (mod 2pi)"));
    } else {
      EXPECT_TRUE(all_close(got[i], want[i], tol, name));
    }
  }
}

// NaN in every output buffer of ssd_scan's CPU kernels for the scope.
struct PoisonCpuKernels {
  PoisonCpuKernels() { ssmlab::ops::ssd_scan_cpu::set_poison_outputs(true); }
  ~PoisonCpuKernels() { ssmlab::ops::ssd_scan_cpu::set_poison_outputs(false); }
  PoisonCpuKernels(const PoisonCpuKernels&) = delete;
  PoisonCpuKernels& operator=(const PoisonCpuKernels&) = delete;
};

// Sets an environment variable until destroyed (null: unset for the scope).
struct EnvScope {
  EnvScope(const char* name, const char* v) : name_(name) {
    const char* old = std::getenv(name);
    if (old) old_ = old;
    if (v)
      setenv(name, v, 1);
    else
      unsetenv(name);
  }
  ~EnvScope() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }
  EnvScope(const EnvScope&) = delete;
  EnvScope& operator=(const EnvScope&) = delete;
  const char* name_;
  std::optional<std::string> old_;
};

const std::vector<Spec>& twin_specs() {
  static const std::vector<Spec> v = {
      {2, 1, 1, 3, 8, 5, 2, Mamba3Pairing::adjacent, true},    {2, 37, 1, 3, 8, 5, 2, Mamba3Pairing::adjacent, false},
      {1, 150, 1, 2, 9, 4, 3, Mamba3Pairing::adjacent, true},  {2, 37, 2, 3, 8, 5, 2, Mamba3Pairing::halves, true},
      {1, 70, 4, 2, 8, 3, 4, Mamba3Pairing::halves, false},    {1, 45, 4, 2, 6, 3, 2, Mamba3Pairing::halves, true},
      {2, 29, 2, 2, 10, 4, 4, Mamba3Pairing::adjacent, true},  {1, 50, 3, 2, 8, 4, 2, Mamba3Pairing::halves, true}};
  // R 3: the kernels' 64-row chunks cut tokens (64 / 3 is not whole).
  return v;
}

// ---- the CPU twin: the mapping onto ssd_scan's kernels, with its CPU kernels ---------------------------------

TEST(Mamba3SsdKernels, CpuTwinMatchesReferenceForwardAndEveryGradient) {
  PoisonCpuKernels poison;
  uint64_t seed = 100;
  for (const Spec& c : twin_specs()) {
    SCOPED_TRACE(label(c));
    const In in = cast(masters(c, seed), at::kCPU, at::kDouble);
    check(in, run_kernels, ssmlab::test::kFp64Forward, ssmlab::test::kFp64Grad, seed + 1);
    seed += 2;
  }
}

// float32 and bfloat16 inputs (the CPU kernels compute in fp32 for both), the target head (N 128, P 64, S 32)
// included: the tolerances the CUDA tests use, met by the mapping on fp32-accurate kernels.
TEST(Mamba3SsdKernels, CpuTwinFloat32AndBfloat16) {
  PoisonCpuKernels poison;
  for (const auto dtype : {at::kFloat, at::kBFloat16})
    for (const Spec& c : {Spec{2, 41, 1, 2, 16, 8, 4, Mamba3Pairing::adjacent, true},
                          Spec{1, 33, 2, 2, 16, 8, 4, Mamba3Pairing::halves, true},
                          Spec{1, 200, 1, 2, 128, 64, 32, Mamba3Pairing::adjacent, true}}) {
      SCOPED_TRACE(ssmlab::str(label(c), " ", c10::toString(dtype)));
      const In in = cast(masters(c, 200), at::kCPU, dtype);
      check(in, run_kernels, dtype == at::kFloat ? ssmlab::test::kFp32Forward : ssmlab::test::kBf16Forward,
            dtype == at::kFloat ? ssmlab::test::kFp32Grad : ssmlab::test::kBf16Grad, 201);
    }
}

// The twin would pass with the in-token term dropped only if R = 1: this MIMO case on a hand check makes the term
// visible. R = 2, N = P = 1, one token, no rotation (S = 0), dt = 1, lambda = sigmoid(0) = 1/2, so s_0 = gamma_0 = 1/2 (rho = 0 at the last token): h = 1/2 (x_0 k_0 + x_1 k_1); y_a = h q_a.
// With q = (1, 1), k = (1, 2), x = (3, 5): h = 1/2 (3 + 10) = 6.5, y = (6.5, 6.5); rank 0's read-out before
// rank 1's write would give 1.5.
TEST(Mamba3SsdKernels, MimoReadOutSeesEveryRankOfItsToken) {
  In in;
  in.q = at::ones({1, 1, 2, 1, 1}, at::kDouble);
  in.k = at::tensor({1.0, 2.0}, at::kDouble).view({1, 1, 2, 1, 1});
  in.x = at::tensor({3.0, 5.0}, at::kDouble).view({1, 1, 2, 1, 1});
  in.adt = at::full({1, 1, 1}, -0.5, at::kDouble);
  in.dt = at::ones({1, 1, 1}, at::kDouble);
  in.trap = at::zeros({1, 1, 1}, at::kDouble);
  in.theta = at::zeros({1, 1, 1, 0}, at::kDouble);
  in.D = at::zeros({1}, at::kDouble);
  const Mamba3Out o = run_kernels(in);
  EXPECT_TRUE(all_close(o.y, at::full({1, 1, 2, 1, 1}, 6.5, at::kDouble), ssmlab::test::kFp64Forward, "y"));
  EXPECT_TRUE(all_close(o.final.state, at::full({1, 1, 1, 1}, 6.5, at::kDouble), ssmlab::test::kFp64Forward,
                        "state"));
}

TEST(Mamba3SsdKernels, CudaModeSwitchValues) {
  {
    EnvScope e("SSMLAB_MAMBA3_CUDA", nullptr);
    EXPECT_EQ(ssmlab::ops::mamba3_cuda_mode(), "kernels");
  }
  for (const char* v : {"kernels", "chunked", "fp32"}) {
    EnvScope e("SSMLAB_MAMBA3_CUDA", v);
    EXPECT_EQ(ssmlab::ops::mamba3_cuda_mode(), v);
  }
  EnvScope e("SSMLAB_MAMBA3_CUDA", "bogus");
  try {
    (void)ssmlab::ops::mamba3_cuda_mode();
    ADD_FAILURE() << "no error for SSMLAB_MAMBA3_CUDA=bogus";
  } catch (const ssmlab::Error& err) {
    EXPECT_NE(std::string(err.what()).find("SSMLAB_MAMBA3_CUDA"), std::string::npos) << err.what();
  }
  // CPU tensors never take the CUDA path, whatever the switch says.
  const Tensor q = at::zeros({1, 2, 1, 1, 4}), x = at::zeros({1, 2, 1, 1, 3});
  EXPECT_FALSE(ssmlab::ops::mamba3_cuda_supports(q, x));
  EXPECT_TRUE(ssmlab::ops::mamba3_ssd_kernels_support(q, x));
}

// The rotation and key scale (detail.h rotate_scale; kernel_rotate.cuh's contract): q~ = Rot(phi, q),
// kk = sc Rot(phi, k), with q, k, cos, sin, sc as leaves and random cotangents on both outputs. Returns q~, kk and
// the five gradients as float64 CPU tensors.
struct RotateCase {
  int64_t b, t, r, h, n, s;
  Mamba3Pairing pairing;
};
std::vector<Tensor> rotate_masters(const RotateCase& c, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const Tensor phi = at::rand({c.b, c.t, c.h, c.s}, gen, at::kDouble) * 2 * M_PI;
  return {at::randn({c.b, c.t, c.r, c.h, c.n}, gen, at::kDouble), at::randn({c.b, c.t, c.r, c.h, c.n}, gen, at::kDouble),
          at::cos(phi), at::sin(phi), at::rand({c.b, c.t, c.h}, gen, at::kDouble) + 0.1,
          at::randn({c.b, c.t, c.r, c.h, c.n}, gen, at::kDouble), at::randn({c.b, c.t, c.r, c.h, c.n}, gen, at::kDouble)};
}
std::vector<Tensor> rotate_results(const std::vector<Tensor>& m, const RotateCase& c, at::Device dev,
                                   at::ScalarType qk_dtype, at::ScalarType ct, bool via_autograd_of_aten) {
  std::vector<Tensor> in;
  for (int i = 0; i < 5; ++i) in.push_back(m[i].to(dev, i < 2 ? qk_dtype : ct).detach().requires_grad_(true));
  Tensor qr, kk;
  if (via_autograd_of_aten) {
    const Tensor c5 = in[2].unsqueeze(2), s5 = in[3].unsqueeze(2);
    qr = ssmlab::ops::mamba3_detail::rotate(in[0].to(ct), c5, s5, c.pairing);
    kk = ssmlab::ops::mamba3_detail::rotate(in[1].to(ct), c5, s5, c.pairing) * in[4].unsqueeze(2).unsqueeze(-1);
  } else {
    std::tie(qr, kk) = ssmlab::ops::mamba3_detail::rotate_scale(in[0], in[1], in[2], in[3], in[4], c.pairing);
  }
  EXPECT_EQ(qr.scalar_type(), ct);
  const Tensor loss = (qr.to(at::kDouble) * m[5].to(dev)).sum() + (kk.to(at::kDouble) * m[6].to(dev)).sum();
  auto r = torch::autograd::grad({loss}, in, {}, false, false, /*allow_unused=*/true);  // S = 0: cos, sin unused
  for (size_t i = 0; i < r.size(); ++i)
    if (!r[i].defined()) r[i] = at::zeros_like(in[i]);
  r.insert(r.begin(), {qr, kk});
  for (auto& t : r) t = t.detach().to(at::kCPU, at::kDouble);
  return r;
}
const char* kRotateNames[] = {"q~", "kk", "dq", "dk", "dcos", "dsin", "dsc"};
const std::vector<RotateCase>& rotate_cases() {
  static const std::vector<RotateCase> v = {{2, 5, 1, 3, 8, 2, Mamba3Pairing::adjacent},
                                            {1, 7, 2, 2, 9, 3, Mamba3Pairing::adjacent},
                                            {2, 3, 4, 2, 12, 3, Mamba3Pairing::halves},
                                            {1, 4, 1, 2, 6, 0, Mamba3Pairing::halves},
                                            {1, 3, 1, 33, 128, 32, Mamba3Pairing::adjacent},
                                            {1, 3, 2, 5, 130, 65, Mamba3Pairing::halves}};
  return v;
}

// The twin's hand-written backward against autograd through the plain ATen rotation (float64).
TEST(Mamba3SsdKernels, RotateScaleBackwardMatchesAutograd) {
  uint64_t seed = 900;
  for (const RotateCase& c : rotate_cases()) {
    SCOPED_TRACE(ssmlab::str("R ", c.r, " H ", c.h, " N ", c.n, " S ", c.s, " ", ssmlab::ops::to_string(c.pairing)));
    const auto m = rotate_masters(c, seed++);
    const auto want = rotate_results(m, c, at::kCPU, at::kDouble, at::kDouble, true);
    const auto got = rotate_results(m, c, at::kCPU, at::kDouble, at::kDouble, false);
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_TRUE(all_close(got[i], want[i], ssmlab::test::kFp64Grad, kRotateNames[i]));
  }
}

// ---- CUDA ----------------------------------------------------------------------------------------------------

// The rotation kernels (kernel_rotate.cuh) against the ATen twin on CPU copies: float64 (to rounding), float32, and
// bf16 / mixed q, k with fp32 compute; rows past one block, R > 1, odd N, S = 0, N / 2 pairs.
TEST(Mamba3Cuda, RotateKernelsMatchTheTwin) {
  SKIP_WITHOUT_CUDA();
  const at::Device cuda(at::kCUDA, 0);
  uint64_t seed = 950;
  for (const RotateCase& c : rotate_cases())
    for (const auto& [qk, ct] : {std::pair{at::kDouble, at::kDouble}, std::pair{at::kFloat, at::kFloat},
                                 std::pair{at::kBFloat16, at::kFloat}}) {
      SCOPED_TRACE(ssmlab::str("R ", c.r, " H ", c.h, " N ", c.n, " S ", c.s, " ", ssmlab::ops::to_string(c.pairing),
                               " ", c10::toString(qk)));
      ssmlab::test::poison_allocator();
      const auto m = rotate_masters(c, seed++);
      const auto want = rotate_results(m, c, at::kCPU, qk, ct, false);
      const auto got = rotate_results(m, c, cuda, qk, ct, false);
      for (size_t i = 0; i < got.size(); ++i) {
        // dq, dk come back in q's and k's dtype: for bf16 both sides round fp32 values that differ in the last
        // bits, so an element may land one bf16 step apart.
        const bool rounded = (i == 2 || i == 3) && qk == at::kBFloat16;
        const Tol tol = ct == at::kDouble ? ssmlab::test::kFp64Forward
                        : rounded         ? ssmlab::test::kBf16Grad
                                          : ssmlab::test::kFp32Grad;
        EXPECT_TRUE(ssmlab::test::all_finite(got[i], kRotateNames[i]));
        EXPECT_TRUE(all_close(got[i], want[i], tol, kRotateNames[i]));
      }
    }
}


const at::Device kCuda(at::kCUDA, 0);

Mamba3Out run_auto(const In& in) { return run_scan(in, "auto"); }

TEST(Mamba3Cuda, AutoTakesTheKernelsAndTheSwitchBypassesThem) {
  SKIP_WITHOUT_CUDA();
  const In in = cast(masters({1, 20, 1, 2, 8, 4, 2, Mamba3Pairing::adjacent, false}, 300), kCuda, at::kFloat);
  {
    EnvScope e("SSMLAB_MAMBA3_CUDA", nullptr);
    ASSERT_TRUE(ssmlab::ops::mamba3_cuda_supports(in.q, in.x)) << "is this a build with CUDA kernels?";
    EXPECT_EQ(ssmlab::ops::mamba3_path(in.q, "auto", in.x), ssmlab::ops::Mamba3Path::fused);
    // P > 64 is outside ssd_scan's kernels: "auto" runs the chunked form, "fused" is an error naming the limits.
    const Tensor wide_x = at::zeros({1, 20, 1, 2, 65}, in.x.options());
    EXPECT_EQ(ssmlab::ops::mamba3_path(in.q, "auto", wide_x), ssmlab::ops::Mamba3Path::chunked);
  }
  {
    EnvScope e("SSMLAB_MAMBA3_CUDA", "chunked");
    EXPECT_EQ(ssmlab::ops::mamba3_path(in.q, "auto", in.x), ssmlab::ops::Mamba3Path::chunked);
    check(in, run_auto, ssmlab::test::kFp32Forward, ssmlab::test::kFp32Grad, 301);
  }
}

TEST(Mamba3Cuda, Float64MatchesReference) {
  SKIP_WITHOUT_CUDA();
  EnvScope e("SSMLAB_MAMBA3_CUDA", nullptr);
  uint64_t seed = 400;
  for (const Spec& c : twin_specs()) {
    SCOPED_TRACE(label(c));
    ssmlab::test::poison_allocator();
    const In in = cast(masters(c, seed), kCuda, at::kDouble);
    check(in, run_auto, ssmlab::test::kFp64Forward, ssmlab::test::kFp64Grad, seed + 1);
    seed += 2;
  }
}

// float32: ssd_scan's chunked tensor-core kernels (split tf32), and the time-stepped kernels by
// SSMLAB_SSD_CUDA=sequential; odd T around the 64-row chunk, odd P and N, MIMO rows across chunk borders, the
// target head (N 128, P 64, S 32).
TEST(Mamba3Cuda, Float32MatchesReference) {
  SKIP_WITHOUT_CUDA();
  EnvScope e("SSMLAB_MAMBA3_CUDA", nullptr);
  const std::vector<Spec> specs = {{2, 300, 1, 2, 128, 64, 32, Mamba3Pairing::adjacent, true},
                                   {1, 65, 1, 3, 17, 33, 5, Mamba3Pairing::adjacent, false},
                                   {2, 77, 2, 2, 64, 16, 8, Mamba3Pairing::halves, true},
                                   {1, 33, 4, 2, 32, 8, 16, Mamba3Pairing::halves, true},
                                   {1, 90, 3, 2, 16, 8, 4, Mamba3Pairing::adjacent, true}};
  uint64_t seed = 500;
  for (const char* family : {"chunked", "sequential"}) {
    EnvScope alg("SSMLAB_SSD_CUDA", family);
    for (const Spec& c : specs) {
      SCOPED_TRACE(ssmlab::str(label(c), ", SSMLAB_SSD_CUDA=", family));
      ssmlab::test::poison_allocator();
      const In in = cast(masters(c, seed), kCuda, at::kFloat);
      check(in, run_auto, ssmlab::test::kFp32Forward, ssmlab::test::kFp32Grad, seed + 1);
      seed += 2;
    }
  }
}

// bfloat16 q, k, x (and k_prev, x_prev), float32 decay / dt / trap / theta / state: the forward multiplies in bf16
// on the tensor cores, or in split tf32 with SSMLAB_MAMBA3_CUDA=fp32.
TEST(Mamba3Cuda, Bfloat16MatchesReference) {
  SKIP_WITHOUT_CUDA();
  const std::vector<Spec> specs = {{2, 200, 1, 2, 128, 64, 32, Mamba3Pairing::adjacent, true},
                                   {1, 71, 2, 2, 64, 32, 16, Mamba3Pairing::halves, true}};
  uint64_t seed = 600;
  for (const char* mode : {"kernels", "fp32"}) {
    EnvScope e("SSMLAB_MAMBA3_CUDA", mode);
    for (const Spec& c : specs) {
      SCOPED_TRACE(ssmlab::str(label(c), ", SSMLAB_MAMBA3_CUDA=", mode));
      ssmlab::test::poison_allocator();
      const In in = cast(masters(c, seed), kCuda, at::kBFloat16);
      check(in, run_auto, ssmlab::test::kBf16Forward, ssmlab::test::kBf16Grad, seed + 1);
      seed += 2;
    }
  }
}

// A prefill on CUDA then decode steps (plain ATen) continue it exactly: the carried tensors are the contract.
TEST(Mamba3Cuda, PrefillThenDecodeEqualsOneForward) {
  SKIP_WITHOUT_CUDA();
  EnvScope e("SSMLAB_MAMBA3_CUDA", nullptr);
  const Spec c{2, 37, 2, 2, 16, 8, 4, Mamba3Pairing::halves, true};
  const In in = cast(masters(c, 700), kCuda, at::kDouble);
  at::NoGradGuard ng;
  const Mamba3Out whole = run_scan(in, "auto");
  In pre = in;
  for (Tensor* t : {&pre.q, &pre.k, &pre.x, &pre.adt, &pre.dt, &pre.trap, &pre.theta}) *t = t->narrow(1, 0, 29);
  const Mamba3Out first = run_scan(pre, "auto");
  Mamba3State st = first.final;
  std::vector<Tensor> ys = {first.y};
  for (int64_t t = 29; t < 37; ++t) {
    auto [y, next] = ssmlab::ops::mamba3_step(in.q.select(1, t), in.k.select(1, t), in.x.select(1, t),
                                              in.adt.select(1, t), in.dt.select(1, t), in.trap.select(1, t),
                                              in.theta.select(1, t), st, in.pairing, in.D);
    ys.push_back(y.unsqueeze(1));
    st = next;
  }
  EXPECT_TRUE(all_close(at::cat(ys, 1).cpu(), whole.y.cpu(), ssmlab::test::kFp64Forward, "y"));
  EXPECT_TRUE(all_close(st.state.cpu(), whole.final.state.cpu(), ssmlab::test::kFp64Forward, "state"));
  EXPECT_TRUE(all_close(st.k_prev.cpu(), whole.final.k_prev.cpu(), ssmlab::test::kFp64Forward, "k_prev"));
  EXPECT_TRUE(all_close(st.x_prev.cpu(), whole.final.x_prev.cpu(), ssmlab::test::kFp64Forward, "x_prev"));
}

}  // namespace

}  // namespace ops_test_mamba3_cuda
