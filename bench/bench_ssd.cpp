// CPU benchmarks of the SSD scan (ops/ssd_scan): the time-stepped reference, the chunked ATen algorithm
// (chunk 64) and the fused CPU kernel, forward and forward+backward, plus one decode step.
//
// Counters: items_per_second counts state-element updates (B·L·H·P·N); bytes_per_second the compulsory
// fp32 traffic of the forward (x, y: B·L·H·P each; B, C: B·L·G·N each; dt: B·L·H), the floor any kernel
// must move. Rates use wall time (UseRealTime): ATen's intra-op threads run beside the benchmark thread.
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <string>

#include "ssmlab/models/long_eval.h"
#include "ssmlab/ops/ssd_scan/ssd_scan.h"

namespace {

struct Inputs {
  at::Tensor x, dt, A, B, C, D, dt_bias;
};

// Mamba-2-shaped fp32 inputs (G = 1), seeded.
Inputs make(int64_t b, int64_t l, int64_t h, int64_t p, int64_t n, bool requires_grad) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  Inputs in;
  in.x = at::randn({b, l, h, p}, gen);
  in.dt = at::randn({b, l, h}, gen) * 0.5 - 2.0;
  in.A = -(at::rand({h}, gen) * 15 + 1);
  in.B = at::randn({b, l, 1, n}, gen) / std::sqrt(double(n));
  in.C = at::randn({b, l, 1, n}, gen) / std::sqrt(double(n));
  in.D = at::ones({h});
  in.dt_bias = at::randn({h}, gen) * 0.3;
  if (requires_grad)
    for (at::Tensor* t : {&in.x, &in.dt, &in.A, &in.B, &in.C, &in.D, &in.dt_bias}) t->requires_grad_(true);
  return in;
}

// kChunked256: the chunked algorithm at the Mamba-2 mixer's chunk size (256); kAuto: ssd_scan(..., "auto").
enum Which { kReference = 0, kChunked = 1, kFused = 2, kAuto = 3, kChunked256 = 4, kChunked32 = 5, kChunked128 = 6 };

ssmlab::ops::SsdScanOut run(const Inputs& in, Which which) {
  ssmlab::ops::SsdScanOptions o;
  o.D = in.D;
  o.dt_bias = in.dt_bias;
  o.chunk_size = which == kChunked256 ? 256 : which == kChunked128 ? 128 : which == kChunked32 ? 32 : 64;
  switch (which) {
    case kReference: return ssmlab::ops::ssd_scan_reference(in.x, in.dt, in.A, in.B, in.C, o);
    case kChunked:
    case kChunked32:
    case kChunked128:
    case kChunked256: return ssmlab::ops::ssd_scan_chunked(in.x, in.dt, in.A, in.B, in.C, o);
    case kAuto: return ssmlab::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, o, "auto");
    default: return ssmlab::ops::ssd_scan_fused(in.x, in.dt, in.A, in.B, in.C, o);
  }
}

void set_counters(benchmark::State& state, int64_t b, int64_t l, int64_t h, int64_t p, int64_t n) {
  const double blh = double(b) * l * h;
  state.SetItemsProcessed(static_cast<int64_t>(blh * p * n) * state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(4.0 * (2 * blh * p + 2.0 * b * l * n + blh)) * state.iterations());
}

// range(4): which implementation.
void BM_SsdForward(benchmark::State& state) {
  const int64_t b = state.range(0), l = state.range(1), h = state.range(2), p = state.range(3), n = state.range(4);
  const Which which = static_cast<Which>(state.range(5));
  const Inputs in = make(b, l, h, p, n, false);
  at::NoGradGuard no_grad;
  for (auto _ : state) {
    auto out = run(in, which);
    benchmark::DoNotOptimize(out.y.data_ptr());
  }
  set_counters(state, b, l, h, p, n);
}

void BM_SsdForwardBackward(benchmark::State& state) {
  const int64_t b = state.range(0), l = state.range(1), h = state.range(2), p = state.range(3), n = state.range(4);
  const Which which = static_cast<Which>(state.range(5));
  const Inputs in = make(b, l, h, p, n, true);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(99);
  const at::Tensor gy = at::randn({b, l, h, p}, gen);
  const std::vector<at::Tensor> xs{in.x, in.dt, in.A, in.B, in.C, in.D, in.dt_bias};
  for (auto _ : state) {
    auto out = run(in, which);
    auto grads = torch::autograd::grad({out.y}, xs, {gy});
    benchmark::DoNotOptimize(grads[0].data_ptr());
  }
  set_counters(state, b, l, h, p, n);
}

// One decode step of the scan at (B, H, P, N): the state update in place.
void BM_SsdDecodeStep(benchmark::State& state) {
  const int64_t b = state.range(0), h = state.range(1), p = state.range(2), n = state.range(3);
  const Inputs in = make(b, 1, h, p, n, false);
  ssmlab::ops::SsdScanOptions o;
  o.D = in.D;
  o.dt_bias = in.dt_bias;
  at::Tensor S = at::zeros({b, h, p, n});
  const at::Tensor x = in.x.select(1, 0), dt = in.dt.select(1, 0), B = in.B.select(1, 0), C = in.C.select(1, 0);
  for (auto _ : state) {
    auto y = ssmlab::ops::ssd_scan_update(x, dt, in.A, B, C, S, o);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.SetItemsProcessed(b * h * p * n * state.iterations());
}

// Long-sequence evaluation (models/long_eval.h): next-token loss at every position of a (1, L) sequence through
// a small 2-layer LM (D 64, V 256; mamba2: H 8, P 16, N 32; mamba1: N 16), segment by segment. Reports
// tokens/s; memory stays that of one segment (tests/models/test_long_eval.cpp checks it).
void BM_LongEvalLoss(benchmark::State& state) {
  const bool mamba2 = state.range(0) == 2;
  const int64_t l = state.range(1), segment = state.range(2);
  ssmlab::models::ModelOptions o;
  o.mixer = mamba2 ? "mamba2" : "mamba1";
  o.d_model = 64;
  o.n_layers = 2;
  o.mixers.mamba2.head_dim = 16;
  o.mixers.mamba2.d_state = 32;
  o.mixers.mamba1.d_state = 16;
  ssmlab::models::LanguageModel model(o, 256, "auto", 1);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const at::Tensor tokens = at::randint(0, 256, {1, l}, gen, at::kLong);
  for (auto _ : state) {
    const at::Tensor losses = ssmlab::models::next_token_losses(*model, tokens, segment);
    benchmark::DoNotOptimize(losses.data_ptr());
  }
  state.SetItemsProcessed(l * state.iterations());
}

}  // namespace

BENCHMARK(BM_LongEvalLoss)
    ->ArgNames({"mixer", "L", "segment"})
    ->Args({2, 100000, 4096})
    ->Args({2, 100000, 512})
    ->Args({2, 1000000, 4096})
    ->Args({1, 100000, 4096})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// (B, L, H, P, N, which): which 0 = reference, 1 = chunked (Q = 64), 2 = fused CPU. A small Mamba-2 layer
// (H 8, P 32, N 64) at L 1024 and 4096, and the official head shape (P 64, N 128) with few heads.
#define SSMLAB_SSD_ARGS(which)                 \
  Args({1, 1024, 8, 32, 64, which})            \
      ->Args({4, 1024, 8, 32, 64, which})      \
      ->Args({1, 4096, 8, 32, 64, which})      \
      ->Args({1, 1024, 4, 64, 128, which})
#define SSMLAB_SSD_BENCH(fn)                                                                             \
  BENCHMARK(fn)                                                                                          \
      ->ArgNames({"B", "L", "H", "P", "N", "impl"})                                                      \
      ->SSMLAB_SSD_ARGS(0)                                                                               \
      ->SSMLAB_SSD_ARGS(1)                                                                               \
      ->SSMLAB_SSD_ARGS(2)                                                                               \
      ->Unit(benchmark::kMillisecond)                                                                    \
      ->UseRealTime()
SSMLAB_SSD_BENCH(BM_SsdForward);
SSMLAB_SSD_BENCH(BM_SsdForwardBackward);
// The "auto" policy on CPU (ops/ssd_scan/README.md, "auto on CPU"): forward+backward of the chunked algorithm
// (Q 64 and 256) against the fused kernel and against "auto" itself, over head sizes P·N from 256 to 8192 at
// a fixed L 1024. Run with OMP_NUM_THREADS=1 and --benchmark_filter=BM_SsdTrainPolicy.
#define SSMLAB_SSD_POLICY_ARGS(which)         \
  Args({1, 1024, 8, 16, 16, which})           \
      ->Args({1, 1024, 8, 32, 32, which})     \
      ->Args({1, 1024, 8, 64, 16, which})     \
      ->Args({1, 1024, 8, 32, 64, which})     \
      ->Args({1, 1024, 8, 16, 128, which})    \
      ->Args({1, 1024, 8, 64, 64, which})     \
      ->Args({1, 1024, 4, 64, 128, which})
BENCHMARK(BM_SsdForwardBackward)
    ->Name("BM_SsdTrainPolicy")
    ->ArgNames({"B", "L", "H", "P", "N", "impl"})
    ->SSMLAB_SSD_POLICY_ARGS(1)
    ->SSMLAB_SSD_POLICY_ARGS(4)
    ->SSMLAB_SSD_POLICY_ARGS(2)
    ->SSMLAB_SSD_POLICY_ARGS(3)
    ->SSMLAB_SSD_POLICY_ARGS(5)
    ->SSMLAB_SSD_POLICY_ARGS(6)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_SsdDecodeStep)
    ->ArgNames({"B", "H", "P", "N"})
    ->Args({1, 24, 64, 128})
    ->Args({8, 24, 64, 128})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("torch_intra_op_threads", std::to_string(at::get_num_threads()));
  benchmark::AddCustomContext("impl", "0 = reference (time-stepped), 1 = chunked ATen (Q 64), 2 = fused CPU, 3 = auto, "
                             "4 = chunked ATen (Q 256), 5 = chunked (Q 32), 6 = chunked (Q 128)");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
