// End-to-end MQAR training on CPU, ops.backend "reference" against "auto" (the fused CPU kernels): one
// optimiser step = forward of the LanguageModel of a config, token cross-entropy, backward, AdamW step. The
// ratio of the two rows of one shape is issue 3's "end-to-end MQAR training >= 5x faster" measurement.
// Counter: tokens (B·L) per second, wall time.
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/optim/adamw.h>

#include <string>

#include "ssmlab/experiments/run.h"
#include "ssmlab/models/language_model.h"

namespace {

// config: path under the source tree; (batch, seq_len): the shape of the training batch.
void BM_MqarTrainStep(benchmark::State& state, const std::string& config, const std::string& backend) {
  const int64_t batch = state.range(0), len = state.range(1);
  auto cfg = ssmlab::experiments::load_config(std::string(SSMLAB_SOURCE_DIR) + "/" + config,
                                              {"ops.backend=" + backend});
  const int64_t vocab = cfg.task.mqar.vocab_size;
  ssmlab::models::LanguageModel model(cfg.model, vocab, backend, 7);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.1));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const at::Tensor tokens = at::randint(vocab, {batch, len}, gen, at::TensorOptions().dtype(at::kLong));
  const at::Tensor targets = at::randint(vocab, {batch, len}, gen, at::TensorOptions().dtype(at::kLong));
  for (auto _ : state) {
    const at::Tensor logits = model->forward(tokens);
    const at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, vocab}), targets.reshape({-1}));
    opt.zero_grad();
    loss.backward();
    opt.step();
    benchmark::DoNotOptimize(loss.item<float>());
  }
  state.SetItemsProcessed(batch * len * state.iterations());
  state.SetLabel(config + " " + backend);
}

// The quickstart model (D = 64, 2 layers, V = 64) at its training shape, and the paper's MQAR model
// (D = 128, 2 layers, V = 8192; spec §2.8.2) at L = 256 and 1024.
BENCHMARK_CAPTURE(BM_MqarTrainStep, quickstart_reference, "configs/quickstart.toml", "reference")
    ->Args({64, 32})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_MqarTrainStep, quickstart_auto, "configs/quickstart.toml", "auto")
    ->Args({64, 32})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_MqarTrainStep, paper_reference, "configs/mqar/mamba-layer2.toml", "reference")
    ->Args({16, 256})->Args({4, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_MqarTrainStep, paper_auto, "configs/mqar/mamba-layer2.toml", "auto")
    ->Args({16, 256})->Args({4, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
