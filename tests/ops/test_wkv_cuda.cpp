// The CUDA WKV (ops/wkv/cuda.cu, kernel_wkv.cuh, autograd.cpp) against the reference run on CPU float64
// copies of the same inputs: output, final state and every gradient (w, u, k, v, initial state), on odd sizes
// (L = 1, 63, 1025, 2049; B x C across thread blocks), float64 / float32 / bfloat16, with the caching
// allocator handing back NaN-filled blocks before each CUDA run; backend selection. Without a usable CUDA
// device every test skips (visibly).
#include <gtest/gtest.h>

#include <limits>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/ops/wkv/wkv.h"
#include "cuda_test_util.h"
#include "tolerances.h"

namespace ops_test_wkv_cuda {

namespace {

using ssmlab::test::all_close;

const at::Device kCuda(at::kCUDA, 0);

using ssmlab::test::poison_allocator;

struct Result {
  at::Tensor y, ab, dw, du, dk, dv, dh0;
};

at::Tensor unscaled(const at::Tensor& s) {
  return at::stack({s.select(1, 0) * at::exp(s.select(1, 2)), s.select(1, 1) * at::exp(s.select(1, 2))}, 1);
}

// Runs on `device` in `dtype` from float64 CPU masters; returns float64 CPU results.
Result run(const std::vector<at::Tensor>& masters, at::Device device, at::ScalarType dtype, bool cuda_kernel,
           const at::Tensor& gy, const at::Tensor& gs) {
  std::vector<at::Tensor> in;
  for (const auto& m : masters) in.push_back(m.to(device, dtype).detach().requires_grad_(true));
  if (cuda_kernel) poison_allocator();
  const auto r = cuda_kernel ? ssmlab::ops::wkv_cuda(in[0], in[1], in[2], in[3], in[4])
                             : ssmlab::ops::wkv_reference(in[0], in[1], in[2], in[3], in[4]);
  const at::Tensor loss = (r.y.to(at::kDouble) * gy.to(device)).sum() +
                          (unscaled(r.final_state.to(at::kDouble)) * gs.to(device)).sum();
  const auto g = torch::autograd::grad({loss}, in);
  auto cpu = [](const at::Tensor& t) { return t.detach().to(at::kCPU, at::kDouble); };
  return {cpu(r.y), cpu(unscaled(r.final_state.to(at::kDouble))), cpu(g[0]), cpu(g[1]), cpu(g[2]), cpu(g[3]),
          cpu(g[4])};
}

TEST(WkvCuda, MatchesReferenceForwardAndBackward) {
  SKIP_WITHOUT_CUDA();
  struct Shape {
    int64_t b, l, c;
  };
  for (const Shape s : {Shape{1, 1, 1}, Shape{3, 63, 67}, Shape{2, 1025, 130}, Shape{1, 2049, 5}})
    for (at::ScalarType dtype : {at::kDouble, at::kFloat, at::kBFloat16}) {
      at::manual_seed(s.l + s.c);
      auto o = at::TensorOptions().dtype(at::kDouble);
      const std::vector<at::Tensor> masters{
          -at::exp(at::rand({s.c}, o) * 8.0 - 5.0), at::randn({s.c}, o) * 0.5 - 1.2, at::randn({s.b, s.l, s.c}, o),
          at::randn({s.b, s.l, s.c}, o),
          at::stack({at::randn({s.b, s.c}, o), at::rand({s.b, s.c}, o) + 0.5, at::randn({s.b, s.c}, o)}, 1)};
      // Round the masters to dtype so both sides see the same inputs.
      std::vector<at::Tensor> rounded;
      for (const auto& m : masters) rounded.push_back(m.to(dtype).to(at::kDouble));
      const at::Tensor gy = at::randn({s.b, s.l, s.c}, o), gs = at::randn({s.b, 2, s.c}, o);
      const Result e = run(rounded, at::kCPU, at::kDouble, false, gy, gs);
      const Result a = run(rounded, kCuda, dtype, true, gy, gs);
      const auto ft = ssmlab::test::forward_tol(dtype), gt = ssmlab::test::grad_tol(dtype);
      const std::string what = ssmlab::str("L", s.l, " C", s.c, " ", c10::toString(dtype));
      EXPECT_TRUE(all_close(a.y, e.y, ft, what + " y"));
      EXPECT_TRUE(all_close(a.ab, e.ab, ft, what + " final"));
      EXPECT_TRUE(all_close(a.dw, e.dw, gt, what + " dw"));
      EXPECT_TRUE(all_close(a.du, e.du, gt, what + " du"));
      EXPECT_TRUE(all_close(a.dk, e.dk, gt, what + " dk"));
      EXPECT_TRUE(all_close(a.dv, e.dv, gt, what + " dv"));
      EXPECT_TRUE(all_close(a.dh0, e.dh0, gt, what + " dh0"));
    }
}

TEST(WkvCuda, AutoPicksTheCudaKernel) {
  SKIP_WITHOUT_CUDA();
  const auto o = at::TensorOptions().device(kCuda);
  const at::Tensor w = -at::rand({8}, o), u = at::zeros({8}, o), k = at::randn({2, 5, 8}, o), v = at::randn({2, 5, 8}, o);
  EXPECT_TRUE(ssmlab::ops::wkv_cuda_supports(k));
  const auto a = ssmlab::ops::wkv(w, u, k, v, std::nullopt, "auto");
  const auto c = ssmlab::ops::wkv_cuda(w, u, k, v, std::nullopt);
  EXPECT_TRUE(at::equal(a.y, c.y));
}

TEST(WkvCuda, NotSupportedOnCpu) {
  EXPECT_FALSE(ssmlab::ops::wkv_cuda_supports(at::zeros({1, 1, 1})));
}

}  // namespace

}  // namespace ops_test_wkv_cuda
