// Image data sets as the data/ readers return them: uint8 pixels and int64 labels, on the CPU.
// Layer rule: data/ uses core and ATen only (docs/ARCHITECTURE.md).
#pragma once
#include <string>

#include <ATen/core/Tensor.h>

namespace ssmlab::data {

struct ImageSet {
  at::Tensor images;  // (N, C, H, W) uint8
  at::Tensor labels;  // (N) int64
  std::string source;  // the file(s) or folder it came from, for messages
};

}  // namespace ssmlab::data
