#include "ssmlab/experiments/validate.h"

#include <algorithm>

#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"

namespace ssmlab::experiments {

void check_run_name(const std::string& name, const std::string& source) {
  constexpr size_t kMaxName = 100;
  auto safe = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  };
  std::string shown = name.size() > 60 ? name.substr(0, 57) + "..." : name;
  for (char& c : shown)
    if (static_cast<unsigned char>(c) < 0x20) c = '?';
  if (name.empty() || name.size() > kMaxName)
    fail_config(source, ": run.name must be 1 to ", kMaxName, " characters, got ", name.size());
  if (!std::all_of(name.begin(), name.end(), safe))
    fail_config(source, ": run.name may hold only letters, digits, '.', '_' and '-' (it names the run folder), "
                "got \"", shown, "\"");
  if (name.find("..") != std::string::npos)
    fail_config(source, ": run.name may not contain \"..\", got \"", shown, "\"");
}

void validate_config(const Config& cfg, const std::string& source) { check_run_name(cfg.run.name, source); }

}  // namespace ssmlab::experiments
