// The CIFAR-10 binary batch reader (data/cifar10.h): records of 1 label byte + 3,072 pixel bytes.
#include <filesystem>

#include "input_file.h"
#include "ssmlab/core/error.h"
#include "ssmlab/data/cifar10.h"
#include "targets.h"

namespace ssmlab::fuzz {

void run_cifar10(std::string_view input) {
  const auto path = scratch_file(input, "data_batch_1.bin");
  try {
    data::read_cifar10_batch(path);
  } catch (const Error&) {
  }
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

std::vector<std::string> seeds_cifar10() {
  std::string two;
  for (int r = 0; r < 2; ++r) {
    two += static_cast<char>(r * 7);  // labels 0 and 7
    for (int i = 0; i < 3072; ++i) two += static_cast<char>((i * 31 + r) & 0xff);
  }
  return {two, two.substr(0, 3073)};
}

}  // namespace ssmlab::fuzz
