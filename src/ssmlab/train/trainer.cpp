#include "ssmlab/train/trainer.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include "ssmlab/core/device.h"
#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/fault.h"
#include "ssmlab/core/io.h"
#include "ssmlab/core/log.h"
#include "ssmlab/models/language_model.h"
#include "ssmlab/train/checkpoint.h"
#include "ssmlab/train/cuda_graph.h"
#include "ssmlab/train/distributed.h"
#include "ssmlab/train/fused_adamw.h"
#include "ssmlab/train/progress.h"
#include "ssmlab/train/schedule.h"
#include "ssmlab/train/tb_writer.h"
#include "ssmlab/runfolder/layout.h"

namespace ssmlab::train {
namespace {

using nlohmann::json;

// bf16 autocast for the region's lifetime (CPU or CUDA).
class AutocastGuard {
 public:
  AutocastGuard(const std::string& precision, c10::Device device) : type_(device.type()) {
    enabled_ = precision == "bf16";
    if (!enabled_) return;
    at::autocast::set_autocast_dtype(type_, at::kBFloat16);
    at::autocast::set_autocast_enabled(type_, true);
  }
  ~AutocastGuard() {
    if (!enabled_) return;
    at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type_, false);
  }

 private:
  c10::DeviceType type_;
  bool enabled_ = false;
};

std::vector<torch::optim::OptimizerParamGroup> param_groups(models::ModelImpl& model, const TrainOptions& o) {
  std::vector<at::Tensor> decay, no_decay;
  for (const auto& p : model.named_parameters()) {
    const std::string& name = p.key();
    const bool exempt = o.decay == "matrices" && (p.value().dim() < 2 || name.ends_with("A_log") ||
                                                  name.ends_with(".D") || name.find("norm") != std::string::npos);
    (exempt ? no_decay : decay).push_back(p.value());
  }
  auto options = [&](double wd) {
    auto opt = std::make_unique<torch::optim::AdamWOptions>(o.lr);
    opt->betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(wd);
    return opt;
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, options(o.weight_decay));
  if (!no_decay.empty()) groups.emplace_back(no_decay, options(0.0));
  return groups;
}

void set_lr(torch::optim::AdamW& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
}

// Keeps the lines of metrics.jsonl whose step is <= `step` (a resumed run rewrites what came after
// its checkpoint, so the file ends up as if the run had never stopped).
void truncate_metrics(const std::filesystem::path& file, int64_t step) {
  if (!std::filesystem::exists(file)) return;
  std::ifstream in(file);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) continue;  // a half-written last line from a kill
    if (j.value("step", int64_t{0}) <= step) kept += line + "\n";
  }
  write_file_atomic(file, kept);
}

// The last evaluation as checkpoint state (NaN is written as null by nlohmann and read back as NaN).
json eval_to_json(const EvalResult& r) {
  json per = json::array();
  for (const auto& [name, acc] : r.per_segment) per.push_back({name, acc});
  return {{"accuracy", r.accuracy}, {"loss", r.loss}, {"perplexity", r.perplexity}, {"per_segment", per}};
}

double number_or_nan(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : NAN;
}

// Reads what eval_to_json wrote; a malformed record is an error naming the checkpoint.
EvalResult eval_from_json(const json& j, const std::filesystem::path& ckpt) {
  EvalResult r;
  SSMLAB_CHECK(j.is_object(), "checkpoint ", ckpt.string(), ": state.json 'last_eval' must be an object");
  r.accuracy = number_or_nan(j, "accuracy");
  r.loss = number_or_nan(j, "loss");
  r.perplexity = number_or_nan(j, "perplexity");
  if (const auto it = j.find("per_segment"); it != j.end()) {
    SSMLAB_CHECK(it->is_array(), "checkpoint ", ckpt.string(), ": state.json 'last_eval.per_segment' must be an array");
    for (const auto& e : *it) {
      SSMLAB_CHECK(e.is_array() && e.size() == 2 && e[0].is_string(), "checkpoint ", ckpt.string(),
                   ": state.json 'last_eval.per_segment' holds [name, accuracy] pairs");
      r.per_segment.emplace_back(e[0].get<std::string>(), e[1].is_number() ? e[1].get<double>() : NAN);
    }
  }
  return r;
}

std::vector<json> read_metrics(const std::filesystem::path& file) {
  std::vector<json> out;
  if (!std::filesystem::exists(file)) return out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded()) out.push_back(std::move(j));
  }
  return out;
}

}  // namespace

json eval_fields(const EvalResult& r, bool perplexity) {
  json j = {{"test_acc", r.accuracy}, {"test_loss", r.loss}};
  if (perplexity) j["test_ppl"] = r.perplexity;
  for (const auto& [name, acc] : r.per_segment) j["test_acc/" + name] = acc;
  return j;
}

EvalResult evaluate(models::ModelImpl& model, const tasks::Task& task, const std::vector<tasks::Segment>& segments,
                    int64_t batch_size, c10::Device device, const std::string& precision) {
  return evaluate_sharded(model, task, segments, batch_size, device, precision, nullptr);
}

EvalResult evaluate_sharded(models::ModelImpl& model, const tasks::Task& task,
                            const std::vector<tasks::Segment>& segments, int64_t batch_size, c10::Device device,
                            const std::string& precision, ProcessGroup* group) {
  at::NoGradGuard no_grad;
  if (group != nullptr && group->size() == 1) group = nullptr;
  const bool was_training = model.is_training();
  model.eval();
  EvalResult r;
  double acc_sum = 0.0, loss_sum = 0.0;
  int64_t n_examples = 0, n_targets = 0;
  // Sums per segment: (accuracy sum, examples counted); with a group, this rank's shard, all-reduced below.
  std::vector<std::pair<double, int64_t>> per_seg;
  for (size_t s = 0; s < segments.size(); ++s) {
    const auto& seg = segments[s];
    const int64_t m = seg.inputs.size(0);
    const auto [lo, hi] = group ? shard_rows(m, group->rank(), group->size()) : std::pair<int64_t, int64_t>{0, m};
    double seg_acc = 0.0;
    int64_t seg_n = 0;
    for (int64_t b0 = lo; b0 < hi; b0 += batch_size) {
      const auto batch = tasks::slice_batch(seg, static_cast<int64_t>(s), b0, std::min(hi, b0 + batch_size));
      const at::Tensor inputs = batch.inputs.to(device), targets = batch.targets.to(device);
      at::Tensor outputs;
      {
        AutocastGuard autocast(precision, device);
        outputs = model.forward(inputs);  // (B, L, V) or (B, classes)
      }
      const int64_t counted = task.loss_count(batch.targets);
      if (counted > 0) {
        loss_sum += task.loss(outputs, targets).item<double>() * static_cast<double>(counted);
        n_targets += counted;
      }
      const at::Tensor acc = task.accuracy(outputs, targets).cpu();  // (B) fp64, NaN: nothing counted
      const at::Tensor valid = acc.isnan().logical_not();
      seg_acc += acc.masked_select(valid).sum().item<double>();
      seg_n += valid.sum().item<int64_t>();
    }
    per_seg.emplace_back(seg_acc, seg_n);
  }
  if (group) {  // one float64 vector: loss sum, targets, then (accuracy sum, examples) per segment
    at::Tensor sums = at::zeros({2 + 2 * static_cast<int64_t>(segments.size())}, at::kDouble);
    auto a = sums.accessor<double, 1>();
    a[0] = loss_sum;
    a[1] = static_cast<double>(n_targets);
    for (size_t s = 0; s < per_seg.size(); ++s) {
      a[2 + 2 * s] = per_seg[s].first;
      a[3 + 2 * s] = static_cast<double>(per_seg[s].second);
    }
    std::vector<at::Tensor> v{sums};
    group->allreduce_sum(v, "all-reduce of the evaluation");
    loss_sum = a[0];
    n_targets = static_cast<int64_t>(std::llround(a[1]));
    for (size_t s = 0; s < per_seg.size(); ++s)
      per_seg[s] = {a[2 + 2 * s], static_cast<int64_t>(std::llround(a[3 + 2 * s]))};
  }
  for (size_t s = 0; s < segments.size(); ++s) {
    const auto [seg_acc, seg_n] = per_seg[s];
    r.per_segment.emplace_back(segments[s].name, seg_n > 0 ? seg_acc / static_cast<double>(seg_n) : NAN);
    acc_sum += seg_acc;
    n_examples += seg_n;
  }
  r.accuracy = n_examples > 0 ? acc_sum / static_cast<double>(n_examples) : NAN;
  r.loss = n_targets > 0 ? loss_sum / static_cast<double>(n_targets) : NAN;
  r.perplexity = std::exp(r.loss);
  if (was_training) model.train();
  return r;
}

double batch_gradients(models::ModelImpl& model, const tasks::Task& task, const at::Tensor& inputs,
                       const at::Tensor& targets, int64_t segments, const std::string& precision,
                       c10::Device device) {
  SSMLAB_CHECK(segments >= 1, "truncated BPTT: segments must be >= 1; got ", segments);
  if (segments == 1) {
    at::Tensor loss;
    {
      AutocastGuard autocast(precision, device);
      loss = task.loss(model.forward(inputs), targets);
    }
    const double v = loss.item<double>();
    if (std::isfinite(v)) loss.backward();
    return v;
  }
  auto* lm = dynamic_cast<models::LanguageModelImpl*>(&model);
  SSMLAB_CHECK(lm != nullptr, "truncated BPTT (segments = ", segments, ") needs a language model; got a ",
               model.kind());
  SSMLAB_CHECK(lm->supports_stateful(), "truncated BPTT (segments = ", segments,
               ") carries each layer's state across segments, but mixer '", lm->options().mixer,
               "' has no forward_stateful (every recurrent mixer has one; attention does not): use segments = 1");
  const int64_t B = inputs.size(0), T = inputs.size(1);
  SSMLAB_CHECK(inputs.dim() == 2 && T % segments == 0, "truncated BPTT: an example of ", T,
               " positions does not split into ", segments, " equal segments");
  const int64_t l = T / segments;
  const int64_t total = task.loss_count(targets);
  if (total == 0) return NAN;
  auto states = lm->init_state(B, device);
  double sum = 0.0;
  for (int64_t p = 0; p < segments; ++p) {
    const at::Tensor in_p = inputs.narrow(1, p * l, l), tg_p = targets.narrow(1, p * l, l);
    const int64_t n_p = task.loss_count(tg_p);
    if (n_p == 0) {  // nothing to learn from here: only carry the state on
      at::NoGradGuard no_grad;
      AutocastGuard autocast(precision, device);
      lm->forward_stateful(in_p, states);
    } else {
      at::Tensor loss;
      {
        AutocastGuard autocast(precision, device);
        loss = task.loss(lm->forward_stateful(in_p, states), tg_p);
      }
      const double v = loss.item<double>();
      if (!std::isfinite(v)) return v;
      (loss * (static_cast<double>(n_p) / static_cast<double>(total))).backward();
      sum += v * static_cast<double>(n_p);
    }
    // The truncation: the next segment starts from this state's values, not its graph.
    for (auto& st : states)
      for (auto& [name, t] : st.tensors)
        if (t.defined()) t = t.detach();
  }
  return sum / static_cast<double>(total);
}

FitResult fit(models::ModelImpl& model, const tasks::Task& task, const TrainData& data, const TrainOptions& o,
              const std::filesystem::path& run_dir, const TbSession* tb_session) {
  SSMLAB_CHECK(!data.train.empty(), "fit: no training segments");
  ProcessGroup* group = current_group();
  if (group != nullptr && group->size() == 1) group = nullptr;
  // Several ranks: CPU ranks on Gloo; CUDA ranks each on cuda:LOCAL_RANK with NCCL (or Gloo, train.dist_backend).
  const c10::Device device = group ? bind_rank_device(*group, o.device, o.dist_backend) : parse_device(o.device);
  if (o.cuda_graph) {
    if (o.optimizer_impl != "fused")
      fail_config("train.cuda_graph = true needs train.optimizer_impl = \"fused\" (torch::optim::AdamW and "
                  "clip_grad_norm_ wait for the device every step); got \"", o.optimizer_impl, "\"");
    if (!device.is_cuda())
      fail_config("train.cuda_graph = true captures the training step into a CUDA graph, but train.device = \"",
                  o.device, "\" resolved to ", device.str(), ": set train.cuda_graph = false or use a CUDA device");
  }
  if (o.threads > 0) at::set_num_threads(static_cast<int>(o.threads));
  for (const auto& seg : data.train) {
    if (seg.bptt_segments <= 1) continue;
    const auto* lm = dynamic_cast<const models::LanguageModelImpl*>(&model);
    SSMLAB_CHECK(lm != nullptr && lm->supports_stateful(), "truncated BPTT (segments = ", seg.bptt_segments,
                 ") carries each layer's state across segments, but ",
                 lm ? "mixer '" + lm->options().mixer + "' has no forward_stateful" : "the model is a " + model.kind(),
                 " (every recurrent mixer has one; attention does not): use segments = 1");
  }
  model.to(device);
  model.train();
  torch::optim::AdamW opt(param_groups(model, o));
  const int rank = group ? group->rank() : 0;
  const bool lead = rank == 0;  // writes metrics, TensorBoard and checkpoints

  const int64_t per_epoch = tasks::count_batches(data.train, data.batch_size);
  int64_t total = per_epoch * o.epochs;
  if (o.max_steps > 0) total = std::min(total, o.max_steps);
  const auto ckpt_root = runfolder::checkpoints_dir(run_dir);
  const auto metrics_file = runfolder::metrics_file(run_dir);

  FitResult result;
  int64_t step = 0;
  double best_acc = NAN;
  bool stop = false;
  if (auto latest = latest_checkpoint(ckpt_root); !latest.empty()) {
    TrainState st = load_checkpoint(latest, model, opt);
    step = st.step;
    // A checkpoint taken before the first evaluation has no accuracy yet (null): that is NaN, not an error.
    best_acc = number_or_nan(st.extra, "last_acc");
    if (const auto it = st.extra.find("last_eval"); it != st.extra.end() && !it->is_null())
      result.last_eval = eval_from_json(*it, latest);
    // An early stop is part of the saved state: a resumed run does not train past it.
    if (const auto it = st.extra.find("early_stopped"); it != st.extra.end() && it->is_boolean() && it->get<bool>()) {
      result.early_stopped = true;
      stop = true;
    }
    result.resumed = true;
    if (lead) truncate_metrics(metrics_file, step);
    if (lead) log::info(str("resumed from ", latest.string(), " at step ", step));
  } else if (lead && std::filesystem::exists(metrics_file)) {
    truncate_metrics(metrics_file, 0);
  }
  if (group) {
    // Every rank must start from the same step and weights: rank 0's step and parameters (and buffers) are
    // broadcast; a rank that found another checkpoint is an error naming both steps.
    at::Tensor root_step = at::full({1}, static_cast<double>(step), at::kDouble);
    std::vector<at::Tensor> v{root_step};
    group->broadcast(v, 0, "broadcast of the starting step");
    const auto step0 = static_cast<int64_t>(root_step.item<double>());
    SSMLAB_CHECK(step0 == step, "rank ", rank, " found its newest checkpoint at step ", step, " under ",
                 ckpt_root.string(), " but rank 0 starts at step ", step0,
                 ": every rank must see the same run folder (a shared file system)");
    std::vector<at::Tensor> state;
    for (const auto& p : model.parameters()) state.push_back(p.data());
    for (const auto& b : model.buffers()) state.push_back(b);
    group->broadcast(state, 0, "broadcast of the parameters");
  }

  // TensorBoard mirrors metrics.jsonl: the events up to the checkpoint carried over (or rebuilt from what the file
  // keeps), then appended to with it; the hparams session ends with success, or failure if training throws.
  std::optional<TbWriter> tb;
  if (o.tensorboard && lead) tb.emplace(tb_session ? *tb_session : TbSession{run_dir, {}, {}, {}}, step, read_metrics(metrics_file));
  struct SessionEndOnThrow {
    std::optional<TbWriter>& tb;
    const int64_t& step;
    const int uncaught = std::uncaught_exceptions();
    ~SessionEndOnThrow() {
      if (tb && std::uncaught_exceptions() > uncaught) try {
          tb->end_session(SessionStatus::failure, step);
        } catch (...) {  // the training error is the one to report
        }
    }
  } end_on_throw{tb, step};
  auto log_record = [&](const json& rec) {
    if (!lead) return;
    append_line(metrics_file, rec.dump());
    if (tb) tb->write(rec);
  };

  auto log_eval = [&] {
    json rec = eval_fields(result.last_eval, task.reports_perplexity());
    rec.update({{"kind", "eval"}, {"step", step}, {"epoch", step / per_epoch}});
    log_record(rec);
  };

  // train.optimizer_impl = fused: torch's AdamW keeps the groups and the state, the update runs fused on the device.
  std::optional<FusedAdamW> fused;
  if (o.optimizer_impl == "fused") fused.emplace(opt);
  // CUDA: the fused kernels read lr from this device tensor (float32, as a CUDA graph replays it), filled each
  // step, so that eager and graph-captured steps compute the same numbers.
  const at::Tensor lr_dev =
      device.is_cuda() ? at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device)) : at::Tensor();
  auto clip_and_step = [&] {
    if (!fused) {
      if (o.grad_clip > 0) torch::nn::utils::clip_grad_norm_(model.parameters(), o.grad_clip);
      opt.step();
      return;
    }
    if (o.grad_clip > 0) clip_grad_norm_nosync(model.parameters(), o.grad_clip);
    if (lr_dev.defined())
      fused->step(lr_dev);
    else
      fused->step();
  };

  // train.cuda_graph (one rank): the step of each full-batch shape (one per train segment shape, at most
  // kMaxGraphs) captured once and replayed; each graph has its own memory pool. The loss is summed
  // on the device (read at log steps), and the first non-finite loss is remembered there with its step.
  constexpr size_t kMaxGraphs = 8;
  std::map<std::pair<std::vector<int64_t>, std::vector<int64_t>>, std::unique_ptr<CudaGraphStep>> graphs;
  CudaGraphStep::Body graph_body;
  std::optional<DeviceLossLog> graph_losses;
  bool graph_pending = false;  // graph steps ran since their losses were last read
  if (o.cuda_graph && group) {
    if (lead) log::warn("train.cuda_graph: data-parallel ranks all-reduce gradients between backward and step; "
                        "training runs eagerly");
  } else if (o.cuda_graph) {
    graph_losses.emplace(device);
    graph_body = [&](const at::Tensor& inputs, const at::Tensor& targets) {
      at::Tensor loss;
      {
        AutocastGuard autocast(o.precision, device);
        loss = task.loss(model.forward(inputs), targets);
      }
      loss.backward();
      graph_losses->record(loss);
      clip_and_step();
    };
  }
  // Reads what graph steps left on the device (a host sync): their loss sum into the window, and the first
  // non-finite loss as the same error an eager step throws, naming its step.
  auto collect_graph_losses = [&](double& loss_window) {
    if (!graph_pending) return;
    graph_pending = false;
    const DeviceLossLog::Taken t = graph_losses->take();
    if (t.bad_step > 0) {
      const int64_t e = (t.bad_step - 1) / per_epoch;
      fail("training diverged: the loss is ", t.bad_loss, " at step ", t.bad_step, " (epoch ", e, ", lr ",
           learning_rate(o, t.bad_step - 1, total, e), "; a CUDA-graph step, seen at step ", step,
           "); checkpoints under ", ckpt_root.string(), " are untouched. Lower train.lr or set train.grad_clip.");
    }
    loss_window += t.loss_sum;
  };

  std::optional<Progress> progress;
  if (lead) progress.emplace(total, step);
  const auto t_start = std::chrono::steady_clock::now();
  auto t_window = t_start;
  int64_t tokens_window = 0;
  double loss_window = 0.0;
  int64_t steps_window = 0;
  double tok_per_s = 0.0;
  double shown_loss = NAN;  // the last logged window's mean training loss, as the progress line shows it
  bool evaluated = result.last_eval.per_segment.size() > 0;

  // The checkpoint carries the last evaluation and the early stop, so that a run killed after its final
  // checkpoint resumes to the same results without training or evaluating again (experiments/run.cpp writes
  // results.json and DONE from them).
  auto save = [&](double last_acc) {
    if (!lead) return;
    if (fused) fused->sync_host_steps();  // graph replays advance only the device step counters
    TrainState st;
    st.step = step;
    st.epoch = step / per_epoch;
    st.extra = {{"last_acc", last_acc},
                {"last_eval", evaluated ? eval_to_json(result.last_eval) : json(nullptr)},
                {"early_stopped", result.early_stopped}};
    char name[32];
    std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(step));
    save_checkpoint(ckpt_root / name, model, opt, st);
    prune_checkpoints(ckpt_root, o.keep_checkpoints);
  };

  const std::vector<at::Tensor> params = model.parameters();
  while (step < total && !stop) {
    if (group) fault_point(str("rank", rank, "_before_step_", step + 1).c_str());  // tests kill one rank here
    const int64_t epoch = step / per_epoch;
    const auto batch = tasks::batch_at(data.train, data.batch_size, step % per_epoch);
    const double lr = learning_rate(o, step, total, epoch);
    set_lr(opt, lr);
    if (lr_dev.defined()) lr_dev.fill_(lr);
    const int64_t bptt = data.train[static_cast<size_t>(batch.segment)].bptt_segments;
    double loss_v = NAN;
    // The graph of this batch's shape (made on first sight): full batches only, so that a last partial batch
    // costs no capture of its own.
    CudaGraphStep* graph = nullptr;
    if (graph_body && bptt == 1 && batch.inputs.size(0) == data.batch_size) {
      auto key = std::make_pair(batch.inputs.sizes().vec(), batch.targets.sizes().vec());
      auto it = graphs.find(key);
      if (it == graphs.end() && graphs.size() < kMaxGraphs)
        it = graphs.emplace(key, std::make_unique<CudaGraphStep>(device, graph_body, [&] { opt.zero_grad(); })).first;
      if (it != graphs.end() && it->second->accepts(batch.inputs, batch.targets)) graph = it->second.get();
    }
    const bool graphed = graph != nullptr;
    if (!graphed) opt.zero_grad();
    if (graphed) {
      graph_losses->set_step(step + 1);
      graph->run(batch.inputs, batch.targets);
      graph_pending = true;
      loss_v = 0.0;  // summed on the device, read at the next log step
      ++result.graph_steps;
    } else if (!group) {
      const at::Tensor inputs = batch.inputs.to(device), targets = batch.targets.to(device);
      loss_v = batch_gradients(model, task, inputs, targets, bptt, o.precision, device);
    } else {
      // This rank's rows of the global batch; its mean loss and gradients weighted by its share of the batch's
      // counted targets, so that the all-reduced sum is the global batch's mean, whatever the split.
      const auto [lo, hi] = shard_rows(batch.inputs.size(0), rank, group->size());
      const int64_t n_all = task.loss_count(batch.targets);
      std::vector<double> weighted{n_all > 0 ? 0.0 : NAN};
      if (hi > lo && n_all > 0) {
        const at::Tensor tg_cpu = batch.targets.narrow(0, lo, hi - lo);
        const int64_t n_r = task.loss_count(tg_cpu);
        if (n_r > 0) {
          const at::Tensor inputs = batch.inputs.narrow(0, lo, hi - lo).to(device), targets = tg_cpu.to(device);
          const double l = batch_gradients(model, task, inputs, targets, bptt, o.precision, device);
          const double w = static_cast<double>(n_r) / static_cast<double>(n_all);
          if (std::isfinite(l)) {
            at::NoGradGuard no_grad;
            for (const auto& p : params)
              if (p.grad().defined()) p.grad().mul_(w);
          }
          weighted[0] = l * w;
        }
      }
      allreduce_gradients(*group, params, weighted);
      loss_v = weighted[0];
    }
    SSMLAB_CHECK(std::isfinite(loss_v), "training diverged: the loss is ", loss_v, " at step ", step + 1, " (epoch ",
                 epoch, ", lr ", lr, "); checkpoints under ", ckpt_root.string(),
                 " are untouched. Lower train.lr or set train.grad_clip.");
    if (!graphed) clip_and_step();
    ++step;

    tokens_window += batch.inputs.size(0) * batch.inputs.size(1);  // positions (feature inputs are (B, L, C))
    loss_window += loss_v;
    ++steps_window;
    const bool epoch_end = step % per_epoch == 0;
    const bool eval_due = o.eval_every > 0 ? (step % o.eval_every == 0) : epoch_end;
    const bool ckpt_due = o.checkpoint_every > 0 ? step % o.checkpoint_every == 0 : (eval_due || step == total);
    // A train record is also written at every checkpoint, so a resumed run's averaging windows line up
    // with an uninterrupted run's.
    if (step % o.log_every == 0 || step == total || ckpt_due || eval_due) {
      collect_graph_losses(loss_window);
      const auto now = std::chrono::steady_clock::now();
      const double dt = std::chrono::duration<double>(now - t_window).count();
      tok_per_s = dt > 0 ? static_cast<double>(tokens_window) / dt : 0.0;
      log_record(json{{"kind", "train"},
                      {"step", step},
                      {"epoch", step / per_epoch},
                      {"train_loss", loss_window / static_cast<double>(steps_window)},
                      {"lr", lr},
                      {"tokens_per_s", tok_per_s}});
      shown_loss = loss_window / static_cast<double>(steps_window);
      // An evaluation step's line is printed once, after the evaluation, with its accuracy.
      if (!(eval_due || step == total) && progress) progress->update(step, shown_loss, tok_per_s, best_acc, lr);
      t_window = now;
      tokens_window = 0;
      loss_window = 0.0;
      steps_window = 0;
    }
    if (eval_due || step == total) {
      result.last_eval = evaluate_sharded(model, task, data.test, data.test_batch_size, device, o.precision, group);
      evaluated = true;
      best_acc = result.last_eval.accuracy;
      log_eval();
      if (progress) progress->update(step, shown_loss, tok_per_s, best_acc, lr, /*force=*/true);
      if (o.early_stop_acc > 0 && result.last_eval.accuracy >= o.early_stop_acc) {
        result.early_stopped = true;
        stop = true;
      }
    }
    if (step == total || stop) fault_point("before_final_checkpoint");
    if (ckpt_due || stop || step == total) save(best_acc);  // the last step is always saved
    if (step == total || stop) fault_point("after_final_checkpoint");
    if (o.halt_after_steps > 0 && step >= o.halt_after_steps && !stop && step < total) {
      result.halted = true;
      break;
    }
  }
  if (step >= total && !evaluated && !result.halted) {
    // Resumed at the end from a checkpoint that holds no evaluation (written before checkpoints carried one).
    result.last_eval = evaluate_sharded(model, task, data.test, data.test_batch_size, device, o.precision, group);
    evaluated = true;
    log_eval();
    save(result.last_eval.accuracy);
  }
  if (progress) progress->finish();
  if (tb && !result.halted) tb->end_session(SessionStatus::success, step);
  result.steps = step;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return result;
}

}  // namespace ssmlab::train
