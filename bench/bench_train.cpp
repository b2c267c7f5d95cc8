// End-to-end MQAR training on CPU, ops.backend "reference" against "auto" (the fused CPU kernels): one
// optimiser step = forward of the LanguageModel of a config, token cross-entropy, backward, AdamW step. The
// ratio of the two rows of one shape is issue 3's "end-to-end MQAR training >= 5x faster" measurement.
// Counter: tokens (B·L) per second, wall time.
//
// Issue 14: BM_OptimizerStep times gradient clipping + the AdamW step alone over the parameters of a model,
// train.optimizer_impl "torch" (clip_grad_norm_ + torch::optim::AdamW::step) against "fused" (device-side clip +
// at::_fused_adamw_), on CPU and, with a GPU, on CUDA. BM_CudaTrainStep (GPU only; skipped without one) times the
// trainer's whole step (forward, loss, backward, clip, fused AdamW) eagerly (a loss.item() per step, as the trainer)
// against train.cuda_graph's captured replay (static inputs copied in, one sync per step for the timing).
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/optim/adamw.h>

#include <string>

#include <torch/nn/utils/clip_grad.h>

#include "ssmlab/core/device.h"
#include "ssmlab/experiments/run.h"
#include "ssmlab/models/language_model.h"
#include "ssmlab/train/cuda_graph.h"
#include "ssmlab/train/fused_adamw.h"

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

// One clip + AdamW step over the model of `config` with fixed random gradients; impl: "torch" or "fused".
void BM_OptimizerStep(benchmark::State& state, const std::string& config, const std::string& impl,
                      const std::string& device) {
  if (device == "cuda" && !ssmlab::cuda_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  auto cfg = ssmlab::experiments::load_config(std::string(SSMLAB_SOURCE_DIR) + "/" + config);
  ssmlab::models::LanguageModel model(cfg.model, cfg.task.mqar.vocab_size, "auto", 7);
  model->to(at::Device(device));
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.1));
  ssmlab::train::FusedAdamW fused(opt);
  int64_t numel = 0;
  for (auto& p : model->parameters()) {
    p.mutable_grad() = at::randn_like(p) * 1e-2;
    numel += p.numel();
  }
  const at::Tensor lr = at::full({}, 1e-3, at::TensorOptions().dtype(at::kFloat).device(at::Device(device)));
  for (auto _ : state) {
    if (impl == "torch") {
      torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
      opt.step();
    } else {
      ssmlab::train::clip_grad_norm_nosync(model->parameters(), 1.0);
      if (device == "cuda")
        fused.step(lr);
      else
        fused.step();
    }
    if (device == "cuda") benchmark::DoNotOptimize(model->parameters()[0].sum().item<float>());  // waits
  }
  state.SetItemsProcessed(numel * state.iterations());
  state.SetLabel(config + " " + impl + " " + device + " (" + std::to_string(numel) + " parameters)");
}

// The trainer's CUDA step of the model of `config` at (batch, seq_len), eager or replayed from a CUDA graph.
void BM_CudaTrainStep(benchmark::State& state, const std::string& config, bool graph) {
  if (!ssmlab::cuda_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const int64_t batch = state.range(0), len = state.range(1);
  const at::Device dev(at::kCUDA, 0);
  auto cfg = ssmlab::experiments::load_config(std::string(SSMLAB_SOURCE_DIR) + "/" + config);
  const int64_t vocab = cfg.task.mqar.vocab_size;
  ssmlab::models::LanguageModel model(cfg.model, vocab, "auto", 7);
  model->to(dev);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.1));
  ssmlab::train::FusedAdamW fused(opt);
  const at::Tensor lr = at::full({}, 1e-3, at::TensorOptions().dtype(at::kFloat).device(dev));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const at::Tensor tokens = at::randint(vocab, {batch, len}, gen, at::TensorOptions().dtype(at::kLong));
  const at::Tensor targets = at::randint(vocab, {batch, len}, gen, at::TensorOptions().dtype(at::kLong));
  at::Tensor last_loss = at::zeros({}, at::TensorOptions().device(dev));
  auto body = [&](const at::Tensor& in, const at::Tensor& tg) {
    const at::Tensor logits = model->forward(in);
    const at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, vocab}).to(at::kFloat), tg.reshape({-1}));
    loss.backward();
    last_loss.copy_(loss.detach());
    ssmlab::train::clip_grad_norm_nosync(model->parameters(), 1.0);
    fused.step(lr);
  };
  std::unique_ptr<ssmlab::train::CudaGraphStep> step;
  if (graph) step = std::make_unique<ssmlab::train::CudaGraphStep>(dev, body, [&] { opt.zero_grad(); });
  for (auto _ : state) {
    if (graph) {
      step->run(tokens, targets);
      benchmark::DoNotOptimize(last_loss.item<float>());
    } else {
      opt.zero_grad();
      const at::Tensor in = tokens.to(dev), tg = targets.to(dev);
      const at::Tensor logits = model->forward(in);
      const at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, vocab}).to(at::kFloat), tg.reshape({-1}));
      benchmark::DoNotOptimize(loss.item<float>());  // the trainer's NaN check
      loss.backward();
      ssmlab::train::clip_grad_norm_nosync(model->parameters(), 1.0);
      fused.step(lr);
    }
  }
  state.SetItemsProcessed(batch * len * state.iterations());
  state.SetLabel(config + (graph ? " cuda_graph" : " eager"));
}

BENCHMARK_CAPTURE(BM_OptimizerStep, paper_torch_cpu, "configs/mqar/mamba-layer2.toml", "torch", "cpu")
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_OptimizerStep, paper_fused_cpu, "configs/mqar/mamba-layer2.toml", "fused", "cpu")
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_OptimizerStep, paper_torch_cuda, "configs/mqar/mamba-layer2.toml", "torch", "cuda")
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_OptimizerStep, paper_fused_cuda, "configs/mqar/mamba-layer2.toml", "fused", "cuda")
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
// Warm-up and capture happen in the first iterations of the graph row (3 eager steps, then the capture).
BENCHMARK_CAPTURE(BM_CudaTrainStep, paper_eager, "configs/mqar/mamba-layer2.toml", false)
    ->Args({64, 256})->Unit(benchmark::kMillisecond)->UseRealTime()->MinWarmUpTime(0.2);
BENCHMARK_CAPTURE(BM_CudaTrainStep, paper_cuda_graph, "configs/mqar/mamba-layer2.toml", true)
    ->Args({64, 256})->Unit(benchmark::kMillisecond)->UseRealTime()->MinWarmUpTime(0.2);

}  // namespace

BENCHMARK_MAIN();
