// CPU benchmarks of the op references (selective_scan forward and forward+backward, causal_conv1d
// forward and forward+backward, each beside the fused CPU conv kernel; token cross-entropy forward+backward,
// ops::cross_entropy beside the formula it replaced) and a plain copy_ of a large
// buffer, so the bytes/s counters can be read against the machine's copy bandwidth in one table (llm.c
// dev/cuda style: time plus bandwidth math).
//
// Counters: items_per_second counts state-element updates (B·L·E·N) for the scan and outputs (B·L·E)
// for the conv; bytes_per_second counts the compulsory fp32 traffic (each input read once, each output
// written once), which is the floor a fused kernel would have to move. Rates use wall time
// (UseRealTime): ATen runs its intra-op threads beside the benchmark thread.
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include <string>

#include "ssmlab/ops/causal_conv1d/causal_conv1d.h"
#include "ssmlab/ops/cross_entropy/cross_entropy.h"
#include "ssmlab/ops/selective_scan/selective_scan.h"
#include "ssmlab/ops/selective_state_update/selective_state_update.h"

namespace {

struct ScanInputs {
  at::Tensor u, delta, A, B, C, D, z, delta_bias;  // u, delta, z (B, L, E); A (E, N); B, C (B, L, N); D, bias (E)
};

// Mamba-shaped fp32 inputs (softplus'd delta, negative A, D, z and delta_bias all present), seeded.
ScanInputs make_scan(int64_t b, int64_t l, int64_t e, int64_t n, bool requires_grad) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  ScanInputs in;
  in.u = at::randn({b, l, e}, gen);
  in.delta = at::randn({b, l, e}, gen) * 0.5 - 1.0;
  in.A = -(at::rand({e, n}, gen) * 1.5 + 0.05);
  in.B = at::randn({b, l, n}, gen);
  in.C = at::randn({b, l, n}, gen);
  in.D = at::randn({e}, gen);
  in.z = at::randn({b, l, e}, gen);
  in.delta_bias = at::randn({e}, gen) * 0.3;
  if (requires_grad)
    for (at::Tensor* t : {&in.u, &in.delta, &in.A, &in.B, &in.C, &in.D, &in.z, &in.delta_bias})
      t->requires_grad_(true);
  return in;
}

// `fused`: the fused CPU kernel (backend "auto" on CPU), else the reference.
ssmlab::ops::SelectiveScanOut run_scan(const ScanInputs& in, bool fused) {
  return ssmlab::ops::selective_scan(in.u, in.delta, in.A, in.B, in.C, in.D, in.z, in.delta_bias,
                                     /*delta_softplus=*/true, /*initial_state=*/std::nullopt,
                                     fused ? "auto" : "reference");
}

void set_counters(benchmark::State& state, double items, double bytes) {
  state.SetItemsProcessed(static_cast<int64_t>(items) * state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes) * state.iterations());
}

// Forward: reads u, delta, z (B·L·E each), B, C (B·L·N each); writes y (B·L·E).
void scan_forward(benchmark::State& state, bool fused) {
  const int64_t b = state.range(0), l = state.range(1), e = state.range(2), n = state.range(3);
  const ScanInputs in = make_scan(b, l, e, n, /*requires_grad=*/false);
  for (auto _ : state) {
    auto out = run_scan(in, fused);
    benchmark::DoNotOptimize(out.y.data_ptr());
  }
  const double ble = double(b) * l * e, bln = double(b) * l * n;
  set_counters(state, ble * n, 4.0 * (4 * ble + 2 * bln));
}

// Forward + backward: the forward's traffic, then the backward reads u, delta, z, gy and B, C and writes
// du, ddelta, dz and dB, dC (dA, dD, d delta_bias are O(E·N) and left out).
void scan_forward_backward(benchmark::State& state, bool fused) {
  const int64_t b = state.range(0), l = state.range(1), e = state.range(2), n = state.range(3);
  const ScanInputs in = make_scan(b, l, e, n, /*requires_grad=*/true);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(99);
  const at::Tensor gy = at::randn({b, l, e}, gen);
  const std::vector<at::Tensor> xs{in.u, in.delta, in.A, in.B, in.C, in.D, in.z, in.delta_bias};
  for (auto _ : state) {
    auto out = run_scan(in, fused);
    auto grads = torch::autograd::grad({out.y}, xs, {gy});
    benchmark::DoNotOptimize(grads[0].data_ptr());
  }
  const double ble = double(b) * l * e, bln = double(b) * l * n;
  set_counters(state, ble * n, 4.0 * (11 * ble + 6 * bln));
}
void BM_SelectiveScanRefForward(benchmark::State& state) { scan_forward(state, false); }
void BM_SelectiveScanFusedForward(benchmark::State& state) { scan_forward(state, true); }
void BM_SelectiveScanRefForwardBackward(benchmark::State& state) { scan_forward_backward(state, false); }
void BM_SelectiveScanFusedForwardBackward(benchmark::State& state) { scan_forward_backward(state, true); }

// causal_conv1d forward, width 4, bias and SiLU: reads x (B·L·E), writes out (B·L·E); `fn` is the reference
// or the fused CPU kernel.
using ConvFn = ssmlab::ops::CausalConv1dOut (*)(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                                bool, const std::optional<at::Tensor>&);
void conv_forward(benchmark::State& state, ConvFn fn) {
  const int64_t b = state.range(0), l = state.range(1), e = state.range(2), w = state.range(3);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const at::Tensor x = at::randn({b, l, e}, gen), weight = at::randn({e, w}, gen), bias = at::randn({e}, gen);
  for (auto _ : state) {
    auto out = fn(x, weight, bias, /*silu=*/true, /*initial_state=*/std::nullopt);
    benchmark::DoNotOptimize(out.out.data_ptr());
  }
  const double ble = double(b) * l * e;
  set_counters(state, ble, 4.0 * 2 * ble);
}
void BM_CausalConv1dRefForward(benchmark::State& state) { conv_forward(state, &ssmlab::ops::causal_conv1d_reference); }
void BM_CausalConv1dFusedForward(benchmark::State& state) { conv_forward(state, &ssmlab::ops::causal_conv1d_fused); }

// Forward + backward (gradients of x, weight, bias): the forward's traffic, then the backward reads x and gy
// and writes dx (dweight, dbias are O(E·W) and left out): 5 B·L·E fp32 values in all.
void conv_forward_backward(benchmark::State& state, ConvFn fn) {
  const int64_t b = state.range(0), l = state.range(1), e = state.range(2), w = state.range(3);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const at::Tensor x = at::randn({b, l, e}, gen).requires_grad_(true);
  const at::Tensor weight = at::randn({e, w}, gen).requires_grad_(true), bias = at::randn({e}, gen).requires_grad_(true);
  const at::Tensor gy = at::randn({b, l, e}, gen);
  for (auto _ : state) {
    auto out = fn(x, weight, bias, /*silu=*/true, /*initial_state=*/std::nullopt);
    auto grads = torch::autograd::grad({out.out}, {x, weight, bias}, {gy});
    benchmark::DoNotOptimize(grads[0].data_ptr());
  }
  const double ble = double(b) * l * e;
  set_counters(state, ble, 4.0 * 5 * ble);
}
void BM_CausalConv1dRefForwardBackward(benchmark::State& state) {
  conv_forward_backward(state, &ssmlab::ops::causal_conv1d_reference);
}
void BM_CausalConv1dFusedForwardBackward(benchmark::State& state) {
  conv_forward_backward(state, &ssmlab::ops::causal_conv1d_fused);
}

// The yardstick: dst.copy_(src) of a buffer much larger than the caches; reads and writes each byte once.
void BM_CopyBandwidth(benchmark::State& state) {
  const int64_t numel = state.range(0);
  const at::Tensor src = at::rand({numel});
  at::Tensor dst = at::empty({numel});
  for (auto _ : state) {
    dst.copy_(src);
    benchmark::DoNotOptimize(dst.data_ptr());
  }
  set_counters(state, double(numel), 2.0 * 4 * numel);
}

// selective_state_update (one decode step): reads and writes the fp32 state (B·E·N each), reads x, dt, z
// (B·E), B, C (B·N) and A (E·N); `fn` is the reference or the fused CPU kernel.
using StateUpdateFn = at::Tensor (*)(at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                     const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool);
void state_update(benchmark::State& state, StateUpdateFn fn) {
  const int64_t b = state.range(0), e = state.range(1), n = state.range(2);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  at::Tensor h = at::randn({b, e, n}, gen);
  const at::Tensor x = at::randn({b, e}, gen), dt = at::randn({b, e}, gen) * 0.5 - 1.0, z = at::randn({b, e}, gen);
  const at::Tensor A = -(at::rand({e, n}, gen) + 0.05), Bm = at::randn({b, n}, gen), Cm = at::randn({b, n}, gen);
  const at::Tensor D = at::randn({e}, gen), bias = at::randn({e}, gen) * 0.3;
  for (auto _ : state) {
    auto y = fn(h, x, dt, A, Bm, Cm, D, z, bias, /*dt_softplus=*/true);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  const double ben = double(b) * e * n;
  set_counters(state, ben, 4.0 * (2 * ben + 4.0 * b * e + 2.0 * b * n + double(e) * n));
}
void BM_SelectiveStateUpdateRef(benchmark::State& state) {
  state_update(state, &ssmlab::ops::selective_state_update_reference);
}
void BM_SelectiveStateUpdateFused(benchmark::State& state) {
  state_update(state, &ssmlab::ops::selective_state_update_cpu);
}

// Token cross-entropy, mean loss forward + backward to the logits (M, V) in `dtype`; `path`: 0 the formula
// ops::cross_entropy replaced (cross_entropy_loss on a float32 copy), 1 ops::cross_entropy "auto" (the fused CPU
// kernel), 2 the row-blocked ATen path (what runs off the CPU). Counter extra_bytes: the peak bytes beyond the
// logits and their gradient that the path holds, from the shapes: old, float32 (M, V) tensors live in the
// backward: log_softmax's saved output and nll_loss's gradient, plus for bf16 logits log_softmax's float32
// gradient before its cast (8 M V bytes for float32, 12 M V for bf16); fused, loss + lse (M); blocked, 2
// float32 blocks (the widened rows and the softmax) of cross_entropy_block_rows(M, V) rows.
void cross_entropy_fwd_bwd(benchmark::State& state, at::ScalarType dtype, int path) {
  const int64_t m = state.range(0), v = state.range(1);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const at::Tensor logits = (at::randn({m, v}, gen) * 2).to(dtype).requires_grad_(true);
  const at::Tensor targets = at::randint(v, {m}, gen, at::TensorOptions().dtype(at::kLong));
  for (auto _ : state) {
    const at::Tensor loss =
        path == 0 ? at::cross_entropy_loss(logits.to(at::kFloat), targets)
                  : (path == 1 ? ssmlab::ops::cross_entropy(logits, targets)
                               : ssmlab::ops::cross_entropy_blocked(logits, targets, ssmlab::ops::kCrossEntropyIgnoreIndex))
                        .loss.mean();
    const auto g = torch::autograd::grad({loss}, {logits});
    benchmark::DoNotOptimize(g[0].data_ptr());
  }
  const double mv = double(m) * v;
  const double extra = path == 0 ? (dtype == at::kFloat ? 8.0 : 12.0) * mv : path == 1 ? 8.0 * m
                                            : 2.0 * 4.0 * double(ssmlab::ops::cross_entropy_block_rows(m, v)) * v;
  state.counters["extra_bytes"] = extra;
  // Compulsory traffic: the logits read twice (forward, backward) and their gradient written once.
  set_counters(state, mv, 3.0 * mv * double(at::elementSize(dtype)));
}

}  // namespace

// (M, V): a batch of 4096 tokens over the GPT-NeoX vocabulary, float32 and bfloat16 logits.
#define SSMLAB_CE_ARGS ArgNames({"M", "V"})->Args({4096, 50257})->Unit(benchmark::kMillisecond)->UseRealTime()
BENCHMARK_CAPTURE(cross_entropy_fwd_bwd, old_fp32, at::kFloat, 0)->SSMLAB_CE_ARGS;
BENCHMARK_CAPTURE(cross_entropy_fwd_bwd, fused_fp32, at::kFloat, 1)->SSMLAB_CE_ARGS;
BENCHMARK_CAPTURE(cross_entropy_fwd_bwd, blocked_fp32, at::kFloat, 2)->SSMLAB_CE_ARGS;
BENCHMARK_CAPTURE(cross_entropy_fwd_bwd, old_bf16, at::kBFloat16, 0)->SSMLAB_CE_ARGS;
BENCHMARK_CAPTURE(cross_entropy_fwd_bwd, fused_bf16, at::kBFloat16, 1)->SSMLAB_CE_ARGS;
BENCHMARK_CAPTURE(cross_entropy_fwd_bwd, blocked_bf16, at::kBFloat16, 2)->SSMLAB_CE_ARGS;

// (B, E, N): one decode step of a Mamba-1 layer of d_model 1536 (E = 3072), batch 1 and 8.
BENCHMARK(BM_SelectiveStateUpdateRef)
    ->ArgNames({"B", "E", "N"})
    ->Args({1, 3072, 16})
    ->Args({8, 3072, 16})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_SelectiveStateUpdateFused)
    ->ArgNames({"B", "E", "N"})
    ->Args({1, 3072, 16})
    ->Args({8, 3072, 16})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// (B, L, E, N) in {1, 8} x {1024, 16384} x {256, 1536} x {16} (issue 3), reference and fused side by side.
#define SSMLAB_SCAN_ARGS                               \
  ArgNames({"B", "L", "E", "N"})                       \
      ->ArgsProduct({{1, 8}, {1024, 16384}, {256, 1536}, {16}}) \
      ->Unit(benchmark::kMillisecond)                  \
      ->UseRealTime()
BENCHMARK(BM_SelectiveScanRefForward)->SSMLAB_SCAN_ARGS;
BENCHMARK(BM_SelectiveScanFusedForward)->SSMLAB_SCAN_ARGS;
BENCHMARK(BM_SelectiveScanRefForwardBackward)->SSMLAB_SCAN_ARGS;
BENCHMARK(BM_SelectiveScanFusedForwardBackward)->SSMLAB_SCAN_ARGS;
// (B, L, E, W): the small {1, 8} x 1024 x 256 cases, B = 1, L = 16384, and a Mamba-sized (8, 2048, 1536);
// reference and fused side by side.
#define SSMLAB_CONV_ARGS                    \
  ArgNames({"B", "L", "E", "W"})            \
      ->Args({1, 1024, 256, 4})             \
      ->Args({8, 1024, 256, 4})             \
      ->Args({1, 16384, 256, 4})            \
      ->Args({8, 2048, 1536, 4})            \
      ->Unit(benchmark::kMicrosecond)       \
      ->UseRealTime()
BENCHMARK(BM_CausalConv1dRefForward)->SSMLAB_CONV_ARGS;
BENCHMARK(BM_CausalConv1dFusedForward)->SSMLAB_CONV_ARGS;
BENCHMARK(BM_CausalConv1dRefForwardBackward)->SSMLAB_CONV_ARGS;
BENCHMARK(BM_CausalConv1dFusedForwardBackward)->SSMLAB_CONV_ARGS;
BENCHMARK(BM_CopyBandwidth)->ArgName("numel")->Arg(int64_t{1} << 25)->Unit(benchmark::kMicrosecond)->UseRealTime();

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("torch_intra_op_threads", std::to_string(at::get_num_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
