#include "ssmlab/analysis/passkey.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "ssmlab/analysis/figures.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/models/long_eval.h"
#include "ssmlab/tasks/text.h"

namespace ssmlab::analysis {

namespace passkey_detail {

int64_t token_count(const text::Tokenizer& tok, const std::string& s) {
  return static_cast<int64_t>(tok.encode(s).size());
}

// Restores a module's training mode when the scope ends (also on an error).
class PasskeyEvalScope {
 public:
  explicit PasskeyEvalScope(torch::nn::Module& m) : m_(m), was_training_(m.is_training()) { m_.eval(); }
  ~PasskeyEvalScope() { m_.train(was_training_); }
  PasskeyEvalScope(const PasskeyEvalScope&) = delete;
  PasskeyEvalScope& operator=(const PasskeyEvalScope&) = delete;

 private:
  torch::nn::Module& m_;
  bool was_training_;
};

void check_key(const std::string& key) {
  if (key.empty() || key.size() > 32 || key.find_first_not_of("0123456789") != std::string::npos)
    fail_config("analysis.passkey.key: '", key, "' is not a key of 1 to 32 digits (\"\" draws a random 5-digit key "
                "per sample)");
}

double mean_or_nan(const std::vector<double>& v) {
  if (v.empty()) return NAN;
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

}  // namespace passkey_detail

std::string passkey_needle(const std::string& key) {
  return "The passkey is " + key + ". Remember it. " + key + " is the passkey.\n";
}

int64_t passkey_blocks(const text::Tokenizer& tok, int64_t context_len) {
  using passkey_detail::token_count;
  const int64_t prefix = token_count(tok, kPasskeyPrefix), suffix = token_count(tok, kPasskeySuffix),
                block = token_count(tok, kPasskeyBlock);
  const int64_t room = context_len - prefix - suffix;
  if (room < block)
    fail_config("passkey: a context of ", context_len, " tokens holds no haystack block (", tok.kind(),
                " tokens: prefix ", prefix, ", suffix ", suffix, ", block ", block, "; the shortest length is ",
                prefix + suffix + block, ")");
  return room / block;
}

int64_t passkey_needle_block(int64_t n_blocks, double depth) {
  SSMLAB_CHECK(n_blocks >= 1, "passkey_needle_block: n_blocks must be >= 1; got ", n_blocks);
  SSMLAB_CHECK(depth >= 0.0 && depth <= 1.0, "passkey_needle_block: depth must be in [0, 1]; got ", depth);
  return static_cast<int64_t>(std::floor(depth * static_cast<double>(n_blocks - 1)));
}

PasskeyPrompt make_passkey_prompt(const text::Tokenizer& tok, int64_t context_len, double depth,
                                  const std::string& key) {
  PasskeyPrompt p;
  p.n_blocks = passkey_blocks(tok, context_len);
  p.needle_block = passkey_needle_block(p.n_blocks, depth);
  const std::string needle = passkey_needle(key), block = kPasskeyBlock;
  p.text = kPasskeyPrefix;
  p.text.reserve(p.text.size() + static_cast<size_t>(p.n_blocks) * block.size() + needle.size() + 64);
  for (int64_t b = 0; b < p.n_blocks; ++b) p.text += b == p.needle_block ? needle : block;
  p.text += kPasskeySuffix;
  p.tokens = tok.encode(p.text);
  return p;
}

std::vector<double> passkey_depths(int64_t n) {
  SSMLAB_CHECK(n >= 1, "passkey_depths: need at least one sample; got ", n);
  std::vector<double> d;
  for (int64_t i = 0; i < n; ++i) d.push_back((static_cast<double>(i) + 0.5) / static_cast<double>(n));
  return d;
}

int64_t passkey_depth_bin(double depth, int64_t bins) {
  SSMLAB_CHECK(bins >= 1, "passkey_depth_bin: bins must be >= 1; got ", bins);
  int64_t b = 0;
  while (b < bins - 1 && depth > static_cast<double>(b + 1) / static_cast<double>(bins)) ++b;
  return b;
}

std::string random_passkey(Rng& rng) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%05lld", static_cast<long long>(rng.randint(0, 100000)));
  return buf;
}

bool passkey_correct(const std::string& key, const std::string& decoded) {
  return !key.empty() && decoded.find(key) != std::string::npos;
}

std::optional<int64_t> passkey_t_recall(const std::vector<int64_t>& lengths, const std::vector<double>& accuracy,
                                        double threshold) {
  SSMLAB_CHECK(lengths.size() == accuracy.size(), "passkey_t_recall: ", lengths.size(), " lengths, ",
               accuracy.size(), " accuracies");
  std::optional<int64_t> best;
  for (size_t i = 0; i < lengths.size(); ++i)
    if (accuracy[i] >= threshold && (!best || lengths[i] > *best)) best = lengths[i];
  return best;
}

at::Tensor greedy_continue(models::LanguageModelImpl& model, const at::Tensor& prompts, int64_t new_tokens,
                           int64_t segment) {
  SSMLAB_CHECK(prompts.dim() == 2 && prompts.size(1) >= 1 && prompts.scalar_type() == at::kLong,
               "greedy_continue: prompts must be (B, L) int64 with L >= 1; got ", shape_str(prompts.sizes()), " ",
               c10::toString(prompts.scalar_type()));
  SSMLAB_CHECK(new_tokens >= 1, "greedy_continue: new_tokens must be >= 1; got ", new_tokens);
  const auto params = model.parameters();
  SSMLAB_CHECK(!params.empty(), "greedy_continue: the model has no parameters");
  const c10::Device device = params.front().device();
  at::NoGradGuard no_grad;
  passkey_detail::PasskeyEvalScope eval(model);
  const int64_t B = prompts.size(0), L = prompts.size(1);
  std::vector<mixers::State> states = model.init_state(B, device);
  at::Tensor next;  // (B) int64: the argmax after the prompt's last token
  models::run_segments(
      model, prompts, segment,
      [&](int64_t offset, const at::Tensor& logits) {  // logits (B, l, V)
        if (offset + logits.size(1) == L) next = logits.select(1, logits.size(1) - 1).argmax(-1);
      },
      &states);
  SSMLAB_CHECK(next.defined(), "greedy_continue: the prefill never reached the prompt's last token");
  at::Tensor out = at::empty({B, new_tokens}, at::kLong);  // (B, new_tokens) on CPU
  for (int64_t k = 0; k < new_tokens; ++k) {
    out.select(1, k).copy_(next.cpu());
    if (k + 1 < new_tokens) next = model.step(next, states).argmax(-1);  // (B, V) -> (B)
  }
  return out;
}

Result run_passkey(const Context& ctx, const PasskeyOptions& opts) {
  using namespace passkey_detail;
  const auto* task = dynamic_cast<const tasks::TextTask*>(&ctx.task);
  if (task == nullptr)
    fail_config("passkey: the run's task is '", ctx.task.name(), "'; passkey retrieval needs task 'text' "
                "(tasks/text.h), whose tokenizer writes the prompts");
  auto* model = dynamic_cast<models::LanguageModelImpl*>(&ctx.model);
  if (model == nullptr)
    fail_config("passkey: the model is a '", ctx.model.kind(), "'; passkey retrieval decodes with a language_model");
  if (!opts.key.empty()) check_key(opts.key);
  const text::Tokenizer& tok = task->tokenizer();
  std::vector<int64_t> lengths = parse_int_list(opts.lengths, "analysis.passkey.lengths");
  if (lengths.empty()) fail_config("analysis.passkey.lengths: name at least one context length (e.g. \"256,512\")");
  for (size_t i = 0; i < lengths.size(); ++i) {
    passkey_blocks(tok, lengths[i]);  // throws when no block fits
    for (size_t j = 0; j < i; ++j)
      if (lengths[j] == lengths[i]) fail_config("analysis.passkey.lengths: ", lengths[i], " is listed twice");
  }
  std::sort(lengths.begin(), lengths.end());
  const int64_t t_train = opts.t_train > 0 ? opts.t_train : task->config().seq_len;
  const int64_t curve_bins = opts.curve_bins == 0 ? opts.bins : std::min(opts.curve_bins, opts.bins);

  Rng rng(ctx.seed);
  const std::vector<double> depths = passkey_depths(opts.samples);
  const size_t nl = lengths.size(), nb = static_cast<size_t>(opts.bins);
  std::vector<std::vector<double>> hits(nb, std::vector<double>(nl, 0.0)), counts = hits;
  std::vector<double> curve(nl, NAN), overall(nl, NAN);
  nlohmann::json samples = nlohmann::json::array();
  for (size_t li = 0; li < nl; ++li) {
    const int64_t L = lengths[li];
    std::vector<PasskeyPrompt> prompts;
    std::vector<std::string> keys;
    for (double d : depths) {
      keys.push_back(opts.key.empty() ? random_passkey(rng) : opts.key);
      prompts.push_back(make_passkey_prompt(tok, L, d, keys.back()));
    }
    // Prefill prompts of one token length together (a BPE key can change the count by a token).
    std::map<size_t, std::vector<size_t>> by_length;
    for (size_t i = 0; i < prompts.size(); ++i) by_length[prompts[i].tokens.size()].push_back(i);
    std::vector<std::string> decoded(prompts.size());
    for (const auto& [n_tokens, members] : by_length)
      for (size_t g = 0; g < members.size(); g += static_cast<size_t>(opts.batch_size)) {
        const size_t m = std::min(static_cast<size_t>(opts.batch_size), members.size() - g);
        at::Tensor batch = at::empty({static_cast<int64_t>(m), static_cast<int64_t>(n_tokens)}, at::kLong);
        auto acc = batch.accessor<int64_t, 2>();
        for (size_t r = 0; r < m; ++r)
          for (size_t t = 0; t < n_tokens; ++t) acc[r][t] = prompts[members[g + r]].tokens[t];
        const at::Tensor out = greedy_continue(*model, batch, opts.new_tokens, opts.segment);  // (m, new_tokens)
        const auto o = out.accessor<int64_t, 2>();
        for (size_t r = 0; r < m; ++r) {
          std::vector<uint32_t> ids;
          for (int64_t k = 0; k < opts.new_tokens; ++k) ids.push_back(static_cast<uint32_t>(o[r][k]));
          decoded[members[g + r]] = tok.decode(ids);
        }
      }
    std::vector<double> all, deep;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const bool ok = passkey_correct(keys[i], decoded[i]);
      const int64_t b = passkey_depth_bin(depths[i], opts.bins);
      hits[static_cast<size_t>(b)][li] += ok ? 1.0 : 0.0;
      counts[static_cast<size_t>(b)][li] += 1.0;
      all.push_back(ok ? 1.0 : 0.0);
      if (b >= opts.bins - curve_bins) deep.push_back(ok ? 1.0 : 0.0);
      samples.push_back({{"length", L},
                         {"tokens", prompts[i].tokens.size()},
                         {"depth", depths[i]},
                         {"bin", b},
                         {"needle_block", prompts[i].needle_block},
                         {"n_blocks", prompts[i].n_blocks},
                         {"key", keys[i]},
                         {"decoded", decoded[i]},
                         {"correct", ok}});
    }
    overall[li] = mean_or_nan(all);
    curve[li] = mean_or_nan(deep);
  }
  std::vector<std::vector<double>> grid(nb, std::vector<double>(nl, NAN));
  for (size_t b = 0; b < nb; ++b)
    for (size_t li = 0; li < nl; ++li)
      if (counts[b][li] > 0) grid[b][li] = hits[b][li] / counts[b][li];

  Result r;
  for (const auto& f : write_depth_heatmap(
           ctx.run_dir, "passkey", lengths, grid,
           {{"title", "Passkey retrieval accuracy"},
            {"xlabel", "context length (tokens)"},
            {"ylabel", "needle depth (0 = start of the haystack)"},
            {"zlabel", "accuracy"},
            {"palette", "rdylgn"},
            {"zmin", 0.0},
            {"zmax", 1.0},
            {"caption", "Fraction of prompts whose 5-digit key occurs in the 5 greedily decoded tokens, by context "
                        "length and needle depth (spec §3.4). The paper: near-perfect within the training length, "
                        "about zero beyond ~2x it for a model trained short."}}))
    r.files.push_back(f);
  std::vector<std::vector<double>> curve_rows;
  for (size_t li = 0; li < nl; ++li) curve_rows.push_back({static_cast<double>(lengths[li]), curve[li]});
  r.files.push_back(write_csv(ctx.run_dir, "passkey_curve", {"length", ctx.label.empty() ? "accuracy" : ctx.label},
                              curve_rows));
  r.files.push_back(write_spec(
      ctx.run_dir, "passkey_curve",
      {{"kind", "line"},
       {"title", "Passkey accuracy vs context length"},
       {"xlabel", "context length (tokens)"},
       {"ylabel", "accuracy"},
       {"logx", lengths.size() > 1 && lengths.back() >= 4 * lengths.front()},
       {"ymin", 0.0},
       {"ymax", 1.0},
       {"style", "linespoints"},
       {"caption", curve_bins == opts.bins
                       ? std::string("Accuracy over every depth per context length (spec §3.4); T_recall is the "
                                     "largest length at or above the threshold.")
                       : "Accuracy over the deepest " + std::to_string(curve_bins) + " of " +
                             std::to_string(opts.bins) + " depth bins per context length (spec §3.4)."}}));

  const std::optional<int64_t> t_recall = passkey_t_recall(lengths, curve, opts.threshold);
  std::vector<double> inside, beyond;
  for (size_t li = 0; li < nl; ++li) {
    if (lengths[li] <= t_train) inside.push_back(overall[li]);
    if (lengths[li] >= 2 * t_train) beyond.push_back(overall[li]);
  }
  const int64_t state_size = ctx.model.state_size();
  const nlohmann::json t_recall_json = t_recall ? nlohmann::json(*t_recall) : nlohmann::json(nullptr);
  r.summary = {
      {"lengths", lengths},
      {"samples_per_length", opts.samples},
      {"bins", opts.bins},
      {"new_tokens", opts.new_tokens},
      {"tokenizer", tok.kind()},
      {"key", opts.key.empty() ? "random 5-digit per sample" : opts.key},
      {"accuracy", grid},  // [bin][length], null where a bin holds no sample
      {"accuracy_by_length", overall},
      {"curve", curve},
      {"curve_bins", curve_bins},
      {"threshold", opts.threshold},
      {"t_recall", t_recall_json},
      {"t_train", t_train},
      {"state_size", state_size},
      {"samples", samples},
      {"paper",
       nlohmann::json::array(
           {paper_row("passkey accuracy at lengths <= T_train (" + std::to_string(t_train) + " tokens)",
                      "near-perfect (official Mamba-2 trained at 8K: near-perfect up to 8K)",
                      number_or_null(mean_or_nan(inside)), "Stuffed Mamba §3.4 (spec §3.4, secondary)"),
            paper_row("passkey accuracy at lengths >= 2 T_train", "about 0 (8K-trained Mamba-2: ~0 beyond ~16K)",
                      number_or_null(mean_or_nan(beyond)), "Stuffed Mamba §3.4 (spec §3.4, secondary)"),
            paper_row("T_recall (largest length with accuracy >= " + std::to_string(opts.threshold).substr(0, 4) +
                          "), state size " + std::to_string(state_size),
                      "grows exponentially with N_S: T_recall = 4.756 (1.365^N_S - 1) - 0.742 (N_S in M, T in K "
                      "tokens; R^2 > 0.999)",
                      t_recall_json, "Stuffed Mamba §3.5 (spec §3.5, secondary)")})}};
  for (auto& row : r.summary["accuracy"])
    for (auto& v : row)
      if (!v.is_null() && !std::isfinite(v.get<double>())) v = nullptr;
  for (const char* key : {"accuracy_by_length", "curve"})
    for (auto& v : r.summary[key])
      if (!std::isfinite(v.get<double>())) v = nullptr;
  return r;
}

}  // namespace ssmlab::analysis
