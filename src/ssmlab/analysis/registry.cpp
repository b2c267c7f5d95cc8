#include "ssmlab/analysis/registry.h"

#include "ssmlab/core/error.h"

namespace ssmlab::analysis {

const std::vector<AnalysisInfo>& analysis_table() {
  static const std::vector<AnalysisInfo> table = {
      {"influence", "influence of a token vs distance: mean ln ||dy_t/dx_s|| by t - s, fitted slope (spec §2.2)",
       [](const Context& c, const AnalysisOptions& o) { return run_influence(c, o.influence); }},
      {"smoothing", "over-smoothing: mean pairwise token distance of mixer and block outputs per layer (spec §2.7)",
       [](const Context& c, const AnalysisOptions& o) { return run_smoothing(c, o.smoothing); }},
      {"attack", "recency attacks: accuracy with leading / trailing pixels noised, target-attack success by region "
                 "(spec §2.4-2.5)",
       [](const Context& c, const AnalysisOptions& o) { return run_attack(c, o.attack); }},
      {"decay_diversity", "decay diversity: CDF over channels of A_max - A_min of the per-token decay (spec §2.7)",
       [](const Context& c, const AnalysisOptions& o) { return run_decay_diversity(c, o.decay_diversity); }},
      {"needle_grid", "needle in a haystack: retrieval accuracy heatmap over context length x needle depth (spec §2.3)",
       [](const Context& c, const AnalysisOptions& o) { return run_needle_grid(c, o.needle_grid); }},
      {"eigen", "eigen-spectrum of S_C^T S_B per layer: min / max eigenvalue, fraction positive (spec §4.2)",
       [](const Context& c, const AnalysisOptions& o) { return run_eigen(c, o.eigen); }},
      {"trajectories", "token trajectories: norm per layer by position, pairwise distance, convergence or "
                       "divergence rate (spec §4.1)",
       [](const Context& c, const AnalysisOptions& o) { return run_trajectories(c, o.trajectories); }},
      {"loss_position", "loss / perplexity vs position far past T_train, learned-to-forget verdict, mitigation "
                        "variants (spec §3.2, §3.6)",
       [](const Context& c, const AnalysisOptions& o) { return run_loss_position(c, o.loss_position); }},
      {"state_stats", "state statistics per layer and head vs position, state histograms, decay and first-token "
                      "retention (spec §3.3)",
       [](const Context& c, const AnalysisOptions& o) { return run_state_stats(c, o.state_stats); }},
      {"passkey", "passkey retrieval: accuracy heatmap over context length x needle depth, T_recall (>= 95%), on a "
                  "text-task language model (spec §3.4)",
       [](const Context& c, const AnalysisOptions& o) { return run_passkey(c, o.passkey); }},
  };
  return table;
}

std::vector<std::string> analysis_names() {
  std::vector<std::string> names;
  for (const auto& a : analysis_table()) names.push_back(a.name);
  return names;
}

const AnalysisInfo& analysis_info(const std::string& name) {
  for (const auto& a : analysis_table())
    if (a.name == name) return a;
  std::string known;
  for (const auto& a : analysis_table()) known += (known.empty() ? "" : ", ") + a.name;
  fail("unknown analysis '", name, "'; known analyses: ", known);
}

std::vector<std::string> parse_analysis_list(const std::string& text) {
  std::vector<std::string> names;
  for (const auto& name : split_list(text)) {
    analysis_info(name);
    for (const auto& n : names) SSMLAB_CHECK(n != name, "analysis '", name, "' is listed twice");
    names.push_back(name);
  }
  return names;
}

}  // namespace ssmlab::analysis
