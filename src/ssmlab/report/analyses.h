// The figures analyses leave in run folders (figures/NAME.json specs and figures/NAME.csv tables, docs/ARCHITECTURE.md
// "Reports and figure specs"), read per run, and the figures combined across runs: a line or layers figure of the
// same NAME in two or more runs becomes one figure holding every run's series, a colour per run.
#pragma once
#include <string>
#include <vector>

#include "ssmlab/report/figure.h"
#include "ssmlab/runfolder/run_folder.h"

namespace ssmlab::report {

struct RunFigure {
  std::string name;    // NAME of figures/NAME.json or figures/NAME.csv
  std::string source;  // the file it came from, for messages
  FigureSpec spec;
};

// Every figure of one run, in file order: each NAME.json spec, and each NAME.csv that no spec names as its "data"
// (a line plot titled NAME, x = the first column). A file that cannot be read or is not a valid figure is skipped
// and described in `problems`.
std::vector<RunFigure> read_run_figures(const runfolder::RunFolder& run, std::vector<std::string>& problems);

// For each NAME that two or more runs have as a line or layers figure: one figure with the kind, title and axes of
// the first, holding every such run's series named "<run label> <series>" ("<run label>" alone for a run with
// one series), one colour per run (Series::group = i for run i, its
// colour in every figure, also when another run lacks the figure). `labels[i]` is run i's short label, `figures[i]` its figures.
// Sorted by NAME.
std::vector<RunFigure> combine_run_figures(const std::vector<std::string>& labels,
                                           const std::vector<std::vector<RunFigure>>& figures);

// A JSON value as a table cell: "" for null, true / false, integers as they are, other numbers with 4 significant
// digits (%.4g), strings unquoted, anything else as JSON.
std::string format_value(const nlohmann::json& v);

// One line of an analysis' comparison with its paper (analysis/NAME.json, its "result" holding "paper":
// [{"quantity", "paper", "ours", "source"}], analysis/analysis.h paper_row): printed by the report as "paper vs ours".
struct PaperRow {
  std::string analysis;  // NAME of analysis/NAME.json
  std::string quantity, paper, ours, source;
};

// Every such line of one run, in file order; a malformed file is skipped and described in `problems`.
std::vector<PaperRow> read_paper_rows(const runfolder::RunFolder& run, std::vector<std::string>& problems);

}  // namespace ssmlab::report
