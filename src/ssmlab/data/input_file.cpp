#include "ssmlab/data/input_file.h"

#include <zlib.h>

#include <algorithm>
#include <system_error>

#include "ssmlab/core/error.h"

namespace ssmlab::data {
namespace {

gzFile as_gz(void* p) { return static_cast<gzFile>(p); }

}  // namespace

InputFile::InputFile(const std::filesystem::path& path) : path_(path) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  SSMLAB_CHECK(std::filesystem::exists(st), path.string(), ": no such file");
  SSMLAB_CHECK(!std::filesystem::is_directory(st), path.string(), ": is a folder, expected a data file");
  gz_ = gzopen(path.c_str(), "rb");
  SSMLAB_CHECK(gz_ != nullptr, path.string(), ": cannot be opened for reading");
  gzbuffer(as_gz(gz_), 1 << 17);
}

InputFile::~InputFile() {
  if (gz_) gzclose(as_gz(gz_));
}

int64_t InputFile::read(void* dst, int64_t n) {
  auto* out = static_cast<unsigned char*>(dst);
  int64_t got = 0;
  while (got < n) {
    // gzread takes an unsigned count and returns an int: read in chunks below 2^31.
    const auto chunk = static_cast<unsigned>(std::min<int64_t>(n - got, int64_t{1} << 30));
    const int r = gzread(as_gz(gz_), out + got, chunk);
    int err = Z_OK;
    const char* msg = gzerror(as_gz(gz_), &err);
    if (r < 0 || (err != Z_OK && err != Z_STREAM_END))
      fail(path_.string(), ": corrupt or cut-off gzip data (zlib: ", msg ? msg : "unknown error", ")");
    if (r == 0) break;
    got += r;
  }
  return got;
}

bool InputFile::at_end() {
  unsigned char byte = 0;
  return read(&byte, 1) == 0;
}

std::vector<uint8_t> read_all_bytes(const std::filesystem::path& path, int64_t max_bytes) {
  InputFile f(path);
  std::vector<uint8_t> bytes;
  int64_t size = 0;
  for (;;) {
    const int64_t want = std::min<int64_t>(int64_t{1} << 24, max_bytes + 1 - size);
    bytes.resize(static_cast<size_t>(size + want));
    const int64_t got = f.read(bytes.data() + size, want);
    size += got;
    SSMLAB_CHECK(size <= max_bytes, path.string(), ": larger than the limit of ", with_commas(max_bytes),
                 " bytes for this format");
    if (got < want) break;
  }
  bytes.resize(static_cast<size_t>(size));
  return bytes;
}

std::string with_commas(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

}  // namespace ssmlab::data
