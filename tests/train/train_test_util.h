// Reading a run folder back in the trainer tests: what two runs must agree on.
#pragma once
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssmlab/core/io.h"

namespace ssmlab::test {

// metrics.jsonl records without the wall-clock field (tokens_per_s), the only one that differs between equal runs.
inline std::vector<nlohmann::json> metrics_without_timing(const std::filesystem::path& dir) {
  std::ifstream in(dir / "metrics.jsonl");
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    j.erase("tokens_per_s");
    out.push_back(j);
  }
  return out;
}

inline nlohmann::json results_json(const std::filesystem::path& dir) {
  return nlohmann::json::parse(read_file(dir / "results.json"));
}

}  // namespace ssmlab::test
