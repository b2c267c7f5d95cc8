// The one visible list of analyses (registry.cpp): a new analysis adds its options struct to AnalysisOptions
// (its own sub-table, [analysis.<name>]) and one entry to the table.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "ssmlab/analysis/analysis.h"
#include "ssmlab/analysis/attack.h"
#include "ssmlab/analysis/decay.h"
#include "ssmlab/analysis/needle.h"
#include "ssmlab/analysis/passkey.h"
#include "ssmlab/analysis/eigen.h"
#include "ssmlab/analysis/influence.h"
#include "ssmlab/analysis/loss_position.h"
#include "ssmlab/analysis/smoothing.h"
#include "ssmlab/analysis/state_stats.h"
#include "ssmlab/analysis/trajectories.h"
#include "ssmlab/core/fields.h"

namespace ssmlab::analysis {

struct AnalysisOptions {
  std::string after_training;  // comma-separated names
  InfluenceOptions influence;
  SmoothingOptions smoothing;
  AttackOptions attack;
  DecayOptions decay_diversity;
  NeedleGridOptions needle_grid;
  EigenOptions eigen;
  TrajectoryOptions trajectories;
  LossPositionOptions loss_position;
  StateStatsOptions state_stats;
  PasskeyOptions passkey;

  template <class V>
  void visit(V& v) {
    v("after_training", after_training,
      "analyses run when training ends, comma-separated (e.g. \"influence,smoothing\"; ssmlab list analyses)");
    v("influence", influence, "influence of a token vs distance (spec §2.2)");
    v("smoothing", smoothing, "over-smoothing across layers (spec §2.7)");
    v("attack", attack, "recency attacks on a sequence classifier: noise and target attacks (spec §2.4-2.5)");
    v("decay_diversity", decay_diversity, "spread of the per-token decay per channel, its CDF (spec §2.7)");
    v("needle_grid", needle_grid, "needle retrieval accuracy over length x depth (spec §2.3)");
    v("eigen", eigen, "eigenvalues of the input-output matrix S_C^T S_B per layer (spec §4.1, §4.2)");
    v("trajectories", trajectories, "token norms and pairwise distances through depth (spec §4.1)");
    v("loss_position", loss_position, "LM loss vs position far past T_train, mitigation variants (spec §3.2, §3.6)");
    v("state_stats", state_stats, "state mean / variance / RMS / median per head vs position, decay, retention "
                                  "(spec §3.3)");
    v("passkey", passkey, "passkey retrieval over context length x needle depth on a text-task LM (spec §3.4)");
  }
};

struct AnalysisInfo {
  std::string name;
  std::string summary;
  std::function<Result(const Context&, const AnalysisOptions&)> run;
};

const std::vector<AnalysisInfo>& analysis_table();
std::vector<std::string> analysis_names();
const AnalysisInfo& analysis_info(const std::string& name);  // throws naming the known analyses
// "influence, smoothing" -> {"influence", "smoothing"}; unknown names throw naming the known ones.
std::vector<std::string> parse_analysis_list(const std::string& text);

}  // namespace ssmlab::analysis
