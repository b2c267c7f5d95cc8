// The delta rule's CUDA path (ops/delta_rule/chunk_pass.h, cuda.cu): the intra-chunk UT/WY part in ATen plus
// one kernel per direction for the serial pass over chunks.
// - DeltaRuleChunkPass (runs everywhere): the same decomposition with the pass as a loop of ATen matmuls
//   (Impl::aten: the state pass, the output batched outside it), forward and hand-written backward, against the
//   time-stepped float64 reference; and both pass contracts (the full pass with the output inside, which the SIMT
//   kernels run, and the state pass) forward and backward against autograd through their ATen forwards.
// - DeltaRuleCuda (skipped without a usable CUDA device): "auto" on CUDA takes the kernels; kernels against the
//   float64 reference on CPU copies (output, final state, every gradient), fp64 / fp32 / bf16, no gate, per-head
//   and per-key gates, grouped value heads, initial state, odd sizes (L not a multiple of the chunk, V not a
//   multiple of 32, K odd), NaN-poisoned outputs; the kernels' pass against the ATen pass on the same inputs;
//   the SSMLAB_DELTA_CUDA=chunked switch; the decode step on CUDA. Kernel variants (SSMLAB_DELTA_CUDA): unset
//   (float32: the tensor-core state pass; float64: the SIMT kernels), simt and simple (the SIMT full-pass kernels).
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include "cuda_test_util.h"
#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/delta_rule/chunk_pass.h"
#include "ssmlab/ops/delta_rule/delta_rule.h"
#include "tolerances.h"

namespace ops_test_delta_rule_cuda {

namespace {

using at::Tensor;
using ssmlab::test::all_close;
namespace pass = ssmlab::ops::delta_rule_pass;

const at::Device kCuda(at::kCUDA, 0);

struct Case {
  int64_t b, l, h, hv, k, v;
  int gate;  // 0 none, 1 per head, 2 per key channel
  bool h0;
};

// Inputs as float64 CPU masters: q, k (L2-normalised, q scaled by K^-1/2), v, beta in (0, 2), g (by gate kind),
// h0 (when asked).
std::vector<Tensor> masters(const Case& c) {
  auto l2 = [](const Tensor& t) { return t / t.pow(2).sum(-1, true).sqrt(); };
  std::vector<Tensor> m = {l2(at::randn({c.b, c.l, c.h, c.k}, at::kDouble)) / std::sqrt(double(c.k)),
                           l2(at::randn({c.b, c.l, c.h, c.k}, at::kDouble)),
                           at::randn({c.b, c.l, c.hv, c.v}, at::kDouble),
                           at::sigmoid(at::randn({c.b, c.l, c.hv}, at::kDouble)) * 2.0};
  if (c.gate == 1) m.push_back(at::log_sigmoid(at::randn({c.b, c.l, c.hv}, at::kDouble) + 1.0));
  if (c.gate == 2) m.push_back(at::log_sigmoid(at::randn({c.b, c.l, c.hv, c.k}, at::kDouble) + 1.0));
  if (c.h0) m.push_back(at::randn({c.b, c.hv, c.k, c.v}, at::kDouble) * 0.5);
  return m;
}

using Runner =
    std::function<ssmlab::ops::DeltaRuleOut(const std::vector<Tensor>&, const ssmlab::ops::DeltaRuleOptions&)>;

// o, final state, then the gradient of <o, go> + <final, gs> w.r.t. every input, all as CPU float64.
std::vector<Tensor> run(const Case& c, const std::vector<Tensor>& ms, at::Device dev, at::ScalarType dt,
                        const Runner& f, const Tensor& go, const Tensor& gs, int64_t chunk = 16) {
  std::vector<Tensor> in;
  for (size_t i = 0; i < ms.size(); ++i) {
    // g and h0 arrive in fp32 for 16-bit runs (fla's layout: the gate and the state are fp32).
    const bool wide = (c.gate != 0 && i == 4) || (c.h0 && i + 1 == ms.size());
    const auto t = (wide && (dt == at::kBFloat16 || dt == at::kHalf)) ? at::kFloat : dt;
    in.push_back(ms[i].to(dev, t).detach().requires_grad_(true));
  }
  ssmlab::ops::DeltaRuleOptions o;
  if (c.gate != 0) o.g = in[4];
  if (c.h0) o.initial_state = in.back();
  o.chunk_size = chunk;
  const auto r = f(in, o);
  const Tensor loss = (r.o.to(at::kDouble) * go.to(dev)).sum() + (r.final_state.to(at::kDouble) * gs.to(dev)).sum();
  auto out = torch::autograd::grad({loss}, in);
  out.insert(out.begin(), {r.o, r.final_state});
  for (auto& t : out) t = t.detach().to(at::kCPU, at::kDouble);
  return out;
}

Runner backend(const std::string& name) {
  return [name](const std::vector<Tensor>& in, const ssmlab::ops::DeltaRuleOptions& o) {
    return ssmlab::ops::delta_rule(in[0], in[1], in[2], in[3], o, name);
  };
}

Runner pass_impl(pass::Impl impl) {
  return [impl](const std::vector<Tensor>& in, const ssmlab::ops::DeltaRuleOptions& o) {
    ssmlab::ops::check_delta_rule_inputs(in[0], in[1], in[2], in[3], o);
    return pass::run(in[0], in[1], in[2], in[3], o, impl);
  };
}

const char* kNames[] = {"o", "final_state", "dq", "dk", "dv", "dbeta", "dg|dh0", "dh0"};

void expect_match(const std::vector<Tensor>& got, const std::vector<Tensor>& want, at::ScalarType dt) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_TRUE(ssmlab::test::all_finite(got[i], kNames[i]));
    EXPECT_TRUE(all_close(got[i], want[i], i < 2 ? ssmlab::test::forward_tol(dt) : ssmlab::test::grad_tol(dt),
                          kNames[i]));
  }
}

// ---- the decomposition on any device: Impl::aten ---------------------------------------------------------------

TEST(DeltaRuleChunkPass, AtenPassMatchesReferenceForwardAndBackward) {
  for (const Case& c : {Case{2, 45, 2, 4, 8, 6, 0, true}, Case{2, 45, 2, 4, 8, 6, 1, true},
                        Case{1, 37, 1, 2, 5, 7, 2, false}, Case{2, 16, 2, 2, 4, 3, 1, false}})
    for (int64_t chunk : {1, 7, 16, 64}) {
      SCOPED_TRACE(ssmlab::str("gate ", c.gate, ", L ", c.l, ", chunk ", chunk, ", h0 ", c.h0));
      at::manual_seed(20 + c.gate);
      const auto ms = masters(c);
      const Tensor go = at::randn({c.b, c.l, c.hv, c.v}, at::kDouble);
      const Tensor gs = at::randn({c.b, c.hv, c.k, c.v}, at::kDouble);
      const auto want = run(c, ms, at::kCPU, at::kDouble, backend("reference"), go, gs, chunk);
      const auto got = run(c, ms, at::kCPU, at::kDouble, pass_impl(pass::Impl::aten), go, gs, chunk);
      expect_match(got, want, at::kDouble);
    }
}

// bf16 inputs with grouped value heads (HV = 2 H) and no decay: each key head's dq / dk is the sum of its value
// heads' contributions, which grow large without decay (|.| ~ 30-60 here) and cancel. The sum must happen in the
// compute dtype before the one rounding to bf16; summing bf16-rounded parts (repeat_interleave before the cast)
// quantised dq / dk to multiples of 0.25 (seen on an H100, 2026-12-07: dq 0.25 for 0.323). CPU, both decompositions.
TEST(DeltaRuleChunkPass, Bf16GroupedHeadGradientsSumBeforeRounding) {
  const Case c{2, 45, 2, 4, 17, 37, 0, true};
  at::manual_seed(10);
  const auto ms = masters(c);
  const Tensor go = at::randn({c.b, c.l, c.hv, c.v}, at::kDouble);
  const Tensor gs = at::randn({c.b, c.hv, c.k, c.v}, at::kDouble);
  std::vector<Tensor> rounded;
  for (size_t i = 0; i < ms.size(); ++i)
    rounded.push_back(ms[i].to(i + 1 == ms.size() ? at::kFloat : at::kBFloat16).to(at::kDouble));
  const auto want = run(c, rounded, at::kCPU, at::kDouble, backend("reference"), go, gs, 16);
  for (const bool chunked_form : {false, true}) {
    SCOPED_TRACE(chunked_form ? "chunked.cpp" : "chunk_pass Impl::aten");
    const Runner f = chunked_form ? Runner([](const std::vector<Tensor>& in, const ssmlab::ops::DeltaRuleOptions& o) {
      return ssmlab::ops::delta_rule_chunked(in[0], in[1], in[2], in[3], o);
    })
                                  : pass_impl(pass::Impl::aten);
    const auto got = run(c, rounded, at::kCPU, at::kBFloat16, f, go, gs, 16);
    expect_match(got, want, at::kBFloat16);
  }
}

// The pass's hand-written backward (backward_aten + the batched products of chunk_pass.cpp) against autograd
// through forward_aten, on random pass inputs (not from a delta rule: A full lower, d anything in (0, 1]).
TEST(DeltaRuleChunkPass, PassBackwardMatchesAutogradOfItsForward) {
  at::manual_seed(5);
  const int64_t b = 2, hv = 3, nc = 4, q = 5, k = 6, v = 7;
  const auto o = at::TensorOptions().dtype(at::kDouble);
  std::vector<Tensor> x = {at::randn({b, hv, nc, q, v}, o), at::randn({b, hv, nc, q, k}, o) * 0.3,
                           at::randn({b, hv, nc, q, k}, o), at::randn({b, hv, nc, q, q}, o).tril(),
                           at::randn({b, hv, nc, q, k}, o) * 0.3, at::rand({b, hv, nc, k}, o),
                           at::randn({b, hv, k, v}, o)};
  for (auto& t : x) t.requires_grad_(true);
  const pass::Inputs in{x[0], x[1], x[2], x[3], x[4], x[5], x[6]};
  const Tensor gO = at::randn({b, hv, nc, q, v}, o), gS = at::randn({b, hv, k, v}, o);
  // Truth: autograd through the ATen loop.
  const auto f = pass::forward_aten(in, /*save=*/true);
  const auto want = torch::autograd::grad({(f.O * gO).sum() + (f.final_state * gS).sum()}, x);
  // The pass contract's backward, assembled as chunk_pass.cpp does.
  at::NoGradGuard ng;
  const auto g = pass::backward_aten(in, gO, gS);
  const Tensor St = f.S_entry.transpose(-1, -2);
  const std::vector<Tensor> got = {g.dVn, -at::matmul(g.dVn, St), at::matmul(gO, St),
                                   at::matmul(gO, f.Vn.transpose(-1, -2)), at::matmul(f.Vn, g.dSx.transpose(-1, -2)),
                                   (g.dSx * f.S_entry).sum(-1), g.dS0};
  const char* names[] = {"dU", "dW", "dQi", "dA", "dKo", "dd", "dS0"};
  for (size_t i = 0; i < got.size(); ++i) {
    // dA: only the lower triangle feeds the loss (A is lower by contract); autograd's dA is full (the product
    // dO Vn^T), as is ours: compare everything.
    EXPECT_TRUE(all_close(got[i], want[i], ssmlab::test::kFp64Grad, names[i]));
  }
}

// The state pass's hand-written backward (state_backward_aten + the batched products of chunk_pass.cpp) against
// autograd through state_forward_aten, with gradients on every output and with some of them absent (undefined).
TEST(DeltaRuleChunkPass, StatePassBackwardMatchesAutogradOfItsForward) {
  at::manual_seed(6);
  const int64_t b = 2, hv = 3, nc = 4, q = 5, k = 6, v = 7;
  const auto o = at::TensorOptions().dtype(at::kDouble);
  std::vector<Tensor> x = {at::randn({b, hv, nc, q, v}, o), at::randn({b, hv, nc, q, k}, o) * 0.3,
                           at::randn({b, hv, nc, q, k}, o) * 0.3, at::rand({b, hv, nc, k}, o),
                           at::randn({b, hv, k, v}, o)};
  for (auto& t : x) t.requires_grad_(true);
  const pass::StateInputs in{x[0], x[1], x[2], x[3], x[4]};
  const Tensor gSe = at::randn({b, hv, nc, k, v}, o), gVn = at::randn({b, hv, nc, q, v}, o),
               gS = at::randn({b, hv, k, v}, o);
  for (int mask : {7, 1, 2, 4, 6}) {  // bit 0: S_entry, 1: Vn, 2: final state carry a gradient
    SCOPED_TRACE(ssmlab::str("outputs with a gradient: mask ", mask));
    const auto f = pass::state_forward_aten(in);
    Tensor loss = at::zeros({}, o);
    if (mask & 1) loss = loss + (f.S_entry * gSe).sum();
    if (mask & 2) loss = loss + (f.Vn * gVn).sum();
    if (mask & 4) loss = loss + (f.final_state * gS).sum();
    const auto want = torch::autograd::grad({loss}, x, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                            /*allow_unused=*/true);
    at::NoGradGuard ng;
    const auto g = pass::state_backward_aten(in, (mask & 1) ? gSe : Tensor(), (mask & 2) ? gVn : Tensor(),
                                             (mask & 4) ? gS : Tensor());
    const Tensor St = f.S_entry.transpose(-1, -2);
    const std::vector<Tensor> got = {g.dVn, -at::matmul(g.dVn, St), at::matmul(f.Vn, g.dSx.transpose(-1, -2)),
                                     (g.dSx * f.S_entry).sum(-1), g.dS0};
    const char* names[] = {"dU", "dW", "dKo", "dd", "dS0"};
    for (size_t i = 0; i < got.size(); ++i) {
      const Tensor w = want[i].defined() ? want[i] : at::zeros_like(got[i]);
      EXPECT_TRUE(all_close(got[i], w, ssmlab::test::kFp64Grad, names[i]));
    }
  }
}

// The state pass (Impl::aten) on the whole delta rule when only one of the outputs is used: the pass's other
// incoming gradients stay undefined (the CUDA kernels read them as zero).
TEST(DeltaRuleChunkPass, AtenPassWithOneOutputUsed) {
  const Case c{2, 45, 2, 4, 8, 6, 1, true};
  at::manual_seed(30);
  const auto ms = masters(c);
  const Tensor go = at::randn({c.b, c.l, c.hv, c.v}, at::kDouble);
  const Tensor gs = at::randn({c.b, c.hv, c.k, c.v}, at::kDouble);
  for (const bool use_o : {true, false}) {
    SCOPED_TRACE(use_o ? "o only" : "final state only");
    const Tensor go_i = use_o ? go : at::zeros_like(go), gs_i = use_o ? at::zeros_like(gs) : gs;
    const auto want = run(c, ms, at::kCPU, at::kDouble, backend("reference"), go_i, gs_i, 16);
    // run() adds <final, 0>, which still defines the gradient; build the loss from one output instead.
    std::vector<Tensor> in;
    for (const auto& m : ms) in.push_back(m.clone().requires_grad_(true));
    ssmlab::ops::DeltaRuleOptions o;
    o.g = in[4];
    o.initial_state = in.back();
    o.chunk_size = 16;
    const auto r = pass_impl(pass::Impl::aten)(in, o);
    const Tensor loss = use_o ? (r.o * go).sum() : (r.final_state * gs).sum();
    // q feeds only o: unused (undefined gradient, compared as zero) when only the final state is.
    auto got = torch::autograd::grad({loss}, in, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                     /*allow_unused=*/true);
    for (size_t i = 0; i < got.size(); ++i)
      if (!got[i].defined()) got[i] = at::zeros_like(in[i]);
    got.insert(got.begin(), {r.o.detach(), r.final_state.detach()});
    expect_match(got, want, at::kDouble);
  }
}

// ---- CUDA --------------------------------------------------------------------------------------------------------

// NaN in every output buffer of the CUDA kernels and in the caching allocator, for the scope.
struct PoisonCuda {
  PoisonCuda() {
    pass::set_poison_outputs(true);
    ssmlab::test::poison_allocator();
  }
  ~PoisonCuda() { pass::set_poison_outputs(false); }
};

struct EnvGuard {
  explicit EnvGuard(const char* value) {
    const char* old = std::getenv("SSMLAB_DELTA_CUDA");
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value)
      setenv("SSMLAB_DELTA_CUDA", value, 1);
    else
      unsetenv("SSMLAB_DELTA_CUDA");
  }
  ~EnvGuard() {
    if (had_)
      setenv("SSMLAB_DELTA_CUDA", old_.c_str(), 1);
    else
      unsetenv("SSMLAB_DELTA_CUDA");
  }
  bool had_ = false;
  std::string old_;
};

TEST(DeltaRuleCuda, AutoTakesTheKernelsAndTheSwitchTakesChunked) {
  SKIP_WITHOUT_CUDA();
  EnvGuard env(nullptr);
  const auto opt = at::TensorOptions().device(kCuda);
  EXPECT_EQ(ssmlab::ops::delta_rule_path(at::zeros({1, 1, 1, 128}, opt.dtype(at::kBFloat16))),
            ssmlab::ops::DeltaRulePath::fused);
  EXPECT_EQ(ssmlab::ops::delta_rule_path(at::zeros({1, 1, 1, 256}, opt.dtype(at::kFloat))),
            ssmlab::ops::DeltaRulePath::fused);
  EXPECT_EQ(ssmlab::ops::delta_rule_path(at::zeros({1, 1, 1, 257}, opt.dtype(at::kFloat))),
            ssmlab::ops::DeltaRulePath::chunked);
  {
    EnvGuard chunked("chunked");
    EXPECT_EQ(ssmlab::ops::delta_rule_path(at::zeros({1, 1, 1, 64}, opt.dtype(at::kFloat))),
              ssmlab::ops::DeltaRulePath::chunked);
  }
  EXPECT_EQ(ssmlab::ops::delta_rule_path(at::zeros({1, 1, 1, 64}, opt.dtype(at::kFloat))),
            ssmlab::ops::DeltaRulePath::fused);
}

TEST(DeltaRuleCuda, KernelsMatchFloat64ReferenceForwardAndBackward) {
  SKIP_WITHOUT_CUDA();
  // Odd sizes: L not a multiple of the chunk, V across two 32-column blocks with a tail, K odd, grouped value
  // heads; with and without an initial state. Both kernel families: the default (float32: tensor-core state pass)
  // and SSMLAB_DELTA_CUDA=simt (the SIMT full-pass kernels).
  for (const char* variant : {static_cast<const char*>(nullptr), "simt"})
  for (const Case& c : {Case{2, 45, 2, 4, 17, 37, 0, true}, Case{2, 45, 2, 4, 17, 37, 1, true},
                        Case{1, 70, 1, 2, 9, 5, 2, false}, Case{2, 33, 2, 2, 16, 33, 1, false}})
    for (at::ScalarType dt : {at::kDouble, at::kFloat, at::kBFloat16})
      for (int64_t chunk : {16, 64}) {
        EnvGuard env(variant);
        SCOPED_TRACE(ssmlab::str("gate ", c.gate, ", ", c10::toString(dt), ", chunk ", chunk, ", K ", c.k, ", V ",
                                 c.v, ", h0 ", c.h0, ", ", variant ? variant : "default"));
        at::manual_seed(10 + c.gate);
        const auto ms = masters(c);
        const Tensor go = at::randn({c.b, c.l, c.hv, c.v}, at::kDouble);
      const Tensor gs = at::randn({c.b, c.hv, c.k, c.v}, at::kDouble);
        // The truth sees the inputs the run sees: rounded to dt (and g, h0 to fp32 for 16-bit runs) first.
        std::vector<Tensor> rounded;
        for (size_t i = 0; i < ms.size(); ++i) {
          const bool wide = (c.gate != 0 && i == 4) || (c.h0 && i + 1 == ms.size());
          const auto t = (wide && dt == at::kBFloat16) ? at::kFloat : dt;
          rounded.push_back(ms[i].to(t).to(at::kDouble));
        }
        const auto want = run(c, rounded, at::kCPU, at::kDouble, backend("reference"), go, gs, chunk);
        PoisonCuda poison;
        const auto got = run(c, rounded, kCuda, dt, backend("auto"), go, gs, chunk);
        expect_match(got, want, dt);
      }
}

// The kernels' pass against the ATen pass on the same device and inputs (fp64: the two differ by rounding alone),
// every kernel variant: the default (float32: the tensor-core state pass, K up to 256 and K = 100, whose rows take
// the 16-byte copies, beside odd K's 4-byte ones; float64: SIMT), SSMLAB_DELTA_CUDA=simt and simple (the SIMT
// kernels with 16-byte and with scalar row loads).
TEST(DeltaRuleCuda, KernelPassEqualsAtenPass) {
  SKIP_WITHOUT_CUDA();
  for (const char* variant : {static_cast<const char*>(nullptr), "simt", "simple"}) {
    for (const Case& c : {Case{2, 130, 2, 4, 128, 70, 1, true}, Case{1, 64, 1, 1, 256, 32, 0, true},
                          Case{1, 20, 1, 3, 3, 1, 2, true}, Case{1, 77, 1, 1, 20, 40, 1, true},
                          Case{1, 200, 1, 2, 100, 65, 2, true}, Case{2, 150, 2, 2, 192, 31, 1, false}}) {
      for (const at::ScalarType dt : {at::kDouble, at::kFloat}) {
        if (dt == at::kDouble && c.k > 128) continue;  // fp64 SIMT kernels: K <= 128
        EnvGuard env(variant);
        SCOPED_TRACE(ssmlab::str("K ", c.k, ", V ", c.v, ", gate ", c.gate, ", ", c10::toString(dt), ", ",
                                 variant ? variant : "default"));
        at::manual_seed(7);
        const auto ms = masters(c);
        const Tensor go = at::randn({c.b, c.l, c.hv, c.v}, at::kDouble);
        const Tensor gs = at::randn({c.b, c.hv, c.k, c.v}, at::kDouble);
        const auto want = run(c, ms, kCuda, dt, pass_impl(pass::Impl::aten), go, gs, 64);
        PoisonCuda poison;
        const auto got = run(c, ms, kCuda, dt, pass_impl(pass::Impl::cuda), go, gs, 64);
        expect_match(got, want, dt);
      }
    }
  }
}

// The tensor-core state pass when only one output of the delta rule is used (the kernels then read undefined
// incoming gradients as zero), float32 against the float64 reference.
TEST(DeltaRuleCuda, StatePassWithOneOutputUsed) {
  SKIP_WITHOUT_CUDA();
  EnvGuard env(nullptr);
  const Case c{2, 100, 2, 4, 64, 40, 1, true};
  at::manual_seed(31);
  const auto ms = masters(c);
  const Tensor go = at::randn({c.b, c.l, c.hv, c.v}, at::kDouble);
  const Tensor gs = at::randn({c.b, c.hv, c.k, c.v}, at::kDouble);
  for (const bool use_o : {true, false}) {
    SCOPED_TRACE(use_o ? "o only" : "final state only");
    const auto want = run(c, ms, at::kCPU, at::kDouble, backend("reference"), use_o ? go : at::zeros_like(go),
                          use_o ? at::zeros_like(gs) : gs, 64);
    PoisonCuda poison;
    std::vector<Tensor> in;
    for (const auto& m : ms) in.push_back(m.to(kCuda, at::kFloat).requires_grad_(true));
    ssmlab::ops::DeltaRuleOptions o;
    o.g = in[4];
    o.initial_state = in.back();
    o.chunk_size = 64;
    const auto r = ssmlab::ops::delta_rule(in[0], in[1], in[2], in[3], o, "auto");
    const Tensor loss = use_o ? (r.o.to(at::kDouble) * go.to(kCuda)).sum()
                              : (r.final_state.to(at::kDouble) * gs.to(kCuda)).sum();
    // q feeds only o: unused (undefined gradient, compared as zero) when only the final state is.
    auto got = torch::autograd::grad({loss}, in, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                     /*allow_unused=*/true);
    for (size_t i = 0; i < got.size(); ++i)
      if (!got[i].defined()) got[i] = at::zeros_like(in[i]);
    got.insert(got.begin(), {r.o, r.final_state});
    for (auto& t : got) t = t.detach().to(at::kCPU, at::kDouble);
    expect_match(got, want, at::kFloat);
  }
}

// The ATen fallback on CUDA (SSMLAB_DELTA_CUDA=chunked) stays right.
TEST(DeltaRuleCuda, ChunkedSwitchMatchesCpuReference) {
  SKIP_WITHOUT_CUDA();
  EnvGuard env("chunked");
  for (int gate : {0, 1, 2}) {
    SCOPED_TRACE(ssmlab::str("gate ", gate));
    const Case c{2, 45, 2, 4, 16, 24, gate, true};
    at::manual_seed(10 + gate);
    const auto ms = masters(c);
    const Tensor go = at::randn({c.b, c.l, c.hv, c.v}, at::kDouble);
    const Tensor gs = at::randn({c.b, c.hv, c.k, c.v}, at::kDouble);
    const auto want = run(c, ms, at::kCPU, at::kDouble, backend("reference"), go, gs);
    const auto got = run(c, ms, kCuda, at::kFloat, backend("auto"), go, gs);
    expect_match(got, want, at::kFloat);
  }
}

TEST(DeltaRuleCuda, DecodeStepOnCudaMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(3);
  const auto ms = masters(Case{2, 1, 2, 4, 8, 6, 2, true});
  Tensor s_cpu = ms.back().clone(), s_gpu = ms.back().to(kCuda);
  const Tensor o_cpu = ssmlab::ops::delta_rule_update(ms[0].select(1, 0), ms[1].select(1, 0), ms[2].select(1, 0),
                                                      ms[3].select(1, 0), s_cpu, ms[4].select(1, 0));
  auto c = [&](const Tensor& t) { return t.select(1, 0).to(kCuda); };
  const Tensor o_gpu = ssmlab::ops::delta_rule_update(c(ms[0]), c(ms[1]), c(ms[2]), c(ms[3]), s_gpu, c(ms[4]));
  EXPECT_TRUE(all_close(o_gpu, o_cpu, ssmlab::test::kFp64Forward, "o"));
  EXPECT_TRUE(all_close(s_gpu, s_cpu, ssmlab::test::kFp64Forward, "state"));
}

}  // namespace

}  // namespace ops_test_delta_rule_cuda
