// The IDX reader (data/idx.h): big-endian magic 0x00000803 (images, 3 dims) or 0x00000801 (labels), dims, bytes.
#include <filesystem>

#include "input_file.h"
#include "ssmlab/core/error.h"
#include "ssmlab/data/idx.h"
#include "targets.h"

namespace ssmlab::fuzz {
namespace {

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>((v >> 16) & 0xff), static_cast<char>((v >> 8) & 0xff),
          static_cast<char>(v & 0xff)};
}

}  // namespace

void run_idx(std::string_view input) {
  const auto path = scratch_file(input, "fuzz-idx-ubyte");
  try {
    data::read_idx_images(path);
  } catch (const Error&) {
  }
  try {
    data::read_idx_labels(path);
  } catch (const Error&) {
  }
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

std::vector<std::string> seeds_idx() {
  std::string images = be32(0x00000803) + be32(2) + be32(4) + be32(4);
  for (int i = 0; i < 32; ++i) images += static_cast<char>(i * 8);
  std::string labels = be32(0x00000801) + be32(3) + std::string("\x01\x09\x00", 3);
  return {images, labels};
}

}  // namespace ssmlab::fuzz
