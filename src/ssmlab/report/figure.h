// The figure spec: a plain struct that says what to draw (kind, labels, axes, data), independent of how it is
// drawn. Analyses leave specs in run folders as JSON (figures/<name>.json, docs/ARCHITECTURE.md "Figure specs");
// gnuplot.h renders a spec to PNG + SVG beside its gnuplot script and data file.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ssmlab::report {

// line: y against x, one line per series (log axes allowed). layers: the same, coloured along a sequential
// palette, for one curve per layer. heatmap: a grid of values with row and column labels (e.g. depth x length),
// each cell's value printed. bars: grouped bars, one group per category, one bar per series. histogram: counts
// (or fractions) of each series' samples in shared bins. cdf: the empirical CDF of each series' samples.
enum class FigureKind { line, layers, heatmap, bars, histogram, cdf };

const char* kind_name(FigureKind kind);
// Throws ReportError naming the allowed kinds.
FigureKind parse_kind(const std::string& name);

struct Series {
  std::string name;
  std::vector<double> x;       // line, layers: x values (empty: 0, 1, 2, ...)
  std::vector<double> y;       // line, layers: y values; bars: one value per category
  std::vector<double> values;  // histogram, cdf: the samples
  // line, layers: series of one group share a colour and differ in dash (a run's series in a figure combined
  // across runs); -1: a colour of its own (layers: along the sequential palette).
  int group = -1;
  // line: the colour of each point (the group whose colour it takes, e.g. the run it comes from), drawn over a grey
  // line that has a point shape and dash of its own; empty: none.
  std::vector<int> point_groups;
};

struct FigureSpec {
  FigureKind kind = FigureKind::line;
  std::string title, xlabel, ylabel;
  std::string zlabel;                          // heatmap: the colour bar's label
  std::string caption;                         // a sentence under the figure in the HTML page
  bool logx = false, logy = false, logz = false;  // logz: heatmap colour scale
  std::optional<double> xmin, xmax, ymin, ymax;
  std::optional<double> zmin, zmax;            // heatmap: fixed ends of the colour scale (default: the data's)
  std::string palette = "viridis";             // heatmap: viridis (dark to light) | rdylgn (red-yellow-green)
  std::vector<Series> series;
  std::vector<std::string> categories;         // bars: the groups along x
  std::vector<std::string> columns, rows;      // heatmap: column (x) and row (y) labels; row 0 is at the bottom
  std::vector<std::vector<double>> z;          // heatmap: z[row][column]
  bool print_values = true;                    // heatmap: print each cell's value
  std::string format = "%.2f";                 // heatmap: printf format of the printed values
  int bins = 30;                               // histogram: bins (log-spaced when logx)
  bool normalize = false;                      // histogram: fraction of the series' samples instead of counts
  std::string style;                           // line: lines | linespoints | points ("": by point count)
  int width = 800, height = 500;               // pixels of the PNG (and the SVG's size)
};

// Throws ReportError saying what is inconsistent (sizes, empty data, bad ranges) and naming `where`.
void validate(const FigureSpec& spec, const std::string& where);

// Reads the JSON form (keys as in FigureSpec; NaN may be null). `"data": "file.csv"` fills the data from a
// CSV file (path relative to `base_dir`): see figure_from_csv. Unknown keys are errors. `where` names the
// source in messages.
FigureSpec figure_from_json(const nlohmann::json& j, const std::filesystem::path& base_dir, const std::string& where);
nlohmann::json figure_to_json(const FigureSpec& spec);

// Fills `spec`'s data from a CSV file with a header line, by kind: line/layers: first column x, every other
// column a series named by its header; bars: first column the categories, other columns series; heatmap: the
// header holds the column labels after a corner cell, each row starts with its label; histogram/cdf: every
// column is one series of samples. Empty cells and NaN are missing values.
void fill_from_csv(FigureSpec& spec, const std::filesystem::path& csv_file);

}  // namespace ssmlab::report
