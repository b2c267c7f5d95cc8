#include "ssmlab/train/checksums.h"

#include <map>

#include <nlohmann/json.hpp>

#include "ssmlab/core/error.h"
#include "ssmlab/core/error_kinds.h"
#include "ssmlab/core/io.h"
#include "ssmlab/core/json_limits.h"
#include "ssmlab/core/log.h"
#include "ssmlab/core/sha256.h"

namespace ssmlab::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormat = "ssmlab.checksums";

bool is_hex64(const std::string& s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// name -> hex digest, every entry checked.
std::map<std::string, std::string> read_checksums(const fs::path& file) {
  const std::string f = file.string();
  const std::string text = read_file(file);
  if (text.size() > json_limits::kMaxSmallFileBytes)
    fail_data("checksum file '", f, "': ", text.size(), " bytes is above the limit of ", json_limits::kMaxSmallFileBytes);
  if (json_limits::depth(text) > json_limits::kMaxDepth)
    fail_data("checksum file '", f, "': JSON nested deeper than the limit of ", json_limits::kMaxDepth, " levels");
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) fail_data("checksum file '", f, "': not a JSON object");
  const auto alg = j.find("algorithm");
  if (alg == j.end() || *alg != "sha256")
    fail_data("checksum file '", f, "': \"algorithm\" must be \"sha256\"");
  const auto files = j.find("files");
  if (files == j.end() || !files->is_object()) fail_data("checksum file '", f, "': \"files\" must be an object");
  std::map<std::string, std::string> out;
  for (const auto& [name, digest] : files->items()) {
    if (!digest.is_string() || !is_hex64(digest.get<std::string>()))
      fail_data("checksum file '", f, "': the checksum of '", name, "' must be 64 lowercase hex digits");
    out[name] = digest.get<std::string>();
  }
  return out;
}

}  // namespace

void write_checksums(const fs::path& dir, const std::vector<std::string>& files) {
  json sums = json::object();
  for (const auto& name : files) sums[name] = sha256_hex(read_file(dir / name));
  const json j = {{"format", kFormat}, {"algorithm", "sha256"}, {"files", sums}};
  write_file_atomic(dir / kChecksumsFile, j.dump(2) + "\n");
}

std::string read_verified(const fs::path& file) {
  const fs::path sums_file = file.parent_path() / kChecksumsFile;
  std::error_code ec;
  if (!fs::exists(sums_file, ec)) {
    log::warn_once("no-checksums:" + file.parent_path().string(),
                   str("checkpoint folder '", file.parent_path().string(), "' has no ", kChecksumsFile,
                       " (written before ssmlab kept checksums): its files are loaded unverified"));
    return read_file(file);
  }
  const auto sums = read_checksums(sums_file);
  const auto it = sums.find(file.filename().string());
  if (it == sums.end())
    fail_data("checkpoint file '", file.string(), "': ", sums_file.string(), " lists no checksum for it");
  std::string bytes = read_file(file);
  const std::string got = sha256_hex(bytes);
  if (got != it->second)
    fail_data("checkpoint file '", file.string(), "' is corrupt: its SHA-256 is ", got, " but ", kChecksumsFile,
              " expects ", it->second, " (", bytes.size(), " bytes read)");
  return bytes;
}

}  // namespace ssmlab::train
