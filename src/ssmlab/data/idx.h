// The IDX format of MNIST and Fashion-MNIST (yann.lecun.com/exdb/mnist): a 4-byte magic 0x0000TTDD (TT the
// element type, 0x08 = unsigned byte; DD the number of dimensions), DD big-endian uint32 sizes, then the
// elements in row-major order. Images are 0x00000803 (N x H x W), labels 0x00000801 (N). A gzip-compressed
// file (".gz", as distributed) is read transparently.
//
// A folder in the MNIST layout holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte
// and t10k-labels-idx1-ubyte, each plain or with ".gz" (Debian's dataset-fashion-mnist:
// /usr/share/datasets/fashion-mnist).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include <ATen/core/Tensor.h>

#include "ssmlab/data/images.h"

namespace ssmlab::data {

inline constexpr uint32_t kIdxImagesMagic = 0x00000803;
inline constexpr uint32_t kIdxLabelsMagic = 0x00000801;
// Header sizes past these are refused before anything is allocated (Fashion-MNIST: 60,000 x 28 x 28).
inline constexpr int64_t kIdxMaxCount = 100'000'000;
inline constexpr int64_t kIdxMaxSide = 65'536;
inline constexpr int64_t kIdxMaxBytes = int64_t{1} << 33;

// Images (N, 1, H, W) uint8. Throws ssmlab::Error naming the file for an empty file, a wrong magic, a cut-off
// header or payload, trailing bytes, or sizes over the limits.
at::Tensor read_idx_images(const std::filesystem::path& file);

// Labels (N) int64 (range checks are the caller's: read_idx_split knows the class count).
at::Tensor read_idx_labels(const std::filesystem::path& file);

// "<folder>/<stem>" if present, else "<folder>/<stem>.gz"; an error naming both and the folder's expected
// files if neither is there.
std::filesystem::path find_idx_file(const std::filesystem::path& folder, const std::string& stem);

// A split from an MNIST-layout folder: "train" (train-*) or "test" (t10k-*). Images and labels must agree in
// count and every label must lie in [0, num_classes).
ImageSet load_idx(const std::filesystem::path& folder, const std::string& split, int64_t num_classes);

}  // namespace ssmlab::data
