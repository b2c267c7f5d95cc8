#include "ssmlab/core/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <system_error>

#include "ssmlab/core/error.h"

namespace ssmlab {
namespace {

std::string errno_text(int err) { return std::generic_category().message(err); }

// Closes the descriptor when it goes out of scope unless release() was called.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  // Closes now and reports the close error (a delayed write error on some file systems).
  int close_checked() {
    int rc = ::close(fd);
    fd = -1;
    return rc;
  }
};

// Writes all of `bytes`, retrying short writes and EINTR; returns 0 or the errno.
int write_all(int fd, std::string_view bytes) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return 0;
}

}  // namespace

void sync_directory(const std::filesystem::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  std::filesystem::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.fd < 0) {
    int err = errno;
    fail("cannot write '", path.string(), "': cannot create temp file '", tmp.string(), "': ", errno_text(err));
  }
  auto give_up = [&](const char* step, int err) {
    if (fd.fd >= 0) fd.close_checked();
    ::unlink(tmp.c_str());
    fail("cannot write '", path.string(), "': ", step, " '", tmp.string(), "' failed: ", errno_text(err),
         " (the previous content of '", path.string(), "' is unchanged)");
  };
  if (int err = write_all(fd.fd, bytes)) give_up("write to", err);
  if (::fsync(fd.fd) != 0) give_up("fsync of", errno);
  if (fd.close_checked() != 0) give_up("close of", errno);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) give_up("rename into place of", errno);
  sync_directory(path.parent_path());
}

std::string read_file(const std::filesystem::path& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.fd < 0) {
    int err = errno;
    fail("cannot read '", path.string(), "': ", errno_text(err));
  }
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) {
    int err = errno;
    fail("cannot read '", path.string(), "': ", errno_text(err));
  }
  if (S_ISDIR(st.st_mode)) fail("cannot read '", path.string(), "': it is a folder, not a file");
  std::string out;
  if (S_ISREG(st.st_mode)) out.reserve(static_cast<size_t>(st.st_size));
  std::array<char, 1 << 16> buf;
  for (;;) {
    ssize_t n = ::read(fd.fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      fail("cannot read '", path.string(), "': ", errno_text(err));
    }
    if (n == 0) break;
    out.append(buf.data(), static_cast<size_t>(n));
  }
  return out;
}

void append_line(const std::filesystem::path& path, std::string_view line) {
  std::string text(line);
  if (text.empty() || text.back() != '\n') text += '\n';
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (fd.fd < 0) {
    int err = errno;
    fail("cannot append to '", path.string(), "': ", errno_text(err));
  }
  if (int err = write_all(fd.fd, text)) fail("cannot append to '", path.string(), "': ", errno_text(err));
  if (fd.close_checked() != 0) {
    int err = errno;
    fail("cannot append to '", path.string(), "': ", errno_text(err));
  }
}

void rename_directory_into_place(const std::filesystem::path& tmp, const std::filesystem::path& dir) {
  auto give_up = [&](const char* what, int err) {
    fail("cannot move folder '", tmp.string(), "' to '", dir.string(), "': ", what, ": ", errno_text(err));
  };
  std::error_code ec;
  sync_directory(tmp);
  if (!std::filesystem::exists(dir, ec)) {
    if (std::rename(tmp.c_str(), dir.c_str()) != 0) give_up("rename failed", errno);
  } else if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    std::filesystem::remove_all(tmp, ec);  // it now holds the old folder
  } else {
    std::filesystem::path old = dir;
    old += ".old";
    std::filesystem::remove_all(old, ec);
    if (std::rename(dir.c_str(), old.c_str()) != 0) give_up("moving the existing folder aside failed", errno);
    if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
      const int err = errno;
      std::rename(old.c_str(), dir.c_str());  // put the previous folder back
      give_up("rename failed", err);
    }
    std::filesystem::remove_all(old, ec);
  }
  sync_directory(dir.parent_path());
}

namespace {
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8) | uint8_t(bytes[i + 2]);
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
    if (rest == 2) v |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += rest == 2 ? kB64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) fail("bad base64: length ", text.size(), " is not a multiple of 4");
  auto value = [&](char c, size_t pos) -> uint32_t {
    if (c >= 'A' && c <= 'Z') return uint32_t(c - 'A');
    if (c >= 'a' && c <= 'z') return uint32_t(c - 'a' + 26);
    if (c >= '0' && c <= '9') return uint32_t(c - '0' + 52);
    if (c == '+') return 62;
    if (c == '/') return 63;
    fail("bad base64: unexpected character '", c, "' at position ", pos);
  };
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    bool last = i + 4 == text.size();
    size_t pad = 0;
    if (last && text[i + 3] == '=') pad = text[i + 2] == '=' ? 2 : 1;
    uint32_t v = 0;
    for (size_t k = 0; k < 4 - pad; ++k) v = (v << 6) | value(text[i + k], i + k);
    v <<= 6 * pad;
    out += char((v >> 16) & 0xFF);
    if (pad < 2) out += char((v >> 8) & 0xFF);
    if (pad < 1) out += char(v & 0xFF);
  }
  return out;
}

}  // namespace ssmlab
