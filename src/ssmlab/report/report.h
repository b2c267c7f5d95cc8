// `ssmlab report DIR`: a run folder or a folder of runs (a sweep) -> figures (gnuplot PNG + SVG, with their
// scripts and data) and one HTML page, from the folders' files alone (nothing is re-run or re-evaluated).
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace ssmlab::report {

struct ReportOptions {
  std::filesystem::path out;  // empty: <dir>/report
  bool embed_images = false;  // PNGs inlined as data: URIs, so report.html alone is the whole page
};

struct ReportSummary {
  std::filesystem::path html;            // <out>/report.html
  size_t runs = 0;
  std::vector<std::filesystem::path> figures;  // the PNGs written
  std::vector<std::string> problems;     // figures that could not be drawn (listed on the page too)
};

// Throws ReportError when `dir` holds no run folder, a run file is malformed, or gnuplot is missing. A figure
// spec that is invalid or that gnuplot rejects is a problem listed on the page and in the summary.
ReportSummary write_report(const std::filesystem::path& dir, const ReportOptions& options);

// Text made safe inside HTML elements and attribute values.
std::string html_escape(const std::string& text);

}  // namespace ssmlab::report
