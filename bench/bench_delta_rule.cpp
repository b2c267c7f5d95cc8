// CPU benchmarks of the delta rule (ops/delta_rule): the time-stepped reference, the chunked UT/WY algorithm in
// ATen (chunk 64) and the fused CPU kernel, forward and forward+backward, for Gated DeltaNet (one gate per head)
// and KDA (one gate per key channel), plus one decode step.
//
// Counters: items_per_second counts state-element updates (B·L·HV·K·V). Rates use wall time (UseRealTime):
// ATen's intra-op threads run beside the benchmark thread.
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <string>

#include "ssmlab/ops/delta_rule/delta_rule.h"

namespace {

struct DrInputs {
  at::Tensor q, k, v, beta, g;
};

// Gated-DeltaNet-shaped fp32 inputs (H = HV), L2-normalised keys, seeded. per_key: KDA's (B, L, HV, K) gate.
DrInputs make(int64_t b, int64_t l, int64_t h, int64_t k, int64_t v, bool per_key, bool requires_grad) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  auto l2 = [](const at::Tensor& t) { return t / t.pow(2).sum(-1, true).sqrt(); };
  DrInputs in;
  in.q = l2(at::randn({b, l, h, k}, gen)) / std::sqrt(double(k));
  in.k = l2(at::randn({b, l, h, k}, gen));
  in.v = at::randn({b, l, h, v}, gen);
  in.beta = at::sigmoid(at::randn({b, l, h}, gen));
  const std::vector<int64_t> gs = per_key ? std::vector<int64_t>{b, l, h, k} : std::vector<int64_t>{b, l, h};
  in.g = at::log_sigmoid(at::randn(gs, gen) + 3);
  if (requires_grad)
    for (at::Tensor* t : {&in.q, &in.k, &in.v, &in.beta, &in.g}) t->requires_grad_(true);
  return in;
}

enum Which { kReference = 0, kChunked = 1, kFused = 2 };

ssmlab::ops::DeltaRuleOut run(const DrInputs& in, Which which) {
  ssmlab::ops::DeltaRuleOptions o;
  o.g = in.g;
  o.chunk_size = 64;
  switch (which) {
    case kReference: return ssmlab::ops::delta_rule_reference(in.q, in.k, in.v, in.beta, o);
    case kChunked: return ssmlab::ops::delta_rule_chunked(in.q, in.k, in.v, in.beta, o);
    default: return ssmlab::ops::delta_rule_fused(in.q, in.k, in.v, in.beta, o);
  }
}

// range: B, L, H, K, V, per_key, which.
void BM_DeltaRuleForward(benchmark::State& state) {
  const int64_t b = state.range(0), l = state.range(1), h = state.range(2), k = state.range(3), v = state.range(4);
  const DrInputs in = make(b, l, h, k, v, state.range(5) != 0, false);
  const Which which = static_cast<Which>(state.range(6));
  at::NoGradGuard no_grad;
  for (auto _ : state) {
    auto out = run(in, which);
    benchmark::DoNotOptimize(out.o.data_ptr());
  }
  state.SetItemsProcessed(b * l * h * k * v * state.iterations());
}

void BM_DeltaRuleForwardBackward(benchmark::State& state) {
  const int64_t b = state.range(0), l = state.range(1), h = state.range(2), k = state.range(3), v = state.range(4);
  const DrInputs in = make(b, l, h, k, v, state.range(5) != 0, true);
  const Which which = static_cast<Which>(state.range(6));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(99);
  const at::Tensor go = at::randn({b, l, h, v}, gen);
  const std::vector<at::Tensor> xs{in.q, in.k, in.v, in.beta, in.g};
  for (auto _ : state) {
    auto out = run(in, which);
    auto grads = torch::autograd::grad({out.o}, xs, {go});
    benchmark::DoNotOptimize(grads[0].data_ptr());
  }
  state.SetItemsProcessed(b * l * h * k * v * state.iterations());
}

void BM_DeltaRuleDecodeStep(benchmark::State& state) {
  const int64_t b = state.range(0), h = state.range(1), k = state.range(2), v = state.range(3);
  const DrInputs in = make(b, 1, h, k, v, false, false);
  at::Tensor S = at::zeros({b, h, k, v});
  const at::Tensor q = in.q.select(1, 0), kk = in.k.select(1, 0), vv = in.v.select(1, 0), be = in.beta.select(1, 0);
  const at::Tensor g = in.g.select(1, 0);
  for (auto _ : state) {
    auto o = ssmlab::ops::delta_rule_update(q, kk, vv, be, S, g);
    benchmark::DoNotOptimize(o.data_ptr());
  }
  state.SetItemsProcessed(b * h * k * v * state.iterations());
}

}  // namespace

// (B, L, H, K, V, per_key, impl): a small Gated DeltaNet layer (H 4, K = V = 64) at L 1024, a batch of 4, fla's
// GDN head shape (K 128, V 256) with 2 heads, and KDA's per-key gate.
#define SSMLAB_DR_ARGS(which)                       \
  Args({1, 1024, 4, 64, 64, 0, which})              \
      ->Args({4, 512, 4, 64, 64, 0, which})         \
      ->Args({1, 512, 2, 128, 256, 0, which})       \
      ->Args({1, 1024, 4, 64, 64, 1, which})
#define SSMLAB_DR_BENCH(fn)                                        \
  BENCHMARK(fn)                                                    \
      ->ArgNames({"B", "L", "H", "K", "V", "per_key", "impl"})     \
      ->SSMLAB_DR_ARGS(0)                                          \
      ->SSMLAB_DR_ARGS(1)                                          \
      ->SSMLAB_DR_ARGS(2)                                          \
      ->Unit(benchmark::kMillisecond)                              \
      ->UseRealTime()
SSMLAB_DR_BENCH(BM_DeltaRuleForward);
SSMLAB_DR_BENCH(BM_DeltaRuleForwardBackward);
BENCHMARK(BM_DeltaRuleDecodeStep)
    ->ArgNames({"B", "H", "K", "V"})
    ->Args({1, 16, 128, 128})
    ->Args({8, 16, 128, 128})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("torch_intra_op_threads", std::to_string(at::get_num_threads()));
  benchmark::AddCustomContext("impl", "0 = reference (time-stepped), 1 = chunked UT/WY in ATen (Q 64), 2 = fused CPU");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
