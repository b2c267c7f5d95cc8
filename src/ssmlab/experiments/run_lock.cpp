#include "ssmlab/experiments/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "ssmlab/core/error.h"
#include "ssmlab/runfolder/layout.h"

namespace ssmlab::experiments {
namespace {

std::string read_fd_text(int fd) {
  char buf[512];
  const ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  std::string s(buf, n > 0 ? static_cast<size_t>(n) : 0);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s.empty() ? "another process (it wrote no name)" : s;
}

bool same_file(int fd, const std::filesystem::path& file) {
  struct stat a {}, b {};
  return fstat(fd, &a) == 0 && stat(file.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

}  // namespace

std::string lock_holder_text() {
  char host[256] = "unknown-host";
  gethostname(host, sizeof host - 1);
  const std::time_t now = std::time(nullptr);
  char when[64];
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  return str("pid ", getpid(), " on ", host, " since ", when);
}

RunLock::RunLock(const std::filesystem::path& dir) {
  const auto file = runfolder::lock_file(dir);
  if (const char* env = std::getenv(kRunLockEnv); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const long fd = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && fd >= 0 && fd < 1 << 20 && same_file(static_cast<int>(fd), file)) {
      fd_ = static_cast<int>(fd);
      inherited_ = true;
      return;
    }
  }
  std::filesystem::create_directories(dir);
  fd_ = open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  SSMLAB_CHECK(fd_ >= 0, "cannot open the lock file ", file.string(), ": ", std::strerror(errno));
  if (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const std::string holder = read_fd_text(fd_);
    close(fd_);
    fd_ = -1;
    fail("run folder ", dir.string(), " is being written by ", holder, " (", file.string(),
         " is locked); wait for it to finish or stop it: one writer per run folder");
  }
  const std::string me = lock_holder_text() + "\n";
  if (ftruncate(fd_, 0) != 0 || pwrite(fd_, me.data(), me.size(), 0) < 0) { /* the name is informative only */ }
}

RunLock::~RunLock() {
  if (fd_ < 0 || inherited_) return;  // an inherited lock is the runner's to release
  flock(fd_, LOCK_UN);
  close(fd_);
}

std::optional<std::string> run_lock_holder(const std::filesystem::path& dir) {
  const auto file = runfolder::lock_file(dir);
  const int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::optional<std::string> holder;
  if (flock(fd, LOCK_SH | LOCK_NB) != 0) holder = read_fd_text(fd);
  else flock(fd, LOCK_UN);
  close(fd);
  return holder;
}

}  // namespace ssmlab::experiments
