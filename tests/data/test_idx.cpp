// IDX files (MNIST / Fashion-MNIST): images and labels, plain or gzip; headers are big-endian; malformed files
// (empty, wrong magic, cut off, over-long, absurd sizes, corrupt gzip) and folder problems (missing files, count
// mismatch, labels out of range) are ssmlab::Errors naming the file and what is wrong.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "data/data_test_files.h"
#include "ssmlab/data/idx.h"
#include "test_util.h"

namespace data_test_idx {

namespace {

using namespace ssmlab;
using test::Bytes;

int pix(uint32_t i, uint32_t r, uint32_t c) { return static_cast<int>((i * 31 + r * 5 + c) % 256); }

TEST(Idx, ImagesAndLabelsPlainAndGzip) {
  test::TempDir dir;
  const Bytes images = test::idx_images(3, 4, 6, pix);
  test::write_bytes(dir.path / "img", images);
  test::write_gzip(dir.path / "img.gz", images);
  for (const char* name : {"img", "img.gz"}) {
    const at::Tensor x = data::read_idx_images(dir.path / name);
    EXPECT_EQ(x.sizes(), (std::vector<int64_t>{3, 1, 4, 6})) << name;
    EXPECT_EQ(x.scalar_type(), at::kByte);
    EXPECT_EQ(x[2][0][3][5].item<int64_t>(), pix(2, 3, 5)) << name;  // height 4, width 6: rows are 6 long
    EXPECT_EQ(x[1][0][0][4].item<int64_t>(), pix(1, 0, 4)) << name;
  }
  test::write_gzip(dir.path / "lab.gz", test::idx_labels({4, 0, 9}));
  const at::Tensor y = data::read_idx_labels(dir.path / "lab.gz");
  EXPECT_EQ(y.scalar_type(), at::kLong);
  EXPECT_TRUE(y.equal(at::tensor({4, 0, 9}, at::kLong)));
}

TEST(Idx, MalformedFilesAreNamedErrors) {
  test::TempDir dir;
  const auto f = dir.path / "x-idx3-ubyte";
  test::write_bytes(f, {});
  test::expect_error([&] { data::read_idx_images(f); }, {f.string(), "empty file", "0x00000803"});
  test::write_bytes(f, test::idx_labels({1, 2}));
  test::expect_error([&] { data::read_idx_images(f); }, {f.string(), "wrong magic 0x00000801", "expected 0x00000803"});
  Bytes images = test::idx_images(2, 3, 3, pix);
  Bytes cut(images.begin(), images.end() - 4);
  test::write_bytes(f, cut);
  test::expect_error([&] { data::read_idx_images(f); }, {f.string(), "truncated", "2 x 3 x 3", "18", "14"});
  Bytes header_only(images.begin(), images.begin() + 9);
  test::write_bytes(f, header_only);
  test::expect_error([&] { data::read_idx_images(f); }, {f.string(), "truncated header"});
  Bytes longer = images;
  longer.push_back(0);
  test::write_bytes(f, longer);
  test::expect_error([&] { data::read_idx_images(f); }, {f.string(), "more data than the header"});
  Bytes huge;
  test::append_be32(huge, 0x803);
  test::append_be32(huge, 4000000000u);
  test::append_be32(huge, 28);
  test::append_be32(huge, 28);
  test::write_bytes(f, huge);
  test::expect_error([&] { data::read_idx_images(f); }, {f.string(), "4,000,000,000", "limit of 100,000,000"});
  Bytes wide;
  test::append_be32(wide, 0x803);
  test::append_be32(wide, 1);
  test::append_be32(wide, 28);
  test::append_be32(wide, 70000);
  test::write_bytes(f, wide);
  test::expect_error([&] { data::read_idx_images(f); }, {f.string(), "70000", "1..65,536"});
  // A gzip stream cut in the middle: zlib notices, and the error names the file.
  const auto gz = dir.path / "cut.gz";
  test::write_gzip(gz, test::idx_images(50, 28, 28, pix));
  const auto size = std::filesystem::file_size(gz);
  std::filesystem::resize_file(gz, size / 2);
  test::expect_error([&] { data::read_idx_images(gz); }, {gz.string()});
}

TEST(Idx, FolderSplitsCheckCountsAndLabels) {
  test::TempDir dir;
  test::write_gzip(dir.path / "train-images-idx3-ubyte.gz", test::idx_images(4, 2, 2, pix));
  test::write_bytes(dir.path / "train-labels-idx1-ubyte", test::idx_labels({0, 1, 2, 3}));
  const auto train = data::load_idx(dir.path, "train", 10);
  EXPECT_EQ(train.images.sizes(), (std::vector<int64_t>{4, 1, 2, 2}));
  EXPECT_TRUE(train.labels.equal(at::arange(4, at::kLong)));
  test::expect_error([&] { data::load_idx(dir.path, "train", 3); },
                     {"train-labels-idx1-ubyte", "label 3 at index 3", "out of range", "0-2"});
  test::expect_error([&] { data::load_idx(dir.path, "test", 10); },
                     {dir.path.string(), "t10k-images-idx3-ubyte.gz", "train-labels-idx1-ubyte"});
  test::write_bytes(dir.path / "t10k-images-idx3-ubyte", test::idx_images(3, 2, 2, pix));
  test::write_bytes(dir.path / "t10k-labels-idx1-ubyte", test::idx_labels({0, 1}));
  test::expect_error([&] { data::load_idx(dir.path, "test", 10); },
                     {"count mismatch", "t10k-images-idx3-ubyte", "3 images", "2 labels"});
  test::expect_error([&] { data::load_idx(dir.path / "absent", "train", 10); }, {"absent", "does not exist"});
}

}  // namespace

}  // namespace data_test_idx
