// Reading data files byte by byte through zlib's gz* API, which passes a plain file through unchanged and
// inflates a gzip one (recognised by its magic bytes, whatever its name): every reader takes "x" and "x.gz".
// Errors are ssmlab::Error naming the file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace ssmlab::data {

class InputFile {
 public:
  // Throws if the path does not exist, is a folder, or cannot be opened.
  explicit InputFile(const std::filesystem::path& path);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  // Reads up to n bytes into dst; returns how many came (fewer only at the end of the data). Throws on a
  // corrupt or cut-off gzip stream.
  int64_t read(void* dst, int64_t n);
  // True when no byte is left (reads one byte to find out; use only once the expected data is read).
  bool at_end();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  void* gz_ = nullptr;  // a gzFile; zlib.h stays out of this header
};

// The whole (inflated) content of a file, refusing more than max_bytes with the limit in the message.
std::vector<uint8_t> read_all_bytes(const std::filesystem::path& path, int64_t max_bytes);

// "1,234,567": byte counts in messages.
std::string with_commas(int64_t n);

}  // namespace ssmlab::data
