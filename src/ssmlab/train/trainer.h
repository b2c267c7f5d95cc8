// The trainer: AdamW, warmup + cosine, gradient clipping, fp32 / bf16, evaluation per test segment,
// early stop, checkpoints with exact resume, metrics.jsonl and a progress line.
#pragma once
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssmlab/models/model.h"
#include "ssmlab/tasks/task.h"
#include "ssmlab/train/options.h"

namespace ssmlab::train {

struct TrainData {
  std::vector<tasks::Segment> train, test;
  int64_t batch_size = 128;
  int64_t test_batch_size = 16;
};

struct EvalResult {
  double accuracy = 0.0;  // mean of per-example accuracies over all test examples (spec §2.8.1)
  double loss = 0.0;      // mean cross-entropy over counted targets (tokens, or sequences)
  double perplexity = 0.0;  // exp(loss), reported when the task says so (Task::reports_perplexity)
  std::vector<std::pair<std::string, double>> per_segment;  // (segment name, accuracy)
};

// The metric fields of an evaluation, as every record of it spells them (metrics.jsonl eval records, results.json,
// eval.json): test_acc, test_loss, test_ppl when `perplexity`, and test_acc/<segment> for each segment.
nlohmann::json eval_fields(const EvalResult& r, bool perplexity);

// Evaluates `model` on `segments` with the task's loss and accuracy, segment by segment, in eval mode.
EvalResult evaluate(models::ModelImpl& model, const tasks::Task& task, const std::vector<tasks::Segment>& segments,
                    int64_t batch_size, c10::Device device, const std::string& precision);

// One training batch's loss and gradients, accumulated into the parameters' .grad (the caller zeroes them before
// and steps the optimiser after). Returns the mean task loss over all counted targets of the batch; a non-finite
// loss is returned as soon as it appears, before any backward of it.
//   segments == 1: task.loss(model.forward(inputs)), one backward.
//   segments == P > 1 (truncated BPTT, spec §3.5): inputs (B, P l) are cut into P consecutive pieces of l; piece p
//   runs LanguageModel::forward_stateful from the states piece p - 1 left, DETACHED (the truncation: gradients
//   flow within a piece, never into an earlier one), and its loss, weighted by its share of the batch's counted
//   targets, is backpropagated at once, so working memory is one piece's. The forward values (and the returned
//   loss) are the one-shot forward's; only the gradients are truncated. Needs a language model whose mixers
//   support forward_stateful (Error naming the mixer otherwise) and a length divisible by P.
double batch_gradients(models::ModelImpl& model, const tasks::Task& task, const at::Tensor& inputs,
                       const at::Tensor& targets, int64_t segments, const std::string& precision,
                       c10::Device device);

struct FitResult {
  int64_t steps = 0;           // global optimiser steps done
  EvalResult last_eval;
  bool early_stopped = false;
  bool halted = false;         // left early by train.halt_after_steps
  bool resumed = false;
  int64_t graph_steps = 0;     // steps run through train.cuda_graph (warm-up, capture and replays)
  double seconds = 0.0;        // wall time of this process's training
};

struct TbSession;  // train/tb_writer.h

// Trains `model` (any Model: language model or classifier) on `data` with `task`'s loss and metrics inside
// `run_dir` (checkpoints/, metrics.jsonl). Resumes from the newest checkpoint there if any. Throws
// ssmlab::Error if the loss stops being finite. With opts.tensorboard, the TensorBoard event file goes where
// `tb` says (its folder and hparams session), else into run_dir without hparams.
FitResult fit(models::ModelImpl& model, const tasks::Task& task, const TrainData& data, const TrainOptions& opts,
              const std::filesystem::path& run_dir, const TbSession* tb = nullptr);

}  // namespace ssmlab::train
