#include "ssmlab/data/idx.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <vector>

#include "ssmlab/core/error.h"
#include "ssmlab/data/input_file.h"

namespace ssmlab::data {
namespace {

constexpr const char* kFolderLayout =
    "an IDX folder (MNIST / Fashion-MNIST layout) holds train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each plain or with .gz";

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

uint32_t big_endian(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Reads the header of an IDX file with the given magic: returns its sizes, leaving `f` at the payload.
std::vector<int64_t> read_header(InputFile& f, uint32_t magic, const char* what) {
  const std::string name = f.path().string();
  unsigned char head[4];
  const int64_t got = f.read(head, 4);
  SSMLAB_CHECK(got > 0, name, ": empty file; expected an IDX ", what, " file (magic ", hex32(magic), ")");
  SSMLAB_CHECK(got == 4, name, ": cut off inside the 4-byte IDX magic (", got, " bytes)");
  const uint32_t found = big_endian(head);
  SSMLAB_CHECK(found == magic, name, ": wrong magic ", hex32(found), "; expected ", hex32(magic), " (IDX ", what,
               ", unsigned bytes)");
  const int ndim = static_cast<int>(magic & 0xFF);
  std::vector<unsigned char> dims_raw(static_cast<size_t>(4 * ndim));
  SSMLAB_CHECK(f.read(dims_raw.data(), 4 * ndim) == 4 * ndim, name, ": truncated header; the magic promises ",
               ndim, " big-endian uint32 sizes (", 4 * ndim, " bytes)");
  std::vector<int64_t> dims;
  for (int d = 0; d < ndim; ++d) dims.push_back(big_endian(dims_raw.data() + 4 * d));
  SSMLAB_CHECK(dims[0] <= kIdxMaxCount, name, ": header count ", with_commas(dims[0]), " exceeds the limit of ",
               with_commas(kIdxMaxCount));
  for (int d = 1; d < ndim; ++d)
    SSMLAB_CHECK(dims[d] >= 1 && dims[d] <= kIdxMaxSide, name, ": header size ", dims[d], " of dimension ", d,
                 " is outside 1..", with_commas(kIdxMaxSide));
  int64_t total = 1;
  for (int64_t d : dims) total *= d;  // < 1e8 * 65536^2 < 2^63
  SSMLAB_CHECK(total <= kIdxMaxBytes, name, ": header sizes make ", with_commas(total),
               " bytes, over the limit of ", with_commas(kIdxMaxBytes));
  return dims;
}

// Reads the payload of `dims` into a uint8 tensor of that shape; refuses short and over-long files.
at::Tensor read_payload(InputFile& f, const std::vector<int64_t>& dims) {
  const std::string name = f.path().string();
  std::string shape;
  int64_t total = 1;
  for (int64_t d : dims) {
    shape += (shape.empty() ? "" : " x ") + std::to_string(d);
    total *= d;
  }
  at::Tensor data = at::empty(dims, at::kByte);
  const int64_t got = f.read(data.data_ptr<uint8_t>(), total);
  SSMLAB_CHECK(got == total, name, ": truncated; the header promises ", shape, " = ", with_commas(total),
               " bytes of data, the file holds ", with_commas(got));
  SSMLAB_CHECK(f.at_end(), name, ": more data than the header's ", shape, " = ", with_commas(total),
               " bytes; not an IDX file, or a wrong header");
  return data;
}

}  // namespace

at::Tensor read_idx_images(const std::filesystem::path& file) {
  InputFile f(file);
  const auto dims = read_header(f, kIdxImagesMagic, "images (N x H x W)");
  const at::Tensor images = read_payload(f, dims);  // (N, H, W)
  return images.unsqueeze(1);                       // (N, 1, H, W)
}

at::Tensor read_idx_labels(const std::filesystem::path& file) {
  InputFile f(file);
  const auto dims = read_header(f, kIdxLabelsMagic, "labels (N)");
  return read_payload(f, dims).to(at::kLong);  // (N)
}

std::filesystem::path find_idx_file(const std::filesystem::path& folder, const std::string& stem) {
  SSMLAB_CHECK(std::filesystem::is_directory(folder), "IDX folder ", folder.string(), " does not exist; ",
               kFolderLayout);
  const auto plain = folder / stem;
  if (std::filesystem::exists(plain)) return plain;
  auto gz = plain;
  gz += ".gz";
  if (std::filesystem::exists(gz)) return gz;
  fail(folder.string(), " has neither ", stem, " nor ", stem, ".gz; ", kFolderLayout);
}

ImageSet load_idx(const std::filesystem::path& folder, const std::string& split, int64_t num_classes) {
  SSMLAB_CHECK(split == "train" || split == "test", "load_idx: split must be train or test; got '", split, "'");
  const std::string prefix = split == "train" ? "train" : "t10k";
  const auto images_file = find_idx_file(folder, prefix + "-images-idx3-ubyte");
  const auto labels_file = find_idx_file(folder, prefix + "-labels-idx1-ubyte");
  ImageSet set;
  set.images = read_idx_images(images_file);  // (N, 1, H, W)
  set.labels = read_idx_labels(labels_file);  // (N)
  SSMLAB_CHECK(set.images.size(0) == set.labels.size(0), "IDX count mismatch: ", images_file.string(), " holds ",
               set.images.size(0), " images but ", labels_file.string(), " holds ", set.labels.size(0), " labels");
  if (set.labels.numel() > 0) {
    const int64_t worst = set.labels.max().item<int64_t>();
    if (worst >= num_classes) {
      const int64_t at = set.labels.ge(num_classes).nonzero().flatten()[0].item<int64_t>();
      fail(labels_file.string(), ": label ", set.labels[at].item<int64_t>(), " at index ", at,
           " is out of range; expected 0-", num_classes - 1, " (", num_classes, " classes)");
    }
  }
  set.source = str(folder.string(), " (", split, ")");
  return set;
}

}  // namespace ssmlab::data
