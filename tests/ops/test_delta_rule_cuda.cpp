// The delta rule on a CUDA device (no CUDA kernel yet: "auto" runs the chunked UT/WY algorithm in ATen there)
// against the time-stepped reference on CPU float64 copies of the same inputs: output, final state and every
// gradient, for each gate kind, float64 and float32; the decode step on CUDA; the path named. Without a usable
// CUDA device every test skips (visibly).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include "cuda_test_util.h"
#include "ssmlab/core/device.h"
#include "ssmlab/ops/delta_rule/delta_rule.h"
#include "tolerances.h"

namespace ops_test_delta_rule_cuda {

namespace {

using at::Tensor;
using ssmlab::test::all_close;

const at::Device kCuda(at::kCUDA, 0);

// Inputs as float64 CPU masters: q, k (L2-normalised), v, beta, g (by gate kind, or undefined), h0.
std::vector<Tensor> masters(int64_t b, int64_t l, int64_t h, int64_t hv, int64_t k, int64_t v, int gate) {
  auto l2 = [](const Tensor& t) { return t / t.pow(2).sum(-1, true).sqrt(); };
  std::vector<Tensor> m = {l2(at::randn({b, l, h, k}, at::kDouble)) / std::sqrt(double(k)),
                           l2(at::randn({b, l, h, k}, at::kDouble)), at::randn({b, l, hv, v}, at::kDouble),
                           at::sigmoid(at::randn({b, l, hv}, at::kDouble)) * 2.0};
  if (gate == 1) m.push_back(at::log_sigmoid(at::randn({b, l, hv}, at::kDouble)));
  if (gate == 2) m.push_back(at::log_sigmoid(at::randn({b, l, hv, k}, at::kDouble)));
  m.push_back(at::randn({b, hv, k, v}, at::kDouble) * 0.5);
  return m;
}

std::vector<Tensor> run(const std::vector<Tensor>& ms, at::Device dev, at::ScalarType dt, const std::string& backend,
                        const Tensor& go, const Tensor& gs) {
  std::vector<Tensor> in;
  for (const auto& m : ms) in.push_back(m.to(dev, dt).detach().requires_grad_(true));
  ssmlab::ops::DeltaRuleOptions o;
  if (in.size() == 6) o.g = in[4];
  o.initial_state = in.back();
  o.chunk_size = 16;
  const auto r = ssmlab::ops::delta_rule(in[0], in[1], in[2], in[3], o, backend);
  const Tensor loss = (r.o.to(at::kDouble) * go.to(dev)).sum() + (r.final_state.to(at::kDouble) * gs.to(dev)).sum();
  auto out = torch::autograd::grad({loss}, in);
  out.insert(out.begin(), {r.o, r.final_state});
  for (auto& t : out) t = t.detach().to(at::kCPU, at::kDouble);
  return out;
}

TEST(DeltaRuleCuda, AutoMatchesCpuReferenceForwardAndBackward) {
  SKIP_WITHOUT_CUDA();
  EXPECT_EQ(ssmlab::ops::delta_rule_path(at::zeros({1, 1, 1, 1}, at::TensorOptions().device(kCuda))),
            ssmlab::ops::DeltaRulePath::chunked);
  for (int gate : {0, 1, 2})
    for (at::ScalarType dt : {at::kDouble, at::kFloat}) {
      SCOPED_TRACE(ssmlab::str("gate ", gate, ", ", c10::toString(dt)));
      at::manual_seed(10 + gate);
      const auto ms = masters(2, 45, 2, 4, 16, 24, gate);
      const Tensor go = at::randn({2, 45, 4, 24}, at::kDouble), gs = at::randn({2, 4, 16, 24}, at::kDouble);
      const auto want = run(ms, at::kCPU, at::kDouble, "reference", go, gs);
      const auto got = run(ms, kCuda, dt, "auto", go, gs);
      for (size_t i = 0; i < want.size(); ++i) {
        EXPECT_TRUE(ssmlab::test::all_finite(got[i], "output " + std::to_string(i)));
        EXPECT_TRUE(all_close(got[i], want[i], i < 2 ? ssmlab::test::forward_tol(dt) : ssmlab::test::grad_tol(dt),
                              "output " + std::to_string(i)));
      }
    }
}

TEST(DeltaRuleCuda, DecodeStepOnCudaMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(3);
  const auto ms = masters(2, 1, 2, 4, 8, 6, 2);
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
