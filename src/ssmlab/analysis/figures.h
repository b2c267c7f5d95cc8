// Small writers shared by analyses: a CSV table and a figure spec beside it in the run folder's figures/
// (docs/ARCHITECTURE.md, "Reports and figure specs").
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ssmlab::analysis {

// figures/<stem>.csv: the header, then one row per x (values printed with 17 significant digits; NaN and
// infinities as "NaN"). Returns the path.
std::filesystem::path write_csv(const std::filesystem::path& run_dir, const std::string& stem,
                                const std::vector<std::string>& header, const std::vector<std::vector<double>>& rows);

// The same with a text label first in every row (bars: the categories; heatmap: the row labels; header[0] is
// the corner cell).
std::filesystem::path write_labelled_csv(const std::filesystem::path& run_dir, const std::string& stem,
                                         const std::vector<std::string>& header,
                                         const std::vector<std::string>& labels,
                                         const std::vector<std::vector<double>>& rows);

// figures/<stem>.json: `spec` with "data": "<stem>.csv". Returns the path.
std::filesystem::path write_spec(const std::filesystem::path& run_dir, const std::string& stem, nlohmann::json spec);

// A length x depth heatmap (needle_grid, passkey): figures/<stem>.csv with one row per depth bin, labelled
// "0.00-0.10" (bin b of grid.size() covers depths b / bins .. (b + 1) / bins; row 0 drawn at the bottom), one
// column per length (grid[bin][length]); figures/<stem>.json is `spec` with kind "heatmap". Returns both paths.
std::vector<std::filesystem::path> write_depth_heatmap(const std::filesystem::path& run_dir, const std::string& stem,
                                                       const std::vector<int64_t>& lengths,
                                                       const std::vector<std::vector<double>>& grid,
                                                       nlohmann::json spec);

}  // namespace ssmlab::analysis
