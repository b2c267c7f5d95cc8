// CIFAR-10 binary batches: records decode to (N, 3, 32, 32) + labels with the planes and rows in order; every
// malformed file is an ssmlab::Error naming the file and what is wrong.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "data/data_test_files.h"
#include "ssmlab/data/cifar10.h"
#include "test_util.h"

namespace data_test_cifar10 {

namespace {

using namespace ssmlab;
using test::Bytes;

uint8_t pattern(int c, int row, int col) { return static_cast<uint8_t>((c * 71 + row * 7 + col) % 256); }

TEST(Cifar10, RecordsDecodeToPlanesRowsAndLabels) {
  test::TempDir dir;
  Bytes b;
  test::append_cifar_record(b, 7, pattern);
  test::append_cifar_record(b, 2, [](int c, int row, int col) { return c == 1 && row == 3 && col == 5 ? 200 : 0; });
  test::write_bytes(dir.path / "batch.bin", b);
  const data::ImageSet s = data::read_cifar10_batch(dir.path / "batch.bin");
  EXPECT_EQ(s.images.sizes(), (std::vector<int64_t>{2, 3, 32, 32}));
  EXPECT_EQ(s.images.scalar_type(), at::kByte);
  EXPECT_EQ(s.labels.scalar_type(), at::kLong);
  EXPECT_TRUE(s.labels.equal(at::tensor({7, 2}, at::kLong)));
  for (int c = 0; c < 3; ++c)
    for (int row : {0, 9, 31})
      for (int col : {0, 4, 31})
        EXPECT_EQ(s.images[0][c][row][col].item<int64_t>(), pattern(c, row, col)) << c << " " << row << " " << col;
  EXPECT_EQ(s.images[1].sum().item<int64_t>(), 200);
  EXPECT_EQ(s.images[1][1][3][5].item<int64_t>(), 200);  // green plane, row 3, column 5
}

TEST(Cifar10, MalformedBatchesAreNamedErrors) {
  test::TempDir dir;
  const auto f = dir.path / "bad.bin";
  test::write_bytes(f, {});
  test::expect_error([&] { data::read_cifar10_batch(f); }, {f.string(), "empty file", "3073"});
  Bytes b;
  test::append_cifar_record(b, 1, pattern);
  b.resize(b.size() + 100);  // a second record cut off after 100 bytes
  test::write_bytes(f, b);
  test::expect_error([&] { data::read_cifar10_batch(f); }, {f.string(), "not a multiple", "3,073", "truncated"});
  Bytes bad_label;
  test::append_cifar_record(bad_label, 3, pattern);
  test::append_cifar_record(bad_label, 10, pattern);
  test::write_bytes(f, bad_label);
  test::expect_error([&] { data::read_cifar10_batch(f); }, {f.string(), "record 1", "label 10", "0-9"});
  test::expect_error([&] { data::read_cifar10_batch(dir.path / "nope.bin"); }, {"nope.bin", "no such file"});
  test::expect_error([&] { data::read_cifar10_batch(dir.path); }, {dir.path.string(), "folder"});
}

TEST(Cifar10, FolderSplitsConcatenateBatchesInOrder) {
  test::TempDir dir;
  for (int i = 1; i <= 5; ++i) {
    Bytes b;
    test::append_cifar_record(b, static_cast<uint8_t>(i), pattern);
    test::append_cifar_record(b, static_cast<uint8_t>(i - 1), pattern);
    test::write_bytes(dir.path / ("data_batch_" + std::to_string(i) + ".bin"), b);
  }
  test::expect_error([&] { data::load_cifar10(dir.path, "test"); },
                     {(dir.path / "test_batch.bin").string(), "missing", "data_batch_1.bin", "test_batch.bin"});
  Bytes t;
  test::append_cifar_record(t, 9, pattern);
  test::write_bytes(dir.path / "test_batch.bin", t);
  const auto train = data::load_cifar10(dir.path, "train");
  EXPECT_EQ(train.images.size(0), 10);
  EXPECT_TRUE(train.labels.equal(at::tensor({1, 0, 2, 1, 3, 2, 4, 3, 5, 4}, at::kLong)));
  EXPECT_EQ(data::load_cifar10(dir.path, "test").labels.item<int64_t>(), 9);
  test::expect_error([&] { data::load_cifar10(dir.path / "absent", "train"); },
                     {"absent", "does not exist", "data_batch_1.bin"});
  std::filesystem::remove(dir.path / "data_batch_4.bin");
  test::expect_error([&] { data::load_cifar10(dir.path, "train"); }, {"data_batch_4.bin", "missing"});
}

}  // namespace

}  // namespace data_test_cifar10
