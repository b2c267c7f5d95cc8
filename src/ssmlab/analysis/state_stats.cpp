#include "ssmlab/analysis/state_stats.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "ssmlab/analysis/collapse.h"
#include "ssmlab/analysis/figures.h"
#include "ssmlab/core/error_kinds.h"

namespace ssmlab::analysis {
namespace {

std::vector<double> state_stats_vec(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

struct StateStatsLayer {
  std::vector<at::Tensor> stats;      // per chunk (H, 4)
  std::vector<at::Tensor> alpha;      // per chunk (H): mean α over the chunk's tokens
  std::vector<at::Tensor> retention;  // per chunk (H): Π α up to the chunk's end
  at::Tensor log_sum, alpha_sum;      // (H) running Σ ln α and Σ α
  int64_t tokens = 0;
  at::Tensor snap_train, snap_late;   // the state at T_train and at 2.5 T_train
};

}  // namespace

Result run_state_stats(const Context& ctx, const StateStatsOptions& opts) {
  const char* who = "state_stats";
  models::LanguageModelImpl& lm = collapse_language_model(ctx, who);
  const tasks::TextTask& task = collapse_text_task(ctx, who);
  const int64_t t_train = opts.t_train > 0 ? opts.t_train : collapse_t_train(task);
  const int64_t max_len = opts.max_len > 0 ? opts.max_len : 4 * t_train;
  const int64_t C = opts.chunk > 0 ? opts.chunk : std::max<int64_t>(1, std::min<int64_t>(128, t_train / 2));
  const int64_t n_chunks = max_len / C;
  const int64_t i_train = std::max<int64_t>(0, (t_train + C / 2) / C - 1);
  const int64_t i_late = std::max<int64_t>(0, (5 * t_train / 2 + C / 2) / C - 1);
  if (i_late >= n_chunks || i_late <= i_train)
    fail_config("analysis.state_stats: max_len ", max_len, " in chunks of ", C, " does not reach 2.5 x T_train = ",
                5 * t_train / 2, " past T_train = ", t_train, "; raise max_len or lower chunk");
  const at::Tensor tokens = collapse_prompt(task, opts.prompt, opts.samples, n_chunks * C);  // (B, L)

  const auto params = lm.parameters();
  SSMLAB_CHECK(!params.empty(), "state_stats: the model has no parameters");
  const c10::Device device = params.front().device();
  const size_t layers = lm.blocks.size();
  std::vector<StateStatsLayer> acc(layers);
  at::NoGradGuard no_grad;
  auto states = lm.init_state(opts.samples, device);
  for (int64_t c = 0; c < n_chunks; ++c) {
    Trace trace({"state", "decay"});
    lm.forward_stateful(tokens.narrow(1, c * C, C).to(device), states, &trace);
    for (size_t l = 0; l < layers; ++l) {
      auto& a = acc[l];
      const int64_t li = static_cast<int64_t>(l);
      if (trace.has("state", li)) {
        const at::Tensor S = trace.get("state", li);
        a.stats.push_back(state_head_stats(S));
        if (c == i_train) a.snap_train = S.to(at::kCPU, at::kDouble);
        if (c == i_late) a.snap_late = S.to(at::kCPU, at::kDouble);
      }
      if (!trace.has("decay", li)) continue;
      const at::Tensor d = trace.get("decay", li);
      // Per position only: (B, l, H, ...). A time-invariant decay has no (B, L) lead.
      if (d.dim() < 3 || d.size(0) != opts.samples || d.size(1) != C) continue;
      const at::Tensor dd = d.to(at::kCPU, at::kDouble);
      std::vector<int64_t> pool = {0};
      for (int64_t k = 3; k < dd.dim(); ++k) pool.push_back(k);
      const at::Tensor alpha = dd.mean(pool);                                            // (C, H)
      const at::Tensor log_alpha = at::log(at::clamp_min(dd, 1e-300)).mean(pool);       // (C, H)
      const at::Tensor ret = cumulative_retention(log_alpha, a.log_sum);                 // (C, H)
      a.retention.push_back(ret[C - 1]);
      a.log_sum = (a.log_sum.defined() ? a.log_sum : at::zeros_like(log_alpha[0])) + log_alpha.sum(0);
      a.alpha_sum = (a.alpha_sum.defined() ? a.alpha_sum : at::zeros_like(alpha[0])) + alpha.sum(0);
      a.tokens += C;
      a.alpha.push_back(alpha.mean(0));
    }
  }

  // Variance growth per layer: the largest over heads of max_{chunks past T_train} var / var at T_train.
  std::vector<double> growth(layers, std::numeric_limits<double>::quiet_NaN());
  std::vector<int64_t> top_head(layers, 0);
  for (size_t l = 0; l < layers; ++l) {
    const auto& st = acc[l].stats;
    if (st.empty()) continue;
    const at::Tensor var = at::stack(st, 0).select(2, 1);                       // (chunks, H)
    const at::Tensor ref = at::clamp_min(var[i_train], 1e-300);
    const at::Tensor g = std::get<0>(var.narrow(0, i_train + 1, n_chunks - i_train - 1).max(0)) / ref;  // (H)
    growth[l] = g.max().item<double>();
    top_head[l] = g.argmax().item<int64_t>();
  }
  std::vector<int64_t> shown_layers = parse_int_list(opts.layers, "analysis.state_stats.layers");
  for (int64_t l : shown_layers)
    if (l < 0 || l >= static_cast<int64_t>(layers) || acc[static_cast<size_t>(l)].stats.empty())
      fail_config("analysis.state_stats.layers: layer ", l, " is not a layer that records a state (0 .. ",
                  layers - 1, ")");
  if (shown_layers.empty()) {
    int64_t best = -1;
    for (size_t l = 0; l < layers; ++l)
      if (!std::isnan(growth[l]) && (best < 0 || growth[l] > growth[static_cast<size_t>(best)]))
        best = static_cast<int64_t>(l);
    if (best < 0)
      fail_config("state_stats: no layer's mixer ('", lm.options().mixer, "') records a `state` (docs/GLOSSARY.md)");
    shown_layers.push_back(best);
  }
  const std::vector<int64_t> head_list = parse_int_list(opts.heads, "analysis.state_stats.heads");
  auto heads_of = [&](size_t l) {
    const int64_t H = acc[l].stats.front().size(0);
    std::vector<int64_t> hs;
    if (head_list.empty())
      for (int64_t h = 0; h < std::min<int64_t>(H, 8); ++h) hs.push_back(h);
    for (int64_t h : head_list) {
      if (h < 0 || h >= H) fail_config("analysis.state_stats.heads: head ", h, " is outside 0 .. ", H - 1);
      hs.push_back(h);
    }
    return hs;
  };

  Result r;
  const std::string caption_tail = " on the '" + opts.prompt + "' prompt, chunks of " + std::to_string(C) +
                                   " tokens; the vertical line is T_train = " + std::to_string(t_train) + ". " +
                                   ctx.label;
  for (int which : {0, 1}) {
    std::vector<std::string> header = {"position"};
    std::vector<std::vector<double>> rows(static_cast<size_t>(n_chunks));
    for (int64_t c = 0; c < n_chunks; ++c) rows[static_cast<size_t>(c)].push_back(static_cast<double>((c + 1) * C));
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (int64_t l : shown_layers)
      for (int64_t h : heads_of(static_cast<size_t>(l))) {
        header.push_back("layer " + std::to_string(l) + " head " + std::to_string(h));
        for (int64_t c = 0; c < n_chunks; ++c) {
          const double v = acc[static_cast<size_t>(l)].stats[static_cast<size_t>(c)][h][which].item<double>();
          rows[static_cast<size_t>(c)].push_back(v);
          if (std::isfinite(v) && (which == 0 || v > 0)) lo = std::min(lo, v), hi = std::max(hi, v);
        }
      }
    if (!std::isfinite(lo)) lo = which == 0 ? 0 : 1e-12, hi = 1;
    const size_t cols = header.size();
    add_vertical_line(rows, cols, static_cast<double>(t_train), lo, hi);
    header.push_back("T_train");
    const std::string stem = which == 0 ? "state_stats_mean" : "state_stats_var";
    r.files.push_back(write_csv(ctx.run_dir, stem, header, rows));
    r.files.push_back(write_spec(ctx.run_dir, stem,
                                 {{"kind", "line"},
                                  {"title", which == 0 ? "State mean vs position" : "State variance vs position"},
                                  {"xlabel", "position (tokens)"},
                                  {"ylabel", which == 0 ? "mean of the state's elements" : "variance (unbiased)"},
                                  {"logy", which == 1},
                                  {"style", "lines"},
                                  {"caption", std::string(which == 0 ? "Mean" : "Unbiased variance") +
                                                  " of each head's state elements after each chunk" +
                                                  caption_tail}}));
  }

  // Histogram: the most-growing head of the first drawn layer, at T_train vs 2.5 T_train.
  const size_t hl = static_cast<size_t>(shown_layers.front());
  const int64_t hh = top_head[hl];
  const at::Tensor s1 = acc[hl].snap_train.select(1, hh).flatten(), s2 = acc[hl].snap_late.select(1, hh).flatten();
  const std::vector<double> v1 = state_stats_vec(s1), v2 = state_stats_vec(s2);
  std::vector<std::vector<double>> hrows;
  for (size_t i = 0; i < v1.size(); ++i) hrows.push_back({v1[i], v2[i]});
  const std::string t1 = "t = " + std::to_string((i_train + 1) * C), t2 = "t = " + std::to_string((i_late + 1) * C);
  r.files.push_back(write_csv(ctx.run_dir, "state_stats_hist", {t1, t2}, hrows));
  r.files.push_back(write_spec(ctx.run_dir, "state_stats_hist",
                               {{"kind", "histogram"},
                                {"title", "State elements, layer " + std::to_string(hl) + " head " +
                                              std::to_string(hh) + ": T_train vs 2.5 x T_train"},
                                {"xlabel", "state element value"},
                                {"ylabel", "count"},
                                {"bins", 40},
                                {"logy", true},
                                {"caption", "Every element of the head's state (over the batch), 40 bins over the "
                                            "joint range (spec §3.3: outlier channels appear past T_train)." +
                                                caption_tail}}));

  // Decay and retention, where the mixers record a per-position decay.
  nlohmann::json seq_mean = nlohmann::json::array(), retention_at_train = nlohmann::json::array();
  bool any_decay = false;
  for (size_t l = 0; l < layers; ++l) {
    if (acc[l].alpha.empty()) {
      seq_mean.push_back(nullptr);
      retention_at_train.push_back(nullptr);
      continue;
    }
    any_decay = true;
    seq_mean.push_back(state_stats_vec(acc[l].alpha_sum / static_cast<double>(acc[l].tokens)));
    retention_at_train.push_back(state_stats_vec(acc[l].retention[static_cast<size_t>(i_train)]));
  }
  nlohmann::json never_forget = nlohmann::json::array();
  if (any_decay) {
    std::vector<std::string> header = {"position"};
    std::vector<std::vector<double>> rows(static_cast<size_t>(n_chunks));
    for (int64_t c = 0; c < n_chunks; ++c) rows[static_cast<size_t>(c)].push_back((static_cast<double>(c) + 0.5) * C);
    for (size_t l = 0; l < layers; ++l) {
      if (acc[l].alpha.empty()) continue;
      header.push_back("layer " + std::to_string(l));
      for (int64_t c = 0; c < n_chunks; ++c)
        rows[static_cast<size_t>(c)].push_back(acc[l].alpha[static_cast<size_t>(c)].mean().item<double>());
    }
    r.files.push_back(write_csv(ctx.run_dir, "state_stats_decay", header, rows));
    r.files.push_back(write_spec(ctx.run_dir, "state_stats_decay",
                                 {{"kind", "line"},
                                  {"title", "Decay alpha per layer (mean over heads)"},
                                  {"xlabel", "position (tokens)"},
                                  {"ylabel", "chunk mean of alpha_t"},
                                  {"style", "lines"},
                                  {"caption", "The per-step state multiplier (Trace `decay`), averaged over each "
                                              "chunk and the heads (spec §3.3, get_dA)." + caption_tail}}));
    const size_t rl = hl;
    if (!acc[rl].retention.empty()) {
      std::vector<std::string> rh = {"position"};
      std::vector<std::vector<double>> rrows(static_cast<size_t>(n_chunks));
      for (int64_t c = 0; c < n_chunks; ++c) rrows[static_cast<size_t>(c)].push_back(static_cast<double>((c + 1) * C));
      const int64_t H = acc[rl].retention.front().size(0);
      for (int64_t h : heads_of(rl)) {
        if (h >= H) continue;
        rh.push_back("layer " + std::to_string(rl) + " head " + std::to_string(h));
        for (int64_t c = 0; c < n_chunks; ++c)
          rrows[static_cast<size_t>(c)].push_back(acc[rl].retention[static_cast<size_t>(c)][h].item<double>());
      }
      add_vertical_line(rrows, rh.size(), static_cast<double>(t_train), 0.0, 1.0);
      rh.push_back("T_train");
      r.files.push_back(write_csv(ctx.run_dir, "state_stats_retention", rh, rrows));
      r.files.push_back(write_spec(ctx.run_dir, "state_stats_retention",
                                   {{"kind", "line"},
                                    {"title", "Cumulative retention of the first token"},
                                    {"xlabel", "position t (tokens)"},
                                    {"ylabel", "prod_{j<=t} alpha_j"},
                                    {"style", "lines"},
                                    {"caption", "exp of the running sum of ln alpha per head (heads with several "
                                                "decays per head: the mean ln alpha), at chunk ends." +
                                                    caption_tail}}));
    }
    for (size_t l = 0; l < layers; ++l) {
      if (acc[l].retention.empty()) continue;
      const auto ret = state_stats_vec(acc[l].retention[static_cast<size_t>(i_train)]);
      for (size_t h = 0; h < ret.size(); ++h)
        if (ret[h] > 0.997) never_forget.push_back({{"layer", l}, {"head", h}, {"retention", ret[h]}});
    }
  }

  nlohmann::json per_layer = nlohmann::json::array();
  for (size_t l = 0; l < layers; ++l) {
    if (acc[l].stats.empty()) {
      per_layer.push_back(nullptr);
      continue;
    }
    const at::Tensor at_train = acc[l].stats[static_cast<size_t>(i_train)], last = acc[l].stats.back();
    per_layer.push_back({{"variance_growth", growth[l]},
                         {"most_growing_head", top_head[l]},
                         {"at_t_train", {{"mean", state_stats_vec(at_train.select(1, 0))},
                                         {"variance", state_stats_vec(at_train.select(1, 1))},
                                         {"rms", state_stats_vec(at_train.select(1, 2))},
                                         {"median", state_stats_vec(at_train.select(1, 3))}}},
                         {"at_end", {{"mean", state_stats_vec(last.select(1, 0))},
                                     {"variance", state_stats_vec(last.select(1, 1))},
                                     {"rms", state_stats_vec(last.select(1, 2))},
                                     {"median", state_stats_vec(last.select(1, 3))}}}});
  }
  const double g = growth[hl];
  r.summary = {{"t_train", t_train},
               {"max_len", n_chunks * C},
               {"chunk", C},
               {"prompt", opts.prompt},
               {"samples", opts.samples},
               {"layers_drawn", shown_layers},
               {"histogram", {{"layer", hl}, {"head", hh}, {"t", {(i_train + 1) * C, (i_late + 1) * C}}}},
               {"layers", per_layer},
               {"decay_seq_mean", seq_mean},
               {"retention_at_t_train", retention_at_train},
               {"heads_never_forgetting", never_forget},
               {"paper", nlohmann::json::array(
                             {paper_row("state variance growth past T_train (layer " + std::to_string(hl) +
                                            ": max var beyond / var at T_train)",
                                        "stable up to ~T_train, then mean / variance explode in some heads "
                                        "(Mamba-2 370M, layer 38, newlines prompt)",
                                        g, "Stuffed Mamba §3.3, analyze_states.py"),
                              paper_row("heads with first-token retention > 0.997 at T_train",
                                        "some heads never forget within the training window [secondary]",
                                        static_cast<int64_t>(never_forget.size()), "Stuffed Mamba §3.3, get_dA.py")})}};
  return r;
}

}  // namespace ssmlab::analysis
