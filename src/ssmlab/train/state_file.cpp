#include "ssmlab/train/state_file.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/json_limits.h"
#include "ssmlab/train/checksums.h"

namespace ssmlab::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The step a folder named step_<digits> holds, or -1 for any other name.
int64_t step_of_folder(const fs::path& dir) {
  const std::string name = dir.filename().string();
  if (!name.starts_with("step_") || name.size() == 5 || name.size() > 5 + 18) return -1;
  if (!std::all_of(name.begin() + 5, name.end(), [](char c) { return c >= '0' && c <= '9'; })) return -1;
  return std::stoll(name.substr(5));
}

}  // namespace

// Types and ranges of every field, and the step against the folder's name: a state.json copied into the
// wrong folder, or edited by hand, must not resume silently at another step.
TrainState read_state_file(const fs::path& file) {
  const std::string f = file.string();
  const std::string text = read_verified(file);
  if (text.size() > json_limits::kMaxSmallFileBytes)
    fail("checkpoint file '", f, "': ", text.size(), " bytes is above the limit of ", json_limits::kMaxSmallFileBytes);
  if (json_limits::depth(text) > json_limits::kMaxDepth)
    fail("checkpoint file '", f, "': JSON nested deeper than the limit of ", json_limits::kMaxDepth, " levels");
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("checkpoint file '", f, "': bad JSON: ", e.what());
  }
  SSMLAB_CHECK(j.is_object(), "checkpoint file '", f, "': expected a JSON object");
  auto found = [&](const char* key) {
    return j.contains(key) ? ", found " + j[key].dump(-1, ' ', false, json::error_handler_t::replace)
                           : std::string(", it is missing");
  };
  for (const auto& [key, integer] : {std::pair{"step", true}, std::pair{"epoch", true},
                                     std::pair{"rng_state", false}, std::pair{"torch_rng_state_b64", false}}) {
    const bool ok = j.contains(key) && (integer ? j[key].is_number_integer() : j[key].is_string());
    SSMLAB_CHECK(ok, "checkpoint file '", f, "': \"", key, "\" must be ", integer ? "an integer" : "a string",
                 found(key));
    if (integer)
      SSMLAB_CHECK(j[key].is_number_unsigned() && j[key].get<uint64_t>() <= uint64_t(INT64_MAX), "checkpoint file '",
                   f, "': \"", key, "\" must be an integer >= 0", found(key));
  }
  SSMLAB_CHECK(!j.contains("extra") || j["extra"].is_object() || j["extra"].is_null(), "checkpoint file '", f,
               "': \"extra\" must be an object", found("extra"));
  const int64_t folder_step = step_of_folder(file.parent_path());
  SSMLAB_CHECK(folder_step < 0 || folder_step == j["step"].get<int64_t>(), "checkpoint file '", f, "': \"step\" is ",
               j["step"].get<int64_t>(), " but the folder is for step ", folder_step);
  TrainState s;
  s.step = j["step"].get<int64_t>();
  s.epoch = j["epoch"].get<int64_t>();
  s.rng_state = j["rng_state"].get<std::string>();
  s.torch_rng_state_b64 = j["torch_rng_state_b64"].get<std::string>();
  s.extra = j.value("extra", json());
  return s;
}

}  // namespace ssmlab::train
