// CPU benchmarks of the Mamba-3 scan (ops/mamba3): the time-stepped reference, the chunked quadratic form in ATen
// (chunk 64) and the fused CPU kernel, forward and forward+backward, SISO (R = 1, adjacent pairs) and MIMO (R = 4,
// halves), plus one decode step.
//
// Counters: items_per_second counts state-element updates times ranks (B·T·R·H·P·N). Rates use wall time
// (UseRealTime): ATen's intra-op threads run beside the benchmark thread.
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <string>

#include "ssmlab/ops/mamba3/mamba3.h"

namespace {

struct M3Inputs {
  at::Tensor q, k, x, adt, dt, trap, theta, D;
};

// Layer-like fp32 inputs, seeded: q, k near 1 (RMS-normalised + bias 1), dt in [1e-3, 0.1], A in [-3, -0.1].
M3Inputs make(int64_t b, int64_t t, int64_t r, int64_t h, int64_t n, int64_t p, int64_t s, bool requires_grad) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  M3Inputs in;
  in.q = at::randn({b, t, r, h, n}, gen) * 0.5 + 1;
  in.k = at::randn({b, t, r, h, n}, gen) * 0.5 + 1;
  in.x = at::randn({b, t, r, h, p}, gen);
  in.dt = at::exp(at::rand({b, t, h}, gen) * (std::log(0.1) - std::log(1e-3)) + std::log(1e-3));
  in.adt = -(at::rand({b, t, h}, gen) * 2.9 + 0.1) * in.dt;
  in.trap = at::randn({b, t, h}, gen);
  in.theta = M_PI * at::tanh(at::randn({b, t, 1, s}, gen)).expand({b, t, h, s});  // shared by heads, as the layer
  in.D = at::ones({h});
  if (requires_grad)
    for (at::Tensor* v : {&in.q, &in.k, &in.x, &in.adt, &in.dt, &in.trap, &in.D}) v->requires_grad_(true);
  return in;
}

const char* backend_of(int64_t which) { return which == 0 ? "reference" : which == 1 ? "chunked" : "fused"; }

ssmlab::ops::Mamba3Out run(const M3Inputs& in, int64_t r, int64_t which) {
  ssmlab::ops::Mamba3Options o;
  o.pairing = r == 1 ? ssmlab::ops::Mamba3Pairing::adjacent : ssmlab::ops::Mamba3Pairing::halves;
  o.D = in.D;
  o.chunk_size = 64;
  return ssmlab::ops::mamba3_scan(in.q, in.k, in.x, in.adt, in.dt, in.trap, in.theta, o, backend_of(which));
}

// range: B, T, R, H, N, P, S, impl.
void BM_Mamba3Forward(benchmark::State& state) {
  const int64_t b = state.range(0), t = state.range(1), r = state.range(2), h = state.range(3), n = state.range(4),
                p = state.range(5), s = state.range(6);
  const M3Inputs in = make(b, t, r, h, n, p, s, false);
  at::NoGradGuard no_grad;
  for (auto _ : state) {
    auto out = run(in, r, state.range(7));
    benchmark::DoNotOptimize(out.y.data_ptr());
  }
  state.SetItemsProcessed(b * t * r * h * p * n * state.iterations());
}

void BM_Mamba3ForwardBackward(benchmark::State& state) {
  const int64_t b = state.range(0), t = state.range(1), r = state.range(2), h = state.range(3), n = state.range(4),
                p = state.range(5), s = state.range(6);
  const M3Inputs in = make(b, t, r, h, n, p, s, true);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(99);
  const at::Tensor gy = at::randn({b, t, r, h, p}, gen);
  const std::vector<at::Tensor> xs{in.q, in.k, in.x, in.adt, in.dt, in.trap, in.D};
  for (auto _ : state) {
    auto out = run(in, r, state.range(7));
    auto grads = torch::autograd::grad({out.y}, xs, {gy});
    benchmark::DoNotOptimize(grads[0].data_ptr());
  }
  state.SetItemsProcessed(b * t * r * h * p * n * state.iterations());
}

void BM_Mamba3DecodeStep(benchmark::State& state) {
  const int64_t b = state.range(0), r = state.range(1), h = state.range(2), n = state.range(3), p = state.range(4),
                s = state.range(5);
  const M3Inputs in = make(b, 1, r, h, n, p, s, false);
  ssmlab::ops::Mamba3State st{at::zeros({b, h, s}), at::zeros({b, h, p, n}), at::zeros({b, r, h, n}),
                              at::zeros({b, r, h, p})};
  const auto pairing = r == 1 ? ssmlab::ops::Mamba3Pairing::adjacent : ssmlab::ops::Mamba3Pairing::halves;
  for (auto _ : state) {
    auto [y, next] = ssmlab::ops::mamba3_step(in.q.select(1, 0), in.k.select(1, 0), in.x.select(1, 0),
                                              in.adt.select(1, 0), in.dt.select(1, 0), in.trap.select(1, 0),
                                              in.theta.select(1, 0), st, pairing, in.D);
    st = next;
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.SetItemsProcessed(b * r * h * p * n * state.iterations());
}

}  // namespace

// (B, T, R, H, N, P, S, impl): a small SISO layer (H 4, N 64, P 64, rope 0.5 -> S 16) at T 1024, upstream's default
// head (N 128, P 64, S 32) with 8 heads at T 512, and MIMO rank 4 (halves) at T 512.
#define SSMLAB_M3_ARGS(which)                          \
  Args({1, 1024, 1, 4, 64, 64, 16, which})             \
      ->Args({1, 512, 1, 8, 128, 64, 32, which})       \
      ->Args({1, 512, 4, 4, 64, 64, 16, which})
#define SSMLAB_M3_BENCH(fn)                                              \
  BENCHMARK(fn)                                                          \
      ->ArgNames({"B", "T", "R", "H", "N", "P", "S", "impl"})            \
      ->SSMLAB_M3_ARGS(0)                                                \
      ->SSMLAB_M3_ARGS(1)                                                \
      ->SSMLAB_M3_ARGS(2)                                                \
      ->Unit(benchmark::kMillisecond)                                    \
      ->UseRealTime()
SSMLAB_M3_BENCH(BM_Mamba3Forward);
SSMLAB_M3_BENCH(BM_Mamba3ForwardBackward);
BENCHMARK(BM_Mamba3DecodeStep)
    ->ArgNames({"B", "R", "H", "N", "P", "S"})
    ->Args({1, 1, 16, 128, 64, 32})
    ->Args({8, 4, 16, 128, 64, 32})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("torch_intra_op_threads", std::to_string(at::get_num_threads()));
  benchmark::AddCustomContext("impl", "0 = reference (time-stepped), 1 = chunked quadratic form in ATen (C 64), "
                                      "2 = fused CPU");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
