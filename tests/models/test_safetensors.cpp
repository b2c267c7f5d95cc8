#include <gtest/gtest.h>

#include "test_util.h"
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "ssmlab/core/error.h"
#include "ssmlab/core/io.h"
#include "ssmlab/models/safetensors.h"

namespace models_test_safetensors {

namespace fs = std::filesystem;
using ssmlab::models::load_safetensors;
using ssmlab::models::save_safetensors;

namespace {

using ssmlab::test::expect_error;
using ssmlab::test::TempDir;

// A safetensors file built by hand: length prefix, the header as given (no padding), then `data`.
std::string raw_file(const std::string& header, const std::string& data = "") {
  const uint64_t n = header.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + header + data;
}

std::string bytes_of(std::initializer_list<uint8_t> b) { return std::string(b.begin(), b.end()); }

size_t count_entries(const fs::path& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

}  // namespace

// ---- core/io ---------------------------------------------------------------------------------

TEST(Io, WriteAtomicReplacesContentAndLeavesNoTempFile) {
  TempDir tmp;
  const fs::path f = tmp.path / "a.txt";
  ssmlab::write_file_atomic(f, "one");
  ssmlab::write_file_atomic(f, std::string("two\0three", 9));
  EXPECT_EQ(ssmlab::read_file(f), std::string("two\0three", 9));
  EXPECT_EQ(count_entries(tmp.path), 1u);
}

TEST(Io, ErrorsNameThePathAndTheReason) {
  TempDir tmp;
  const fs::path missing_dir = tmp.path / "nope" / "a.txt";
  expect_error([&] { ssmlab::write_file_atomic(missing_dir, "x"); },
               {missing_dir.string(), "No such file or directory"});
  expect_error([&] { ssmlab::read_file(tmp.path / "absent.bin"); },
               {(tmp.path / "absent.bin").string(), "No such file or directory"});
  expect_error([&] { ssmlab::read_file(tmp.path); }, {tmp.path.string(), "folder"});
  expect_error([&] { ssmlab::append_line(missing_dir, "x"); }, {missing_dir.string(), "No such file"});
}

TEST(Io, AppendLineAddsOneLinePerCall) {
  TempDir tmp;
  const fs::path f = tmp.path / "metrics.jsonl";
  ssmlab::append_line(f, R"({"step": 1})");
  ssmlab::append_line(f, "{\"step\": 2}\n");
  EXPECT_EQ(ssmlab::read_file(f), "{\"step\": 1}\n{\"step\": 2}\n");
}

TEST(Io, Base64RoundTripAndKnownVectors) {
  EXPECT_EQ(ssmlab::base64_encode(""), "");
  EXPECT_EQ(ssmlab::base64_encode("f"), "Zg==");
  EXPECT_EQ(ssmlab::base64_encode("fo"), "Zm8=");
  EXPECT_EQ(ssmlab::base64_encode("foobar"), "Zm9vYmFy");
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (size_t len = 0; len <= all.size(); len += 37)
    EXPECT_EQ(ssmlab::base64_decode(ssmlab::base64_encode(all.substr(0, len))), all.substr(0, len));
  EXPECT_THROW(ssmlab::base64_decode("abc"), ssmlab::Error);
  EXPECT_THROW(ssmlab::base64_decode("ab$d"), ssmlab::Error);
}

// ---- safetensors -----------------------------------------------------------------------------

TEST(Safetensors, RoundTripEveryDtypeZeroDimEmptyAndMetadata) {
  TempDir tmp;
  at::manual_seed(0);
  std::map<std::string, at::Tensor> t = {
      {"f64", at::randn({2, 3}, at::kDouble)},
      {"f32", at::randn({4, 3}).t()},  // non-contiguous: saved contiguous
      {"f16", at::randn({3, 2}).to(at::kHalf)},
      {"bf16", at::randn({5}).to(at::kBFloat16)},
      {"i64", at::arange(-3, 3, at::kLong)},
      {"i32", at::arange(-4, 4, at::kInt).reshape({2, 2, 2})},
      {"i16", at::arange(-2, 2, at::kShort)},
      {"i8", at::tensor({-128, 0, 127}, at::kChar)},
      {"u8", at::tensor({0, 1, 255}, at::kByte)},
      {"bool", at::tensor({1, 0, 1}, at::kInt).to(at::kBool)},
      {"scalar", at::scalar_tensor(3.5, at::kFloat)},
      {"empty", at::empty({0, 3}, at::kFloat)},
      {"empty_i64", at::empty({0}, at::kLong)},
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "h\xC3\xA9llo \"quoted\""}};
  const fs::path f = tmp.path / "all.safetensors";
  save_safetensors(f, t, meta);
  const auto back = load_safetensors(f);
  EXPECT_EQ(back.metadata, meta);
  ASSERT_EQ(back.tensors.size(), t.size());
  for (const auto& [name, want] : t) {
    const at::Tensor& got = back.tensors.at(name);
    EXPECT_EQ(got.scalar_type(), want.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), want.sizes()) << name;
    EXPECT_TRUE(got.is_contiguous()) << name;
    EXPECT_TRUE(at::equal(got, want)) << name;
  }
  EXPECT_EQ(back.tensors.at("scalar").dim(), 0);
}

TEST(Safetensors, WrittenHeaderFollowsTheFormat) {
  TempDir tmp;
  const fs::path f = tmp.path / "h.safetensors";
  save_safetensors(f, {{"b", at::tensor({1.5f, -2.0f})}, {"a", at::tensor({7, 8, 9}, at::kLong)}}, {{"k", "v"}});
  const std::string bytes = ssmlab::read_file(f);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);  // little-endian by hand
  EXPECT_EQ(n % 8, 0u) << "header padded to a multiple of 8";
  ASSERT_EQ(bytes.size(), 8 + n + 3 * 8 + 2 * 4);
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}')) << "only spaces after the JSON";
  const auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j.size(), 3u);
  EXPECT_EQ(j["__metadata__"], nlohmann::json({{"k", "v"}}));
  EXPECT_EQ(j["a"]["dtype"], "I64");
  EXPECT_EQ(j["a"]["shape"], nlohmann::json({3}));
  EXPECT_EQ(j["a"]["data_offsets"], nlohmann::json({0, 24}));  // name order: "a" first
  EXPECT_EQ(j["b"]["dtype"], "F32");
  EXPECT_EQ(j["b"]["data_offsets"], nlohmann::json({24, 32}));
  int64_t a1 = 0;
  float b0 = 0;
  std::memcpy(&a1, bytes.data() + 8 + n + 8, 8);
  std::memcpy(&b0, bytes.data() + 8 + n + 24, 4);
  EXPECT_EQ(a1, 8);
  EXPECT_EQ(b0, 1.5f);
}

TEST(Safetensors, ReadsAHandWrittenUnpaddedFile) {
  TempDir tmp;
  const fs::path f = tmp.path / "hand.safetensors";
  const float v[2] = {0.25f, -4.0f};
  ssmlab::write_file_atomic(
      f, raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[1,9]},"z":{"dtype":"U8","shape":[1],)"
                  R"("data_offsets":[0,1]},"__metadata__":{"format":"pt"}})",
                  std::string("\x2A", 1) + std::string(reinterpret_cast<const char*>(v), 8)));
  const auto back = load_safetensors(f);
  EXPECT_TRUE(at::equal(back.tensors.at("w"), at::tensor({0.25f, -4.0f})));
  EXPECT_EQ(back.tensors.at("z").item<uint8_t>(), 42);
  EXPECT_EQ(back.metadata.at("format"), "pt");
}

TEST(Safetensors, EveryCorruptionNamesTheFileAndTheProblem) {
  TempDir tmp;
  const fs::path f = tmp.path / "bad.safetensors";
  auto check = [&](const std::string& bytes, const std::string& problem) {
    SCOPED_TRACE(problem);
    ssmlab::write_file_atomic(f, bytes);
    expect_error([&] { load_safetensors(f); }, {f.string(), problem});
  };
  const std::string f32x2 = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  check("abc", "too short");
  check(bytes_of({0xE8, 0x03, 0, 0, 0, 0, 0, 0}) + "{}", "beyond the end of the file");
  check(raw_file(R"({"a": )"), "bad JSON");
  check(raw_file("[1, 2]"), "expected an object");
  check(raw_file(R"({"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", std::string(8, 0)), "unknown dtype \"C64\"");
  check(raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, 0)), "size mismatch");
  check(raw_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})"), "non-negative");
  check(raw_file(R"({"a":{"dtype":"F32","shape":[1]}})", std::string(4, 0)), "data_offsets");
  check(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                 std::string(12, 0)),
        "overlap");
  check(raw_file(f32x2, std::string(4, 0)), "out of range");
  check(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                 R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                 std::string(12, 0)),
        "gap");
  check(raw_file(f32x2, std::string(12, 0)), "trailing bytes");
  check(raw_file(R"({"__metadata__":{"k":1}})"), "must be a string");
  check(raw_file(R"({"a":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}})", bytes_of({2})), "BOOL");
  check(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", std::string(4, 0)),
        "unexpected key");

  // A file of ours cut short.
  save_safetensors(f, {{"a", at::ones({4})}, {"b", at::ones({4})}});
  std::string good = ssmlab::read_file(f);
  check(good.substr(0, good.size() - 4), "out of range");
  // Missing file.
  expect_error([&] { load_safetensors(tmp.path / "absent.safetensors"); },
               {(tmp.path / "absent.safetensors").string(), "No such file"});
}

TEST(Safetensors, FailedSaveLeavesTheOldFileIntact) {
  TempDir tmp;
  const fs::path f = tmp.path / "keep.safetensors";
  save_safetensors(f, {{"w", at::arange(6, at::kFloat)}});
  const std::string before = ssmlab::read_file(f);
  expect_error([&] { save_safetensors(f, {{"w", at::ones({2})}, {"z", at::ones({2}, at::kComplexFloat)}}); },
               {f.string(), "'z'", "unsupported dtype", "ComplexFloat"});
  expect_error([&] { save_safetensors(f, {{"__metadata__", at::ones({2})}}); }, {f.string(), "__metadata__"});
  expect_error([&] { save_safetensors(f, {{"u", at::Tensor()}}); }, {f.string(), "undefined"});
  EXPECT_EQ(ssmlab::read_file(f), before);
  EXPECT_EQ(count_entries(tmp.path), 1u) << "no temp file left behind";
  EXPECT_TRUE(at::equal(load_safetensors(f).tensors.at("w"), at::arange(6, at::kFloat)));
}

TEST(Safetensors, EmptyTensorMapIsAValidFile) {
  TempDir tmp;
  const fs::path f = tmp.path / "empty.safetensors";
  save_safetensors(f, {});
  const auto back = load_safetensors(f);
  EXPECT_TRUE(back.tensors.empty());
  EXPECT_TRUE(back.metadata.empty());
}

}  // namespace models_test_safetensors
