// CIFAR-10's official binary format (cifar-10-binary.tar.gz; shared/data/cifar10/to_binary.py writes it):
// data_batch_1.bin ... data_batch_5.bin (train) and test_batch.bin (test), each a run of 3,073-byte records:
//   1 label byte (0-9), then 1,024 red, 1,024 green and 1,024 blue bytes, rows top to bottom, each row left
//   to right. batches.meta.txt (class names, one a line) is optional and not read.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include "ssmlab/data/images.h"

namespace ssmlab::data {

inline constexpr int64_t kCifarSide = 32;
inline constexpr int64_t kCifarChannels = 3;
inline constexpr int64_t kCifarClasses = 10;
inline constexpr int64_t kCifarRecordBytes = 1 + kCifarChannels * kCifarSide * kCifarSide;  // 3,073
// One official batch is 30,730,000 bytes; a file beyond 2^31 bytes is not a CIFAR-10 batch.
inline constexpr int64_t kCifarMaxFileBytes = int64_t{1} << 31;

// One batch file: images (N, 3, 32, 32) uint8, labels (N) int64. Throws ssmlab::Error naming the file for an
// empty file, a size that is not a multiple of the record, a label outside 0-9, or a file over the limit.
ImageSet read_cifar10_batch(const std::filesystem::path& file);

// A split from a folder of binary batches: "train" (data_batch_1..5.bin, in order) or "test"
// (test_batch.bin). A missing folder or file is an error that lists what the folder should hold.
ImageSet load_cifar10(const std::filesystem::path& folder, const std::string& split);

}  // namespace ssmlab::data
