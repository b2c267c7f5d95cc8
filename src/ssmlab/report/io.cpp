#include "ssmlab/report/io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <system_error>

namespace ssmlab::report {
namespace {
std::string errno_text(int err) { return std::generic_category().message(err); }
}  // namespace

void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  std::filesystem::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) report_fail("cannot write '", path.string(), "': cannot create '", tmp.string(), "': ", errno_text(errno));
  const char* p = bytes.data();
  size_t left = bytes.size();
  int err = 0;
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    report_fail("cannot write '", path.string(), "': ", errno_text(err));
  }
  rename_into_place(tmp, path);
}

void rename_into_place(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) {
    const int err = errno;
    ::unlink(from.c_str());
    report_fail("cannot rename '", from.string(), "' to '", to.string(), "': ", errno_text(err));
  }
}

std::string read_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) report_fail("cannot read '", path.string(), "': it is a folder");
  if (!std::filesystem::exists(path, ec)) report_fail("cannot read '", path.string(), "': no such file");
  std::ifstream in(path, std::ios::binary);
  if (!in) report_fail("cannot read '", path.string(), "': ", errno_text(errno));
  std::ostringstream os;
  os << in.rdbuf();
  if (in.bad()) report_fail("cannot read '", path.string(), "': read error");
  return os.str();
}

std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
    if (n > 1) v |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    if (n > 2) v |= uint32_t(uint8_t(bytes[i + 2]));
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += n > 1 ? kAlphabet[(v >> 6) & 63] : '=';
    out += n > 2 ? kAlphabet[v & 63] : '=';
  }
  return out;
}

}  // namespace ssmlab::report
