#include "ssmlab/analysis/collapse.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/fields.h"

namespace ssmlab::analysis {
namespace {

// Finds an int64 option by its key among the top-level fields of an options struct (the text task's
// `segments`, which only exists where TBPTT training does).
struct CollapseFindInt {
  std::string key;
  std::optional<int64_t> found;
  template <class T>
  void operator()(const char* name, T& value, const char*, const Check& = {}) {
    if constexpr (std::is_same_v<T, int64_t>)
      if (key == name) found = value;
  }
};

// The tokens of `block` repeated to (samples, len): every sample the same sequence.
at::Tensor collapse_tile(const std::vector<uint32_t>& block, int64_t samples, int64_t len, const char* what) {
  if (block.empty()) fail_data("loss prompt '", what, "': the tokenizer gave no tokens");
  at::Tensor row = at::empty({len}, at::kLong);
  int64_t* p = row.data_ptr<int64_t>();
  for (int64_t i = 0; i < len; ++i) p[i] = block[static_cast<size_t>(i) % block.size()];
  return row.unsqueeze(0).expand({samples, len}).contiguous();
}

mixers::Mitigable* collapse_mitigable(models::LanguageModelImpl& model, size_t layer) {
  return dynamic_cast<mixers::Mitigable*>(model.blocks[layer]->mixer.get());
}

}  // namespace

models::LanguageModelImpl& collapse_language_model(const Context& ctx, const char* who) {
  auto* lm = dynamic_cast<models::LanguageModelImpl*>(&ctx.model);
  if (lm == nullptr)
    fail_config(who, ": the run's model is a '", ctx.model.kind(), "'; this analysis needs a language model "
                "(task 'text')");
  return *lm;
}

const tasks::TextTask& collapse_text_task(const Context& ctx, const char* who) {
  const auto* task = dynamic_cast<const tasks::TextTask*>(&ctx.task);
  if (task == nullptr)
    fail_config(who, ": the run's task is '", ctx.task.name(), "'; this analysis needs task 'text' (its tokenizer "
                "makes the prompts and its corpus the text prompt)");
  return *task;
}

int64_t collapse_t_train(const tasks::TextTask& task) {
  tasks::TextConfig cfg = task.config();
  CollapseFindInt finder{"segments", std::nullopt};
  cfg.visit(finder);
  const int64_t segments = finder.found.value_or(1);
  SSMLAB_CHECK(segments >= 1, "task.text.segments must be >= 1; got ", segments);
  return cfg.seq_len * segments;
}

at::Tensor collapse_prompt(const tasks::TextTask& task, const std::string& prompt, int64_t samples, int64_t len) {
  SSMLAB_CHECK(samples >= 1 && len >= 1, "prompt: samples and length must be >= 1; got ", samples, " and ", len);
  const text::Tokenizer& tok = task.tokenizer();
  if (prompt == "newlines") return collapse_tile(tok.encode(std::string(1024, '\n')), samples, len, "newlines");
  if (prompt == "capital")
    // A leading space, no trailing one: every repeat pre-tokenises as the first, so the ids tile exactly.
    return collapse_tile(tok.encode(" The capital of France is Paris. The capital of Japan is Tokyo. The capital of "
                                    "Italy is Rome."),
                         samples, len, "capital");
  if (prompt != "text")
    fail_config("prompt '", prompt, "' is not one of text, newlines, capital");
  const auto tf = task.token_file();
  const int64_t begin = tf->validation_begin(), V = tf->size() - begin;
  if (V < 2)
    fail_data("prompt 'text': the validation split of ", tf->manifest_path().string(), " holds ", V,
              " tokens; raise task.text.validation_fraction");
  at::Tensor out = at::empty({samples, len}, at::kLong);
  for (int64_t i = 0; i < samples; ++i) {
    int64_t* row = out[i].data_ptr<int64_t>();
    int64_t at_pos = i * V / samples, done = 0;  // offset into the validation stream
    while (done < len) {
      const int64_t n = std::min(len - done, V - at_pos);
      tf->read(begin + at_pos, n, row + done);
      done += n;
      at_pos = 0;  // the stream again from its start
    }
  }
  return out;
}

std::vector<LossBucket> bucket_losses(const std::vector<double>& losses, int64_t bucket) {
  SSMLAB_CHECK(bucket >= 1, "bucket must be >= 1 position; got ", bucket);
  const int64_t n = static_cast<int64_t>(losses.size());
  const int64_t nb = (n + bucket - 1) / bucket;
  SSMLAB_CHECK(nb >= 3, "bucketing: ", n, " positions in buckets of ", bucket, " give ", nb,
               " buckets; at least 3 are needed (the first and the last are dropped)");
  std::vector<LossBucket> out;
  for (int64_t b = 1; b + 1 < nb; ++b) {
    LossBucket k;
    k.begin = b * bucket;
    k.end = std::min(n, (b + 1) * bucket);
    double sum = 0;
    for (int64_t t = k.begin; t < k.end; ++t) sum += losses[static_cast<size_t>(t)];
    k.loss = sum / static_cast<double>(k.end - k.begin);
    k.x = 0.5 * static_cast<double>(k.begin + k.end);
    out.push_back(k);
  }
  return out;
}

ForgetVerdict forget_verdict(const std::vector<LossBucket>& buckets, int64_t t_train, double factor,
                             bool on_perplexity) {
  ForgetVerdict v;
  v.max_within = -std::numeric_limits<double>::infinity();
  v.max_beyond = -std::numeric_limits<double>::infinity();
  double sum = 0;
  for (const auto& b : buckets) {
    if (b.end <= t_train) {
      v.max_within = std::max(v.max_within, b.loss);
      sum += b.loss;
      ++v.within;
    } else if (b.begin >= t_train) {
      // std::max would drop a NaN; an overflowing (NaN / inf) bucket must win.
      if (!std::isnan(v.max_beyond) && (!std::isfinite(b.loss) || b.loss > v.max_beyond)) v.max_beyond = b.loss;
      ++v.beyond;
    }
  }
  SSMLAB_CHECK(v.within >= 1, "learned-to-forget criterion: no kept bucket lies inside T_train = ", t_train,
               " (the first bucket is dropped); use a smaller bucket (at most T_train / 2)");
  SSMLAB_CHECK(v.beyond >= 1, "learned-to-forget criterion: no bucket lies beyond T_train = ", t_train,
               "; evaluate further (max_len)");
  v.mean_within = sum / static_cast<double>(v.within);
  // NaN or inf beyond (an overflowing state) is no forgetting.
  const double bound = on_perplexity ? v.max_within + std::log(factor) : factor * v.max_within;
  v.learned_to_forget = std::isfinite(v.max_beyond) && v.max_beyond < bound;
  return v;
}

at::Tensor state_head_stats(const at::Tensor& state) {
  SSMLAB_CHECK(state.defined() && state.dim() >= 2, "state statistics: the state must be (B, H, ...); got ",
               state.defined() ? shape_str(state.sizes()) : std::string("undefined"));
  const int64_t H = state.size(1);
  // (H, B·rest): every element of head h over the batch.
  const at::Tensor s = state.detach().to(at::kCPU, at::kDouble).transpose(0, 1).reshape({H, -1});
  SSMLAB_CHECK(s.size(1) >= 2, "state statistics: a head needs at least 2 elements for a variance; got ", s.size(1));
  const at::Tensor mean = s.mean(1);
  const at::Tensor var = s.var(1, /*unbiased=*/true);
  const at::Tensor rms = s.pow(2).mean(1).sqrt();
  const at::Tensor median = std::get<0>(s.median(1));
  return at::stack({mean, var, rms, median}, 1);  // (H, 4)
}

at::Tensor cumulative_retention(const at::Tensor& log_decay, const at::Tensor& log_start) {
  SSMLAB_CHECK(log_decay.dim() == 2, "cumulative retention: log decay must be (T, H); got ",
               shape_str(log_decay.sizes()));
  at::Tensor run = log_decay.to(at::kDouble).cumsum(0);
  if (log_start.defined()) run = run + log_start.to(at::kDouble).view({1, -1});
  return at::exp(run);
}

std::vector<at::Tensor> calibrate_state_norm(models::LanguageModelImpl& model, const at::Tensor& tokens,
                                             int64_t every) {
  SSMLAB_CHECK(every >= 1, "state-norm calibration: every must be >= 1 token; got ", every);
  SSMLAB_CHECK(tokens.dim() == 2 && tokens.size(1) >= 1, "state-norm calibration: tokens must be (B, L), L >= 1; got ",
               shape_str(tokens.sizes()));
  const auto params = model.parameters();
  SSMLAB_CHECK(!params.empty(), "state-norm calibration: the model has no parameters");
  const c10::Device device = params.front().device();
  at::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  auto states = model.init_state(tokens.size(0), device);
  const size_t layers = model.blocks.size();
  std::vector<at::Tensor> best(layers);
  for (int64_t t0 = 0; t0 < tokens.size(1); t0 += every) {
    const int64_t l = std::min(every, tokens.size(1) - t0);
    Trace trace({"state"});
    model.forward_stateful(tokens.narrow(1, t0, l).to(device), states, &trace);
    for (size_t i = 0; i < layers; ++i) {
      if (!trace.has("state", static_cast<int64_t>(i))) continue;
      const at::Tensor S = trace.get("state", static_cast<int64_t>(i)).to(at::kCPU, at::kDouble);  // (B, H, ...)
      const at::Tensor norm = std::get<0>(S.flatten(2).norm(2, -1).max(0));                        // (H)
      best[i] = best[i].defined() ? at::maximum(best[i], norm) : norm;
    }
  }
  model.train(was_training);
  return best;
}

std::vector<std::optional<mixers::Mitigations>> save_mitigations(models::LanguageModelImpl& model) {
  std::vector<std::optional<mixers::Mitigations>> out;
  for (size_t i = 0; i < model.blocks.size(); ++i) {
    auto* m = collapse_mitigable(model, i);
    out.push_back(m ? std::optional(m->mitigations()) : std::nullopt);
  }
  return out;
}

void restore_mitigations(models::LanguageModelImpl& model,
                         const std::vector<std::optional<mixers::Mitigations>>& base) {
  for (size_t i = 0; i < model.blocks.size() && i < base.size(); ++i)
    if (auto* m = collapse_mitigable(model, i); m && base[i]) m->set_mitigations(*base[i]);
}

void apply_variant(models::LanguageModelImpl& model, const std::string& variant, const VariantSettings& s,
                   const std::vector<std::optional<mixers::Mitigations>>& base) {
  const auto& names = collapse_variant_names();
  if (std::find(names.begin(), names.end(), variant) == names.end())
    fail_config("variant '", variant, "' is not one of none, rri, state_norm, state_norm_seed, window");
  const std::string need = variant.rfind("state_norm", 0) == 0 ? "state_norm" : variant;
  int64_t applied = 0;
  for (size_t i = 0; i < model.blocks.size(); ++i) {
    auto* m = collapse_mitigable(model, i);
    if (m == nullptr || !base[i]) continue;
    mixers::Mitigations mit = *base[i];
    if (variant != "none") {
      const auto sup = m->mitigations_supported();
      if (std::find(sup.begin(), sup.end(), need) == sup.end()) continue;
    }
    if (variant == "rri") {
      mit.decay_mult = s.rri_decay;
      mit.b_mult = s.rri_b;
    } else if (need == "state_norm") {
      if (i >= s.tau.size() || !s.tau[i].defined()) continue;
      // A head whose state stayed 0 in calibration keeps no threshold worth the name: floor it.
      mit.state_norm_tau = at::clamp_min(s.tau[i], 1e-12);
      mit.state_norm_form = variant == "state_norm_seed" ? "seed" : "min";
    } else if (variant == "window") {
      SSMLAB_CHECK(s.window >= 1, "variant window: the window must be >= 1 token; got ", s.window);
      mit.window = s.window;
    }
    m->set_mitigations(mit);
    ++applied;
  }
  if (variant != "none" && applied == 0)
    fail_config("variant '", variant, "': no layer's mixer ('", model.options().mixer, "') implements ", need,
                " (mamba2: rri, state_norm, window; mamba1: rri)");
}

int64_t ssm_state_numbers(models::LanguageModelImpl& model) {
  int64_t total = 0;
  for (const auto& b : model.blocks) {
    const mixers::State s = b->mixer->init_state(1, c10::Device(c10::kCPU));
    if (!s.tensors.count("ssm")) return -1;
    total += s.tensors.at("ssm").numel();
  }
  return total;
}

void add_vertical_line(std::vector<std::vector<double>>& rows, size_t columns, double x, double ymin, double ymax) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (auto& r : rows) r.push_back(nan);
  for (double y : {ymin, ymax}) {
    std::vector<double> r(columns, nan);
    r[0] = x;
    r.push_back(y);
    rows.push_back(std::move(r));
  }
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a[0] < b[0]; });
}

}  // namespace ssmlab::analysis
