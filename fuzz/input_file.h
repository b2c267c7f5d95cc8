// The data readers take paths, not bytes: a target writes its input to one scratch file per process first.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace ssmlab::fuzz {

inline std::filesystem::path scratch_file(std::string_view input, const std::string& name) {
  const auto path = std::filesystem::temp_directory_path() / ("ssmlab_fuzz_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(input.data(), static_cast<std::streamsize>(input.size()));
  return path;
}

}  // namespace ssmlab::fuzz
