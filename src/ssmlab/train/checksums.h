// SHA-256 checksums of the files of a checkpoint folder, so that a flipped bit on disk or a truncated copy
// is an error naming the file rather than silently different weights. The folder's checksums.json:
//   {"format": "ssmlab.checksums", "algorithm": "sha256", "files": {"model.safetensors": "<64 hex>", ...}}
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace ssmlab::train {

inline constexpr const char* kChecksumsFile = "checksums.json";

// Hashes each of `files` (names inside `dir`) and writes dir/checksums.json atomically.
void write_checksums(const std::filesystem::path& dir, const std::vector<std::string>& files);

// The bytes of `file`, verified against the checksums.json of its folder: a mismatch, or a checksums.json
// that lists no checksum for the file, is a DataError naming the file. A folder without checksums.json
// (checkpoints written before ssmlab kept checksums) is read unverified and says so once in the log.
std::string read_verified(const std::filesystem::path& file);

}  // namespace ssmlab::train
