// Checks shared by the report tests: PNG and SVG validity, temp folders, and running with a given environment.
#pragma once
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace ssmlab::report::testing {

namespace fs = std::filesystem;

inline std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

inline fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("ssmlab_report_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

inline uint32_t be32(const std::string& s, size_t at) {
  return uint32_t(uint8_t(s[at])) << 24 | uint32_t(uint8_t(s[at + 1])) << 16 | uint32_t(uint8_t(s[at + 2])) << 8 |
         uint32_t(uint8_t(s[at + 3]));
}

// zlib's CRC-32 (PNG chunks), bit by bit.
inline uint32_t png_crc(const std::string& bytes) {
  uint32_t c = 0xFFFFFFFFu;
  for (char ch : bytes) {
    c ^= uint8_t(ch);
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

// A PNG: the 8-byte signature, an IHDR chunk first (length 13, CRC right) of the expected size (0: any), and
// an IEND chunk last.
inline ::testing::AssertionResult is_png(const fs::path& p, uint32_t width = 0, uint32_t height = 0) {
  const std::string s = slurp(p);
  if (s.size() < 8 + 25 + 12) return ::testing::AssertionFailure() << p << ": " << s.size() << " bytes, too short";
  if (s.compare(0, 8, std::string("\x89PNG\r\n\x1a\n", 8)) != 0)
    return ::testing::AssertionFailure() << p << ": no PNG signature";
  if (be32(s, 8) != 13 || s.compare(12, 4, "IHDR") != 0)
    return ::testing::AssertionFailure() << p << ": the first chunk is not a 13-byte IHDR";
  if (png_crc(s.substr(12, 17)) != be32(s, 29)) return ::testing::AssertionFailure() << p << ": IHDR CRC mismatch";
  const uint32_t w = be32(s, 16), h = be32(s, 20);
  if (w == 0 || h == 0 || (width && w != width) || (height && h != height))
    return ::testing::AssertionFailure() << p << ": IHDR says " << w << " x " << h << ", expected " << width << " x "
                                         << height;
  if (s.compare(s.size() - 8, 4, "IEND") != 0) return ::testing::AssertionFailure() << p << ": does not end in IEND";
  return ::testing::AssertionSuccess();
}

// An SVG document: starts with <?xml or <svg, holds an <svg element, ends with </svg>; angle brackets balance.
inline ::testing::AssertionResult is_svg(const fs::path& p) {
  const std::string s = slurp(p);
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return ::testing::AssertionFailure() << p << ": empty";
  if (s.compare(b, 5, "<?xml") != 0 && s.compare(b, 4, "<svg") != 0)
    return ::testing::AssertionFailure() << p << ": does not start with <?xml or <svg";
  if (s.find("<svg") == std::string::npos) return ::testing::AssertionFailure() << p << ": no <svg element";
  const auto e = s.find_last_not_of(" \t\r\n");
  if (e < 5 || s.compare(e - 5, 6, "</svg>") != 0) return ::testing::AssertionFailure() << p << ": does not end with </svg>";
  long depth = 0;
  for (char c : s) {
    depth += c == '<' ? 1 : c == '>' ? -1 : 0;
    if (depth < 0 || depth > 1) return ::testing::AssertionFailure() << p << ": unbalanced < >";
  }
  if (depth != 0) return ::testing::AssertionFailure() << p << ": unbalanced < >";
  return ::testing::AssertionSuccess();
}

// Sets (or with nullopt unsets) an environment variable for the scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value->c_str(), 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace ssmlab::report::testing
