#include "ssmlab/experiments/forget.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "ssmlab/analysis/analysis.h"
#include "ssmlab/analysis/figures.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/runfolder/layout.h"
#include "ssmlab/runfolder/run_folder.h"

namespace ssmlab::experiments {

namespace forget_detail {

using nlohmann::json;

// The field `key` of the summary (top level, else under "result"), or null.
const json* forget_field(const json& j, const char* key) {
  if (j.contains(key)) return &j[key];
  if (j.contains("result") && j["result"].is_object() && j["result"].contains(key)) return &j["result"][key];
  return nullptr;
}

int64_t forget_int(const json& j, const char* key, const std::filesystem::path& file, bool nullable, bool* present) {
  const json* v = forget_field(j, key);
  if (present) *present = v != nullptr && !v->is_null();
  if (v == nullptr || v->is_null()) {
    if (nullable) return 0;
    fail_data(file.string(), ": no field '", key, "' (an integer; the loss_position analysis writes it)");
  }
  if (!v->is_number_integer() || v->get<int64_t>() < 0)
    fail_data(file.string(), ": field '", key, "' must be a non-negative integer, not ", v->dump());
  return v->get<int64_t>();
}

std::string fmt_count(int64_t v) { return std::to_string(v); }

std::string fmt_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

}  // namespace forget_detail

ForgetRun read_forget_run(const std::filesystem::path& run_folder) {
  using namespace forget_detail;
  const auto file = runfolder::analysis_file(run_folder, kLossPositionAnalysis);
  if (!std::filesystem::is_regular_file(file))
    fail_data(file.string(), ": missing (run `ssmlab analyze loss_position ", run_folder.string(),
              "` first, or pass --skip-missing)");
  json j;
  try {
    j = json::parse(read_file(file));
  } catch (const json::exception& e) {
    fail_data(file.string(), ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail_data(file.string(), ": expected a JSON object, got ", j.type_name());
  ForgetRun r;
  r.folder = run_folder;
  r.t_train = forget_int(j, "t_train", file, false, nullptr);
  if (r.t_train < 1) fail_data(file.string(), ": field 't_train' must be >= 1 token, not ", r.t_train);
  r.state_size = forget_int(j, "state_size", file, false, nullptr);
  bool has_ssm = false;
  const int64_t ssm = forget_int(j, "state_size_ssm", file, true, &has_ssm);
  if (has_ssm) r.state_size_ssm = ssm;
  const json* learned = forget_field(j, "learned_to_forget");
  if (learned == nullptr || !learned->is_boolean())
    fail_data(file.string(), ": field 'learned_to_forget' must be true or false",
              learned == nullptr ? std::string(" (missing)") : ", not " + learned->dump());
  r.learned_to_forget = learned->get<bool>();
  const json* criterion = forget_field(j, "criterion");
  if (criterion == nullptr || !criterion->is_string())
    fail_data(file.string(), ": field 'criterion' must be a string",
              criterion == nullptr ? std::string(" (missing)") : ", not " + criterion->dump());
  r.criterion = criterion->get<std::string>();
  return r;
}

std::optional<LinearFit> fit_line(const std::vector<double>& x, const std::vector<double>& y) {
  SSMLAB_CHECK(x.size() == y.size(), "fit_line: ", x.size(), " x values, ", y.size(), " y values");
  const std::set<double> distinct(x.begin(), x.end());
  if (distinct.size() < 2) return std::nullopt;
  const double n = static_cast<double>(x.size());
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    mx += x[i] / n;
    my += y[i] / n;
  }
  double sxx = 0, sxy = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxx += (x[i] - mx) * (x[i] - mx);
    sxy += (x[i] - mx) * (y[i] - my);
    syy += (y[i] - my) * (y[i] - my);
  }
  LinearFit f;
  f.slope = sxy / sxx;
  f.intercept = my - f.slope * mx;
  f.points = static_cast<int64_t>(x.size());
  if (syy > 0) {
    double ss_res = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double e = y[i] - (f.slope * x[i] + f.intercept);
      ss_res += e * e;
    }
    f.r2 = 1.0 - ss_res / syy;
  }
  return f;
}

double paper_t_forget_tokens(double n_s) { return 1000.0 * (5.172 * n_s / 1e6 - 4.469); }

ForgetTable forget_table(std::vector<ForgetRun> runs) {
  ForgetTable t;
  if (runs.empty()) fail_data("ssmlab forget: no run with analysis/", kLossPositionAnalysis, ".json to aggregate");
  const bool all_ssm = std::all_of(runs.begin(), runs.end(), [](const ForgetRun& r) { return r.state_size_ssm; });
  t.size_field = all_ssm ? "state_size_ssm" : "state_size";
  std::set<std::string> criteria;
  // size -> t_train -> (runs, learned by all)
  std::map<int64_t, std::map<int64_t, std::pair<int64_t, bool>>> cells;
  for (const auto& r : runs) {
    criteria.insert(r.criterion);
    const int64_t size = all_ssm ? *r.state_size_ssm : r.state_size;
    auto [it, fresh] = cells[size].try_emplace(r.t_train, 0, true);
    it->second.first += 1;
    it->second.second = it->second.second && r.learned_to_forget;
  }
  t.criteria.assign(criteria.begin(), criteria.end());
  std::vector<double> xs, ys;
  for (const auto& [size, by_len] : cells) {
    ForgetGroup g;
    g.state_size = size;
    for (const auto& [len, cell] : by_len) {
      g.t_train.push_back(len);
      g.runs.push_back(cell.first);
      g.learned.push_back(cell.second);
      if (cell.second && !g.t_forget) g.t_forget = len;
    }
    if (g.t_forget) {
      xs.push_back(static_cast<double>(size));
      ys.push_back(static_cast<double>(*g.t_forget));
    }
    t.groups.push_back(std::move(g));
  }
  t.fit = fit_line(xs, ys);
  t.runs = std::move(runs);
  if (!all_ssm) {
    t.paper_line_why = "not drawn: the runs give no SSM state size (state_size_ssm), the paper's N_S";
  } else if (xs.empty()) {
    t.paper_line_why = "not drawn: no state size learned to forget";
  } else if (paper_t_forget_tokens(*std::min_element(xs.begin(), xs.end())) <= 0) {
    t.paper_line_why = "not drawn: the paper's line predicts a length <= 0 at N_S = " +
                       forget_detail::fmt_double(*std::min_element(xs.begin(), xs.end())) +
                       " (it was fitted on 0.8M-19M state numbers)";
  } else {
    t.paper_line = true;
    t.paper_line_why = "drawn: N_S is the SSM state size and the paper's line is positive at every measured size";
  }
  return t;
}

ForgetTable collect_forget(const std::filesystem::path& dir, bool skip_missing,
                           std::vector<std::filesystem::path>* skipped) {
  std::vector<ForgetRun> runs;
  const auto folders = runfolder::find_run_folders(dir);
  if (folders.empty()) fail_data(dir.string(), ": no run folder (config.toml or metrics.jsonl) below it");
  for (const auto& f : folders) {
    if (skip_missing && !std::filesystem::exists(runfolder::analysis_file(f, kLossPositionAnalysis))) {
      if (skipped) skipped->push_back(f);
      continue;
    }
    runs.push_back(read_forget_run(f));
  }
  return forget_table(std::move(runs));
}

std::string format_forget(const ForgetTable& t) {
  using forget_detail::fmt_count;
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-14s  %-10s  %s\n", t.size_field.c_str(), "T_forget", "T_train tried (+ learned to forget, - not)");
  out += line;
  for (const auto& g : t.groups) {
    std::string tried;
    for (size_t i = 0; i < g.t_train.size(); ++i)
      tried += (i ? " " : "") + fmt_count(g.t_train[i]) + (g.learned[i] ? "+" : "-") +
               (g.runs[i] > 1 ? "(x" + fmt_count(g.runs[i]) + ")" : "");
    const std::string tf = g.t_forget ? fmt_count(*g.t_forget) : "> " + fmt_count(g.t_train.back());
    std::snprintf(line, sizeof line, "%-14lld  %-10s  ", static_cast<long long>(g.state_size), tf.c_str());
    out += line;
    out += tried;
    out += '\n';
  }
  if (t.fit) {
    std::snprintf(line, sizeof line, "fit: T_forget = %.6g * N_S %s %.6g   (R^2 %s, %lld points)\n", t.fit->slope,
                  t.fit->intercept < 0 ? "-" : "+", std::fabs(t.fit->intercept),
                  t.fit->r2 ? forget_detail::fmt_double(*t.fit->r2).c_str() : "undefined: equal T_forget",
                  static_cast<long long>(t.fit->points));
    out += line;
  } else {
    out += "fit: none (needs T_forget at two or more state sizes)\n";
  }
  out += "paper: T_forget = 5.172 N_S - 4.469 (N_S in M, T in K tokens), R^2 > 0.999; paper line " +
         t.paper_line_why + "\n";
  for (const auto& c : t.criteria) out += "criterion: " + c + "\n";
  return out;
}

nlohmann::json forget_json(const ForgetTable& t) {
  using nlohmann::json;
  json groups = json::array();
  for (const auto& g : t.groups) {
    json tried = json::array();
    for (size_t i = 0; i < g.t_train.size(); ++i)
      tried.push_back({{"t_train", g.t_train[i]}, {"learned_to_forget", g.learned[i]}, {"runs", g.runs[i]}});
    groups.push_back({{"state_size", g.state_size},
                      {"t_forget", g.t_forget ? json(*g.t_forget) : json(nullptr)},
                      {"t_forget_text", g.t_forget ? std::to_string(*g.t_forget)
                                                   : "> " + std::to_string(g.t_train.back())},
                      {"tried", tried}});
  }
  json runs = json::array();
  for (const auto& r : t.runs)
    runs.push_back({{"folder", r.folder.string()},
                    {"t_train", r.t_train},
                    {"state_size", r.state_size},
                    {"state_size_ssm", r.state_size_ssm ? json(*r.state_size_ssm) : json(nullptr)},
                    {"learned_to_forget", r.learned_to_forget}});
  json fit = nullptr;
  if (t.fit)
    fit = {{"slope", t.fit->slope},
           {"intercept", t.fit->intercept},
           {"r2", t.fit->r2 ? json(*t.fit->r2) : json(nullptr)},
           {"points", t.fit->points},
           {"units", "T_forget in tokens, N_S in state numbers (" + t.size_field + ")"}};
  const json sign = t.fit ? json(t.fit->slope > 0 ? "positive" : t.fit->slope < 0 ? "negative" : "zero") : json(nullptr);
  const json r2 = t.fit && t.fit->r2 ? json(*t.fit->r2) : json(nullptr);
  return {{"size_field", t.size_field},
          {"criteria", t.criteria},
          {"groups", groups},
          {"fit", fit},
          {"paper_line", t.paper_line},
          {"paper_line_why", t.paper_line_why},
          {"runs", runs},
          {"paper", json::array({analysis::paper_row("sign of the slope of T_forget vs N_S",
                                                     "positive (T_forget = 5.172 N_S - 4.469, N_S in M, T in K tokens)",
                                                     sign, "Stuffed Mamba §3.5 (spec §3.5, secondary)"),
                                 analysis::paper_row("linearity of T_forget vs N_S (R^2 of the least-squares line)",
                                                     "> 0.999", r2, "Stuffed Mamba §3.5 (spec §3.5, secondary)")})}};
}

std::filesystem::path write_forget(const ForgetTable& t, const std::filesystem::path& out) {
  std::filesystem::create_directories(out);
  write_file_atomic(out / "forget.json", forget_json(t).dump(2) + "\n");
  std::vector<std::string> header = {t.size_field, "T_forget (measured)", "never forgot (largest T_train tried)"};
  if (t.fit) header.push_back("least-squares fit");
  if (t.paper_line) header.push_back("paper: 5.172 N_S - 4.469 (M, K tokens)");
  std::vector<std::vector<double>> rows;
  for (const auto& g : t.groups) {
    const double x = static_cast<double>(g.state_size);
    std::vector<double> row = {x, g.t_forget ? static_cast<double>(*g.t_forget) : NAN,
                               g.t_forget ? NAN : static_cast<double>(g.t_train.back())};
    if (t.fit) row.push_back(t.fit->slope * x + t.fit->intercept);
    if (t.paper_line) row.push_back(paper_t_forget_tokens(x));
    rows.push_back(std::move(row));
  }
  analysis::write_csv(out, "forget_threshold", header, rows);
  std::string caption = "T_forget (the smallest training length whose loss stays bounded far past it) per state size, "
                        "with the least-squares line";
  if (t.fit && t.fit->r2) caption += " (R^2 = " + forget_detail::fmt_double(*t.fit->r2) + ")";
  caption += ". The paper (spec §3.5): linear, T_forget = 5.172 N_S - 4.469 (N_S in M, T in K tokens); its line " +
             t.paper_line_why + ".";
  return analysis::write_spec(out, "forget_threshold",
                              {{"kind", "line"},
                               {"title", "Forget threshold vs state size"},
                               {"xlabel", t.size_field == "state_size_ssm" ? "SSM state size N_S (numbers)"
                                                                             : "state size (numbers per sequence)"},
                               {"ylabel", "T_forget (tokens)"},
                               {"style", "linespoints"},
                               {"caption", caption}});
}

}  // namespace ssmlab::experiments
