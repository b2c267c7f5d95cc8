#include "ssmlab/analysis/figures.h"

#include <cmath>
#include <cstdio>

#include "ssmlab/core/error.h"
#include "ssmlab/core/io.h"
#include "ssmlab/runfolder/layout.h"

namespace ssmlab::analysis {
namespace {

std::string cell(double v) {
  if (!std::isfinite(v)) return "NaN";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::filesystem::path write_text(const std::filesystem::path& run_dir, const std::string& stem,
                                 const std::string& text) {
  const auto path = runfolder::figure_table_file(run_dir, stem);
  std::filesystem::create_directories(path.parent_path());
  write_file_atomic(path, text);
  return path;
}

}  // namespace

std::filesystem::path write_csv(const std::filesystem::path& run_dir, const std::string& stem,
                                const std::vector<std::string>& header, const std::vector<std::vector<double>>& rows) {
  std::string text;
  for (size_t i = 0; i < header.size(); ++i) text += (i ? "," : "") + csv_field(header[i]);
  text += "\n";
  for (const auto& row : rows) {
    SSMLAB_CHECK(row.size() == header.size(), "write_csv ", stem, ": a row of ", row.size(), " values for ",
                 header.size(), " columns");
    for (size_t i = 0; i < row.size(); ++i) text += (i ? "," : "") + cell(row[i]);
    text += "\n";
  }
  return write_text(run_dir, stem, text);
}

std::filesystem::path write_labelled_csv(const std::filesystem::path& run_dir, const std::string& stem,
                                         const std::vector<std::string>& header,
                                         const std::vector<std::string>& labels,
                                         const std::vector<std::vector<double>>& rows) {
  SSMLAB_CHECK(labels.size() == rows.size(), "write_labelled_csv ", stem, ": ", labels.size(), " labels for ",
               rows.size(), " rows");
  std::string text;
  for (size_t i = 0; i < header.size(); ++i) text += (i ? "," : "") + csv_field(header[i]);
  text += "\n";
  for (size_t r = 0; r < rows.size(); ++r) {
    SSMLAB_CHECK(rows[r].size() + 1 == header.size(), "write_labelled_csv ", stem, ": a row of ", rows[r].size(),
                 " values and its label for ", header.size(), " columns");
    text += csv_field(labels[r]);
    for (double v : rows[r]) text += "," + cell(v);
    text += "\n";
  }
  return write_text(run_dir, stem, text);
}

std::filesystem::path write_spec(const std::filesystem::path& run_dir, const std::string& stem, nlohmann::json spec) {
  spec["data"] = stem + ".csv";
  const auto path = runfolder::figure_spec_file(run_dir, stem);
  std::filesystem::create_directories(path.parent_path());
  write_file_atomic(path, spec.dump(2) + "\n");
  return path;
}

std::vector<std::filesystem::path> write_depth_heatmap(const std::filesystem::path& run_dir, const std::string& stem,
                                                       const std::vector<int64_t>& lengths,
                                                       const std::vector<std::vector<double>>& grid,
                                                       nlohmann::json spec) {
  const size_t bins = grid.size();
  SSMLAB_CHECK(bins >= 1 && !lengths.empty(), "write_depth_heatmap ", stem, ": ", bins, " depth bins, ",
               lengths.size(), " lengths (need at least one of each)");
  std::vector<std::string> header = {"depth"}, rows;
  for (int64_t L : lengths) header.push_back(std::to_string(L));
  for (size_t b = 0; b < bins; ++b) {
    char label[48];
    std::snprintf(label, sizeof label, "%.2f-%.2f", static_cast<double>(b) / static_cast<double>(bins),
                  static_cast<double>(b + 1) / static_cast<double>(bins));
    rows.push_back(label);
  }
  spec["kind"] = "heatmap";
  return {write_labelled_csv(run_dir, stem, header, rows, grid), write_spec(run_dir, stem, std::move(spec))};
}

}  // namespace ssmlab::analysis
