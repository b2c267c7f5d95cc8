#include "ssmlab/report/analyses.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "ssmlab/report/io.h"
#include "ssmlab/runfolder/layout.h"

namespace ssmlab::report {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool combinable(const FigureSpec& s) { return s.kind == FigureKind::line || s.kind == FigureKind::layers; }

}  // namespace

std::vector<RunFigure> read_run_figures(const runfolder::RunFolder& run, std::vector<std::string>& problems) {
  std::error_code ec;
  std::set<fs::path> data_files;  // CSVs that a spec names in "data" are drawn by that spec only
  std::map<fs::path, json> specs;
  for (const auto& f : run.figure_files) {
    if (f.extension() != runfolder::kSpecExtension) continue;
    try {
      json j = json::parse(read_file(f));
      if (j.is_object() && j.contains("data") && j["data"].is_string())
        data_files.insert(fs::weakly_canonical(f.parent_path() / j["data"].get<std::string>(), ec));
      specs.emplace(f, std::move(j));
    } catch (const json::exception& e) {
      problems.push_back(f.string() + ": not valid JSON: " + e.what());
    } catch (const ReportError& e) {
      problems.push_back(e.what());
    }
  }
  std::vector<RunFigure> out;
  for (const auto& f : run.figure_files) {
    RunFigure fig{f.stem().string(), f.string(), {}};
    try {
      if (f.extension() == runfolder::kSpecExtension) {
        const auto it = specs.find(f);
        if (it == specs.end()) continue;
        fig.spec = figure_from_json(it->second, f.parent_path(), f.string());
      } else {
        if (data_files.count(fs::weakly_canonical(f, ec))) continue;
        fig.spec.kind = FigureKind::line;
        fig.spec.title = fig.name;
        fill_from_csv(fig.spec, f);
        validate(fig.spec, f.string());
      }
    } catch (const ReportError& e) {
      problems.push_back(e.what());
      continue;
    }
    if (fig.spec.title.empty()) fig.spec.title = fig.name;
    out.push_back(std::move(fig));
  }
  return out;
}

std::vector<RunFigure> combine_run_figures(const std::vector<std::string>& labels,
                                           const std::vector<std::vector<RunFigure>>& figures) {
  // NAME -> (run, its figure) for the runs whose figure of that name can be combined.
  std::map<std::string, std::vector<std::pair<size_t, const RunFigure*>>> by_name;
  for (size_t i = 0; i < figures.size(); ++i) {
    std::set<std::string> taken;  // a run holding NAME.json and a bare NAME.csv contributes its spec only
    for (const auto& f : figures[i])
      if (combinable(f.spec) && taken.insert(f.name).second) by_name[f.name].emplace_back(i, &f);
  }
  std::vector<RunFigure> out;
  for (const auto& [name, members] : by_name) {
    if (members.size() < 2) continue;
    RunFigure combined{name, "", members.front().second->spec};
    combined.spec.series.clear();
    combined.spec.caption = "Every run's " + name + ", a colour per run.";
    std::string sources;
    for (size_t g = 0; g < members.size(); ++g) {
      const auto& [run, fig] = members[g];
      const bool one = fig->spec.series.size() == 1;
      for (const Series& ser : fig->spec.series) {
        Series s = ser;
        s.name = one ? labels[run] : labels[run] + " " + ser.name;
        s.group = static_cast<int>(run);  // the run's colour in every figure of the report
        combined.spec.series.push_back(std::move(s));
      }
      sources += (sources.empty() ? "" : ", ") + fig->source;
    }
    combined.source = "combined figure '" + name + "' (" + sources + ")";
    out.push_back(std::move(combined));
  }
  return out;
}

std::string format_value(const nlohmann::json& v) {
  if (v.is_null()) return "";
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", v.get<double>());
    return buf;
  }
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

std::vector<PaperRow> read_paper_rows(const runfolder::RunFolder& run, std::vector<std::string>& problems) {
  std::vector<PaperRow> rows;
  for (const auto& f : run.analysis_files) {
    try {
      const json file = json::parse(read_file(f));
      // analysis/NAME.json is {"analysis", "model", "label", "result": <the analysis' summary>}.
      const json& j = file.is_object() && file.contains("result") ? file["result"] : file;
      if (!j.is_object() || !j.contains("paper")) continue;
      if (!j["paper"].is_array()) {
        problems.push_back(f.string() + ": \"paper\" is not an array");
        continue;
      }
      for (const auto& p : j["paper"]) {
        if (!p.is_object() || !p.contains("quantity") || !p.contains("paper") || !p.contains("ours")) {
          problems.push_back(f.string() + ": a \"paper\" entry lacks quantity / paper / ours");
          continue;
        }
        rows.push_back({f.stem().string(), format_value(p["quantity"]), format_value(p["paper"]),
                        format_value(p["ours"]), p.contains("source") ? format_value(p["source"]) : ""});
      }
    } catch (const json::exception& e) {
      problems.push_back(f.string() + ": not valid JSON: " + e.what());
    } catch (const ReportError& e) {
      problems.push_back(e.what());
    }
  }
  return rows;
}

}  // namespace ssmlab::report
