#include "ssmlab/data/cifar10.h"

#include <ATen/ATen.h>

#include <vector>

#include "ssmlab/core/error.h"
#include "ssmlab/data/input_file.h"

namespace ssmlab::data {
namespace {

constexpr const char* kExpected =
    "a CIFAR-10 binary folder holds data_batch_1.bin ... data_batch_5.bin and test_batch.bin (make them with "
    "scripts/cifar10-binary.sh, or unpack the official cifar-10-binary.tar.gz)";

}  // namespace

ImageSet read_cifar10_batch(const std::filesystem::path& file) {
  const std::vector<uint8_t> bytes = read_all_bytes(file, kCifarMaxFileBytes);
  const auto size = static_cast<int64_t>(bytes.size());
  SSMLAB_CHECK(size > 0, file.string(), ": empty file; a CIFAR-10 batch holds records of ", kCifarRecordBytes,
               " bytes (1 label byte + 3,072 pixel bytes)");
  SSMLAB_CHECK(size % kCifarRecordBytes == 0, file.string(), ": size ", with_commas(size),
               " bytes is not a multiple of the ", with_commas(kCifarRecordBytes), "-byte CIFAR-10 record (",
               size / kCifarRecordBytes, " whole records and ", size % kCifarRecordBytes,
               " bytes over): truncated or not a CIFAR-10 batch");
  const int64_t n = size / kCifarRecordBytes;
  for (int64_t i = 0; i < n; ++i) {
    const int label = bytes[static_cast<size_t>(i * kCifarRecordBytes)];
    SSMLAB_CHECK(label < kCifarClasses, file.string(), ": record ", i, " has label ", label,
                 "; CIFAR-10 labels are 0-9");
  }
  // from_blob borrows the vector; clone() below makes the tensors own their memory.
  const at::Tensor records =
      at::from_blob(const_cast<uint8_t*>(bytes.data()), {n, kCifarRecordBytes}, at::kByte);  // (N, 3073)
  ImageSet set;
  set.images = records.narrow(1, 1, kCifarRecordBytes - 1)
                   .clone(at::MemoryFormat::Contiguous)  // dense, so view() applies
                   .view({n, kCifarChannels, kCifarSide, kCifarSide});  // (N, 3, 32, 32): R, G, B planes
  set.labels = records.select(1, 0).to(at::kLong);                      // (N)
  set.source = file.string();
  return set;
}

ImageSet load_cifar10(const std::filesystem::path& folder, const std::string& split) {
  SSMLAB_CHECK(split == "train" || split == "test", "load_cifar10: split must be train or test; got '", split,
               "'");
  SSMLAB_CHECK(std::filesystem::is_directory(folder), "CIFAR-10 folder ", folder.string(), " does not exist; ",
               kExpected);
  std::vector<std::string> names;
  if (split == "train")
    for (int i = 1; i <= 5; ++i) names.push_back(str("data_batch_", i, ".bin"));
  else
    names.push_back("test_batch.bin");
  std::vector<at::Tensor> images, labels;
  for (const auto& name : names) {
    const auto file = folder / name;
    SSMLAB_CHECK(std::filesystem::exists(file), file.string(), " is missing; ", kExpected);
    ImageSet part = read_cifar10_batch(file);
    images.push_back(part.images);
    labels.push_back(part.labels);
  }
  ImageSet set;
  set.images = images.size() == 1 ? images[0] : at::cat(images, 0);  // (N, 3, 32, 32)
  set.labels = labels.size() == 1 ? labels[0] : at::cat(labels, 0);  // (N)
  set.source = str(folder.string(), " (", split, ")");
  return set;
}

}  // namespace ssmlab::data
