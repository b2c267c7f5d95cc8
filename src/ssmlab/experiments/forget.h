// The forget threshold across runs (spec §3.5, `ssmlab forget RUNS_DIR`): a sweep over state sizes x training
// lengths leaves in every run folder analysis/loss_position.json (the loss_position analysis), whose fields
//   "t_train" (int, tokens), "state_size" (int, recurrent state numbers per sequence summed over layers),
//   "state_size_ssm" (int or null: the SSM part N_S = L·H·P·N), "learned_to_forget" (bool), "criterion" (string)
// sit at the file's top level or under "result" (how experiments::analyze wraps an analysis summary). Runs are
// grouped by state size (state_size_ssm when every run has it, else state_size); T_forget of a size = the smallest
// t_train that learned to forget, where a t_train counts as learned when every run at it did. A size whose every
// t_train failed is reported as "> largest tried" and left out of the fit. Then T_forget = a·N_S + b by least
// squares, with R^2. The paper's fit T_forget = 5.172·N_S − 4.469 (N_S in millions, T in K tokens) is drawn for
// reference only on SSM state sizes (its N_S) and where it predicts a positive length at every measured size; the
// comparison with the paper is the slope's sign and the linearity, not the constants.
//
// A command of its own rather than a mode of `ssmlab results`: results tabulates config keys and final metrics of
// any runs, while this reads one analysis' output, fits a law across runs and writes a figure.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ssmlab::experiments {

inline constexpr const char* kLossPositionAnalysis = "loss_position";

struct ForgetRun {
  std::filesystem::path folder;
  int64_t t_train = 0;
  int64_t state_size = 0;
  std::optional<int64_t> state_size_ssm;
  bool learned_to_forget = false;
  std::string criterion;
};

// Reads analysis/loss_position.json of one run folder. DataError naming the file when it is missing (and how to
// make it), not JSON, or lacks / mistypes a field.
ForgetRun read_forget_run(const std::filesystem::path& run_folder);

struct ForgetGroup {
  int64_t state_size = 0;                   // N_S (the field named by ForgetTable::size_field)
  std::vector<int64_t> t_train;             // the lengths tried, increasing
  std::vector<bool> learned;                // per length: every run at it learned to forget
  std::vector<int64_t> runs;                // per length: how many runs
  std::optional<int64_t> t_forget;          // the smallest learned length; nullopt: none (> largest tried)
};

struct LinearFit {
  double slope = 0, intercept = 0;
  std::optional<double> r2;  // nullopt when every point has the same T_forget (no variance to explain)
  int64_t points = 0;
};

// Least squares y = slope·x + intercept; nullopt with fewer than two distinct x.
std::optional<LinearFit> fit_line(const std::vector<double>& x, const std::vector<double>& y);

struct ForgetTable {
  std::string size_field;                   // "state_size_ssm" or "state_size"
  std::vector<std::string> criteria;        // the distinct criteria the runs state
  std::vector<ForgetRun> runs;
  std::vector<ForgetGroup> groups;          // by increasing state size
  std::optional<LinearFit> fit;             // over the groups with a T_forget
  bool paper_line = false;                  // whether the paper's fit is drawn (see the header comment)
  std::string paper_line_why;               // why (not)
};

// The paper's fit in tokens for N_S state numbers: 1000 · (5.172 · N_S / 1e6 − 4.469).
double paper_t_forget_tokens(double n_s);

// Every run folder under `dir` (runfolder::find_run_folders); with skip_missing, run folders without
// analysis/loss_position.json are left out (listed in `skipped`), else their absence is an error. DataError when no
// run is left.
ForgetTable collect_forget(const std::filesystem::path& dir, bool skip_missing = false,
                           std::vector<std::filesystem::path>* skipped = nullptr);
// The grouping, T_forget and the fit of given runs (collect_forget without the reading).
ForgetTable forget_table(std::vector<ForgetRun> runs);

// The printed table: one line per state size (lengths tried, learned or not, T_forget), then the fit.
std::string format_forget(const ForgetTable& t);
// The JSON written to <out>/forget.json (groups, fit, paper rows).
nlohmann::json forget_json(const ForgetTable& t);

// Writes <out>/forget.json and <out>/figures/forget_threshold.{csv,json} (a line figure: measured T_forget, the
// fit, sizes that never forgot at their largest length, the paper's line where drawn). Returns the figure spec's
// path.
std::filesystem::path write_forget(const ForgetTable& t, const std::filesystem::path& out);

}  // namespace ssmlab::experiments
