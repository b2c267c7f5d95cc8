// CPU benchmarks of every registered mixer: forward + backward tokens/s at the MQAR shape (D = 128, L = 1024,
// spec §2.8) and the recency-attack shape (D = 64, L = 1025, spec §2.4), batch 1, fp32, backend "auto"
// (fused kernels where a mixer's op has one). Per-shape options follow the papers where they differ from the
// defaults (H3: d_state 128 / head_dim 2 / l_max 256 on MQAR, d_state 64 / l_max 1025 on the attack shape;
// attention: 1 head on MQAR, 4 on the attack shape). items_per_second = tokens/s (forward + backward).
// Run: build/bench/bench_mixers [--benchmark_filter=h3] [--threads N via ATen: OMP_NUM_THREADS];
// SSMLAB_BENCH_DEVICE=cuda for the GPU.
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cstdlib>
#include <string>

#include "ssmlab/mixers/registry.h"

namespace {

struct Shape {
  const char* name;
  int64_t d_model, len;
};

ssmlab::mixers::MixerOptions options_for(const Shape& s) {
  ssmlab::mixers::MixerOptions o;
  const bool mqar = s.len == 1024;
  o.attention.n_heads = mqar ? 1 : 4;
  o.h3.d_state = mqar ? 128 : 64;
  o.h3.head_dim = 2;
  o.h3.l_max = mqar ? 256 : 1025;
  o.mamba1.d_state = mqar ? 16 : 64;
  return o;
}

void run_mixer(benchmark::State& state, const std::string& name, const Shape& s) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto m = ssmlab::mixers::make_mixer(name, options_for(s), {s.d_model, 1, 3, "auto"}, gen);
  // SSMLAB_BENCH_DEVICE=cuda runs the same rows on the GPU (scripts/gpu-check.sh does).
  const char* dev_env = std::getenv("SSMLAB_BENCH_DEVICE");
  const c10::Device dev(dev_env != nullptr ? std::string(dev_env) : std::string("cpu"));
  m->to(dev);
  at::manual_seed(2);
  const at::Tensor x = at::randn({1, s.len, s.d_model}).to(dev).requires_grad_(true);
  for (auto _ : state) {
    m->zero_grad();
    const at::Tensor y = m->forward(x);
    y.sum().backward();
    // .item() waits for the device, so wall time covers the GPU work.
    benchmark::DoNotOptimize(x.grad().sum().item<float>());
  }
  state.SetLabel(dev.str());
  state.SetItemsProcessed(state.iterations() * s.len);
  state.counters["state_size"] = static_cast<double>(m->state_size());
}

}  // namespace

int main(int argc, char** argv) {
  for (const Shape s : {Shape{"mqar_D128_L1024", 128, 1024}, Shape{"attack_D64_L1025", 64, 1025}})
    for (const auto& name : ssmlab::mixers::mixer_names())
      benchmark::RegisterBenchmark((name + "/" + s.name).c_str(), [name, s](benchmark::State& st) { run_mixer(st, name, s); })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->MinTime(0.5);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("aten_threads", std::to_string(at::get_num_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
